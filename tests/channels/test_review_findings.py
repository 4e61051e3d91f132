"""Channel defects found by a review, one test each (each failed on 65f6b7e): the Redis
reader's starting point, a topic forgotten by its ttl, empty items of publish_from, a stale id
on a closed empty topic, the reset event's earliest, sends that are not coroutines or hold
task-bound state, leaving ``async with`` while subscribers prepare, a cancel sent while the
producer's connection is down."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgi_stream import Channel, Stream, StreamMiddleware, redis_store
from tests.channels.conftest import unique_prefix
from tests.channels.publishing import paused_tokens, publish_until_stored
from tests.channels.test_delivery import events, subscriber_app, with_last_event_id
from tests.channels.test_faults import follow, payloads
from tests.peer import Peer
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def live_app(channel: Channel, topic: str = "t") -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        return Stream(channel.subscribe(topic, last_event_id=None))

    return StreamMiddleware(app)


# -- 1. Redis: an empty topic's baseline is None, which also means "no baseline yet" -------


async def test_redis_lost_announcement_of_the_first_event_of_a_new_topic(
    redis_server: RedisServer,
) -> None:
    """As test_a_lost_announcement_is_read_from_the_history, but the topic was empty when
    the subscriber arrived: ``watched[t]`` stays None, so on_message never compares ``prev``."""
    prefix = unique_prefix()
    import coredis

    async with Channel(redis_server.url, prefix=prefix) as channel:
        peer = Peer()
        async with anyio.create_task_group() as tg:
            await follow(subscriber_app(channel), peer, tg)
            async with coredis.Redis.from_url(redis_server.url) as raw:
                await raw.xadd(f"{prefix}topic:t", {"f": "data: 1\n\n"})  # no announcement
            await channel.publish("t", 2)
            await peer.wait_for(lambda: 2 in payloads(peer))
            await channel.close("t")
            await peer.wait_for(lambda: peer.finished)
    assert payloads(peer) == [1, 2]


async def test_redis_event_published_while_reconnecting_to_a_topic_that_was_empty(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC: after a lost connection every subscriber catches up from the history. The
    subscriber's topic was empty when it subscribed: catch_up skips it (``last is None``)
    and the next announcement is delivered without a gap check."""
    monkeypatch.setattr(redis_store, "BACKOFF", (1.0, 5.0))  # a slow reconnect, for sure
    async with Channel(own_redis.url) as here, Channel(own_redis.url) as there:
        store: Any = here.store
        caught_up, catch_up = anyio.Event(), store.catch_up

        async def caught_up_then_told(topic: str) -> None:
            await catch_up(topic)
            caught_up.set()

        store.catch_up = caught_up_then_told
        peer = Peer()
        async with anyio.create_task_group() as tg:
            await follow(subscriber_app(here), peer, tg)
            assert own_redis.kill_clients() >= 2
            first = await publish_until_stored(there, "t", 1)  # `here` is reconnecting
            with anyio.fail_after(10):
                await caught_up.wait()  # `here` reconnected (and caught up, it thinks)
            second = await publish_until_stored(there, "t", 2)
            await peer.wait_for(lambda: 2 in payloads(peer), within=10)
            await there.close("t")
            await peer.wait_for(lambda: peer.finished, within=10)
    assert [e["id"] for e in events(peer.data)] == [first, second]


async def test_redis_a_second_subscriber_moves_the_baseline_past_what_the_first_was_given(
    redis_server: RedisServer,
) -> None:
    """A follows an empty topic (baseline None). The reader lags (a backlog of
    announcements: simulated by holding on_message). B subscribes after e1 is stored: its
    read sets the process-wide baseline to e1, so e1's announcement is dropped as 'delivered
    already' -- A never gets it."""
    prefix = unique_prefix()
    async with Channel(redis_server.url, prefix=prefix) as channel:
        store: Any = channel.store
        gate = anyio.Event()
        original = store.on_message

        async def lagging(channel_name: bytes, data: bytes) -> None:
            await gate.wait()
            await original(channel_name, data)

        a, b = Peer(), Peer()
        async with anyio.create_task_group() as tg:
            await follow(live_app(channel), a, tg)
            store.on_message = lagging
            first = await channel.publish("t", 1)
            await follow(live_app(channel), b, tg)
            gate.set()
            second = await channel.publish("t", 2)
            await a.wait_for(lambda: 2 in payloads(a))
            await b.wait_for(lambda: 2 in payloads(b))
            await channel.close("t")
            await a.wait_for(lambda: a.finished)
    assert [e["id"] for e in events(b.data)] == [second]  # B is live-only: right
    assert [e["id"] for e in events(a.data)] == [first, second]  # A lost `first`


