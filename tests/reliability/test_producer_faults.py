"""Producer faults under a real hypercorn (in-process, on the test's backend), each with its
defined outcome:

- a producer that raises: before its first item a 500; after it, the events so far and a clean
  end of stream; ``on_close("error")``; the other streams of the worker are untouched (also
  200 at once next to 200 healthy streams, in a subprocess worker).
- an async generator that never awaits (CPU-bound items): the driver yields to the loop every
  5 ms (the time slice), so other streams keep their latency; it ends when the client leaves.
- a sync iterator that blocks (``time.sleep``, a DB cursor): ``iterate_in_thread(it)`` runs it
  in a thread of its own, so nothing else waits; a client that leaves does not wait for the
  blocked ``next()``; the iterator is closed in its thread once that returns. Passed directly
  instead, it blocks every stream of the worker (shown too, so the advice stays true).
- a callback that returns without ``close()``, and a value-based Stream that nobody closes:
  both stay open (heartbeats keep flowing) until the client leaves (``"disconnect"``) or the
  server shuts down (``"shutdown"``, a clean end for the client).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx
import pytest

from asgi_stream import Stream, iterate_in_thread
from tests.conftest import serve
from tests.helpers import Record, Served, track
from tests.reliability.clients import server_process
from tests.reliability.scenarios import run_faults

pytestmark = pytest.mark.anyio

TIMEOUT = 20
# A healthy in-process ticker sees ~20 ms between its 20 ms ticks; a generous bound for a
# loaded machine, far from what a blocked loop shows.
MAX_GAP = 0.5


class Boom(Exception):
    pass


def client(http2: bool) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64)
    return httpx.AsyncClient(http1=not http2, http2=http2, limits=limits, timeout=TIMEOUT)


async def ticks(n: int, interval: float = 0.02) -> AsyncIterator[dict[str, float]]:
    for i in range(n):
        if i:
            await anyio.sleep(interval)
        yield {"i": i, "t": time.monotonic()}


async def worst_tick_gap(
    http: httpx.AsyncClient, url: str, first: anyio.Event | None = None
) -> float:
    """Read a ticks stream (a tick every 20 ms) to its end; the longest time between two
    ticks' arrivals. Server and client share the event loop: any block of the loop shows.
    ``first`` is set once the first tick arrived."""
    arrivals = []
    async with http.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                if first is not None:
                    first.set()
    assert len(arrivals) > 10
    return max(b - a for a, b in itertools.pairwise(arrivals))


# -- raising ----------------------------------------------------------------------------


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_raising_producers_end_cleanly_and_others_are_unaffected(
    http2: bool, caplog: pytest.LogCaptureFixture
) -> None:
    closes: dict[str, Record] = {}

    def handler(scope: Any) -> Stream:
        path = scope["path"]
        closes[path] = Record()
        if path.startswith("/ok"):
            return track(Stream(iter(["a", "b", "c"])), closes[path])
        after = int(path.rsplit("/", 1)[1])

        async def failing() -> AsyncIterator[str]:
            for i in range(after):
                yield f"item {i}"
                await anyio.sleep(0.005)
            raise Boom(f"after {after}")

        return track(Stream(failing()), closes[path])

    app = Served(handler)
    outcomes: dict[str, tuple[int, bytes]] = {}

    async def get(http: httpx.AsyncClient, url: str, path: str) -> None:
        async with http.stream("GET", url + path) as response:
            body = b"".join([chunk async for chunk in response.aiter_raw()])  # a clean end
        outcomes[path] = (response.status_code, body)

    faulty = [f"/fault/{n}/{n % 4}" for n in range(20)]
    healthy = [f"/ok/{n}" for n in range(5)]
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, client(http2) as http:
            async with anyio.create_task_group() as tg:
                for path in faulty + healthy:
                    tg.start_soon(get, http, url, path)
            await app.finished.wait(len(faulty) + len(healthy))
            for path in faulty + healthy:
                await closes[path].wait()
    for path in faulty:
        after = int(path.rsplit("/", 1)[1])
        status, body = outcomes[path]
        if after == 0:  # failed before its first item: nothing was sent yet
            assert (status, body) == (500, b"Internal Server Error\n")
        else:
            assert status == 200
            assert body == b"".join(b"data: item %d\n\n" % i for i in range(after))
        assert closes[path].items == ["error"]
    for path in healthy:
        assert outcomes[path] == (200, b"data: a\n\ndata: b\n\ndata: c\n\n")
        assert closes[path].items == ["complete"]
    assert app.active == 0
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == len(faulty)
    assert all("/fault/" in r.getMessage() for r in failures)  # logged with the path


# -- never awaiting ---------------------------------------------------------------------


@pytest.mark.slow
async def test_an_async_generator_that_never_awaits_does_not_starve_other_streams() -> None:
    """Each item costs 1 ms of CPU and the generator never awaits. Without the time slice it
    would run until 64 KiB of tiny frames wait (~5,000 items: 5 s with the loop blocked)."""
    closed = Record()
    produced = Record()

    async def spin() -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                end = time.perf_counter() + 0.001
                while time.perf_counter() < end:
                    pass
                produced(i)
                yield i
                i += 1
        finally:
            closed("generator closed")

    def handler(scope: Any) -> Stream:
        if scope["path"] == "/spin":
            return track(Stream(spin()), closed)
        return Stream(ticks(50))

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, client(False) as http:
            async with http.stream("GET", url + "/spin") as spinning:
                lines = spinning.aiter_lines()
                assert await anext(lines) == "data: 0"
                async with anyio.create_task_group() as tg:

                    async def keep_reading() -> None:
                        async for _ in lines:
                            pass

                    tg.start_soon(keep_reading)  # the spinning stream flows all along
                    worst = await worst_tick_gap(http, url + "/ticks")
                    tg.cancel_scope.cancel()
                assert len(produced) > 100  # it did spin meanwhile
            # the client left: the generator is closed
            assert sorted(await closed.wait(2)) == ["disconnect", "generator closed"]
    print(f"\nlongest gap between two ticks: {worst * 1e3:.0f} ms")
    assert worst < MAX_GAP, f"two ticks arrived {worst:.3f} s apart"


# -- blocking sync iterators ---------------------------------------------------------------

BLOCK = 0.8  # seconds each next() of the blocking iterator takes


class ThreadRecord(Record):
    """A Record that threads may append to: the waiters are woken in the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_thread = threading.current_thread()
        self.token = anyio.lowlevel.current_token()

    def __call__(self, item: Any = None) -> None:
        if threading.current_thread() is self.loop_thread:
            super().__call__(item)
            return
        try:
            anyio.from_thread.run_sync(super().__call__, item, token=self.token)
        except Exception:  # the test (and its loop) is already over
            self.items.append(item)


