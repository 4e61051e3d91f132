"""The documentation site stays true: ``mkdocs build --strict`` passes (a broken link or
reference fails it, as the second test shows), every Python example on it compiles, and the
quick start's and raw ASGI page's apps run."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.peer import Peer

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))


def python_blocks(page: Path) -> list[str]:
    """A page's Python examples as the site shows them: a ``--8<-- "path"`` line (a snippet)
    stands for that file, relative to the repository."""

    def snippet(line: re.Match[str]) -> str:
        return (ROOT / line[1]).read_text(encoding="utf-8")

    text = re.sub(r'^--8<-- "([^"]+)"$', snippet, page.read_text(encoding="utf-8"), flags=re.M)
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


BLOCKS = [(page, index, block) for page in PAGES for index, block in enumerate(python_blocks(page))]


def mkdocs_build(root: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = mkdocs_build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("asgi_stream.Stream") > 3
    shown = {
        page.relative_to(tmp_path / "site"): html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        for page in (tmp_path / "site").rglob("*.html")
    }
    assert not [page for page, text in shown.items() if re.search(r"--8\s*<\s*--", text)]
    assert "def until_send_stops_returning" in shown[Path("upstream/index.html")]


@pytest.mark.slow
def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    for name in ("docs", "asgi_stream", "benchmarks"):
        shutil.copytree(ROOT / name, copy / name, symlinks=True)
    for name in ("mkdocs.yml", "CHANGELOG.md"):
        shutil.copy(ROOT / name, copy / name)
    page = copy / "docs" / "quickstart.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    done = mkdocs_build(copy, tmp_path / "site")
    assert done.returncode != 0 and "no-such-page.md" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("page", "index", "block"),
    BLOCKS,
    ids=[f"{page.relative_to(ROOT)}:{index + 1}" for page, index, _ in BLOCKS],
)
def test_python_examples_compile(page: Path, index: int, block: str) -> None:
    compile(block, f"{page.relative_to(ROOT)} python block {index + 1}", "exec")


def example(page: str, index: int = 0) -> dict[str, Any]:
    """Run one of a page's Python examples; what it defines."""
    blocks = python_blocks(ROOT / "docs" / page)
    namespace: dict[str, Any] = {"__name__": "example"}
    exec(compile(blocks[index], page, "exec"), namespace)
    return namespace


@pytest.mark.anyio
async def test_the_quick_start_streams_hello_world() -> None:
    app = example("quickstart.md")["app"]
    peer = Peer()
    await app(peer.scope, peer.receive, peer.send)
    assert peer.status == 200 and peer.body == b"data: hello\n\ndata: world\n\n"


@pytest.mark.anyio
async def test_the_raw_asgi_page_routes_and_answers_404() -> None:
    app = example("frameworks/raw-asgi.md")["app"]
    peer = Peer(path="/elsewhere")
    await app(peer.scope, peer.receive, peer.send)
    assert peer.status == 404 and peer.body == b"not found\n"


@pytest.mark.anyio
async def test_the_prometheus_collector_exports_the_counts() -> None:
    from asgi_stream import Channel, Stream, StreamMiddleware

    endpoint = example("observability.md")["metrics_endpoint"]
    async with Channel() as channel:

        async def inner(scope: Any, receive: Any, send: Any) -> Stream:
            return Stream(["a", "b"])

        app = StreamMiddleware(inner)
        peer = Peer()
        await app(peer.scope, peer.receive, peer.send)
        scrape = Peer()
        await endpoint(app, channel)(scrape.scope, scrape.receive, scrape.send)
    text = scrape.body.decode()
    assert 'asgi_stream_streams_ended_total{reason="complete"} 1.0' in text
    assert "asgi_stream_events_total 2.0" in text
    assert f"asgi_stream_bytes_total {float(len(peer.body))}" in text
    assert "asgi_stream_live_streams 0.0" in text
    assert "asgi_stream_channel_resets_total 0.0" in text
