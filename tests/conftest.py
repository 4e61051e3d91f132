"""Shared fixtures: every async test runs on asyncio and trio; ``serve`` runs a real hypercorn;
``redis_server`` and ``own_redis`` a real redis-server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import sniffio
from hypercorn.config import Config

from tests.redis_server import RedisServer, redis_server_or_skip


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests keep apart by key prefix)."""
    server = RedisServer(redis_server_or_skip(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop, restart or cut off."""
    server = RedisServer(redis_server_or_skip(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int) -> None:
    with anyio.fail_after(10):
        while True:
            try:
                conn = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.01)
            else:
                await conn.aclose()
                return


@asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` with a real hypercorn on 127.0.0.1 (on the running backend);
    yields the base URL and shuts the server down on exit."""
    cfg = Config()
    cfg.bind = [f"127.0.0.1:{_free_port()}"]
    cfg.graceful_timeout = 2
    cfg.loglevel = "WARNING"
    for key, value in config.items():
        setattr(cfg, key, value)
    port = int(cfg.bind[0].rsplit(":", 1)[1])
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as hypercorn_serve
    else:
        from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(hypercorn_serve, app, cfg, shutdown_trigger=stop.wait))
        await _wait_listening(port)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI lifespan scope: complete startup and shutdown, return at shutdown."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


def stream_app(handler: Any) -> Any:
    """A raw ASGI app that answers lifespan and returns ``await handler(scope)`` (or its
    plain result) for http requests: the way a user's handler hands a Stream over."""

    async def app(scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return None
        result = handler(scope)
        if hasattr(result, "__await__") and not hasattr(result, "aiter_raw"):
            result = await result
        return result

    return app
