"""Helpers shared by the Starlette and FastAPI tests (FastAPI is Starlette)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from asgi_stream import StreamMiddleware
from tests.e2e.helpers import Record

ORIGIN = "https://front.example"
MARKER = "x-asgi-stream-handoff"  # the middleware's hand-over header (asgi_stream.middleware)


class Wrapped:
    """``StreamMiddleware(app)`` -- the documented wiring -- behind an outer ASGI app that
    records when the middleware returns from each http request (so a test can check
    ``active`` afterwards without sleeping)."""

    def __init__(self, app: Any, **middleware: Any) -> None:
        self.middleware = StreamMiddleware(app, **middleware)
        self.finished = Record()

    @property
    def active(self) -> int:
        return self.middleware.active

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.middleware(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.finished(scope["path"])


async def read_first_line_and_leave(client: httpx.AsyncClient, url: str, expected: str) -> None:
    """Read up to the first non-empty line, check it, then close the response mid-stream."""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                assert line == expected
                break
        else:
            pytest.fail("the stream ended before the client could leave")
