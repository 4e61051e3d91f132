"""Channels: events to every subscriber of a topic, in every process that shares the store,
with a bounded history and resume by ``Last-Event-ID`` (SPEC "Channels").

A subscription is a ``asgi_stream.sources.Source`` that a ``Stream`` runs like any
other. Each event is encoded once per process and the same frame bytes go into every local
subscriber's queue: the publisher never waits for a subscriber, and a slow one is dropped by
its own ``max_buffer``. This module knows nothing of ASGI; where the history lives is a store's
business (``stores``: memory; ``redis_store``: Redis).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import anyio
import anyio.abc

from .frames import FrameQueue
from .lifecycle import CLEANUP_TIMEOUT, close_quietly
from .producer import UNSET, Unset
from .sources import Source, source_for
from .stores import Entry, MemoryStore, Store, TopicClosed
from .wire import ServerSentEvent, encode_sse

__all__ = ["Channel", "Subscription"]

logger = logging.getLogger("asgi_stream")

MAX_TOPIC: Final = 256
_EVENT_NAME = re.compile(r"[^\r\n]+")
# What a publish_from producer cut short by its channel's exit (its worker shutting down)
# publishes before the topic's end: like a source that raised, with the reason for the type.
SHUTDOWN_ERROR: Final = encode_sse({"message": "shutdown"}, event="error")


def _check_topic(topic: object) -> str:
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    if not topic or len(topic) > MAX_TOPIC:
        raise ValueError(f"topic must be 1 to {MAX_TOPIC} characters, not {len(topic)}")
    if not topic.isascii():
        try:
            topic.encode()
        except UnicodeEncodeError:
            raise ValueError(f"topic must be text UTF-8 can encode, not {topic!r}") from None
    return topic


class Subscription(Source):
    """``channel.subscribe(topic)``: the history after the Last-Event-ID, then every new
    event, each once and in id order. Registered for live events before the history is read;
    what arrives meanwhile is merged by id."""

    def __init__(self, channel: Channel, topic: str, last_event_id: str | Unset | None) -> None:
        super().__init__(None)
        self.channel = channel
        self.topic = topic
        self.last_event_id = last_event_id
        self.owned = (self,)  # closed at the end: unsubscribes
        self.queue: FrameQueue | None = None  # once running: frames go straight in
        self.pending: list[bytes] = []  # before that: the frames to send first, in order
        self.merging: list[Entry] | None = None  # live entries while the history is read
        self.seen: tuple[int, int] | None = None  # the newest id its history covered
        self.order = channel.store.order
        self.ended = False  # the topic was closed: end once the pending frames are out
        self.leaving = False  # the channel is leaving (not the topic's end): no 204
        self.lost_while_reading: bytes | None = None  # the reset event, if the store lost
        # the history while this subscriber's read was under way

    async def prepare(self) -> None:
        given = (
            self.request_last_event_id
            if isinstance(self.last_event_id, Unset)
            else self.last_event_id
        )
        channel = self.channel
        self.merging = []
        channel.attach(self)
        history = await channel.store.read(self.topic, given)
        live, self.merging = self.merging, None
        if not history.resumed:
            self.put(channel.reset_frame(given, history.earliest, history.entries))
            channel.resets += 1
        for entry in history.entries:
            self.put(entry.frame)
        if self.lost_while_reading is not None and history.resumed:
            self.put(self.lost_while_reading)  # that history may be the one lost: say so
            channel.resets += 1
        # Everything stored up to the history's newest id was in it, or before ``given``:
        # the same entries arriving live (now, or later from a store that lags) are skipped.
        if history.newest is not None:
            self.seen = self.order(history.newest)
        for entry in live:
            self.take(entry)
        self.no_content = self.ended and not self.pending and not self.leaving

    async def run(self, queue: FrameQueue, put: Callable[[Any], object], owner: object) -> None:
        self.queue = queue
        pending, self.pending = self.pending, []
        for frame in pending:
            if queue.reason is None:
                queue.push(frame)
        if self.ended:
            queue.end("complete")

    def take(self, entry: Entry) -> None:
        """One new entry of the topic, in order (the channel's fan-out calls it)."""
        if self.merging is not None:
            self.merging.append(entry)
            return
        if self.seen is not None:
            if self.order(entry.id) <= self.seen:
                return  # the history had it
            self.seen = None  # in order from here: no more comparisons
        self.put(entry.frame)

    def put(self, frame: bytes | None) -> None:
        if frame is None:
            self.end()
            return
        queue = self.queue
        if queue is None:
            self.pending.append(frame)
        elif queue.reason is None:
            queue.offer(frame)  # (dropped if it fell max_buffer behind)

    def lost(self, frame: bytes) -> None:
        """The history this subscriber followed is lost: the reset event, before the rest;
        for one still reading the history, after what the read returns (unless that read
        was already answered by the store as it is now: not resumed, so a reset of its own)."""
        if self.merging is not None:
            self.lost_while_reading = frame
            return
        self.seen = None
        self.put(frame)
        self.channel.resets += 1

    def end(self, *, leaving: bool = False) -> None:
        """The topic ended (``close``), or the channel is leaving (``leaving``): the stream
        ends after what is queued; only the first, with nothing to send, answers 204 (which
        tells a browser never to come back)."""
        self.ended = True
        self.leaving = self.leaving or leaving
        if self.queue is not None:
            self.queue.end("complete")

    def close(self) -> None:
        self.channel.detach(self)


class Channel:
    """Events to every subscriber of a topic: memory (``url=None``, this process) or Redis
    (``"redis://..."``, every process that uses it). Enter it (``async with``) before use."""

    def __init__(
        self,
        url: str | None = None,
        /,
        *,
        history: int = 1_000,
        ttl: float = 86_400_000,
        prefix: str = "asgi_stream:",
        reset_event: str = "reset",
    ) -> None:
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a str or None, not {type(url).__name__}")
        if type(history) is not int or history < 1:
            raise ValueError(f"history must be a positive int, not {history!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"ttl must be a positive number of milliseconds, not {ttl!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if not isinstance(reset_event, str) or not _EVENT_NAME.fullmatch(reset_event):
            raise ValueError(f"reset_event must be a one-line event name, not {reset_event!r}")
        self.url = url
        self.history = history
        self.ttl = ttl
        self.prefix = prefix
        self.reset_event = reset_event
        self.store: Store = self._store()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._producers: dict[str, anyio.CancelScope] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.resets = 0  # reset events sent by this process (``stats``)

    @property
    def stats(self) -> dict[str, Any]:
        """Counts to export: this process's ``subscribers`` per topic, and the ``resets``
        (reset events) it sent."""
        return {
            "subscribers": {topic: len(found) for topic, found in self._subscribers.items()},
            "resets": self.resets,
        }

    def _store(self) -> Store:
        if self.url is None:
            return MemoryStore(history=self.history, ttl=self.ttl, on_cancel=self.cancel_here)
        from .redis_store import RedisStore  # the redis extra: imported only when used

        return RedisStore(
            self.url,
            history=self.history,
            ttl=self.ttl,
            prefix=self.prefix,
            on_cancel=self.cancel_here,
        )

    async def __aenter__(self) -> Channel:
        if self._tg is not None:
            raise RuntimeError("this channel is already entered (`async with channel` once)")
        await self.store.open()  # entered first, left last: scopes nest
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self.store.run, self.fan_out)
        except BaseException:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await tg.__aexit__(None, None, None)
            await self.store.aclose()
            raise
        self._tg = tg
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        # Its subscribers' streams end (their browsers reconnect, to another worker if this
        # one is going away, and resume): none is left open with nothing to feed it.
        for subscribers in list(self._subscribers.values()):
            for subscriber in list(subscribers):
                subscriber.end(leaving=True)
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(*exc_info)
        finally:
            await self.store.aclose()  # (not in a scope of ours: its own scopes nest outside)

    def _running(self, what: str) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError(f"channel.{what}() outside `async with channel`: enter it first")
        return self._tg

    # -- publishing ----------------------------------------------------------------------

    async def publish(
        self, topic: str, data: Any, *, event: str | None = None, retry: int | None = None
    ) -> str:
        """Store the event in the topic's history and deliver it to every subscriber, in
        every process; its id. Invalid data or fields raise here, and nothing is stored."""
        self._running("publish")
        _check_topic(topic)
        if isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                "data must not be bytes: a channel frames each event itself (with its id); "
                "publish a str or JSON-serializable data"
            )
        if isinstance(data, ServerSentEvent) and data.id is not None:
            raise ValueError("the channel assigns each event's id: publish it without an id")
        body = encode_sse(data, event=event, retry=retry)
        if not body:
            raise ValueError("data is None or an empty str: it makes no event (nothing stored)")
        try:
            return await self.store.append(topic, body)
        except TopicClosed:  # a ValueError
            raise TopicClosed(
                f"topic {topic!r} is closed: nothing more can be published to it"
            ) from None

    async def close(self, topic: str) -> None:
        """End the topic: every subscriber's stream ends after the events before it, and a
        later subscriber gets what it missed, then ends (204 if nothing)."""
        self._running("close")
        await self.store.append(_check_topic(topic), None)

    def reset_frame(self, given: str | None, earliest: str | None, kept: Sequence[Entry]) -> bytes:
        """The reset event; with nothing but the end after it, it carries the end's id, so
        that the browser's reconnection resumes there and gets 204 (without an id it would
        send ``given`` again, and get the reset event again, forever)."""
        data = {"last_event_id": given, "earliest": earliest}
        if kept and all(entry.frame is None for entry in kept):
            return encode_sse(data, event=self.reset_event, id=kept[-1].id)
        return encode_sse(data, event=self.reset_event)

    # -- subscribing ---------------------------------------------------------------------

    def subscribe(self, topic: str, *, last_event_id: str | Unset | None = UNSET) -> Subscription:
        """A source for ``Stream(...)``: the history after ``last_event_id`` (default: the
        request's ``Last-Event-ID``; ``None``: live only), then every new event."""
        self._running("subscribe")
        if not isinstance(last_event_id, (str, Unset)) and last_event_id is not None:
            raise TypeError(
                f"last_event_id must be a str or None, not {type(last_event_id).__name__}"
            )
        return Subscription(self, _check_topic(topic), last_event_id)

    def attach(self, subscriber: Subscription) -> None:
        """Register ``subscriber`` for the topic's new entries (before its history is read);
        ``RuntimeError`` once the channel has left its ``async with`` (nothing would feed it)."""
        self._running("subscribe")
        found = self._subscribers.get(subscriber.topic)
        if found is None:
            found = self._subscribers[subscriber.topic] = set()
            self.store.watch(subscriber.topic)
        found.add(subscriber)

    def detach(self, subscriber: Subscription) -> None:
        found = self._subscribers.get(subscriber.topic)
        if found is not None:
            found.discard(subscriber)
            if not found:
                del self._subscribers[subscriber.topic]
                self.store.unwatch(subscriber.topic)

    def fan_out(self, topic: str, entries: Sequence[Entry], lost: str | None) -> None:
        """The store's ``deliver``: new entries of a topic, to every local subscriber."""
        found = self._subscribers.get(topic)
        if not found:
            return
        subscribers = tuple(found)
        if lost is not None:
            earliest = entries[0].id if entries and entries[0].frame is not None else None
            reset = self.reset_frame(lost, earliest, entries)
            for subscriber in subscribers:
                subscriber.lost(reset)
        for entry in entries:
            for subscriber in subscribers:
                subscriber.take(entry)

    # -- producers that outlive their clients ------------------------------------------

    def publish_from(self, topic: str, source: Any) -> None:
        """Publish every item of ``source`` from a task the channel owns, then close the
        topic; a client leaving does not stop it, ``cancel(topic)`` does (in any process).
        A source that raises, or the channel's exit, ends it with an ``error`` event first."""
        tg = self._running("publish_from")
        _check_topic(topic)
        adapter = source_for(source)  # TypeError now for what cannot be streamed
        if topic in self._producers:
            raise ValueError(f"topic {topic!r} already has a publish_from() running")
        scope = self._producers[topic] = anyio.CancelScope()
        tg.start_soon(self._publish_all, topic, adapter, scope)

    async def _publish_all(self, topic: str, adapter: Source, scope: anyio.CancelScope) -> None:
        cut_short = False  # by the channel's exit (this worker shutting down)
        try:
            with scope:
                try:
                    await adapter.prepare()
                    for item in adapter.first:
                        await self._publish_item(topic, item)
                    if adapter.iterator is not None:
                        await _each(adapter.iterator, lambda item: self._publish_item(topic, item))
                except TopicClosed:
                    pass  # cancelled (or closed by someone else): nothing more to publish
                except Exception as exc:
                    logger.exception("publish_from(%r) failed", topic)
                    with contextlib.suppress(Exception):  # closed meanwhile, or store gone
                        await self.publish(topic, {"message": type(exc).__name__}, event="error")
                except anyio.get_cancelled_exc_class():
                    cut_short = not scope.cancel_called  # (cancel(topic) cancels `scope`)
                    raise
        finally:
            if self._producers.get(topic) is scope:
                del self._producers[topic]
            with anyio.CancelScope(shield=True):
                for obj in adapter.owned:
                    with anyio.move_on_after(CLEANUP_TIMEOUT):
                        await close_quietly(obj)
                try:
                    if cut_short:  # never a clean end, which would pass the rest off as whole
                        with contextlib.suppress(TopicClosed):
                            await self.store.append(topic, SHUTDOWN_ERROR)
                    await self.store.append(topic, None)
                except Exception:  # the store is gone: its subscribers learn it their way
                    logger.exception("publish_from(%r): closing the topic failed", topic)

    async def _publish_item(self, topic: str, item: Any) -> None:
        """An item of ``publish_from``'s source; ``None`` and ``""`` make no event, as in
        automatic mode (an LLM's empty delta), and are passed over."""
        if item is not None and not (isinstance(item, str) and not item):
            await self.publish(topic, item)

    async def cancel(self, topic: str) -> None:
        """Stop ``publish_from(topic, ...)``, in whichever process runs it: the topic is
        closed first (stored: a producer that misses the word, or runs nowhere any more, is
        refused at its next publish), then the producer is told (its source is closed)."""
        self._running("cancel")
        await self.store.append(_check_topic(topic), None)
        await self.store.cancel(topic)

    def cancel_here(self, topic: str) -> None:
        """The store's ``on_cancel``: stop this process's producer of ``topic``, if any."""
        scope = self._producers.get(topic)
        if scope is not None:
            scope.cancel()


async def _each(iterator: Any, publish: Callable[[Any], Awaitable[object]]) -> None:
    if hasattr(iterator, "__anext__"):
        async for item in iterator:
            await publish(item)
    else:
        for item in iterator:
            await publish(item)
