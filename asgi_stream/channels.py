"""Channels: fan-out of events to every subscriber of a topic, with a bounded history and
resume by ``Last-Event-ID`` (SPEC "Channels"). Work in progress: the memory backend.

A subscription is a :class:`~asgi_stream.sources.Source` that a ``Stream`` runs like any
other; the channel pushes each event's frame, encoded once, into every subscriber's queue.
It feeds Streams and knows nothing of ASGI.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import anyio.abc

from .frames import FrameQueue
from .producer import UNSET, Unset
from .sources import Source, source_for
from .wire import encode_sse

__all__ = ["Channel", "Subscription"]

logger = logging.getLogger("asgi_stream")

MAX_TOPIC: Final = 256


def _check_topic(topic: object) -> str:
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    if not topic or len(topic) > MAX_TOPIC:
        raise ValueError(f"topic must be 1 to {MAX_TOPIC} characters, not {len(topic)}")
    return topic


class _Topic:
    """One topic of the memory backend: its history, its subscribers, whether it ended."""

    __slots__ = ("closed", "events", "issued", "subscribers")

    def __init__(self, history: int) -> None:
        self.events: deque[tuple[int, str, bytes]] = deque(maxlen=history)  # (n, id, frame)
        self.issued = 0  # the number of the newest event
        self.closed = False
        self.subscribers: set[Subscription] = set()


class Subscription(Source):
    """``channel.subscribe(topic)``: history after the Last-Event-ID, then every new event."""

    def __init__(self, channel: Channel, topic: str, last_event_id: str | Unset | None) -> None:
        super().__init__(None)
        self.channel = channel
        self.topic = topic
        self.last_event_id = last_event_id
        self.owned = (self,)  # closed at the end: unsubscribes
        self.queue: FrameQueue | None = None  # once running: frames go straight in
        self.pending: list[bytes] = []  # before that: what is to be sent first, in order
        self.ended = False  # the topic was closed: end once the pending frames are out

    async def prepare(self) -> None:
        given = (
            self.request_last_event_id
            if isinstance(self.last_event_id, Unset)
            else self.last_event_id
        )
        self.pending = self.channel.attach(self, given)
        self.no_content = self.ended and not self.pending

    async def run(self, queue: FrameQueue, put: Callable[[Any], object], owner: object) -> None:
        self.queue = queue
        pending, self.pending = self.pending, []
        for frame in pending:
            self.deliver(frame)
        if self.ended:
            queue.end("complete")

    def deliver(self, frame: bytes) -> None:
        queue = self.queue
        if queue is None:
            self.pending.append(frame)
        elif queue.reason is None:
            queue.push(frame)  # False: it fell max_buffer behind and was dropped

    def end(self) -> None:
        self.ended = True
        if self.queue is not None:
            self.queue.end("complete")

    def close(self) -> None:
        self.channel.detach(self)


class Channel:
    """Events to every subscriber of a topic, with a bounded history (memory backend)."""

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
        if url is not None:
            raise NotImplementedError("the Redis backend is not written yet")
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive int, not {history!r}")
        self.history = history
        self.ttl = ttl
        self.reset_event = reset_event
        self._epoch = secrets.token_hex(4)
        self._topics: dict[str, _Topic] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._producers: dict[str, anyio.CancelScope] = {}

    async def __aenter__(self) -> Channel:
        self._tg = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        tg.cancel_scope.cancel()
        return await tg.__aexit__(*exc_info)

    def _running(self, what: str) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError(f"channel.{what}() outside `async with channel`: enter it first")
        return self._tg

    def _topic(self, topic: str) -> _Topic:
        found = self._topics.get(topic)
        if found is None:
            found = self._topics[topic] = _Topic(self.history)
        return found

    async def publish(
        self, topic: str, data: Any, *, event: str | None = None, retry: int | None = None
    ) -> str:
        """Store the event in the topic's history and deliver it to every subscriber."""
        self._running("publish")
        state = self._topic(_check_topic(topic))
        if state.closed:
            raise ValueError(f"topic {topic!r} is closed: nothing more can be published to it")
        n = state.issued + 1
        event_id = f"{self._epoch}-{n}"
        frame = encode_sse(data, event=event, id=event_id, retry=retry)  # raises: not stored
        state.issued = n
        state.events.append((n, event_id, frame))
        for subscriber in list(state.subscribers):
            subscriber.deliver(frame)
        return event_id

    def subscribe(self, topic: str, *, last_event_id: str | Unset | None = UNSET) -> Subscription:
        """A source for ``Stream(...)``: the history after ``last_event_id`` (default: the
        request's ``Last-Event-ID``; ``None``: live only), then every new event."""
        self._running("subscribe")
        return Subscription(self, _check_topic(topic), last_event_id)

    def attach(self, subscriber: Subscription, last_event_id: str | None) -> list[bytes]:
        """Register ``subscriber`` for live events; the frames it must get first."""
        state = self._topic(subscriber.topic)
        state.subscribers.add(subscriber)
        subscriber.ended = state.closed
        if last_event_id is None:
            return []
        resume = self._resume_point(state, last_event_id)
        if resume is None:
            earliest = state.events[0][1] if state.events else None
            reset = encode_sse(
                {"last_event_id": last_event_id, "earliest": earliest}, event=self.reset_event
            )
            return [reset, *(frame for _, _, frame in state.events)]
        return [frame for n, _, frame in state.events if n > resume]

    def _resume_point(self, state: _Topic, last_event_id: str) -> int | None:
        """The event number to resume after, or ``None`` if the id cannot be resumed."""
        epoch, _, number = last_event_id.partition("-")
        if epoch != self._epoch or not number.isdigit():
            return None
        n = int(number)
        oldest = state.events[0][0] if state.events else state.issued + 1
        if n == state.issued or oldest <= n <= state.issued:
            return n
        return None

    def detach(self, subscriber: Subscription) -> None:
        state = self._topics.get(subscriber.topic)
        if state is not None:
            state.subscribers.discard(subscriber)

    async def close(self, topic: str) -> None:
        """End the topic: every subscriber's stream ends after the events before it."""
        self._running("close")
        state = self._topic(_check_topic(topic))
        state.closed = True
        for subscriber in list(state.subscribers):
            subscriber.end()

    def publish_from(self, topic: str, source: Any) -> None:
        """Publish every item of ``source`` from a task the channel owns, then close the
        topic; a client leaving does not stop it, ``cancel(topic)`` does."""
        tg = self._running("publish_from")
        _check_topic(topic)
        scope = anyio.CancelScope()
        self._producers[topic] = scope
        tg.start_soon(self._publish_all, topic, source_for(source), scope)

    async def _publish_all(self, topic: str, adapter: Source, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                try:
                    await adapter.prepare()
                    for item in adapter.first:
                        await self.publish(topic, item)
                    if adapter.iterator is not None:
                        await _each(adapter.iterator, lambda item: self.publish(topic, item))
                except Exception as exc:
                    logger.exception("publish_from(%r) failed", topic)
                    await self.publish(topic, {"message": type(exc).__name__}, event="error")
        finally:
            self._producers.pop(topic, None)
            with anyio.CancelScope(shield=True):
                for obj in adapter.owned:
                    closer = getattr(obj, "aclose", None)
                    if closer is not None:
                        await closer()
                if not self._topic(topic).closed:
                    await self.close(topic)

    async def cancel(self, topic: str) -> None:
        """Stop ``publish_from(topic, ...)``: its source is closed, and the topic."""
        self._running("cancel")
        scope = self._producers.get(_check_topic(topic))
        if scope is not None:
            scope.cancel()


async def _each(iterator: Any, publish: Callable[[Any], Awaitable[object]]) -> None:
    if hasattr(iterator, "__anext__"):
        async for item in iterator:
            await publish(item)
    else:
        for item in iterator:
            await publish(item)
