"""HTTP/2 under a real hypercorn, over cleartext h2c with prior knowledge (no TLS needed), with
httpx (``http1=False, http2=True``): a stream, and concurrent streams multiplexed on one
connection. (Disconnects over HTTP/2: tests/disconnect/test_http2.py; slow clients:
tests/slow_client/test_http2_drop.py.)"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, h2_client, track

pytestmark = pytest.mark.anyio


async def test_callback_stream_over_http2() -> None:
    versions = Record()
    closes = Record()

    def handler(scope: Any) -> Stream:
        versions(scope["http_version"])

        async def callback(stream: Stream) -> None:
            stream.send("hello")
            await stream.wait(50)
            stream.send("world")
            stream.close()

        return track(Stream(callback, retry=1000), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            h2_client() as client,
            aconnect_sse(client, "GET", url + "/h2") as source,
        ):
            response = source.response
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert "connection" not in response.headers
            assert "transfer-encoding" not in response.headers
            events = [(sse.retry, sse.data) async for sse in source.aiter_sse()]
            assert events == [(1000, ""), (None, "hello"), (None, "world")]
            assert versions.items == ["2"]
            assert await closes.wait() == ["complete"]
            await app.finished.wait()
            assert app.active == 0


async def test_concurrent_streams_multiplexed_on_one_connection() -> None:
    """Two streams interleave on one HTTP/2 connection: each one's second event is only sent
    once both clients have received their first (a deadlock if they were serialised)."""
    firsts = Record()
    both_open = anyio.Event()
    connections = Record()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send(f"first {scope['path']}")
            await both_open.wait()
            stream.send(f"second {scope['path']}")
            stream.close()

        return Stream(callback)

    received: dict[str, list[str]] = {}
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(handler)) as url,
            h2_client() as client,
            anyio.create_task_group() as tg,
        ):

            async def listen(path: str) -> None:
                async with aconnect_sse(client, "GET", url + path) as source:
                    stream = source.response.extensions["network_stream"]
                    connections(stream.get_extra_info("client_addr"))
                    data = received.setdefault(path, [])
                    async for sse in source.aiter_sse():
                        data.append(sse.data)
                        firsts(path)
                        if len(firsts) == 2:
                            both_open.set()

            tg.start_soon(listen, "/a")
            tg.start_soon(listen, "/b")
    assert received == {"/a": ["first /a", "second /a"], "/b": ["first /b", "second /b"]}
    assert len(set(connections.items)) == 1  # one TCP connection carried both
