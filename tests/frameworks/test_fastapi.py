"""FastAPI: endpoints return ``asgi_stream.starlette.Stream``, served by a real hypercorn and
read by httpx. Parameters, dependencies (and the lifetime of those with ``yield``),
background tasks, CORS and cookies, shutdown and disconnects; a plain ``asgi_stream.Stream``
gives a clear error instead of JSON.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
run time, and those that name a test's local dependency could not be resolved as strings.
"""

import importlib.util
import json
import secrets
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from httpx_sse import aconnect_sse

import asgi_stream
from asgi_stream import ServerSentEvent
from asgi_stream.starlette import Stream
from tests.conftest import serve
from tests.frameworks.starlette_support import MARKER, ORIGIN
from tests.helpers import (
    TIMEOUT,
    Record,
    Wrapped,
    listen_then_shut_down,
    read_first_line_and_leave,
    read_raw,
    track,
)

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"


async def test_path_query_parameters_and_dependencies_reach_the_stream() -> None:
    closes = Record()
    api = FastAPI()

    async def prefix(request: Request) -> str:
        return request.headers.get("x-prefix", "item")

    @api.get("/items/{item_id}")
    async def items(
        item_id: int, prefix: Annotated[str, Depends(prefix)], count: int = 3
    ) -> Stream:
        async def events() -> AsyncIterator[ServerSentEvent]:
            for n in range(count):
                yield ServerSentEvent(f"{prefix} {item_id}.{n}", event="item", id=n)

        return track(Stream(events()), closes)

    @api.get("/sync/{name}")
    def sync_endpoint(name: str) -> Stream:  # a sync endpoint, run in the threadpool
        return track(Stream([f"hello {name}"]), closes)

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            headers = {"x-prefix": "thing"}
            async with aconnect_sse(
                client, "GET", url + "/items/7?count=4", headers=headers
            ) as source:
                assert source.response.headers["content-type"] == (
                    "text/event-stream; charset=utf-8"
                )
                events = [(sse.event, sse.id, sse.data) async for sse in source.aiter_sse()]
            assert events == [("item", str(n), f"thing 7.{n}") for n in range(4)]

            async with aconnect_sse(client, "GET", url + "/sync/ada") as source:
                assert [sse.data async for sse in source.aiter_sse()] == ["hello ada"]

            # FastAPI's own validation still answers before any Stream exists
            response = await client.get(url + "/items/seven")
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["path", "item_id"]

            assert await closes.wait(2) == ["complete", "complete"]
            await app.finished.wait(3)
            assert app.active == 0


async def test_a_plain_asgi_stream_gives_a_clear_error_never_json() -> None:
    errors = Record()
    api = FastAPI()

    @api.get("/plain")
    async def plain():  # no return annotation: FastAPI uses jsonable_encoder
        return asgi_stream.Stream(["x"])

    @api.get("/any")
    async def plain_any() -> Any:  # an Any response model: pydantic's serializer
        return asgi_stream.Stream(["x"])

    @api.exception_handler(Exception)
    async def show(request: Request, exc: Exception) -> PlainTextResponse:
        errors(exc)
        return PlainTextResponse(f"{type(exc).__name__}: {exc}", status_code=500)

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url + "/plain")
            assert response.status_code == 500
            assert response.text.startswith("TypeError: a FastAPI endpoint returned an asgi_stream")
            assert "return asgi_stream.starlette.Stream instead" in response.text
            # With an Any response model, pydantic refuses the object itself: an error
            # naming the type (asgi_stream cannot add to it), and no JSON either.
            response = await client.get(url + "/any")
            assert response.status_code == 500
            assert "Unable to serialize unknown type" in response.text
            assert "asgi_stream.stream.Stream" in response.text
            assert len(await errors.wait(2)) == 2
            await app.finished.wait(2)
            assert app.active == 0
    # the same for FastAPI's encoder used directly, and for a Stream inside a result
    with pytest.raises(TypeError, match=r"return asgi_stream\.starlette\.Stream instead"):
        jsonable_encoder({"stream": asgi_stream.Stream()})


