"""hypercorn, HTTP/2: an ASGI app's ``send()`` never waits while the client grants no
flow-control window, so hypercorn buffers the response without bound.

One process, plain hypercorn and h2 (its own dependency): the app sends 10 MiB in 16 KiB
chunks; the client reads every byte off its socket but never sends WINDOW_UPDATE, so the
stream's window stays at its initial 65,535 bytes. ``send()`` should then wait once
hypercorn's stream buffer passes its high-water mark (32 KiB); instead it returns at once,
every time. Exit status 1 and "DEFECT" when it shows, 0 otherwise.

    python hypercorn_h2_zero_window.py
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

CHUNK = b"x" * 16_384
CHUNKS = 640  # 10 MiB
accepted = 0  # bytes the app's send() has returned for
app_done = asyncio.Event()


async def app(scope, receive, send):
    global accepted
    if scope["type"] == "lifespan":
        for step in ("startup", "shutdown"):
            await receive()
            await send({"type": f"lifespan.{step}.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(CHUNKS):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        accepted += len(CHUNK)
    app_done.set()
    await send({"type": "http.response.body", "body": b""})


async def client(port):
    """GET / over h2c with prior knowledge; read everything, grant no more window."""
    for _ in range(100):  # until hypercorn listens
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    connection.send_headers(1, headers, end_stream=True)
    writer.write(connection.data_to_send())
    received = 0
    try:
        while data := await reader.read(65_536):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data)  # never acknowledged: no WINDOW_UPDATE
            writer.write(connection.data_to_send())  # SETTINGS/PING acks only
    except asyncio.CancelledError:  # main() has seen enough
        pass
    writer.close()
    return received


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
    reading = asyncio.create_task(client(port))
    with contextlib.suppress(TimeoutError):  # send() waited: what flow control is for
        await asyncio.wait_for(app_done.wait(), timeout=2)
    returned_for = accepted
    reading.cancel()
    received = await reading
    # Python 3.11's streams log the connection task that hypercorn cancels at shutdown
    # (nothing to do with this report): keep the output to what is.
    asyncio.get_running_loop().set_exception_handler(quiet_cancelled)
    stop.set()
    await server
    print(f"client received {received:,} bytes; the app's send() returned for {returned_for:,}")
    if returned_for - received > 1024 * 1024:
        print(f"DEFECT: hypercorn holds {returned_for - received:,} bytes the client cannot take")
        return 1
    print("ok: send() waited for the client's window")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
