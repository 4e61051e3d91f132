"""StreamMiddleware.shutdown() with streams open under a real hypercorn."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track

pytestmark = pytest.mark.anyio

CLIENTS = 3


async def test_shutdown_ends_every_open_stream_cleanly() -> None:
    never = anyio.Event()
    closes = Record()
    producers_ended = Record()
    opened = Record()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            try:
                stream.send(f"open {scope['path']}")
                await never.wait()
                stream.send("never sent")
            finally:
                producers_ended(scope["path"])

        return track(Stream(callback), closes)

    app = Served(handler)
    received: dict[str, list[str]] = {}
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with anyio.create_task_group() as clients:

                async def listen(path: str) -> None:
                    # Raises httpx.RemoteProtocolError if the stream is cut off uncleanly.
                    async with aconnect_sse(client, "GET", url + path) as source:
                        data = received.setdefault(path, [])
                        async for sse in source.aiter_sse():
                            data.append(sse.data)
                            opened(path)

                for n in range(CLIENTS):
                    clients.start_soon(listen, f"/client{n}")
                await opened.wait(CLIENTS)
                assert app.active == CLIENTS
                await app.middleware.shutdown(grace=TIMEOUT * 1000 / 2)
                assert app.active == 0
            # every client saw its event and then a clean end of stream
            assert received == {f"/client{n}": [f"open /client{n}"] for n in range(CLIENTS)}
            assert await closes.wait(CLIENTS) == ["shutdown"] * CLIENTS
            assert sorted(await producers_ended.wait(CLIENTS)) == [
                f"/client{n}" for n in range(CLIENTS)
            ]
            await app.finished.wait(CLIENTS)
            assert app.active == 0

            # after shutdown, a new Stream is refused with a 503
            response, body = await read_raw(client, url + "/late")
            assert response.status_code == 503
            assert response.headers["content-type"].startswith("text/plain")
            assert b"shutting down" in body
            assert await closes.wait(CLIENTS + 1) == ["shutdown"] * (CLIENTS + 1)
            assert app.active == 0


async def test_shutdown_flushes_queued_events_first() -> None:
    """Events already queued when shutdown starts still reach the client before the end."""
    holder: list[Stream] = []
    opened = anyio.Event()
    closes = Record()

    def handler(scope: Any) -> Stream:
        stream = track(Stream(), closes)
        holder.append(stream)
        opened.set()
        return stream

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with client.stream("GET", url) as response:
                await opened.wait()
                (stream,) = holder
                for n in range(3):
                    assert stream.send(n)
                await app.middleware.shutdown(grace=1000)
                assert not stream.send("too late")
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            assert await closes.wait() == ["shutdown"]
            assert app.active == 0


async def test_shutdown_with_no_streams_returns_at_once() -> None:
    app = Served(lambda scope: Stream("x"))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            _response, body = await read_raw(client, url)
            assert body == b"data: x\n\n"
            await app.finished.wait()
            await app.middleware.shutdown(grace=60_000)  # would hit fail_after if it waited
            assert app.active == 0
