"""The package keeps SPEC's "Shape": each module imports only from the layers below it (no
cycles, function-level imports included), uses the others through public names, and no class
grows past what a reader can hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "asgi_stream"

# Lowest first; a module may import only the modules before it. The numbers are SPEC's layers.
ORDER = [
    "wire",  # 1 wire format: pure functions, bytes out
    "parking",  # 2 producer side: the consumer's reusable wake-up,
    "frames",  #   the bounded frame queue,
    "lifecycle",  #   the end of a stream (close reason, on_close, closing what is owned),
    "sources",  #   one adapter per kind of source and the one item loop,
    "threads",  #   blocking sources in a thread of their own,
    "producer",  #   and the seam the driver uses
    "request",  # 3 driver: the request a stream answers,
    "driver",  #   and the one driver
    "stream",  # 4 Stream, the public facade
    "stores",  # 5 channels: where history lives (the interface, memory),
    "redis_store",  #   in Redis (the redis extra),
    "channels",  #   fan-out, history, resume (feed Streams; no ASGI)
    "middleware",  # 6 StreamMiddleware
    "quart",  # 7 integrations: none imports another
    "django",
    "starlette",
    "hypercorn",
    "uvicorn",
]
INTEGRATIONS = {"quart", "django", "starlette", "hypercorn", "uvicorn"}
MAX_CLASS_LINES = 250


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:  # from . import x
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.split(".")[0] == "asgi_stream":
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "asgi_stream" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER), "place new modules in ORDER (SPEC 'Shape')"


@pytest.mark.parametrize("module", ORDER)
def test_imports_only_from_layers_below(module: str) -> None:
    rank = ORDER.index(module)
    allowed = set(ORDER[:rank]) - INTEGRATIONS
    imported = _imports(PACKAGE / f"{module}.py")
    assert imported <= allowed, f"{module} imports {sorted(imported - allowed)} from above"


def test_no_cross_module_private_access() -> None:
    """ruff's SLF001 (``obj._name`` where ``obj`` is not ``self``/``cls``) finds nothing."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--select",
            "SLF001",
            "--output-format",
            "concise",
            str(PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_class_is_too_long() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                assert lines <= MAX_CLASS_LINES, f"{path.name}:{node.name} has {lines} lines"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The import check sees lazy and relative imports (a test that cannot fail is no test)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from .driver import drive\n"
        "def f():\n    from . import stream\n    import asgi_stream.middleware\n",
        encoding="utf-8",
    )
    assert _imports(sample) == {"driver", "stream", "middleware"}
