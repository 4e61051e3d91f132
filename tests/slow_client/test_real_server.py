"""A client that stops reading (connection open, socket buffers full) under a real hypercorn:
it is dropped once ``max_buffer`` bytes wait, and other clients are served meanwhile. (That it
cannot hold up ``shutdown(grace)``: tests/shutdown/test_real_server.py.)"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track

pytestmark = pytest.mark.anyio

CHUNK = b"data: " + b"x" * 65_536 + b"\n\n"
# More than loopback socket buffers hold: a write of it blocks until the client reads.
BIG = b"data: " + b"x" * 32 * 1_048_576 + b"\n\n"
MAX_CHUNKS = 1_000
# How long a stalled client may hold its stream once the policy says "drop it" (generous:
# healthy runs take a few milliseconds).
DROP_WITHIN = 1.0


@pytest.mark.slow
async def test_stalled_client_is_dropped_and_others_unaffected() -> None:
    closes: dict[str, Record] = {"/stalled": Record(), "/healthy": Record()}
    refused_at = Record()
    streams: list[Stream] = []

    def handler(scope: Any) -> Stream:
        path = scope["path"]
        if path == "/healthy":
            return track(Stream(iter(["a", "b", "c"])), closes[path])

        async def flood(stream: Stream) -> None:
            # One huge frame first: the writer is surely blocked on the stalled client while
            # the following frames pile up beyond max_buffer.
            assert stream.send(BIG)
            await anyio.lowlevel.checkpoint()
            for n in range(MAX_CHUNKS):
                if not stream.send(CHUNK):
                    refused_at(n)
                    return
                await anyio.lowlevel.checkpoint()
            refused_at(None)

        stream = track(Stream(flood, max_buffer=262_144), closes[path])
        streams.append(stream)
        return stream

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient() as client,
            client.stream("GET", url + "/stalled") as stalled,
        ):
            assert stalled.status_code == 200
            # Read one chunk, then stop reading while keeping the connection open. (Keep
            # a reference to the iterator: a collected one would close the response.)
            raw = stalled.aiter_raw()
            await anext(raw)
            (n,) = await refused_at.wait()
            assert n is not None  # the producer was told (send() -> False) and stopped
            assert streams[0].closed

            with anyio.move_on_after(DROP_WITHIN):
                await closes["/stalled"].wait()
                await app.finished.wait()
            assert closes["/stalled"].items == ["slow-client"], (
                f"{streams[0]!r} was not dropped within {DROP_WITHIN} s: on_close not "
                f"called, the driver still runs (active={app.active})"
            )
            assert app.active == 0

            # another client is served normally meanwhile
            async with httpx.AsyncClient() as other:
                _, body = await read_raw(other, url + "/healthy")
            assert body == b"data: a\n\ndata: b\n\ndata: c\n\n"
            assert await closes["/healthy"].wait() == ["complete"]
            await raw.aclose()
