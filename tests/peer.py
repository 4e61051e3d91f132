"""An in-process ASGI peer for precise driver tests: records what the app sends, and can
disconnect, stall (stop reading) or fail its writes like a real server's client would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from asgi_stream.wire import PING


class Peer:
    def __init__(
        self,
        *,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[bytes, bytes]] | None = None,
        stall_after: int | None = None,
        fail_after: int | None = None,
        hold_at: int | None = None,
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers or [],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.messages: list[dict[str, Any]] = []
        self.stall_after = stall_after  # body messages accepted before writes block forever
        self.fail_after = fail_after  # body messages accepted before writes raise OSError
        self.stalled = anyio.Event()
        self.hold_at = hold_at  # this body message waits for release() (0 = the first body)
        self.held = anyio.Event()
        self._released = anyio.Event()
        self.senders: list[int] = []  # the task that sent each body message
        self._left = anyio.Event()
        self._request_sent = False
        self._changed = anyio.Event()
        self.sent_after_disconnect = 0

    # -- the ASGI callables --------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self._left.is_set():
            self.sent_after_disconnect += 1
        if message["type"] == "http.response.body":
            self.senders.append(anyio.get_current_task().id)
            if self.hold_at == len(self.bodies) and not self._released.is_set():
                self.held.set()
                await self._released.wait()
            if self.stall_after is not None and len(self.bodies) >= self.stall_after:
                self.stalled.set()
                await anyio.sleep_forever()
            if self.fail_after is not None and len(self.bodies) >= self.fail_after:
                raise OSError("connection reset by peer")
        self.messages.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    # -- what the test does and sees -----------------------------------------------------

    def release(self) -> None:
        self._released.set()

    def disconnect(self) -> None:
        self._left.set()

    async def wait_for(self, condition: Callable[[], bool], within: float = 5) -> None:
        with anyio.fail_after(within):
            while not condition():
                await self._changed.wait()

    @property
    def start(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["type"] == "http.response.start"), None)

    @property
    def status(self) -> int | None:
        return None if self.start is None else int(self.start["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.start["headers"]) if self.start else {}

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.bodies)

    @property
    def data(self) -> bytes:
        """The body without heartbeat frames."""
        return b"".join(m["body"] for m in self.bodies if m["body"] != PING)

    @property
    def finished(self) -> bool:
        """The final empty body (``more_body=False``) was sent."""
        return any(not m.get("more_body", False) for m in self.bodies)
