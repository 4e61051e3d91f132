"""Benchmark 3, client side: httpx clients in their own process, against servers started by
``e2e_server.py``.

    python benchmarks/e2e_client.py '<json job>'

The job names one scenario and the servers to measure, in order (the caller rotates the
order from round to round); one JSON line per server is printed:

    throughput  C concurrent clients each read N events as fast as possible: events/s (all
                events over the client's wall time) and the server's events per CPU-second
                (from /proc/<pid>/stat)
    latency     C concurrent clients at one event every S seconds: p50/p99 of the time from
                the event's creation (a timestamp inside it) to its arrival at the client
                (bare sockets with h11, timestamped as the loop hands the bytes over: with
                1,000 httpx streams the client process's own scheduling was most of it)
    memory      server VmRSS before and with C idle open streams: KiB per stream
    cleanup     R times: read two events, disconnect, and ask the server when the producer's
                ``finally`` ran: milliseconds from disconnect to cleanup
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import h11
import httpx

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, median, percentile, raise_nofile, vm_rss_kib

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_DATA_LINE = re.compile(rb"^data: ?(.*?)\r?$", re.MULTILINE)


def _limits(connections: int, keepalive: bool = True) -> httpx.Limits:
    return httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections if keepalive else 0
    )


async def _count_events(chunks: AsyncIterator[bytes], stop_at: int | None = None) -> int:
    """Events in a streamed SSE body (blank-line terminated), without parsing them.

    ``chunks`` is the caller's ``response.aiter_raw()``: a caller that stops early and wants
    the stream to stay open must keep that iterator referenced, because httpx closes the
    response when the iterator is garbage-collected."""
    count = 0
    tail = b""
    async for chunk in chunks:
        buf = tail + (chunk.replace(b"\r", b"") if b"\r" in chunk else chunk)
        count += buf.count(b"\n\n")
        tail = b"\n" if buf.endswith(b"\n") and not buf.endswith(b"\n\n") else b""
        if stop_at is not None and count >= stop_at:
            break
    return count


async def throughput(target: dict[str, Any], clients: int, events: int) -> dict[str, float]:
    pid = target["pid"]
    counts = [0] * clients
    async with httpx.AsyncClient(
        base_url=target["url"], limits=_limits(clients), timeout=30
    ) as client:
        # Open the connections first (kept alive), so the timing covers streaming only.
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(client.get, "/control/ping")

        async def one(k: int) -> None:
            async with client.stream("GET", f"/stream?n={events}") as response:
                response.raise_for_status()
                counts[k] = await _count_events(response.aiter_raw())

        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for k in range(clients):
                tg.start_soon(one, k)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    if any(c < events for c in counts):
        raise RuntimeError(f"expected {events} events per client, got {sorted(set(counts))}")
    total = clients * events
    return {
        "events_per_s": total / wall,
        "server_events_per_cpu_s": total / max(cpu, 0.01),
        "wall_s": wall,
        "server_cpu_s": cpu,
    }


class _TickReader(asyncio.Protocol):
    """One latency client on a bare socket, HTTP/1.1 parsed by h11 (httpx's own parser): the
    clock is read the moment the event loop hands the bytes over, with no task wake-up and
    no HTTP client stack between the socket and the timestamp, so that the figure is the
    server's latency rather than the client process's."""

    def __init__(self, path: str, host: str, on_event: Callable[[float, bytes], None]) -> None:
        self.path, self.host, self.on_event = path, host, on_event
        self.http = h11.Connection(h11.CLIENT)
        self.body = b""
        self.first = anyio.Event()  # the first event arrived, or the stream ended
        self.started = False
        self.samples = 0
        self.error = ""
        self.on_end: Callable[[], None] = lambda: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        request = h11.Request(
            method="GET",
            target=self.path,
            headers=[("host", self.host), ("accept", "text/event-stream")],
        )
        transport.write(self.http.send(request) + (self.http.send(h11.EndOfMessage()) or b""))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.http.receive_data(data)
        while (event := self.http.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Response) and event.status_code != 200:
                self._end(f"status {event.status_code}")
            elif isinstance(event, h11.Data):
                self.body += bytes(event.data)
                while match := _EVENT_END.search(self.body):
                    block, self.body = self.body[: match.start()], self.body[match.end() :]
                    if line := _DATA_LINE.search(block):  # else a comment (heartbeat)
                        self.on_event(now, line.group(1))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                self._end("the response ended")
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}")

    def _end(self, why: str) -> None:
        self.error = self.error or why
        self.first.set()
        self.on_end()


async def latency(
    target: dict[str, Any], clients: int, events: int, interval: float, settle: float
) -> dict[str, float]:
    """Samples are only the events created ``settle`` seconds after the last client got its
    first event, until every client has ``events`` samples: neither the connection ramp-up nor
    the clients leaving (1,000 disconnects at once) is measured. The server's streams are longer
    than that; the clients leave together at the end."""
    latencies: list[float] = []
    connected = 0
    all_connected = anyio.Event()
    measure_from = [float("inf")]
    finished = 0
    all_finished = anyio.Event()
    # CPU use in the steady state: from measure_from until the first client leaves.
    window: dict[str, float] = {}
    pid = target["pid"]

    def snapshot(suffix: str) -> None:
        window["wall" + suffix] = time.monotonic()
        window["server" + suffix] = cpu_seconds(pid)
        window["client" + suffix] = time.process_time()
        window["samples" + suffix] = len(latencies)

    def on_event(k: int, now: float, data: bytes) -> None:
        nonlocal connected, finished
        reader = readers[k]
        if not reader.started:
            reader.started = True
            reader.first.set()
            connected += 1
            if connected == clients:
                measure_from[0] = now + settle
                all_connected.set()
        created = json.loads(data)["t"]
        if created >= measure_from[0] and reader.samples < events:
            latencies.append(now - created)
            reader.samples += 1
            if reader.samples == events:
                finished += 1
                if finished == clients:
                    snapshot("1")
                    all_finished.set()

    loop = asyncio.get_running_loop()
    host, port = target["url"].removeprefix("http://").rsplit(":", 1)
    readers: dict[int, _TickReader] = {}
    gate = anyio.Semaphore(100)  # at most this many connections being set up at once

    async def one(k: int) -> None:
        path = f"/ticks?n={10_000_000}&interval={interval}&phase={k / clients:.4f}"
        async with gate:
            transport, reader = await loop.create_connection(
                lambda: _TickReader(path, host, lambda now, data: on_event(k, now, data)),
                host,
                int(port),
            )
            readers[k] = reader
            try:
                await reader.first.wait()
                if reader.error:
                    raise RuntimeError(f"a stream failed: {reader.error}")
            except BaseException:
                transport.close()
                raise
        try:
            with anyio.CancelScope() as scope:
                reader.on_end = scope.cancel
                await all_finished.wait()
            if not all_finished.is_set():
                raise RuntimeError(f"a stream ended early: {reader.error}")
        finally:
            transport.close()

    async def start_window() -> None:
        await all_connected.wait()
        await anyio.sleep(max(0.0, measure_from[0] - time.monotonic()))
        snapshot("0")

    async with anyio.create_task_group() as tg:
        tg.start_soon(start_window)
        for k in range(clients):
            tg.start_soon(one, k)
    result = {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "samples": len(latencies),
        "server_cpu_us_per_event": float("nan"),
        "client_cpu_share": float("nan"),
    }
    if "wall0" in window and "wall1" in window and window["wall1"] > window["wall0"]:
        count = max(1.0, window["samples1"] - window["samples0"])
        wall = window["wall1"] - window["wall0"]
        result["server_cpu_us_per_event"] = (window["server1"] - window["server0"]) / count * 1e6
        result["client_cpu_share"] = (window["client1"] - window["client0"]) / wall
    return result


async def _hold_idle(client: httpx.AsyncClient, streams: int, settle: float, pid: int) -> int:
    """Open ``streams`` idle streams, wait until each got its first event and ``settle``
    seconds more, read the server's RSS, then close them all; returns that RSS (KiB)."""
    ready = 0
    all_ready = anyio.Event()
    release = anyio.Event()
    gate = anyio.Semaphore(100)

    async def hold() -> None:
        nonlocal ready
        async with gate:
            response = await client.send(client.build_request("GET", "/idle"), stream=True)
            chunks = response.aiter_raw()  # held until release: dropping it closes the stream
            try:
                response.raise_for_status()
                if await _count_events(chunks, stop_at=1) < 1:
                    raise RuntimeError("an idle stream ended before its first event")
            except BaseException:
                await response.aclose()
                raise
        try:
            ready += 1
            if ready == streams:
                all_ready.set()
            await release.wait()
        finally:
            await response.aclose()

    rss = 0
    async with anyio.create_task_group() as tg:
        for _ in range(streams):
            tg.start_soon(hold)
        await all_ready.wait()
        await anyio.sleep(settle)
        rss = vm_rss_kib(pid)
        open_fds = len(os.listdir(f"/proc/{pid}/fd"))
        release.set()
    if open_fds < streams:  # each open stream is one connection, so one socket, in the server
        raise RuntimeError(f"the server holds {open_fds} files for {streams} open streams")
    return rss


async def memory(
    target: dict[str, Any], streams: int, warm: int, settle: float
) -> dict[str, float]:
    pid = target["pid"]
    async with httpx.AsyncClient(
        base_url=target["url"], limits=_limits(streams + 10, keepalive=False), timeout=30
    ) as client:
        await _hold_idle(client, warm, 0, pid)  # first requests: lazy imports, caches
        await anyio.sleep(settle)
        before = vm_rss_kib(pid)
        during = await _hold_idle(client, streams, settle, pid)
    return {
        "kib_per_stream": (during - before) / streams,
        "rss_before_kib": before,
        "rss_during_kib": during,
    }


async def cleanup(target: dict[str, Any], repeats: int, tag: str) -> dict[str, float]:
    delays: list[float] = []
    timeouts = 0
    async with (
        httpx.AsyncClient(base_url=target["url"], timeout=10) as control,
        httpx.AsyncClient(
            base_url=target["url"], limits=_limits(4, keepalive=False), timeout=10
        ) as streams,
    ):
        for k in range(repeats):
            ident = f"{tag}-{k}"
            async with streams.stream("GET", f"/track?id={ident}") as response:
                response.raise_for_status()
                chunks = response.aiter_raw()
                await _count_events(chunks, stop_at=2)
                left = time.monotonic()
            # The body was not read to its end: leaving the block closed the connection.
            while True:
                cleaned = (await control.get(f"/control/cleaned?id={ident}")).json()
                if cleaned is not None:
                    delays.append(cleaned - left)
                    break
                if time.monotonic() > left + 5:
                    timeouts += 1
                    break
                await anyio.sleep(0.001)
    return {
        "median_ms": median(delays) * 1000,
        "max_ms": (max(delays) if delays else float("nan")) * 1000,
        "timeouts": timeouts,
    }


async def run_job(job: dict[str, Any]) -> None:
    params = job["params"]
    scenario = job["scenario"]
    for index, target in enumerate(job["targets"]):
        if index:
            await anyio.sleep(job.get("settle", 0.5))
        result: dict[str, Any] = {"implementation": target["implementation"]}
        try:
            with anyio.fail_after(job.get("timeout", 120)):
                if scenario == "throughput":
                    result.update(await throughput(target, params["clients"], params["events"]))
                elif scenario == "latency":
                    result.update(
                        await latency(
                            target,
                            params["clients"],
                            params["events"],
                            params["interval"],
                            params["settle"],
                        )
                    )
                elif scenario == "memory":
                    result.update(
                        await memory(target, params["streams"], params["warm"], params["settle"])
                    )
                elif scenario == "cleanup":
                    tag = f"{job.get('tag', 'x')}-{index}"
                    result.update(await cleanup(target, params["repeats"], tag))
                else:
                    raise ValueError(f"unknown scenario {scenario!r}")
        except Exception as exc:
            leaf: BaseException = exc
            while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
                leaf = leaf.exceptions[0]
            result["error"] = f"{type(leaf).__name__}: {leaf}"
            traceback.print_exception(leaf, limit=-8)
        print(json.dumps(result), flush=True)


def main() -> None:
    job = json.loads(sys.argv[1])
    raise_nofile(int(job.get("nofile", 4096)))
    anyio.run(run_job, job)


if __name__ == "__main__":
    main()
