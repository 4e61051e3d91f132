"""hypercorn, asyncio worker: a shutdown never ends while a client that stopped reading stays
connected, whatever ``graceful_timeout`` says (HTTP/1.1 and HTTP/2).

One process, plain hypercorn on asyncio, once per protocol: the app streams a response; the
client sends its request, then reads nothing (and keeps the connection open, as a frozen
browser tab does). The HTTP/2 client grants a large flow-control window, as browsers do, so
that the socket buffers fill. A shutdown with ``graceful_timeout = 1`` should cut the
connection off after a second; instead ``serve()`` returns only when the client goes.
Exit status 1 and "DEFECT" when it shows, 0 otherwise.

    python hypercorn_asyncio_cut_off.py
"""

import asyncio
import socket
import sys

import h2.config
import h2.connection
import h2.settings
from hypercorn.asyncio import serve
from hypercorn.config import Config

GRACE = 1.0  # graceful_timeout, seconds
PATIENCE = 4.0  # how long after GRACE the script waits for serve() to return
CHUNK = b"x" * 65_536
WINDOW = 2**31 - 1  # the HTTP/2 client's flow-control window: never the limit
sending = returned = 0  # how many body sends the app has begun, and seen return


async def app(scope, receive, send):
    global sending, returned
    if scope["type"] == "lifespan":
        for step in ("startup", "shutdown"):
            await receive()
            await send({"type": f"lifespan.{step}.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        sending += 1
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        returned += 1


def request(http):
    """The bytes of ``GET /`` over ``http``; HTTP/2 with prior knowledge and a large window."""
    if http == "HTTP/1.1":
        return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW}
    )
    connection.initiate_connection()
    connection.increment_flow_control_window(WINDOW - 65_535)
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    connection.send_headers(1, headers, end_stream=True)
    return connection.data_to_send()


async def until_send_stops_returning():
    for _ in range(100):
        before = returned
        await asyncio.sleep(0.2)
        if returned == before < sending:  # one send() has not returned for 0.2 s
            return
    raise RuntimeError("the socket buffers never filled")


async def shutdown_with_a_stalled_client(http):
    """Whether serve() ended within GRACE + PATIENCE seconds of the shutdown."""
    loop = asyncio.get_running_loop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = GRACE
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    for _ in range(100):  # until hypercorn listens
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            client.close()
            await asyncio.sleep(0.05)
    await loop.sock_sendall(client, request(http))
    await until_send_stops_returning()  # the client reads nothing: the buffers fill
    stop.set()
    began = loop.time()
    done, _ = await asyncio.wait({server}, timeout=GRACE + PATIENCE)
    if done:
        print(f"{http}: serve() returned {loop.time() - began:.1f} s after the shutdown began")
    else:
        print(
            f"{http}: DEFECT: hypercorn still serving {GRACE + PATIENCE:.1f} s after the"
            f" shutdown began, with graceful_timeout = {GRACE} s"
        )
    client.close()  # the client goes: only now can the connection's last wait end
    await asyncio.wait({server})
    if server.exception() is not None:
        print(f"{http}: and then serve() raised {server.exception()!r}")
    return bool(done)


def quiet_cancelled(loop, context):
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def main():
    # Python 3.11's streams log the connection task that hypercorn cancels at shutdown
    # (nothing to do with this report): keep the output to what is.
    asyncio.get_running_loop().set_exception_handler(quiet_cancelled)
    ended = [await shutdown_with_a_stalled_client(http) for http in ("HTTP/1.1", "HTTP/2")]
    return 0 if all(ended) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
