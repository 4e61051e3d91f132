"""Sources that await per item: the producer writes its own events while the writer is parked
(on asyncio; on trio, where a server may shield writes, the writer does), in order, however
short the wait; a source that never suspends is still batched by the writer; a ping and a close
during such a write still reach the writer; a failed write is a disconnect, another error an
error; a stuck write on trio does not hold up ``on_close``. In process (tests/peer.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgi_stream import CloseReason, Stream
from asgi_stream.frames import FrameQueue
from asgi_stream.wire import PING
from tests.helpers import record
from tests.peer import Peer

pytestmark = pytest.mark.anyio


class Sparse:
    """Six items, one every few ms: a source that waits."""

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


async def test_a_source_awaiting_a_mere_checkpoint_per_item_is_written_by_its_own_task(
    anyio_backend: str,
) -> None:
    """No time passes on the clock between items (an LLM's tokens, rows from a driver): each
    still goes out as its own write, from the producer, with no wake-up of the writer."""
    producer: list[int] = []

    async def items() -> AsyncIterator[int]:
        producer.append(anyio.get_current_task().id)
        for n in range(50):
            await anyio.lowlevel.checkpoint()
            yield n

    stream, peer = Stream(items()), Peer()
    with anyio.fail_after(5):
        await stream(peer.scope, peer.receive, peer.send)
    assert peer.body == b"".join(b"data: %d\n\n" % n for n in range(50))
    by_producer = sum(sender in producer for sender in peer.senders)
    if anyio_backend == "asyncio":
        assert by_producer >= 45, peer.senders  # the first few may race the writer's start
    else:
        assert by_producer == 0


async def test_a_source_that_never_suspends_is_batched_by_the_writer() -> None:
    async def items() -> AsyncIterator[int]:
        for n in range(500):
            yield n

    stream, peer = Stream(items()), Peer()
    with anyio.fail_after(5):
        await stream(peer.scope, peer.receive, peer.send)
    assert peer.body == b"".join(b"data: %d\n\n" % n for n in range(500))
    assert len(peer.bodies) <= 4  # the first item, the rest in a batch, the final body


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
