"""The demo (examples/demo.py) under a real hypercorn, read by httpx and httpx-sse.

Its app is served in process on the current backend (asyncio and trio) with short timings;
the script itself is run as a subprocess, on the same backend, to check that Ctrl-C ends live
streams cleanly. (tests/browser/ reads the same app with a real browser's EventSource.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sniffio
from anyio.streams.text import TextReceiveStream
from httpx_sse import ServerSentEvent, aconnect_sse

from examples.demo import (
    HEADLINES,
    INJECTION,
    REPLY,
    REPLY_TOKENS,
    RETRY_MS,
    Settings,
    create_app,
)
from tests.conftest import serve
from tests.demo.observed import Observed
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

FAST = Settings(
    clock_every=50,
    counter_every=5,
    counter_batch=4,
    token_delay=(0, 1),
    ticker_every=5,
    news_every=3,
    seed=6,
)
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


async def first_events(client: httpx.AsyncClient, url: str, count: int) -> list[ServerSentEvent]:
    """The first ``count`` events of the stream at ``url``; then the client leaves."""
    events = []
    async with aconnect_sse(client, "GET", url) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            events.append(sse)
            if len(events) == count:
                break
    return events


async def until_closed(demo: Observed, *expected: tuple[str, str]) -> None:
    """Wait until each ``(path, reason)`` of ``expected`` was recorded."""
    while not set(expected) <= set(demo.closes.items):
        await demo.closes.wait(len(demo.closes) + 1)


async def test_page_has_an_event_source_per_stream() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.fail_after(5):
            page = await client.get("/")
            head = await client.head("/")
            missing = await client.get("/nope")
            post = await client.post("/clock")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    for path in ("/clock", "/counter", "/reply", "/proxy"):
        assert f'new EventSource("{path}")' in page.text
    for name in ("tick", "resume", "done", "quote", "news"):
        assert f'addEventListener("{name}"' in page.text
    assert "<script src" not in page.text and '<link rel="stylesheet"' not in page.text
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == page.headers["content-length"]
    assert missing.status_code == 404
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_clock_sends_named_ticks() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            ticks = await first_events(client, url + "/clock", 2)
    for tick in ticks:
        assert tick.event == "tick"
        data = json.loads(tick.data)
        assert re.fullmatch(r"\d\d:\d\d:\d\d", data["time"])
        assert re.fullmatch(r"\w{3} \d\d \w{3} \d{4}", data["date"])
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
    assert first[1].event == "resume"
    assert json.loads(first[1].data) == {"last_event_id": None, "next": 1, "retry": RETRY_MS}
    events = first[2:]
    assert [sse.data for sse in events] == ["1", "2", "3", "4"]
    assert [sse.id for sse in events] == ["1", "2", "3", "4"]
    assert resumed[1].event == "resume"
    assert json.loads(resumed[1].data) == {"last_event_id": "4", "next": 5, "retry": RETRY_MS}
    assert [sse.id for sse in resumed[2:]] == ["5", "6", "7", "8"]


async def test_counter_retry_is_a_setting() -> None:
    async with serve(create_app(Settings(retry=250))) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            retry, resume = await first_events(client, url + "/counter", 2)
    assert retry.retry == 250
    assert json.loads(resume.data)["retry"] == 250


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


async def test_ticker_sends_named_quotes_and_two_line_news() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            events = await first_events(client, url + "/upstream/ticker", 9)
    assert [sse.event for sse in events] == ["quote", "quote", "news"] * 3
    quotes = [json.loads(sse.data) for sse in events if sse.event == "quote"]
    assert [quote["n"] for quote in quotes] == [1, 2, 4, 5, 7, 8]
    assert all(quote["symbol"] == "ASGI" and quote["price"] > 0 for quote in quotes)
    news = [sse.data for sse in events if sse.event == "news"]
    assert news == ["\n".join(headline) for headline in HEADLINES[:3]]  # two lines each


async def test_proxy_passes_the_upstream_through_unchanged() -> None:
    """With a fixed seed every ticker stream has the same bytes: those read through /proxy
    equal those read from the upstream directly, headers included."""
    async with serve(create_app(FAST)) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            direct = await read_prefix(client, url + "/upstream/ticker", 600)
            proxied = await read_prefix(client, url + "/proxy", 600)
    assert proxied == direct
    assert proxied[1].startswith(b"event: quote\ndata: {")


async def read_prefix(
    client: httpx.AsyncClient, url: str, size: int
) -> tuple[dict[str, str], bytes]:
    """The relevant headers and the first ``size`` bytes of the body of ``url``, raw."""
    body = b""
    async with client.stream("GET", url) as response:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) >= size:
                break
    headers = {key: response.headers[key] for key in ("content-type", "cache-control")}
    return headers, body[:size]


async def test_leaving_the_proxy_closes_the_upstream() -> None:
    demo = Observed(FAST)
    async with serve(demo.app) as url, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            events = await first_events(client, url + "/proxy", 3)
            await until_closed(demo, ("/proxy", "disconnect"), ("/upstream/ticker", "disconnect"))
            assert demo.app.active == 0
    assert [sse.event for sse in events] == ["quote", "quote", "news"]


async def test_the_script_serves_and_ctrl_c_ends_streams_cleanly() -> None:
    """``python examples/demo.py --port 0``: prints its URL, streams, and on SIGINT ends the
    open streams (a proxied one included) with a complete body (no truncated chunked
    response) and exits 0, at once rather than after hypercorn's graceful timeout."""
    backend = sniffio.current_async_library()
    process = await anyio.open_process(
        [sys.executable, str(DEMO), "--port", "0", "--backend", backend],
        stderr=subprocess.STDOUT,
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
                aconnect_sse(client, "GET", url + "clock") as clock,
                aconnect_sse(client, "GET", url + "proxy") as proxy,
            ):
                ticks, quotes = clock.aiter_sse(), proxy.aiter_sse()
                assert (await anext(ticks)).event == "tick"
                assert (await anext(quotes)).event == "quote"
                process.send_signal(signal.SIGINT)
                stopping = time.monotonic()
                rest = [sse async for sse in ticks]  # ends without a protocol error
                rest_proxied = [sse async for sse in quotes]
            assert all(sse.event == "tick" for sse in rest)
            assert all(sse.event in ("quote", "news") for sse in rest_proxied)
            async for chunk in lines:
                output += chunk
            assert await process.wait() == 0, output
            assert time.monotonic() - stopping < 2.5, output  # hypercorn's graceful_timeout: 3
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
    assert "stopping: ending 3 open stream(s)" in output
    for path in ("/clock", "/proxy", "/upstream/ticker"):
        assert f"{path} closed: shutdown" in output
    assert output.rstrip().endswith("stopped")
    assert "Traceback" not in output


