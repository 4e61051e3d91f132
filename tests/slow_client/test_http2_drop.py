"""An HTTP/2 stream dropped as ``"slow-client"`` ends for its client too; the connection lives on.

Guarantee: when an HTTP/2 client stops reading one stream (it grants that stream no more
flow-control credit) while the producer keeps sending, the stream is dropped once
``max_buffer`` bytes wait (``on_close("slow-client")``), and the client learns within a bounded
time that the stream is over (RST_STREAM), while the connection stays usable: a second request
on it is answered. A slow HTTP/1.1 client dropped the same way still gets its connection closed.

hypercorn (0.18) ends an HTTP/2 stream only when the app sends its final body; an app that
returns or raises after the response started, without it, leaves the stream half-open for as
long as the connection lives. ``asgi_stream.hypercorn.serve`` resets such a stream: checked for
the dropped stream and for any ASGI app that gives up its response (returns or raises).

In-process, through raw ASGI: the driver's side of the contract, which that reset relies on:
on a slow-client drop behind a blocked ``send`` the app returns at once, never sending
``more_body: False`` (which would claim a complete response).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest
from hypercorn.config import Config

from asgi_stream import Stream, StreamMiddleware
from asgi_stream.hypercorn import serve
from tests.conftest import _free_port, _wait_listening, stream_app
from tests.helpers import TIMEOUT, Record, track
from tests.reliability.clients import H1, H2

pytestmark = pytest.mark.anyio

MAX_BUFFER = 65_536
CHUNK = b"data: " + b"x" * 16_384 + b"\n\n"
MAX_CHUNKS = 10_000  # 160 MiB: far more than any window or socket buffer takes
# How long a dropped stream may stay open for its client (healthy runs: milliseconds).
RESET_WITHIN = 1.0


async def flood(stream: Stream, refused: Record) -> None:
    """Send a 16 KiB frame every millisecond (16 MB/s: a reading client on loopback keeps
    up), without waiting for room, until ``send()`` refuses (the stream was dropped)."""
    for n in range(MAX_CHUNKS):
        if not stream.send(CHUNK):
            refused(n)
            return
        await stream.wait(1)
    refused(None)


def handler(closes: dict[str, Record], refused: Record) -> Any:
    def handle(scope: Any) -> Stream:
        path = scope["path"]
        if path == "/stalled":
            stream = Stream(partial(flood, refused=refused), max_buffer=MAX_BUFFER)
        else:
            stream = Stream(iter(["a", "b"]))
        return track(stream, closes[path])

    return handle


@asynccontextmanager
async def served(app: StreamMiddleware) -> AsyncIterator[int]:
    """``asgi_stream.hypercorn.serve(app)`` on 127.0.0.1 on the running backend; yields the port."""
    config = Config()
    port = _free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    config.loglevel = "WARNING"
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(serve, app, config, grace=1_000, shutdown_trigger=stop.wait))
        await _wait_listening(port)
        try:
            yield port
        finally:
            stop.set()


@asynccontextmanager
async def h2_connection(port: int) -> AsyncIterator[H2]:
    """An h2c connection (prior knowledge) whose frames are read in a task."""
    client = H2(port)
    await client.connect()
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.run)
        try:
            yield client
        finally:
            await client.aclose()
            tg.cancel_scope.cancel()


async def test_dropped_http2_stream_is_reset_and_the_connection_stays_usable() -> None:
    closes = {"/stalled": Record(), "/ok": Record()}
    refused = Record()
    app = StreamMiddleware(stream_app(handler(closes, refused)))
    with anyio.fail_after(TIMEOUT):
        async with served(app) as port, h2_connection(port) as client:
            # The client reads the connection (and credits it) but never credits the stream
            # after its initial window: a fetch() reader that stopped, in a browser.
            stalled = await client.get("/stalled", stalled=True)
            assert await closes["/stalled"].wait() == ["slow-client"]
            assert (await refused.wait())[0] is not None  # send() said False: dropped
            assert app.active == 0
            with anyio.move_on_after(RESET_WITHIN):
                await client.until(lambda: stalled.reset or stalled.complete)
            ended = (stalled.reset, stalled.complete, client.closed)
            ok = await client.get("/ok")
            with anyio.move_on_after(RESET_WITHIN):
                await client.until(lambda: ok.complete or ok.reset)
            still_open = not client.closed
    assert ended == (True, False, False), (
        f"{RESET_WITHIN} s after the drop the client still had no RST_STREAM (reset, "
        f"END_STREAM, connection closed = {ended}): the dropped stream stays half-open"
    )
    assert stalled.status == 200 and stalled.body  # it had started
    # the same connection answers another request, and is still open after it
    assert (ok.status, ok.complete, ok.reset, still_open) == (200, True, False, True)
    assert bytes(ok.body) == b"data: a\n\ndata: b\n\n"
    assert closes["/ok"].items == ["complete"]


@pytest.mark.parametrize("how", ["returns", "raises"])
async def test_http2_response_given_up_by_the_app_is_reset(how: str) -> None:
    """Any ASGI app (here: not a Stream) that gives up a started response, by returning or
    raising without its final body, under ``asgi_stream.hypercorn.serve``."""
    given_up = Record()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await stream_app(None)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        if scope["path"] == "/ok":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        given_up(how)
        if how == "raises":
            raise RuntimeError("the app fails after its response started (expected in logs)")

    app = StreamMiddleware(inner)
    with anyio.fail_after(TIMEOUT):
        async with served(app) as port, h2_connection(port) as client:
            stream = await client.get("/given-up")
            await given_up.wait()
            with anyio.move_on_after(RESET_WITHIN):
                await client.until(lambda: stream.reset or stream.complete)
            ended = (stream.reset, stream.complete, client.closed)
            ok = await client.get("/ok")
            with anyio.move_on_after(RESET_WITHIN):
                await client.until(lambda: ok.complete or ok.reset)
    assert ended == (True, False, False), (
        f"the app {how} after its response started: no RST_STREAM within {RESET_WITHIN} s "
        f"(reset, END_STREAM, connection closed = {ended})"
    )
    assert bytes(stream.body) == b"partial"
    assert (ok.complete, ok.reset, bytes(ok.body)) == (True, False, b"partial")


async def test_dropped_http1_client_still_gets_its_connection_closed() -> None:
    """Guards HTTP/1.1 (passes on the old code): a stalled HTTP/1.1 client dropped as
    slow-client has its connection closed without the terminating chunk, so that once it
    reads again it sees an incomplete response, not a clean end."""
    closes = {"/stalled": Record(), "/ok": Record()}
    refused = Record()
    app = StreamMiddleware(stream_app(handler(closes, refused)))
    with anyio.fail_after(TIMEOUT):
        async with served(app) as port:
            client = H1(port)
            # a pinned receive buffer (no autotuning), large enough for loopback's 64 KiB segments:
            # a tiny one makes TCP's zero-window probing, not the server, pace the reading
            await client.connect(rcvbuf=262_144)
            try:
                await client.request("/stalled")
                assert await client.read_until(lambda c: c.status is not None)
                assert await closes["/stalled"].wait() == ["slow-client"]
                await client.read_all()  # reading again lets a stuck write finish
                assert (client.status, client.complete, client.closed_early) == (200, False, True)
            finally:
                await client.aclose()


async def test_driver_gives_up_without_a_final_body_when_the_send_blocks() -> None:
    """Raw ASGI: the send blocks after the response start (an HTTP/2 stream without credit);
    the producer outruns ``max_buffer``: ``on_close("slow-client")``, the app returns at once,
    and no ``more_body: False`` is ever sent. (Passes on the old code: the server-side reset
    above relies on it.)"""
    closes = {"/stalled": Record()}
    refused = Record()
    app = StreamMiddleware(stream_app(handler(closes, refused)))
    sent: list[dict[str, Any]] = []
    blocked = anyio.Event()

    async def receive() -> Any:
        await anyio.sleep_forever()

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            blocked.set()
            await anyio.sleep_forever()  # no credit, ever (cancellable, as hypercorn's h2)

    scope: Any = {"type": "http", "method": "GET", "path": "/stalled", "headers": []}
    with anyio.fail_after(TIMEOUT):
        await app(scope, receive, send)
    assert blocked.is_set()
    assert closes["/stalled"].items == ["slow-client"]
    assert refused.items[0] is not None
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert all(m.get("more_body", False) for m in sent[1:])
