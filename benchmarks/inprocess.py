"""Benchmark 2: one streaming response of N items, driven in-process into a no-op ASGI
``send`` (and a ``receive`` that blocks until cancelled), per implementation.

Every implementation streams the same list of small dicts as SSE events with JSON data,
written the way its users write it:

- hand-written loop: encodes each event itself (``json.dumps`` + f-string framing) and awaits
  one ``send`` per event: the practical limit of per-event sending.
- asgi_stream automatic: ``await Stream(items)(scope, receive, send)`` (a list, iterated
  natively) and ``Stream(async_generator)``.
- asgi_stream callback: ``Stream(callback)``, the callback calls ``stream.send(item)`` per item.
- sse-starlette: ``EventSourceResponse`` of an async generator of ``JSONServerSentEvent``.
- Starlette: ``StreamingResponse`` of an async generator of ``f"data: {json.dumps(item)}\\n\\n"``.
- FastAPI: a path operation with ``response_class=fastapi.sse.EventSourceResponse`` that
  yields the dicts (FastAPI's native SSE: it encodes each item).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from common import normalized, parse_sse

Items = list[dict[str, Any]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Runner = Callable[[Items, dict[str, Any], Receive, Send], Awaitable[None]]

BASELINE = "hand-written loop"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def scope(path: str = "/sse") -> dict[str, Any]:
    """An http scope like hypercorn's (spec_version 2.1)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.1"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
        "state": {},
    }


async def noop_send(message: dict[str, Any]) -> None:
    return None


async def blocking_receive() -> dict[str, Any]:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _generator(items: Items) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


# -- implementations -----------------------------------------------------------------------


async def hand_written(items: Items, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    dumps = json.dumps
    for item in items:
        body = f"data: {dumps(item)}\n\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _asgi_stream() -> dict[str, Runner]:
    from asgi_stream import Stream

    async def automatic_list(
        items: Items, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        await Stream(items)(scope, receive, send)  # type: ignore[arg-type]

    async def automatic_generator(
        items: Items, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        await Stream(_generator(items))(scope, receive, send)  # type: ignore[arg-type]

    async def callback(items: Items, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        async def produce(stream: Stream) -> None:
            for item in items:
                stream.send(item)
            stream.close()

        await Stream(produce)(scope, receive, send)  # type: ignore[arg-type]

    return {
        "asgi_stream automatic (list)": automatic_list,
        "asgi_stream automatic (async gen)": automatic_generator,
        "asgi_stream callback": callback,
    }


def _sse_starlette() -> dict[str, Runner]:
    from sse_starlette import EventSourceResponse, JSONServerSentEvent

    async def run(items: Items, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        async def events() -> AsyncIterator[JSONServerSentEvent]:
            for item in items:
                yield JSONServerSentEvent(item)

        await EventSourceResponse(events())(scope, receive, send)

    return {"sse-starlette EventSourceResponse": run}


def _starlette() -> dict[str, Runner]:
    from starlette.responses import StreamingResponse

    async def run(items: Items, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        async def body() -> AsyncIterator[str]:
            dumps = json.dumps
            for item in items:
                yield f"data: {dumps(item)}\n\n"

        response = StreamingResponse(body(), media_type="text/event-stream")
        await response(scope, receive, send)

    return {"Starlette StreamingResponse": run}


def _fastapi() -> dict[str, Runner]:
    from fastapi import FastAPI
    from fastapi.sse import EventSourceResponse

    app = FastAPI()
    current: list[Items] = [[]]

    @app.get("/sse", response_class=EventSourceResponse)
    async def sse():  # type: ignore[no-untyped-def]
        for item in current[0]:
            yield item

    async def run(items: Items, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        current[0] = items
        await app(scope, receive, send)  # type: ignore[arg-type]

    return {"FastAPI EventSourceResponse": run}


ASYNCIO: list[Callable[[], dict[str, Runner]]] = [
    lambda: {BASELINE: hand_written},
    _asgi_stream,
    _sse_starlette,
    _starlette,
    _fastapi,
]
# On trio (optional): the implementations that are not tied to asyncio.
TRIO: list[Callable[[], dict[str, Runner]]] = [lambda: {BASELINE: hand_written}, _asgi_stream]


def load(makers: list[Callable[[], dict[str, Runner]]]) -> tuple[dict[str, Runner], list[str]]:
    found: dict[str, Runner] = {}
    missing: list[str] = []
    for make in makers:
        try:
            found.update(make())
        except ImportError as exc:
            missing.append(str(exc.name))
    return found, missing


async def check(runners: dict[str, Runner], n: int = 50) -> None:
    """Every implementation sends the same events, with a proper response start and end."""
    from common import make_items

    items = make_items(n)
    expected = [{"data": item} for item in items]
    for name, runner in runners.items():
        messages: list[dict[str, Any]] = []

        async def record(
            message: dict[str, Any], messages: list[dict[str, Any]] = messages
        ) -> None:
            messages.append(message)

        with anyio.fail_after(10):
            await runner(items, scope(), blocking_receive, record)
        kinds = [m["type"] for m in messages]
        if kinds[0] != "http.response.start" or messages[0].get("status") != 200:
            raise AssertionError(f"{name}: bad response start {messages[0]}")
        if messages[-1].get("more_body", False) is not False:
            raise AssertionError(f"{name}: the response does not end: {messages[-1]}")
        body = b"".join(m.get("body", b"") for m in messages[1:])
        events = normalized(parse_sse(body), json_data=True)
        if events != expected:
            raise AssertionError(f"{name}: sent {events[:3]}..., not the {n} items")
