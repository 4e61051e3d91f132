"""The benchmark scripts keep working: tiny runs (``--quick``) of ``benchmarks/run.py`` and
``benchmarks/reliability.py`` print their tables, end to end, and ``benchmarks/channels.py``
writes its results.

Not timed tests: nothing here asserts a speed. ``run.py`` reports every benchmark, sse-starlette
included (the ``test`` extra installs it); its chart needs matplotlib (the ``bench`` extra) and
is checked where it is installed. ``reliability.py`` (asyncio, small sizes) reports no data
lost.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run_quick(script: str, *args: str, timeout: float) -> tuple[list[str], str]:
    """Run ``benchmarks/<script> --quick ARGS``; its stdout lines and a failure report."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    report = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, report
    return result.stdout.splitlines(), report


def test_quick_benchmark_runs_and_prints_the_table(tmp_path: Path) -> None:
    lines, report = run_quick("run.py", "--out", str(tmp_path), timeout=150)
    header = next((line for line in lines if line.startswith("benchmark")), None)
    assert header is not None, report
    for column in ("case", "implementation", "median", "unit", "vs baseline"):
        assert column in header, report
    for group in ("1 encoder", "2 in-process", "3a throughput", "3b latency", "3c memory"):
        assert any(line.startswith(group) for line in lines), f"no {group} rows\n{report}"
    assert any(line.startswith("3d disconnect") for line in lines), report
    for group in (
        "3e awaiting source",
        "3f fan-out",
        "3g fan-out max",
        "3h fan-out GC",
        "3i idle memory",
        "3j first event",
    ):
        assert any(line.startswith(group) for line in lines), f"no {group} rows\n{report}"
    for server in ("hypercorn:", "uvicorn:"):  # every end-to-end scenario under both servers
        assert any(line.startswith("3") and server in line for line in lines), report
    rows = [line for line in lines if line.startswith(("1 ", "2 ", "3"))]
    assert any("asgi_stream" in row for row in rows), report
    assert any("hand-written loop" in row for row in rows), report
    assert any("sse-starlette" in row for row in rows), report  # the peer (test extra)
    assert not any(" error " in row for row in rows), report
    markdown = (tmp_path / "results.md").read_text()
    assert "| benchmark |" in markdown and "## Machine" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "results.png").stat().st_size > 0


def test_the_reliability_benchmark_runs_and_prints_its_table() -> None:
    lines, report = run_quick("reliability.py", timeout=110)
    assert lines[0] == "| check | asyncio worker |", report
    for label in (
        "Load held",
        "memory per open stream",
        "Disconnect storm",
        "Stalled clients",
        "Faults survived",
        "Hostile",
        "SIGTERM, asgi_stream",
        "Data lost",
    ):
        assert any(line.startswith("| ") and label in line for line in lines), label
    assert "| Data lost | 0 |" in lines, report


def test_the_channel_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    """``channels.py --quick``: the Channel's rows (fan-out, GC, replay; Redis connections
    where redis-server and coredis are installed) beside the three other fan-out patterns,
    in the printed table and in the files it writes."""
    lines, report = run_quick("channels.py", "--out", str(tmp_path), timeout=150)
    header = next((line for line in lines if line.startswith("benchmark")), None)
    assert header is not None and "Channel ÷ this" in header, report
    rows = [line for line in lines if line.startswith("C")]
    for group in ("C1 fan-out, paced", "C2 fan-out, back to back", "C3 fan-out, GC"):
        for name in (
            "asgi_stream Channel ",
            "hand-written loop",
            "sse-starlette",
            "value-based Streams (old README)",
        ):
            assert any(r.startswith(group) and name in r for r in rows), f"{group} {name}\n{report}"
    replay = [r for r in rows if r.startswith("C5 history replay")]
    assert any("asgi_stream Channel " in r and "p50" in r for r in replay), report
    for server in ("hypercorn:", "uvicorn:"):
        assert any(server in r for r in rows), report
    assert not any(" error " in row for row in rows), report
    if shutil.which("redis-server") and importlib.util.find_spec("coredis") is not None:
        connections = [r for r in rows if r.startswith("C4 Redis connections")]
        assert connections and all("connections" in r for r in connections), report
        assert any("asgi_stream Channel (Redis)" in r and "p50" in r for r in replay), report
    markdown = (tmp_path / "channels_results.md").read_text()
    assert "| benchmark |" in markdown and "asgi_stream Channel" in markdown
    assert "## Targets of the issue" in markdown and "## Machine" in markdown
    raw = json.loads((tmp_path / "channels_results.json").read_text())
    assert {g["title"] for g in raw["groups"]} >= {"C1 fan-out, paced", "C5 history replay"}
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "channels_results.png").stat().st_size > 0
