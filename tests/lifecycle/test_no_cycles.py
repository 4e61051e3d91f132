"""A stream that ended leaves nothing for the garbage collector: reference counting frees it.

With thousands of open streams every full collection walks all of them; garbage in cycles
adds to how often collections run and how long each takes. In process (tests/peer.py)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import anyio
import pytest

from asgi_stream import Stream, StreamMiddleware
from asgi_stream.producer import Producer
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def idle() -> AsyncIterator[str]:
    yield "first"
    await anyio.sleep_forever()


def publish(subscribers: set[Stream], data: str) -> None:
    for stream in subscribers:
        stream.send(data)


@pytest.mark.parametrize("mode", ["value-based", "automatic"])
async def test_a_stream_that_ended_is_freed_without_the_collector(mode: str) -> None:
    subscribers: set[Stream] = set()

    async def app(scope: object, receive: object, send: object) -> Stream:
        stream = Stream() if mode == "value-based" else Stream(idle())
        subscribers.add(stream)
        stream.on_close(lambda reason: subscribers.discard(stream))  # README's pattern
        return stream

    middleware = StreamMiddleware(app)  # type: ignore[arg-type]
    gc.collect()
    gc.disable()
    try:
        peer = Peer()
        async with anyio.create_task_group() as tg:
            tg.start_soon(middleware, peer.scope, peer.receive, peer.send)  # type: ignore[arg-type]
            await peer.wait_for(lambda: bool(subscribers))
            publish(subscribers, "news")  # no reference to a stream is left in this frame
            await peer.wait_for(lambda: peer.body.endswith(b"data: news\n\n"))
            peer.disconnect()
        assert not subscribers
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = sorted({type(o).__name__ for o in gc.garbage if isinstance(o, (Stream, Producer))})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
