"""Helpers shared by the tests: event-driven recorders (no sleeps), ASGI wrappers that tell a
test when the middleware has finished with a request, and small client-side readers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import CloseReason, Stream, StreamMiddleware
from tests.conftest import stream_app

# Upper bound for every wait in a test; a healthy test finishes in a fraction of it.
TIMEOUT = 5


class Record:
    """A list that tasks append to and tests await: ``await record.wait(n)``."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = anyio.Event()

    def __call__(self, item: Any = None) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = anyio.Event()

    def __len__(self) -> int:
        return len(self.items)

    async def wait(self, count: int = 1) -> list[Any]:
        """Wait until at least ``count`` items were recorded; returns all of them."""
        while len(self.items) < count:
            await self._changed.wait()
        return self.items


class Wrapped:
    """``StreamMiddleware(app)`` -- the documented wiring -- behind an outer ASGI app that
    records when the middleware returns from each http request, so a test can check
    ``active`` afterwards without sleeping."""

    def __init__(self, app: Any, **middleware: Any) -> None:
        self.middleware = StreamMiddleware(app, **middleware)
        self.finished = Record()

    @property
    def active(self) -> int:
        return self.middleware.active

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.middleware(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.finished(scope["path"])


class Served(Wrapped):
    """``Wrapped(stream_app(handler))``: a handler that returns a Stream, behind the
    middleware (see ``Wrapped``)."""

    def __init__(self, handler: Callable[[Any], Any], **middleware: Any) -> None:
        super().__init__(stream_app(handler), **middleware)


def track(stream: Stream, closes: Record) -> Stream:
    """Record the stream's close reason in ``closes``; returns the stream."""
    stream.on_close(closes)
    return stream


async def read_raw(
    client: httpx.AsyncClient, url: str, **kwargs: Any
) -> tuple[httpx.Response, bytes]:
    """GET ``url`` and read the whole body raw (exactly the bytes on the wire, de-chunked)."""
    async with client.stream("GET", url, **kwargs) as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, body


async def read_first_line_and_leave(client: httpx.AsyncClient, url: str, expected: str) -> None:
    """Read up to the first non-empty line, check it, then close the response mid-stream."""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                assert line == expected
                break
        else:
            pytest.fail("the stream ended before the client could leave")


def record(stream: Stream) -> list[CloseReason]:
    """The close reasons of ``stream``: a list that its ``on_close`` appends to."""
    reasons: list[CloseReason] = []
    stream.on_close(reasons.append)
    return reasons


class FakeUpstream:
    """An upstream response for proxy mode, in process (httpx's shape): ``chunks``, then
    (``endless``) a comment every millisecond; ``closed`` is set by ``aclose()``."""

    def __init__(self, chunks: list[bytes], status: int = 200, endless: bool = False) -> None:
        self.status_code = status
        self.reason_phrase = "Service Unavailable" if status == 503 else "OK"
        self.headers = {"content-type": "text/event-stream"}
        self.chunks = chunks
        self.endless = endless
        self.closed = anyio.Event()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        while self.endless:
            await anyio.sleep(0.001)
            yield b": upstream\n\n"

    async def aclose(self) -> None:
        self.closed.set()


def returning(stream: Stream | None) -> Any:
    """An ASGI app that returns ``stream``: a handler handing it to StreamMiddleware."""

    async def app(scope: Any, receive: Any, send: Any) -> Stream | None:
        return stream

    return app


def callback_stream(*sends: Any, **options: Any) -> Any:
    """A handler whose callback sends ``sends`` (each a value or ``(value, kwargs)``), closes."""

    def handler(scope: Any) -> Stream:
        def callback(stream: Stream) -> None:
            for item in sends:
                if isinstance(item, tuple):
                    stream.send(item[0], **item[1])
                else:
                    stream.send(item)
            stream.close()

        return Stream(callback, **options)

    return handler


def proxy_handler(
    upstream: httpx.AsyncClient, upstream_url: str, form: str, closes: Record, opened: list[Any]
) -> Any:
    """The handler of the proxying server, in one of the two documented forms."""

    async def handler(scope: Any) -> Stream:
        request = upstream.build_request("GET", upstream_url + scope["path"])
        if form == "awaitable":
            return track(Stream(upstream.send(request, stream=True)), closes)
        response = await upstream.send(request, stream=True)
        opened.append(response)
        return track(Stream(response), closes)

    return handler


def h2_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True)


async def listen_then_shut_down(
    app: Wrapped, client: httpx.AsyncClient, urls: dict[str, str], *, grace: float
) -> dict[str, list[str]]:
    """Open an SSE client on each of ``urls`` (name: url); once each has an event, check that
    ``app.active`` counts them all, shut the middleware down and check that none is left.
    Returns the data each client received. A stream cut off uncleanly raises
    ``httpx.RemoteProtocolError``."""
    opened = Record()
    received: dict[str, list[str]] = {}

    async def listen(name: str, url: str) -> None:
        async with aconnect_sse(client, "GET", url) as source:
            data = received.setdefault(name, [])
            async for sse in source.aiter_sse():
                data.append(sse.data)
                opened(name)

    async with anyio.create_task_group() as group:
        for name, url in urls.items():
            group.start_soon(listen, name, url)
        await opened.wait(len(urls))
        assert app.active == len(urls)
        await app.middleware.shutdown(grace=grace)
        assert app.active == 0
    return received
