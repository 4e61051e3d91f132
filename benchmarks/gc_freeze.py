"""Does ``gc.freeze()`` help a server that holds thousands of streams? Measured, not assumed.

    python benchmarks/gc_freeze.py [--subscribers 5000] [--rounds 3] [--server hypercorn]

The fan-out scenario of ``run.py`` (3f-3h: value-based subscribers on bare sockets, events
published paced and back to back), for asgi_stream and the hand-written loop, each on a
fresh server with and without ``gc.freeze()``. With it, the server calls ``gc.collect()`` and
``gc.freeze()`` once every subscriber is connected, just before publishing (outside the
measured window; ``ASGI_STREAM_BENCH_GC_FREEZE=1``, read by ``e2e_server.py``): the
long-lived objects of the open streams move to the permanent generation, which collections
no longer walk. Reported per variant: the share of server CPU spent in the collector, the
longest single collection, and deliveries per server CPU-second (medians over the rounds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import median, raise_nofile  # noqa: E402
from run import fanout_params, parse_args, run_client, servers  # noqa: E402

IMPLEMENTATIONS = ["hand-written loop", "asgi_stream"]
FREEZE = "ASGI_STREAM_BENCH_GC_FREEZE"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=["hypercorn", "uvicorn"], default="hypercorn")
    args = parser.parse_args()
    need = args.subscribers + 256
    if raise_nofile(need) < need:
        raise SystemExit(f"need {need} open files")
    # run.py's fan-out job, at its full sizes, for one number of subscribers
    full = parse_args(["--fanout-sizes", str(args.subscribers), "--settle", "1.0"])
    params = {**fanout_params(full, args.subscribers), "memory": False}
    timeout = 120 + args.subscribers / 20
    rows: dict[tuple[str, bool, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="asgi-stream-gc-") as logs:
        for r in range(args.rounds):
            for frozen in (r % 2 == 1, r % 2 == 0):  # alternate which goes first
                if frozen:
                    os.environ[FREEZE] = "1"
                else:
                    os.environ.pop(FREEZE, None)
                order = IMPLEMENTATIONS if r % 2 == 0 else IMPLEMENTATIONS[::-1]
                with servers(order, need, Path(logs), args.server) as started:
                    job = {
                        "scenario": "fanout",
                        "targets": [
                            {"implementation": n, "url": started[n].url, "pid": started[n].pid}
                            for n in order
                        ],
                        "params": params,
                        "timeout": timeout,
                        "settle": 1.0,
                        "nofile": need,
                        "tag": f"r{r}",
                    }
                    results, errors = run_client(job, timeout * 2 + 60, "e2e_sockets.py")
                if len(results) != len(order) or any("error" in res for res in results):
                    print(errors, file=sys.stderr)
                    return 1
                for res in results:
                    for variant in ("paced", "max"):
                        key = (res["implementation"], frozen, variant)
                        rows.setdefault(key, []).append(res[variant])
    print(
        f"{args.subscribers:,} value-based subscribers, {args.server}, medians of "
        f"{args.rounds} rounds"
    )
    print(
        f"{'implementation':<20}{'gc.freeze()':<13}{'publishing':<12}{'GC share':>10}"
        f"{'longest GC':>12}{'deliveries/CPU-s':>18}"
    )
    for (name, frozen, variant), samples in sorted(rows.items()):
        share = median([s["gc_share_pct"] for s in samples])
        pause = median([s["gc_max_pause_ms"] for s in samples])
        rate = median([s["deliveries_per_cpu_s"] for s in samples])
        print(
            f"{name:<20}{'yes' if frozen else 'no':<13}{variant:<12}{share:>9.1f}%"
            f"{pause:>10.1f} ms{rate:>18,.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
