"""The bounded queue of encoded frames between a stream's producers and its one writer.

Producers (the source loop, ``Stream.send`` from a callback, another OS thread) push frames;
one consumer (the driver's writer, or ``Stream.value``) takes everything queued as one chunk.
The queue also holds the stream's close reason, since closing is what a consumer waits for.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import anyio

from .parking import Parking, parking

__all__ = ["DROPPING", "UNCOUNTED", "CloseReason", "FrameQueue", "Tally", "call_soon_threadsafe"]

CloseReason = Literal["complete", "disconnect", "slow-client", "shutdown", "error"]
# Reasons that end a stream without flushing it: what is queued is dropped at once.
DROPPING: Final = frozenset({"disconnect", "slow-client"})
# Producers pause when this many bytes wait (or half of max_buffer, if smaller).
LOW_WATER: Final = 65_536
# Makes "not bound yet, so just append" atomic with respect to ``bind`` (one for all queues:
# it is taken once per stream and by sends from other threads before the stream starts).
_BINDING = threading.Lock()


def call_soon_threadsafe() -> Callable[..., object]:
    """How another OS thread schedules a call on the running event loop (asyncio or trio),
    without blocking that thread."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        trio: Any = sys.modules["trio"]  # not asyncio, so trio (the only other anyio backend)
        return trio.lowlevel.current_trio_token().run_sync_soon  # type: ignore[no-any-return]


class Tally:
    """What the streams that share it queued and wrote: plain integers, one increment per
    frame and per write (``StreamMiddleware.stats`` reads them)."""

    __slots__ = ("bytes", "frames", "pings")

    def __init__(self) -> None:
        self.frames = 0  # frames queued: events, proxied chunks, heartbeats
        self.pings = 0  # of which heartbeats
        self.bytes = 0  # body bytes the server took


UNCOUNTED: Final = Tally()
"""The tally of a queue nobody counts (a Stream outside a StreamMiddleware)."""


