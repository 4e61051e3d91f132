"""The measurable scenarios, shared by the tests (which assert) and by
``benchmarks/reliability.py`` (which runs them at full size and prints the figures).

Each one runs clients against a :class:`~tests.reliability.clients.ServerProcess` and returns
what happened; none asserts. Every wait inside is on an event; the caller bounds the whole
run with ``anyio.fail_after``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from tests.reliability.clients import H1, H2, H2Stream, ServerProcess, check_sse_ids
from tests.sse_parser import parse

KiB = 1024
MiB = 1024 * 1024
_EOL = re.compile(r"\r\n|\r|\n")  # the line breaks of SSE (and nothing else)


class Countdown:
    """``await countdown.wait()`` until ``done()`` was called ``n`` times."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.event = anyio.Event()
        if n <= 0:
            self.event.set()

    def done(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


def _first_event(body: bytearray) -> bool:
    return b"\n\n" in body


async def warm_up(server: ServerProcess) -> None:
    """One short stream over each protocol, so that lazy imports and first-use caches are in
    the memory baseline, not in the figure per stream."""
    h1 = H1(server.port)
    await h1.request("/load?sid=warm&n=2")
    await h1.read_all()
    await h1.aclose()
    h2 = H2(server.port)
    await h2.connect()
    async with anyio.create_task_group() as tg:
        tg.start_soon(h2.run)
        stream = await h2.get("/load?sid=warm2&n=2")
        await h2.until(lambda: stream.complete or stream.reset)
        await h2.aclose()
        tg.cancel_scope.cancel()


# -- 1. load -------------------------------------------------------------------------------


@dataclass
class LoadResult:
    streams: int
    events: int
    h1: int
    h2: int
    h2_connections: int
    rss_before: int = 0
    rss_open: int = 0
    open_seconds: float = 0.0
    deliver_seconds: float = 0.0
    events_received: int = 0
    bytes_received: int = 0  # response body bytes, as the clients decoded them
    errors: list[str] = field(default_factory=list)
    active_when_open: int = 0
    stats_before: dict[str, Any] = field(default_factory=dict)
    stats_open: dict[str, Any] = field(default_factory=dict)
    stats_after: dict[str, Any] = field(default_factory=dict)

    @property
    def rss_per_stream(self) -> float:
        """Server memory per open stream, in bytes."""
        return (self.rss_open - self.rss_before) / self.streams


async def run_load(
    server: ServerProcess,
    *,
    streams: int = 1_000,
    events: int = 50,
    h2_share: float = 0.5,
    per_connection: int = 100,
    burst: int = 5,
    settle: float = 30,
) -> LoadResult:
    """``streams`` concurrent streams (``h2_share`` of them over HTTP/2, ``per_connection``
    per connection, the rest over HTTP/1.1, a connection each) of ``events`` events. Every
    stream gets its first event, then waits; once all are open the server's memory is
    measured and all are released at once."""
    h2_count = round(streams * h2_share)
    result = LoadResult(
        streams, events, streams - h2_count, h2_count, math.ceil(h2_count / per_connection)
    )
    await warm_up(server)
    result.stats_before = await server.stats(settle=settle)
    result.rss_before = result.stats_before["rss"]
    opened, finished = Countdown(streams), Countdown(streams)
    target = f"/load?sid={{}}&n={events}&hold=1&burst={burst}"

    def check(sid: str, status: int | None, complete: bool, body: bytes) -> None:
        parsed = parse(body)
        result.events_received += len(parsed.events)
        result.bytes_received += len(body)
        problem = check_sse_ids(parsed, sid, events)
        if status != 200 or not complete or problem:
            result.errors.append(f"{problem or sid}: status {status}, complete {complete}")

    async def h1_client(sid: str) -> None:
        client = H1(server.port)
        try:
            await client.request(target.format(sid))
            await client.read_until(lambda c: _first_event(c.body))
            opened.done()
            await client.read_all()
        finally:
            await client.aclose()
        check(sid, client.status, client.complete, bytes(client.body))
        finished.done()

    async def h2_connection(sids: list[str]) -> None:
        connection = H2(server.port)
        await connection.connect()
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.run)
            mine = [(sid, await connection.get(target.format(sid))) for sid in sids]

            async def one(sid: str, stream: H2Stream) -> None:
                await connection.until(lambda: _first_event(stream.body) or stream.reset)
                opened.done()
                await connection.until(lambda: stream.complete or stream.reset)
                check(sid, stream.status, stream.complete, bytes(stream.body))
                finished.done()

            async with anyio.create_task_group() as streams_group:
                for sid, stream in mine:
                    streams_group.start_soon(one, sid, stream)
            await connection.aclose()
            tg.cancel_scope.cancel()

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        sids = [str(k) for k in range(streams)]
        for sid in sids[h2_count:]:
            tg.start_soon(h1_client, sid)
        for first in range(0, h2_count, per_connection):
            tg.start_soon(h2_connection, sids[first : min(h2_count, first + per_connection)])
        await opened.wait()
        result.open_seconds = time.monotonic() - started
        result.stats_open = await server.stats()
        result.rss_open = result.stats_open["rss"]
        result.active_when_open = result.stats_open["active"]
        released = time.monotonic()
        await server.go()
        await finished.wait()
        result.deliver_seconds = time.monotonic() - released
    result.stats_after = await server.stats(settle=settle)
    return result


