"""The proof across processes (issue 12): three hypercorn worker processes on their own
ports share one real redis-server; the publisher runs in one of them; 300 EventSource-like
clients (``followers.py``) are spread over the three. Every event reaches every client
exactly once, in order, through a worker killed with SIGKILL, every Redis connection killed
(``CLIENT KILL``), and a redis-server restarted without its data (the reset event, never
silence); a client whose id was trimmed gets the reset event, then the history kept; a closed
topic answers 204 and the clients stop.

Workers 0 and 2 run on the test's anyio backend, worker 1 on the other one, so that each run
has asyncio and trio workers exchanging events (and the publisher on each in turn).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import coredis
import httpx
import pytest

from asgi_stream.redis_store import public_id
from tests.channels.followers import Follower
from tests.channels.workers import post, workers
from tests.redis_server import RedisServer
from tests.reliability.clients import raise_nofile

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FOLLOWERS = 300


async def everyone(followers: list[Follower], condition: Any, within: float = 60) -> None:
    for follower in followers:
        await follower.wait_for(condition, within)


def other(backend: str) -> str:
    return "trio" if backend == "asyncio" else "asyncio"


async def test_three_workers_every_event_once_in_order_through_faults(
    own_redis: RedisServer, anyio_backend: str
) -> None:
    raise_nofile(4 * FOLLOWERS)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(10, read=60)
    backends = [anyio_backend, other(anyio_backend), anyio_backend]
    figures: dict[str, float] = {}
    async with (
        workers(own_redis, backends) as started,
        httpx.AsyncClient(limits=limits, timeout=timeout) as client,
        anyio.create_task_group() as tg,
    ):
        urls = [url for url, _ in started]
        publisher = urls[0]
        # A first event, so that every client starts after it: none can miss what follows.
        (start,) = await post(client, f"{publisher}/publish/t?start=-1&stop=0")
        followers = [Follower(urls, n % 3, "t", last_id=start) for n in range(FOLLOWERS)]
        for follower in followers:
            tg.start_soon(follower.run, client)
        ids = await post(client, f"{publisher}/publish/t?start=0&stop=50")
        await everyone(followers, lambda f: len(f.data) >= 50)

        # A worker killed with SIGKILL mid-stream: its clients resume on another one.
        async with anyio.create_task_group() as publishing:
            publishing.start_soon(post, client, f"{publisher}/publish/t?start=50&stop=150&pace=3")
            await followers[2].wait_for(lambda f: len(f.data) >= 70)
            # Those reading from worker 2 now (one whose first connection failed under the
            # load of 100 at once has already moved on, as an EventSource would).
            moved = [(f, f.requests) for f in followers if f.streaming_from == 2]
            started[2][1].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
        await everyone(followers, lambda f: len(f.data) >= 150)
        figures["sigkill_caught_up_s"] = time.monotonic() - killed_at
        # A client can read all 150 from its socket before it sees the end of worker 2's
        # stream: it moves on after that, so wait for it rather than assume it has.
        assert len(moved) >= FOLLOWERS // 6
        for follower, requests in moved:
            await follower.wait_for(lambda f, r=requests: f.requests > r and f.streaming_from != 2)
        figures["moved_clients"] = len(moved)

        # Every Redis connection of every worker killed mid-stream.
        async with anyio.create_task_group() as publishing:
            publishing.start_soon(post, client, f"{publisher}/publish/t?start=150&stop=250&pace=3")
            await followers[0].wait_for(lambda f: len(f.data) >= 170)
            killed = own_redis.kill_clients()
            killed_at = time.monotonic()
        assert killed >= 4  # two live workers: a pub/sub and a command connection each
        await everyone(followers, lambda f: len(f.data) >= 250)
        figures["client_kill_caught_up_s"] = time.monotonic() - killed_at
        figures["connections_killed"] = killed

        # What Redis stored is the truth: each client got exactly that, in order (a publish
        # cut off by the kill and retried would be stored, and delivered, twice).
        stored = await stored_ids(own_redis, "t")
        assert stored[0] == start and set(ids) <= set(stored)
        for follower in followers:
            assert follower.ids == stored[1:]
            assert follower.data == list(range(250))
            assert follower.resets == []

        # redis-server restarted without persistence: the reset event, then the new events.
        own_redis.restart()
        restarted_at = time.monotonic()
        after = await post(client, f"{publisher}/publish/t?start=250&stop=260")
        await everyone(followers, lambda f: len(f.data) >= 260)
        figures["restart_caught_up_s"] = time.monotonic() - restarted_at
        for follower in followers:
            (reset,) = follower.resets
            assert reset.data["last_event_id"] == stored[-1]
            assert follower.received.index(reset) == 250  # after what it had, before the new
            assert follower.ids == [*stored[1:], *after]
            assert follower.data == list(range(260))

        # The topic closed: every stream ends, the reconnect gets 204, and they stop.
        await post(client, f"{publisher}/close/t")
        await everyone(followers, lambda f: bool(f.statuses) and f.statuses[-1] == 204)
        assert all(f.data == list(range(260)) for f in followers)
        figures["deliveries"] = sum(len(f.data) for f in followers)
        figures["resets"] = sum(len(f.resets) for f in followers)
        figures["requests"] = sum(f.requests for f in followers)
    print(f"channel figures ({'/'.join(backends)}): {json.dumps(figures)}")  # README's table


async def test_a_client_whose_id_was_trimmed_gets_the_reset_event_then_the_history_kept(
    own_redis: RedisServer, anyio_backend: str
) -> None:
    backends = [anyio_backend, other(anyio_backend)]
    async with workers(own_redis, backends) as started, httpx.AsyncClient(timeout=60) as client:
        urls = [url for url, _ in started]
        (start,) = await post(client, f"{urls[0]}/publish/slow?start=-1&stop=0")
        slow = Follower(urls, 1, "slow", last_id=start, stop_after=10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow.run, client)
            await post(client, f"{urls[0]}/publish/slow?start=0&stop=10")
        seen = slow.last_id
        assert slow.data == list(range(10))
        ids = await post(client, f"{urls[0]}/publish/slow?start=10&stop=2500")  # history 1,000
        await post(client, f"{urls[0]}/close/slow")
        slow.stop_after = None
        slow.received.clear()
        await slow.run(client)  # resumes from ``seen``, which the history no longer holds
        reset, *kept, end = slow.received
        assert reset.event == "reset" and end.event == "end"
        assert reset.data == {"last_event_id": seen, "earliest": kept[0].id}
        assert 1000 <= len(kept) < 2490
        assert [r.id for r in kept] == ids[-len(kept) :]
        assert [r.data for r in kept] == list(range(2500 - len(kept), 2500))


async def stored_ids(redis: RedisServer, topic: str) -> list[str]:
    """The topic's ids as Redis holds them (the ids clients see)."""
    async with coredis.Redis.from_url(redis.url) as raw:
        (key,) = [key async for key in raw.scan_iter(match=f"*topic:{topic}")]
        entries = await raw.xrange(key, "-", "+")
    return [public_id(topic, entry.identifier.decode()) for entry in entries]
