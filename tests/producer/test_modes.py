"""The three ways a Stream is fed, in process (tests/peer.py): a callback (started at once,
open until ``close()``), values sent from another task, and a source streamed automatically
(list, generator, async generator, awaitable, an asyncio Task; a str or bytes is one item;
an empty source an empty ``200``). Sources that cannot stream are refused clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from asgi_stream import ServerSentEvent, Stream, wait
from tests.helpers import record
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_callback_mode_starts_at_once_and_streams_in_order() -> None:
    go = anyio.Event()

    async def callback(stream: Stream) -> None:
        await go.wait()
        stream.send("hello")
        await stream.wait(5)
        stream.send("world")
        stream.close()

    peer, stream = Peer(), Stream(callback)
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: peer.start is not None)
        assert peer.body == b""  # the client sees the stream open before any event
        go.set()
    assert peer.status == 200
    assert peer.body == b"data: hello\n\ndata: world\n\n"
    assert peer.finished and reasons == ["complete"]


async def test_sync_callback_runs() -> None:
    def callback(stream: Stream) -> None:
        stream.send({"n": 1})
        stream.close()

    peer = Peer()
    await Stream(callback)(peer.scope, peer.receive, peer.send)
    assert peer.body == b'data: {"n":1}\n\n' and peer.finished


async def test_callback_that_returns_keeps_the_stream_open_until_close() -> None:
    stream = Stream(lambda s: s.send("first"))
    peer = Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: peer.body == b"data: first\n\n")
        assert not peer.finished and not stream.closed
        stream.send("later")
        stream.close()
    assert peer.body == b"data: first\n\ndata: later\n\n" and peer.finished


async def test_value_mode_is_fed_from_another_task() -> None:
    stream, peer = Stream(event="count"), Peer()

    async def interval() -> None:
        for n in range(3):
            stream.send(n, id=n)
            await stream.wait(2)
        stream.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        tg.start_soon(interval)
    assert peer.body == b"".join(b"id: %d\nevent: count\ndata: %d\n\n" % (n, n) for n in range(3))


@pytest.mark.parametrize("kind", ["list", "generator", "async_generator", "awaitable"])
async def test_automatic_mode_sends_each_item_and_closes(kind: str) -> None:
    items: list[Any] = ["a", {"b": [1, 2]}, 3, ServerSentEvent("d", event="x"), None, "e"]

    def gen() -> Iterator[Any]:
        yield from items

    async def agen() -> AsyncIterator[Any]:
        for item in items:
            yield item

    async def resolves() -> AsyncIterator[Any]:
        return agen()

    make = {"list": lambda: items, "generator": gen, "async_generator": agen, "awaitable": resolves}
    stream, peer = Stream(make[kind]()), Peer()
    reasons = record(stream)
    await stream(peer.scope, peer.receive, peer.send)
    assert peer.body == (
        b'data: a\n\ndata: {"b":[1,2]}\n\ndata: 3\n\nevent: x\ndata: d\n\ndata: e\n\n'
    )
    assert peer.finished and reasons == ["complete"]


@pytest.mark.parametrize("source", ["one line\ntwo", b"raw: bytes\n\n"])
async def test_str_or_bytes_source_is_one_item(source: str | bytes) -> None:
    peer = Peer()
    await Stream(source)(peer.scope, peer.receive, peer.send)
    expected = source if isinstance(source, bytes) else b"data: one line\ndata: two\n\n"
    assert peer.body == expected


async def test_empty_source_gives_an_empty_200() -> None:
    peer = Peer()
    await Stream([])(peer.scope, peer.receive, peer.send)
    assert peer.status == 200 and peer.body == b"" and peer.finished


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # an asyncio Task exists there only
async def test_an_asyncio_task_source_is_awaited_not_iterated() -> None:
    import asyncio

    async def rows() -> list[int]:
        return [1, 2]

    peer = Peer()
    await Stream(asyncio.ensure_future(rows()))(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: 1\n\ndata: 2\n\n"


def test_sources_that_cannot_stream_are_refused_clearly() -> None:
    async def agen() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"call it: Stream\(agen\(\)\)"):
        Stream(agen)
    with pytest.raises(TypeError, match="int"):
        Stream(42)


@pytest.mark.anyio
async def test_wait_sleeps_in_milliseconds() -> None:
    start = anyio.current_time()
    await wait(30)
    await Stream().wait(30)
    assert anyio.current_time() - start >= 0.06
