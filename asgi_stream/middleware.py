"""StreamMiddleware: drives the Streams an ASGI app returns or hands over, and ends them on
shutdown.

A framework that cannot return an arbitrary object hands its Stream over with
:func:`hand_over` and sends an empty *stand-in* response instead. The stand-in carries a
per-request secret marker, so only it is intercepted: the middleware keeps the headers the
framework added to it (cookies, CORS), drops its body, and sends the Stream in its place.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio

from .driver import drive_claimed, send_plain
from .stream import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_PING,
    CloseReason,
    Stream,
    check_max_buffer,
    check_ping,
    current_request,
)

if TYPE_CHECKING:
    from asgiref.typing import (
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        ASGISendEvent,
        Scope,
    )

__all__ = ["HANDOFF_HEADER", "StreamMiddleware", "hand_over"]

HANDOFF_HEADER = "x-asgi-stream-handoff"
_MARKER = HANDOFF_HEADER.encode()
# Headers of the stand-in that describe its (empty) body, not the stream.
_BODY_HEADERS = frozenset(
    {
        b"content-length",
        b"content-encoding",
        b"transfer-encoding",
        b"connection",
        b"etag",
        b"last-modified",
        _MARKER,
    }
)


class _Request:
    """One http request handled by the middleware: where a Stream may be handed over."""

    __slots__ = ("captured", "middleware", "scope", "stand_in", "status", "stream", "token")

    def __init__(self, middleware: StreamMiddleware, scope: Scope) -> None:
        self.middleware = middleware
        self.scope = scope
        self.token = secrets.token_hex(16).encode()
        self.stream: Stream | None = None
        self.stand_in: list[tuple[bytes, bytes]] = []
        self.captured: list[tuple[bytes, bytes]] | None = None
        self.status: int | None = None

    async def run(
        self, stream: Stream, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await self.middleware.run(stream, scope, receive, send)

    def hand_over(self, stream: Stream) -> list[tuple[str, str]]:
        if self.stream is not None and self.stream is not stream:
            raise RuntimeError("this request has already handed over another Stream")
        self.stream = stream
        self.stand_in = [*stream._response_headers(), (_MARKER, self.token)]
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.stand_in]

    def is_stand_in(self, message: ASGISendEvent) -> bool:
        headers: Any = message.get("headers", ())
        return self.stream is not None and any(
            name.lower() == _MARKER and value == self.token for name, value in headers
        )

    def added_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers the framework added to the stand-in (cookies, CORS, security)."""
        assert self.stream is not None and self.captured is not None
        expected = Counter((name.lower(), value) for name, value in self.stand_in)
        own = {name for name, _ in self.stand_in}
        added = []
        for name, value in self.captured:
            pair = (name.lower(), value)
            if expected[pair] > 0:
                expected[pair] -= 1
            elif pair[0] not in _BODY_HEADERS and (pair[0] not in own or pair[0] == b"set-cookie"):
                added.append(pair)
        return added


async def _discard(stream: Stream, reason: CloseReason = "error") -> None:
    """A Stream that will never be sent: close what it holds and tell its on_close."""
    if not stream._claimed:
        stream._claim()
        stream._end(reason)
        await stream._cleanup()


def hand_over(stream: Stream) -> list[tuple[str, str]]:
    """Give ``stream`` to the StreamMiddleware handling the current request (for framework
    integrations). Answer with an empty stand-in response: status ``stream.status`` and the
    returned headers. The middleware sends the Stream in its place, with the stand-in's
    status and every header the framework added to it."""
    if not isinstance(stream, Stream):
        raise TypeError(f"hand_over() takes a Stream, not {type(stream).__name__}")
    request = current_request.get()
    if not isinstance(request, _Request):
        raise RuntimeError(
            "no StreamMiddleware handles this request: wrap the ASGI application, "
            "e.g. app = asgi_stream.StreamMiddleware(app)"
        )
    return request.hand_over(stream)


def _teach_framework(app: object) -> None:
    """The one place where this layer knows its integrations, so that the natural wiring
    works: no framework is imported here, only recognised if the app already imported it.

    - Quart: ``app.asgi_app = StreamMiddleware(app.asgi_app)`` also needs the app's
      ``make_response`` to turn a Stream into a stand-in (``asgi_stream.quart``).
    - FastAPI would silently JSON-encode a plain Stream returned by an endpoint;
      ``asgi_stream.starlette`` makes that a clear error naming the class to return."""
    quart = sys.modules.get("quart")
    owner = getattr(app, "__self__", None)
    if quart is not None and isinstance(owner, quart.Quart):
        from .quart import accept_streams

        accept_streams(owner)
    if "fastapi" in sys.modules:
        from . import starlette  # noqa: F401  (registers the refusal with FastAPI's encoder)


class StreamMiddleware:
    """Wrap any ASGI app; when it *returns* (or hands over) a :class:`Stream` without having
    responded, drive that Stream. Keeps a registry of live streams for :meth:`shutdown`."""

    def __init__(
        self, app: Any, *, ping: float | None = DEFAULT_PING, max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> None:
        check_ping(ping)
        check_max_buffer(max_buffer)
        _teach_framework(app)
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
        request = _Request(self, scope)
        started = disconnected = False

        async def replaying_receive() -> ASGIReceiveEvent:
            # A framework may read the disconnect in its own task; the driver must see it too.
            nonlocal disconnected
            if disconnected:
                return {"type": "http.disconnect"}
            message = await receive()
            disconnected = message["type"] == "http.disconnect"
            return message

        async def tracked_send(message: ASGISendEvent) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if request.is_stand_in(message):
                    request.captured = list(message.get("headers", ()))
                    request.status = int(message["status"])  # e.g. Quart's (body, status)
                    return
                started = True
            elif not started and request.captured is not None:
                return  # the stand-in's body
            await send(message)

        token = current_request.set(request)
        try:
            result = await self.app(scope, replaying_receive, tracked_send)
        finally:
            current_request.reset(token)
        stream = request.stream
        if stream is None:
            if isinstance(result, Stream):
                if started:  # it answered itself *and* returned a Stream: release the Stream
                    await _discard(result)
                else:
                    await self.run(result, scope, replaying_receive, send)
            return
        if started or request.captured is None or request.status is None:
            # The framework answered with something else (an error page), or not at all.
            await _discard(stream, "disconnect" if disconnected and not started else "error")
            return
        stream.status = request.status
        stream._headers = stream._headers + request.added_headers()
        await self.run(stream, scope, replaying_receive, send)

    async def run(
        self, stream: Stream, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Drive ``stream`` as a tracked stream of this middleware (503 once shutting down)."""
        stream._claim()  # first: a Stream already sent elsewhere must not touch the registry
        if self._closing:
            stream._end("shutdown")
            await stream._cleanup()
            with contextlib.suppress(OSError):
                await send_plain(send, 503, "Service Unavailable: the server is shutting down\n")
            return
        self._live.add(stream)
        try:
            # Forgotten as soon as it ends (on_close), even while a stuck write holds the driver.
            stream.on_close(lambda _: self._forget(stream))
            await drive_claimed(
                stream, scope, receive, send, ping=self.ping, max_buffer=self.max_buffer
            )
        finally:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
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
        with anyio.move_on_after(1):  # cut-off drivers run only their (shielded) cleanup now
            while self._live:
                self._idle = anyio.Event()
                await self._idle.wait()
