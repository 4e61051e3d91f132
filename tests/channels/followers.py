"""Clients that follow a topic the way a browser's ``EventSource`` does, for the
cross-process tests: reconnect when the stream ends or the worker dies (to the next worker,
with ``Last-Event-ID``), stop on ``204``. Real HTTP (httpx, httpx-sse)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from httpx_sse import EventSource


@dataclass
class Received:
    id: str
    event: str
    data: Any


@dataclass
class Follower:
    """One EventSource: ``run`` follows ``topic`` starting at ``workers[home]``."""

    workers: list[str]
    home: int
    topic: str
    last_id: str | None = None
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    streaming_from: int | None = None  # the worker whose stream it is reading now
    statuses: list[int] = field(default_factory=list)
    stop_after: int | None = None  # leave after this many events (a client that goes away)
    changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def data(self) -> list[Any]:
        """The data of every event but the reset events, in the order received."""
        return [r.data for r in self.received if r.event not in ("reset", "end")]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.received if r.event not in ("reset", "end")]

    @property
    def resets(self) -> list[Received]:
        return [r for r in self.received if r.event == "reset"]

    def _record(self, received: Received) -> None:
        self.received.append(received)
        self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, condition: Any, within: float = 30) -> None:
        with anyio.fail_after(within):
            while not condition(self):
                await self.changed.wait()

    async def run(self, client: httpx.AsyncClient) -> None:
        index = self.home
        while True:
            url = f"{self.workers[index % len(self.workers)]}/events/{self.topic}"
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                async with client.stream("GET", url, headers=headers) as response:
                    self.requests += 1
                    self.statuses.append(response.status_code)
                    if response.status_code == 204:
                        self._record(Received("", "end", None))
                        return  # EventSource stops reconnecting
                    response.raise_for_status()
                    self.streaming_from = index % len(self.workers)
                    self._changed()
                    async for sse in EventSource(response).aiter_sse():
                        if sse.id:
                            self.last_id = sse.id
                        self._record(Received(sse.id, sse.event, json.loads(sse.data)))
                        if self.stop_after is not None and len(self.received) >= self.stop_after:
                            return
            except httpx.TransportError:  # the worker died: another one
                index += 1
                await anyio.sleep(0.02)
