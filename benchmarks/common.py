"""Shared pieces of the benchmarks: the events, a tiny SSE parser (to check that every
implementation sends the same events), statistics and machine information."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from typing import Any

# The payload every driver and end-to-end benchmark streams: a small JSON object per event.
ITEM_TEXT = "hello world"


def make_item(i: int) -> dict[str, Any]:
    return {"i": i, "msg": ITEM_TEXT, "ok": True}


def make_items(n: int) -> list[dict[str, Any]]:
    return [make_item(i) for i in range(n)]


# The encoder cases: keyword arguments of one send(data, event=, id=, retry=).
ENCODER_CASES: dict[str, dict[str, Any]] = {
    "short str": {"data": "hello world"},
    "multi-line str": {"data": "first line of the message\nsecond line\nthird line, the last one"},
    "dict as JSON": {
        "data": {"id": 1234, "user": "ada", "text": "hello there", "tags": ["a", "b"], "x": 0.5}
    },
    "id/event/retry": {"data": "tick", "event": "update", "id": "12345", "retry": 3000},
}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def parse_sse(raw: bytes) -> list[dict[str, str]]:
    """Events of an SSE body (comments dropped); ``data`` lines joined with LF."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in _LINE_BREAK.split(raw.decode("utf-8")):
        if not line:
            if data:
                fields["data"] = "\n".join(data)
            if fields:
                events.append(fields)
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


def normalized(events: list[dict[str, str]], *, json_data: bool) -> list[dict[str, Any]]:
    """Events with JSON data decoded (so that whitespace differences do not count)."""
    if not json_data:
        return [dict(e) for e in events]
    return [{**e, "data": json.loads(e["data"])} if "data" in e else dict(e) for e in events]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def use_library(directory: str) -> None:
    """Import ``asgi_stream`` from ``directory`` (the one that holds the package), in this
    process and in every process it starts from now on (``PYTHONPATH``).

    A script's own folder comes first on ``sys.path``, not the working directory, so without
    this a server would import whichever asgi_stream the environment installed: with an
    editable install of another checkout, that checkout's code, as it is at that moment."""
    sys.path.insert(0, directory)
    rest = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = directory + (os.pathsep + rest if rest else "")


def raise_nofile(needed: int) -> int:
    """Raise the soft limit of open files to ``needed`` if the hard limit allows; returns
    the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def vm_rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS`` of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds.

    From each thread's ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds), where the kernel
    has it: ``/proc/<pid>/stat`` counts in clock ticks (10 ms), and a fan-out window of a few
    hundred milliseconds measured in ticks was off by several per cent. (A thread that exits
    within a window would take its time with it; the servers' threads live as long as they
    do.) Falls back to ``/proc/<pid>/stat``."""
    if os.path.exists(f"/proc/{pid}/schedstat"):
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as schedstat:
                    total += int(schedstat.read().split()[0])
            except FileNotFoundError:
                continue  # the thread ended meanwhile
        return total / 1e9
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


PACKAGES = (
    "asgi-stream",
    "sse-starlette",
    "starlette",
    "fastapi",
    "hypercorn",
    "uvicorn",
    "uvloop",
    "httptools",
    "h11",
    "httpx",
    "httpcore",
    "anyio",
    "trio",
    "pydantic",
    "matplotlib",
)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable cores": usable,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "load average (start)": load,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "packages": {name: package_version(name) for name in PACKAGES},
    }
