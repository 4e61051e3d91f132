"""StreamMiddleware.shutdown() with streams open under a real hypercorn: each ends cleanly after
what was queued, new requests get a ``503``, and a client that stopped reading cannot hold up
``shutdown(grace)``."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, listen_then_shut_down, read_raw, track

pytestmark = pytest.mark.anyio

CLIENTS = 3
# More than loopback socket buffers hold: a write of it blocks until the client reads.
BIG = b"data: " + b"x" * 32 * 1_048_576 + b"\n\n"
# How long a stalled client may hold its stream once the policy says "drop it" (generous:
# healthy runs take a few milliseconds).
DROP_WITHIN = 1.0


async def test_shutdown_ends_every_open_stream_cleanly() -> None:
    never = anyio.Event()
    closes = Record()
    producers_ended = Record()

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
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            paths = [f"/client{n}" for n in range(CLIENTS)]
            received = await listen_then_shut_down(
                app, client, {path: url + path for path in paths}, grace=TIMEOUT * 1000 / 2
            )
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


async def test_shutdown_grace_holds_with_a_stalled_client() -> None:
    """``shutdown(grace)`` waits at most ``grace`` ms, even for a stream whose writer is
    blocked on a client that stopped reading (32 MiB queued: more than socket buffers)."""
    all_queued = anyio.Event()
    never = anyio.Event()
    closes = Record()

    def handler(scope: Any) -> Stream:
        async def flood(stream: Stream) -> None:
            assert stream.send(BIG)
            all_queued.set()
            await never.wait()

        return track(Stream(flood, max_buffer=128 * 1_048_576), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient() as client,
            client.stream("GET", url + "/stalled") as stalled,
        ):
            raw = stalled.aiter_raw()
            await anext(raw)
            await all_queued.wait()
            assert app.active == 1

            with anyio.move_on_after(0.2 + DROP_WITHIN) as waited:
                await app.middleware.shutdown(grace=200)
            assert not waited.cancelled_caught, (
                f"shutdown(grace=200) had not returned after {0.2 + DROP_WITHIN} s "
                f"(active={app.active}, on_close so far: {closes.items})"
            )
            assert app.active == 0
            assert closes.items == ["shutdown"]
            await raw.aclose()
