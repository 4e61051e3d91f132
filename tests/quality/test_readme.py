"""README stays true: its Python examples compile and its quick start is two real commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_examples_compile(index: int) -> None:
    compile(BLOCKS[index], f"README.md python block {index + 1}", "exec")


def test_quick_start_is_two_commands_that_exist() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in commands] == ["./run demo", "./run test"]
    run = (ROOT / "run").read_text()
    assert "demo)" in run and "test)" in run and (ROOT / "examples" / "demo.py").is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("./run test")  # CI runs the README's test command
