"""The producer side of one stream, as its consumer (the driver, ``Stream.value``) sees it.

A ``Producer`` ties a source adapter to the bounded frame queue and the lifecycle, and
knows the response head. Its public names are the whole seam between a Stream and the
driver: the driver never reaches further in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from .frames import CloseReason, FrameQueue
from .lifecycle import Lifecycle
from .sources import Source, source_for
from .wire import Encoder, Format, check_status, content_type, response_headers

__all__ = ["DEFAULT_MAX_BUFFER", "DEFAULT_PING", "UNSET", "Producer", "Unset"]

logger = logging.getLogger("asgi_stream")

DEFAULT_PING: Final = 15_000
DEFAULT_MAX_BUFFER: Final = 1_048_576


class Unset:
    """The type of :data:`UNSET`: an option left to the driving middleware's default."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Final = Unset()


class Producer:
    """A stream's source, frame queue and lifecycle, and its response head."""

    __slots__ = (
        "canceller",
        "claimed",
        "encode",
        "event",
        "format",
        "headers",
        "last_event_id",
        "lifecycle",
        "owner",
        "ping",
        "queue",
        "source",
        "status",
        "unset_max_buffer",
    )

    def __init__(
        self,
        source: Any,
        owner: object,
        *,
        encode: Encoder,
        format: Format,
        event: str | None,
        status: int,
        headers: list[tuple[bytes, bytes]],
        ping: float | Unset | None,
        max_buffer: int | Unset,
    ) -> None:
        self.source: Source = source_for(source)
        self.owner = owner  # what a callback source is called with: the Stream
        self.encode = encode
        self.format = format
        self.event = event
        self.status = status
        self.headers = headers  # the user's own, already checked
        self.ping = ping
        self.unset_max_buffer = isinstance(max_buffer, Unset)
        self.queue = FrameQueue(DEFAULT_MAX_BUFFER if isinstance(max_buffer, Unset) else max_buffer)
        self.lifecycle = Lifecycle()
        self.claimed = False
        self.last_event_id: str | None = None
        self.canceller: Callable[[], object] | None = None  # set by the consumer

    def abort(self) -> None:
        """Cut the consumer off at once (a shutdown's grace is over): it cancels its tasks
        and runs only the bounded cleanup."""
        self.queue.cut_off()
        if self.canceller is not None:
            self.canceller()

    def set_status(self, status: int) -> None:
        self.status = check_status(status)

    def claim(self) -> None:
        """Mark the one consumer; a second raises."""
        if self.claimed:
            raise RuntimeError("this Stream is already being sent; a Stream has one consumer")
        self.claimed = True

    def configure(self, *, ping: float | None, max_buffer: int) -> None:
        """Apply the consumer's defaults where the Stream left ``ping``/``max_buffer`` unset."""
        if self.unset_max_buffer:
            self.queue.set_limit(max_buffer)
        if isinstance(self.ping, Unset):
            self.ping = ping

    # -- producing ---------------------------------------------------------------------

    def put(self, item: Any) -> None:
        """Encode and queue one item of an automatic source (``Stream.send``'s rules)."""
        queue = self.queue
        if queue.reason is None:
            frame = (
                self.encode(item)
                if self.event is None
                else self.encode(item, default_event=self.event)
            )
            if frame:
                queue.push(frame)

    def put_raw(self, chunk: Any) -> None:
        """Queue upstream bytes unchanged (proxy)."""
        if chunk and self.queue.reason is None:
            self.queue.push(bytes(chunk))

    async def prepare(self) -> None:
        """Resolve the source and queue its first item (automatic modes), so that a failure
        here can still become an error response. Raises what the source raises."""
        source = self.source
        source.request_last_event_id = self.last_event_id
        await source.prepare()
        first, source.first = source.first, ()
        if first:  # encoded now: an item that cannot be encoded is a failure too
            (self.put_raw if source.proxy else self.put)(first[0])

    async def run(self, where: str) -> None:
        """Run the source until it ends; a failure ends the stream with ``"error"``."""
        put = self.put_raw if self.source.proxy else self.put
        try:
            await self.source.run(self.queue, put, self.owner)
        except Exception:
            logger.exception("stream producer failed (%s)", where)
            self.queue.end("error")

    def end(self, reason: CloseReason) -> bool:
        """Close the stream with ``reason`` (the first reason wins)."""
        return self.queue.end(reason)

    async def finish(self) -> None:
        """Once, shielded by the caller: close what the source holds, run ``on_close``."""
        owned, self.source.owned = self.source.owned, ()
        self.owner = None  # the Stream, which refers to this producer: no cycle left behind
        await self.lifecycle.finish(self.queue, owned)

    # -- the response head ---------------------------------------------------------------

    @property
    def starts_at_once(self) -> bool:
        """Manual modes open the response at once; automatic ones wait for the first item."""
        return self.source.starts_at_once

    def content_type(self) -> bytes:
        for name, value in (*self.headers, *self.source.upstream_headers):
            if name == b"content-type":
                return value
        return content_type(self.format)

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """Defaults, replaced by the upstream's (proxy), replaced by the user's ``headers``."""
        own = {name for name, _ in self.headers}
        upstream = [pair for pair in self.source.upstream_headers if pair[0] not in own]
        return response_headers(content_type(self.format), upstream + self.headers)

    def ping_seconds(self) -> float | None:
        """Heartbeat interval, or ``None`` where a comment frame would corrupt the body."""
        ping = None if isinstance(self.ping, Unset) else self.ping
        if not ping or self.source.proxy:  # proxied bytes pass through unchanged
            return None
        if not self.content_type().startswith(b"text/event-stream"):
            return None
        return ping / 1000

    def on_end(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` first thing when the stream ends (before ``on_close``)."""
        self.lifecycle.listeners.append(listener)
