"""CI keeps the benchmarks working: a tiny run of ``benchmarks/run.py --quick``.

Not a timed test: nothing here asserts a speed, only that every benchmark still runs end to end
and reports, sse-starlette included (the ``test`` extra installs it). The chart needs
matplotlib (the ``bench`` extra) and is checked where it is installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_and_prints_the_table(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, report
    lines = result.stdout.splitlines()
    header = next((line for line in lines if line.startswith("benchmark")), None)
    assert header is not None, report
    for column in ("case", "implementation", "median", "unit", "vs baseline"):
        assert column in header, report
    for group in ("1 encoder", "2 in-process", "3a throughput", "3b latency", "3c memory"):
        assert any(line.startswith(group) for line in lines), f"no {group} rows\n{report}"
    assert any(line.startswith("3d disconnect") for line in lines), report
    rows = [line for line in lines if line.startswith(("1 ", "2 ", "3"))]
    assert any("asgi_stream" in row for row in rows), report
    assert any("hand-written loop" in row for row in rows), report
    assert any("sse-starlette" in row for row in rows), report  # the peer (test extra)
    assert not any(" error " in row for row in rows), report
    markdown = (tmp_path / "results.md").read_text()
    assert "| benchmark |" in markdown and "## Machine" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "results.png").stat().st_size > 0
