"""FastAPI + asgi_stream.

python examples/fastapi_app.py       # then: curl -N http://127.0.0.1:8004/clock
                                     #   or:  curl -N 'http://127.0.0.1:8004/count/5?every_ms=500'
"""

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Annotated

from fastapi import Depends, FastAPI

from asgi_stream import StreamMiddleware, wait
from asgi_stream.hypercorn import run
from asgi_stream.starlette import Stream  # a Stream that is also a Starlette Response

api = FastAPI()


class Session:  # stands for a database session
    open = True


async def get_session() -> AsyncIterator[Session]:
    session = Session()
    try:
        yield session  # stays open until the stream has ended (scope="request", the default)
    finally:
        session.open = False


@api.get("/count/{to}")
async def count(
    to: int, session: Annotated[Session, Depends(get_session)], every_ms: int = 1_000
) -> Stream:
    async def numbers() -> AsyncIterator[dict[str, object]]:
        for n in range(1, to + 1):
            yield {"n": n, "session_open": session.open}
            await wait(every_ms)

    return Stream(numbers(), event="count")


@api.get("/clock")
async def clock() -> Stream:
    async def tick(stream: Stream) -> None:
        while True:  # until the client leaves or the server shuts down
            stream.send(datetime.now(timezone.utc).strftime("%H:%M:%S"), event="tick")
            await stream.wait(1_000)

    return Stream(tick)


# Outermost, and kept: app.active counts the streams, app.shutdown() ends them.
app = StreamMiddleware(api)

if __name__ == "__main__":
    # hypercorn; its shutdown trigger (Ctrl-C, SIGTERM) first calls app.shutdown(), which
    # ends every live stream cleanly, then hypercorn stops.
    run(app, bind="127.0.0.1:8004")
