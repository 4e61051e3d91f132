"""Where a channel keeps its topics' history and how it learns of new events: the interface a
store offers the channel, and the memory store (one process).

A store deals in encoded frames, never in ASGI or Streams: ``append`` stores one event's body
under a new id, ``read`` gives the history after an id, and the store hands every new entry of
a watched topic to its ``deliver`` callback, each once and in id order, in every process that
shares it. The Redis store (``redis_store``) offers the same interface across processes.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, Protocol

import anyio

__all__ = ["Deliver", "Entry", "History", "MemoryStore", "Store", "TopicClosed", "frame"]

SWEEP_SECONDS: Final = 60.0  # how often the memory store looks for topics past their ttl


class Entry(NamedTuple):
    """One stored entry: an event's whole frame (with its ``id:`` line), or the topic's end."""

    id: str
    frame: bytes | None  # None: the topic was closed here


class History(NamedTuple):
    """What ``read(topic, after)`` found."""

    resumed: bool  # False: ``after`` cannot be resumed from; ``entries`` is all that is kept
    entries: Sequence[Entry]  # after ``after`` (or all kept), the end marker included
    earliest: str | None  # the oldest id kept
    newest: str | None  # the newest id stored, end marker included


class TopicClosed(ValueError):
    """Publishing to a topic that was closed."""


# A store calls it with each new entry of a watched topic, once per process, in id order; or,
# when it finds the history it followed lost, with ``lost`` set to the last id it had and the
# entries kept (the channel sends the reset event first).
Deliver = Callable[[str, Sequence[Entry], "str | None"], None]


def frame(event_id: str, body: bytes) -> bytes:
    """An event's frame: its ``id:`` line, then the body ``encode_sse`` made (no id)."""
    return b"id: " + event_id.encode() + b"\n" + body


class Store(Protocol):
    """What a channel needs from where its history lives."""

    async def open(self) -> None:
        """Connect (the channel's ``async with`` begins); a clear error if it cannot."""

    async def run(self, deliver: Deliver, *, task_status: Any = ...) -> None:
        """The store's own work, in the channel's task group for as long as it is open:
        new entries of watched topics go to ``deliver`` once ``task_status.started()``."""

    async def aclose(self) -> None:
        """Disconnect (the channel's ``async with`` ends, its tasks done)."""

    async def append(self, topic: str, body: bytes | None) -> str:
        """Store an event's body (``None``: the end marker) under a new id; ``TopicClosed``
        if the topic has ended (closing it again is not an error: the end's id)."""

    async def read(self, topic: str, after: str | None) -> History:
        """The history after ``after`` (``None``: none, but the end marker if the topic has
        ended)."""

    def watch(self, topic: str) -> None:
        """Deliver the topic's new entries from now on (a local subscriber arrived)."""

    def unwatch(self, topic: str) -> None:
        """The topic's last local subscriber left."""

    async def cancel(self, topic: str) -> None:
        """Ask every process to stop the topic's ``publish_from`` (``on_cancel``)."""

    def order(self, event_id: str) -> tuple[int, int]:
        """A sort key for an id this store issued."""


class _Kept:
    """One topic of the memory store."""

    __slots__ = ("closed", "entries", "epoch", "issued", "touched")

    def __init__(self, history: int, generation: int) -> None:
        self.entries: deque[tuple[int, Entry]] = deque(maxlen=history)
        self.issued = 0  # the number of the newest entry
        self.closed: Entry | None = None  # the end marker
        self.touched = time.monotonic()
        # Random per topic, and counting the topics this store made: a topic made again
        # (after its ttl) numbers from 1 again, yet its ids sort after the old ones.
        self.epoch = f"{secrets.token_hex(4)}.{generation}"

    def number(self, event_id: str) -> int | None:
        """The number of one of this topic's ids, or ``None``."""
        epoch, _, number = event_id.partition("-")
        if epoch != self.epoch or not number.isdigit() or len(number) > 19:
            return None
        return int(number)


class MemoryStore:
    """History in this process's memory: ids ``"<epoch>-<n>"``, where the epoch is random per
    topic, so that an id of another topic, or from before a restart or the topic's ttl, is
    never taken for one of this history's."""

    def __init__(self, *, history: int, ttl: float, on_cancel: Callable[[str], object]) -> None:
        self.history = history
        self.ttl = ttl / 1000
        self.on_cancel = on_cancel
        self.topics: dict[str, _Kept] = {}
        self.generation = 0  # topics made so far (see ``_Kept.epoch``)
        self.watched: set[str] = set()
        self.deliver: Deliver | None = None

    async def open(self) -> None:
        pass

    async def run(self, deliver: Deliver, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver, and forget topics past their ttl now and then (topics nobody reads
        again would otherwise stay)."""
        self.deliver = deliver
        task_status.started()
        try:
            while True:
                await anyio.sleep(min(SWEEP_SECONDS, self.ttl))
                for topic in list(self.topics):
                    self._kept(topic)
        finally:
            self.deliver = None

    async def aclose(self) -> None:
        pass

    def _kept(self, topic: str) -> _Kept | None:
        kept = self.topics.get(topic)
        if kept is not None and time.monotonic() - kept.touched > self.ttl:
            del self.topics[topic]  # no new event for ttl: forgotten
            return None
        return kept

    async def append(self, topic: str, body: bytes | None) -> str:
        kept = self._kept(topic)
        if kept is None:
            self.generation += 1
            kept = self.topics[topic] = _Kept(self.history, self.generation)
        if kept.closed is not None:
            if body is None:
                return kept.closed.id
            raise TopicClosed(topic)
        kept.issued = n = kept.issued + 1
        kept.touched = time.monotonic()
        event_id = f"{kept.epoch}-{n}"
        if body is None:  # the end marker takes no place in the history
            entry = kept.closed = Entry(event_id, None)
        else:
            entry = Entry(event_id, frame(event_id, body))
            kept.entries.append((n, entry))
        if topic in self.watched and self.deliver is not None:
            self.deliver(topic, (entry,), None)
        return event_id

    async def read(self, topic: str, after: str | None) -> History:
        kept = self._kept(topic)
        if kept is None:
            return History(after is None, (), None, None)
        entries = kept.entries
        end = () if kept.closed is None else (kept.closed,)
        earliest = entries[0][1].id if entries else None
        newest = f"{kept.epoch}-{kept.issued}" if kept.issued else None
        if after is None:
            return History(True, end, earliest, newest)
        n = kept.number(after)
        oldest = entries[0][0] if entries else kept.issued + 1
        # Numbers are contiguous here: the id just before the oldest kept misses nothing.
        if n is None or not oldest - 1 <= n <= kept.issued:
            return History(False, [*(entry for _, entry in entries), *end], earliest, newest)
        return History(True, [*(entry for m, entry in entries if m > n), *end], earliest, newest)

    def watch(self, topic: str) -> None:
        self.watched.add(topic)

    def unwatch(self, topic: str) -> None:
        self.watched.discard(topic)

    async def cancel(self, topic: str) -> None:
        self.on_cancel(topic)

    def order(self, event_id: str) -> tuple[int, int]:
        epoch, _, number = event_id.rpartition("-")
        return (int(epoch.rpartition(".")[2]), int(number))