# -- 2. Memory: a topic forgotten by ttl numbers from 1 again; `seen` skips -----------------


async def test_memory_subscriber_skips_events_after_the_topic_is_forgotten_by_ttl() -> None:
    async with Channel(ttl=100) as channel:
        for n in range(5):
            await channel.publish("t", n)
        peer = Peer()
        async with anyio.create_task_group() as tg:
            await follow(live_app(channel), peer, tg)  # seen = (5, 0)
            await anyio.sleep(0.3)  # no event for ttl: the topic is forgotten
            await channel.publish("t", "after")  # id <new epoch>-1, order (1, 0) <= seen
            await channel.close("t")  # <new epoch>-2: skipped too, so the stream never ends
            with anyio.move_on_after(1):
                await peer.wait_for(lambda: peer.finished)
            peer.disconnect()
    got = events(peer.data)
    assert [e.get("data") for e in got] == ["after"]  # fails: [] (and it never ended)


# -- 3. publish_from: an empty item aborts the reply with an error event ------------------


async def test_publish_from_a_source_with_an_empty_item(
    make_channel: Callable[..., Channel],
) -> None:
    """Automatic mode sends nothing for "" (SPEC: as the original); publish_from publishes
    'every item of source (anything automatic mode accepts)'. An LLM delta is often ""."""
    async with make_channel() as channel:
        channel.publish_from("reply", ["Hel", "", "lo"])
        peer = with_last_event_id(Peer(), "start")
        with anyio.fail_after(5):
            await subscriber_app(channel, "reply")(peer.scope, peer.receive, peer.send)
    got = events(peer.body)[1:]  # after the reset event
    assert [e["data"] for e in got] == ["Hel", "lo"]  # got: Hel, then {"message":"ValueError"}


# -- 4. A closed topic with no event kept: a stale id reconnects forever ------------------


async def test_a_stale_id_on_a_closed_empty_topic_ends_in_204(
    make_channel: Callable[..., Channel],
) -> None:
    """E.g. a publish_from whose source yielded nothing. The reset event carries no id, so
    the browser reconnects with the same Last-Event-ID, gets the reset event again, and so
    on: it never sees the 204 that SPEC promises."""
    async with make_channel() as channel:
        await channel.close("t")
        statuses, last = [], "stale"
        for _ in range(3):  # what an EventSource does: reconnect, with the last id it got
            peer = with_last_event_id(Peer(), last)
            with anyio.fail_after(5):
                await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
            statuses.append(peer.status)
            last = next((e["id"] for e in reversed(events(peer.body)) if "id" in e), last)
            if peer.status == 204:
                break
        assert statuses == [200, 204], statuses


async def test_the_reset_events_earliest_never_names_the_end_marker(
    make_channel: Callable[..., Channel],
) -> None:
    """SPEC: earliest is the oldest id kept, or null. Redis's _READ takes the first stream
    entry, which may be the end marker (an id no client ever receives); memory says null."""
    async with make_channel() as channel:
        await channel.close("t")
        peer = with_last_event_id(Peer(), "stale")
        await subscriber_app(channel)(peer.scope, peer.receive, peer.send)
        got = events(peer.body)
        assert got[0]["event"] == "reset"
        assert json.loads(got[0]["data"])["earliest"] is None


# -- 5. write_at_once: what it assumes of the server's send ---------------------------------


class _Awaitable:
    """What ASGI allows a send to return: an awaitable (asgiref: Awaitable[None]), not
    necessarily a coroutine (e.g. a server's send implemented in C/Rust, or returning a
    Future)."""

    def __init__(self, coro: Any) -> None:
        self._coro = coro

    def __await__(self) -> Any:
        return self._coro.__await__()


async def test_a_send_that_returns_a_plain_awaitable(make_channel: Callable[..., Channel]) -> None:
    """write_at_once calls ``self.send(...).send(None)``: AttributeError, logged as "sending
    the stream failed", the subscriber's stream ends with "error" at its first live event
    (asyncio only; the driver's own writes use ``await``)."""
    async with make_channel() as channel, anyio.create_task_group() as tg:
        peer = Peer()

        def send(message: Any) -> _Awaitable:
            return _Awaitable(peer.send(message))

        tg.start_soon(subscriber_app(channel), peer.scope, peer.receive, send)
        await peer.wait_for(lambda: peer.start is not None)
        await channel.publish("t", "one")
        await peer.wait_for(lambda: len(events(peer.data)) == 1)
        await channel.close("t")
        await peer.wait_for(lambda: peer.finished)