async def test_active_counts_the_streams_and_shutdown_ends_them_cleanly() -> None:
    clients = 3
    never = anyio.Event()
    closes = Record()
    producers_ended = Record()
    api = FastAPI()

    @api.get("/{name}")
    async def endless(name: str) -> Stream:
        async def callback(stream: Stream) -> None:
            try:
                stream.send(f"hello {name}")
                await never.wait()
                stream.send("never sent")
            finally:
                producers_ended(name)

        return track(Stream(callback), closes)

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            names = [f"c{n}" for n in range(clients)]
            received = await listen_then_shut_down(
                app, client, {name: f"{url}/{name}" for name in names}, grace=TIMEOUT * 1000 / 2
            )
            assert received == {f"c{n}": [f"hello c{n}"] for n in range(clients)}
            assert await closes.wait(clients) == ["shutdown"] * clients
            assert sorted(await producers_ended.wait(clients)) == [f"c{n}" for n in range(clients)]
            await app.finished.wait(clients)

            response, body = await read_raw(client, url + "/late")
            assert response.status_code == 503
            assert b"shutting down" in body
            assert app.active == 0


@pytest.mark.parametrize("scope", ["request", "function"])
async def test_lifetime_of_a_dependency_with_yield(scope: Literal["request", "function"]) -> None:
    """``scope="request"`` (the default): closed after the stream has ended, after
    ``on_close`` and the background tasks. ``scope="function"``: closed when the endpoint
    returns, before the stream's producer starts."""
    log = Record()

    class Session:
        open = True

    async def session() -> AsyncIterator[Session]:
        log("dependency opened")
        resource = Session()
        try:
            yield resource
        except BaseException as exc:  # nothing of the stream is raised into it
            log(f"dependency closed by {type(exc).__name__}")
            raise
        else:
            log("dependency closed")
        finally:
            resource.open = False

    async def background() -> None:
        log("background task")

    api = FastAPI()

    @api.get("/rows")
    async def rows(
        db: Annotated[Session, Depends(session, scope=scope)], tasks: BackgroundTasks
    ) -> Stream:
        log("endpoint")

        async def produce() -> AsyncIterator[str]:
            log(f"producer starts, session open: {db.open}")
            for n in range(3):
                yield f"row {n} (session open: {db.open})"

        tasks.add_task(background)
        stream = Stream(produce())
        stream.on_close(lambda reason: log(f"on_close {reason}"))
        return stream

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/rows") as source:
                data = [sse.data async for sse in source.aiter_sse()]
            steps = await log.wait(6)
            await app.finished.wait()
    if scope == "request":
        assert data == [f"row {n} (session open: True)" for n in range(3)]
        assert steps == [
            "dependency opened",
            "endpoint",
            "producer starts, session open: True",
            "on_close complete",
            "background task",
            "dependency closed",
        ]
    else:
        assert data == [f"row {n} (session open: False)" for n in range(3)]
        assert steps == [
            "dependency opened",
            "endpoint",
            "dependency closed",
            "producer starts, session open: False",
            "on_close complete",
            "background task",
        ]


async def test_disconnect_stops_the_producer_then_background_then_dependency() -> None:
    never = anyio.Event()
    log = Record()

    async def resource() -> AsyncIterator[str]:
        try:
            yield "resource"
        except BaseException as exc:  # the disconnect is not raised into it
            log(f"dependency closed by {type(exc).__name__}")
            raise
        else:
            log("dependency closed")

    async def background() -> None:
        log("background task")

    api = FastAPI()

    @api.get("/gen")
    async def gen(res: Annotated[str, Depends(resource)], tasks: BackgroundTasks) -> Stream:
        async def source() -> AsyncIterator[str]:
            try:
                yield "first"
                await never.wait()
                yield "never sent"
            finally:
                log("producer finally")

        tasks.add_task(background)
        stream = Stream(source())
        stream.on_close(lambda reason: log(f"on_close {reason}"))
        return stream

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            await read_first_line_and_leave(client, url + "/gen", "data: first")
            assert await log.wait(4) == [
                "producer finally",
                "on_close disconnect",
                "background task",
                "dependency closed",
            ]
            await app.finished.wait()
            assert app.active == 0


async def test_a_failing_producer_ends_the_stream_not_the_dependency() -> None:
    log = Record()

    async def resource() -> AsyncIterator[str]:
        try:
            yield "resource"
        except BaseException as exc:
            log(f"dependency closed by {type(exc).__name__}")
            raise
        else:
            log("dependency closed")

    api = FastAPI()

    @api.get("/fails")
    async def fails(res: Annotated[str, Depends(resource)]) -> Stream:
        async def source() -> AsyncIterator[str]:
            yield "first"
            raise RuntimeError("the producer failed")

        stream = Stream(source())
        stream.on_close(lambda reason: log(f"on_close {reason}"))
        return stream

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/fails")  # a clean end
            assert (response.status_code, body) == (200, b"data: first\n\n")
            assert await log.wait(2) == ["on_close error", "dependency closed"]
            await app.finished.wait()
            assert app.active == 0


