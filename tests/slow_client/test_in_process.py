"""A client that stops reading, in process (tests/peer.py, ``stall_after``): once more than
``max_buffer`` bytes wait behind the blocked write, ``send()`` returns ``False``, the queue is
released and ``on_close`` says ``"slow-client"`` (a stalled heartbeat write included); other
streams are unaffected."""

from __future__ import annotations

import anyio
import pytest

from asgi_stream import Stream
from tests.helpers import record
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_slow_client_is_dropped_and_its_memory_released() -> None:
    stream, peer = Stream(max_buffer=10_000), Peer(stall_after=0)
    reasons = record(stream)
    results: list[bool] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        stream.send("first")
        with anyio.fail_after(5):
            await peer.stalled.wait()  # the writer is blocked inside send(): the client stopped
        for _ in range(1_000):  # send() is synchronous: it cannot block, even now
            results.append(stream.send("x" * 100))
            if not results[-1]:
                break
    assert reasons == ["slow-client"] and stream.closed
    assert results[-1] is False and len(results) < 120  # dropped once > 10 000 bytes waited
    assert stream.producer.queue.queued == 0 and stream.producer.queue.frames == []
    assert not peer.finished


async def test_slow_client_does_not_affect_other_streams() -> None:
    slow, slow_peer = Stream(max_buffer=1_000), Peer(stall_after=0)
    fast, fast_peer = Stream(max_buffer=1_000), Peer()

    async def produce() -> None:
        for n in range(200):
            slow.send("x" * 50)
            fast.send(n)
            await anyio.lowlevel.checkpoint()
        fast.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow, slow_peer.scope, slow_peer.receive, slow_peer.send)
        tg.start_soon(fast, fast_peer.scope, fast_peer.receive, fast_peer.send)
        tg.start_soon(produce)
    assert slow.closed and fast_peer.finished
    assert fast_peer.body == b"".join(b"data: %d\n\n" % n for n in range(200))


async def test_a_stalled_heartbeat_write_still_bounds_memory() -> None:
    stream, peer = Stream(ping=5, max_buffer=1_000), Peer(stall_after=0)
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        with anyio.fail_after(5):
            await peer.stalled.wait()  # the first write (a ping) blocks: the client stopped
        for _ in range(100):
            if not stream.send("x" * 100):
                break
    assert reasons == ["slow-client"] and stream.producer.queue.queued == 0
