"""A channel's history in Redis, shared by every process that uses it (the ``redis`` extra:
coredis, which runs on asyncio and trio).

- Each topic is a Redis Stream (``XADD ... MAXLEN ~ history``, ``PEXPIRE ttl``). Storing an
  event and announcing it on the process-wide pub/sub channel is one Lua script: live delivery
  and history never disagree.
- Each announcement names the id stored before it. A process that finds its last id is not
  that one missed something (a lost connection, a dropped pub/sub message) and reads the gap
  from the history; after a reconnect it does so for every topic it follows. An id the history
  no longer holds (trimmed, or a Redis restarted without persistence) makes the channel send
  the reset event.
- Per process: one pub/sub connection and a small fixed pool for commands, however many
  subscribe.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import zlib
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import anyio

from .stores import Deliver, Entry, History, TopicClosed, frame

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

try:
    import coredis
    from coredis.exceptions import RedisError
    from coredis.retry import NoRetryPolicy
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "Channel('redis://...') needs the redis extra: pip install 'asgi-stream[redis]'"
    ) from exc

__all__ = ["RedisStore"]

logger = logging.getLogger("asgi_stream")

POOL_SIZE: Final = 4  # command connections per process (coredis multiplexes on them)
BACKOFF: Final = (0.05, 5.0)  # first and longest wait between reconnection attempts, seconds
_REDIS_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_MAX_ID_PART: Final = 2**64 - 1

# KEYS: the topic's stream. ARGV: body, kind ("f" an event, "c" the end), maxlen, ttl (ms),
# the pub/sub channel, the announcement's topic part. Returns {1, id}, or {0, id}: already
# closed (closing again), or {-1, id}: closed (publishing).
_APPEND: Final = b"""
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = ''
if #last > 0 then
  prev = last[1][1]
  if last[1][2][1] == 'c' then
    if ARGV[2] == 'c' then return {0, prev} end
    return {-1, prev}
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6] .. prev .. ' ' .. id .. ' ' .. ARGV[2] .. ARGV[1])
return {1, id}
"""

# KEYS: the topic's stream. ARGV: what is wanted ("live": no history, only whether the topic
# has ended; "after": the history after ARGV[2], if it holds that id; "all"), the id.
# Returns {resumed, earliest, newest, entries} ('' for none). The end marker is never the
# earliest (no client ever gets its id), and it is always returned when the topic has ended.
_READ: Final = b"""
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local earliest, newest = '', ''
if #first > 0 then
  newest = last[1][1]
  if first[1][2][1] ~= 'c' then earliest = first[1][1] end
end
local closed = #last > 0 and last[1][2][1] == 'c'
if ARGV[1] == 'live' then
  if closed then return {1, earliest, newest, last} end
  return {1, earliest, newest, {}}