async def test_background_tasks_run_after_the_stream_has_ended() -> None:
    log = Record()
    finished_streams: list[Stream] = []

    async def note(stream: Stream) -> None:
        log(f"background task, stream closed: {stream.closed}")

    api = FastAPI()

    @api.get("/")
    async def endpoint(tasks: BackgroundTasks) -> Stream:
        async def callback(stream: Stream) -> None:
            for n in range(3):
                stream.send(n)
                await anyio.lowlevel.checkpoint()
            stream.close()

        stream = Stream(callback)
        finished_streams.append(stream)
        stream.on_close(lambda reason: log(f"on_close {reason}"))
        tasks.add_task(note, stream)
        return stream

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            _response, body = await read_raw(client, url)
            assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            assert await log.wait(2) == [
                "on_close complete",
                "background task, stream closed: True",
            ]
            await app.finished.wait()


async def test_cors_and_cookies_reach_the_client() -> None:
    api = FastAPI()
    api.add_middleware(
        CORSMiddleware, allow_origins=[ORIGIN], allow_credentials=True, expose_headers=["x-a"]
    )

    @api.get("/")
    async def endpoint() -> Stream:
        stream = Stream(["a", "b"], headers={"x-a": "1"})
        stream.set_cookie("flavour", "chocolate", httponly=True)
        return stream

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url, headers={"origin": ORIGIN})
            assert response.status_code == 200
            assert body == b"data: a\n\ndata: b\n\n"
            assert response.headers["access-control-allow-origin"] == ORIGIN
            assert response.headers["access-control-allow-credentials"] == "true"
            assert response.headers["access-control-expose-headers"] == "x-a"
            assert response.headers["x-a"] == "1"
            assert response.headers.get_list("set-cookie") == [
                "flavour=chocolate; HttpOnly; Path=/; SameSite=lax"
            ]
            assert client.cookies["flavour"] == "chocolate"


async def test_http_middleware_neither_buffers_nor_keeps_the_stream_alive() -> None:
    """``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware) runs the endpoint in a
    task of its own: its header is added, events are not buffered, and a disconnect still
    stops the producer."""
    got_hello = anyio.Event()
    never = anyio.Event()
    log = Record()
    api = FastAPI()

    @api.middleware("http")
    async def add_header(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-middleware"] = "yes"
        return response

    @api.get("/ack")
    async def ack() -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send("hello")
            await got_hello.wait()
            stream.send("world")
            stream.close()

        return Stream(callback)

    @api.get("/endless")
    async def endless() -> Stream:
        async def source() -> AsyncIterator[str]:
            try:
                yield "first"
                await never.wait()
            finally:
                log("producer finally")

        stream = Stream(source())
        stream.on_close(lambda reason: log(f"on_close {reason}"))
        return stream

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/ack") as source:
                assert source.response.headers["x-middleware"] == "yes"
                received = []
                async for sse in source.aiter_sse():
                    received.append(sse.data)
                    got_hello.set()
            assert received == ["hello", "world"]
            await read_first_line_and_leave(client, url + "/endless", "data: first")
            assert await log.wait(2) == ["producer finally", "on_close disconnect"]
            await app.finished.wait(2)
            assert app.active == 0


async def test_errors_before_the_stream_are_fastapi_errors() -> None:
    api = FastAPI()

    async def must_be_allowed(request: Request) -> None:
        if request.query_params.get("allowed") != "yes":
            raise HTTPException(status_code=403, detail="not allowed")

    @api.get("/guarded", dependencies=[Depends(must_be_allowed)])
    async def guarded() -> Stream:
        return Stream(["secret"])

    app = Wrapped(api)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url + "/guarded")
            assert (response.status_code, response.json()) == (403, {"detail": "not allowed"})
            response, body = await read_raw(client, url + "/guarded?allowed=yes")
            assert (response.status_code, body) == (200, b"data: secret\n\n")
            await app.finished.wait(2)
            assert app.active == 0


async def test_response_class_documents_the_stream_in_openapi() -> None:
    """``response_class=Stream`` (with an explicit ``status_code``: FastAPI looks for a
    ``status_code`` default in the class's ``__init__``, and Stream calls it ``status``)."""
    api = FastAPI()

    @api.get("/events", response_class=Stream, status_code=200)
    async def events() -> Stream:
        return Stream(["e"])

    with anyio.fail_after(TIMEOUT):
        async with serve(Wrapped(api)) as url, httpx.AsyncClient() as client:
            schema = (await client.get(url + "/openapi.json")).json()
            content = schema["paths"]["/events"]["get"]["responses"]["200"]["content"]
            assert list(content) == ["text/event-stream"]
            _response, body = await read_raw(client, url + "/events")
            assert body == b"data: e\n\n"


