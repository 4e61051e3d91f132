"""The app of tests/shutdown/test_uvicorn_sigterm.py, served by ``uvicorn`` in a subprocess:
endless streams that print how they ended. ``GRACEFUL=1`` wraps it with
``asgi_stream.uvicorn.graceful`` (as a user's module would); otherwise it is plain uvicorn."""

from __future__ import annotations

import os
from typing import Any

from asgi_stream import Stream, StreamMiddleware
from asgi_stream.uvicorn import graceful


async def inner(scope: Any, receive: Any, send: Any) -> Stream | None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        print(f"lifespan shutdown {os.getpid()}", flush=True)
        await send({"type": "lifespan.shutdown.complete"})
        return None

    async def count(stream: Stream) -> None:
        n = 0
        while True:
            n += 1
            stream.send({"n": n, "pid": os.getpid()})
            await stream.wait(20)

    stream = Stream(count, ping=None)
    stream.on_close(lambda reason: print(f"closed {reason} {os.getpid()}", flush=True))
    return stream


app = StreamMiddleware(inner)
if os.environ.get("GRACEFUL") == "1":
    app = graceful(app, grace=3_000)
