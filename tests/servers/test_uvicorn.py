"""The same driver under uvicorn (asyncio only): streaming, disconnect cleanup, shutdown."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from httpx_sse import aconnect_sse

from asgi_stream import CloseReason, Stream, StreamMiddleware
from tests.conftest import _free_port, _wait_listening

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


async def test_streams_and_disconnect_under_uvicorn() -> None:
    reasons: list[CloseReason] = []
    cleaned = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        async def count(stream: Stream) -> None:
            try:
                n = 0
                while True:
                    n += 1
                    stream.send(n)
                    await stream.wait(5)
            finally:
                cleaned.set()

        stream = Stream(count)
        stream.on_close(reasons.append)
        return stream

    middleware = StreamMiddleware(app)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(middleware, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await _wait_listening(port)
        with anyio.fail_after(10):
            async with (
                httpx.AsyncClient() as client,
                aconnect_sse(client, "GET", f"http://127.0.0.1:{port}/") as source,
            ):
                received = []
                async for sse in source.aiter_sse():
                    received.append(int(sse.data))
                    if len(received) == 5:
                        break  # the client leaves mid-stream
            await cleaned.wait()
            while middleware.active:
                await anyio.lowlevel.checkpoint()
        server.should_exit = True
    assert received == [1, 2, 3, 4, 5] and reasons == ["disconnect"]
