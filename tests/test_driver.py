"""The driver's guarantees (SPEC "Driver guarantees"), in process, on asyncio and trio."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asgi_stream import CloseReason, ServerSentEvent, Stream
from asgi_stream.driver import drive
from asgi_stream.frames import FrameQueue
from asgi_stream.wire import PING
from tests.helpers import record
from tests.peer import Peer

pytestmark = pytest.mark.anyio


# -- modes ---------------------------------------------------------------------------------


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


async def test_last_event_id_comes_from_the_request() -> None:
    seen: list[str | None] = []

    def callback(stream: Stream) -> None:
        seen.append(stream.last_event_id)
        stream.close()

    peer = Peer(headers=[(b"last-event-id", b"41")])
    await Stream(callback)(peer.scope, peer.receive, peer.send)
    assert seen == ["41"]


# -- failures before and after the start ---------------------------------------------------


async def test_failure_after_start_ends_cleanly_with_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def flaky() -> AsyncIterator[str]:
        yield "one"
        yield "two"
        raise RuntimeError("midway")

    stream, peer = Stream(flaky()), Peer(path="/flaky")
    reasons = record(stream)
    with caplog.at_level(logging.ERROR, logger="asgi_stream"):
        await stream(peer.scope, peer.receive, peer.send)
    assert peer.status == 200
    assert peer.body == b"data: one\n\ndata: two\n\n"  # nothing sent before the error is lost
    assert peer.finished and reasons == ["error"]
    assert "/flaky" in caplog.text


async def test_callback_that_raises_ends_cleanly_with_error() -> None:
    async def callback(stream: Stream) -> None:
        stream.send("before")
        raise ValueError("bug")

    stream, peer = Stream(callback), Peer()
    reasons = record(stream)
    await stream(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: before\n\n" and peer.finished and reasons == ["error"]


async def test_unencodable_item_is_an_error_naming_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Opaque:
        pass

    stream, peer = Stream(["ok", Opaque()]), Peer()
    reasons = record(stream)
    with caplog.at_level(logging.ERROR, logger="asgi_stream"):
        await stream(peer.scope, peer.receive, peer.send)
    assert reasons == ["error"] and "Opaque" in caplog.text


# -- disconnect ----------------------------------------------------------------------------


# -- the bounded queue ---------------------------------------------------------------------


async def test_frames_already_waiting_are_coalesced_into_one_send() -> None:
    def burst(stream: Stream) -> None:
        for n in range(500):
            stream.send(n)
        stream.close()

    peer = Peer()
    await Stream(burst)(peer.scope, peer.receive, peer.send)
    assert peer.body == b"".join(b"data: %d\n\n" % n for n in range(500))
    assert len(peer.bodies) <= 3  # 500 events, one write (+ the final empty body)


async def test_a_lone_event_is_written_without_waiting_to_batch() -> None:
    stream, peer = Stream(), Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: peer.start is not None)
        for n in range(3):
            stream.send(n)
            # no time passes on the clock: the write follows at the next scheduling point
            await peer.wait_for(lambda n=n: peer.body.endswith(b"data: %d\n\n" % n), within=1)
        stream.close()


async def test_automatic_mode_pulls_only_when_the_queue_has_room() -> None:
    pulled = 0

    def endless() -> Iterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield "y" * 98  # 106 bytes on the wire

    stream, peer = Stream(endless(), max_buffer=10_000), Peer(stall_after=1)
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        with anyio.fail_after(5):
            await peer.stalled.wait()
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert pulled <= 2 * 10_000 // 106  # paused, not buffering without bound
        assert not stream.closed  # backpressure, not a dropped client
        peer.disconnect()
    assert reasons == ["disconnect"]


async def test_drain_waits_for_room_and_returns_when_there_is() -> None:
    stream, peer = Stream(max_buffer=1_000), Peer()
    async with anyio.create_task_group() as tg:
        stream.send("z" * 600)  # above the low-water mark: no room until written
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        with anyio.fail_after(2):
            await stream.drain()
        assert stream.producer.queue.queued == 0 and peer.body.endswith(b"z" * 600 + b"\n\n")
        with anyio.fail_after(2):
            await stream.drain()  # room already: returns at once
        stream.close()


async def test_an_open_stream_costs_two_tasks_besides_the_callers() -> None:
    """Memory per open stream is mostly tasks: the caller watches for the disconnect, the
    writer queues the heartbeat, so only a producer and a writer are spawned."""

    async def idle() -> AsyncIterator[str]:
        yield "first"
        await anyio.sleep_forever()

    stream, peer = Stream(idle(), ping=5), Peer()
    before = len(anyio.get_running_tasks())
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: peer.body.count(b": ping\n\n") >= 2)
        assert len(anyio.get_running_tasks()) == before + 1 + 2
        peer.disconnect()
    assert stream.closed and len(anyio.get_running_tasks()) == before


# -- sparse sources: the producer writes its own events while the writer is parked ----------


class Sparse:
    """Six items, one every few ms (longer than stream._SPARSE): a source that waits."""

    def __init__(self) -> None:
        self.producer: list[int] = []  # the task that ran it
        self.finished = anyio.Event()

    async def items(self) -> AsyncIterator[str]:
        self.producer.append(anyio.get_current_task().id)
        try:
            for item in "abcdef":
                await anyio.sleep(0.003)
                yield item
        finally:
            self.finished.set()


def events(*items: str) -> bytes:
    return b"".join(b"data: " + item.encode() + b"\n\n" for item in items)


async def test_a_sparse_source_is_written_in_order_by_its_own_task(anyio_backend: str) -> None:
    source = Sparse()
    stream, peer = Stream(source.items()), Peer()
    reasons = record(stream)
    with anyio.fail_after(5):
        await stream(peer.scope, peer.receive, peer.send)
    assert peer.data == events(*"abcdef") and peer.finished and reasons == ["complete"]
    # no task switch per event: after the first one, each is written by the producer;
    # not on trio, where a server may shield writes (see the next test)
    producer_writes = [sender in source.producer for sender in peer.senders[1:6]]
    assert producer_writes == [anyio_backend == "asyncio"] * 5


class BrokenPeer(Peer):
    """A server whose second body write fails with something other than OSError."""

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and len(self.bodies) == 2:
            raise RuntimeError("the server broke")
        await super().send(message)


async def test_a_write_that_fails_otherwise_is_an_error_and_nothing_more_is_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Sparse()
    stream, peer = Stream(source.items()), BrokenPeer()
    reasons = record(stream)
    with anyio.fail_after(5):
        await stream(peer.scope, peer.receive, peer.send)
    assert reasons == ["error"] and peer.data == events("a", "b") and not peer.finished
    failures = [r for r in caplog.records if "sending the stream failed" in r.getMessage()]
    assert len(failures) == 1 and source.finished.is_set()


class ShieldedPeer(Peer):
    """Like hypercorn's trio worker: a write in progress cannot be cancelled."""

    async def send(self, message: dict[str, Any]) -> None:
        with anyio.CancelScope(shield=True):
            await super().send(message)


