"""The demo page (examples/demo.html) in a real browser, against the demo app on 127.0.0.1.

The page keeps what its EventSources received in ``window.demo``; the tests read it, and the
demo app's ``_closed`` hook (each stream's ``on_close``) tells what the server saw. The first test
also takes the README's screenshot when asked: ``DEMO_SCREENSHOT=docs/assets/demo.png`` (a test run
writes no tracked file otherwise).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from examples.demo import HEADLINES, REPLY, REPLY_TOKENS, Settings
from tests.conftest import serve
from tests.demo.observed import Observed

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20  # seconds, for one test's waits
RETRY = 400

# Quicker than the defaults, but still the pace of a live page (for the screenshot).
LIVELY = Settings(
    clock_every=250,
    counter_every=60,
    counter_batch=5,
    retry=RETRY,
    token_delay=(3, 12),
    ticker_every=90,
    news_every=5,
)


@pytest.fixture
async def demo_page(page: Page) -> AsyncIterator[tuple[Observed, Page]]:
    demo = Observed(LIVELY)
    async with serve(demo.app) as url:
        await page.emulate_media(color_scheme="light")
        await page.goto(url + "/")
        try:
            yield demo, page
        finally:
            await leave(demo, page)


async def leave(demo: Observed, page: Page) -> None:
    """Leave the page, so that the server has no open stream left to wait for on exit."""
    await page.goto("about:blank")
    with anyio.fail_after(TIMEOUT):
        while demo.app.active:  # noqa: ASYNC110 (a count, no event to wait for)
            await anyio.sleep(0.02)


async def state(page: Page, until: str) -> Any:
    """``window.demo`` once the JavaScript condition ``until`` (on ``demo``) holds."""
    with anyio.fail_after(TIMEOUT):
        await page.wait_for_function(
            f"(() => {{ const demo = window.demo; return {until}; }})()", timeout=TIMEOUT * 1000
        )
        return await page.evaluate("window.demo")


async def until_closed(demo: Observed, *expected: tuple[str, str]) -> None:
    """Wait until each ``(path, reason)`` of ``expected`` was recorded."""
    with anyio.fail_after(TIMEOUT):
        while not set(expected) <= set(demo.closes.items):
            await demo.closes.wait(len(demo.closes) + 1)


async def test_every_card_is_live_and_the_counter_loses_nothing(
    demo_page: tuple[Observed, Page],
) -> None:
    _, page = demo_page
    got = await state(
        page,
        "demo.counter.resumes.length >= 3 && demo.reply.done !== null"
        " && demo.proxy.quotes.length >= 20 && demo.proxy.news.length >= 2"
        " && demo.events['/clock tick'] >= 2",
    )
    # the counter: every value once, in order, across the reconnects
    counter = got["counter"]
    assert counter["lost"] == 0 and counter["repeated"] == 0
    assert counter["received"] == counter["last"]  # 1, 2, ... last: each exactly once
    assert counter["resumes"][:3] == [None, "5", "10"]  # Last-Event-ID, as the server got it
    assert all(delay >= RETRY for delay in counter["delays"]), counter["delays"]
    assert await page.text_content("#retry") == str(RETRY)
    # the reply: every token, newlines and the would-be injection included
    assert got["reply"]["text"] == REPLY
    assert got["reply"]["done"]["tokens"] == len(REPLY_TOKENS)
    assert await page.inner_text("#reply-status") == (
        f"done: {len(REPLY_TOKENS)} tokens in {got['reply']['done']['ms'] / 1000:.1f} s"
    )
    # the proxy: named JSON quotes in order, two-line news intact
    numbers = [quote["n"] for quote in got["proxy"]["quotes"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert all(n % LIVELY.news_every for n in numbers)
    assert got["proxy"]["news"][:2] == ["\n".join(item) for item in HEADLINES[:2]]
    # the clock and the named-events table
    assert re.fullmatch(r"\d\d:\d\d:\d\d", await page.inner_text("#clock"))
    for key in ("/clock tick", "/counter resume", "/counter message", "/reply message"):
        assert got["events"][key] > 0, key
    assert got["events"]["/reply done"] == 1
    for name in ("clock", "proxy"):
        assert await page.inner_text(f"#{name}-status") == "live"
    assert await page.inner_text("#counter-status") in ("live", "reconnecting")

    destination = os.environ.get("DEMO_SCREENSHOT", "")
    if destination:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        await state(page, "demo.proxy.quotes.length >= 40")  # a full sparkline
        await page.mouse.move(0, 0)
        await page.add_style_tag(content="tr.flash td { animation: none !important; }")
        await page.screenshot(path=destination, full_page=True, animations="disabled")
        assert (await anyio.Path(destination).read_bytes()).startswith(b"\x89PNG\r\n\x1a\n")


async def test_leaving_a_card_ends_its_stream_on_the_server(
    demo_page: tuple[Observed, Page],
) -> None:
    """``close()`` on the page's EventSources: the server sees each disconnect; the proxy
    closes its upstream too. Leaving the page ends every stream."""
    demo, page = demo_page
    await state(page, "demo.proxy.quotes.length >= 2 && demo.events['/clock tick'] >= 1")
    await page.evaluate("proxy.close(); clock.close()")
    await until_closed(
        demo,
        ("/proxy", "disconnect"),
        ("/upstream/ticker", "disconnect"),
        ("/clock", "disconnect"),
    )
    await leave(demo, page)


async def test_ask_again_mid_reply_closes_the_old_generator(page: Page) -> None:
    demo = Observed(Settings(token_delay=(30, 40)))
    async with serve(demo.app) as url:
        await page.goto(url + "/")
        await state(page, "demo.events['/reply message'] >= 3")
        assert ("/reply", "disconnect") not in demo.closes.items
        await page.click("#ask")
        await until_closed(demo, ("/reply", "disconnect"))
        got = await state(page, "demo.reply.text.length > 0")
        assert REPLY.startswith(got["reply"]["text"])  # the new reply starts over
        await leave(demo, page)


async def test_the_room_sends_reloads_without_loss_and_shows_the_reset_event(
    demo_page: tuple[Observed, Page],
) -> None:
    """The channel card: a message typed in the page comes back through the room; one sent
    while the page reloads is replayed once after it; "forget my place" gets the reset
    event, then every message kept."""
    demo, page = demo_page
    await state(page, "demo.room.resets.length === 1")  # the first visit: from "start"
    await page.fill("#say", "hello from the page")
    await page.click("#send")
    got = await state(page, "demo.room.received.length === 1")
    assert got["room"]["received"] == ["hello from the page"]
    assert await page.inner_text("#room-store") == "memory"
    await page.goto("about:blank")  # away: a message is sent meanwhile
    await demo.channel.publish("room", {"text": "while you were away", "worker": 0})
    await page.go_back()
    got = await state(page, "demo.room.received.length === 1")
    assert got["room"]["received"] == ["while you were away"]  # once, and only what it missed
    assert got["room"]["resets"] == []
    log = await page.inner_text("#room-log")
    assert "hello from the page" in log and "reloaded: resuming after" in log
    await page.click("#forget")
    got = await state(page, "demo.room.resets.length === 1 && demo.room.received.length === 3")
    assert got["room"]["resets"] == ["forgotten"]
    assert got["room"]["received"][1:] == ["hello from the page", "while you were away"]
    assert got["room"]["repeated"] == 0
    assert await page.inner_text("#room-repeated") == "0"
