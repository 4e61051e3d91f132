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


@pytest.mark.anyio
async def test_the_four_modes_example_serves_its_routes() -> None:
    """The four-modes app runs as written: a lifespan scope is passed over, the value-based
    route is fed from a thread, the automatic one from a generator."""
    from tests.peer import Peer

    (block,) = [b for b in BLOCKS if "def progress(" in b]
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README.md four modes", "exec"), namespace)
    app = namespace["app"]
    lifespan = Peer()
    lifespan.scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await app(lifespan.scope, lifespan.receive, lifespan.send)  # type: ignore[operator]
    for path, expected in [
        ("/reply", b"data: Streaming\n\ndata: made\n\ndata: boring.\n\n"),
        (
            "/progress",
            b"".join(b'event: progress\ndata: {"percent":%d}\n\n' % n for n in range(0, 101, 25)),
        ),
    ]:
        peer = Peer(path=path)
        await app(peer.scope, peer.receive, peer.send)  # type: ignore[operator]
        assert (peer.status, peer.body) == (200, expected), path
