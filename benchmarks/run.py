#!/usr/bin/env python3
"""asgi_stream against its peers, in one run on one machine.

    python benchmarks/run.py            # everything (a few minutes); writes results.md/.png
    python benchmarks/run.py --quick    # tiny sizes, a few seconds (the CI smoke run)

1. Encoder: events per CPU-second encoding the same events (asgi_stream's wire format,
   sse-starlette's ServerSentEvent.encode, FastAPI's SSE encoder).
2. In-process driver: events per CPU-second streaming N items into a no-op ASGI send.
3. End-to-end under hypercorn on 127.0.0.1, servers and the httpx client in separate
   processes: (a) throughput with concurrent clients, (b) latency p50/p99 at a fixed rate,
   (c) server memory per idle open stream, (d) time from disconnect to producer cleanup.

Implementations are interleaved (A, B, C, then the next round in a rotated order) and each
figure is the median over the rounds, so drift of a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ENCODER_CASES, machine_info, make_items, median, raise_nofile  # noqa: E402

PEER = "sse-starlette"


# -- results -------------------------------------------------------------------------------


@dataclass
class Row:
    group: str
    case: str
    implementation: str
    unit: str
    higher_is_better: bool
    values: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def value(self) -> float:
        return median(self.values)


@dataclass
class Group:
    title: str
    baseline: str  # implementation the ratios are relative to
    peer: str | None  # a second ratio column (sse-starlette), if not the baseline
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, case: str, implementation: str, unit: str, higher: bool = True) -> Row:
        key = (case, implementation)
        if key not in self.rows:
            self.rows[key] = Row(self.title, case, implementation, unit, higher)
        return self.rows[key]

    def ratio(self, row: Row, against: str | None) -> float | None:
        if against is None:
            return None
        other = self.rows.get((row.case, against))
        if other is None or not other.values or not row.values or other.value == 0:
            return None
        if len(row.values) == len(other.values) and all(v > 0 for v in other.values):
            # Paired by round (measured moments apart), so drift between rounds cancels out.
            return median([a / b for a, b in zip(row.values, other.values, strict=True)])
        return row.value / other.value


def rotated(items: list[str], round_index: int) -> list[str]:
    k = round_index % len(items) if items else 0
    return items[k:] + items[:k]


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit.startswith("events"):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table_lines(groups: list[Group], markdown: bool) -> list[str]:
    header = ["benchmark", "case", "implementation", "median", "unit", "vs baseline", "vs peer"]
    rows: list[list[str]] = []
    for group in groups:
        for row in group.rows.values():
            if row.error is not None:
                skipped = "not installed" in row.error
                value, unit = ("skipped" if skipped else "error"), row.error[:60]
            elif not row.values:
                value, unit = "n/a", row.unit
            else:
                value, unit = fmt(row.value, row.unit), row.unit
            cells = [group.title, row.case, row.implementation, value, unit]
            for against in (group.baseline, group.peer):
                ratio = group.ratio(row, against)
                cells.append("" if ratio is None else f"{ratio:.2f}x")
            rows.append(cells)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return lines
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in (3, 5, 6) else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


# -- 1. encoder ----------------------------------------------------------------------------


def bench_encoder(args: argparse.Namespace) -> Group:
    import encoders

    group = Group("1 encoder", encoders.BASELINE, None)
    group.notes.append(
        f"events per CPU-second encoding {args.encoder_events:,} events per measurement; "
        "ratios vs sse-starlette's ServerSentEvent.encode (the baseline)."
    )
    factories, missing = encoders.load()
    encoders.check(factories)
    names = list(factories)
    for name, why in missing.items():
        for case in ENCODER_CASES:
            group.row(case, name, "events/s").error = why
    calls = {(c, n): factories[n](case) for c, case in ENCODER_CASES.items() for n in names}
    for fn in calls.values():  # warm-up
        for _ in range(200):
            fn()
    count = range(args.encoder_events)
    for r in range(args.rounds):
        for case in ENCODER_CASES:
            for name in rotated(names, r):
                fn = calls[(case, name)]
                gc.collect()
                cpu = time.process_time()
                for _ in count:
                    fn()
                cpu = time.process_time() - cpu
                group.row(case, name, "events/s").values.append(
                    args.encoder_events / max(cpu, 1e-9)
                )
    return group


# -- 2. in-process driver ------------------------------------------------------------------


def bench_inprocess(args: argparse.Namespace, backend: str) -> Group:
    import anyio
    import inprocess

    makers = inprocess.ASYNCIO if backend == "asyncio" else inprocess.TRIO
    runners, missing = inprocess.load(makers)
    title = "2 in-process" if backend == "asyncio" else "2 in-process (trio)"
    peer = "sse-starlette EventSourceResponse"
    group = Group(title, inprocess.BASELINE, peer if peer in runners else None)
    group.notes.append(
        f"events per CPU-second for {args.items:,} items into a no-op ASGI send "
        f"(on {backend}); ratios vs the hand-written loop (baseline) and vs sse-starlette."
    )
    if missing:
        group.notes.append("not installed: " + ", ".join(missing))
    items = make_items(args.items)
    names = list(runners)
    case = f"{args.items:,} items"

    async def main() -> None:
        await inprocess.check(runners)
        for name in names:  # warm-up
            await runners[name](
                items[:200], inprocess.scope(), inprocess.blocking_receive, inprocess.noop_send
            )
        for r in range(args.rounds):
            for name in rotated(names, r):
                gc.collect()
                cpu = time.process_time()
                with anyio.fail_after(300):
                    await runners[name](
                        items, inprocess.scope(), inprocess.blocking_receive, inprocess.noop_send
                    )
                cpu = time.process_time() - cpu
                group.row(case, name, "events/s").values.append(args.items / max(cpu, 1e-9))

    anyio.run(main, backend=backend)
    return group


# -- 3. end to end -------------------------------------------------------------------------

E2E_IMPLEMENTATIONS = ["hand-written loop", "asgi_stream", "sse-starlette"]


class Server:
    """One ``e2e_server.py`` process; stopped (and killed if need be) by ``stop``."""

    def __init__(self, implementation: str, nofile: int, log_dir: Path, kind: str) -> None:
        self.implementation = implementation
        name = f"server-{kind}-{implementation.replace(' ', '_')}.log"
        self.log = open(log_dir / name, "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "e2e_server.py"),
                implementation,
                "--server",
                kind,
                "--nofile",
                str(nofile),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        self.url = ""
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"server {self.implementation!r} did not start: {self.tail()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    raise RuntimeError(f"server {self.implementation!r} exited: {self.tail()}")
                line += chunk
        word, port, pid = line.decode().split()
        assert word == "READY", line
        self.url = f"http://127.0.0.1:{port}"
        self.pid = int(pid)

    def tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # the server exits when its stdin closes
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.log.close()


@contextlib.contextmanager
def servers(
    implementations: list[str], nofile: int, log_dir: Path, kind: str
) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name in implementations:
            started[name] = Server(name, nofile, log_dir, kind)
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


def run_client(
    job: dict[str, Any], timeout: float, script: str = "e2e_client.py"
) -> tuple[list[dict[str, Any]], str]:
    """Run one ``e2e_client.py`` (or ``e2e_sockets.py``) job; its JSON lines, and its stderr
    (for errors)."""
    command = [sys.executable, str(HERE / script), json.dumps(job)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return [], f"client timed out after {timeout:.0f} s: {exc.stderr!s:.500}"
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    problem = "" if done.returncode == 0 else f"client exited {done.returncode}"
    return results, (problem + "\n" + done.stderr[-3000:]).strip()


def fanout_interval(args: argparse.Namespace, subscribers: int) -> float:
    """The paced publisher's interval for ``subscribers``: proportional to them, so that the
    server is busy (a third to a half of a core) without being saturated."""
    return round(args.fanout_interval_per_1k * subscribers / 1000, 4)


def fanout_params(args: argparse.Namespace, size: int) -> dict[str, Any]:
    return {
        "subscribers": size,
        "variants": [
            {
                "name": "paced",
                "events": args.fanout_events,
                "interval": fanout_interval(args, size),
            },
            {"name": "max", "events": args.fanout_max_events, "interval": 0},
        ],
        "settle": args.settle,
        # the largest size runs first, on a fresh server: value-based idle memory
        "memory": size == max(args.fanout_sizes),
    }


def bench_e2e(args: argparse.Namespace) -> list[Group]:
    try:
        import sse_starlette  # noqa: F401
    except ImportError:
        names = [n for n in E2E_IMPLEMENTATIONS if n != PEER]
    else:
        names = list(E2E_IMPLEMENTATIONS)
    need = (
        max(
            args.latency_clients,
            args.idle_streams,
            args.clients,
            args.memory_streams,
            *args.fanout_sizes,
        )
        + 256
    )
    soft = raise_nofile(need)
    if soft < need:
        raise SystemExit(f"need {need} open files, the hard limit allows {soft}")
    groups = {
        key: Group(title, "hand-written loop", PEER if PEER in names else None)
        for key, title in [
            ("throughput", "3a throughput"),
            ("latency", "3b latency"),
            ("memory", "3c memory"),
            ("cleanup", "3d disconnect"),
            ("awaiting", "3e awaiting source"),
            ("fanout", "3f fan-out"),
            ("fanout_max", "3g fan-out max"),
            ("fanout_gc", "3h fan-out GC"),
            ("idle", "3i idle memory"),
            ("first_event", "3j first event"),
        ]
    }
    g = groups
    servers_text = " and ".join(
        {"hypercorn": "hypercorn (asyncio)", "uvicorn": "uvicorn (uvloop, httptools)"}[k]
        for k in args.servers
    )
    g["throughput"].notes.append(
        f"{args.clients} concurrent clients x {args.client_events:,} events as fast as possible: "
        "events/s over the client's wall time (one httpx process, which can be the bottleneck) "
        "and the server's events per CPU-second (/proc/<pid>/stat)."
    )
    g["latency"].notes.append(
        f"{args.latency_clients} concurrent clients at one event every {args.interval} s "
        "(phases spread evenly; bare sockets with h11), from the timestamp inside each event "
        "to its arrival; "
        "ramp-up and the final disconnects excluded, "
        f"{args.latency_events} samples per client. Wall-clock latency on a shared machine "
        "follows its load; the server's CPU time per event in the steady state "
        "(/proc/<pid>/stat) is the steadier figure."
    )
    g["memory"].notes.append(
        f"server VmRSS growth with {args.idle_streams} idle open streams, fresh server, "
        "after a small warm-up; KiB per stream."
    )
    g["cleanup"].notes.append(
        f"{args.disconnects} times per round: read 2 events, disconnect, and the server "
        "reports when the generator's finally ran; median ms."
    )
    g["awaiting"].notes.append(
        f"{args.await_clients} concurrent clients x {args.await_events:,} events of a source "
        "that does `await asyncio.sleep(0)` before each item, read as fast as possible by "
        "bare sockets (one epoll process): events/s over the client's wall time and the "
        "server's events per CPU-second."
    )
    g["fanout"].notes.append(
        "K value-based subscribers (one first event each, then whatever is published), bare "
        "sockets in one epoll process; once all are connected the server publishes "
        f"{args.fanout_events} events, one every {args.fanout_interval_per_1k} s per 1,000 "
        "subscribers (busy, not saturated), each carrying its creation time: deliveries per "
        "server CPU-second, and p50/p99 from creation to arrival (the last subscriber of a "
        "publish waits for all the others)."
    )
    g["fanout_max"].notes.append(
        f"the same subscribers, {args.fanout_max_events} events published back to back "
        "(`await asyncio.sleep(0)` between publishes): deliveries/s until the last arrived, "
        "and per server CPU-second."
    )
    g["fanout_gc"].notes.append(
        "time in the server's garbage collector (gc.callbacks start/stop) while publishing, "
        "as a share of the server's CPU time, and the longest single collection."
    )
    g["idle"].notes.append(
        f"server VmRSS and GC-tracked objects (len(gc.get_objects()) after gc.collect()) "
        f"before and with {args.memory_streams:,} idle open streams, on a fresh server: "
        "automatic mode (/idle: an async generator, one event then asleep) and value-based "
        "(/subscribe of the fan-out, one event then nothing, measured as its subscribers "
        "connect); per stream. Cyclic garbage once closed: what gc.collect() finds "
        "unreachable after the streams were closed and the server let go of them (0 when "
        "reference counting freed everything at once), per stream; each fan-out size ends "
        "with that collection, so the next starts without the previous one's garbage."
    )
    g["first_event"].notes.append(
        f"{args.ttfe_requests} fresh connections to /idle, {args.ttfe_concurrency} at a time "
        "(after 20 not counted), bare sockets: from sending the request to receiving the "
        "first complete event; p50/p99."
    )
    for group in groups.values():
        group.notes.append(f"Server: {servers_text}, one worker.")
        group.notes.append("ratios vs the hand-written ASGI loop (baseline) and vs sse-starlette.")
    client_share: dict[str, float] = {}
    logs = tempfile.TemporaryDirectory(prefix="asgi-stream-bench-logs-")
    log_dir = Path(logs.name)
    # (client script, scenario, params, timeout per server); each batch on fresh servers
    Job = tuple[str, str, dict[str, Any], float]
    sizes = sorted(args.fanout_sizes, reverse=True)
    fanout_jobs: list[Job] = []
    for size in sizes:
        params = fanout_params(args, size)
        interval = fanout_interval(args, size)
        deliveries = size * (args.fanout_events + args.fanout_max_events)
        timeout = 60 + size / 40 + args.fanout_events * interval * 3 + deliveries / 3000
        fanout_jobs.append(("e2e_sockets.py", "fanout", params, timeout))
    batches: list[list[Job]] = [
        [
            (
                "e2e_client.py",
                "memory",
                {"streams": args.idle_streams, "warm": 20, "settle": args.settle},
                60 + args.idle_streams / 20,
            ),
            (
                "e2e_client.py",
                "throughput",
                {"clients": args.clients, "events": args.client_events},
                60 + args.clients * args.client_events / 2000,
            ),
            (
                "e2e_client.py",
                "latency",
                {
                    "clients": args.latency_clients,
                    "events": args.latency_events,
                    "interval": args.interval,
                    "settle": args.settle,
                },
                60 + args.latency_events * args.interval + args.latency_clients / 20,
            ),
            ("e2e_client.py", "cleanup", {"repeats": args.disconnects}, 30 + args.disconnects * 2),
            (
                "e2e_sockets.py",
                "awaiting",
                {"clients": args.await_clients, "events": args.await_events},
                60 + args.await_clients * args.await_events / 2000,
            ),
            (
                "e2e_sockets.py",
                "first_event",
                {
                    "requests": args.ttfe_requests,
                    "concurrency": args.ttfe_concurrency,
                    "path": "/idle",
                    "warm": 20,
                },
                30 + args.ttfe_requests / 10,
            ),
        ],
        [
            (
                "e2e_sockets.py",
                "memory",
                {"streams": args.memory_streams, "path": "/idle", "settle": args.settle},
                60 + args.memory_streams / 40,
            )
        ],
        fanout_jobs,
    ]
    for kind in args.servers:  # the table lists the fan-out sizes in ascending order
        for size in sorted(args.fanout_sizes):
            for n in names:
                empty: dict[str, Any] = {}
                record_sockets(groups, "fanout", fanout_params(args, size), n, empty, kind, args)
    try:
        for r in range(args.e2e_rounds):
            order = rotated(names, r)
            for kind in args.servers:
                for batch in batches:
                    with servers(order, need, log_dir, kind) as started:
                        for script, scenario, params, per_target in batch:
                            targets = [
                                {"implementation": n, "url": started[n].url, "pid": started[n].pid}
                                for n in order
                            ]
                            job = {
                                "scenario": scenario,
                                "targets": targets,
                                "params": params,
                                "timeout": per_target,
                                "settle": args.settle,
                                "nofile": need,
                                "tag": f"r{r}",
                            }
                            t0 = time.monotonic()
                            results, errors = run_client(
                                job, per_target * len(targets) + 60, script
                            )
                            print(
                                f"    {kind} {scenario}: {time.monotonic() - t0:.1f} s",
                                file=sys.stderr,
                                flush=True,
                            )
                            by_name = {res["implementation"]: res for res in results}
                            for n in order:
                                res = by_name.get(
                                    n,
                                    {"error": errors.splitlines()[-1] if errors else "no result"},
                                )
                                if script == "e2e_client.py":
                                    record_e2e(groups[scenario], scenario, n, res, args, kind)
                                else:
                                    record_sockets(groups, scenario, params, n, res, kind, args)
                                    note_client_share(client_share, scenario, res)
                            if not results or (errors and any("error" in res for res in results)):
                                print(errors, file=sys.stderr)
                                for n, server in started.items():
                                    print(f"--- server {n} log:\n{server.tail()}", file=sys.stderr)
                print(
                    f"  e2e round {r + 1}/{args.e2e_rounds} ({kind}) done",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        logs.cleanup()
    for key, share in client_share.items():
        groups[key].notes.append(
            f"The client process used at most {share:.0%} of a core while measuring "
            "(time.process_time over the measured window): it was not the bottleneck."
            if share < 0.9
            else f"The client process used up to {share:.0%} of a core while measuring: it "
            "may have been the bottleneck."
        )
    return list(groups.values())


def note_client_share(shares: dict[str, float], scenario: str, res: dict[str, Any]) -> None:
    """The largest share of a core the bare-socket client used while measuring."""
    found: list[tuple[str, float]] = []
    if scenario == "awaiting" and "client_cpu_share" in res:
        found.append(("awaiting", res["client_cpu_share"]))
    if scenario == "fanout":
        for variant, key in (("paced", "fanout"), ("max", "fanout_max")):
            if isinstance(res.get(variant), dict):
                found.append((key, res[variant]["client_cpu_share"]))
    for key, share in found:
        shares[key] = max(shares.get(key, 0.0), float(share))


def record_sockets(
    groups: dict[str, Group],
    scenario: str,
    params: dict[str, Any],
    name: str,
    res: dict[str, Any],
    kind: str,
    args: argparse.Namespace,
) -> None:
    """Rows of one ``e2e_sockets.py`` result: (group key, case, unit, higher, value path)."""
    fields: list[tuple[str, str, str, bool, tuple[str, ...]]] = []
    if scenario == "awaiting":
        c = params["clients"]
        fields = [
            ("awaiting", f"{kind}: {c} clients, client-side", "events/s", True, ("events_per_s",)),
            (
                "awaiting",
                f"{kind}: {c} clients, server CPU",
                "events/CPU-s",
                True,
                ("server_events_per_cpu_s",),
            ),
        ]
    elif scenario == "first_event":
        fields = [
            ("first_event", f"{kind}: p50", "ms", False, ("p50_ms",)),
            ("first_event", f"{kind}: p99", "ms", False, ("p99_ms",)),
        ]
    elif scenario == "memory":
        n = params["streams"]
        idle = groups["idle"]
        idle.row(f"{kind}: {n:,} automatic", name, "KiB/stream", False)
        # the value-based figures come from the fan-out's largest size, on a fresh server
        largest = max(args.fanout_sizes)
        idle.row(f"{kind}: {largest:,} value-based", name, "KiB/stream", False)
        idle.row(f"{kind}: {n:,} automatic, GC objects", name, "objects/stream", False)
        idle.row(f"{kind}: {largest:,} value-based, GC objects", name, "objects/stream", False)
        garbage = "cyclic garbage once closed"
        idle.row(f"{kind}: {n:,} automatic, {garbage}", name, "objects/stream", False)
        idle.row(f"{kind}: {largest:,} value-based, {garbage}", name, "objects/stream", False)
        fields = [
            ("idle", f"{kind}: {n:,} automatic", "KiB/stream", False, ("kib_per_stream",)),
            (
                "idle",
                f"{kind}: {n:,} automatic, GC objects",
                "objects/stream",
                False,
                ("objects_per_stream",),
            ),
            (
                "idle",
                f"{kind}: {n:,} automatic, {garbage}",
                "objects/stream",
                False,
                ("garbage_per_stream",),
            ),
        ]
    elif scenario == "fanout":
        k = params["subscribers"]
        interval = params["variants"][0]["interval"]
        paced = f"{kind}: {k:,} subs, 1 per {interval:g} s"
        fields = [
            (
                "fanout",
                f"{paced}, server CPU",
                "deliveries/CPU-s",
                True,
                ("paced", "deliveries_per_cpu_s"),
            ),
            ("fanout", f"{paced}, p50", "ms", False, ("paced", "p50_ms")),
            ("fanout", f"{paced}, p99", "ms", False, ("paced", "p99_ms")),
            (
                "fanout_max",
                f"{kind}: {k:,} subs, back to back",
                "deliveries/s",
                True,
                ("max", "deliveries_per_s"),
            ),
            (
                "fanout_max",
                f"{kind}: {k:,} subs, back to back, server CPU",
                "deliveries/CPU-s",
                True,
                ("max", "deliveries_per_cpu_s"),
            ),
            ("fanout_gc", f"{paced}, GC share", "% of CPU", False, ("paced", "gc_share_pct")),
            ("fanout_gc", f"{paced}, longest GC", "ms", False, ("paced", "gc_max_pause_ms")),
            (
                "fanout_gc",
                f"{kind}: {k:,} subs, back to back, GC share",
                "% of CPU",
                False,
                ("max", "gc_share_pct"),
            ),
            (
                "fanout_gc",
                f"{kind}: {k:,} subs, back to back, longest GC",
                "ms",
                False,
                ("max", "gc_max_pause_ms"),
            ),
        ]
        if params.get("memory"):
            fields += [
                ("idle", f"{kind}: {k:,} value-based", "KiB/stream", False, ("kib_per_stream",)),
                (
                    "idle",
                    f"{kind}: {k:,} value-based, GC objects",
                    "objects/stream",
                    False,
                    ("objects_per_stream",),
                ),
                (
                    "idle",
                    f"{kind}: {k:,} value-based, cyclic garbage once closed",
                    "objects/stream",
                    False,
                    ("garbage_per_stream",),
                ),
            ]
    for key, case, unit, higher, path in fields:
        row = groups[key].row(case, name, unit, higher)
        if not res:  # only the row, so that the table keeps a stable order
            continue
        if "error" in res:
            row.error = str(res["error"])
            continue
        value: Any = res
        for part in path:
            value = value[part]
        row.values.append(float(value))


def record_e2e(
    group: Group,
    scenario: str,
    name: str,
    res: dict[str, Any],
    args: argparse.Namespace,
    kind: str,
) -> None:
    fields: list[tuple[str, str, str, bool]] = {
        "throughput": [
            ("events_per_s", f"{args.clients} clients, client-side", "events/s", True),
            (
                "server_events_per_cpu_s",
                f"{args.clients} clients, server CPU",
                "events/CPU-s",
                True,
            ),
        ],
        "latency": [
            ("p50_ms", f"{args.latency_clients} clients, p50", "ms", False),
            ("p99_ms", f"{args.latency_clients} clients, p99", "ms", False),
            (
                "server_cpu_us_per_event",
                f"{args.latency_clients} clients, server CPU",
                "us/event",
                False,
            ),
        ],
        "memory": [("kib_per_stream", f"{args.idle_streams} idle streams", "KiB/stream", False)],
        "cleanup": [("median_ms", "disconnect -> cleanup", "ms", False)],
    }[scenario]
    for key, case, unit, higher in fields:
        row = group.row(f"{kind}: {case}", name, unit, higher)
        if "error" in res:
            row.error = str(res["error"])
        elif res.get("timeouts"):
            row.error = f"{res['timeouts']} producers never cleaned up (> 5 s)"
        else:
            row.values.append(float(res[key]))


# -- report --------------------------------------------------------------------------------


def target_lines(groups: list[Group]) -> list[str]:
    """The targets of the issue, each with the measured ratio and whether it holds."""
    by_title = {g.title: g for g in groups}
    lines: list[str] = []

    def check(
        label: str,
        group: Group | None,
        case: str,
        impl: str,
        against: str,
        goal: float,
        lower: bool = False,
    ) -> None:
        if group is None:
            return
        row = group.rows.get((case, impl))
        ratio = None if row is None else group.ratio(row, against)
        if ratio is None:
            lines.append(f"- {label}: not measured")
            return
        holds = ratio < goal if lower else ratio >= goal
        verdict = "holds" if holds else "DOES NOT HOLD"
        lines.append(
            f"- {label}: {ratio:.2f}x ({'goal < ' if lower else 'goal >= '}{goal:g}x) {verdict}"
        )

    encoder = by_title.get("1 encoder")
    for case in ENCODER_CASES:
        check(
            f"encoder {case}: asgi_stream vs sse-starlette",
            encoder,
            case,
            "asgi_stream",
            "sse-starlette",
            2.0,
        )
    inproc = by_title.get("2 in-process")
    if inproc is not None:
        cases = {row.case for row in inproc.rows.values()}
        for case in sorted(cases):
            for row in [r for r in inproc.rows.values() if r.case == case]:
                if row.implementation.startswith("asgi_stream"):
                    check(
                        f"in-process {row.implementation} vs hand-written loop",
                        inproc,
                        case,
                        row.implementation,
                        inproc.baseline,
                        1.0,
                    )
                    if inproc.peer:
                        check(
                            f"in-process {row.implementation} vs sse-starlette",
                            inproc,
                            case,
                            row.implementation,
                            inproc.peer,
                            3.0,
                        )
    for title, label, goal, lower in [
        ("3a throughput", "end-to-end events/s", 1.0, False),
        ("3b latency", "end-to-end latency", 1.0, True),
        ("3c memory", "memory per idle stream", 1.0, True),
    ]:
        group = by_title.get(title)
        if group is None or group.peer is None:
            continue
        for case in dict.fromkeys(row.case for row in group.rows.values()):
            if title == "3b latency" and not case.endswith("p99"):
                continue
            check(
                f"{label} ({case}): asgi_stream vs sse-starlette",
                group,
                case,
                "asgi_stream",
                group.peer,
                goal,
                lower,
            )
    for title in (
        "3e awaiting source",
        "3f fan-out",
        "3g fan-out max",
        "3i idle memory",
        "3j first event",
    ):
        group = by_title.get(title)
        if group is None:
            continue
        for row in [r for r in group.rows.values() if r.implementation == "asgi_stream"]:
            if row.unit == "events/s" or row.case.endswith("p50"):
                continue  # the client-side figure, and p50 next to p99
            check(
                f"{title[3:]} ({row.case}): asgi_stream vs hand-written loop",
                group,
                row.case,
                "asgi_stream",
                group.baseline,
                1.0,
                lower=not row.higher_is_better,
            )
    return lines


def chart(groups: list[Group], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_title = {g.title: g for g in groups}
    # (group, title, unit shown: None for all the group's rows)
    panels: list[tuple[str, str, str | None]] = [
        ("1 encoder", "Encoder: events per CPU-second", None),
        ("2 in-process", "In-process driver (asyncio): events per CPU-second", None),
        ("2 in-process (trio)", "In-process driver (trio): events per CPU-second", None),
        ("3a throughput", "End-to-end: 100 clients as fast as possible (events/s)", None),
        ("3b latency", "End-to-end latency (ms, lower is better)", "ms"),
        (
            "3b latency",
            "Server CPU per event at 2 events/s/client (us, lower is better)",
            "us/event",
        ),
        ("3c memory", "Server memory per idle stream (KiB, lower is better)", None),
        ("3d disconnect", "Disconnect to producer cleanup (ms, lower is better)", None),
        ("3e awaiting source", "Source awaiting per item: server events per CPU-s", "events/CPU-s"),
        ("3f fan-out", "Fan-out, paced: deliveries per server CPU-s", "deliveries/CPU-s"),
        ("3f fan-out", "Fan-out, paced: delivery latency (ms, lower is better)", "ms"),
        ("3g fan-out max", "Fan-out, back to back: deliveries/s", "deliveries/s"),
        ("3h fan-out GC", "Fan-out: longest GC pause (ms, lower is better)", "ms"),
        ("3i idle memory", "Idle streams: server KiB per stream (lower is better)", "KiB/stream"),
        ("3j first event", "Time to first event (ms, lower is better)", None),
    ]
    panels = [p for p in panels if p[0] in by_title]
    cols = min(4, len(panels)) or 1
    rows = math.ceil(len(panels) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 5.8 * rows), squeeze=False)
    palette = {
        "hand-written loop": "#7f7f7f",
        "asgi_stream": "#1f77b4",
        "asgi_stream automatic (list)": "#1f77b4",
        "asgi_stream automatic (async gen)": "#6baed6",
        "asgi_stream callback": "#08519c",
        "sse-starlette": "#d62728",
        "sse-starlette EventSourceResponse": "#d62728",
        "fastapi (format_sse_event)": "#74c476",
        "fastapi (yielded item)": "#238b45",
        "FastAPI EventSourceResponse": "#238b45",
        "Starlette StreamingResponse": "#9467bd",
    }

    def color(name: str) -> str:
        return palette.get(name, "#8c564b")

    def tick(value: float, _pos: object) -> str:
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"

    for ax, (title, label, unit) in zip(axes.flat, panels, strict=False):
        group = by_title[title]
        shown = [row for row in group.rows.values() if unit is None or row.unit == unit]
        cases = list(dict.fromkeys(row.case for row in shown))
        impls = list(dict.fromkeys(row.implementation for row in group.rows.values()))
        width = 0.8 / max(1, len(impls))
        for i, impl in enumerate(impls):
            xs, heights, notes = [], [], []
            for j, case in enumerate(cases):
                row = group.rows.get((case, impl))
                if row is None or not row.values or row.error:
                    continue
                xs.append(j + (i - (len(impls) - 1) / 2) * width)
                heights.append(row.value)
                ratio = group.ratio(row, group.baseline)
                notes.append("" if ratio is None else f"{ratio:.2f}x")
            shade = color(impl)
            bars = ax.bar(
                xs,
                heights,
                width * 0.95,
                label=impl,
                color=shade,
            )
            for bar, note in zip(bars, notes, strict=True):
                ax.annotate(
                    note,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    rotation=90 if len(impls) > 4 else 0,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(cases)))
        crowded = len(cases) > 3 or max((len(c) for c in cases), default=0) > 30
        if crowded:  # long case names: slanted, and the legend inside the panel
            ax.set_xticklabels(cases, fontsize=6.5, rotation=25, ha="right")
        else:
            ax.set_xticklabels(cases, fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(tick))
        ax.margins(y=0.15)
        if crowded:
            ax.legend(fontsize=6.5, loc="upper left", frameon=True, framealpha=0.8)
        else:
            ax.legend(
                fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False
            )
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "asgi_stream vs peers (medians of interleaved rounds; labels: ratio vs baseline)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(
    groups: list[Group], info: dict[str, Any], command: str, path: Path, chart_name: str | None
) -> None:
    lines = [
        "# asgi_stream benchmarks",
        "",
        f"Command: `{command}`",
        "",
        "Medians over interleaved rounds (A, B, C, then the next round in a rotated order). "
        "`vs baseline` is this implementation's figure divided by the baseline's of the same "
        "case and round, median over the rounds; `vs peer` divides by sse-starlette's the "
        "same way. For `ms`, `us/event` and `KiB` lower is better.",
        "",
    ]
    lines += table_lines(groups, markdown=True)
    targets = target_lines(groups)
    if targets:
        lines += ["", "## Targets of the issue", "", *targets]
    lines += ["", "## What each benchmark measures", ""]
    for group in groups:
        lines.append(f"- **{group.title}** (baseline: {group.baseline}): " + " ".join(group.notes))
    lines += ["", "## Machine", ""]
    for key, value in info.items():
        if key == "packages":
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v)
        lines.append(f"- {key}: {value}")
    if chart_name:
        lines += ["", f"![benchmark chart]({chart_name})"]
    path.write_text("\n".join(lines) + "\n")


def to_json(groups: list[Group], info: dict[str, Any], command: str) -> dict[str, Any]:
    return {
        "machine": info,
        "command": command,
        "groups": [
            {
                "title": g.title,
                "baseline": g.baseline,
                "peer": g.peer,
                "notes": g.notes,
                "rows": [
                    {
                        "case": r.case,
                        "implementation": r.implementation,
                        "unit": r.unit,
                        "higher_is_better": r.higher_is_better,
                        "median": None if not r.values else r.value,
                        "values": r.values,
                        "error": r.error,
                    }
                    for r in g.rows.values()
                ],
            }
            for g in groups
        ],
    }


def from_json(raw: dict[str, Any]) -> list[Group]:
    groups = []
    for g in raw["groups"]:
        group = Group(g["title"], g["baseline"], g.get("peer"), notes=list(g.get("notes", [])))
        for r in g["rows"]:
            row = group.row(r["case"], r["implementation"], r["unit"], r["higher_is_better"])
            row.values = list(r["values"])
            row.error = r["error"]
        groups.append(group)
    return groups


def report(groups: list[Group], info: dict[str, Any], command: str, out: Path) -> None:
    """Print the table and the targets; write results.md, results.png and results.json."""
    print()
    print("\n".join(table_lines(groups, markdown=False)))
    print()
    for group in groups:
        print(f"{group.title}: baseline {group.baseline}. " + " ".join(group.notes))
    targets = target_lines(groups)
    if targets:
        print("\nTargets of the issue:")
        print("\n".join(targets))
    out.mkdir(parents=True, exist_ok=True)
    chart_name: str | None = "results.png"
    try:
        chart(groups, out / "results.png")
    except ImportError:
        chart_name = None
        print("matplotlib is not installed: no chart", file=sys.stderr)
    write_markdown(groups, info, command, out / "results.md", chart_name)
    (out / "results.json").write_text(json.dumps(to_json(groups, info, command), indent=1) + "\n")
    print(f"\nwrote {out / 'results.md'}", file=sys.stderr)


# -- main ----------------------------------------------------------------------------------

FULL = {
    "rounds": 11,
    "e2e_rounds": 3,
    "encoder_events": 20_000,
    "items": 20_000,
    "clients": 100,
    "client_events": 1_000,
    "latency_clients": 1_000,
    "latency_events": 10,
    "interval": 0.5,
    "idle_streams": 1_000,
    "disconnects": 20,
    "settle": 1.0,
    "await_clients": 100,
    "await_events": 1_000,
    "fanout_sizes": "1000,5000",
    "fanout_events": 12,
    "fanout_max_events": 10,
    "fanout_interval_per_1k": 0.12,
    "memory_streams": 5_000,
    "ttfe_requests": 500,
    "ttfe_concurrency": 10,
}
QUICK = {
    "rounds": 2,
    "e2e_rounds": 1,
    "encoder_events": 300,
    "items": 300,
    "clients": 4,
    "client_events": 50,
    "latency_clients": 8,
    "latency_events": 2,
    "interval": 0.05,
    "idle_streams": 10,
    "disconnects": 2,
    "settle": 0.1,
    "await_clients": 4,
    "await_events": 50,
    "fanout_sizes": "20,50",
    "fanout_events": 3,
    "fanout_max_events": 3,
    "fanout_interval_per_1k": 0.12,
    "memory_streams": 50,
    "ttfe_requests": 20,
    "ttfe_concurrency": 4,
}


def source_revision() -> str:
    """The git commit of the measured asgi_stream, and whether its files had local changes."""
    root = HERE.parent
    import asgi_stream

    where = Path(asgi_stream.__file__).resolve().parent
    if where != root / "asgi_stream":
        return f"{where} (not this checkout)"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "asgi_stream"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (" with uncommitted changes in asgi_stream/" if dirty else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="asgi_stream vs sse-starlette, Starlette, FastAPI and a hand-written loop.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    parser.add_argument(
        "--only", default="encoder,inprocess,e2e", help="comma-separated: encoder,inprocess,e2e"
    )
    parser.add_argument("--no-trio", action="store_true", help="skip the in-process run on trio")
    parser.add_argument(
        "--servers",
        default="hypercorn,uvicorn",
        help="comma-separated: the servers of the end-to-end benchmarks, hypercorn (asyncio) "
        "and uvicorn (uvloop, httptools)",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite the table, results.md and the chart from a results.json",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results.md/.png/.json go (default: benchmarks/, or a temporary "
        "directory with --quick, so a smoke run never overwrites the committed results)",
    )
    for name, value in FULL.items():
        kind = type(value)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"default {value:,} ({QUICK[name]} with --quick)"
            if kind is int
            else f"default {value} ({QUICK[name]} with --quick)",
        )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = args.only - {"encoder", "inprocess", "e2e"}
    if unknown:
        parser.error(f"unknown --only parts: {', '.join(sorted(unknown))}")
    args.servers = [part.strip() for part in args.servers.split(",") if part.strip()]
    wrong = set(args.servers) - {"hypercorn", "uvicorn"} or not args.servers
    if wrong:
        parser.error(f"--servers: hypercorn and/or uvicorn, not {wrong}")
    try:
        args.fanout_sizes = [int(k) for k in str(args.fanout_sizes).split(",") if k.strip()]
    except ValueError:
        parser.error("--fanout-sizes: comma-separated numbers of subscribers")
    if not args.fanout_sizes:
        parser.error("--fanout-sizes: at least one size")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="asgi-stream-bench-")) if args.quick else HERE
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        raw = json.loads(args.replot.read_text())
        report(from_json(raw), raw["machine"], raw["command"].strip(), args.out)
        return 0
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    info = machine_info()
    info["asgi_stream source"] = source_revision()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['python']}", file=sys.stderr)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers stop

    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    groups: list[Group] = []
    steps: list[tuple[str, Callable[[], list[Group]]]] = []
    if "encoder" in args.only:
        steps.append(("encoder", lambda: [bench_encoder(args)]))
    if "inprocess" in args.only:
        steps.append(("in-process (asyncio)", lambda: [bench_inprocess(args, "asyncio")]))
        if not args.no_trio:
            steps.append(("in-process (trio)", lambda: [bench_inprocess(args, "trio")]))
    if "e2e" in args.only:
        steps.append(("end-to-end", lambda: bench_e2e(args)))
    for label, step in steps:
        print(f"running {label} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        groups += step()
        print(f"  {label}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        info["load average (end)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    info["total run time"] = f"{time.monotonic() - started:.0f} s"

    report(groups, info, command, args.out)
    failed = [
        r for g in groups for r in g.rows.values() if r.error and "not installed" not in r.error
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
