"""``Stream``: the object a handler builds and returns.

A thin public face over the producer side (``asgi_stream.producer``): it checks the
arguments, encodes what ``send`` is given, and, being an ASGI application, hands itself to
the driver. Everything it shares with the driver goes through ``Stream.producer``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.lowlevel

from .driver import FrameIterator, drive
from .frames import CloseReason
from .producer import UNSET, Producer, Unset
from .request import current_request
from .wire import (
    HeadersInput,
    check_fields,
    check_max_buffer,
    check_ping,
    check_status,
    encode_retry,
    encoder_for,
    normalize_headers,
    request_header,
)

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["Stream", "wait"]


async def wait(ms: float) -> None:
    """Sleep ``ms`` milliseconds."""
    await anyio.sleep(ms / 1000)


class Stream:
    """A streaming response: return it from a handler, or run it as an ASGI app.

    ``send`` and ``close`` may be called from any task, and from any OS thread: from another
    thread they are handed to the event loop that sends the stream, in order."""

    def __init__(
        self,
        source: Any = None,
        /,
        *,
        event: str | None = None,
        retry: int | None = None,
        status: int = 200,
        headers: HeadersInput = None,
        ping: float | Unset | None = UNSET,
        max_buffer: int | Unset = UNSET,
        format: Literal["sse", "ndjson", "text"] = "sse",
    ) -> None:
        encode = encoder_for(format)
        if format != "sse" and (event is not None or retry is not None):
            raise TypeError(f"format={format!r} has no event or retry; use format='sse'")
        check_fields(event, None, retry)
        check_status(status)
        if not isinstance(ping, Unset):
            check_ping(ping)
        if not isinstance(max_buffer, Unset):
            check_max_buffer(max_buffer)
        self.format = format
        self.producer = Producer(
            source,
            self,
            encode=encode,
            format=format,
            event=event,
            status=status,
            headers=normalize_headers(headers),
            ping=ping,
            max_buffer=max_buffer,
        )
        # The hot path of send(), resolved once.
        self._encode = encode
        self._event = event
        self._queue = self.producer.queue
        request = current_request.get()
        if request is not None:  # known at once inside a request: a handler can resume
            self.producer.last_event_id = request_header(
                request.scope.get("headers", ()), b"last-event-id"
            )
        if retry is not None:
            self._queue.push(encode_retry(retry))

    def __repr__(self) -> str:
        reason = self._queue.reason
        state = f"closed={reason!r}" if reason else "open"
        return f"<Stream {type(self.producer.source).__name__} format={self.format!r} {state}>"

    @property
    def status(self) -> int:
        """The response status."""
        return self.producer.status

    @status.setter
    def status(self, value: int) -> None:
        self.producer.set_status(value)

    @property
    def last_event_id(self) -> str | None:
        """The request's ``Last-Event-ID`` header, or ``None``."""
        return self.producer.last_event_id

    def send(
        self,
        data: Any,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
    ) -> bool:
        """Encode and enqueue one event; never blocks. ``False`` once the stream is closed."""
        queue = self._queue
        if queue.reason is not None:
            return False
        if event is None and id is None and retry is None and self._event is None:
            frame = self._encode(data)  # the hot path: no keyword arguments to pass
        else:
            frame = self._encode(data, event=event, id=id, retry=retry, default_event=self._event)
        if not frame:
            return True
        if queue.loop_thread == threading.get_ident():  # on the loop that sends the stream
            return queue.push(frame)
        return queue.push_threadsafe(frame)  # encoded here, queued on that loop

    def close(self) -> None:
        """End the stream once the queued events are written. Idempotent."""
        self._queue.end_threadsafe("complete")

    @property
    def closed(self) -> bool:
        return self._queue.reason is not None

    async def wait(self, ms: float) -> None:
        """Sleep ``ms`` milliseconds."""
        await wait(ms)

    async def drain(self) -> None:
        """Wait until the send queue has room again (returns at once if it has)."""
        if not await self._queue.until_room():
            await anyio.lowlevel.checkpoint()

    def on_close(self, callback: Callable[[CloseReason], object]) -> None:
        """Call ``callback(reason)`` once when the stream ends (sync or async; an async one
        gets at most ``asgi_stream.lifecycle.CLEANUP_TIMEOUT`` seconds)."""
        self.producer.lifecycle.on_close(callback)

    @property
    def value(self) -> AsyncIterator[bytes]:
        """The encoded frames as an async iterator, for a framework's own streaming response.

        Single consumer; the producer runs in a task of its own. Close it (``aclose``) if you
        stop early. Prefer returning the Stream: only the driver detects disconnects, sends
        heartbeats and ends streams on shutdown.
        """
        self.producer.claim()
        return FrameIterator(self.producer)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Run this stream as an ASGI application (a framework's response object, too).

        Inside a request handled by StreamMiddleware the middleware drives it, so that it is
        tracked and ends on shutdown; elsewhere it runs the driver with its defaults."""
        request = current_request.get()
        if request is not None:
            await request.run(self.producer, scope, receive, send)
            return
        await drive(self.producer, scope, receive, send)