class FrameQueue:
    """Encoded frames waiting for the writer, bounded by ``limit`` bytes while a write is in
    progress (a slower reader than producer is dropped as ``"slow-client"``)."""

    __slots__ = (
        "frames",
        "limit",
        "loop_thread",
        "low_water",
        "on_end",
        "parking",
        "queued",
        "reason",
        "room",
        "schedule",
        "tally",
        "write_at_once",
        "write_now",
        "writing",
    )

    def __init__(self, limit: int) -> None:
        self.frames: list[bytes] = []
        self.queued = 0  # bytes in ``frames``
        self.limit = self.low_water = 0
        self.set_limit(limit)
        self.reason: CloseReason | None = None
        self.writing = False  # the consumer holds a chunk it has not finished writing
        # Where the consumer waits for frames: made for its event loop by ``bind``.
        self.parking = Parking()
        self.room: anyio.Event | None = None  # set when a producer waits for room
        # Told of every close, with its reason (the driver cancels what must stop).
        self.on_end: Callable[[CloseReason], None] | None = None
        # Writes what is queued now from the producer's task while the writer is parked
        # (asyncio only; see ``sources.pump``).
        self.write_now: Callable[[Callable[[Any], object], Any], Awaitable[None]] | None = None
        # Starts writing one frame from the calling task while the writer is parked, the
        # writer finishing it if it must wait (asyncio only; see ``offer``).
        self.write_at_once: Callable[[bytes], None] | None = None
        self.tally = UNCOUNTED  # the middleware's, once it drives the stream
        # The event loop's thread, and how other threads reach it (``bind``).
        self.loop_thread: int | None = None
        self.schedule: Callable[..., object] | None = None

    def set_limit(self, limit: int) -> None:
        """The slow-client bound, in bytes; producers pause at half of it (64 KiB at most)."""
        self.limit = limit
        self.low_water = min(LOW_WATER, max(1, limit // 2))

    def bind(self) -> None:
        """Called on the event loop that consumes the queue: from now on, pushes and closes
        from other threads are handed to that loop (``push_threadsafe``)."""
        self.parking = parking()
        with _BINDING:
            self.loop_thread = threading.get_ident()
            self.schedule = call_soon_threadsafe()

    def on_loop(self) -> bool:
        """Whether the caller runs on the consuming event loop's thread (once bound)."""
        return self.loop_thread == threading.get_ident()

    def push_threadsafe(self, frame: bytes) -> bool:
        """``push`` from anywhere: before ``bind`` nobody waits, so the frame is appended
        under the lock; after, from another thread, it is handed to the loop and dropped
        there if the stream ended meanwhile. ``False`` if the stream is closed."""
        with _BINDING:
            if self.schedule is None:
                if self.reason is not None:
                    return False
                self.frames.append(frame)
                self.queued += len(frame)
                return True
        if self.on_loop():
            return self.push(frame)
        return self.reason is None and self._in_loop(self._push_if_open, frame)

    def end_threadsafe(self, reason: CloseReason) -> None:
        """``end`` from anywhere (see ``push_threadsafe``)."""
        with _BINDING:
            if self.schedule is None:
                self.end(reason)
                return
        if self.on_loop():
            self.end(reason)
        else:
            self._in_loop(self.end, reason)

    def _push_if_open(self, frame: bytes) -> None:
        if self.reason is None:
            self.push(frame)

    def _in_loop(self, function: Callable[..., object], *args: object) -> bool:
        """Run ``function(*args)`` on the consuming loop, soon; ``False`` if it has ended."""
        assert self.schedule is not None
        try:
            self.schedule(function, *args)
        except RuntimeError:  # the loop is closed (trio's RunFinishedError is one too)
            return False
        return True

    def push(self, frame: bytes) -> bool:
        """Queue one frame; ``False`` if the queue overflowed (the client is dropped)."""
        self.tally.frames += 1
        self.frames.append(frame)
        self.queued += len(frame)
        if self.writing and self.queued > self.limit:
            self.end("slow-client")
            return False
        if self.parking.waiting:
            self.parking.wake()
        return True

    def offer(self, frame: bytes) -> None:
        """``push`` for a frame that many streams get at once (a channel's fan-out): while
        the writer is parked with nothing queued, the calling task starts the write itself,
        so that a publish does not wake one task per subscriber (asyncio)."""
        write = self.write_at_once
        if write is not None and not self.frames and not self.writing and self.parking.waiting:
            self.tally.frames += 1
            write(frame)
        else:
            self.push(frame)

    def take_frames(self) -> list[bytes]:
        """Every frame queued, in order; the queue is empty (and has room) afterwards."""
        frames = self.frames
        if frames:
            self.frames = []
            self.queued = 0
            if self.room is not None:
                self.room.set()
                self.room = None
        return frames

    def take(self) -> bytes:
        """Everything queued, as one chunk (coalescing the frames that already wait)."""
        frames = self.frames
        if not frames:
            return b""
        self.frames = []
        self.queued = 0
        if self.room is not None:
            self.room.set()
            self.room = None
        return frames[0] if len(frames) == 1 else b"".join(frames)

    async def wait(self) -> None:
        """Return once frames are queued or the stream is closed."""
        if not self.frames and self.reason is None:
            await self.parking.wait()

    def release_consumer(self) -> None:
        """After the producer wrote in the parked consumer's place (``Parking.hold``): wake
        the consumer if frames came or the stream closed meanwhile, else let the next push
        wake it."""
        if self.frames or self.reason is not None:
            self.parking.wake()
        else:
            self.parking.release()

    def full(self) -> bool:
        """Whether producers should wait (``until_room``) before queueing more."""
        return self.queued >= self.low_water

    async def until_room(self) -> bool:
        """Wait while too much is queued; ``True`` if it had to wait."""
        waited = False
        while self.reason is None and self.queued >= self.low_water:
            if self.room is None:
                self.room = anyio.Event()
            await self.room.wait()
            waited = True
        return waited

    def cut_off(self) -> None:
        """The server gives up on the stream (a shutdown's grace is over): it ends with
        ``"shutdown"``, a ``"complete"`` one too if it was not all written."""
        if self.reason == "complete" and (self.frames or self.writing):
            self.reason = None
        self.end("shutdown")

    def end(self, reason: CloseReason) -> bool:
        """Close with ``reason``; dropping reasons discard the queue. The first reason wins,
        but for a ``"complete"`` stream that ends otherwise before everything was written
        (a disconnect or a failed write while frames wait or a write is in progress): its
        client did not get it all."""
        if self.reason is not None and not (
            self.reason == "complete"
            and (
                (reason in DROPPING and (self.frames or self.writing))
                or (reason == "error" and self.writing)
            )
        ):
            return False
        self.reason = reason
        if reason in DROPPING:
            self.frames = []
            self.queued = 0
        if self.parking.waiting:
            self.parking.wake()
        if self.room is not None:
            self.room.set()
            self.room = None
        if self.on_end is not None:
            self.on_end(reason)
        return True