async def test_the_refusal_is_opt_in_importing_the_integration_registers_it() -> None:
    """asgi_stream never touches FastAPI on its own (the middleware imports no integration);
    importing ``asgi_stream.starlette`` registers the refusal of plain Streams."""
    code = textwrap.dedent(
        """
        import sys
        import asgi_stream
        from fastapi import FastAPI
        from fastapi.encoders import ENCODERS_BY_TYPE, jsonable_encoder

        app = asgi_stream.StreamMiddleware(FastAPI())
        assert asgi_stream.Stream not in ENCODERS_BY_TYPE, "registered without being asked"
        assert "asgi_stream.starlette" not in sys.modules

        import asgi_stream.starlette

        try:
            jsonable_encoder(asgi_stream.Stream())
        except TypeError as exc:
            assert "asgi_stream.starlette.Stream" in str(exc), exc
        else:
            raise SystemExit("a plain Stream was serialised as JSON")
        """
    )
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert result.returncode == 0, result.stderr.decode()


# -- the hand-over cannot be forged -------------------------------------------------------


async def test_forged_handoff_markers_are_ignored() -> None:
    api = FastAPI()

    @api.get("/json")
    async def as_json() -> dict[str, bool]:
        return {"ok": True}

    @api.get("/fake")
    async def fake() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={MARKER: secrets.token_hex(16)})

    @api.get("/reflect")
    async def reflect(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True}, headers={MARKER: request.headers[MARKER]})

    @api.get("/stream")
    async def stream() -> Stream:
        return Stream(["s"])

    app = Wrapped(api)
    forged = {MARKER: secrets.token_hex(16)}
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            for path in ("/json", "/fake", "/reflect"):
                response, body = await read_raw(client, url + path, headers=forged)
                assert response.status_code == 200, path
                assert response.headers["content-type"] == "application/json"
                assert json.loads(body) == {"ok": True}
            response, body = await read_raw(client, url + "/stream", headers=forged)
            assert (response.status_code, body) == (200, b"data: s\n\n")
            await app.finished.wait(4)
            assert app.active == 0


# -- the documented example ----------------------------------------------------------------


async def test_the_example_app_streams_and_shuts_down() -> None:
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with anyio.fail_after(TIMEOUT):
        async with serve(module.app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/count/3?every_ms=1") as source:
                events = [(sse.event, json.loads(sse.data)) async for sse in source.aiter_sse()]
            assert events == [("count", {"n": n, "session_open": True}) for n in (1, 2, 3)]
            async with client.stream("GET", url + "/clock") as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        break
                assert module.app.active == 1
                await module.app.shutdown(grace=1_000)
                # the rest arrives and ends cleanly (httpx raises if it is cut off)
                rest = [line async for line in lines]
            assert module.app.active == 0
            assert all(not line or line.startswith(("data: ", "event: ")) for line in rest)


async def test_a_channel_in_the_lifespan_feeds_endpoints_and_resumes() -> None:
    """The README's channel, FastAPI style: entered in the lifespan, one endpoint
    subscribes, another publishes; a reconnect with Last-Event-ID gets what it missed."""
    from contextlib import asynccontextmanager

    channel = asgi_stream.Channel()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with channel:
            yield

    api = FastAPI(lifespan=lifespan)

    @api.get("/orders")
    async def orders() -> Stream:
        return Stream(channel.subscribe("orders"))

    @api.post("/orders")
    async def place(order: dict[str, Any]) -> dict[str, str]:
        return {"id": await channel.publish("orders", order, event="order")}

    app = asgi_stream.StreamMiddleware(api)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        with anyio.fail_after(TIMEOUT):
            async with aconnect_sse(client, "GET", "/orders") as source:
                first = (await client.post("/orders", json={"n": 1})).json()["id"]
                async for sse in source.aiter_sse():
                    assert (sse.event, sse.id, sse.json()) == ("order", first, {"n": 1})
                    break
            second = (await client.post("/orders", json={"n": 2})).json()["id"]
            headers = {"Last-Event-ID": first}
            async with aconnect_sse(client, "GET", "/orders", headers=headers) as source:
                async for sse in source.aiter_sse():
                    assert (sse.id, sse.json()) == (second, {"n": 2})
                    break