end
local after = ARGV[2]
if ARGV[1] == 'after' and #last > 0 and
    (after == newest or #redis.call('XRANGE', KEYS[1], after, after) > 0) then
  if after == newest then
    if closed then return {1, earliest, newest, last} end
    return {1, earliest, newest, {}}
  end
  return {1, earliest, newest, redis.call('XRANGE', KEYS[1], '(' .. after, '+')}
end
return {0, earliest, newest, redis.call('XRANGE', KEYS[1], '-', '+')}
"""


def _redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def public_id(topic: str, raw_id: str) -> str:
    """The id clients see: Redis's own, tagged with the topic's checksum, since two topics'
    streams issue the same ids in the same millisecond (another topic's id is not resumed)."""
    return f"{raw_id}.{zlib.crc32(topic.encode()):08x}"


def raw_id_of(topic: str, event_id: str) -> str | None:
    """Redis's id in one of the topic's public ids, or ``None``."""
    raw_id = event_id.partition(".")[0]
    if _key(raw_id) is None or public_id(topic, raw_id) != event_id:
        return None
    return raw_id


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: what to tell a reader."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _key(event_id: str) -> tuple[int, int] | None:
    """A Redis stream id's sort key, or ``None`` if it is not one."""
    found = _REDIS_ID.fullmatch(event_id)
    if found is None:
        return None
    ms, seq = int(found[1]), int(found[2])
    return (ms, seq) if ms <= _MAX_ID_PART and seq <= _MAX_ID_PART else None


class RedisStore:
    """The store of ``Channel("redis://...")`` (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        history: int,
        ttl: float,
        prefix: str,
        on_cancel: Callable[[str], object],
    ) -> None:
        self.url = url
        self.shown = _redacted(url)
        self.history = history
        self.ttl = max(1, round(ttl))
        self.prefix = prefix
        self.on_cancel = on_cancel
        self.events_channel = (prefix + "events").encode()
        self.cancel_channel = (prefix + "cancel").encode()
        # topic: the newest id delivered here ("": the topic was empty; None: not known yet)
        self.watched: dict[str, str | None] = {}
        self.starting: dict[str, anyio.Event] = {}  # topics whose first read is under way
        self.deliver: Deliver | None = None
        self.exits = contextlib.AsyncExitStack()
        try:
            self.client: Any = coredis.Redis.from_url(
                url,
                decode_responses=False,
                max_connections=POOL_SIZE,
                retry_policy=NoRetryPolicy(),  # a publish is never sent twice
            )
        except ValueError as exc:
            raise ValueError(f"url {self.shown!r} is not a Redis URL: {exc}") from exc
        self.append_script = self.client.register_script(_APPEND)
        self.read_script = self.client.register_script(_READ)

    def stream_key(self, topic: str) -> bytes:
        return (self.prefix + "topic:" + topic).encode()

    # -- connecting ----------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self.exits.enter_async_context(self.client)
            await self.client.ping()
        except (RedisError, OSError) as exc:
            await self.exits.aclose()
            raise ConnectionError(f"cannot reach Redis at {self.shown}: {exc}") from exc

    async def aclose(self) -> None:
        await self.exits.aclose()

    async def run(self, deliver: Deliver, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the announcements for as long as the channel is open: the one pub/sub
        connection of this process. Reconnects with backoff after a loss, then catches up."""
        self.deliver = deliver
        delay, started = BACKOFF[0], False
        while True:
            try:
                async with self.client.pubsub(
                    channels=[self.events_channel, self.cancel_channel],
                    ignore_subscribe_messages=True,
                    retry_policy=NoRetryPolicy(),  # reconnecting is ours: then we catch up
                ) as pubsub:
                    if started:
                        logger.warning("Redis at %s: reconnected; catching up", self.shown)
                        for topic in list(self.watched):
                            await self.catch_up(topic)
                    else:
                        started = True
                        task_status.started()
                    delay = BACKOFF[0]
                    async for message in pubsub:
                        await self.on_message(message["channel"], message["data"])
            except Exception as exc:  # coredis raises a lost connection inside a group
                if not started:
                    raise ConnectionError(
                        f"cannot reach Redis at {self.shown}: {_leaf(exc)}"
                    ) from exc
                logger.warning(
                    "Redis at %s: connection lost (%s); reconnecting in %.2f s",
                    self.shown,
                    _leaf(exc),
                    delay,
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])

    # -- what every process hears --------------------------------------------------------

    async def on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self.cancel_channel:
            self.on_cancel(data.decode())
            return
        size, _, rest = data.partition(b":")
        end = int(size)
        topic = rest[:end].decode()
        last = self.watched.get(topic, "-")
        if last == "-":
            return  # nobody here follows it
        prev, raw_id, payload = rest[end:].split(b" ", 2)
        new = raw_id.decode()
        if last is not None:  # known: "" for a topic that was empty, else the newest id
            if last and _key(new) <= _key(last):  # type: ignore[operator]
                return  # delivered already (read from the history)
            if prev.decode() != last:
                await self.catch_up(topic)  # something was missed: read the gap
                return
        self.watched[topic] = new
        assert self.deliver is not None
        self.deliver(topic, (self.entry(topic, new, payload),), None)

    async def catch_up(self, topic: str) -> None:
        """Deliver what the history holds after the newest id delivered here (all of it if
        the topic was empty then); the reset event first if that id is no longer there."""
        last = self.watched.get(topic)
        if last is None:
            return  # not known yet: the first subscriber's read sets it
        resumed, _, newest, entries = await self.read_raw(topic, last or None)
        if self.watched.get(topic, "-") != last:
            return  # unwatched meanwhile
        self.watched[topic] = newest or ""
        lost = not resumed and last != ""  # from an empty topic, everything is new
        if entries or lost:
            assert self.deliver is not None
            self.deliver(topic, entries, public_id(topic, last) if lost else None)

    @staticmethod
    def entry(topic: str, raw_id: str, payload: bytes) -> Entry:
        """An entry from its stored kind and body (``f`` an event, ``c`` the end)."""
        event_id = public_id(topic, raw_id)
        return Entry(event_id, frame(event_id, payload[1:]) if payload[:1] == b"f" else None)

    # -- the store interface -------------------------------------------------------------

    async def append(self, topic: str, body: bytes | None) -> str:
        encoded = topic.encode()
        try:
            reply: Any = await self.append_script(
                keys=[self.stream_key(topic)],
                args=[
                    body or b"",
                    b"c" if body is None else b"f",
                    self.history,
                    self.ttl,
                    self.events_channel,
                    b"%d:" % len(encoded) + encoded,
                ],
            )
        except (RedisError, OSError) as exc:
            raise ConnectionError(
                f"Redis at {self.shown}: {exc}; the event on {topic!r} may not be stored"
            ) from exc
        status, raw_id = reply
        if status == -1:
            raise TopicClosed(topic)
        return public_id(topic, raw_id.decode())

    async def read(self, topic: str, after: str | None) -> History:
        # The first read of a topic this process starts following sets where the reader
        # starts from; every other subscriber's read waits for it, so that none is made
        # before it and none moves that point past what an earlier subscriber was given.
        first = None
        if self.watched.get(topic, "-") is None:
            waiting = self.starting.get(topic)
            if waiting is None:
                first = self.starting[topic] = anyio.Event()
            else:
                await waiting.wait()
        try:
            resumed, earliest, newest, entries = await self.read_raw(
                topic, "" if after is None else raw_id_of(topic, after)
            )
        finally:
            if first is not None:
                del self.starting[topic]
                first.set()
        if first is not None and self.watched.get(topic, "-") is None:
            self.watched[topic] = newest or ""  # ("": the topic was empty)
        return History(
            resumed,
            entries,
            earliest and public_id(topic, earliest),
            newest and public_id(topic, newest),
        )

    async def read_raw(
        self, topic: str, after: str | None
    ) -> tuple[bool, str | None, str | None, list[Entry]]:
        """``read`` with Redis's own ids (``after``: ``""`` none, ``None`` not one of ours)."""
        args = [b"live" if after == "" else b"all" if after is None else b"after", after or ""]
        for attempt in (1, 2, 3):  # a read may be retried: a blip is not an error page
            try:
                reply: Any = await self.read_script(keys=[self.stream_key(topic)], args=args)
                break
            except (RedisError, OSError):
                if attempt == 3:
                    raise
                await anyio.sleep(BACKOFF[0] * attempt)
        resumed, earliest, newest, raw = reply
        entries = [
            self.entry(topic, raw_id.decode(), fields[0] + fields[1]) for raw_id, fields in raw
        ]
        return bool(resumed), earliest.decode() or None, newest.decode() or None, entries

    def watch(self, topic: str) -> None:
        self.watched.setdefault(topic, None)

    def unwatch(self, topic: str) -> None:
        self.watched.pop(topic, None)

    async def cancel(self, topic: str) -> None:
        try:
            await self.client.publish(self.cancel_channel, topic.encode())
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"Redis at {self.shown}: {exc}; cancel not sent") from exc

    @staticmethod
    def order(event_id: str) -> tuple[int, int]:
        return _key(event_id.partition(".")[0]) or (0, 0)
