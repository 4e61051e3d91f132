"""StreamMiddleware: drives the Streams an ASGI app returns or hands over, and ends them on
shutdown.

A framework that cannot return an arbitrary object hands its Stream over with
``hand_over`` and sends an empty *stand-in* response instead. The stand-in carries a
per-request secret marker, so only it is intercepted: the middleware keeps the headers the
framework added to it (cookies, CORS), drops its body, and sends the Stream in its place.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .driver import drive_claimed, send_plain
from .frames import CloseReason, Tally
from .producer import DEFAULT_MAX_BUFFER, DEFAULT_PING, Producer
from .request import current_request
from .stream import Stream
from .wire import check_max_buffer, check_ping

if TYPE_CHECKING:
    from asgiref.typing import (
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        ASGISendEvent,
        Scope,
    )

__all__ = ["HANDOFF_HEADER", "StreamMiddleware", "hand_over", "register_app_adapter"]

logger = logging.getLogger("asgi_stream")

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
        self.token = b""  # made at hand-over: most requests never need one
        self.stream: Producer | None = None
        self.stand_in: list[tuple[bytes, bytes]] | tuple[()] = ()
        self.captured: list[tuple[bytes, bytes]] | None = None
        self.status: int | None = None

    async def run(
        self,
        producer: Producer,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        await self.middleware.run(producer, scope, receive, send)

    def hand_over(self, producer: Producer) -> list[tuple[str, str]]:
        if self.stream is not None and self.stream is not producer:
            raise RuntimeError("this request has already handed over another Stream")
        self.stream = producer
        self.token = self.token or secrets.token_hex(16).encode()
        self.stand_in = [*producer.response_headers(), (_MARKER, self.token)]
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


async def _discard(producer: Producer, reason: CloseReason = "error") -> None:
    """A Stream that will never be sent: close what it holds and tell its on_close."""
    if not producer.claimed:
        producer.claim()
        producer.end(reason)
        with anyio.CancelScope(shield=True):
            await producer.finish()


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
    return request.hand_over(stream.producer)


_APP_ADAPTERS: list[Callable[[object], None]] = []


def register_app_adapter(adapter: Callable[[object], None]) -> None:
    """For integrations: ``adapter(app)`` is called once for the app of every
    StreamMiddleware, at its first call, so that an integration can prepare an app it
    recognises (Quart's ``make_response``). The middleware imports no integration."""
    if adapter not in _APP_ADAPTERS:
        _APP_ADAPTERS.append(adapter)


class StreamMiddleware:
    """Wrap any ASGI app; when it *returns* (or hands over) a ``Stream`` without having
    responded, drive that Stream. Keeps a registry of live streams for ``shutdown``."""

    def __init__(
        self, app: Any, *, ping: float | None = DEFAULT_PING, max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> None:
        check_ping(ping)
        check_max_buffer(max_buffer)
        self.app = app
        self.ping = ping
        self.max_buffer = max_buffer
        self._live: set[Producer] = set()
        self._idle: anyio.Event | None = None  # set when the last live stream ends
        self._closing = False
        self._adapted = False
        self._tally = Tally()  # every stream's queue counts into it: one increment per frame
        self._ended: Counter[CloseReason] = Counter()

    @property
    def active(self) -> int:
        """Number of streams being sent right now."""
        return len(self._live)

    @property
    def stats(self) -> dict[str, Any]:
        """Counts to export (Prometheus and the like), since the middleware was made:
        ``live`` streams now; streams ``ended`` by reason; ``events`` queued (each event,
        each proxied chunk), heartbeat ``pings`` and body ``bytes`` written."""
        tally = self._tally
        reasons: tuple[CloseReason, ...] = (
            "complete",
            "disconnect",
            "slow-client",
            "shutdown",
            "error",
        )
        return {
            "live": len(self._live),
            "ended": {reason: self._ended[reason] for reason in reasons},
            "events": tally.frames - tally.pings,
            "pings": tally.pings,
            "bytes": tally.bytes,
        }

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if not self._adapted:
            self._adapted = True
            for adapter in _APP_ADAPTERS:
                adapter(self.app)
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
        except BaseException:
            if request.stream is not None:  # handed over, and then the app failed
                await _discard(request.stream)
            raise
        finally:
            current_request.reset(token)
        producer = request.stream
        if producer is None:
            if isinstance(result, Stream):
                if started:  # it answered itself *and* returned a Stream: release the Stream
                    await _discard(result.producer)
                else:
                    await self.run(result.producer, scope, replaying_receive, send)
            return
        if started or request.captured is None or request.status is None:
            # The framework answered with something else (an error page), or not at all.
            await _discard(producer, "disconnect" if disconnected and not started else "error")
            return
        try:
            producer.set_status(request.status)
        except ValueError:
            logger.error("a Stream was handed over with status %s", request.status, exc_info=True)
            await _discard(producer)
            with contextlib.suppress(OSError):
                await send_plain(send, 500, "Internal Server Error\n")
            return
        producer.headers = producer.headers + request.added_headers()
        await self.run(producer, scope, replaying_receive, send)

    async def run(
        self,
        producer: Producer,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        """Drive a Stream's ``producer`` as a tracked stream of this middleware (503 once
        shutting down)."""
        producer.claim()  # first: a Stream already sent elsewhere must not touch the registry
        if self._closing:
            producer.end("shutdown")
            with anyio.CancelScope(shield=True):
                await producer.finish()
            with contextlib.suppress(OSError):
                await send_plain(send, 503, "Service Unavailable: the server is shutting down\n")
            return
        self._live.add(producer)
        producer.queue.tally = self._tally
        # Forgotten as soon as it ends, before on_close runs, even while a stuck write holds
        # the driver.
        producer.on_end(lambda: self._forget(producer))
        try:
            await drive_claimed(
                producer, scope, receive, send, ping=self.ping, max_buffer=self.max_buffer
            )
        finally:
            self._forget(producer)

    def _forget(self, producer: Producer) -> None:
        if producer in self._live:
            self._live.remove(producer)
            self._ended[producer.queue.reason or "complete"] += 1
        if not self._live and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def _until_idle(self) -> None:
        """Return once no stream is live; every caller waits for the same event."""
        while self._live:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    async def shutdown(self, grace: float = 5_000) -> None:
        """End every live stream (``on_close("shutdown")``, final empty body), waiting at most
        ``grace`` ms before cutting the rest off; Streams returned afterwards get a 503.
        A stream still waiting for its first item ends at once, with a 503."""
        self._closing = True
        for producer in list(self._live):
            producer.end("shutdown")
        with anyio.move_on_after(grace / 1000):
            await self._until_idle()
        for producer in list(self._live):
            producer.abort()
        with anyio.move_on_after(1):  # cut-off drivers run only their bounded cleanup now
            await self._until_idle()
