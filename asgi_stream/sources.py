"""Source adapters: one per kind of source a Stream accepts, and the one item loop.

- callback: a callable taking the stream; the response starts at once, the callable runs.
- values: nothing runs; the caller sends from anywhere.
- iterable: items of an (async) iterable, pulled only while the queue has room.
- awaitable: resolved first, then an iterable (or a proxy, for an upstream response).
- proxy: an upstream response's raw bytes, passed through unchanged.

Automatic sources (iterable, awaitable, proxy) resolve and fetch their first item in
``prepare``, before the response starts, so a source that fails at once can still become a
500 (or a 502 for an upstream error status).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Final, Literal

import anyio
import anyio.lowlevel

from .frames import FrameQueue
from .parking import rest_of
from .wire import ServerSentEvent

__all__ = [
    "Mode",
    "Source",
    "UpstreamError",
    "classify",
    "is_single_item",
    "pump",
    "source_for",
]

Mode = Literal["callback", "values", "iterable", "awaitable", "proxy"]
Put = Callable[[Any], object]

# A producer that never suspends yields to the loop at least this often (seconds), so a
# CPU-bound source neither starves other streams nor delays its own first bytes.
TIME_SLICE: Final = 0.005
_SINGLE_ITEM = (str, bytes, bytearray, memoryview, Mapping, ServerSentEvent)


class UpstreamError(Exception):
    """The upstream of a proxy stream answered with a status outside 2xx."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"upstream answered {status} {reason}".rstrip())
        self.status = status


def is_single_item(obj: object) -> bool:
    """Whether ``obj`` is sent as one item even though it may be iterable (str, a mapping...)."""
    return (
        isinstance(obj, _SINGLE_ITEM)
        or (dataclasses.is_dataclass(obj) and not isinstance(obj, type))
        or callable(getattr(obj, "model_dump", None))
    )


def _is_proxy(obj: object) -> bool:
    return hasattr(obj, "aiter_raw") and not isinstance(obj, type)


def classify(source: object) -> Mode:
    """The mode of a ``Stream(source)``; a clear ``TypeError`` for what cannot be streamed."""
    if source is None:
        return "values"
    if _is_proxy(source):
        return "proxy"
    if is_single_item(source) or hasattr(source, "__aiter__"):
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


async def _pause(queue: FrameQueue) -> float:
    """Let the writer (and everyone else) run: wait for room if the queue is full, else just
    yield. Returns the end of the next time slice."""
    if not queue.full() or not await queue.until_room():
        await anyio.lowlevel.checkpoint()
    return time.monotonic() + TIME_SLICE


async def pump(iterator: Iterator[Any] | AsyncIterator[Any], queue: FrameQueue, put: Put) -> None:
    """The one item loop: ``put`` every item of ``iterator`` while the stream is open, pulling
    the next only when the queue has room, and yielding to the loop at least every
    ``TIME_SLICE``. Raises what the iterator raises.

    Items are batched while the source is faster than the writer. An item that the source
    awaited for (it suspended, so the event loop ran) while the writer waits idle is written
    at once from this task, where the queue's consumer allows it (``write_now``)."""
    deadline = time.monotonic() + TIME_SLICE
    if queue.full():
        deadline = await _pause(queue)
    # Native loops, no awaited helper per item: this is the per-event hot path. Room is
    # checked after each item is queued, before the next one is pulled.
    low_water = queue.low_water
    if queue.reason is not None:
        return
    if isinstance(iterator, Iterator):
        for item in iterator:
            put(item)
            if queue.queued >= low_water or time.monotonic() >= deadline:
                deadline = await _pause(queue)
            if queue.reason is not None:
                return
        return
    write_now = queue.write_now
    if write_now is None:  # the consumer writes everything (trio, Stream.value)
        async for item in iterator:
            put(item)
            if queue.queued >= low_water or time.monotonic() >= deadline:
                deadline = await _pause(queue)
            if queue.reason is not None:
                return
        return
    following = iterator.__anext__
    parking = queue.parking  # where the writer waits: ``waiting`` while it is idle
    while True:
        # Run the first step of the fetch here, to learn whether the source suspends.
        step = following().__await__()
        try:
            signal = step.send(None)
        except StopIteration as done:
            put(done.value)  # it did not: batch as usual (this wakes the writer)
        except StopAsyncIteration:
            return
        else:
            try:
                item = await rest_of(step, signal)
            except StopAsyncIteration:
                return
            if parking.waiting:  # the loop ran and the writer is idle: write it from here
                await write_now(put, item)
            else:
                put(item)
            deadline = time.monotonic() + TIME_SLICE  # the loop ran meanwhile
        if queue.queued >= low_water or time.monotonic() >= deadline:
            deadline = await _pause(queue)
        if queue.reason is not None:
            return


