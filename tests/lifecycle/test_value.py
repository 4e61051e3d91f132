"""``Stream.value``, the async iterator of encoded frames that a framework's own streaming
response consumes, owns its producer without reaching into its consumer:

- a consumer that holds a chunk (busy in an await of its own, e.g. a slow write) while the
  producer queues more than ``max_buffer`` bytes is never cancelled inside that await; the
  iteration then ends and ``on_close`` says ``"slow-client"``;
- closing the iterator early (``aclose()`` after the first chunk) returns cleanly, with no
  ``BaseExceptionGroup``/``GeneratorExit`` raised, for a callback, an async generator, a sync
  generator and a list source; ``on_close`` runs once with ``"disconnect"``; a callback task
  is cancelled (its ``finally`` runs), a generator is closed;
- a stream that completes yields every frame in order, then ``on_close("complete")``.

Checked in-process (the test is the consumer) and under a real hypercorn with Starlette's
``StreamingResponse(stream.value)``, the way a user hands ``value`` to a framework.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, track
from tests.reliability.clients import H1

pytestmark = pytest.mark.anyio

MAX_BUFFER = 1_000
FIRST = b"data: first\n\n"


async def aclose(iterator: AsyncIterator[bytes]) -> None:
    """``iterator.aclose()`` (``Stream.value`` is typed as a plain ``AsyncIterator``)."""
    await iterator.aclose()  # type: ignore[attr-defined]


async def settle() -> None:
    """Let every task that is ready run a few steps (to catch a late second ``on_close``)."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


class Producer:
    """A callback source that records whether it was cancelled and whether its finally ran."""

    def __init__(self) -> None:
        self.events = Record()

    async def first_then_forever(self, stream: Stream) -> None:
        try:
            stream.send("first")
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.events("cancelled")
            raise
        finally:
            self.events("finally")


# -- a consumer that holds a chunk ---------------------------------------------------------


async def test_a_consumer_holding_a_chunk_is_not_cancelled_in_its_own_await() -> None:
    go, overflowed = anyio.Event(), anyio.Event()
    closes = Record()
    producer = Record()

    async def callback(stream: Stream) -> None:
        try:
            stream.send("first")
            await go.wait()  # the consumer now holds the first chunk
            for _ in range(3):  # 3 x ~610 bytes > max_buffer, queued behind the held chunk
                stream.send("x" * 600)
            overflowed.set()
            await anyio.sleep_forever()
        finally:
            producer("finally")

    stream = track(Stream(callback, max_buffer=MAX_BUFFER), closes)
    iterator = stream.value
    outcome = "its own awaits completed"
    with anyio.fail_after(TIMEOUT):
        assert await anext(iterator) == FIRST
        go.set()
        try:
            # The consumer's own work with the chunk (a framework writing it to a slow
            # client): nothing of the stream's may be raised in here.
            await overflowed.wait()
            await anyio.sleep(0.2)
        except anyio.get_cancelled_exc_class():
            outcome = "Cancelled was raised inside the consumer's own await"
        rest = [chunk async for chunk in iterator]
    assert outcome == "its own awaits completed"
    assert rest == []  # the queued frames were dropped with the slow client
    assert await closes.wait() == ["slow-client"]
    with anyio.fail_after(TIMEOUT):
        assert await producer.wait() == ["finally"]  # the callback task was cancelled
    await settle()
    assert closes.items == ["slow-client"]


# -- closing early -------------------------------------------------------------------------


async def test_closing_value_early_is_clean_and_cancels_the_callback() -> None:
    closes = Record()
    producer = Producer()
    stream = track(Stream(producer.first_then_forever), closes)
    iterator = stream.value
    with anyio.fail_after(TIMEOUT):
        assert await anext(iterator) == FIRST
        await aclose(iterator)  # raises nothing (no BaseExceptionGroup([GeneratorExit]))
        assert await closes.wait() == ["disconnect"]
        assert await producer.events.wait(2) == ["cancelled", "finally"]
    await settle()
    assert closes.items == ["disconnect"]
    assert stream.closed


class Sources:
    """The automatic sources, each with a record of whether it was closed."""

    def __init__(self) -> None:
        self.closed = Record()

    async def agen(self) -> AsyncIterator[str]:
        try:
            for item in ("first", "second", "third"):
                yield item
        finally:
            self.closed("closed")

    def gen(self) -> Iterator[str]:
        try:
            yield from ("first", "second", "third")
        finally:
            self.closed("closed")


@pytest.mark.parametrize("kind", ["async generator", "sync generator", "list"])
async def test_closing_value_early_is_clean_for_automatic_sources(kind: str) -> None:
    sources = Sources()
    source: Any = {
        "async generator": sources.agen,
        "sync generator": sources.gen,
        "list": lambda: ["first", "second", "third"],
    }[kind]()
    closes = Record()
    stream = track(Stream(source), closes)
    iterator = stream.value
    with anyio.fail_after(TIMEOUT):
        assert await anext(iterator) == FIRST
        await aclose(iterator)
        assert await closes.wait() == ["disconnect"]
        if kind != "list":
            assert await sources.closed.wait() == ["closed"]
    await settle()
    assert closes.items == ["disconnect"]