async def test_a_stuck_write_on_trio_does_not_hold_up_on_close(anyio_backend: str) -> None:
    if anyio_backend != "trio":
        pytest.skip(
            "on asyncio the producer writes sparse events (servers there do not shield writes)"
        )
    source = Sparse()
    stream, peer = Stream(source.items()), ShieldedPeer(hold_at=2)
    reasons = record(stream)
    closed = anyio.Event()
    stream.on_close(lambda _: closed.set())
    outcome: list[CloseReason] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        try:
            with anyio.fail_after(5):
                await peer.held.wait()  # the client stopped reading; the write is shielded
                peer.disconnect()
                await closed.wait()  # cleanup and on_close ran while the write is stuck
                outcome = list(reasons)
        finally:
            peer.release()  # else the shielded write would hold this test forever
    assert outcome == ["disconnect"]


async def test_items_that_encode_to_nothing_still_yield_to_the_loop() -> None:
    """A source of None items (nothing to send) that computes for 100 ms: the time slice
    must still let other tasks run (every 5 ms: about 20 times), although the writer never
    wakes up."""
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await anyio.lowlevel.checkpoint()

    async def nothing() -> AsyncIterator[str | None]:
        yield "first"  # written: the writer waits from now on
        for _ in range(4_000):
            end = time.perf_counter() + 0.000_025
            while time.perf_counter() < end:
                pass
            yield None

    stream, peer = Stream(nothing()), Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        await anyio.lowlevel.checkpoint()
        before = ran
        with anyio.fail_after(10):
            await stream(peer.scope, peer.receive, peer.send)
        tg.cancel_scope.cancel()
    assert ran - before >= 10, f"other tasks ran {ran - before} times in 100 ms"


