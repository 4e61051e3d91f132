"""hypercorn, trio worker: a shutdown never ends while a client that stopped reading stays
connected, whatever ``graceful_timeout`` says.

One process, plain hypercorn on trio: the app streams a response; the client reads the head,
then stops reading (and keeps the connection open, as a frozen browser tab does). Once the
socket buffers are full, the app's ``send()`` waits in hypercorn's socket write, which the
trio worker shields from cancellation. A shutdown with ``graceful_timeout = 1`` should cut
the connection off after a second; instead ``serve()`` returns only when the client goes.
Exit status 1 and "DEFECT" when it shows, 0 otherwise.

    python hypercorn_trio_shielded_write.py
"""

import socket
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

GRACE = 1.0  # graceful_timeout, seconds
PATIENCE = 5.0  # how long after GRACE the script waits for serve() to return
CHUNK = b"x" * 65_536
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


async def until_send_stops_returning():
    for _ in range(100):
        before = returned
        await trio.sleep(0.2)
        if returned == before < sending:  # one send() has not returned for 0.2 s
            return
    raise RuntimeError("the socket buffers never filled")


async def main():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = GRACE
    stop = trio.Event()
    stopped = trio.Event()

    async def run_server():
        await serve(app, config, shutdown_trigger=stop.wait)
        stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server)
        for _ in range(100):  # until hypercorn listens
            client = trio.socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            try:
                await client.connect(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                client.close()
                await trio.sleep(0.05)
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await until_send_stops_returning()  # the client reads nothing: the buffers fill
        stop.set()
        began = trio.current_time()
        with trio.move_on_after(GRACE + PATIENCE):
            await stopped.wait()
        took = trio.current_time() - began
        if not stopped.is_set():
            print(
                f"DEFECT: hypercorn still serving {took:.1f} s after the shutdown began,"
                f" with graceful_timeout = {GRACE} s"
            )
        client.close()  # the client goes: only now does the shielded write fail
        await stopped.wait()
        print(f"serve() returned {trio.current_time() - began:.1f} s after the shutdown began")
    return 0 if took <= GRACE + 1 else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
