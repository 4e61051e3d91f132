"""Channels in a real browser (headless Chromium): ``EventSource`` against two worker
processes (hypercorn, asyncio and trio) sharing a real redis-server (tests/channels/worker.py).

- A topic followed while the server ends the stream every 250 ms: every event exactly once,
  in order, through the browser's own reconnections with ``Last-Event-ID``.
- A closed topic answers 204 and the browser stops reconnecting (its requests are counted).
- A resumable LLM-style reply (``publish_from`` with a token generator): a reload mid-reply
  shows the whole reply exactly once; "stop" sent to the *other* worker stops it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from tests.channels.workers import post, workers
from tests.redis_server import RedisServer

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.anyio

FOLLOW_JS = """
// Follow `path` until `total` messages came; resolve with them (reset events included) and
// how many times the stream was opened.
(args) => new Promise((resolve, reject) => {
  const [path, total] = args;
  const got = [];
  let opens = 0;
  const source = new EventSource(path);
  source.onopen = () => { opens += 1; };
  source.addEventListener("reset", (e) => got.push(["reset", e.data]));
  source.onmessage = (e) => {
    got.push([e.lastEventId, e.data]);
    if (got.filter((g) => g[0] !== "reset").length === total) {
      source.close();
      resolve({ got, opens });
    }
  };
  setTimeout(() => { source.close(); reject(new Error("too slow: " + got.length)); }, 20000);
})
"""

UNTIL_CLOSED_JS = """
// Follow `path` until the browser gives up (readyState CLOSED); resolve with what came.
(path) => new Promise((resolve, reject) => {
  const got = [];
  const source = new EventSource(path);
  source.onmessage = (e) => { got.push([e.lastEventId, e.data]); };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) resolve(got);
  };
  setTimeout(() => { source.close(); reject(new Error("still reconnecting")); }, 20000);
})
"""


async def test_every_event_once_while_the_server_ends_the_stream_repeatedly(
    page: Page, own_redis: RedisServer
) -> None:
    async with workers(own_redis, ["asyncio", "trio"]) as started, httpx.AsyncClient() as client:
        (here, _), (there, _) = started
        await page.goto(f"{here}/page")
        async with anyio.create_task_group() as tg:
            following = page.evaluate(FOLLOW_JS, ["/events/f?from=start&for=250", 100])
            result: dict[str, Any] = {}

            async def follow() -> None:
                result.update(await following)

            tg.start_soon(follow)
            ids = await post(client, f"{there}/publish/f?start=0&stop=100&pace=15&retry=50")
        got = [(event_id, data) for event_id, data in result["got"] if event_id != "reset"]
        assert got == [(event_id, str(n)) for n, event_id in enumerate(ids)]
        assert result["opens"] >= 4  # the server ended it every 250 ms: resumed each time


async def test_a_closed_topic_answers_204_and_the_browser_stops_reconnecting(
    page: Page, own_redis: RedisServer
) -> None:
    async with workers(own_redis, ["asyncio", "trio"]) as started, httpx.AsyncClient() as client:
        (here, _), (there, _) = started
        requests: list[str] = []
        opened = anyio.Event()

        def on_request(request: Any) -> None:
            requests.append(request.url)
            if "/events/c" in request.url:
                opened.set()

        page.on("request", on_request)
        await page.goto(f"{here}/page")
        ids = await post(client, f"{there}/publish/c?start=0&stop=3&retry=50")
        async with anyio.create_task_group() as tg:
            result: list[Any] = []

            async def follow() -> None:
                result.extend(await page.evaluate(UNTIL_CLOSED_JS, "/events/c?from=start"))

            tg.start_soon(follow)
            with anyio.fail_after(10):
                await opened.wait()
            await post(client, f"{there}/close/c")
        assert result == [[event_id, str(n)] for n, event_id in enumerate(ids)]
        streams = [url for url in requests if "/events/c" in url]
        assert len(streams) == 2  # the stream, then one reconnect answered 204: no more


async def test_a_reply_reloaded_mid_way_shows_whole_once_and_stop_on_another_worker_stops_it(
    page: Page, own_redis: RedisServer
) -> None:
    async with workers(own_redis, ["asyncio", "trio"]) as started, httpx.AsyncClient() as client:
        (here, _), (there, _) = started
        # A reload mid-reply.
        await post(client, f"{here}/reply/r?tokens=30&pace=40")
        await page.goto(f"{here}/page?topic=r")
        await page.wait_for_function("window.tokens.length >= 10")
        await page.reload()
        await page.wait_for_function("document.getElementById('state').textContent === 'ended'")
        shown = await page.evaluate("window.tokens")
        assert shown == [f"token{n} " for n in range(30)]
        assert await page.text_content("#reply") == "".join(shown)

        # "stop", sent to the other worker, stops the reply the first one produces.
        await post(client, f"{here}/reply/s?tokens=500&pace=20")
        await page.goto(f"{here}/page?topic=s&cancel={there}/cancel/s")
        await page.wait_for_function("window.tokens.length >= 5")
        await page.click("#stop")
        await page.wait_for_function("document.getElementById('state').textContent === 'ended'")
        shown = await page.evaluate("window.tokens")
        assert 5 <= len(shown) < 500 and shown == [f"token{n} " for n in range(len(shown))]
        last = await page.evaluate("window.lastId")
        response = await client.get(f"{there}/events/s", headers={"Last-Event-ID": last})
        assert response.status_code == 204  # closed, nothing after what the page showed
