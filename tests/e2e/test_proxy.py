"""The fetch-proxy example: a second hypercorn on loopback is the upstream SSE server, and the
handler streams ``client.send(request, stream=True)`` (or an already-opened response)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import answer_lifespan, serve
from tests.helpers import TIMEOUT, Record, Served, track

pytestmark = pytest.mark.anyio


async def test_proxy_upstream_dying_midway_ends_our_stream_cleanly() -> None:
    """The upstream connection breaks after one event: our client gets that event and a clean
    end of stream (not a hang, not a cut connection), and ``on_close("error")`` runs."""
    client_got_first = anyio.Event()

    async def dying_upstream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await client_got_first.wait()
        # returning without the final body: hypercorn cuts the connection

    closes = Record()
    with anyio.fail_after(TIMEOUT):
        async with serve(dying_upstream) as upstream_url, httpx.AsyncClient() as upstream:

            def handler(scope: Any) -> Stream:
                request = upstream.build_request("GET", upstream_url)
                return track(Stream(upstream.send(request, stream=True)), closes)

            app = Served(handler)
            async with serve(app) as url, httpx.AsyncClient() as client:
                async with client.stream("GET", url) as response:
                    lines = []
                    async for line in response.aiter_lines():
                        lines.append(line)
                        client_got_first.set()
                assert lines == ["data: one", ""]
                assert await closes.wait() == ["error"]
                await app.finished.wait()
                assert app.active == 0
