"""``StreamMiddleware.stats`` and ``Channel.stats``: the counts a production user exports
(live streams, streams ended by reason, events, pings and bytes written; subscribers per topic
and reset events), exact after known traffic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asgi_stream import Channel, Stream, StreamMiddleware
from tests.peer import Peer

pytestmark = pytest.mark.anyio


def middleware_for(make: Any) -> StreamMiddleware:
    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        return make(scope["path"])  # type: ignore[no-any-return]

    return StreamMiddleware(app)


async def test_events_bytes_and_ended_by_reason_are_counted() -> None:
    async def failing() -> AsyncIterator[str]:
        yield "one"
        raise RuntimeError("boom")

    def make(path: str) -> Stream:
        if path == "/error":
            return Stream(failing())
        if path == "/forever":
            return Stream()
        return Stream(["a", "b", "c"])

    app = middleware_for(make)
    assert app.stats["live"] == 0 and app.stats["events"] == 0
    done = Peer(path="/")
    await app(done.scope, done.receive, done.send)
    failed = Peer(path="/error")
    await app(failed.scope, failed.receive, failed.send)
    leaving, stopping = Peer(path="/forever"), Peer(path="/forever")
    async with anyio.create_task_group() as tg:
        for peer in (leaving, stopping):
            tg.start_soon(app, peer.scope, peer.receive, peer.send)
        for peer in (leaving, stopping):
            await peer.wait_for(lambda peer=peer: peer.start is not None)
        assert app.stats["live"] == 2
        leaving.disconnect()
        with anyio.fail_after(5):
            while app.stats["live"] == 2:  # noqa: ASYNC110 (a count, no event to wait for)
                await anyio.sleep(0.01)
        await app.shutdown(1_000)
    stats = app.stats
    assert stats["live"] == 0
    assert stats["ended"] == {
        "complete": 1,
        "disconnect": 1,
        "slow-client": 0,
        "shutdown": 1,
        "error": 1,
    }
    assert stats["events"] == 4  # a, b, c, one
    assert stats["bytes"] == len(done.data) + len(failed.data) == len(b"data: a\n\n") * 4 + 2
    assert stats["pings"] == 0


async def test_heartbeats_and_slow_clients_are_counted_apart() -> None:
    app = middleware_for(lambda path: Stream(ping=10) if path == "/idle" else Stream())
    idle = Peer(path="/idle")
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, idle.scope, idle.receive, idle.send)
        await idle.wait_for(lambda: idle.body.count(b": ping") >= 3)
        idle.disconnect()
    stats = app.stats
    assert stats["pings"] >= 3 and stats["events"] == 0
    assert stats["bytes"] == len(idle.body)

    slow_app = StreamMiddleware(lambda scope, receive, send: flood())
    slow = Peer(stall_after=1)
    await slow_app(slow.scope, slow.receive, slow.send)
    assert slow_app.stats["ended"]["slow-client"] == 1


async def flood() -> Stream:
    async def sending(stream: Stream) -> None:
        while stream.send("x" * 1000):
            await anyio.lowlevel.checkpoint()

    return Stream(sending, max_buffer=10_000)


async def test_channel_counts_subscribers_per_topic_and_reset_events() -> None:
    async with Channel() as channel:
        app = StreamMiddleware(lambda scope, receive, send: subscription(channel, scope))
        peers = [Peer(path="/a"), Peer(path="/a"), Peer(path="/b")]
        peers[2].scope["headers"] = [(b"last-event-id", b"unknown")]
        async with anyio.create_task_group() as tg:
            for peer in peers:
                tg.start_soon(app, peer.scope, peer.receive, peer.send)
            for peer in peers:
                await peer.wait_for(lambda peer=peer: peer.start is not None)
            assert channel.stats == {"subscribers": {"a": 2, "b": 1}, "resets": 1}
            await channel.publish("a", 1)
            for peer in peers[:2]:
                await peer.wait_for(lambda peer=peer: b"data: 1" in peer.body)
            peers[0].disconnect()
            with anyio.fail_after(5):
                while channel.stats["subscribers"]["a"] == 2:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert app.stats["live"] == 2 and app.stats["events"] == 3  # 2 deliveries + reset
            await channel.close("a")
            await channel.close("b")
        assert channel.stats == {"subscribers": {}, "resets": 1}


async def subscription(channel: Channel, scope: Any) -> Stream:
    return Stream(channel.subscribe(scope["path"].strip("/")))