def blocking_rows(record: Record, count: int = 2) -> Iterator[str]:
    """A sync generator that blocks its thread (a slow DB cursor)."""
    try:
        for i in range(count):
            time.sleep(BLOCK)
            record(("row", i, threading.current_thread().name))
            yield f"row {i}"
    finally:
        record(("closed", threading.current_thread().name))


@pytest.mark.slow
async def test_a_blocking_iterator_in_iterate_in_thread_blocks_nothing() -> None:
    rows = ThreadRecord()

    def handler(scope: Any) -> Stream:
        if scope["path"] == "/rows":
            return Stream(iterate_in_thread(blocking_rows(rows)))
        return Stream(ticks(int(2 * BLOCK / 0.02)))

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, client(False) as http:
            bodies: list[bytes] = []
            ticking = anyio.Event()
            async with anyio.create_task_group() as tg:

                async def read_rows() -> None:
                    await ticking.wait()  # the ticks flow, then the rows start
                    response = await http.get(url + "/rows")
                    bodies.append(response.content)

                tg.start_soon(read_rows)
                worst = await worst_tick_gap(http, url + "/ticks", ticking)
            assert bodies == [b"data: row 0\n\ndata: row 1\n\n"]
    loop_thread = threading.current_thread().name
    assert [item[0] for item in rows.items] == ["row", "row", "closed"]
    assert all(item[-1] != loop_thread for item in rows.items)  # all in the worker thread
    print(f"\nlongest gap between two ticks: {worst * 1e3:.0f} ms")
    assert worst < MAX_GAP, f"two ticks arrived {worst:.3f} s apart"


