"""The fetch-proxy example: a second hypercorn on loopback is the upstream SSE server, and the
handler streams ``client.send(request, stream=True)`` (or an already-opened response)."""

from __future__ import annotations

import gzip
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import answer_lifespan, serve
from tests.helpers import TIMEOUT, Record, Served, proxy_handler, read_raw, track

pytestmark = pytest.mark.anyio

# Spelled unlike our own default, so that keeping the upstream's header is observable.
UPSTREAM_CONTENT_TYPE = "text/event-stream;charset=UTF-8"
# Chunks as the upstream writes them: a retry frame, a comment, multi-line data, an event
# split across two writes, non-ASCII bytes and an unusual (but legal) CRLF line ending.
UPSTREAM_CHUNKS = [
    b"retry: 2500\n\n",
    b": upstream comment\n\n",
    b"id: 7\nevent: tick\ndata: one\ndata: two\n\n",
    b"data: spl",
    b"it\n\n",
    'data: {"mot":"été"}\r\n\r\n'.encode(),
]

FORMS = ["awaitable", "opened"]


@pytest.mark.parametrize("form", FORMS)
async def test_proxy_passes_upstream_bytes_unchanged(form: str) -> None:
    upstream_closes = Record()

    def upstream_handler(scope: Any) -> Stream:
        async def chunks() -> Any:
            for chunk in UPSTREAM_CHUNKS:
                await anyio.lowlevel.checkpoint()
                yield chunk

        return track(
            Stream(chunks(), headers={"content-type": UPSTREAM_CONTENT_TYPE}), upstream_closes
        )

    closes = Record()
    opened: list[Any] = []
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(upstream_handler)) as upstream_url,
            httpx.AsyncClient() as upstream,
        ):
            app = Served(proxy_handler(upstream, upstream_url, form, closes, opened))
            async with serve(app) as url, httpx.AsyncClient() as client:
                response, body = await read_raw(client, url + "/events")
                assert response.status_code == 200
                assert response.headers["content-type"] == UPSTREAM_CONTENT_TYPE
                assert response.headers["cache-control"] == "no-cache"
                assert body == b"".join(UPSTREAM_CHUNKS)
                assert await closes.wait() == ["complete"]
                assert await upstream_closes.wait() == ["complete"]
                await app.finished.wait()
                assert app.active == 0
                if form == "opened":
                    assert opened[0].is_closed


@pytest.mark.parametrize("form", FORMS)
async def test_proxy_client_disconnect_closes_upstream(form: str) -> None:
    """The client leaves mid-stream: the upstream response is closed, so the upstream server
    sees a disconnect and its producer stops."""
    never = anyio.Event()
    upstream_closes = Record()
    upstream_finally = Record()
    upstream_started = Record()

    def upstream_handler(scope: Any) -> Stream:
        async def events() -> Any:
            upstream_started(True)
            try:
                yield b"data: first\n\n"
                await never.wait()  # an LLM still thinking
                yield b"data: never sent\n\n"
            finally:
                upstream_finally(True)

        return track(Stream(events()), upstream_closes)

    closes = Record()
    opened: list[Any] = []
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(upstream_handler)) as upstream_url,
            httpx.AsyncClient() as upstream,
        ):
            app = Served(proxy_handler(upstream, upstream_url, form, closes, opened))
            async with serve(app) as url, httpx.AsyncClient() as client:
                async with client.stream("GET", url + "/events") as response:
                    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                    async for line in response.aiter_lines():
                        assert line == "data: first"
                        break
                assert await closes.wait() == ["disconnect"]
                assert await upstream_closes.wait() == ["disconnect"]
                assert await upstream_finally.wait() == [True]
                assert len(upstream_started) == 1
                await app.finished.wait()
                assert app.active == 0
                if form == "opened":
                    assert opened[0].is_closed


async def test_proxy_non_sse_upstream_keeps_content_type_and_gets_no_pings() -> None:
    """An NDJSON upstream: its content type is kept and no ``: ping`` comment is injected
    into its body even with a tiny heartbeat interval."""
    release = anyio.Event()

    def upstream_handler(scope: Any) -> Stream:
        async def lines() -> Any:
            yield {"n": 1}
            await release.wait()  # idle for several heartbeat intervals of the proxy
            yield {"n": 2}

        return Stream(lines(), format="ndjson")

    closes = Record()
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(upstream_handler)) as upstream_url,
            httpx.AsyncClient() as upstream,
        ):

            def handler(scope: Any) -> Stream:
                request = upstream.build_request("GET", upstream_url)
                return track(Stream(upstream.send(request, stream=True), ping=10), closes)

            async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
                async with client.stream("GET", url) as response:
                    assert response.headers["content-type"] == "application/x-ndjson"
                    lines = []
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line == '{"n":1}':
                            await anyio.sleep(0.1)  # ten proxy heartbeat intervals, idle
                            release.set()
                assert lines == ['{"n":1}', '{"n":2}']
                assert await closes.wait() == ["complete"]


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


async def test_proxy_keeps_upstream_content_encoding() -> None:
    """A gzip-encoded upstream body passes through still compressed, with its
    ``content-encoding``; the client decodes it."""
    text = "".join(f"data: event {n}\n\n" for n in range(50)).encode()
    compressed = gzip.compress(text)

    async def gzip_upstream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"content-encoding", b"gzip"),
                ],
            }
        )
        half = len(compressed) // 2
        await send({"type": "http.response.body", "body": compressed[:half], "more_body": True})
        await send({"type": "http.response.body", "body": compressed[half:]})

    with anyio.fail_after(TIMEOUT):
        async with serve(gzip_upstream) as upstream_url, httpx.AsyncClient() as upstream:

            def handler(scope: Any) -> Stream:
                request = upstream.build_request("GET", upstream_url)
                return Stream(upstream.send(request, stream=True))

            async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
                response, raw = await read_raw(client, url)
                assert response.headers["content-encoding"] == "gzip"
                assert raw == compressed
                decoded = await client.get(url)
                assert decoded.content == text
