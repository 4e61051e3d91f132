"""The producer side: the object a handler builds and returns.

A ``Stream`` owns its source (callback, values, iterable, upstream response) and a bounded
queue of encoded frames. It knows nothing of ASGI: the driver takes frames out of the queue
and writes them; ``value`` does the same for a framework's own streaming response.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from .wire import (
    HeadersInput,
    ServerSentEvent,
    _check_fields,
    content_type,
    encode_retry,
    encoder_for,
    normalize_headers,
    response_headers,
)

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["CloseReason", "Stream", "UpstreamError", "wait"]

logger = logging.getLogger("asgi_stream")
T = TypeVar("T")

CloseReason = Literal["complete", "disconnect", "slow-client", "shutdown", "error"]
Mode = Literal["callback", "values", "iterable", "awaitable", "proxy"]

DEFAULT_PING: Final = 15_000
DEFAULT_MAX_BUFFER: Final = 1_048_576
# A producer that never suspends yields to the loop at least this often (seconds), so a
# CPU-bound source neither starves other streams nor delays its own first bytes.
_TIME_SLICE: Final = 0.005
# Automatic producers pause when this many bytes wait (or half of max_buffer, if smaller).
_LOW_WATER: Final = 65_536
# An async source that took this long (seconds) for an item while the writer was idle is
# sparse: its producer writes the item itself (Stream._write_now).
_SPARSE: Final = 0.001
_SINGLE_ITEM = (str, bytes, bytearray, memoryview, Mapping, ServerSentEvent)
_DROPPING: Final = frozenset({"disconnect", "slow-client"})


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Final = _Unset()


class UpstreamError(Exception):
    """The upstream of a proxy stream answered with an error status."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"upstream answered {status} {reason}".rstrip())
        self.status = status


async def iterate_in_thread(iterable: Iterable[T]) -> AsyncIterator[T]:
    """Iterate a blocking iterable (a DB cursor, a file, a sync generator that sleeps) in a
    thread of its own, one item at a time, so it never blocks the event loop:
    ``Stream(iterate_in_thread(rows()))``. Every ``next()`` and the final ``close()`` run in
    that one thread, with the caller's context variables (thread-bound sources such as DB
    connections keep working); stopping
    early never waits for a blocked ``next()``: the source is closed once it returns."""
    requests: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True: next item; False: stop
    results: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def work() -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = iter(iterable)
            while requests.get():
                results.put(("item", next(iterator)))
        except StopIteration:
            results.put(("done", None))
        except BaseException as exc:
            results.put(("error", exc))
        closer = getattr(iterator, "close", None)
        if closer is not None:
            try:
                closer()
            except Exception:
                logger.exception("closing %r failed", iterator)

    context = contextvars.copy_context()  # as anyio.to_thread does: the caller's context
    thread = threading.Thread(target=context.run, args=(work,), daemon=True)
    thread.name = "asgi_stream.iterate_in_thread"
    thread.start()
    try:
        while True:
            requests.put(True)
            kind, value = await anyio.to_thread.run_sync(results.get, abandon_on_cancel=True)
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        requests.put(False)


async def wait(ms: float) -> None:
    """Sleep ``ms`` milliseconds."""
    await anyio.sleep(ms / 1000)


