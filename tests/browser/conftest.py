"""Real headless Chromium, Debian's package, driven by Playwright for Python.

The browser is ``/usr/bin/chromium`` (``apt-get install chromium``; override with
``$CHROMIUM``): Playwright's own browser download is not used. When Chromium or Playwright is
missing these tests skip with the reason, except under CI (``CI`` set, as ``.ci/run`` does),
where they fail: CI must run them.

asyncio only: Playwright's async API runs on an asyncio event loop and has no trio support,
so these tests override the suite's asyncio+trio ``anyio_backend``. (The same servers and
streams are tested on trio by the rest of the suite, with httpx.)

Every test here is marked ``browser``: ``-m "not browser"`` leaves them out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
"""Playwright's default for every action and wait (a healthy test needs a fraction of it)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``browser`` (the hook sees the whole session)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        hint = f" (there is {found}: set CHROMIUM={found})" if found else ""
        return f"no Chromium at {CHROMIUM}: apt-get install chromium{hint}"
    return None


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: Playwright's async API does not run on trio."""
    return "asyncio"


@pytest.fixture
def chromium() -> str:
    """The Chromium executable; skips (fails under CI) when the tests cannot run."""
    reason = missing()
    if reason is not None:
        if in_ci():
            pytest.fail(f"browser tests must run in CI, but: {reason}", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        with anyio.fail_after(30):
            browser = await playwright.chromium.launch(
                executable_path=chromium, args=FLAGS, timeout=30_000
            )
        try:
            yield browser
        finally:
            with anyio.fail_after(30):
                await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page (own context: cookies, cache, connections) that records script errors;
    the test fails if the page threw any."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        with anyio.fail_after(30):
            await context.close()
    assert not errors, f"the page threw: {errors}"