# -- 2. disconnect storm ---------------------------------------------------------------

KINDS = ("agen", "callback", "values", "thread", "proxy")


@dataclass
class StormResult:
    clients: int
    h1: int
    h2: int
    seed: int
    leaves: dict[str, int] = field(default_factory=dict)  # how clients left
    saw_headers: int = 0  # clients that left after the response started
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


async def run_storm(
    server: ServerProcess,
    *,
    clients: int = 500,
    h2_share: float = 0.4,
    per_connection: int = 25,
    seed: int = 4,
    settle: float = 30,
) -> StormResult:
    """``clients`` streams of every producer kind (``KINDS``) whose clients leave at random
    points: right after the request, after the headers, after some bytes (often inside an
    event), after some events; over HTTP/1.1 with a FIN or a TCP reset, over HTTP/2 with
    RST_STREAM or by dropping the whole connection."""
    rng = random.Random(seed)
    h2_count = round(clients * h2_share)
    result = StormResult(clients, clients - h2_count, h2_count, seed)
    result.before = await server.stats(settle=settle)
    saw_headers = 0

    def left(how: str) -> None:
        result.leaves[how] = result.leaves.get(how, 0) + 1

    async def h1_client(index: int) -> None:
        nonlocal saw_headers
        client = H1(server.port)
        point = rng.choice(["request", "headers", "bytes", "bytes", "events"])
        threshold = rng.randint(1, 1_500) if point == "bytes" else rng.randint(1, 5)
        rude = rng.random() < 0.5
        try:
            await client.request(f"/forever?kind={KINDS[index % len(KINDS)]}")
            if point == "headers":
                await client.read_until(lambda c: c.status is not None)
            elif point == "bytes":
                await client.read_until(lambda c: len(c.body) >= threshold)
            elif point == "events":
                await client.read_until(lambda c: c.body.count(b"\n\n") >= threshold)
            if client.status is not None:
                saw_headers += 1
        finally:
            await (client.abort() if rude else client.aclose())
        left(f"http/1.1 after {point} ({'reset' if rude else 'fin'})")

    async def h2_connection(first: int, count: int) -> None:
        nonlocal saw_headers
        connection = H2(server.port)
        await connection.connect()
        drop_all = rng.random() < 0.3  # drop the TCP connection after some streams left
        thresholds = [rng.randint(0, 1_500) for _ in range(count)]
        resets = Countdown(rng.randint(1, count) if drop_all else count)
        reset = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.run)

            async def one(index: int, threshold: int) -> None:
                nonlocal saw_headers, reset
                stream = await connection.get(f"/forever?kind={KINDS[index % len(KINDS)]}")
                await connection.until(lambda: len(stream.body) >= threshold)
                saw_headers += stream.status is not None
                await connection.reset(stream)
                reset += 1
                left("http/2 RST_STREAM")
                resets.done()

            async with anyio.create_task_group() as streams_group:
                for offset, threshold in enumerate(thresholds):
                    streams_group.start_soon(one, first + offset, threshold)
                await resets.wait()
                if drop_all:
                    streams_group.cancel_scope.cancel()
            if drop_all:
                await connection.abort()
                for _ in range(count - reset):
                    left("http/2 connection dropped (TCP reset)")
            else:
                await connection.aclose()
            tg.cancel_scope.cancel()

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for index in range(h2_count, clients):
            tg.start_soon(h1_client, index)
        for first in range(0, h2_count, per_connection):
            tg.start_soon(h2_connection, first, min(per_connection, h2_count - first))
    result.saw_headers = saw_headers
    result.after = await server.stats(settle=settle)
    result.seconds = time.monotonic() - started
    return result


