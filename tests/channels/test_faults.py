"""What a channel does when something goes wrong, in process: a slow subscriber, a failing
producer, a forgotten topic (ttl), and for Redis a server that is down, connections that are
killed, a server restarted without its data, and an announcement that never arrived. Two
Channel objects on one Redis stand for two processes here; tests/channels/test_workers.py
does it with real worker processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import coredis
import pytest

from asgi_stream import Channel, Stream, StreamMiddleware
from tests.channels.conftest import unique_prefix
from tests.channels.publishing import paused_tokens, publish_until_stored
from tests.channels.test_delivery import events, subscriber_app, with_last_event_id
from tests.peer import Peer
from tests.redis_server import RedisServer, _free_port, redis_server_or_skip

pytestmark = pytest.mark.anyio


def payloads(peer: Peer) -> list[Any]:
    """The data of the events received (JSON decoded), reset events left out."""
    return [json.loads(e["data"]) for e in events(peer.data) if "event" not in e]


async def follow(app: Any, peer: Peer, tg: anyio.abc.TaskGroup) -> None:
    tg.start_soon(app, peer.scope, peer.receive, peer.send)
    await peer.wait_for(lambda: peer.start is not None)


# -- both stores -------------------------------------------------------------------------


async def test_a_slow_subscriber_is_dropped_alone_and_resumes_from_the_history(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel() as channel:
        closes: list[str] = []
        dropped = anyio.Event()

        def closed(reason: str) -> None:
            closes.append(reason)
            dropped.set()

        async def app(scope: Any, receive: Any, send: Any) -> Stream:
            stream = Stream(channel.subscribe("t"), max_buffer=4)
            stream.on_close(closed)
            return stream

        middleware = StreamMiddleware(app)
        slow, fast = Peer(stall_after=2), Peer()
        async with anyio.create_task_group() as tg:
            await follow(middleware, slow, tg)
            await follow(middleware, fast, tg)
            ids = []
            for n in range(50):
                ids.append(await channel.publish("t", n))
                await anyio.lowlevel.checkpoint()  # the writers' turn (memory publishes at once)
            await fast.wait_for(lambda: len(payloads(fast)) == 50)
            with anyio.fail_after(5):
                await dropped.wait()
            assert closes == ["slow-client"]
            got = [e["id"] for e in events(slow.data)]
            assert got == ids[: len(got)] and len(got) < 50
            again = with_last_event_id(Peer(), got[-1])
            await follow(middleware, again, tg)
            await again.wait_for(lambda: len(payloads(again)) == 50 - len(got))
            assert [e["id"] for e in events(again.data)] == ids[len(got) :]
            await channel.close("t")
    assert payloads(fast) == list(range(50))


async def test_a_failing_publish_from_publishes_an_error_event_then_closes(
    make_channel: Callable[..., Channel],
) -> None:
    async def tokens() -> AsyncIterator[str]:
        yield "a"
        raise KeyError("the secret detail")

    async with make_channel() as channel:
        channel.publish_from("reply", tokens())
        peer = with_last_event_id(Peer(), "start")  # the whole history, then live, to the end
        with anyio.fail_after(5):
            await subscriber_app(channel, "reply")(peer.scope, peer.receive, peer.send)
        got = events(peer.body)
        assert got[1]["data"] == "a"  # after the reset event for "start"
        assert json.loads(got[-1]["data"]) == {"message": "KeyError"}
        assert peer.finished
        with pytest.raises(ValueError, match="closed"):
            await channel.publish("reply", "late")


async def test_a_history_lost_while_a_subscriber_reads_it_still_gets_the_reset_event(
    make_channel: Callable[..., Channel],
) -> None:
    """The store reports its history lost (Redis restarted without its data) after a new
    subscriber's history read was answered and before the subscriber took the answer: that
    answer is the old history, so the reset event must follow it, as it does for everyone
    already following. (Driven through the store's ``deliver`` callback, ``fan_out``.)"""
    async with make_channel() as channel:
        first = await channel.publish("t", 0)
        second = await channel.publish("t", 1)
        answered, release = anyio.Event(), anyio.Event()
        read = channel.store.read

        async def read_then_wait(topic: str, after: str | None) -> Any:
            history = await read(topic, after)
            answered.set()
            await release.wait()
            return history

        channel.store.read = read_then_wait  # type: ignore[method-assign]
        peer = with_last_event_id(Peer(), first)
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscriber_app(channel), peer.scope, peer.receive, peer.send)
            with anyio.fail_after(5):
                await answered.wait()
            channel.fan_out("t", [], second)  # lost: whatever followed `second`
            release.set()
            await peer.wait_for(lambda: len(events(peer.data)) == 2)
            third = await channel.publish("t", 2)
            await peer.wait_for(lambda: len(events(peer.data)) == 3)
            await channel.close("t")
    got = events(peer.data)
    assert (got[0]["id"], got[0]["data"]) == (second, "1")
    assert got[1]["event"] == "reset"
    assert json.loads(got[1]["data"]) == {"last_event_id": second, "earliest": None}
    assert (got[2]["id"], got[2]["data"]) == (third, "2")
    assert channel.stats["resets"] == 1


