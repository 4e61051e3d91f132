"""A first end-to-end check: a callback stream under a real hypercorn, read by httpx-sse."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import Stream, StreamMiddleware
from tests.conftest import serve, stream_app

pytestmark = pytest.mark.anyio


def hello_world(scope: object) -> Stream:
    async def hello(stream: Stream) -> None:
        stream.send("hello")
        await stream.wait(50)
        stream.send("world")
        stream.close()

    return Stream(hello)


app = stream_app(hello_world)


async def test_callback_stream_under_hypercorn() -> None:
    async with (
        serve(StreamMiddleware(app)) as url,
        httpx.AsyncClient() as client,
        aconnect_sse(client, "GET", url + "/") as source,
    ):
        assert source.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert [sse.data async for sse in source.aiter_sse()] == ["hello", "world"]