# -- 3. stalled clients ------------------------------------------------------------------


@dataclass
class StalledResult:
    max_buffer: int
    stalled_h1: int
    stalled_h2_tcp: int
    stalled_h2_window: int
    healthy: int
    rss_before: int = 0
    rss_dropped: int = 0  # once every flood ended, its stalled client still connected
    latencies: list[float] = field(default_factory=list)  # healthy events, seconds
    healthy_missing: list[str] = field(default_factory=list)
    dropped: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    @property
    def stalled(self) -> int:
        return self.stalled_h1 + self.stalled_h2_tcp + self.stalled_h2_window

    @property
    def rss_per_stalled(self) -> float:
        return (self.rss_dropped - self.rss_before) / self.stalled


def tick_latencies(body: bytes, received: list[tuple[int, float]]) -> None:
    """Complete tick events in ``body`` not yet in ``received``, stamped with now."""
    now = time.monotonic()
    for frame in body.split(b"\n\n")[len(received) : -1]:
        tick = json.loads(frame.removeprefix(b"data: "))
        received.append((tick["i"], now - tick["t"]))


async def run_stalled(
    server: ServerProcess,
    *,
    max_buffer: int,
    stalled_h1: int = 20,
    stalled_h2_tcp: tuple[int, int] = (2, 5),
    stalled_h2_window: int = 5,
    healthy_h1: int = 10,
    healthy_h2: int = 5,
    ticks: int = 40,
    interval_ms: int = 50,
    flood_total: int = 16 * MiB,
    settle: float = 30,
) -> StalledResult:
    """Clients that stop reading while their producers flood (``/flood``: 64 KiB frames
    every millisecond, at most ``flood_total`` bytes each), next to healthy clients of
    ``/ticks``: HTTP/1.1 sockets that never read, HTTP/2 connections that never read
    (``stalled_h2_tcp`` = connections x streams), and HTTP/2 streams that never get
    flow-control credit on a connection that also carries ``healthy_h2`` healthy streams.
    The server must run with ``--max-buffer max_buffer``."""
    h2_tcp_connections, h2_tcp_streams = stalled_h2_tcp
    result = StalledResult(
        max_buffer,
        stalled_h1,
        h2_tcp_connections * h2_tcp_streams,
        stalled_h2_window,
        healthy_h1 + healthy_h2,
    )
    await warm_up(server)
    warm = H1(server.port)
    await warm.request("/flood?total=262144")
    await warm.read_all()
    await warm.aclose()
    before = await server.stats(settle=settle)
    result.rss_before = before["rss"]
    floods_before = before["cleaned"].get("flood", 0)
    flood = f"/flood?total={flood_total}"
    tick = f"/ticks?n={ticks}&interval={interval_ms}"
    healthy_done = Countdown(healthy_h1 + healthy_h2)

    async def healthy_h1_client(name: str) -> None:
        client = H1(server.port)
        received: list[tuple[int, float]] = []
        try:
            await client.request(tick)
            while await client.read_until(lambda c: c.body.count(b"\n\n") > len(received)):
                tick_latencies(bytes(client.body), received)
                if client.complete:
                    break
        finally:
            await client.aclose()
        record(name, received, client.complete)

    def record(name: str, received: list[tuple[int, float]], complete: bool) -> None:
        result.latencies += [latency for _, latency in received]
        if [i for i, _ in received] != list(range(ticks)) or not complete:
            result.healthy_missing.append(f"{name}: {len(received)} ticks, complete {complete}")
        healthy_done.done()

    stalled_sockets: list[H1] = []
    stalled_connections: list[H2] = []
    async with anyio.create_task_group() as tg:
        for n in range(healthy_h1):
            tg.start_soon(healthy_h1_client, f"http/1.1 healthy {n}")
        # HTTP/1.1: a small receive buffer, and never a read
        for _ in range(stalled_h1):
            client = H1(server.port)
            await client.connect(rcvbuf=4_096)
            await client.request(flood)
            stalled_sockets.append(client)
        # HTTP/2, the whole connection stalls: requests sent, the socket never read
        for _ in range(h2_tcp_connections):
            connection = H2(server.port)
            await connection.connect()
            for _ in range(h2_tcp_streams):
                await connection.get(flood)
            stalled_connections.append(connection)
        # HTTP/2, flow control: the connection is read and credited, these streams never
        # are; healthy streams share the connection
        shared = H2(server.port)
        await shared.connect()
        tg.start_soon(shared.run)
        for _ in range(stalled_h2_window):
            await shared.get(flood, stalled=True)

        async def healthy_h2_stream(name: str) -> None:
            stream = await shared.get(tick)
            received: list[tuple[int, float]] = []
            while await shared.until(
                lambda: stream.body.count(b"\n\n") > len(received) or stream.complete
            ):
                tick_latencies(bytes(stream.body), received)
                if stream.complete:
                    break
            record(name, received, stream.complete)

        for n in range(healthy_h2):
            tg.start_soon(healthy_h2_stream, f"http/2 healthy {n}")

        # Every flood producer ends: refused by send() once its client is dropped, or (if
        # nothing bounds it) after sending all of flood_total.
        result.dropped = await server.stats(
            until="cleaned:flood", count=floods_before + result.stalled, timeout=settle
        )
        result.dropped = await server.stats(
            until="closes:flood:slow-client", count=result.stalled, timeout=1
        )
        result.rss_dropped = result.dropped["rss"]
        await healthy_done.wait()
        for client in stalled_sockets:
            await client.abort()
        for connection in stalled_connections:
            await connection.abort()
        await shared.aclose()
        tg.cancel_scope.cancel()
    result.after = await server.stats(settle=settle)
    return result


