"""Channels on the memory backend, in process (tests/peer.py): exactly once and in order,
resume by Last-Event-ID, the reset event, close and 204, publish_from and cancel, bad input.
Work in progress (issue 12): the Redis backend and the cross-process proofs come next."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgi_stream import Channel, Stream, StreamMiddleware
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


async def test_live_events_reach_every_subscriber_once_in_order_with_ids() -> None:
    async with Channel() as channel:
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


async def test_a_reconnect_resumes_after_its_last_event_id() -> None:
    async with Channel() as channel:
        ids = [await channel.publish("t", n) for n in range(5)]
        await channel.close("t")
        peer = with_last_event_id(Peer(), ids[1])
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert [e["id"] for e in events(peer.body)] == ids[2:]


@pytest.mark.parametrize("given", ["bogus", "0-1", "", "zz-99999"])
async def test_an_id_it_cannot_resume_gets_the_reset_event_then_the_history(given: str) -> None:
    async with Channel(history=3) as channel:
        ids = [await channel.publish("t", n) for n in range(5)]
        await channel.close("t")
        peer = with_last_event_id(Peer(), given or "x")
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        got = events(peer.body)
        assert got[0]["event"] == "reset"
        assert json.loads(got[0]["data"]) == {"last_event_id": given or "x", "earliest": ids[2]}
        assert [e["id"] for e in got[1:]] == ids[2:]


async def test_an_id_trimmed_from_the_history_gets_the_reset_event() -> None:
    async with Channel(history=2) as channel:
        ids = [await channel.publish("t", n) for n in range(5)]
        await channel.close("t")
        peer = with_last_event_id(Peer(), ids[0])
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        got = events(peer.body)
        assert got[0]["event"] == "reset" and [e["id"] for e in got[1:]] == ids[3:]


async def test_a_closed_topic_with_nothing_left_answers_204() -> None:
    async with Channel() as channel:
        last = await channel.publish("t", "only")
        await channel.close("t")
        peer = with_last_event_id(Peer(), last)
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        assert peer.start is not None and peer.start["status"] == 204 and peer.body == b""
        with pytest.raises(ValueError, match="'t' is closed"):
            await channel.publish("t", "more")


async def test_publish_from_outlives_its_clients_and_cancel_stops_it() -> None:
    produced: list[int] = []
    release, third = anyio.Event(), anyio.Event()

    async def tokens() -> AsyncIterator[int]:
        for n in range(100):
            produced.append(n)
            yield n
            if n == 2:
                third.set()
                await release.wait()

    async with Channel() as channel:
        channel.publish_from("reply", tokens())
        with anyio.fail_after(5):
            await third.wait()
        await channel.cancel("reply")
        with anyio.fail_after(5):
            while True:
                peer = Peer()
                await subscriber_app(channel, "reply")(peer.scope, peer.receive, peer.send)
                if peer.finished:
                    break
        assert produced == [0, 1, 2]


async def test_bad_input_is_refused_and_nothing_is_stored() -> None:
    channel = Channel()
    with pytest.raises(RuntimeError, match="async with channel"):
        await channel.publish("t", 1)
    async with channel:
        with pytest.raises(TypeError, match="topic"):
            await channel.publish(7, 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="topic"):
            await channel.publish("x" * 257, 1)
        with pytest.raises(ValueError):
            await channel.publish("t", 1, event="two\nlines")
        first = await channel.publish("t", 1)
        assert first.endswith("-1")  # the refused one took no id
