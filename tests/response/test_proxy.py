"""Proxy mode: a Stream of an upstream response (``client.send(request, stream=True)``, or the
already-opened response) passes its bytes through unchanged, keeps its content type and
content encoding (user headers win), is closed when done, and an upstream error status is a
``502``. In process with a stand-in upstream, and under a real hypercorn with a second
hypercorn on loopback as the upstream."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import answer_lifespan, serve
from tests.helpers import TIMEOUT, FakeUpstream, Record, Served, proxy_handler, read_raw, track
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_proxy_passes_bytes_unchanged_and_closes_upstream() -> None:
    chunks = [b"retry: 10\n\ndata: a", b"\r\ndata: b\r\n\r\n", b": c\n\n"]
    upstream, peer = FakeUpstream(chunks), Peer()
    await Stream(upstream)(peer.scope, peer.receive, peer.send)
    assert peer.body == b"".join(chunks) and peer.finished
    assert peer.headers[b"content-type"] == b"text/event-stream"
    assert upstream.closed.is_set()


async def test_proxy_upstream_error_status_becomes_502() -> None:
    upstream, peer = FakeUpstream([b"nope"], status=503), Peer()
    await Stream(upstream)(peer.scope, peer.receive, peer.send)
    assert peer.status == 502 and b"503" in peer.body
    assert peer.headers[b"content-type"].startswith(b"text/plain")
    assert upstream.closed.is_set()


async def test_proxy_awaitable_of_response() -> None:
    upstream, peer = FakeUpstream([b"data: x\n\n"]), Peer()

    async def send_request() -> FakeUpstream:
        return upstream

    await Stream(send_request())(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: x\n\n" and upstream.closed.is_set()


async def test_proxy_user_headers_override_the_upstream_content_type() -> None:
    upstream, peer = FakeUpstream([b"x"]), Peer()
    await Stream(upstream, headers={"Content-Type": "text/plain"})(
        peer.scope, peer.receive, peer.send
    )
    content_types = [v for k, v in peer.start["headers"] if k == b"content-type"]  # type: ignore[index]
    assert content_types == [b"text/plain"]


class RawOnly:
    """Anything with aiter_raw() is an upstream (no status_code, no headers)."""

    def __init__(self) -> None:
        self.closed = False

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        yield b"data: raw\n\n"

    async def aclose(self) -> None:
        self.closed = True


async def test_any_object_with_aiter_raw_is_proxied() -> None:
    upstream, peer = RawOnly(), Peer()
    await Stream(upstream)(peer.scope, peer.receive, peer.send)
    assert peer.status == 200 and peer.body == b"data: raw\n\n" and upstream.closed


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
