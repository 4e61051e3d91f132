"""The heartbeat, in process (tests/peer.py): a ``: ping`` comment after ``ping`` ms idle, none
with ``ping=None``, none in formats where a comment would corrupt the body (ndjson) and none
inside proxied bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from asgi_stream import Stream
from tests.helpers import FakeUpstream
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_heartbeat_after_idle_and_none_when_disabled() -> None:
    beating, beating_peer = Stream(ping=10), Peer()
    silent, silent_peer = Stream(ping=None), Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(beating, beating_peer.scope, beating_peer.receive, beating_peer.send)
        tg.start_soon(silent, silent_peer.scope, silent_peer.receive, silent_peer.send)
        await beating_peer.wait_for(lambda: beating_peer.body.count(b": ping\n\n") >= 3)
        beating.close()
        silent.close()
    assert silent_peer.body == b"" and silent_peer.finished


async def test_no_heartbeat_in_formats_where_a_comment_would_corrupt_the_body() -> None:
    ndjson, peer = Stream(format="ndjson", ping=5), Peer()
    sse, sse_peer = Stream(ping=5), Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ndjson, peer.scope, peer.receive, peer.send)
        tg.start_soon(sse, sse_peer.scope, sse_peer.receive, sse_peer.send)
        await sse_peer.wait_for(lambda: sse_peer.body.count(b": ping") >= 3)
        ndjson.close()
        sse.close()
    assert peer.body == b""


class PausingUpstream(FakeUpstream):
    """Sends half an event, pauses past the ping interval, sends the rest."""

    def __init__(self, pause: anyio.Event) -> None:
        super().__init__([])
        self.pause = pause

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        yield b"data: hel"
        await self.pause.wait()
        yield b"lo\n\n"


async def test_no_heartbeat_is_injected_into_proxied_bytes() -> None:
    resume = anyio.Event()
    upstream, idle = PausingUpstream(resume), Stream(ping=5)
    proxy, peer, idle_peer = Stream(upstream, ping=5), Peer(), Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(proxy, peer.scope, peer.receive, peer.send)
        tg.start_soon(idle, idle_peer.scope, idle_peer.receive, idle_peer.send)
        # several ping intervals pass (seen on another stream) while the upstream pauses
        await idle_peer.wait_for(lambda: idle_peer.body.count(b": ping") >= 3)
        resume.set()
        idle.close()
    assert peer.body == b"data: hello\n\n"