@pytest.mark.timeout(20)
async def test_a_send_path_with_an_anyio_lock(make_channel: Callable[..., Channel]) -> None:
    """An outer ASGI middleware whose send takes an anyio.Lock: the lock's fast path is a
    shielded cancel scope around sleep(0), entered in the publisher's task (first step) and
    exited in the writer's (rest_of): RuntimeError, and the publisher's task is left with a
    foreign cancel scope as its current one."""
    async with make_channel() as channel, anyio.create_task_group() as tg:
        peer = Peer()
        lock = anyio.Lock()

        async def send(message: Any) -> None:
            async with lock:
                await peer.send(message)

        tg.start_soon(subscriber_app(channel), peer.scope, peer.receive, send)
        await peer.wait_for(lambda: peer.start is not None)
        with anyio.fail_after(5):
            await channel.publish("t", "one")
        await peer.wait_for(lambda: len(events(peer.data)) == 1)
        await channel.close("t")
        await peer.wait_for(lambda: peer.finished)


# -- 6. Channel exit while a Redis subscriber reads its history: 204 ------------------------


async def test_leaving_async_with_while_a_subscriber_prepares_is_not_a_204(
    redis_server: RedisServer,
) -> None:
    """__aexit__ ends every subscriber (end() sets ``ended``); one still reading its history
    then finds ``ended and not pending`` and answers 204, which tells its EventSource never
    to reconnect -- the opposite of what __aexit__ means (reconnect elsewhere, resume)."""
    channel = Channel(redis_server.url, prefix=unique_prefix())
    store: Any = channel.store
    original = store.read_raw
    reading, release = anyio.Event(), anyio.Event()

    async def slow_reply(topic: str, after: Any) -> Any:
        result = await original(topic, after)
        reading.set()
        await release.wait()  # the reply is on its way (network latency)
        return result

    store.read_raw = slow_reply
    peer = Peer()
    async with anyio.create_task_group() as tg:
        async with channel:
            await channel.publish("t", "x")
            tg.start_soon(live_app(channel), peer.scope, peer.receive, peer.send)
            await reading.wait()
        release.set()
        await peer.wait_for(lambda: peer.finished)
    assert peer.status != 204


# -- 7. cancel() from another process is lost while the producer's reader reconnects ------


async def test_cancel_sent_while_the_producing_process_reconnects(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "BACKOFF", (1.0, 5.0))
    third, release = anyio.Event(), anyio.Event()
    produced: list[int] = []

    async with Channel(own_redis.url) as here, Channel(own_redis.url) as there:
        here.publish_from("reply", paused_tokens(produced, third, release))
        with anyio.fail_after(5):
            await third.wait()
        assert own_redis.kill_clients() >= 2
        with anyio.fail_after(5):
            while True:  # there's connection was killed too: until the cancel is sent
                try:
                    await there.cancel("reply")
                    break
                except ConnectionError:
                    await anyio.sleep(0.02)
        peer = with_last_event_id(Peer(), "start")
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscriber_app(there, "reply"), peer.scope, peer.receive, peer.send)
            try:
                await peer.wait_for(lambda: peer.finished, within=4)  # the topic is closed
            finally:
                release.set()  # (let the test end either way)
    # The word was lost with the connection; the topic's end was stored: the producer's next
    # publish is refused, and it stops there (one item later at most).
    assert produced[:3] == [0, 1, 2] and len(produced) <= 4


async def test_a_subscription_prepared_after_the_channel_exited_is_not_left_open() -> None:
    """subscribe() inside ``async with``, the Stream driven after the exit (a request in
    flight at shutdown): prepare() never checks that the channel still runs; on the memory
    store it attaches to a dead channel and stays open forever with nothing to feed it."""
    async with Channel() as channel:
        subscription = channel.subscribe("t", last_event_id=None)

    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        return Stream(subscription)

    peer = Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(StreamMiddleware(app), peer.scope, peer.receive, peer.send)
        with anyio.move_on_after(1):
            await peer.wait_for(lambda: peer.finished or peer.status not in (None, 200))
        finished = peer.finished or peer.status not in (None, 200)
        peer.disconnect()
    assert finished, f"status {peer.status}, still open"
