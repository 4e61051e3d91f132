"""Worker processes for the cross-process and browser tests: ``tests.channels.worker`` run
by real hypercorn, one process per backend, sharing a redis-server of the test's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.channels.conftest import unique_prefix
from tests.conftest import _free_port, _wait_listening
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def workers(redis: RedisServer, backends: list[str]) -> AsyncIterator[list[Any]]:
    """Start one worker process per backend; yields ``[(url, process), ...]``."""
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "CHANNEL_PREFIX": unique_prefix(),
        "PYTHONPATH": str(ROOT),
    }
    started = []
    try:
        for backend in backends:
            port = _free_port()
            command = ["-m", "tests.channels.worker", "--bind", f"127.0.0.1:{port}"]
            process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
                [sys.executable, *command, "--worker", backend],
                cwd=ROOT,
                env=env,
            )
            started.append((f"http://127.0.0.1:{port}", process))
        for url, _ in started:
            await _wait_listening(int(url.rsplit(":", 1)[1]))
        yield started
    finally:
        for _, process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


async def post(client: httpx.AsyncClient, url: str) -> Any:
    response = await client.post(url, timeout=60)
    response.raise_for_status()
    return response.json()
