"""Starlette + asgi_stream.

python examples/starlette_app.py     # then: curl -N http://127.0.0.1:8003/clock
                                     #   or:  curl -N 'http://127.0.0.1:8003/count?to=5'
"""

from collections.abc import AsyncIterator
from datetime import datetime, timezone

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from asgi_stream import Stream, StreamMiddleware
from asgi_stream.hypercorn import run


async def clock(request: Request) -> Stream:
    async def tick(stream: Stream) -> None:
        while True:  # until the client leaves or the server shuts down
            stream.send(datetime.now(timezone.utc).strftime("%H:%M:%S"), event="tick")
            await stream.wait(1_000)

    return Stream(tick)


async def count(request: Request) -> Stream:
    async def numbers(to: int) -> AsyncIterator[int]:
        for n in range(1, to + 1):
            yield n

    return Stream(numbers(int(request.query_params.get("to", "10"))))


# Outermost, and kept: app.active counts the streams, app.shutdown() ends them.
app = StreamMiddleware(Starlette(routes=[Route("/clock", clock), Route("/count", count)]))

if __name__ == "__main__":
    # hypercorn; its shutdown trigger (Ctrl-C, SIGTERM) first calls app.shutdown(), which
    # ends every live stream cleanly, then hypercorn stops.
    run(app, bind="127.0.0.1:8003")
