"""The client leaves (``http.disconnect``, or a write that fails with ``OSError``), in process
(tests/peer.py): the producer is cancelled or closed at once, whatever its kind (callback,
async generator, a source still waiting for its first item, a proxied upstream), nothing more
is sent and ``on_close`` says ``"disconnect"``."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgi_stream import CloseReason, Stream, StreamMiddleware, hand_over
from tests.helpers import FakeUpstream, record
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_disconnect_cancels_callback_and_sends_nothing_more() -> None:
    cleaned = anyio.Event()

    async def callback(stream: Stream) -> None:
        try:
            for n in itertools.count():
                stream.send(n)
                await stream.wait(1)
        finally:
            cleaned.set()

    stream, peer = Stream(callback), Peer()
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: len(peer.bodies) >= 3)
        peer.disconnect()
    assert cleaned.is_set() and reasons == ["disconnect"]
    assert peer.sent_after_disconnect == 0 and not peer.finished


async def test_disconnect_closes_the_async_generator() -> None:
    closed = anyio.Event()
    pulled = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal pulled
        try:
            while True:
                pulled += 1
                yield pulled
                await anyio.sleep(0.001)
        finally:
            closed.set()

    gen = endless()
    stream, peer = Stream(gen), Peer()
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: len(peer.bodies) >= 2)
        peer.disconnect()
    assert closed.is_set() and reasons == ["disconnect"]
    assert gen.ag_frame is None  # finished: aclose() ran, it will never be resumed
    assert peer.sent_after_disconnect == 0 and not peer.finished


async def test_disconnect_while_waiting_for_the_first_item() -> None:
    cancelled, waiting = anyio.Event(), anyio.Event()

    async def slow_first() -> AsyncIterator[str]:
        try:
            waiting.set()
            await anyio.sleep_forever()
            yield "never"
        finally:
            cancelled.set()

    stream, peer = Stream(slow_first()), Peer()
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await waiting.wait()
        peer.disconnect()
    assert cancelled.is_set() and reasons == ["disconnect"] and peer.messages == []


async def test_oserror_from_send_counts_as_disconnect() -> None:
    cleaned = anyio.Event()

    async def callback(stream: Stream) -> None:
        try:
            while True:
                stream.send("x")
                await stream.wait(1)
        finally:
            cleaned.set()

    stream, peer = Stream(callback), Peer(fail_after=2)
    reasons = record(stream)
    with anyio.fail_after(5):
        await stream(peer.scope, peer.receive, peer.send)
    assert cleaned.is_set() and reasons == ["disconnect"]


async def test_proxy_closes_upstream_when_the_client_leaves() -> None:
    upstream, peer = FakeUpstream([b"data: 1\n\n"], endless=True), Peer()
    stream = Stream(upstream)
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        await peer.wait_for(lambda: len(peer.bodies) >= 2)
        peer.disconnect()
    assert upstream.closed.is_set() and reasons == ["disconnect"]


async def test_a_disconnect_the_framework_read_still_reaches_the_stream() -> None:
    """Django reads receive() in its own task: a client that leaves before the stand-in is
    sent must not leave the handed-over stream running."""
    stream = Stream()
    reasons: list[CloseReason] = []
    stream.on_close(reasons.append)

    async def framework_that_saw_the_disconnect(scope: Any, receive: Any, send: Any) -> None:
        hand_over(stream)
        while (await receive())["type"] != "http.disconnect":
            pass  # the framework's own listener consumed it; no stand-in is ever sent

    peer = Peer()
    peer.disconnect()
    with anyio.fail_after(5):
        await StreamMiddleware(framework_that_saw_the_disconnect)(
            peer.scope, peer.receive, peer.send
        )
    assert reasons == ["disconnect"] and peer.messages == []