async def room_events(client: httpx.AsyncClient, url: str, count: int, **headers: str) -> list[Any]:
    """The first ``count`` events of the room at ``url``, as (event, id, data) triples."""
    got = []
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        async for sse in source.aiter_sse():
            got.append((sse.event, sse.id, json.loads(sse.data)))
            if len(got) == count:
                return got
    return got


async def test_room_sends_each_message_to_every_page_once_and_resumes() -> None:
    async with serve(create_app(FAST)) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.fail_after(10):
            assert (await client.get("/room/info")).json()["store"] == "memory"
            first = (await client.post("/room", content="hello")).json()["id"]
            async with anyio.create_task_group() as tg:
                pages: list[list[Any]] = [[], []]

                async def page(index: int) -> None:
                    pages[index] = await room_events(client, "/room?from=start", 3)

                for index in range(2):
                    tg.start_soon(page, index)
                second = (await client.post("/room", content="again")).json()["id"]
            for got in pages:
                reset, hello, again = got
                assert reset[0] == "reset" and reset[2] == {
                    "last_event_id": "start",
                    "earliest": first,
                }
                assert hello[1:] == (first, {"text": "hello", "worker": os.getpid()})
                assert again[1:] == (second, {"text": "again", "worker": os.getpid()})
            third = (await client.post("/room", content="while away")).json()["id"]
            resumed = await room_events(client, "/room", 1, **{"Last-Event-ID": second})
            assert resumed == [("message", third, {"text": "while away", "worker": os.getpid()})]
            for bad in ("", "   ", "x" * 281):
                refused = await client.post("/room", content=bad)
                assert refused.status_code == 400 and "1 to 280" in refused.text


async def test_room_messages_cross_between_two_demos_sharing_redis(own_redis: RedisServer) -> None:
    """Two demos (two workers) on one Redis: a message sent to one reaches a page of the
    other, live or from the history (whichever comes first, it comes once)."""
    settings = dataclasses.replace(FAST, redis_url=own_redis.url)
    async with (
        serve(create_app(settings)) as one,
        serve(create_app(settings)) as two,
        httpx.AsyncClient() as client,
    ):
        with anyio.fail_after(10):
            assert (await client.get(f"{two}/room/info")).json()["store"] == "redis"
            start = (await client.post(f"{one}/room", content="before")).json()["id"]
            async with anyio.create_task_group() as tg:
                got: list[Any] = []

                async def page() -> None:
                    headers = {"Last-Event-ID": start}
                    got.extend(await room_events(client, f"{two}/room", 2, **headers))

                tg.start_soon(page)
                ids = [
                    (await client.post(f"{one}/room", content=text)).json()["id"]
                    for text in ("one", "two")
                ]
            assert [(event_id, data["text"]) for _, event_id, data in got] == list(
                zip(ids, ["one", "two"], strict=True)
            )