# -- producer faults under load ------------------------------------------------------------


@dataclass
class FaultsResult:
    faulty: int
    healthy: int
    seed: int
    problems: list[str] = field(default_factory=list)
    after: dict[str, Any] = field(default_factory=dict)


async def run_faults(
    server: ServerProcess, *, faulty: int = 200, healthy: int = 200, seed: int = 4
) -> FaultsResult:
    """``faulty`` producers that raise after a random number of events (0 to 5; 0: before the
    first one), next to ``healthy`` streams of 50 events, all at once over HTTP/1.1. Each
    faulty one must give a 500 (failed before its first event) or its events so far and a
    clean end; the healthy ones are untouched."""
    rng = random.Random(seed)
    result = FaultsResult(faulty, healthy, seed)
    await server.stats(settle=10)

    async def faulty_client(after: int) -> None:
        client = H1(server.port)
        try:
            await client.request(f"/fault?after={after}")
            await client.read_all()
        finally:
            await client.aclose()
        got = [event.data for event in parse(bytes(client.body)).events]
        expected = (500, []) if after == 0 else (200, [str(i) for i in range(after)])
        if (client.status, got) != expected or not client.complete:
            result.problems.append(f"fault after {after}: {client.status} {got}")

    async def healthy_client(sid: str) -> None:
        client = H1(server.port)
        try:
            await client.request(f"/load?sid={sid}&n=50&burst=5")
            await client.read_all()
        finally:
            await client.aclose()
        problem = check_sse_ids(parse(bytes(client.body)), sid, 50)
        if problem or client.status != 200 or not client.complete:
            result.problems.append(problem or f"healthy {sid}: {client.status}")

    async with anyio.create_task_group() as tg:
        for n in range(max(faulty, healthy)):
            if n < faulty:
                tg.start_soon(faulty_client, rng.randint(0, 5))
            if n < healthy:
                tg.start_soon(healthy_client, f"h{n}")
    result.after = await server.stats(settle=10)
    return result


# -- hostile strings through the wire ----------------------------------------------------


@dataclass
class CorpusResult:
    tried: int
    refused: int = 0  # send() raised ValueError (CR/LF in event or id, NUL in id, surrogates)
    expected: int = 0  # events that must arrive (valid, non-empty data)
    received: int = 0
    mismatches: list[str] = field(default_factory=list)


def _valid(data: str, event: str | None, event_id: str | None) -> bool:
    for text in (data, event or "", event_id or ""):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return False
    if event is not None and ("\r" in event or "\n" in event):
        return False
    return not (event_id is not None and any(c in event_id for c in "\r\n\0"))


