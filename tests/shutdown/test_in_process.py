"""``StreamMiddleware.shutdown(grace)`` in process (tests/peer.py): every open stream gets what
was queued and a clean end, ``on_close("shutdown")``; new requests get a ``503``; a client that
stopped reading is cut off once ``grace`` has passed."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgi_stream import CloseReason, Stream, StreamMiddleware
from tests.helpers import returning
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_shutdown_ends_every_stream_cleanly_then_refuses_new_ones() -> None:
    streams = [Stream(), Stream()]
    reasons: list[CloseReason] = []
    for stream in streams:
        stream.on_close(reasons.append)
        stream.send("queued before shutdown")
    pending = list(streams)

    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        return pending.pop() if pending else Stream(["too late"])

    middleware = StreamMiddleware(app)
    peers = [Peer(), Peer()]
    async with anyio.create_task_group() as tg:
        for peer in peers:
            tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
        for peer in peers:
            await peer.wait_for(lambda peer=peer: b"queued" in peer.body)
        with anyio.fail_after(5):
            await middleware.shutdown(grace=5_000)
        assert middleware.active == 0
    assert reasons == ["shutdown", "shutdown"]
    for peer in peers:
        assert peer.finished and peer.body == b"data: queued before shutdown\n\n"
    late = Peer()
    await middleware(late.scope, late.receive, late.send)
    assert late.status == 503


async def test_shutdown_cuts_off_a_stalled_client_after_grace() -> None:
    stream, peer = Stream(), Peer(stall_after=0)
    reasons: list[CloseReason] = []
    stream.on_close(reasons.append)
    middleware = StreamMiddleware(returning(stream))
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
        stream.send("stuck")
        with anyio.fail_after(5):
            await peer.stalled.wait()
        before = anyio.current_time()
        with anyio.fail_after(5):
            await middleware.shutdown(grace=50)
        assert anyio.current_time() - before < 2
    assert middleware.active == 0 and reasons == ["shutdown"] and not peer.finished