async def test_a_topic_with_no_event_for_ttl_is_forgotten(
    make_channel: Callable[..., Channel],
) -> None:
    async with make_channel(ttl=50) as channel:
        first = await channel.publish("t", "old")
        await anyio.sleep(0.2)  # the ttl is real time: let it pass
        peer = with_last_event_id(Peer(), first)
        async with anyio.create_task_group() as tg:
            await follow(subscriber_app(channel), peer, tg)
            await peer.wait_for(lambda: len(events(peer.data)) == 1)
            got = events(peer.data)[0]
            assert got["event"] == "reset"
            assert json.loads(got["data"]) == {"last_event_id": first, "earliest": None}
            await channel.close("t")


async def test_calls_outside_async_with_and_twice_entered_are_refused(
    make_channel: Callable[..., Channel],
) -> None:
    channel = make_channel()
    for call in (
        lambda: channel.subscribe("t"),
        lambda: channel.publish_from("t", [1]),
    ):
        with pytest.raises(RuntimeError, match="async with channel"):
            call()
    for coro in (channel.close("t"), channel.cancel("t"), channel.publish("t", 1)):
        with pytest.raises(RuntimeError, match="async with channel"):
            await coro
    async with channel:
        with pytest.raises(RuntimeError, match="already entered"):
            await channel.__aenter__()
        with pytest.raises(TypeError, match="last_event_id"):
            channel.subscribe("t", last_event_id=7)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            channel.publish_from("t", 42)
        channel.publish_from("t", ["x"])
        with pytest.raises(ValueError, match="already has a publish_from"):
            channel.publish_from("t", ["y"])


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("history", 0, "history"),
        ("history", 1.5, "history"),
        ("ttl", 0, "ttl"),
        ("ttl", "1", "ttl"),
        ("reset_event", "a\nb", "reset_event"),
        ("reset_event", "", "reset_event"),
    ],
)
def test_bad_options_are_refused_by_name(option: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Channel(**{option: value})


# -- Redis -------------------------------------------------------------------------------


async def test_redis_down_at_async_with_is_a_clear_error_naming_the_url() -> None:
    redis_server_or_skip()
    port = _free_port()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        async with Channel(f"redis://127.0.0.1:{port}/0"):
            pass
    with pytest.raises(ConnectionError) as caught:
        async with Channel(f"redis://user:s3cret@127.0.0.1:{port}/0"):
            pass
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


async def test_publish_while_redis_is_down_raises_and_stores_nothing(
    own_redis: RedisServer,
) -> None:
    async with Channel(own_redis.url) as channel:
        first = await channel.publish("t", "stored")
        own_redis.stop()
        with pytest.raises(ConnectionError, match="may not be stored"):
            await channel.publish("t", "lost")
        own_redis.start()  # empty: no persistence
        second = await publish_until_stored(channel, "t", "after")
        assert second != first


async def test_killed_connections_lose_and_repeat_nothing(own_redis: RedisServer) -> None:
    """``CLIENT KILL`` of every connection mid-stream; another "process" publishes
    meanwhile: the subscriber catches up from the history, each event once, in order."""
    async with Channel(own_redis.url) as here, Channel(own_redis.url) as there:
        peer = Peer()
        async with anyio.create_task_group() as tg:
            await follow(subscriber_app(here), peer, tg)
            ids = [await there.publish("t", n) for n in range(100)]
            await peer.wait_for(lambda: len(payloads(peer)) == 100)
            assert own_redis.kill_clients() >= 2
            for n in range(100, 200):
                ids.append(await publish_until_stored(there, "t", n))
            await peer.wait_for(lambda: len(payloads(peer)) >= 200, within=10)
            await there.close("t")
            await peer.wait_for(lambda: peer.finished)
    assert payloads(peer) == list(range(200))
    assert [e["id"] for e in events(peer.data)] == ids


async def test_a_redis_restarted_without_its_data_sends_the_reset_event(
    own_redis: RedisServer,
) -> None:
    async with Channel(own_redis.url) as here, Channel(own_redis.url) as there:
        peer = Peer()
        async with anyio.create_task_group() as tg:
            await follow(subscriber_app(here), peer, tg)
            before = [await there.publish("t", n) for n in range(3)]
            await peer.wait_for(lambda: len(payloads(peer)) == 3)
            own_redis.restart()
            after = await publish_until_stored(there, "t", ["new"])
            await peer.wait_for(lambda: ["new"] in payloads(peer), within=10)
            got = events(peer.data)
            reset = [e for e in got if e.get("event") == "reset"]
            assert len(reset) == 1
            assert json.loads(reset[0]["data"])["last_event_id"] == before[-1]
            assert [e["id"] for e in got if "event" not in e] == [*before, after]
            assert got.index(reset[0]) == 3  # before the new history, never silence
            await there.close("t")


async def test_a_lost_announcement_is_read_from_the_history(redis_server: RedisServer) -> None:
    """An event stored without its announcement reaching this process (a dropped pub/sub
    message) is delivered before the next one, in order."""
    prefix = unique_prefix()
    async with Channel(redis_server.url, prefix=prefix) as channel:
        peer = Peer()
        async with anyio.create_task_group() as tg:
            await follow(subscriber_app(channel), peer, tg)
            first = await channel.publish("t", 1)
            async with coredis.Redis.from_url(redis_server.url) as raw:
                await raw.xadd(f"{prefix}topic:t", {"f": "data: 2\n\n"})
            third = await channel.publish("t", 3)
            await peer.wait_for(lambda: len(payloads(peer)) == 3)
            got = events(peer.data)
            assert [int(e["data"]) for e in got] == [1, 2, 3]
            assert got[0]["id"] == first and got[2]["id"] == third
            await channel.close("t")


async def test_cancel_from_another_process_stops_publish_from(redis_server: RedisServer) -> None:
    third, release = anyio.Event(), anyio.Event()
    produced: list[int] = []

    prefix = unique_prefix()
    url = redis_server.url
    async with Channel(url, prefix=prefix) as here, Channel(url, prefix=prefix) as there:
        here.publish_from("reply", paused_tokens(produced, third, release))
        with anyio.fail_after(5):
            await third.wait()
        peer = with_last_event_id(Peer(), "start")  # the whole history, then live, to the end
        async with anyio.create_task_group() as tg:
            await follow(subscriber_app(there, "reply"), peer, tg)
            await there.cancel("reply")
            await peer.wait_for(lambda: peer.finished)
    assert produced == [0, 1, 2]
    assert [e["data"] for e in events(peer.data)[1:]] == ["0", "1", "2"]


async def test_a_publish_from_cut_short_by_its_worker_shutting_down_ends_with_an_error_event(
    redis_server: RedisServer,
) -> None:
    """The worker running a reply stops (its channel's ``async with`` exits) mid-reply: the
    subscribers elsewhere get what was published, then ``error`` ``{"message": "shutdown"}``,
    then the end. Never a clean end, which would pass a cut reply off as complete."""
    third, release = anyio.Event(), anyio.Event()
    produced: list[int] = []
    prefix = unique_prefix()
    url = redis_server.url
    async with Channel(url, prefix=prefix) as there:
        async with Channel(url, prefix=prefix) as here:
            here.publish_from("reply", paused_tokens(produced, third, release))
            with anyio.fail_after(5):
                await third.wait()
        # ``here`` has shut down; a page reloaded on the other worker reads the reply
        peer = with_last_event_id(Peer(), "start")  # the whole history, to the end
        with anyio.fail_after(5):
            await subscriber_app(there, "reply")(peer.scope, peer.receive, peer.send)
    got = events(peer.body)[1:]  # after the reset event for "start"
    assert [e["data"] for e in got[:3]] == ["0", "1", "2"]
    assert got[3]["event"] == "error" and json.loads(got[3]["data"]) == {"message": "shutdown"}
    assert len(got) == 4 and peer.finished
    assert produced == [0, 1, 2]


async def test_redis_connections_per_process_do_not_grow_with_subscribers(
    own_redis: RedisServer,
) -> None:
    async with Channel(own_redis.url) as channel:
        app = subscriber_app(channel)
        async with anyio.create_task_group() as tg:
            first = Peer()
            await follow(app, first, tg)
            with_one = own_redis.clients()
            peers = [Peer() for _ in range(300)]
            for peer in peers:
                tg.start_soon(app, peer.scope, peer.receive, peer.send)
            for peer in peers:
                await peer.wait_for(lambda peer=peer: peer.start is not None)
            await channel.publish("t", ["x"])
            for peer in [first, *peers]:
                await peer.wait_for(lambda peer=peer: payloads(peer) == [["x"]])
            assert own_redis.clients() <= max(with_one, 5)
            await channel.close("t")