async def run_corpus(
    server: ServerProcess, *, seed: int = 4, n: int = 10_000, http2: bool = False
) -> CorpusResult:
    """``n`` hostile (data, event, id) triples (``server.hostile_items``) sent by the server
    through the driver and hypercorn; the client (the independent parser) must see exactly
    one event per valid non-empty item with exactly its data (line breaks as LF), event and
    id, and nothing else: no extra event, no other field."""
    from tests.reliability.server import hostile_items

    result = CorpusResult(n)
    expected = []
    for data, event, event_id in hostile_items(seed, n):
        if not _valid(data, event, event_id):
            result.refused += 1
        elif data:
            expected.append(("\n".join(_EOL.split(data)), event or None, event_id))
    result.expected = len(expected)
    target = f"/corpus?seed={seed}&n={n}"
    if http2:
        connection = H2(server.port)
        await connection.connect()
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.run)
            stream = await connection.get(target)
            await connection.until(lambda: stream.complete or stream.reset)
            await connection.aclose()
            tg.cancel_scope.cancel()
        body, complete = bytes(stream.body), stream.complete
    else:
        client = H1(server.port)
        await client.request(target)
        await client.read_all()
        await client.aclose()
        body, complete = bytes(client.body), client.complete
    parsed = parse(body)
    got = [(event.data, event.event, event.id) for event in parsed.events]
    result.received = len(got)
    if not complete:
        result.mismatches.append("the stream did not end cleanly")
    if len(parsed.blocks) != len(expected):
        result.mismatches.append(f"{len(parsed.blocks)} blocks for {len(expected)} events")
    if {name for name, _ in parsed.fields} - {"id", "event", "data"}:
        result.mismatches.append(f"other fields: {sorted({n for n, _ in parsed.fields})}")
    if parsed.comments or parsed.pending or parsed.tail:
        result.mismatches.append("comments, pending lines or an incomplete line")
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            result.mismatches.append(f"item {index}: sent {want!r}, received {have!r}")
            break
    return result


# -- graceful shutdown -------------------------------------------------------------------


@dataclass
class ShutdownResult:
    h1: list[H1]
    h2: list[H2Stream]
    ended_after: list[float]  # seconds from SIGTERM to each stream's end
    exited_after: float  # seconds from SIGTERM to the process's exit


async def run_shutdown(
    server: ServerProcess, *, h1: int, h2_connections: int, per_connection: int
) -> ShutdownResult:
    """Open streams of every producer kind (``KINDS``, in turn) over HTTP/1.1 and HTTP/2;
    once each got its first event, SIGTERM; read each to its end (clean or cut)."""
    h1_clients: list[H1] = []
    h2_clients: list[tuple[H2, list[H2Stream]]] = []
    kinds = itertools.cycle(KINDS)
    for _ in range(h1):
        client = H1(server.port)
        await client.request(f"/forever?kind={next(kinds)}")
        h1_clients.append(client)
    for _ in range(h2_connections):
        connection = H2(server.port)
        await connection.connect()
        streams = [
            await connection.get(f"/forever?kind={next(kinds)}") for _ in range(per_connection)
        ]
        h2_clients.append((connection, streams))
    total = h1 + h2_connections * per_connection
    opened, ended = Countdown(total), Countdown(total)
    ended_after: list[float] = []
    signalled = anyio.Event()
    sent_at = 0.0

    async def h1_reader(client: H1) -> None:
        await client.read_until(lambda c: _first_event(c.body))
        opened.done()
        await signalled.wait()
        await client.read_all()
        ended_after.append(time.monotonic() - sent_at)
        ended.done()

    async def h2_reader(connection: H2, stream: H2Stream) -> None:
        await connection.until(lambda: _first_event(stream.body) or stream.reset)
        opened.done()
        await signalled.wait()
        await connection.until(lambda: stream.complete or stream.reset)
        ended_after.append(time.monotonic() - sent_at)
        ended.done()

    async with anyio.create_task_group() as tg:
        for client in h1_clients:
            tg.start_soon(h1_reader, client)
        for connection, streams in h2_clients:
            tg.start_soon(connection.run)
            for stream in streams:
                tg.start_soon(h2_reader, connection, stream)
        await opened.wait()
        sent_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        signalled.set()
        await ended.wait()
        await server.exited()
        exited_after = time.monotonic() - sent_at
        tg.cancel_scope.cancel()
    for client in h1_clients:
        await client.aclose()
    h2_streams = [stream for _, streams in h2_clients for stream in streams]
    return ShutdownResult(h1_clients, h2_streams, ended_after, exited_after)
