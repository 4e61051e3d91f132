"""Pacing and backpressure, in process (tests/peer.py): frames already waiting go out in one
write, a lone event is written at once, an automatic source is pulled only while the queue has
room (``drain()`` waits for it), a source that computes still yields to the loop (the time
slice), and an open stream costs two tasks besides the caller's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from asgi_stream import Stream
from tests.helpers import record
from tests.peer import Peer

pytestmark = pytest.mark.anyio


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


async def test_an_open_stream_costs_as_many_tasks_as_a_hand_written_loop(
    anyio_backend: str,
) -> None:
    """Memory per open stream is mostly tasks. A hand-written loop has two: the caller runs
    the source and sends, one more watches for the disconnect. On asyncio a stream has as
    many: the caller watches for the disconnect and writes the heartbeat itself, the
    producer writes what its source gives while no writer is needed, so only the producer
    is spawned. On trio, where the writer does every write, a writer too."""

    async def idle() -> AsyncIterator[str]:
        yield "first"
        await anyio.sleep_forever()

    stream, peer = Stream(idle(), ping=5), Peer()
    before = len(anyio.get_running_tasks())
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: peer.body.count(b": ping\n\n") >= 2)
        spawned = 1 if anyio_backend == "asyncio" else 2
        assert len(anyio.get_running_tasks()) == before + 1 + spawned
        peer.disconnect()
    assert stream.closed and len(anyio.get_running_tasks()) == before
