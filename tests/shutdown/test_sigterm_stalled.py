"""Shutdown while a socket write is stuck on a client that stopped reading.

Guarantee: ``asgi_stream.hypercorn.serve`` (and ``run``) stops within the stream ``grace`` plus
hypercorn's ``graceful_timeout`` (and a margin), even when a response write can never finish
because its client keeps the connection open without reading. Without a bound, hypercorn's
worker waits for as long as such a client stays: the trio worker shields every socket write
from cancellation; the asyncio worker's write (``drain()``) is cancellable, but its cleanup of a
connection it cut off waits on the client (the transport's flush, or a last HTTP/2 frame).
``docs/upstream.md`` has both as hypercorn bug reports.

- A server process (``tests.reliability.server``, run with ``asgi_stream.hypercorn.run``) gets
  SIGTERM while a stalled HTTP/1.1 client holds a stream whose queue is far larger than the
  loopback socket buffers: either fully queued (the stream completed, its last frames cannot
  be written) or dropped as ``"slow-client"`` with a write still in progress. (Unlike
  ``tests/reliability/test_shutdown_sigterm.py``, whose clients keep reading.) It must exit 0,
  within ``GRACE + GRACEFUL_TIMEOUT`` plus a margin, and run its lifespan shutdown.
- The same over HTTP/2: a connection that never reads, with enough flow-control credit
  (16 MiB) for hypercorn's connection writer to get stuck (both workers hung there).
- In this process: ``serve(..., shutdown_trigger=...)`` on the test's backend, a live stream
  (callback still running) whose 32 MiB frame is stuck: the stream gets
  ``on_close("shutdown")`` and ``serve`` returns within the same bound.
- The same for a plain ASGI response (no Stream: a download) cut off by hypercorn while its
  app waits in ``send()``, over HTTP/1.1 and HTTP/2: the asyncio worker's HTTP/2 stream then
  ends with a write that waits on the client, which no cancellation reaches (it failed before
  the transport of a cut-off connection was aborted at once).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h2.settings
import pytest
from hypercorn.config import Config

from asgi_stream import Stream, StreamMiddleware
from asgi_stream.hypercorn import serve
from tests.conftest import _free_port, _wait_listening, answer_lifespan, stream_app
from tests.helpers import Record, track
from tests.reliability.clients import H1, H2, server_process

pytestmark = pytest.mark.anyio

GRACE = 1_000  # ms: the streams' shutdown grace (serve(grace=...), --grace)
GRACEFUL_TIMEOUT = 1.0  # s: hypercorn's own wait for open connections
EXIT_WITHIN = 5.0  # s after the shutdown starts; healthy runs need GRACE + GRACEFUL_TIMEOUT
MiB = 1_048_576
FRAME = MiB
TOTAL = 32 * MiB
CLIENT_RCVBUF = 4_096
H2_WINDOW = 16 * MiB  # the stalled HTTP/2 stream's flow-control window (and the connection's)


def loopback_capacity() -> int:
    """An upper bound of what the kernel holds for one connection whose client does not read:
    the server's send buffer (autotuned up to tcp_wmem's maximum) plus the client's pinned
    receive buffer (the kernel doubles it)."""
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        core_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    except (OSError, ValueError, IndexError):  # not Linux: assume common defaults
        wmem_max = core_max = 4 * MiB
    return max(wmem_max, core_max) + 2 * CLIENT_RCVBUF


def test_the_queue_outgrows_the_socket_buffers() -> None:
    """Precondition of every test here: the stalled stream's bytes cannot all be handed to the
    kernel, so a write is surely stuck (not a test of the library)."""
    assert loopback_capacity() * 2 < min(TOTAL, H2_WINDOW)


async def stalled_client(port: int, target: str) -> H1:
    """An HTTP/1.1 client that sends its request, reads the response head, then stops."""
    client = H1(port)
    await client.connect(rcvbuf=CLIENT_RCVBUF)
    await client.request(target)
    assert await client.read_until(lambda c: c.status is not None)
    assert client.status == 200
    return client


async def stalled_h2_client(port: int, target: str) -> H2:
    """An HTTP/2 connection that opens one stream with a 16 MiB window (the connection has as
    much) and never reads: hypercorn's connection writer can write more than the kernel holds."""
    client = H2(port)
    await client.connect()
    raw = client.socket.extra(anyio.abc.SocketAttribute.raw_socket) if client.socket else None
    assert raw is not None
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW})
    await client.get(target)  # (sends the settings first)
    return client


