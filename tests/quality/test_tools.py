"""The package stays `mypy --strict` and `ruff` clean: checked by the same test run as CI's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_mypy_strict() -> None:
    result = run("mypy", "--strict", "asgi_stream")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("check", [("check",), ("format", "--check")])
def test_ruff(check: tuple[str, ...]) -> None:
    paths = [
        p
        for p in ("asgi_stream", "tests", "examples", "benchmarks", "docs/upstream")
        if (ROOT / p).is_dir()
    ]
    result = run("ruff", *check, *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_py_typed_is_shipped() -> None:
    assert (ROOT / "asgi_stream" / "py.typed").is_file()
