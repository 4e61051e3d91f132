"""The wire format as a real client reads it over hypercorn: the stream-level event name, the
retry frame (first, before any event), the ndjson and text formats."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from pydantic import BaseModel

from asgi_stream import ServerSentEvent, Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, callback_stream, read_raw, track

pytestmark = pytest.mark.anyio


async def test_stream_level_event_name() -> None:
    handler = callback_stream(
        "a",
        ("b", {"event": "own"}),
        ServerSentEvent("c", id="3"),
        ("multi\nline", {"id": 4}),
        event="update",
    )
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(handler)) as url,
            httpx.AsyncClient() as client,
            aconnect_sse(client, "GET", url) as source,
        ):
            events = [(sse.event, sse.data, sse.id) async for sse in source.aiter_sse()]
    assert events == [
        ("update", "a", ""),
        ("own", "b", ""),
        ("update", "c", "3"),
        ("update", "multi\nline", "4"),
    ]


async def test_retry_is_the_first_frame() -> None:
    handler = callback_stream("a", ("b", {"retry": 10}), retry=3000)
    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url)
            async with aconnect_sse(client, "GET", url) as source:
                retries = [(sse.data, sse.retry) async for sse in source.aiter_sse()]
    assert response.status_code == 200
    assert body == b"retry: 3000\n\ndata: a\n\nretry: 10\ndata: b\n\n"
    assert retries[-1] == ("b", 10)


async def test_retry_frame_is_sent_before_any_event() -> None:
    """The retry frame flushes the response before the producer sends anything."""
    sent_nothing_yet = anyio.Event()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            await sent_nothing_yet.wait()
            stream.send("later")
            stream.close()

        return Stream(callback, retry=1234)

    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(handler)) as url,
            httpx.AsyncClient() as client,
            client.stream("GET", url) as response,
        ):
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 1234"
            sent_nothing_yet.set()
            rest = [line async for line in lines]
    assert rest == ["", "data: later", ""]


class Item(BaseModel):
    name: str
    price: float


async def test_ndjson_format() -> None:
    closes = Record()

    def handler(scope: Any) -> Stream:
        items = [{"a": 1, "b": [1, 2]}, Item(name="thé", price=2.5), "line\nbreak", None, 7]
        return track(Stream(iter(items), format="ndjson"), closes)

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url)
            assert response.headers["content-type"] == "application/x-ndjson"
            assert body == (
                b'{"a":1,"b":[1,2]}\n'
                + '{"name":"thé","price":2.5}\n'.encode()
                + b'"line\\nbreak"\n'
                + b"7\n"
            )
            assert await closes.wait() == ["complete"]


async def test_text_format() -> None:
    def handler(scope: Any) -> Stream:
        async def chunks() -> Any:
            yield "hello "
            yield "wörld\n"
            yield b"\x00raw\xff"

        return Stream(chunks(), format="text")

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert body == "hello wörld\n".encode() + b"\x00raw\xff"
