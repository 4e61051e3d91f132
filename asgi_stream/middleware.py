"""StreamMiddleware: drives the Streams an ASGI app returns, and ends them on shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from .driver import drive, send_plain
from .stream import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_PING,
    Stream,
    check_max_buffer,
    check_ping,
    current_scope,
)

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

__all__ = ["StreamMiddleware"]


class StreamMiddleware:
    """Wrap any ASGI app; when it *returns* a :class:`Stream` without having responded,
    drive that Stream. Keeps a registry of live streams for :meth:`shutdown`."""

    def __init__(
        self, app: Any, *, ping: float | None = DEFAULT_PING, max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> None:
        check_ping(ping)
        check_max_buffer(max_buffer)
        self.app = app
        self.ping = ping
        self.max_buffer = max_buffer
        self._live: set[Stream] = set()
        self._idle: anyio.Event | None = None
        self._closing = False

    @property
    def active(self) -> int:
        """Number of streams being sent right now."""
        return len(self._live)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: ASGISendEvent) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        token = current_scope.set(scope)
        try:
            result = await self.app(scope, receive, tracked_send)
        finally:
            current_scope.reset(token)
        if isinstance(result, Stream) and not started:
            await self.run(result, scope, receive, send)

    async def run(
        self, stream: Stream, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Drive ``stream`` as a tracked stream of this middleware (503 once shutting down)."""
        if self._closing:
            stream._claim()
            stream._end("shutdown")
            await stream._cleanup()
            await send_plain(send, 503, "Service Unavailable: the server is shutting down\n")
            return
        self._live.add(stream)
        try:
            await drive(stream, scope, receive, send, ping=self.ping, max_buffer=self.max_buffer)
        finally:
            self._live.discard(stream)
            if not self._live and self._idle is not None:
                self._idle.set()

    async def shutdown(self, grace: float = 5_000) -> None:
        """End every live stream (``on_close("shutdown")``, final empty body), waiting at most
        ``grace`` ms before cutting the rest off; Streams returned afterwards get a 503."""
        self._closing = True
        for stream in list(self._live):
            stream._end("shutdown")
        with anyio.move_on_after(grace / 1000):
            while self._live:
                self._idle = anyio.Event()
                await self._idle.wait()
        for stream in list(self._live):
            if stream._abort is not None:
                stream._abort()
        while self._live:  # cancelled drivers only run their shielded cleanup now
            self._idle = anyio.Event()
            await self._idle.wait()
