"""The hypercorn bug reports on the site (``docs/upstream.md``) stay true: each reproduction
shows its defect against the installed hypercorn, unpatched, and not once
``asgi_stream.hypercorn``'s workaround is applied. When a hypercorn release fixes one, the
first half fails: the report is done and the workaround can go."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPORTS = Path(__file__).resolve().parents[2] / "docs" / "upstream"
CASES = [
    ("hypercorn_h2_zero_window.py", "_fix_http2_backpressure"),
    ("hypercorn_trio_shielded_write.py", "_bound_trio_writes"),
    ("hypercorn_h2_unfinished_stream.py", "_reset_unfinished_http2_streams"),
    ("hypercorn_asyncio_cut_off.py", "_abort_cut_off_asyncio_connections"),
]


def reproduce(script: str, workaround: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a report's script as its reader would (``python script.py``), in a fresh process;
    with ``workaround``, that function of ``asgi_stream.hypercorn`` is applied first."""
    if workaround is None:
        command = [sys.executable, script]
    else:
        code = (
            f"from asgi_stream.hypercorn import {workaround}; {workaround}(); "
            f"import runpy; runpy.run_path({script!r}, run_name='__main__')"
        )
        command = [sys.executable, "-c", code]
    return subprocess.run(command, cwd=REPORTS, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", [script for script, _ in CASES])
def test_the_reproduction_shows_the_defect_in_unpatched_hypercorn(script: str) -> None:
    done = reproduce(script)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DEFECT" in done.stdout


@pytest.mark.parametrize(("script", "workaround"), CASES)
def test_the_workaround_removes_the_defect(script: str, workaround: str) -> None:
    done = reproduce(script, workaround)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DEFECT" not in done.stdout and "Traceback" not in done.stderr, done.stderr