async def _first(iterator: Iterator[Any] | AsyncIterator[Any]) -> tuple[Any, ...]:
    """The next item as a one-element tuple, or ``()`` at the end."""
    if isinstance(iterator, Iterator):
        for item in iterator:
            return (item,)
        return ()
    try:
        return (await anext(iterator),)
    except StopAsyncIteration:
        return ()


def _upstream_headers(response: Any) -> tuple[tuple[bytes, bytes], ...]:
    """The upstream headers a proxy keeps: its content type (and encoding: bytes are raw)."""
    found: dict[str, str] = {}
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if str(name).lower() in ("content-type", "content-encoding"):
            found.setdefault(str(name).lower(), str(value))
    kept = [(b"content-type", found.get("content-type", "text/event-stream").encode("latin-1"))]
    if "content-encoding" in found:
        kept.append((b"content-encoding", found["content-encoding"].encode("latin-1")))
    return tuple(kept)


class Source:
    """A stream's source, adapted: what the producer side runs to fill the queue.

    ``owned`` lists what must be closed at the end, in order (given before ``prepare``: the
    source itself, never started, e.g. a coroutine closed unawaited)."""

    starts_at_once = False  # manual modes open the response before anything is produced
    proxy = False  # upstream bytes: no heartbeat, upstream headers
    # Set by prepare: nothing will ever be sent (a closed channel topic): the library answers
    # 204 No Content, which tells an EventSource to stop reconnecting.
    no_content = False
    # The request's Last-Event-ID, given by the producer before prepare.
    request_last_event_id: str | None = None

    def __init__(self, source: Any) -> None:
        self.source = source
        self.owned: tuple[object, ...] = (source,)
        self.upstream_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.iterator: Iterator[Any] | AsyncIterator[Any] | None = None
        self.first: tuple[Any, ...] = ()  # the first item: fetched by prepare, put by the producer

    async def prepare(self) -> None:
        """Resolve the source and fetch its first item (automatic modes)."""

    async def run(self, queue: FrameQueue, put: Put, owner: object) -> None:
        """Fill ``queue`` until the source ends (then the stream is complete); raises what
        the source raises. ``put`` encodes and queues one item; ``owner`` is the Stream."""
        if self.iterator is not None:
            await pump(self.iterator, queue, put)
        queue.end("complete")


class CallbackSource(Source):
    starts_at_once = True

    def __init__(self, source: Any) -> None:
        super().__init__(source)
        self.owned = ()

    async def run(self, queue: FrameQueue, put: Put, owner: object) -> None:
        result = self.source(owner)
        if inspect.isawaitable(result):
            await result
        # the stream stays open until close(), as in the original


class ValuesSource(CallbackSource):
    async def run(self, queue: FrameQueue, put: Put, owner: object) -> None:
        return None


class IterableSource(Source):
    async def prepare(self) -> None:
        source = self.source
        if is_single_item(source):
            source = [source]
        self.iterator = aiter(source) if hasattr(source, "__aiter__") else iter(source)
        self.owned = (self.iterator,) if self.iterator is source else (self.iterator, source)
        self.first = await _first(self.iterator)


class ProxySource(Source):
    proxy = True

    async def prepare(self) -> None:
        response = self.source
        status = int(getattr(response, "status_code", 200))
        if not 200 <= status <= 299:  # a redirect or an error is never passed off as a stream
            raise UpstreamError(status, str(getattr(response, "reason_phrase", "")))
        self.upstream_headers = _upstream_headers(response)
        self.iterator = response.aiter_raw()
        self.owned = (self.iterator, response)  # close the iterator, then the response
        self.first = await _first(self.iterator)


class AwaitableSource(Source):
    """Resolved in ``prepare``; then it behaves as the source it resolved to."""

    def __init__(self, source: Any) -> None:
        super().__init__(source)
        self.resolved: Source | None = None

    async def prepare(self) -> None:
        value = await self.source
        self.owned = (value,)  # what was awaited is gone; what it gave is ours now
        if _is_proxy(value):
            resolved: Source = ProxySource(value)
        else:
            if value is None or not (
                is_single_item(value) or hasattr(value, "__aiter__") or hasattr(value, "__iter__")
            ):
                value = [] if value is None else [value]
            resolved = IterableSource(value)
        self.resolved = resolved
        self.proxy = resolved.proxy
        await resolved.prepare()
        self.owned = resolved.owned
        self.upstream_headers = resolved.upstream_headers
        self.iterator, self.first = resolved.iterator, resolved.first


_ADAPTERS: dict[Mode, type[Source]] = {
    "callback": CallbackSource,
    "values": ValuesSource,
    "iterable": IterableSource,
    "awaitable": AwaitableSource,
    "proxy": ProxySource,
}


def source_for(source: object) -> Source:
    """The adapter for ``Stream(source)``; ``TypeError`` for what cannot be streamed. A
    ``Source`` already (a channel's subscription, from a layer above) is used as it is."""
    if isinstance(source, Source):
        return source
    return _ADAPTERS[classify(source)](source)
