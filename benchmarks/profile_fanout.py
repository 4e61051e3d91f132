#!/usr/bin/env python3
"""Where a fan-out server spends its time: py-spy samples of one ``e2e_server.py``
implementation while it publishes to K subscribers (the publishing phase only).

    python benchmarks/profile_fanout.py                       # the memory Channel, hypercorn
    python benchmarks/profile_fanout.py "hand-written loop" --server uvicorn --subscribers 1000

The subscribers are run.py's bare sockets (``e2e_sockets.open_streams``); once all are
connected, py-spy (``--nonblocking``, so the server is never paused) records while the server
publishes one event every ``--interval`` seconds. Printed: deliveries per server CPU-second
and the collector's share over that window (``/control/gc``), then the samples' self time by
package and by function, as a share and as microseconds of CPU per delivery.

On CPython 3.11 py-spy shows no frame for the garbage collector: a collection is counted in
the Python function whose allocation triggered it (under asyncio, mostly
``BaseEventLoop._call_soon``, which makes a ``Handle`` for every task it wakes; under uvloop,
the Python caller of its C ``call_soon``, e.g. ``_AsyncioParking._resume``). ``--freeze``
(``gc.freeze()`` once the subscribers are connected) shows how much of such a line was the
collector. Needs py-spy (``pip install py-spy``) and permission to read the server's memory
(same user, no restrictive ptrace policy).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e_sockets  # noqa: E402
from common import cpu_seconds, raise_nofile, use_library  # noqa: E402
from e2e_server import IMPLEMENTATIONS  # noqa: E402
from run import Server  # noqa: E402

# The package a frame's file belongs to (first match), for the totals.
PACKAGES = [
    ("asgi_stream/", "asgi_stream"),
    ("hypercorn/", "server (hypercorn)"),
    ("h11/", "server (h11)"),
    ("uvicorn/", "server (uvicorn, incl. uvloop/httptools C calls)"),
    ("asyncio/", "asyncio (incl. socket writes and the GC it triggers)"),
    ("anyio/", "anyio"),
    ("e2e_server", "benchmark app (e2e_server.py)"),
    ("json/", "json"),
    ("coredis/", "coredis"),
]
FRAME = re.compile(r"^(.*) \((.*?):\d+\)$")


def package_of(path: str) -> str:
    for needle, name in PACKAGES:
        if needle in path:
            return name
    return "other"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(found):
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def analyze(raw: Path, us_per_delivery: float, top: int) -> None:
    """Self time of the collapsed stacks (``function (file:line);... count`` lines)."""
    by_function: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        leaf = stack.rsplit(";", 1)[-1]
        found = FRAME.match(leaf)
        name, path = (found[1], found[2]) if found else (leaf, "")
        by_function[f"{name} ({path})"] += n
        by_package[package_of(path)] += n
    if not total:
        raise SystemExit("py-spy recorded no sample")
    print(f"\n{total} samples; self time (the sampled leaf frame), share and us per delivery")
    for title, counter, limit in (("package", by_package, 20), ("function", by_function, top)):
        print(f"\nby {title}:")
        for key, n in counter.most_common(limit):
            share = n / total
            print(f"  {100 * share:5.1f} %  {share * us_per_delivery:6.2f} us  {key}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("implementation", nargs="?", default="asgi_stream Channel")
    parser.add_argument("--server", choices=["hypercorn", "uvicorn"], default="hypercorn")
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing time recorded")
    parser.add_argument("--interval", type=float, default=0.6, help="between two events (s)")
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() before publishing")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw output here")
    parser.add_argument(
        "--library",
        type=Path,
        default=HERE.parent,
        help="the directory holding the asgi_stream package profiled (default: this checkout)",
    )
    args = parser.parse_args()
    if args.implementation not in IMPLEMENTATIONS:
        parser.error(f"implementation: one of {', '.join(IMPLEMENTATIONS)}")
    if "Redis" in args.implementation:
        parser.error("the Redis Channel needs a redis-server: use channels.py's")
    spy = py_spy()
    if not (args.library / "asgi_stream" / "__init__.py").exists():
        parser.error(f"--library: no asgi_stream package in {args.library}")
    use_library(str(args.library.resolve()))  # what the server imports (see channels.py)
    need = args.subscribers + 256
    raise_nofile(need)
    if args.freeze:
        os.environ["ASGI_STREAM_BENCH_GC_FREEZE"] = "1"  # read by e2e_server.py
    events = max(1, round(args.seconds / args.interval))
    with tempfile.TemporaryDirectory(prefix="asgi-stream-profile-") as tmp:
        raw = args.keep or Path(tmp) / "py-spy.txt"
        server = Server(args.implementation, need, Path(tmp), args.server)
        try:
            server.wait_ready()
            delivered = [0]

            def on_data(conn: e2e_sockets.Conn, data: bytes, now: float) -> None:
                delivered[0] += data.count(e2e_sockets.T_MARK)

            loop = e2e_sockets.open_streams(server.url, "/subscribe", args.subscribers, on_data)
            try:
                e2e_sockets.wait_for_subscribers(server.url, args.subscribers)
                time.sleep(1)
                # before py-spy starts: with --freeze this collects (a few hundred ms)
                e2e_sockets.control(server.url, "/control/gc?reset=1")
                recorder = subprocess.Popen(
                    [spy, "record", "--pid", str(server.pid), "--duration",
                     str(max(1, round(events * args.interval))), "--rate", "200",
                     "--format", "raw", "--nonblocking", "--output", str(raw)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
                time.sleep(0.5)  # py-spy attached
                delivered[0] = 0
                cpu0 = cpu_seconds(server.pid)
                e2e_sockets.control(
                    server.url, f"/control/publish?n={events}&interval={args.interval}"
                )
                expected = events * args.subscribers
                loop.run_until(
                    lambda: delivered[0] >= expected,
                    60 + events * args.interval * 3,
                    f"{delivered[0]} of {expected} deliveries",
                )
                cpu = cpu_seconds(server.pid) - cpu0
                gc_report = e2e_sockets.control(server.url, "/control/gc")
                _, problem = recorder.communicate(timeout=120)
            finally:
                loop.close()
        finally:
            server.stop()
        if recorder.returncode != 0:
            print(problem.decode(errors="replace")[-2000:], file=sys.stderr)
            return 1
        print(
            f"{args.implementation}, {args.server}, {args.subscribers:,} subscribers, "
            f"{events} events one every {args.interval} s"
            + (", gc.freeze() before publishing" if args.freeze else "")
        )
        print(
            f"{expected:,} deliveries, {expected / cpu:,.0f} per server CPU-second "
            f"({1e6 * cpu / expected:.1f} us each), GC {100 * gc_report['gc_s'] / cpu:.1f} % "
            f"of it ({gc_report['gc_full_collections']} full collections, longest "
            f"{1000 * gc_report['gc_max_pause_s']:.0f} ms)"
        )
        analyze(raw, 1e6 * cpu / expected, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
