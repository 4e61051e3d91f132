"""Channels in process (tests/peer.py), on both stores: exactly once and in order, resume by
Last-Event-ID, the reset event, close and 204, publish_from and cancel, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgi_stream import Channel, ServerSentEvent, Stream, StreamMiddleware
from tests.channels.publishing import paused_tokens
from tests.peer import Peer

pytestmark = pytest.mark.anyio


def events(body: bytes) -> list[dict[str, str]]:
    """The body's SSE events as field dicts (one data line each here)."""
    found = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        found.append(fields)
    return found


def subscriber_app(channel: Channel, topic: str = "t") -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        return Stream(channel.subscribe(topic))

    return StreamMiddleware(app)


def with_last_event_id(peer: Peer, last_id: str) -> Peer:
    peer.scope["headers"] = [*peer.scope.get("headers", []), (b"last-event-id", last_id.encode())]
    return peer


async def test_live_events_reach_every_subscriber_once_in_order_with_ids(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel() as channel:
        app = subscriber_app(channel)
        peers = [Peer() for _ in range(3)]
        async with anyio.create_task_group() as tg:
            for peer in peers:
                tg.start_soon(app, peer.scope, peer.receive, peer.send)
            for peer in peers:
                await peer.wait_for(lambda peer=peer: peer.start is not None)
            ids = [await channel.publish("t", {"n": n}) for n in range(5)]
            for peer in peers:
                await peer.wait_for(lambda peer=peer: len(events(peer.body)) == 5)
                got = events(peer.body)
                assert [e["id"] for e in got] == ids
                assert [json.loads(e["data"])["n"] for e in got] == list(range(5))
            await channel.close("t")
        assert all(peer.finished for peer in peers)


async def test_a_reconnect_resumes_after_its_last_event_id(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel() as channel:
        ids = [await channel.publish("t", n) for n in range(5)]
        await channel.close("t")
        peer = with_last_event_id(Peer(), ids[1])
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert [e["id"] for e in events(peer.body)] == ids[2:]


def assert_reset_then_kept(
    got: list[dict[str, str]], given: str, ids: list[str], history: int
) -> None:
    """The reset event naming ``given`` and the oldest id kept, then what is kept: a suffix of
    ``ids`` of at least ``history`` events (Redis trims approximately)."""
    assert got[0]["event"] == "reset"
    kept = [e["id"] for e in got[1:]]
    assert json.loads(got[0]["data"]) == {"last_event_id": given, "earliest": kept[0]}
    assert len(kept) >= history and kept == ids[-len(kept) :]


@pytest.mark.parametrize("given", ["bogus", "0-1", "x", "zz-99999", "99999999999999999999999-1"])
async def test_an_id_it_cannot_resume_gets_the_reset_event_then_the_history(
    given: str, make_channel: Callable[..., Channel]
) -> None:
    async with make_channel(history=3) as channel:
        ids = [await channel.publish("t", n) for n in range(5)]
        await channel.close("t")
        peer = with_last_event_id(Peer(), given)
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert_reset_then_kept(events(peer.body), given, ids, 3)


async def test_another_topics_id_gets_the_reset_event(make_channel: Callable[..., Channel]) -> None:
    async with make_channel() as channel:
        other = await channel.publish("other", "x")
        ids = [await channel.publish("t", n) for n in range(3)]
        await channel.close("t")
        peer = with_last_event_id(Peer(), other)
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert_reset_then_kept(events(peer.body), other, ids, 3)


async def test_an_id_trimmed_from_the_history_gets_the_reset_event(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel(history=2) as channel:
        ids = [await channel.publish("t", n) for n in range(300)]  # Redis trims by 100s
        await channel.close("t")
        peer = with_last_event_id(Peer(), ids[0])
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        got = events(peer.body)
        assert_reset_then_kept(got, ids[0], ids, 2)
        assert len(got) - 1 < 300


async def test_a_closed_topic_with_nothing_left_answers_204(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel() as channel:
        last = await channel.publish("t", "only")
        await channel.close("t")
        peer = with_last_event_id(Peer(), last)
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert peer.start is not None and peer.start["status"] == 204 and peer.body == b""
        with pytest.raises(ValueError, match="'t' is closed"):
            await channel.publish("t", "more")


async def test_publish_from_outlives_its_clients_and_cancel_stops_it(
    make_channel: Callable[..., Channel],
) -> None:
    produced: list[int] = []
    release, third = anyio.Event(), anyio.Event()

    async with make_channel() as channel:
        channel.publish_from("reply", paused_tokens(produced, third, release))
        with anyio.fail_after(5):
            await third.wait()
        peer = with_last_event_id(Peer(), "start")  # the whole history, then live, to the end
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscriber_app(channel, "reply"), peer.scope, peer.receive, peer.send)
            await peer.wait_for(lambda: peer.start is not None)
            await channel.cancel("reply")
            await peer.wait_for(lambda: peer.finished)
        again = Peer()
        await subscriber_app(channel, "reply")(again.scope, again.receive, again.send)
        assert again.status == 204  # closed, nothing after: EventSource stops reconnecting
        assert produced == [0, 1, 2]


async def test_bad_input_is_refused_and_nothing_is_stored(
    make_channel: Callable[..., Channel],
) -> None:
    channel = make_channel()
    with pytest.raises(RuntimeError, match="async with channel"):
        await channel.publish("t", 1)
    async with channel:
        with pytest.raises(TypeError, match="topic"):
            await channel.publish(7, 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="topic"):
            await channel.publish("x" * 257, 1)
        with pytest.raises(ValueError, match="topic"):
            await channel.publish("", 1)
        with pytest.raises(ValueError, match="topic"):
            await channel.publish("lone \ud800 surrogate", 1)
        assert await channel.publish("caf\u00e9 \U0001f600 " + "x" * 247, 1)  # 256: fine
        with pytest.raises(ValueError):
            await channel.publish("t", 1, event="two\nlines")
        with pytest.raises(ValueError, match="empty"):
            await channel.publish("t", "")
        with pytest.raises(ValueError, match="None"):
            await channel.publish("t", None)
        with pytest.raises(TypeError, match="bytes"):
            await channel.publish("t", b"data: raw\n\n")
        with pytest.raises(ValueError, match="assigns each event's id"):
            await channel.publish("t", ServerSentEvent("x", id="mine"))
        first = await channel.publish("t", 1)
        await channel.close("t")
        peer = with_last_event_id(Peer(), "unknown")
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert [e["id"] for e in events(peer.body)[1:]] == [first]  # the refused: not stored


async def test_leaving_async_with_ends_the_open_subscriptions(
    make_channel: Callable[..., Channel],
) -> None:
    """None is left open with nothing to feed it: its browser reconnects (elsewhere) and
    resumes."""
    peer = Peer()
    async with anyio.create_task_group() as tg:
        async with make_channel() as channel:
            tg.start_soon(subscriber_app(channel), peer.scope, peer.receive, peer.send)
            await peer.wait_for(lambda: peer.start is not None)
            await channel.publish("t", "last")
            await peer.wait_for(lambda: len(events(peer.data)) == 1)
        await peer.wait_for(lambda: peer.finished)
    assert peer.status == 200 and events(peer.data)[0]["data"] == "last"


async def test_the_id_just_before_the_oldest_kept_resumes_on_the_memory_store() -> None:
    """Nothing it missed was trimmed: no reset event (memory numbers its events one by one;
    Redis cannot tell, and sends the reset event)."""
    async with Channel(history=3) as channel:
        ids = [await channel.publish("t", n) for n in range(5)]
        await channel.close("t")
        peer = with_last_event_id(Peer(), ids[1])  # ids[2:] are kept
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert [e["id"] for e in events(peer.body)] == ids[2:]
        peer = with_last_event_id(Peer(), ids[0])
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert events(peer.body)[0]["event"] == "reset"