# -- completion ----------------------------------------------------------------------------


async def test_value_yields_every_frame_in_order_then_completes() -> None:
    closes = Record()

    async def callback(stream: Stream) -> None:
        for n in range(20):
            stream.send(f"event {n}")
            if n % 3 == 0:
                await anyio.lowlevel.checkpoint()
        stream.close()

    stream = track(Stream(callback), closes)
    with anyio.fail_after(TIMEOUT):
        body = b"".join([chunk async for chunk in stream.value])
        assert await closes.wait() == ["complete"]
    assert body == b"".join(f"data: event {n}\n\n".encode() for n in range(20))
    await settle()
    assert closes.items == ["complete"]


# -- under a real server, through Starlette's StreamingResponse ----------------------------


def starlette_app(make_stream: Any) -> Starlette:
    async def endpoint(request: Request) -> StreamingResponse:
        stream: Stream = make_stream()
        return StreamingResponse(stream.value, media_type="text/event-stream")

    return Starlette(routes=[Route("/", endpoint)])


async def test_value_under_a_real_server_completes() -> None:
    closes = Record()

    async def callback(stream: Stream) -> None:
        for n in range(20):
            stream.send(f"event {n}")
            await anyio.lowlevel.checkpoint()
        stream.close()

    app = starlette_app(lambda: track(Stream(callback), closes))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url)
            assert await closes.wait() == ["complete"]
    assert response.status_code == 200
    assert response.content == b"".join(f"data: event {n}\n\n".encode() for n in range(20))
    assert closes.items == ["complete"]


async def test_value_under_a_real_server_client_leaves(caplog: pytest.LogCaptureFixture) -> None:
    closes = Record()
    producer = Producer()
    app = starlette_app(lambda: track(Stream(producer.first_then_forever), closes))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with client.stream("GET", url) as response:
                assert await anext(response.aiter_raw()) == FIRST
            assert await closes.wait() == ["disconnect"]
            assert await producer.events.wait(2) == ["cancelled", "finally"]
            await settle()
    assert closes.items == ["disconnect"]
    errors = [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]
    assert errors == []


async def test_value_closed_early_by_the_framework_under_a_real_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A framework (here a body iterator of the user's) that stops after the first chunk and
    closes ``value`` (``aclosing``): the response still ends cleanly with that chunk."""
    closes = Record()
    producer = Producer()
    outcomes = Record()

    async def first_chunk_only(stream: Stream) -> AsyncIterator[bytes]:
        try:
            async with aclosing(stream.value) as frames:  # type: ignore[type-var]
                async for chunk in frames:
                    yield chunk
                    break
        except BaseException as exc:
            outcomes(repr(exc))
            raise
        outcomes("closed cleanly")

    async def endpoint(request: Request) -> StreamingResponse:
        stream = track(Stream(producer.first_then_forever), closes)
        return StreamingResponse(first_chunk_only(stream), media_type="text/event-stream")

    app = Starlette(routes=[Route("/", endpoint)])
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            body = b""
            try:
                async with client.stream("GET", url) as response:
                    async for chunk in response.aiter_raw():
                        body += chunk
            except httpx.RemoteProtocolError:  # checked below, after what the server saw
                body += b"<the response broke off>"
            assert await outcomes.wait() == ["closed cleanly"]
            assert await closes.wait() == ["disconnect"]
            assert await producer.events.wait(2) == ["cancelled", "finally"]
            await settle()
    assert response.status_code == 200
    assert body == FIRST  # a clean end of the response after the chunk
    assert closes.items == ["disconnect"]
    errors = [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]
    assert errors == []


async def test_value_under_a_real_server_stalled_client(caplog: pytest.LogCaptureFixture) -> None:
    """The framework's write blocks on a client that stopped reading (the consumer holds a
    chunk) while the producer queues more than ``max_buffer``: the producer is stopped and,
    once the client is gone, ``on_close`` says ``"slow-client"``; nothing is logged as an
    error (the framework's own write was not cancelled by the stream)."""
    closes = Record()
    producer = Record()
    frame = "x" * 65_536

    async def flood(stream: Stream) -> None:
        try:
            for _ in range(256):  # 16 MiB at most; the stream ends long before
                if not stream.send(frame):
                    break
                await anyio.lowlevel.checkpoint()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            producer("cancelled")
            raise

    app = starlette_app(lambda: track(Stream(flood, max_buffer=256 * 1024), closes))
    with anyio.fail_after(TIMEOUT * 2):
        async with serve(app) as url:
            client = H1(int(url.rsplit(":", 1)[1]))
            await client.connect(rcvbuf=16_384)
            await client.request("/")
            assert await client.read_until(lambda c: len(c.body) > 0)  # then stops reading
            assert await producer.wait() == ["cancelled"]  # dropped while the write blocks
            await client.abort()
            assert await closes.wait() == ["slow-client"]
            await settle()
    assert closes.items == ["slow-client"]
    errors = [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]
    assert errors == []