@pytest.mark.slow
async def test_leaving_during_a_blocked_next_does_not_wait_for_it() -> None:
    rows = ThreadRecord()
    closes = Record()

    def handler(scope: Any) -> Stream:
        return track(Stream(iterate_in_thread(blocking_rows(rows, count=10))), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, client(False) as http:
            async with http.stream("GET", url) as response:
                lines = response.aiter_lines()
                assert await anext(lines) == "data: row 0"
                left = time.monotonic()
            # the second next() is blocked in its thread for up to BLOCK seconds
            assert await closes.wait() == ["disconnect"]
            await app.finished.wait()
            assert time.monotonic() - left < BLOCK / 2  # nobody waited for next()
            # once next() returns, the iterator is closed in its own thread
            items = await rows.wait(3)
            assert items[-1][0] == "closed" and items[-1][1] != threading.current_thread().name
            assert app.active == 0


@pytest.mark.slow
async def test_a_blocking_iterator_passed_directly_blocks_the_whole_worker() -> None:
    """The wrong way, shown so that the advice above stays true: a blocking ``next()`` runs
    on the event loop, and every other stream of the worker waits for it."""
    rows = ThreadRecord()

    def handler(scope: Any) -> Stream:
        if scope["path"] == "/rows":
            return Stream(blocking_rows(rows))
        return Stream(ticks(int(2 * BLOCK / 0.02)))

    ticking = anyio.Event()
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(handler)) as url,
            client(False) as http,
            anyio.create_task_group() as tg,
        ):

            async def read_rows() -> None:
                await ticking.wait()
                await http.get(url + "/rows")

            tg.start_soon(read_rows)
            worst = await worst_tick_gap(http, url + "/ticks", ticking)
    assert worst >= BLOCK * 0.9, f"the longest gap was {worst:.3f} s: the loop was not blocked?"


# -- streams nobody closes -----------------------------------------------------------------


@pytest.mark.parametrize("ending", ["disconnect", "shutdown"])
@pytest.mark.parametrize("mode", ["callback returns", "value-based"])
async def test_a_stream_nobody_closes_stays_open_until_the_client_leaves_or_shutdown(
    mode: str, ending: str
) -> None:
    closes = Record()
    returned = Record()
    streams: list[Stream] = []

    def handler(scope: Any) -> Stream:
        if mode == "callback returns":

            async def callback(stream: Stream) -> None:
                stream.send("hello")
                returned(True)  # ... and returns without close()

            stream = Stream(callback, ping=30)
        else:
            stream = Stream(ping=30)  # value-based: the caller keeps it...
            stream.send("hello")  # ... sends, and forgets it
            returned(True)
        streams.append(stream)
        return track(stream, closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, client(False) as http:
            async with http.stream("GET", url) as response:
                lines = response.aiter_lines()
                assert await anext(lines) == "data: hello"
                await returned.wait()
                # still open long after: heartbeats keep coming, nothing ended it
                pings = 0
                async for line in lines:
                    pings += line == ": ping"
                    if pings == 3:
                        break
                assert app.active == 1 and not streams[0].closed and closes.items == []
                if ending == "disconnect":
                    await response.aclose()
                else:
                    await app.middleware.shutdown(grace=2_000)
                    rest = [line async for line in lines]  # a clean end: no error
                    assert set(rest) <= {"", ": ping"}
            assert await closes.wait() == [ending]
            await app.finished.wait()
            assert app.active == 0


# -- many raising producers at once, in a worker of its own ------------------------------------


@pytest.mark.slow
async def test_200_raising_producers_next_to_200_healthy_streams(anyio_backend: str) -> None:
    async with server_process(anyio_backend) as server:
        with anyio.fail_after(60):
            result = await run_faults(server, faulty=200, healthy=200)
    assert result.problems == []
    after = result.after
    assert after["settled"], after
    assert after["closes"] == {"fault:error": 200, "load:complete": 200}
    assert after["started"] == after["cleaned"]
    assert (after["live_streams"], after["stream_tasks"], after["active"]) == (0, 0, 0)
