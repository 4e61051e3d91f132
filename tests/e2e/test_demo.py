"""The demo (examples/demo.py) under a real hypercorn, read by httpx and httpx-sse.

Its app is served in process on the current backend (asyncio and trio) with short timings;
the script itself is run as a subprocess once, to check that Ctrl-C ends a live stream cleanly.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.streams.text import TextReceiveStream
from httpx_sse import aconnect_sse

from examples.demo import INJECTION, REPLY, REPLY_TOKENS, RETRY_MS, Settings, create_app
from tests.conftest import serve

pytestmark = pytest.mark.anyio

FAST = Settings(clock_every=50, counter_every=5, counter_batch=4, token_delay=(0, 1))
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


async def test_page_has_an_event_source_per_stream() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.fail_after(5):
            page = await client.get("/")
            head = await client.head("/")
            missing = await client.get("/nope")
            post = await client.post("/clock")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    for path in ("/clock", "/counter", "/reply"):
        assert f'new EventSource("{path}")' in page.text
    assert 'addEventListener("tick"' in page.text
    assert 'addEventListener("done"' in page.text
    assert "<script src" not in page.text and '<link rel="stylesheet"' not in page.text
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == page.headers["content-length"]
    assert missing.status_code == 404
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_clock_sends_named_ticks() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            async with aconnect_sse(client, "GET", url + "/clock") as source:
                assert source.response.headers["content-type"].startswith("text/event-stream")
                ticks = []
                async for sse in source.aiter_sse():
                    ticks.append(sse)
                    if len(ticks) == 2:
                        break
    for tick in ticks:
        assert tick.event == "tick"
        data = json.loads(tick.data)
        assert re.fullmatch(r"\d\d:\d\d:\d\d", data["time"])
        assert data["streams"] == 1  # StreamMiddleware.active: this stream


async def test_counter_ends_after_a_batch_and_resumes_from_last_event_id() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            async with aconnect_sse(client, "GET", url + "/counter") as source:
                first = [sse async for sse in source.aiter_sse()]  # ends: the server closed it
            headers = {"Last-Event-ID": first[-1].id}
            async with aconnect_sse(client, "GET", url + "/counter", headers=headers) as source:
                resumed = [sse async for sse in source.aiter_sse()]
    assert first[0].retry == RETRY_MS and first[0].data == ""  # the retry frame comes first
    events = first[1:]
    assert [sse.data for sse in events] == ["1", "2", "3", "4"]
    assert [sse.id for sse in events] == ["1", "2", "3", "4"]
    assert [sse.id for sse in resumed[1:]] == ["5", "6", "7", "8"]


async def test_reply_streams_every_token_intact_then_done() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(10):
            async with aconnect_sse(client, "GET", url + "/reply") as source:
                events = [sse async for sse in source.aiter_sse()]
    *tokens, done = events
    assert all(sse.event == "message" for sse in tokens)
    assert [sse.data for sse in tokens] == list(REPLY_TOKENS)
    assert "".join(sse.data for sse in tokens) == REPLY
    assert INJECTION in [sse.data for sse in tokens]  # newlines could not forge an event
    assert done.event == "done"
    assert json.loads(done.data)["tokens"] == len(REPLY_TOKENS)


async def test_the_script_serves_and_ctrl_c_ends_streams_cleanly() -> None:
    """``python examples/demo.py --port 0``: prints its URL, streams, and on SIGINT ends the
    open stream with a complete body (no truncated chunked response) and exits 0."""
    process = await anyio.open_process(
        [sys.executable, str(DEMO), "--port", "0"], stderr=subprocess.STDOUT
    )
    output = ""
    try:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        with anyio.fail_after(15):
            while not (found := re.search(r"http://127\.0\.0\.1:\d+/", output)):
                output += await lines.receive()
            url = found.group(0)
            async with (
                httpx.AsyncClient() as client,
                aconnect_sse(client, "GET", url + "clock") as source,
            ):
                events = source.aiter_sse()
                assert (await anext(events)).event == "tick"
                process.send_signal(signal.SIGINT)
                rest = [sse async for sse in events]  # ends without a protocol error
            assert all(sse.event == "tick" for sse in rest)
            async for chunk in lines:
                output += chunk
            assert await process.wait() == 0, output
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
    assert "/clock closed: shutdown" in output
    assert "Traceback" not in output
