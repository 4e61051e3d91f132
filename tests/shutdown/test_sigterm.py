"""SIGTERM with open streams: asgi_stream.hypercorn ends every stream cleanly, then exits."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import _free_port, _wait_listening

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SERVER = textwrap.dedent(
    """
    import sys
    from hypercorn.config import Config
    from asgi_stream import Stream, StreamMiddleware
    from asgi_stream.hypercorn import run

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return None

        async def count(stream):
            n = 0
            while True:
                n += 1
                stream.send(n)
                await stream.wait(20)

        stream = Stream(count, ping=None)
        stream.on_close(lambda reason: print("closed", reason, flush=True))
        return stream

    config = Config()
    config.graceful_timeout = 1  # hypercorn's own wait for idle keep-alive connections, after ours
    run(StreamMiddleware(app), bind=sys.argv[1], grace=3_000, backend=sys.argv[2], config=config)
    """
)
STREAMS = 20
ROOT = Path(__file__).resolve().parents[2]


async def test_sigterm_ends_every_stream_cleanly_and_exits(
    tmp_path: Path, anyio_backend: str
) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = _free_port()
    async with await anyio.open_process(
        [sys.executable, str(script), f"127.0.0.1:{port}", anyio_backend],
        cwd=ROOT,
        stderr=None,
    ) as process:
        await _wait_listening(port)
        received = [0] * STREAMS
        all_open = anyio.Event()

        async def client(index: int, http: httpx.AsyncClient) -> None:
            url = f"http://127.0.0.1:{port}/"
            async with aconnect_sse(http, "GET", url) as source:
                async for _ in source.aiter_sse():  # raises if the body is cut off
                    received[index] += 1
                    if all(received):
                        all_open.set()

        limits = httpx.Limits(max_connections=STREAMS)
        async with httpx.AsyncClient(limits=limits, timeout=10) as http:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for index in range(STREAMS):
                        tg.start_soon(client, index, http)
                    await all_open.wait()
                    started = anyio.current_time()
                    process.send_signal(signal.SIGTERM)
                # every client's stream ended cleanly (no exception escaped the task group)
                streams_ended = anyio.current_time() - started
                await process.wait()
        exited = anyio.current_time() - started
        assert process.stdout is not None
        output = (await process.stdout.receive(1 << 20)).decode()
    assert process.returncode == 0
    assert output.count("closed shutdown") == STREAMS, output
    assert streams_ended < 1.0  # ended by our shutdown, not cut off by a timeout
    assert exited < 3.0 + 1.0 + 1.0  # within grace + hypercorn's graceful_timeout (+ slack)
