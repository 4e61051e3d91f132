"""A real ``redis-server`` for the tests: started on a free loopback port in a temporary
directory, without persistence, and stopped at the end. Debian's ``redis-server`` (``.ci/run``
installs it); without it the tests that need it skip with the reason, except under CI, where
they fail."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_or_skip() -> str:
    """The ``redis-server`` executable; skips (fails under CI) without one."""
    found = shutil.which(REDIS_SERVER)
    if found is None:
        reason = f"no {REDIS_SERVER} on PATH: apt-get install redis-server"
        if _under_ci():
            pytest.fail(f"the Redis tests must run in CI, but: {reason}", pytrace=False)
        pytest.skip(reason)
    return found


class RedisServer:
    """One ``redis-server`` process; ``restart()`` keeps its port and loses its data."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == "+PONG":
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port: the data is gone (no persistence)."""
        self.stop()
        self.start()

    def command(self, *words: str) -> str:
        """Send one inline command; the first line of the reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply.decode().split("\r\n", 1)[0]

    def kill_clients(self) -> int:
        """``CLIENT KILL`` every other client (pub/sub and commands); how many."""
        killed = 0
        for kind in ("normal", "pubsub"):
            reply = self.command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes")
            killed += int(reply.lstrip(":") or 0)
        return killed

    def clients(self) -> int:
        """Connected clients, this one excluded."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"CLIENT LIST\r\n")
            data = b""
            while True:
                data += sock.recv(1 << 20)
                head, _, rest = data.partition(b"\r\n")
                if head.startswith(b"$") and len(rest) >= int(head[1:]) + 2:
                    break
            return rest.decode().count("\n") - 1