async def test_a_ping_and_a_close_during_a_producer_write_reach_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = Sparse()
    stream, peer = Stream(source.items(), ping=5), Peer(hold_at=1)
    reasons = record(stream)
    pinged = anyio.Event()
    push = FrameQueue.push

    def spy(queue: FrameQueue, frame: bytes) -> bool:
        if frame == PING:
            pinged.set()
        return push(queue, frame)

    monkeypatch.setattr(FrameQueue, "push", spy)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream, peer.scope, peer.receive, peer.send)
            await peer.held.wait()  # "b" is being written and the client is slow
            await pinged.wait()  # the heartbeat queues a ping meanwhile
            stream.close()
            peer.release()
    assert peer.body == events("a", "b") + PING and peer.finished
    assert reasons == ["complete"] and source.finished.is_set()


async def test_a_failed_producer_write_is_a_disconnect() -> None:
    source = Sparse()
    stream, peer = Stream(source.items()), Peer(fail_after=2)
    reasons = record(stream)
    with anyio.fail_after(5):
        await stream(peer.scope, peer.receive, peer.send)
    assert peer.data == events("a", "b") and not peer.finished
    assert reasons == ["disconnect"] and source.finished.is_set()


async def test_a_disconnect_during_a_producer_write_ends_everything() -> None:
    source = Sparse()
    stream, peer = Stream(source.items()), Peer(hold_at=2)
    reasons = record(stream)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream, peer.scope, peer.receive, peer.send)
            await peer.held.wait()
            peer.disconnect()
            await source.finished.wait()
    assert reasons == ["disconnect"] and peer.data == events("a", "b")


# -- heartbeat -----------------------------------------------------------------------------


# -- proxy mode (an upstream stand-in here; the real httpx one is in tests/e2e) ------------


# -- misc ----------------------------------------------------------------------------------


async def test_a_stream_is_sent_once() -> None:
    stream = Stream(["a"])
    peer = Peer()
    await stream(peer.scope, peer.receive, peer.send)
    with pytest.raises(RuntimeError, match="already"):
        await stream(Peer().scope, peer.receive, peer.send)


async def test_driver_defaults_apply_only_where_the_stream_is_unset() -> None:
    own, default = Stream(max_buffer=123, ping=None), Stream()
    for stream in (own, default):
        stream.close()
        peer = Peer()
        await drive(stream.producer, peer.scope, peer.receive, peer.send, ping=7, max_buffer=456)
    assert (own.producer.queue.limit, own.producer.ping_seconds()) == (123, None)
    assert (default.producer.queue.limit, default.producer.ping_seconds()) == (456, 0.007)


# -- regressions found in review -------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # an asyncio Task exists there only
async def test_an_asyncio_task_source_is_awaited_not_iterated() -> None:
    import asyncio

    async def rows() -> list[int]:
        return [1, 2]

    peer = Peer()
    await Stream(asyncio.ensure_future(rows()))(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: 1\n\ndata: 2\n\n"


async def test_server_errors_do_not_escape_as_exception_groups() -> None:
    async def failing_send(message: Any) -> None:
        raise RuntimeError("server bug")

    async def failing_receive() -> Any:
        raise RuntimeError("server bug")

    for send, receive in [(failing_send, Peer().receive), (Peer().send, failing_receive)]:
        stream = Stream(["a"])
        reasons = record(stream)
        with anyio.fail_after(5):
            await stream(Peer().scope, receive, send)  # returns: nothing escapes
        assert reasons in (["error"], ["disconnect"], ["complete"])
