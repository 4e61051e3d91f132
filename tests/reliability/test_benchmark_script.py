"""``python benchmarks/reliability.py`` keeps working: a tiny run (``--quick``: asyncio, small
sizes) prints the figures table and reports no data lost. Asserts outcomes, not speeds."""

from __future__ import annotations

import subprocess
import sys

from tests.reliability.clients import ROOT


def test_the_reliability_benchmark_runs_and_prints_its_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reliability.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    report = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, report
    lines = result.stdout.splitlines()
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
