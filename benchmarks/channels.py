#!/usr/bin/env python3
"""What a ``Channel`` costs against the fan-out a user would write instead, and how fast it
replays a reconnecting client's history.

    python benchmarks/channels.py            # both servers, 3 rounds (about 9 minutes)
    python benchmarks/channels.py --quick    # tiny sizes, about 30 s (the smoke test)

1. Fan-out: one publisher to K subscribers (1,000 and 5,000) on one worker, under hypercorn
   and uvicorn: run.py's fan-out job (3f-3h: bare-socket subscribers in one epoll process,
   events published paced, then back to back), for ``Stream(channel.subscribe(topic))``
   with the memory store and with Redis, against the hand-written loop (a queue per
   subscriber, encoded per subscriber), sse-starlette's broadcasting pattern and the README's
   former pattern (a set of value-based Streams, ``stream.send(item)`` on each). With Redis,
   the worker's Redis connections are counted once every subscriber is connected.
2. History replay: a client reconnecting with a ``Last-Event-ID`` 1,000 events back: from
   sending the request to having received those 1,000 events, on both stores.

Everything runs interleaved: every round starts fresh servers for every implementation and
measures them in a rotated order; figures are medians over the rounds, and ratios are taken
within a round (measured moments apart), then the median.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_info, raise_nofile, use_library  # noqa: E402
from e2e_server import REDIS_URL_ENV  # noqa: E402
from e2e_sockets import redis_command  # noqa: E402
from run import (  # noqa: E402
    Group,
    Row,
    fanout_interval,
    fanout_params,
    fmt,
    from_json,
    note_client_share,
    record_sockets,
    rotated,
    run_client,
    servers,
    source_revision,
    to_json,
)
from run import parse_args as run_args  # noqa: E402

CHANNEL = "asgi_stream Channel"
CHANNEL_REDIS = "asgi_stream Channel (Redis)"
PEERS = ["hand-written loop", "sse-starlette", "asgi_stream"]
# How the table names e2e_server's implementations: "asgi_stream" there is the README's
# former fan-out pattern, not the library's recommended one any more.
LABELS = {"asgi_stream": "value-based Streams (old README)"}
COLORS = {
    CHANNEL: "#1f77b4",
    CHANNEL_REDIS: "#17becf",
    "hand-written loop": "#7f7f7f",
    "sse-starlette": "#d62728",
    "asgi_stream": "#9ecae1",
}
# The targets of the issue: the memory Channel's deliveries per server CPU-second against
# (a) the hand-written loop and (b) sse-starlette; its p99 against (a); the replay's time.
GOALS = {"hand-written loop": 1.25, "sse-starlette": 1.8}
REPLAY_GOAL_MS = 50.0

# Seconds between two implementations' fan-outs (each ends once its server let go of every
# subscriber and collected their garbage; no memory is measured here, which needed run.py's 1 s).
GAP = 0.5

FULL = {"rounds": 3, "sizes": "1000,5000", "replay_events": 1_000, "replay_repeats": 30}
QUICK = {"rounds": 1, "sizes": "20,50", "replay_events": 100, "replay_repeats": 3}


def label(name: str) -> str:
    return LABELS.get(name, name)


# -- redis-server --------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the benchmark's own: a free loopback port, a temporary directory, no
    persistence (``--save ""``, no AOF); killed at the end."""

    def __init__(self, executable: str) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="asgi-stream-bench-redis-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory.name,
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                if redis_command(self.port, "PING") == b"PONG":
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        self.version = redis_command(self.port, "INFO", "server").decode()
        self.version = next(
            (line.split(":", 1)[1].strip() for line in self.version.splitlines()
             if line.startswith("redis_version:")),
            "unknown",
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.directory.cleanup()


def find_redis() -> tuple[str | None, str]:
    """The redis-server executable, or ``None`` and why the Redis variant is skipped."""
    if importlib.util.find_spec("coredis") is None:
        return None, "not installed: coredis (the redis extra)"
    executable = shutil.which(os.environ.get("REDIS_SERVER", "redis-server"))
    if executable is None:
        return None, "not installed: redis-server"
    return executable, ""


# -- measuring -----------------------------------------------------------------------------


def make_groups() -> dict[str, Group]:
    """The result groups; ``record_sockets`` (run.py) fills the first three by key."""
    return {
        "fanout": Group("C1 fan-out, paced", CHANNEL, None),
        "fanout_max": Group("C2 fan-out, back to back", CHANNEL, None),
        "fanout_gc": Group("C3 fan-out, GC", CHANNEL, None),
        "redis": Group("C4 Redis connections", CHANNEL_REDIS, None),
        "replay": Group("C5 history replay", CHANNEL, None),
    }


def record_replay(
    group: Group, kind: str, events: int, name: str, res: dict[str, Any] | None
) -> None:
    fields = [
        ("p50", "ms", "p50_ms"),
        ("p90", "ms", "p90_ms"),
        ("server CPU per replay", "ms CPU", "server_cpu_ms"),
    ]
    for what, unit, key in fields:
        row = group.row(f"{kind}: {events:,} events back, {what}", name, unit, False)
        if res is None:
            continue
        if "error" in res:
            row.error = str(res["error"])
        else:
            row.values.append(float(res[key]))


def record_less_gc(
    group: Group, kind: str, params: dict[str, Any], name: str, res: dict[str, Any] | None
) -> None:
    """Deliveries per server CPU-second once the collector's time is taken out: at 5,000
    subscribers a full collection takes a few hundred milliseconds, and whether one falls in a
    window of a few seconds moves the figure by 10 % or more; without it, what is left is
    the cost of each delivery (the collector's share is in the GC rows)."""
    k = params["subscribers"]
    interval = params["variants"][0]["interval"]
    cases = [
        (f"{kind}: {k:,} subs, 1 per {interval:g} s, server CPU less GC", "paced"),
        (f"{kind}: {k:,} subs, back to back, server CPU less GC", "max"),
    ]
    for case, variant in cases:
        row = group.row(case, name, "deliveries/CPU-s", True)
        if res is None:
            continue
        if "error" in res:
            row.error = str(res["error"])
        else:
            figures = res[variant]
            share = min(figures["gc_share_pct"], 99.0) / 100
            row.values.append(figures["deliveries_per_cpu_s"] / (1 - share))


def record_redis(group: Group, kind: str, size: int, res: dict[str, Any] | None) -> None:
    for what, key in (
        ("the worker's (/proc)", "redis_connections"),
        ("CLIENT LIST", "redis_clients"),
    ):
        row = group.row(f"{kind}: {size:,} subs, {what}", CHANNEL_REDIS, "connections", False)
        if res is None:
            continue
        if "error" in res:
            row.error = str(res["error"])
        elif key in res:
            row.values.append(float(res[key]))


def bench(args: argparse.Namespace) -> tuple[list[Group], dict[str, str]]:
    """Every round: fresh servers of every implementation under each server, the fan-out at
    each size (largest first, as in run.py), then the replay on the channel servers."""
    executable, why_not = (None, "--no-redis") if args.no_redis else find_redis()
    redis: RedisServer | None = RedisServer(executable) if executable else None
    extra: dict[str, str] = {}
    try:
        if redis is not None:
            os.environ[REDIS_URL_ENV] = redis.url  # inherited by e2e_server.py
            extra["redis-server"] = f"{redis.version} (no persistence, loopback)"
        else:
            extra["redis-server"] = f"skipped: {why_not}"
        return run_rounds(args, redis, why_not), extra
    finally:
        if redis is not None:
            redis.stop()


def run_rounds(args: argparse.Namespace, redis: RedisServer | None, why_not: str) -> list[Group]:
    channels = [CHANNEL] + ([CHANNEL_REDIS] if redis is not None else [])
    names = channels + PEERS
    groups = make_groups()
    need = max(args.sizes) + 256
    if raise_nofile(need) < need:
        raise SystemExit(f"need {need} open files, the hard limit allows fewer")
    # run.py's fan-out job at its own full (or quick) sizes, for our numbers of subscribers
    base = run_args(
        (["--quick"] if args.quick else [])
        + ["--fanout-sizes", ",".join(map(str, args.sizes)), "--out", tempfile.gettempdir()]
    )
    sizes = sorted(args.sizes, reverse=True)
    params = {size: {**fanout_params(base, size), "memory": False} for size in sizes}
    # the table's order: server, then size ascending; every implementation has its rows
    # (the Redis Channel's rows too: "skipped" and why, when it does not run)
    for kind in args.servers:
        for size in sorted(sizes):
            for name in [CHANNEL, CHANNEL_REDIS, *PEERS]:
                record_sockets(groups, "fanout", params[size], name, {}, kind, base)
                record_less_gc(groups["fanout_gc"], kind, params[size], name, None)
            record_redis(groups["redis"], kind, size, None)
        for name in (CHANNEL, CHANNEL_REDIS):
            record_replay(groups["replay"], kind, args.replay_events, name, None)
    if redis is None:
        for group in groups.values():
            for row in group.rows.values():
                if row.implementation == CHANNEL_REDIS:
                    row.error = why_not
    shares: dict[str, float] = {}
    logs = tempfile.TemporaryDirectory(prefix="asgi-stream-channels-logs-")
    try:
        for r in range(args.rounds):
            order = rotated(names, r)
            for kind in args.servers:
                with servers(order, need, Path(logs.name), kind) as started:
                    targets = []
                    for name in order:
                        target: dict[str, Any] = {
                            "implementation": name,
                            "url": started[name].url,
                            "pid": started[name].pid,
                        }
                        if name == CHANNEL_REDIS and redis is not None:
                            target["redis_port"] = redis.port
                        targets.append(target)
                    for size in sizes:
                        interval = fanout_interval(base, size)
                        deliveries = size * (base.fanout_events + base.fanout_max_events)
                        per_target = (
                            60 + size / 40 + base.fanout_events * interval * 3 + deliveries / 3000
                        )
                        results = job(
                            "fanout", targets, params[size], per_target, GAP, need, r, kind
                        )
                        for name in order:
                            res = results[name]
                            record_sockets(groups, "fanout", params[size], name, res, kind, base)
                            record_less_gc(groups["fanout_gc"], kind, params[size], name, res)
                            note_client_share(shares, "fanout", res)
                            if name == CHANNEL_REDIS:
                                record_redis(groups["redis"], kind, size, res)
                    replay_params = {
                        "topic": f"replay-{r}-{kind}",
                        "events": args.replay_events,
                        "repeats": args.replay_repeats,
                        "warm": 3,
                    }
                    replay_targets = [t for t in targets if t["implementation"] in channels]
                    results = job(
                        "replay",
                        replay_targets,
                        replay_params,
                        30 + args.replay_repeats,
                        GAP,
                        need,
                        r,
                        kind,
                    )
                    for name in channels:
                        record_replay(
                            groups["replay"], kind, args.replay_events, name, results[name]
                        )
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        logs.cleanup()
    describe(groups, args, base, shares)
    return list(groups.values())


def job(
    scenario: str,
    targets: list[dict[str, Any]],
    params: dict[str, Any],
    per_target: float,
    settle: float,
    nofile: int,
    round_index: int,
    kind: str,
) -> dict[str, dict[str, Any]]:
    """One ``e2e_sockets.py`` job; each target's result (an ``error`` if it gave none)."""
    t0 = time.monotonic()
    results, errors = run_client(
        {
            "scenario": scenario,
            "targets": targets,
            "params": params,
            "timeout": per_target,
            "settle": settle,
            "nofile": nofile,
            "tag": f"r{round_index}",
        },
        per_target * len(targets) + 60,
        "e2e_sockets.py",
    )
    size = f" {params['subscribers']:,}" if "subscribers" in params else ""
    print(
        f"    {kind} {scenario}{size}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True
    )
    by_name = {res["implementation"]: res for res in results}
    missing = {"error": errors.splitlines()[-1] if errors else "no result"}
    if errors and (len(by_name) < len(targets) or any("error" in r for r in results)):
        print(errors, file=sys.stderr)
    return {t["implementation"]: by_name.get(t["implementation"], missing) for t in targets}


def describe(
    groups: dict[str, Group],
    args: argparse.Namespace,
    base: argparse.Namespace,
    shares: dict[str, float],
) -> None:
    servers_text = " and ".join(
        {"hypercorn": "hypercorn (asyncio)", "uvicorn": "uvicorn (uvloop, httptools)"}[k]
        for k in args.servers
    )
    groups["fanout"].notes.append(
        "K subscribers on bare sockets (one epoll process); once all got their first event, "
        f"{base.fanout_events} events published one every {base.fanout_interval_per_1k} s "
        "per 1,000 subscribers, each carrying its creation time: deliveries per server "
        "CPU-second, p50/p99 from creation to arrival (run.py's 3f). A channel subscriber's "
        "first event is the channel's reset event (a Last-Event-ID it never issued, on a "
        "topic of its own per batch of subscribers): nothing an earlier run published "
        "reaches it."
    )
    groups["fanout_max"].notes.append(
        f"the same subscribers, {base.fanout_max_events} events published back to back "
        "(run.py's 3g): deliveries/s until the last arrived, and per server CPU-second."
    )
    groups["fanout_gc"].notes.append(
        "time in the server's garbage collector while publishing, as a share of its CPU "
        "time, and the longest collection (run.py's 3h); and deliveries per server "
        "CPU-second with that time taken out (whether a full collection of a few hundred ms "
        "falls into a window of a few seconds moves the figures above by 10 % or more)."
    )
    groups["redis"].notes.append(
        "once every subscriber is connected: the worker process's established TCP "
        "connections to the redis-server (its socket inodes in /proc/<pid>/net/tcp), and "
        "the redis-server's CLIENT LIST less the connection asking."
    )
    groups["replay"].notes.append(
        f"{args.replay_events + 1:,} events published to a topic; then "
        f"{args.replay_repeats} reconnections one at a time (after 3 not counted), each on a "
        "new connection (not timed) with the first event's id as Last-Event-ID: from sending "
        f"the request to having received the {args.replay_events:,} events after it "
        "(checked: resumed, no reset event, the last one last); the server's CPU time per "
        "replay (schedstat, averaged over the repeats)."
    )
    for key, share in shares.items():
        groups[key].notes.append(
            f"The client process used at most {share:.0%} of a core while measuring."
        )
    for group in groups.values():
        group.notes.append(f"Server: {servers_text}, one worker; medians of {args.rounds} rounds.")


# -- report --------------------------------------------------------------------------------


def versus(group: Group, row: Row, channel: str) -> str:
    """``channel``'s figure divided by this row's (same case, paired by round)."""
    if row.implementation == channel:
        return ""
    mine = group.rows.get((row.case, channel))
    if mine is None or mine.error is not None:
        return ""
    ratio = group.ratio(mine, row.implementation)
    return "" if ratio is None else f"{ratio:.2f}x"


HEADER = ["benchmark", "case", "implementation", "median", "unit", "Channel ÷ this",
          "Channel (Redis) ÷ this"]  # fmt: skip


def table_rows(groups: list[Group]) -> list[list[str]]:
    rows: list[list[str]] = []
    for group in groups:
        for row in group.rows.values():
            if row.error is not None:
                skipped = "not installed" in row.error or row.error == "--no-redis"
                value, unit = ("skipped" if skipped else "error"), row.error[:60]
            elif not row.values:
                value, unit = "n/a", row.unit
            else:
                value, unit = fmt(row.value, row.unit), row.unit
            rows.append(
                [
                    group.title,
                    row.case,
                    label(row.implementation),
                    value,
                    unit,
                    versus(group, row, CHANNEL),
                    versus(group, row, CHANNEL_REDIS),
                ]
            )
    return rows


def table_lines(groups: list[Group], markdown: bool) -> list[str]:
    rows = table_rows(groups)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        return lines + ["| " + " | ".join(cells) + " |" for cells in rows]
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in (3, 5, 6) else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(HEADER), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def target_lines(groups: list[Group]) -> list[str]:
    """The issue's targets, each with the measured figure and whether it holds."""
    by_title = {g.title[:2]: g for g in groups}
    lines: list[str] = []
    for key in ("C1", "C2"):
        group = by_title.get(key)
        if group is None:
            continue
        for row in group.rows.values():
            if row.implementation != CHANNEL or row.unit != "deliveries/CPU-s":
                continue
            for peer, goal in GOALS.items():
                other = group.rows.get((row.case, peer))
                ratio = None if other is None or not row.values else group.ratio(row, peer)
                if ratio is None:
                    lines.append(f"- {row.case}: Channel vs {peer}: not measured")
                    continue
                verdict = "holds" if ratio >= goal else "DOES NOT HOLD"
                lines.append(
                    f"- {row.case}: Channel vs {peer}: {ratio:.2f}x (goal >= {goal:g}x) {verdict}"
                )
    group = by_title.get("C1")
    if group is not None:
        for row in group.rows.values():
            if row.implementation != CHANNEL or not row.case.endswith("p99"):
                continue
            ratio = group.ratio(row, "hand-written loop") if row.values else None
            if ratio is None:
                lines.append(f"- {row.case}: Channel vs hand-written loop: not measured")
                continue
            verdict = "holds" if ratio <= 1.0 else "DOES NOT HOLD"
            lines.append(
                f"- {row.case}: Channel p99 {row.value:.2f} ms vs hand-written loop: "
                f"{ratio:.2f}x (goal <= 1x) {verdict}"
            )
    group = by_title.get("C5")
    if group is not None:
        for row in group.rows.values():
            if not row.case.endswith("p50") or not row.values:
                continue
            verdict = "holds" if row.value < REPLAY_GOAL_MS else "DOES NOT HOLD"
            lines.append(
                f"- replay ({row.case}), {label(row.implementation)}: {row.value:.1f} ms "
                f"(goal < {REPLAY_GOAL_MS:g} ms) {verdict}"
            )
    return lines


def chart(groups: list[Group], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    by_title = {g.title[:2]: g for g in groups}
    # (group, panel title, which rows: a test on the row)
    panels: list[tuple[str, str, Callable[[Row], bool]]] = [
        ("C1", "Paced: deliveries per server CPU-s", lambda r: r.unit.startswith("del")),
        ("C2", "Back to back: deliveries per server CPU-s", lambda r: r.unit.endswith("CPU-s")),
        ("C3", "Paced: deliveries per server CPU-s less GC",
         lambda r: r.case.endswith("less GC") and "1 per" in r.case),
        ("C1", "Paced: p99 latency (ms, lower is better)", lambda r: r.case.endswith("p99")),
        ("C3", "Paced: GC share of server CPU (%, lower is better)",
         lambda r: r.unit == "% of CPU" and "1 per" in r.case),
        ("C5", "History replay: p50 (ms, lower is better)", lambda r: r.case.endswith("p50")),
    ]  # fmt: skip
    panels = [p for p in panels if p[0] in by_title]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 5.6 * rows), squeeze=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax, (key, title, wanted) in zip(axes.flat, panels, strict=False):
        group = by_title[key]
        shown = [row for row in group.rows.values() if wanted(row)]
        cases = list(dict.fromkeys(row.case for row in shown))
        impls = list(dict.fromkeys(row.implementation for row in shown))
        width = 0.8 / max(1, len(impls))
        for i, impl in enumerate(impls):
            xs, heights, notes = [], [], []
            for j, case in enumerate(cases):
                row = group.rows.get((case, impl))
                if row is None or not row.values or row.error:
                    continue
                xs.append(j + (i - (len(impls) - 1) / 2) * width)
                heights.append(row.value)
                notes.append(versus(group, row, CHANNEL))
            bars = ax.bar(xs, heights, width * 0.95, label=label(impl), color=COLORS.get(impl))
            for bar, note in zip(bars, notes, strict=True):
                ax.annotate(
                    note,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    rotation=90,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([c.split(", ")[0] for c in cases], fontsize=7.5, rotation=15)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.yaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(
                lambda v, _p: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}"
            )
        )
        ax.margins(y=0.18)
        ax.grid(axis="y", alpha=0.3)
    # one legend for every panel: the first panel shows every implementation
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(
        "asgi_stream Channel vs other fan-out patterns (medians of interleaved rounds; "
        "labels: the memory Channel's figure ÷ this one's)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(groups: list[Group], info: dict[str, Any], command: str, out: Path) -> None:
    """Print the table and the targets; write channels_results.md, .json and .png."""
    lines = table_lines(groups, markdown=False)
    targets = target_lines(groups)
    print("\n" + "\n".join(lines) + "\n")
    for group in groups:
        print(f"{group.title}: " + " ".join(group.notes))
    if targets:
        print("\nTargets of the issue:\n" + "\n".join(targets))
    out.mkdir(parents=True, exist_ok=True)
    chart_name: str | None = "channels_results.png"
    try:
        chart(groups, out / "channels_results.png")
    except ImportError:
        chart_name = None
        print("matplotlib is not installed: no chart", file=sys.stderr)
    md = [
        "# Channel benchmark",
        "",
        f"Command: `{command}`",
        "",
        "Medians over interleaved rounds (fresh servers every round, implementations in a "
        "rotated order). `Channel ÷ this` is the memory Channel's figure divided by this "
        "row's, in the same case and round, median over the rounds (for deliveries per "
        "CPU-second higher is better for the Channel; for `ms` and connections, lower); "
        "`Channel (Redis) ÷ this` the same for the Redis Channel. "
        '"value-based Streams (old README)" is the README\'s former fan-out pattern (a '
        "`set[Stream]`, `stream.send(item)` on each: encoded per subscriber).",
        "",
        *table_lines(groups, markdown=True),
    ]
    if targets:
        md += ["", "## Targets of the issue", "", *targets]
    md += ["", "## What each benchmark measures", ""]
    md += [f"- **{g.title}**: " + " ".join(g.notes) for g in groups]
    md += ["", "## Machine", ""]
    for key, value in info.items():
        if key == "packages":
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v)
        md.append(f"- {key}: {value}")
    if chart_name:
        md += ["", f"![channel benchmark chart]({chart_name})"]
    (out / "channels_results.md").write_text("\n".join(md) + "\n")
    raw = to_json(groups, info, command)
    (out / "channels_results.json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"\nwrote {out / 'channels_results.md'}", file=sys.stderr)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--servers", default="hypercorn,uvicorn", help="comma-separated: hypercorn,uvicorn"
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis Channel")
    parser.add_argument(
        "--library",
        type=Path,
        default=HERE.parent,
        help="the directory holding the asgi_stream package measured (default: this "
        "checkout, whatever the environment installed)",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite the table and the files from a channels_results.json",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where channels_results.md/.json/.png go (default: benchmarks/, or a temporary "
        "directory with --quick)",
    )
    for name, value in FULL.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=type(value),
            default=None,
            help=f"default {value} ({QUICK[name]} with --quick)",
        )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.servers = [part.strip() for part in args.servers.split(",") if part.strip()]
    if not args.servers or set(args.servers) - {"hypercorn", "uvicorn"}:
        parser.error("--servers: hypercorn and/or uvicorn")
    try:
        args.sizes = sorted({int(k) for k in str(args.sizes).split(",") if k.strip()})
    except ValueError:
        parser.error("--sizes: comma-separated numbers of subscribers")
    if not args.sizes or args.rounds < 1 or args.replay_repeats < 1:
        parser.error("--sizes, --rounds and --replay-repeats: at least one")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="asgi-stream-channels-")) if args.quick else HERE
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        raw = json.loads(args.replot.read_text())
        report(from_json(raw), raw["machine"], raw["command"], args.out)
        return 0
    command = shlex.join(
        ["python", "benchmarks/channels.py", *(sys.argv[1:] if argv is None else argv)]
    )
    if not (args.library / "asgi_stream" / "__init__.py").exists():
        raise SystemExit(f"--library: no asgi_stream package in {args.library}")
    use_library(str(args.library.resolve()))  # the servers too
    info = machine_info()
    info["asgi_stream source"] = source_revision()

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers stop

    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    groups, extra = bench(args)
    info.update(extra)
    with contextlib.suppress(OSError):
        info["load average (end)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    info["total run time"] = f"{time.monotonic() - started:.0f} s"
    report(groups, info, command, args.out)
    failed = [
        row
        for group in groups
        for row in group.rows.values()
        if row.error and "not installed" not in row.error and row.error != "--no-redis"
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
