"""hypercorn, HTTP/2: a stream whose app returns (or raises) after starting its response,
without its final body, is never ended: the client waits for ever.

One process, plain hypercorn and h2 (its own dependency): the app starts a response, sends
one chunk with ``more_body: True`` and returns. Over HTTP/1.1 hypercorn then closes the
connection, and the client knows that the response is cut short. Over HTTP/2 the stream
should end the same way (RST_STREAM); instead it stays open for as long as the connection
lives. Exit status 1 and "DEFECT" when it shows, 0 otherwise.

    python hypercorn_h2_unfinished_stream.py
"""

import asyncio
import contextlib
import socket
import sys

import h2.config
import h2.connection
import h2.events
from hypercorn.asyncio import serve
from hypercorn.config import Config

WITHIN = 3.0  # seconds the client waits for the stream to end


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        for step in ("startup", "shutdown"):
            await receive()
            await send({"type": f"lifespan.{step}.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    # ... and returns: an error, a client dropped for being slow, a bug. No final body.


async def connect(port):
    for _ in range(100):  # until hypercorn listens
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    raise ConnectionRefusedError(port)


async def http2_get(port):
    """GET / over h2c with prior knowledge; what ended stream 1, or None."""
    reader, writer = await connect(port)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    connection.send_headers(1, headers, end_stream=True)
    writer.write(connection.data_to_send())
    ended = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WITHIN):
            while ended is None and (data := await reader.read(65_536)):
                for event in connection.receive_data(data):
                    if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        ended = type(event).__name__
                writer.write(connection.data_to_send())
    writer.close()
    return ended


async def http11_get(port):
    """GET / over HTTP/1.1; whether hypercorn closed the connection within WITHIN."""
    reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    closed = False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WITHIN):
            while await reader.read(65_536):
                pass
            closed = True
    writer.close()
    return closed


def quiet_cancelled(loop, context):
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def main():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 0.1
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    closed = await http11_get(port)
    ended = await http2_get(port)
    # Python 3.11's streams log the connection task that hypercorn cancels at shutdown
    # (nothing to do with this report): keep the output to what is.
    asyncio.get_running_loop().set_exception_handler(quiet_cancelled)
    stop.set()
    await server
    print(f"HTTP/1.1: connection closed within {WITHIN} s: {closed}")
    print(f"HTTP/2: stream 1 ended within {WITHIN} s: {ended or 'no, still open'}")
    if ended is None:
        print("DEFECT: the HTTP/2 client is left waiting for a response that will never end")
        return 1
    print("ok: the unfinished HTTP/2 stream was ended")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
