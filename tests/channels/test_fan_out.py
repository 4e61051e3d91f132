"""What a publish costs (SPEC "Fan-out cost"), on both stores: each event is encoded once per
process (every subscriber is handed the same bytes), the publisher never waits for a
subscriber, and on asyncio a publish writes to idle subscribers from the publisher's own
task, as one loop over them would, instead of waking a task per subscriber."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
import sniffio

from asgi_stream import Channel, Stream, StreamMiddleware, driver
from tests.channels.test_delivery import events, subscriber_app
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def subscribed(app: object, peers: list[Peer], tg: anyio.abc.TaskGroup) -> None:
    for peer in peers:
        tg.start_soon(app, peer.scope, peer.receive, peer.send)  # type: ignore[arg-type]
    for peer in peers:
        await peer.wait_for(lambda peer=peer: peer.start is not None)


def event_bodies(peer: Peer) -> list[bytes]:
    return [m["body"] for m in peer.bodies if m["body"]]


async def test_every_subscriber_is_handed_the_same_bytes(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel() as channel, anyio.create_task_group() as tg:
        peers = [Peer() for _ in range(5)]
        await subscribed(subscriber_app(channel), peers, tg)
        await channel.publish("t", {"n": 1})
        for peer in peers:
            await peer.wait_for(lambda peer=peer: len(events(peer.data)) == 1)
        first = event_bodies(peers[0])[0]
        assert all(event_bodies(peer)[0] is first for peer in peers)  # one encoding
        await channel.close("t")


@pytest.fixture
def splittable_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Peer.send holds nothing task-bound across a suspension, like the servers' own sends
    (``asgi_stream.driver.SPLITTABLE_SENDS``): a publish may start its writes."""
    monkeypatch.setattr(driver, "SPLITTABLE_SENDS", {*driver.SPLITTABLE_SENDS, SEND})


SEND = ("tests.peer", "Peer.send")


@pytest.mark.usefixtures("splittable_peer")
async def test_a_publish_writes_from_the_publishers_task_on_asyncio(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel() as channel, anyio.create_task_group() as tg:
        peers = [Peer() for _ in range(20)]
        await subscribed(subscriber_app(channel), peers, tg)
        publisher = anyio.get_current_task().id
        for n in range(3):
            await channel.publish("t", n)
            for peer in peers:
                await peer.wait_for(lambda peer=peer, n=n: len(events(peer.data)) == n + 1)
        senders = {sender for peer in peers for sender in peer.senders}
        if sniffio.current_async_library() == "asyncio":
            if channel.url is None:
                assert senders == {publisher}  # no task woken per subscriber
            else:  # delivered by the task that reads Redis's announcements: one for all
                assert len(senders) == 1 and senders != {publisher}
        else:  # trio: each stream's writer (hypercorn's trio worker shields writes)
            assert publisher not in senders and len(senders) == len(peers)
        await channel.close("t")


@pytest.mark.usefixtures("splittable_peer")
async def test_a_write_that_must_wait_is_finished_by_the_writer_and_the_publisher_goes_on(
    make_channel: Callable[..., Channel],
) -> None:
    """A subscriber whose send blocks (its socket buffer is full) holds up neither the
    publisher nor the others; what was published meanwhile follows, in order, once the
    send completes."""
    async with make_channel() as channel, anyio.create_task_group() as tg:
        stuck, others = Peer(hold_at=0), [Peer() for _ in range(3)]
        await subscribed(subscriber_app(channel), [stuck, *others], tg)
        with anyio.fail_after(5):
            ids = [await channel.publish("t", n) for n in range(10)]
            await stuck.held.wait()
        for peer in others:
            await peer.wait_for(lambda peer=peer: len(events(peer.data)) == 10)
        assert events(stuck.data) == []
        stuck.release()
        await stuck.wait_for(lambda: len(events(stuck.data)) == 10)
        assert [e["id"] for e in events(stuck.data)] == ids
        await channel.close("t")
        await stuck.wait_for(lambda: stuck.finished)


@pytest.mark.usefixtures("splittable_peer")
async def test_a_write_that_fails_ends_that_subscriber_only(
    make_channel: Callable[..., Channel],
) -> None:
    closes: list[str] = []
    closed = anyio.Event()

    def on_close(reason: str) -> None:
        closes.append(reason)
        closed.set()

    def app_for(channel: Channel) -> StreamMiddleware:
        async def app(scope: object, receive: object, send: object) -> Stream:
            stream = Stream(channel.subscribe("t"))
            stream.on_close(on_close)
            return stream

        return StreamMiddleware(app)  # type: ignore[arg-type]

    async with make_channel() as channel, anyio.create_task_group() as tg:
        broken, healthy = Peer(fail_after=0), Peer()
        await subscribed(app_for(channel), [broken, healthy], tg)
        await channel.publish("t", "one")
        with anyio.fail_after(5):
            await closed.wait()
        assert closes == ["disconnect"]
        await channel.publish("t", "two")
        await healthy.wait_for(lambda: len(events(healthy.data)) == 2)
        assert broken.body == b""
        await channel.close("t")


async def test_any_other_send_is_written_by_the_streams_writer(
    make_channel: Callable[..., Channel],
) -> None:
    """An outer middleware's send may hold task-bound state across a suspension (an
    ``anyio.Lock``, below): a publish does not split it between two tasks."""
    async with make_channel() as channel, anyio.create_task_group() as tg:
        peer, lock = Peer(), anyio.Lock()

        async def send(message: object) -> None:
            async with lock:
                await peer.send(message)  # type: ignore[arg-type]

        tg.start_soon(subscriber_app(channel), peer.scope, peer.receive, send)
        await peer.wait_for(lambda: peer.start is not None)
        with anyio.fail_after(5):
            await channel.publish("t", "one")
        await peer.wait_for(lambda: len(events(peer.data)) == 1)
        assert anyio.get_current_task().id not in peer.senders
        await channel.close("t")
        await peer.wait_for(lambda: peer.finished)
