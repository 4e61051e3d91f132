"""SIGTERM to uvicorn with 100 open streams, in a subprocess (``tests/shutdown/uvicorn_app.py``).

With ``asgi_stream.uvicorn.graceful`` (one worker, and ``--workers 2``) every client sees a
clean end (``on_close("shutdown")``, final frame) and the process exits within the grace.
Plain uvicorn, for the record (README): without ``--timeout-graceful-shutdown`` it never
exits while a stream is open; with it, it cuts every stream off mid-body when it expires.

asyncio only: uvicorn runs on asyncio (the client's backend is not what is tested here).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import _free_port, _wait_listening
from tests.reliability.clients import raise_nofile

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STREAMS = 100
GRACE = 3.0  # seconds: the app's graceful(grace=3_000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def uvicorn(port: int, *options: str, graceful: bool) -> anyio.abc.Process:
    env = {**os.environ, "GRACEFUL": "1" if graceful else "0", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "uvicorn", "tests.shutdown.uvicorn_app:app"]
    process = await anyio.open_process(
        [*command, "--port", str(port), "--log-level", "warning", *options],
        cwd=ROOT,
        env=env,
        stderr=None,
    )
    await _wait_listening(port)
    return process


class Clients:
    """``STREAMS`` SSE clients; ``ended`` counts clean ends, ``cut`` bodies cut off."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.received = [0] * STREAMS
        self.all_open = anyio.Event()
        self.ended = self.cut = 0

    async def one(self, index: int, http: httpx.AsyncClient) -> None:
        try:
            async with aconnect_sse(http, "GET", self.url) as source:
                async for _ in source.aiter_sse():  # raises if the body is cut off
                    self.received[index] += 1
                    if all(self.received):
                        self.all_open.set()
        except httpx.HTTPError:
            self.cut += 1
        else:
            self.ended += 1


async def open_streams_then_sigterm(process: anyio.abc.Process, port: int) -> tuple[Clients, float]:
    """Open every stream, SIGTERM once all of them flow; wait for every client to end.
    Returns them and how long after the signal the last one ended."""
    raise_nofile(4 * STREAMS)
    clients = Clients(port)
    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for index in range(STREAMS):
                    tg.start_soon(clients.one, index, http)
                await clients.all_open.wait()
                started = anyio.current_time()
                process.send_signal(signal.SIGTERM)
    return clients, anyio.current_time() - started


async def output_of(process: anyio.abc.Process) -> str:
    with anyio.fail_after(15):
        await process.wait()
    assert process.stdout is not None
    chunks = []
    async for chunk in process.stdout:
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("workers", [1, 2])
async def test_graceful_ends_every_stream_cleanly_then_uvicorn_exits(workers: int) -> None:
    port = _free_port()
    process = await uvicorn(port, "--workers", str(workers), graceful=True)
    async with process:
        clients, streams_ended = await open_streams_then_sigterm(process, port)
        started = anyio.current_time() - streams_ended
        output = await output_of(process)
        exited = anyio.current_time() - started
    assert (clients.ended, clients.cut) == (STREAMS, 0)
    assert output.count("closed shutdown") == STREAMS, output
    assert streams_ended < 1.0  # ended by StreamMiddleware.shutdown, not cut off by a timeout
    assert exited < GRACE + 2.0, exited
    # uvicorn re-raises the signal once it has shut down (a single worker then ends "killed
    # by SIGTERM", as its parent expects); its supervisor of several workers exits 0
    assert process.returncode in (0, -signal.SIGTERM)
    serving = {line.split()[-1] for line in output.splitlines() if line.startswith("closed")}
    assert 1 <= len(serving) <= workers
    assert output.count("lifespan shutdown") == workers  # then uvicorn's own shutdown ran


async def test_plain_uvicorn_with_a_graceful_timeout_cuts_every_stream_off() -> None:
    port = _free_port()
    process = await uvicorn(port, "--timeout-graceful-shutdown", "1", graceful=False)
    async with process:
        clients, streams_ended = await open_streams_then_sigterm(process, port)
        output = await output_of(process)
    assert (clients.ended, clients.cut) == (0, STREAMS)  # truncated bodies: no clean end
    assert 0.9 < streams_ended < 3.0  # when the timeout expired
    assert "closed shutdown" not in output


async def test_plain_uvicorn_without_a_graceful_timeout_never_exits_under_open_streams() -> None:
    port = _free_port()
    process = await uvicorn(port, graceful=False)
    async with process:
        clients = Clients(port)
        limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=0)
        async with (
            httpx.AsyncClient(limits=limits, timeout=30) as http,
            anyio.create_task_group() as tg,
        ):
            for index in range(STREAMS):
                tg.start_soon(clients.one, index, http)
            with anyio.fail_after(30):
                await clients.all_open.wait()
            process.send_signal(signal.SIGTERM)
            before = sum(clients.received)
            with anyio.move_on_after(3):  # it should exit now; it does not
                await process.wait()
            assert process.returncode is None
            assert sum(clients.received) > before  # and the streams still flow
            process.kill()
            await process.wait()
            tg.cancel_scope.cancel()
