"""A minimal Quart app whose view returns a Stream.

python examples/quart_app.py        # then: curl -N http://127.0.0.1:8001/events
"""

import sys

from quart import Quart

from asgi_stream import Stream
from asgi_stream.hypercorn import run
from asgi_stream.quart import init_app

app = Quart(__name__)
streams = init_app(app)  # app.asgi_app is now this StreamMiddleware


@app.get("/events")
async def events() -> Stream:
    async def count(stream: Stream) -> None:
        for n in range(1_000):
            stream.send({"n": n})
            await stream.wait(1_000)
        stream.close()

    return Stream(count)


if __name__ == "__main__":
    # hypercorn on 127.0.0.1:8001; its shutdown trigger (Ctrl-C, SIGTERM) first calls
    # streams.shutdown(), which ends every live stream cleanly, then hypercorn stops.
    run(streams, bind=f"127.0.0.1:{sys.argv[1] if len(sys.argv) > 1 else 8001}")