class RequestContext(Protocol):
    """What the StreamMiddleware handling the current request offers a Stream."""

    scope: Scope

    async def run(
        self, stream: Stream, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Drive ``stream`` as a live stream of that middleware."""


current_request: ContextVar[RequestContext | None] = ContextVar(
    "asgi_stream.current_request", default=None
)
"""Set by StreamMiddleware around the app, so Streams built or run inside know their request."""


def request_header(scope: Scope, name: bytes) -> str | None:
    """The first request header ``name`` (lower-case bytes), decoded as latin-1."""
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())  # type: ignore[assignment]
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def check_ping(ping: object) -> None:
    """``ping`` is ``None`` (off) or a non-negative number of milliseconds."""
    if ping is not None and (
        isinstance(ping, bool) or not isinstance(ping, (int, float)) or ping < 0
    ):
        raise ValueError(f"ping must be None or milliseconds >= 0, not {ping!r}")


def check_max_buffer(max_buffer: object) -> None:
    """``max_buffer`` is a positive number of bytes."""
    if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
        raise ValueError(f"max_buffer must be a positive int (bytes), not {max_buffer!r}")


def _is_single_item(obj: object) -> bool:
    return (
        isinstance(obj, _SINGLE_ITEM)
        or (dataclasses.is_dataclass(obj) and not isinstance(obj, type))
        or callable(getattr(obj, "model_dump", None))
    )


def _is_iterable(obj: object) -> bool:
    return _is_single_item(obj) or hasattr(obj, "__aiter__") or hasattr(obj, "__iter__")


def _classify(source: object) -> Mode:
    if source is None:
        return "values"
    if hasattr(source, "aiter_raw") and not isinstance(source, type):
        return "proxy"
    if _is_single_item(source) or hasattr(source, "__aiter__"):
        return "iterable"
    if inspect.isawaitable(source):  # before __iter__: an asyncio Future has one
        return "awaitable"
    if hasattr(source, "__iter__"):
        return "iterable"
    if inspect.isasyncgenfunction(source) or inspect.isgeneratorfunction(source):
        name = getattr(source, "__name__", "source")
        raise TypeError(f"Stream() got the generator function {name}; call it: Stream({name}())")
    if callable(source):
        return "callback"
    raise TypeError(
        f"Stream() cannot stream a {type(source).__qualname__}: pass a callable, an (async) "
        "iterable, an awaitable of one, or an upstream response"
    )


async def _close_quietly(obj: object) -> None:
    """Close a source or iterator the way it wants to be closed (``aclose`` or ``close``)."""
    closer = getattr(obj, "aclose", None) or getattr(obj, "close", None)
    if closer is None:
        return
    try:
        result = closer()
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("closing the stream source %r failed", obj)


class Stream:
    """A streaming response: return it from a handler, or run it as an ASGI app."""

    def __init__(
        self,
        source: Any = None,
        /,
        *,
        event: str | None = None,
        retry: int | None = None,
        status: int = 200,
        headers: HeadersInput = None,
        ping: float | _Unset | None = UNSET,
        max_buffer: int | _Unset = UNSET,
        format: Literal["sse", "ndjson", "text"] = "sse",
    ) -> None:
        self._encode = encoder_for(format)
        self.format = format
        if format != "sse" and (event is not None or retry is not None):
            raise TypeError(f"format={format!r} has no event or retry; use format='sse'")
        _check_fields(event, None, retry)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"status must be an int from 200 to 599, not {status!r}")
        if not isinstance(ping, _Unset):
            check_ping(ping)
        if not isinstance(max_buffer, _Unset):
            check_max_buffer(max_buffer)
        self._event = event
        self.status = status
        self._headers = normalize_headers(headers)
        self._ping = ping
        self._max_buffer = max_buffer
        self._source: Any = source
        self._mode: Mode = _classify(source)
        self._iterator: Iterator[Any] | AsyncIterator[Any] | None = None
        self._owned: list[object] = []  # what the stream opened or iterated: closed at the end
        self._exhausted = False  # the source had no item at all
        self._upstream_headers: list[tuple[bytes, bytes]] = []
        self._callbacks: list[Callable[[CloseReason], object]] = []
        self._reason: CloseReason | None = None
        self._fired = False
        self._claimed = False
        request = current_request.get()
        # Known at once inside a request handled by StreamMiddleware, so a handler can resume.
        self.last_event_id = (
            None if request is None else request_header(request.scope, b"last-event-id")
        )
        # The queue: encoded frames waiting for the writer, and their size in bytes.
        self._frames: list[bytes] = []
        self._queued = 0
        self._limit = DEFAULT_MAX_BUFFER if isinstance(max_buffer, _Unset) else max_buffer
        self._writing = False  # the consumer holds a chunk it has not finished writing
        self._wakeup: anyio.Event | None = None  # set when the writer waits for frames
        self._room: anyio.Event | None = None  # set when a producer waits for room
        self._abort: Callable[[], None] | None = None  # cancels whoever consumes the stream
        # Writes what is queued now, in the calling task, while the writer waits; see _produce.
        self._write_now: Callable[[], Awaitable[None]] | None = None
        if retry is not None:
            self._push(encode_retry(retry))

    def __repr__(self) -> str:
        state = f"closed={self._reason!r}" if self._reason else "open"
        return f"<Stream {self._mode} format={self.format!r} {state}>"

    # -- public API ---------------------------------------------------------------------

    def send(
        self,
        data: Any,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
    ) -> bool:
        """Encode and enqueue one event; never blocks. ``False`` once the stream is closed."""
        if self._reason is not None:
            return False
        if event is None and id is None and retry is None and self._event is None:
            frame = self._encode(data)  # the hot path: no keyword arguments to pass
        else:
            frame = self._encode(data, event=event, id=id, retry=retry, default_event=self._event)
        return self._push(frame) if frame else True

    def close(self) -> None:
        """End the stream once the queued events are written. Idempotent."""
        self._end("complete")

    @property
    def closed(self) -> bool:
        return self._reason is not None

    async def wait(self, ms: float) -> None:
        """Sleep ``ms`` milliseconds."""
        await anyio.sleep(ms / 1000)

    async def drain(self) -> None:
        """Wait until the send queue has room again (returns at once if it has)."""
        if not await self._until_room():
            await anyio.lowlevel.checkpoint()

    def on_close(self, callback: Callable[[CloseReason], object]) -> None:
        """Call ``callback(reason)`` once when the stream ends (sync or async)."""
        if not callable(callback):
            raise TypeError(f"on_close() needs a callable, not {type(callback).__name__}")
        if self._fired:
            raise RuntimeError("the stream has already ended; on_close() is too late")
        self._callbacks.append(callback)

    @property
    def value(self) -> AsyncIterator[bytes]:
        """The encoded frames as an async iterator, for a framework's own streaming response.

        Single consumer; it runs the producer itself. Close it (``aclose``) in the task that
        iterates it if you stop early. Prefer returning the Stream: only the driver detects
        disconnects, sends heartbeats and drops slow clients.
        """
        self._claim()
        return self._iterate()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Run this stream as an ASGI application (a framework's response object, too).

        Inside a request handled by StreamMiddleware the middleware drives it, so that it is
        tracked and ends on shutdown; elsewhere it runs the driver with its defaults."""
        request = current_request.get()
        if request is not None:
            await request.run(self, scope, receive, send)
            return
        from .driver import drive  # the driver sits above this layer

        await drive(self, scope, receive, send)

    # -- the queue ----------------------------------------------------------------------

    def _push(self, frame: bytes) -> bool:
        self._frames.append(frame)
        self._queued += len(frame)
        if self._writing and self._queued > self._limit:
            self._end("slow-client")
            return False
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
        return True

    def _ready(self) -> bool:
        return bool(self._frames) or self._reason is not None

    async def _wait_frames(self) -> None:
        """Return once frames are queued or the stream is closed."""
        if not self._ready():
            self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def _take(self) -> bytes:
        """Everything queued, as one chunk (coalescing frames that already wait)."""
        frames = self._frames
        if not frames:
            return b""
        chunk = frames[0] if len(frames) == 1 else b"".join(frames)
        self._frames = []
        self._queued = 0
        if self._room is not None:
            self._room.set()
            self._room = None
        return chunk

    @property
    def _low_water(self) -> int:
        """Queued bytes at which producers pause: "the queue has no room"."""
        return min(_LOW_WATER, max(1, self._limit // 2))

    async def _until_room(self) -> bool:
        """Wait while too much is queued; ``True`` if it had to wait."""
        waited = False
        while self._reason is None and self._queued >= self._low_water:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
            waited = True
        return waited

    def _end(self, reason: CloseReason) -> bool:
        """Close with ``reason`` (first one wins); dropping reasons discard the queue."""
        if self._reason is not None:
            return False
        self._reason = reason
        if reason in _DROPPING:
            self._frames = []
            self._queued = 0
        for event in (self._wakeup, self._room):
            if event is not None:
                event.set()
        self._wakeup = self._room = None
        if reason == "slow-client" and self._abort is not None:
            self._abort()
        return True

    # -- lifecycle, called by the driver -------------------------------------------------

    def _claim(self) -> None:
        if self._claimed:
            raise RuntimeError("this Stream is already being sent; a Stream has one consumer")
        self._claimed = True

    def _configure(self, *, ping: float | None, max_buffer: int) -> None:
        """Apply the driver's defaults where the Stream left ``ping``/``max_buffer`` unset."""
        if isinstance(self._max_buffer, _Unset):
            self._limit = max_buffer
        if isinstance(self._ping, _Unset):
            self._ping = ping

    @property
    def _ping_seconds(self) -> float | None:
        """Heartbeat interval, or ``None`` where a comment frame would corrupt the body."""
        ping = None if isinstance(self._ping, _Unset) else self._ping
        if not ping or self._mode == "proxy":  # proxied bytes pass through unchanged
            return None
        if not self._response_content_type().startswith(b"text/event-stream"):
            return None
        return ping / 1000

    def _response_content_type(self) -> bytes:
        for name, value in self._headers + self._upstream_headers:
            if name == b"content-type":
                return value
        return content_type(self.format)

    def _response_headers(self) -> list[tuple[bytes, bytes]]:
        """Defaults, replaced by the upstream's (proxy), replaced by the user's ``headers``."""
        own = {name for name, _ in self._headers}
        upstream = [pair for pair in self._upstream_headers if pair[0] not in own]
        return response_headers(content_type(self.format), upstream + self._headers)

    @property
    def _starts_at_once(self) -> bool:
        """Manual modes open the response at once; automatic ones wait for the first item."""
        return self._mode in ("callback", "values")

    async def _prepare(self) -> None:
        """Resolve the source, then fetch and encode its first item: a source that fails at
        once (or an item that cannot be encoded) can still become a 500/502."""
        source = self._source
        if self._mode == "awaitable":
            source = self._source = await source
            self._mode = "proxy" if hasattr(source, "aiter_raw") else "iterable"
            if self._mode == "iterable" and not _is_iterable(source):
                source = [] if source is None else [source]
        if self._mode == "proxy":
            status = int(getattr(source, "status_code", 200))
            if status >= 400:
                await _close_quietly(source)
                raise UpstreamError(status, str(getattr(source, "reason_phrase", "")))
            self._upstream_headers = _upstream_headers(source)
            self._iterator = source.aiter_raw()
            self._owned = [self._iterator, source]  # close the iterator, then the response
        elif self._mode == "iterable":
            if _is_single_item(source):
                source = [source]
            self._iterator = aiter(source) if hasattr(source, "__aiter__") else iter(source)
            self._owned = [self._iterator] if self._iterator is source else [self._iterator, source]
        else:
            return
        first = await self._next_item()
        if first:
            self._put(first[0])
        else:
            self._exhausted = True

    async def _next_item(self) -> list[Any]:
        """The next item as a one-element list, or ``[]`` at the end."""
        iterator = self._iterator
        if isinstance(iterator, Iterator):
            for item in iterator:
                return [item]
            return []
        assert iterator is not None
        try:
            return [await anext(iterator)]
        except StopAsyncIteration:
            return []

    async def _produce(self) -> None:
        """Run the source until it ends; raises what the source raises."""
        if self._mode == "callback":
            result = self._source(self)
            if inspect.isawaitable(result):
                await result
            return
        if self._mode == "values":
            return
        iterator = self._iterator
        low_water = self._low_water
        put = self._put if self._mode == "proxy" else self.send  # one call less per item
        deadline = time.monotonic() + _TIME_SLICE
        seen: anyio.Event | None = None  # the writer's wake-up event when we last saw it
        if self._queued >= low_water:
            deadline = await self._pause()
        # Native loops, no awaited helper per item: this is the per-event hot path. Room is
        # checked after each item is queued, before the next one is pulled.
        if self._exhausted or self._reason is not None:
            pass
        elif isinstance(iterator, Iterator):
            for item in iterator:
                if self._wakeup is not None and self._wakeup is not seen:
                    seen = self._wakeup  # the writer parked anew: the loop ran meanwhile
                    deadline = time.monotonic() + _TIME_SLICE
                put(item)
                if self._queued >= low_water or time.monotonic() >= deadline:
                    deadline = await self._pause()
                if self._reason is not None:
                    return
        elif iterator is not None:
            asked = time.monotonic()
            async for item in iterator:
                parked = self._wakeup
                if (
                    parked is not None
                    and self._write_now is not None
                    and time.monotonic() - asked >= _SPARSE
                ):
                    # The writer waits and so did the source: write from here. No new time
                    # slice, as the loop may not have run (a source that computes for long).
                    await self._put_and_write(item)
                else:
                    if parked is not None and parked is not seen:
                        seen = parked  # the writer parked anew: the loop ran meanwhile
                        deadline = time.monotonic() + _TIME_SLICE
                    put(item)
                if self._queued >= low_water or time.monotonic() >= deadline:
                    deadline = await self._pause()
                if self._reason is not None:
                    return
                asked = time.monotonic()
        self.close()

    async def _put_and_write(self, item: Any) -> None:
        """Queue ``item`` and write it from this task (the producer) while the writer stays
        parked: for a sparse source, one task switch less per event. Frames queued during
        the write, or a close, wake the writer afterwards: still one write at a time."""
        assert self._write_now is not None and self._wakeup is not None
        parked, self._wakeup = self._wakeup, None
        try:
            self._put(item)
            await self._write_now()
        finally:
            if self._frames or self._reason is not None:
                parked.set()
            else:
                self._wakeup = parked

    async def _pause(self) -> float:
        """Let the writer (and everyone else) run: wait for room if the queue is full, else
        just yield. Returns the end of the next time slice."""
        if self._queued < self._low_water or not await self._until_room():
            await anyio.lowlevel.checkpoint()
        return time.monotonic() + _TIME_SLICE

    def _put(self, item: Any) -> None:
        if self._mode != "proxy":
            self.send(item)
        elif item and self._reason is None:
            self._push(bytes(item))  # upstream bytes pass through unchanged

    async def _run(self, where: str) -> None:
        """Run the producer; an exception ends the stream with ``"error"`` after logging it."""
        try:
            await self._produce()
        except Exception:
            logger.exception("stream producer failed (%s)", where)
            self._end("error")

    async def _cleanup(self) -> None:
        """Once: close what the stream opened or was given (iterator, source, upstream
        response, an awaitable never awaited), then fire ``on_close``."""
        if self._fired:
            return
        self._fired = True
        owned = self._owned or ([] if self._starts_at_once else [self._source])
        self._owned, self._iterator = [], None
        for obj in owned:
            await _close_quietly(obj)
        if self._reason is None:
            self._end("disconnect")
        reason = self._reason
        assert reason is not None
        for callback in self._callbacks:
            try:
                result = callback(reason)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_close callback %r failed", callback)

    async def _iterate(self) -> AsyncIterator[bytes]:
        """Frames for ``value``. Only a callback runs in a task; other sources are iterated
        inline, so a consumer that drops the iterator (to be closed later, maybe from another
        task) is safe. Failures before the first item propagate to the consumer."""
        self._configure(ping=None, max_buffer=self._limit)
        try:
            await self._prepare()
            if self._mode == "callback":
                async with anyio.create_task_group() as tg:
                    self._abort = tg.cancel_scope.cancel
                    tg.start_soon(self._run, "Stream.value")
                    while chunk := await self._next_chunk():
                        self._writing = True
                        yield chunk
                        self._writing = False
                    tg.cancel_scope.cancel()
                return
            try:
                while self._mode != "values" and self._reason is None:
                    if chunk := self._take():
                        yield chunk
                    item = await self._next_item()
                    if not item:
                        break
                    self._put(item[0])
                if self._mode != "values":
                    self.close()
            except Exception:
                logger.exception("stream producer failed (Stream.value)")
                self._end("error")
            while chunk := await self._next_chunk():
                self._writing = True
                yield chunk
                self._writing = False
        except Exception:
            self._end("error")
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()

    async def _next_chunk(self) -> bytes:
        """The next chunk to write; ``b""`` once the stream is closed and flushed."""
        await self._wait_frames()
        return self._take()


def _upstream_headers(response: Any) -> list[tuple[bytes, bytes]]:
    """The upstream headers a proxy keeps: its content type (and encoding, bytes are raw)."""
    found: dict[str, str] = {}
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if str(name).lower() in ("content-type", "content-encoding"):
            found.setdefault(str(name).lower(), str(value))
    kept = [(b"content-type", found.get("content-type", "text/event-stream").encode("latin-1"))]
    if "content-encoding" in found:
        kept.append((b"content-encoding", found["content-encoding"].encode("latin-1")))
    return kept
