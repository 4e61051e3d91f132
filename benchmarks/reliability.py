#!/usr/bin/env python3
"""asgi_stream's reliability figures: the measurable parts of tests/reliability at full size.

    python benchmarks/reliability.py            # both workers, full size (about 2 minutes)
    python benchmarks/reliability.py --quick    # tiny sizes, asyncio only (a smoke run)

Each scenario runs against a fresh ``tests/reliability/server.py`` (one hypercorn worker in a
subprocess, so its VmRSS is its own) with clients in this process, on the worker's backend:

1. load: 1,000 concurrent streams x 50 events, over HTTP/1.1 (a connection each) and over
   HTTP/2 (100 streams per connection); every event checked (order, duplicates, losses);
   server memory per open stream (VmRSS with all open minus VmRSS before).
2. disconnect storm: 500 clients of 5 producer kinds leave at random points; cleanups run and
   live objects (Streams, tasks in library code, threads, upstream connections) afterwards.
3. stalled clients (max_buffer 256 KiB): HTTP/1.1 sockets and HTTP/2 connections that never
   read, HTTP/2 streams never given flow-control credit; memory per stalled stream and the
   latency of healthy streams meanwhile.
4. faults: 200 producers raising at random points next to 200 healthy streams.
5. hostile strings: a seeded corpus of (data, event, id) through the driver and hypercorn.
6. SIGTERM with 100 open streams: asgi_stream.hypercorn.run, and plain ``hypercorn`` for
   comparison.

Prints a markdown table; ``--json PATH`` also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability.clients import raise_nofile, server_process  # noqa: E402
from tests.reliability.scenarios import (  # noqa: E402
    KiB,
    run_corpus,
    run_faults,
    run_load,
    run_shutdown,
    run_stalled,
    run_storm,
)

MAX_BUFFER = 256 * KiB


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(worker: str, quick: bool) -> dict[str, Any]:
    """Every scenario on one worker; returns the figures."""
    size: dict[str, Any] = {
        "streams": 50 if quick else 1_000,
        "storm": 40 if quick else 500,
        "faults": 20 if quick else 200,
        "corpus": 500 if quick else 10_000,
        "shutdown": (6, 1, 4) if quick else (60, 2, 20),
    }
    figures: dict[str, Any] = {"worker": worker}
    lost = 0

    for protocol, share in (("http1", 0.0), ("http2", 1.0)):
        async with server_process(worker) as server:
            with anyio.fail_after(300):
                load = await run_load(server, streams=size["streams"], events=50, h2_share=share)
        figures[f"load_{protocol}"] = {
            "streams": load.streams,
            "events": load.events_received,
            "errors": len(load.errors),
            "rss_per_stream_kib": round(load.rss_per_stream / KiB, 1),
            "open_s": round(load.open_seconds, 2),
            "deliver_s": round(load.deliver_seconds, 2),
            "active_when_open": load.active_when_open,
            "settled": load.stats_after["settled"],
        }
        lost += load.streams * load.events - load.events_received + len(load.errors)

    async with server_process(worker) as server:
        with anyio.fail_after(300):
            storm = await run_storm(server, clients=size["storm"])
    after = storm.after
    figures["storm"] = {
        "clients": storm.clients,
        "streams": sum(after["built"].values()),
        "cleanups": f"{sum(after['cleaned'].values())}/{sum(after['started'].values())}",
        "on_close": sum(after["closes"].values()),
        "left_after": {
            key: after[key]
            for key in ("live_streams", "stream_tasks", "threads", "upstream_open", "active")
        },
        "settled": after["settled"],
    }

    for name, options in (
        ("stalled", {"stalled_h1": 20, "stalled_h2_tcp": (2, 5), "stalled_h2_window": 0}),
        ("stalled_h2_window", {"stalled_h1": 0, "stalled_h2_tcp": (0, 0), "stalled_h2_window": 5}),
    ):
        async with server_process(worker, "--max-buffer", str(MAX_BUFFER)) as server:
            with anyio.fail_after(300):
                stalled = await run_stalled(
                    server,
                    max_buffer=MAX_BUFFER,
                    healthy_h1=10 if name == "stalled" else 0,
                    healthy_h2=5,
                    settle=15,
                    **options,  # type: ignore[arg-type]
                )
        figures[name] = {
            "stalled": stalled.stalled,
            "dropped": stalled.dropped["closes"].get("flood:slow-client", 0),
            "rss_per_stalled_kib": round(stalled.rss_per_stalled / KiB),
            "healthy_events": len(stalled.latencies),
            "healthy_p50_ms": round(percentile(stalled.latencies, 0.5) * 1e3, 1),
            "healthy_max_ms": round(max(stalled.latencies) * 1e3, 1),
            "healthy_missing": len(stalled.healthy_missing),
        }
        lost += len(stalled.healthy_missing)

    async with server_process(worker) as server:
        with anyio.fail_after(300):
            faults = await run_faults(server, faulty=size["faults"], healthy=size["faults"])
    figures["faults"] = {
        "raising": faults.faulty,
        "healthy": faults.healthy,
        "problems": len(faults.problems),
        "closes": faults.after["closes"],
    }
    lost += len(faults.problems)

    corpus: dict[str, Any] = {}
    async with server_process(worker) as server:
        for protocol in ("http1", "http2"):
            with anyio.fail_after(300):
                result = await run_corpus(server, n=size["corpus"], http2=protocol == "http2")
            corpus[protocol] = {
                "tried": result.tried,
                "refused": result.refused,
                "events": result.received,
                "mismatches": len(result.mismatches),
            }
            lost += result.expected - result.received + len(result.mismatches)
    figures["corpus"] = corpus

    h1, connections, per_connection = size["shutdown"]
    async with server_process(worker, "--grace", "3000") as server:
        with anyio.fail_after(60):
            shutdown = await run_shutdown(
                server, h1=h1, h2_connections=connections, per_connection=per_connection
            )
        final = server.final()
    clean = sum(c.complete for c in shutdown.h1) + sum(s.complete for s in shutdown.h2)
    figures["shutdown"] = {
        "streams": len(shutdown.ended_after),
        "clean_ends": clean,
        "on_close_shutdown": sum(n for k, n in final["closes"].items() if k.endswith(":shutdown")),
        "ended_within_s": round(max(shutdown.ended_after), 2),
        "exit_s": round(shutdown.exited_after, 2),
        "exit_code": server.process.returncode,
    }
    command = [sys.executable, "-m", "hypercorn", "-k", "{worker}", "-b", "{bind}"]
    command += ["--graceful-timeout", "1", "tests.reliability.server:app"]
    async with server_process(worker, command=command) as server:
        with anyio.fail_after(60):
            plain = await run_shutdown(server, h1=10, h2_connections=1, per_connection=10)
    figures["plain_hypercorn"] = {
        "streams": len(plain.ended_after),
        "clean_ends": sum(c.complete for c in plain.h1) + sum(s.complete for s in plain.h2),
        "cut_after_s": round(min(plain.ended_after), 2),
    }
    figures["data_lost"] = lost
    return figures


def table(results: list[dict[str, Any]]) -> str:
    workers = [r["worker"] for r in results]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Any) -> None:
        rows.append((label, [cell(r) for r in results]))

    row(
        "Load held: concurrent streams x 50 events, one worker (HTTP/1.1 / HTTP/2)",
        lambda r: (
            f"{r['load_http1']['streams']:,} / {r['load_http2']['streams']:,}: "
            f"{r['load_http1']['events'] + r['load_http2']['events']:,} events in order, "
            f"{r['load_http1']['errors'] + r['load_http2']['errors']} errors"
        ),
    )
    row(
        "Server memory per open stream (VmRSS; HTTP/1.1 / HTTP/2)",
        lambda r: (
            f"{r['load_http1']['rss_per_stream_kib']} KiB / "
            f"{r['load_http2']['rss_per_stream_kib']} KiB"
        ),
    )
    row(
        "Disconnect storm: clients leaving at random points",
        lambda r: (
            f"{r['storm']['clients']} clients, cleanups {r['storm']['cleanups']}, "
            f"on_close {r['storm']['on_close']}/{r['storm']['streams']}, left after: "
            f"{sum(r['storm']['left_after'].values())} objects"
        ),
    )
    row(
        "Stalled clients (HTTP/1.1, HTTP/2 unread), max_buffer 256 KiB",
        lambda r: (
            f"{r['stalled']['dropped']}/{r['stalled']['stalled']} dropped, "
            f"{r['stalled']['rss_per_stalled_kib']} KiB RSS each; healthy latency p50 "
            f"{r['stalled']['healthy_p50_ms']} ms, max {r['stalled']['healthy_max_ms']} ms"
        ),
    )
    row(
        "HTTP/2 streams given no flow-control credit",
        lambda r: (
            f"{r['stalled_h2_window']['dropped']}/{r['stalled_h2_window']['stalled']} "
            f"dropped, {r['stalled_h2_window']['rss_per_stalled_kib']:,} KiB RSS each"
        ),
    )
    row(
        "Faults survived: raising producers next to healthy streams",
        lambda r: (
            f"{r['faults']['raising']} raising, {r['faults']['healthy']} healthy: "
            f"{r['faults']['problems']} wrong outcomes"
        ),
    )
    row(
        "Hostile (data, event, id) inputs tried (HTTP/1.1 + HTTP/2)",
        lambda r: (
            f"{r['corpus']['http1']['tried'] + r['corpus']['http2']['tried']:,}: "
            f"{r['corpus']['http1']['refused'] + r['corpus']['http2']['refused']:,} refused by "
            f"send(), {r['corpus']['http1']['mismatches'] + r['corpus']['http2']['mismatches']} "
            "extra events or fields"
        ),
    )
    row(
        "SIGTERM, asgi_stream.hypercorn.run",
        lambda r: (
            f"{r['shutdown']['clean_ends']}/{r['shutdown']['streams']} clean ends, "
            f"on_close('shutdown') {r['shutdown']['on_close_shutdown']}, all ended in "
            f"{r['shutdown']['ended_within_s']} s, exit {r['shutdown']['exit_code']} in "
            f"{r['shutdown']['exit_s']} s"
        ),
    )
    row(
        "SIGTERM, plain hypercorn (graceful timeout 1 s)",
        lambda r: (
            f"{r['plain_hypercorn']['clean_ends']}/{r['plain_hypercorn']['streams']} "
            f"clean ends: cut after {r['plain_hypercorn']['cut_after_s']} s"
        ),
    )
    row("Data lost", lambda r: str(r["data_lost"]))
    lines = [
        "| check | " + " | ".join(f"{w} worker" for w in workers) + " |",
        "|---|" + "---|" * len(workers),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, asyncio only")
    parser.add_argument("--workers", default=None, help="comma-separated: asyncio,trio")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    workers = (args.workers or ("asyncio" if args.quick else "asyncio,trio")).split(",")
    raise_nofile(8_192)
    started = time.monotonic()
    results = []
    for worker in workers:
        print(f"measuring the {worker} worker...", file=sys.stderr, flush=True)
        results.append(anyio.run(measure, worker, args.quick, backend=worker))
    print(table(results))
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, hypercorn "
        f"{version('hypercorn')}, anyio {version('anyio')}, trio {version('trio')}, h2 "
        f"{version('h2')}; {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs; "
        f"{time.monotonic() - started:.0f} s"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    if any(r["data_lost"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