@pytest.mark.slow
@pytest.mark.parametrize("case", ["queued", "dropped", "http2"])
async def test_sigterm_exits_with_a_write_stuck_on_a_stalled_client(
    anyio_backend: str, case: str
) -> None:
    """``queued``: every byte queued, then ``close()``: the last frames cannot go out.
    ``dropped``: more than max_buffer waits behind the stuck write: dropped as slow-client,
    the write stays. ``http2``: every byte queued, hypercorn's connection writer is stuck."""
    async with server_process(
        anyio_backend,
        "--grace",
        str(GRACE),
        "--graceful-timeout",
        str(GRACEFUL_TIMEOUT),
        "--max-buffer",
        str(2 * TOTAL),
    ) as server:
        client: H1 | H2
        flood = f"/flood?frame={FRAME}&total={TOTAL}"
        with anyio.fail_after(30):
            if case == "dropped":
                client = await stalled_client(server.port, f"{flood}&max_buffer={4 * MiB}")
                stats = await server.stats(until="closes:flood:slow-client", timeout=20)
                assert stats["closes"] == {"flood:slow-client": 1}, stats
            else:
                if case == "queued":
                    client = await stalled_client(server.port, flood)
                else:
                    client = await stalled_h2_client(server.port, flood)
                stats = await server.stats(until="cleaned:flood", timeout=20)
                assert stats["cleaned"] == {"flood": 1}, stats
        # Complete but not all written when the grace ran out: cut off by the shutdown.
        expected = {"flood:slow-client" if case == "dropped" else "flood:shutdown": 1}

        with anyio.move_on_after(EXIT_WITHIN) as waited:
            exited_after = await server.terminate()
        if waited.cancelled_caught:
            await client.aclose()  # lets the stuck write fail, so that the server can exit
        assert not waited.cancelled_caught, (
            f"the {anyio_backend} server was still running {EXIT_WITHIN} s after SIGTERM "
            f"(grace {GRACE} ms, graceful_timeout {GRACEFUL_TIMEOUT} s): a write to a client "
            f"that stopped reading held it"
        )
        await client.aclose()
    assert server.process.returncode == 0, server.output()
    assert exited_after >= GRACEFUL_TIMEOUT * 0.9  # the client really was stuck till the cut
    final = server.final()  # the lifespan shutdown ran
    assert final["closes"] == expected, final
    assert (final["active"], final["requests"], final["stream_tasks"]) == (0, 0, 0), final


async def stop_with_a_stalled_client(
    app: StreamMiddleware, stall: Callable[[int], Awaitable[H1 | H2]], writing: anyio.Event
) -> float | None:
    """``serve(app)`` on the test's backend; ``stall(port)`` connects a client that stops
    reading, and once ``writing`` is set the shutdown is triggered. How long ``serve`` took
    to return, or ``None`` if it had not within ``EXIT_WITHIN`` (the client then leaves,
    which releases a write still stuck, so that the test can end)."""
    config = Config()
    port = _free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.loglevel = "WARNING"
    stop, returned = anyio.Event(), anyio.Event()
    client: H1 | H2 | None = None

    async def run_server() -> None:
        await serve(app, config, grace=GRACE, shutdown_trigger=stop.wait)
        returned.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_server)
        try:
            with anyio.fail_after(10):
                await _wait_listening(port)
                client = await stall(port)
                await writing.wait()
            started = anyio.current_time()
            stop.set()
            with anyio.move_on_after(EXIT_WITHIN) as waited:
                await returned.wait()
            took = anyio.current_time() - started
        finally:
            if client is not None:
                await client.aclose()
            with anyio.fail_after(10):
                await returned.wait()
    return None if waited.cancelled_caught else took


@pytest.mark.slow
async def test_serve_returns_with_a_live_stream_stuck_on_a_stalled_client(
    anyio_backend: str,
) -> None:
    closes = Record()
    queued = anyio.Event()

    async def flood(stream: Stream) -> None:
        assert stream.send(b"data: " + b"x" * TOTAL + b"\n\n")
        queued.set()
        await anyio.sleep_forever()  # a live producer: shutdown must end it

    app = StreamMiddleware(stream_app(lambda scope: track(Stream(flood), closes)))
    took = await stop_with_a_stalled_client(
        app, lambda port: stalled_client(port, "/stalled"), queued
    )
    assert took is not None, (
        f"serve() had not returned {EXIT_WITHIN} s after its shutdown trigger (grace {GRACE} "
        f"ms, graceful_timeout {GRACEFUL_TIMEOUT} s): a write to a client that stopped "
        f"reading held it; on_close so far: {closes.items}"
    )
    assert closes.items == ["shutdown"]
    assert took >= GRACE / 1000 * 0.9  # the stream's final frame could not go out either
    assert app.active == 0


@pytest.mark.slow
@pytest.mark.parametrize("http", ["1.1", "2"])
async def test_serve_returns_with_a_plain_response_stuck_on_a_stalled_client(
    anyio_backend: str, http: str
) -> None:
    """Not every response is a Stream: a plain ASGI response (a large download, say) that
    hypercorn cuts off while its app waits in ``send()`` must not hold the shutdown either.
    hypercorn's asyncio worker, cancelled there over HTTP/2, ends the stream with a last
    write that waits for the stalled client without end (the app's own task, no longer
    cancellable), so a connection cut off must lose its transport at once."""
    sending = anyio.Event()

    async def download(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sending.set()
        while True:
            await send({"type": "http.response.body", "body": b"x" * MiB, "more_body": True})

    stall = stalled_h2_client if http == "2" else stalled_client
    took = await stop_with_a_stalled_client(
        StreamMiddleware(download), lambda port: stall(port, "/download"), sending
    )
    assert took is not None, (
        f"serve() had not returned {EXIT_WITHIN} s after its shutdown trigger "
        f"(graceful_timeout {GRACEFUL_TIMEOUT} s): a plain response's write to a client "
        f"that stopped reading held it"
    )
    assert took >= GRACEFUL_TIMEOUT * 0.9  # it was cut off, not finished
