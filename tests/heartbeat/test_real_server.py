"""The heartbeat as a real client sees it over hypercorn: ``: ping`` on an idle stream (set on
the Stream or on the middleware); ``ping=None`` on the Stream wins over the middleware's."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Served, read_raw

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("where", ["stream", "middleware"])
async def test_heartbeat_on_idle_stream(where: str) -> None:
    """With a 50 ms heartbeat, an idle stream sends ``: ping``; the producer only goes on
    once the client has seen it."""
    got_ping = anyio.Event()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send("start")
            await got_ping.wait()
            stream.send("end")
            stream.close()

        return Stream(callback, ping=50) if where == "stream" else Stream(callback)

    app = Served(handler, ping=50) if where == "middleware" else Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient() as client,
            client.stream("GET", url) as response,
        ):
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": ping":
                    got_ping.set()
    assert lines[:2] == ["data: start", ""]
    assert lines[2:4] == [": ping", ""]
    assert lines[-2:] == ["data: end", ""]
    assert set(lines[4:-2]) <= {": ping", ""}


async def test_heartbeat_disabled_on_stream_wins_over_middleware() -> None:
    """``ping=None`` on the Stream disables the middleware's 20 ms heartbeat: a 200 ms idle
    stretch carries no ``: ping`` (ten would be expected otherwise)."""

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send("start")
            await stream.wait(200)
            stream.send("end")
            stream.close()

        return Stream(callback, ping=None)

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler, ping=20)) as url, httpx.AsyncClient() as client:
            _response, body = await read_raw(client, url)
    assert body == b"data: start\n\ndata: end\n\n"
