"""The driver: runs one Stream against one ASGI ``send``/``receive``.

Every way a Stream reaches a client goes through ``drive``: the calling task watches
``receive`` for the disconnect and keeps the heartbeat (a ``: ping`` comment after ``ping``
ms without a write), one task starts the response and runs the producer, and one writer
drains the Stream's bounded queue into ``send`` (coalescing frames that already wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import sys
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .frames import DROPPING, CloseReason
from .lifecycle import CLEANUP_TIMEOUT
from .parking import rest_of
from .producer import DEFAULT_MAX_BUFFER, DEFAULT_PING, Producer
from .sources import UpstreamError
from .wire import PING, request_header

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["FrameIterator", "drive", "drive_claimed", "frames", "send_plain"]

logger = logging.getLogger("asgi_stream")


async def send_plain(send: ASGISendCallable, status: int, text: str) -> None:
    """A short plain-text response, for failures before the stream started."""
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def drive(
    producer: Producer,
    scope: Scope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    *,
    ping: float | None = DEFAULT_PING,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> None:
    """Send ``producer``'s stream as the response to the HTTP request ``scope``; return when
    it ends. ``ping`` and ``max_buffer`` are defaults for a Stream that left them unset."""
    if scope["type"] != "http":
        raise TypeError(f"a Stream answers http requests, not {scope['type']!r}")
    producer.claim()
    await drive_claimed(producer, scope, receive, send, ping=ping, max_buffer=max_buffer)


async def drive_claimed(
    producer: Producer,
    scope: Scope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    *,
    ping: float | None = DEFAULT_PING,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> None:
    """``drive`` for a producer its caller has already claimed (``Producer.claim``)."""
    producer.configure(ping=ping, max_buffer=max_buffer)
    producer.last_event_id = request_header(scope.get("headers", ()), b"last-event-id")
    queue = producer.queue
    queue.bind()
    where = f"{scope.get('method', 'GET')} {scope.get('path', '')}"
    head = scope.get("method") == "HEAD"
    on_asyncio = _on_asyncio()
    writer = _Writer(producer, send, where)
    response = _Response(producer, send, where, writer, head=head)
    try:
        # Three roles: the calling task waits for the disconnect (and keeps the heartbeat as
        # a timeout on that wait), a producer task runs the source, a writer task writes.
        # The writer must outlive the producer: a server may not let a blocked write be
        # cancelled (hypercorn's trio worker shields it), and once the producer is stopped
        # (completion, disconnect, slow client, shutdown) the cleanup and on_close run at
        # once; only then does the driver wait out a stuck write.
        # On trio they are tasks of two nested groups. On asyncio they are plain tasks owned
        # by the response, cancelled through anyio cancel scopes and awaited here: an anyio
        # task and its group cost five times a plain task, and an open stream's memory is
        # mostly tasks. There the writer starts only when a write cannot be made by the task
        # that has the frame (``_Writer.write_now``), so that an open stream has as many
        # tasks as a hand-written loop.
        async with _group_on_trio(on_asyncio) as writing:
            async with _group_on_trio(on_asyncio) as tg:
                response.writing, response.tg = writing, tg
                queue.on_end = response.ended
                producer.canceller = response.cancel
                if on_asyncio:
                    queue.write_now = writer.write_now
                    if splittable(send):
                        queue.write_at_once = writer.write_at_once
                response.host = host = anyio.CancelScope()
                with host:
                    response.start_producer()
                    try:
                        await _until_disconnect(receive, writer)
                    except Exception:  # a broken receive: the client is as good as gone
                        logger.warning("receive() failed (%s)", where, exc_info=True)
                    producer.end("disconnect")
                response.host = None  # exited: cancelling it would cost anyio a repr(task)
                response.cancel()
            with anyio.CancelScope(shield=True):
                await response.producer_stopped()  # (trio: its group has waited)
            response.retire_writer()
            with anyio.CancelScope(shield=True):
                await producer.finish()
                await response.writer_stopped()  # (trio: its group waits)
    finally:
        queue.on_end = queue.write_now = queue.write_at_once = producer.canceller = None
        queue.parking.on_demand(None)
        with anyio.CancelScope(shield=True):
            response.cancel()
            await response.producer_stopped()
            response.retire_writer()
            await producer.finish()  # idempotent: covers an exception or outer cancellation
            await response.writer_stopped()
            writer.abandon()


SPLITTABLE_SENDS: set[tuple[str, str]] = {
    ("hypercorn.protocol.http_stream", "HTTPStream.app_send"),
    ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle.send"),
    ("uvicorn.protocols.http.h11_impl", "RequestResponseCycle.send"),
}
"""The ASGI sends (module, qualified name of the method) whose first step may run in one task
and the rest in another (``_Writer.write_at_once``, a channel's publish): the servers' own,
which hold nothing task-bound (an anyio cancel scope, ``asyncio.timeout``) across a
suspension; checked for hypercorn 0.18 and uvicorn 0.54. Any other send, such as an outer
middleware's wrapper, is written by the stream's writer task."""


def splittable(send: Any) -> bool:
    func = getattr(send, "__func__", None)
    return (getattr(func, "__module__", None), getattr(func, "__qualname__", None)) in (
        SPLITTABLE_SENDS
    )


def _group_on_trio(on_asyncio: bool) -> contextlib.AbstractAsyncContextManager[Any]:
    """A task group on trio; on asyncio, where the driver's tasks are its own, none."""
    return contextlib.nullcontext() if on_asyncio else anyio.create_task_group()


class _Response:
    """One response being driven: what its three tasks share (the calling task, which waits
    for the disconnect, the producer's and the writer's; see ``drive_claimed``). Methods,
    not closures: an open stream keeps this one object, not a function and cells per role."""

    __slots__ = (
        "context",
        "head",
        "host",
        "preparing",
        "producer",
        "producer_scope",
        "producer_task",
        "send",
        "tg",
        "where",
        "writer",
        "writer_task",
        "writing",
    )

    def __init__(
        self, producer: Producer, send: ASGISendCallable, where: str, writer: _Writer, *, head: bool
    ) -> None:
        self.producer = producer
        self.send = send
        self.where = where
        self.writer = writer
        self.head = head
        # Cancels a source still preparing its first item (automatic modes only).
        self.preparing = None if producer.starts_at_once else anyio.CancelScope()
        # The calling task's wait for the disconnect, while it lasts.
        self.host: anyio.CancelScope | None = None
        self.tg: anyio.abc.TaskGroup | None = None  # trio: the producer's group
        self.writing: anyio.abc.TaskGroup | None = None  # trio: the writer's group
        self.producer_scope: anyio.CancelScope | None = None  # asyncio: the producer's
        self.producer_task: asyncio.Task[None] | None = None  # asyncio: the producer
        self.writer_task: asyncio.Task[None] | None = None  # asyncio: the writer
        self.context: contextvars.Context | None = None  # asyncio: the request's

    def ended(self, reason: CloseReason) -> None:
        """The queue's ``on_end``: stop what must stop at once."""
        if reason in DROPPING:  # a slow client, or one that left (a failed write says so)
            self.cancel()  # and the writer may be stuck in send()
        elif reason == "shutdown" and self.preparing is not None:
            self.preparing.cancel()  # not started yet: answer 503 at once

    def cancel(self) -> None:
        """Stop the producer and the wait for the disconnect (not the writer: see
        ``retire_writer``)."""
        if self.host is not None:
            self.host.cancel()
        if self.tg is not None:
            self.tg.cancel_scope.cancel()
        if self.producer_scope is not None:
            self.producer_scope.cancel()

    # -- the producer task -------------------------------------------------------------

    def start_producer(self) -> None:
        if self.tg is not None:
            self.tg.start_soon(self.run)
            return
        self.context = contextvars.copy_context()
        self.producer_scope = anyio.CancelScope()
        self.producer_task = asyncio.get_running_loop().create_task(
            self._run_in_scope(), context=self.context
        )

    async def _run_in_scope(self) -> None:
        assert self.producer_scope is not None
        with self.producer_scope:
            await self.run()
        # Done (a value-based stream's at once): nothing left to wait for or to cancel,
        # and a finished task is not kept for the life of the stream.
        self.producer_task = self.producer_scope = None

    async def producer_stopped(self) -> None:
        """Once cancelled: wait for the asyncio producer task to end."""
        task, self.producer_task = self.producer_task, None
        if task is not None:
            await _ended(task, self.where)

    async def run(self) -> None:
        """Start the response, then the producer; the writer when needed."""
        producer, writer, queue = self.producer, self.writer, self.producer.queue
        if not await self._start():
            self.cancel()
            return
        self.preparing = None  # prepared: not kept for the life of the stream
        writer.arm()
        if queue.write_now is None or producer.starts_at_once:
            # Every write by the writer (trio); or a value-based or callback stream, whose
            # sends come from other tasks: the writer from the start, not at the first send.
            self.start_writer()
        else:  # automatic: the first frames from here, and a writer only if need be
            queue.parking.on_demand(self.start_writer)
            await writer.write_now()
        if not self.head:
            await producer.run(self.where)
        # the writer ends the response once everything is written

    # -- the writer task ---------------------------------------------------------------

    async def write(self) -> None:
        await self.writer.run()
        self.cancel()

    def start_writer(self) -> None:
        """Start the writer task (from any task, or a loop callback: a thread's send)."""
        if self.writer.retired or self.producer.queue.reason in DROPPING:
            return  # over, or dropped: nothing will be written
        if self.writing is not None:
            self.writing.start_soon(self.write)
        elif self.writer_task is None:
            self.writer_task = asyncio.get_running_loop().create_task(
                self.write(), context=self.context
            )

    def retire_writer(self) -> None:
        """The stream is over: the writer is not started any more, and is cancelled."""
        self.writer.retired = True
        if self.writing is not None:
            self.writing.cancel_scope.cancel()
        elif self.writer_task is not None:
            self.writer_task.cancel()

    async def writer_stopped(self) -> None:
        """Once retired: wait for the asyncio writer task to end (cancelled, it ends at its
        next await; asyncio servers' writes can be cancelled)."""
        task, self.writer_task = self.writer_task, None
        if task is not None:
            await _ended(task, self.where)

    async def _start(self) -> bool:
        """Prepare the source and send the response start; ``False`` if the stream is over.
        A HEAD request gets the head alone: the source is never run, nor even resolved."""
        producer, send, where = self.producer, self.send, self.where
        if not self.head and self.preparing is not None:
            try:
                with self.preparing:
                    await producer.prepare()
            except UpstreamError as exc:
                logger.warning("proxy stream failed (%s): %s", where, exc)
                producer.end("error")
                await _answer(send, 502, f"Bad Gateway: {exc}\n")
                return False
            except Exception:
                logger.exception("stream source failed before the first item (%s)", where)
                producer.end("error")
                await _answer(send, 500, "Internal Server Error\n")
                return False
        if producer.queue.reason == "shutdown":
            await _answer(send, 503, "Service Unavailable: the server is shutting down\n")
            return False
        if producer.source.no_content:  # the library's own answer; a user's 204 is refused
            with contextlib.suppress(OSError):
                await send(
                    {"type": "http.response.start", "status": 204, "headers": [], "trailers": False}
                )
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            producer.end("complete")
            return False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": producer.status,
                    "headers": producer.response_headers(),
                    "trailers": False,
                }
            )
        except OSError:
            producer.end("disconnect")
            return False
        except Exception:
            logger.exception("sending the response start failed (%s)", where)
            producer.end("error")
            return False
        if self.head:  # headers only, now written: nothing is produced, nothing more is written
            producer.queue.take()
            producer.end("complete")
        return True


async def _ended(task: asyncio.Task[None], where: str) -> None:
    """Wait for one of the driver's own asyncio tasks to end; log what it raised."""
    if not task.done():
        await asyncio.wait((task,))
    if not task.cancelled() and (failure := task.exception()) is not None:
        logger.error("a stream task failed (%s)", where, exc_info=failure)


async def _answer(send: ASGISendCallable, status: int, text: str) -> None:
    with contextlib.suppress(OSError):  # the client left: nothing to answer
        await send_plain(send, status, text)


def _on_asyncio() -> bool:
    """Whether writes may come from the producer (``sources.pump``): not on trio,
    where hypercorn shields socket writes, and a producer stuck in one would hold up the
    cleanup and ``on_close`` that the two task groups make immediate."""
    try:
        asyncio.current_task()
    except RuntimeError:  # no asyncio loop in this thread
        return False
    return True


def _clock() -> Callable[[], float]:
    """anyio's clock, found once per stream: ``anyio.current_time()`` looks up the backend
    on every call, which is a measurable part of a write. On asyncio it is the loop's time."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return anyio.current_time


class _Writer:
    """The one writer of a stream: drains the queue into ``send``, and keeps the heartbeat
    (a ``: ping`` comment after ``ping`` ms without a write, once the response started).

    The heartbeat is a timeout on the wait for the disconnect, re-armed from the last write
    when it expires, so that it costs neither a task nor anything per event. The ping goes
    through the queue like any frame: it counts towards ``max_buffer`` and never follows a
    close."""

    __slots__ = (
        "broken",
        "clock",
        "inflight",
        "interval",
        "last_write",
        "pinged",
        "producer",
        "queue",
        "retired",
        "send",
        "timer",
        "where",
    )

    def __init__(self, producer: Producer, send: ASGISendCallable, where: str) -> None:
        self.producer = producer
        self.queue = producer.queue
        self.send = send
        self.where = where
        self.broken = False  # a write failed: the response cannot be ended cleanly
        self.retired = False  # the stream is over: the writer task is not started any more
        self.clock = _clock()
        self.interval: float | None = None
        self.last_write = self.pinged = -math.inf
        self.timer: anyio.CancelScope | None = None
        # A write that another task started (``write_at_once``) and that must wait: the
        # send's coroutine and what it suspended on; this writer finishes it first.
        self.inflight: tuple[Any, Any, int] | None = None

    def _failed(self, exc: Exception) -> None:
        """A write failed: the response is broken, whatever was queued."""
        self.broken = True
        if isinstance(exc, OSError):  # whatever the server's spec_version: the client is gone
            self.queue.end("disconnect")
        else:
            logger.error("sending the stream failed (%s)", self.where, exc_info=exc)
            self.queue.end("error")

    async def run(self) -> None:
        """Write queued frames until the stream is closed, then the final empty body."""
        queue, send, parking = self.queue, self.send, self.queue.parking
        try:
            while not self.broken:
                if self.inflight is not None:  # begun by another task: finished here
                    (step, signal, size), self.inflight = self.inflight, None
                    await rest_of(step, signal)
                    queue.writing = False
                    queue.tally.bytes += size
                    self.last_write = self.clock()
                    continue
                if not queue.frames and queue.reason is None:
                    await parking.wait()  # woken by a push or a close
                    continue
                if not (chunk := queue.take()):
                    break  # closed, and everything was written
                queue.writing = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                queue.writing = False
                queue.tally.bytes += len(chunk)
                self.last_write = self.clock()
            if not self.broken and queue.reason not in DROPPING:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:
            self._failed(exc)

    async def write_now(self, put: Callable[[Any], object] | None = None, item: Any = None) -> None:
        """Queue ``item`` with ``put`` (if given) and write what is queued from the calling
        task, in the place of the idle writer, as a hand-written loop would: no wake-up, no
        task switch. The writer stays parked (or unstarted); frames queued meanwhile, or a
        close, wake it afterwards: still one write at a time. Asyncio only (``drive``)."""
        queue = self.queue
        queue.parking.hold()
        try:
            if put is not None:
                put(item)  # what it raises is the producer's failure, not the write's
            if self.broken or not (chunk := queue.take()):
                return
            try:
                queue.writing = True
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
                queue.writing = False
                queue.tally.bytes += len(chunk)
                self.last_write = self.clock()
            except Exception as exc:
                self._failed(exc)
        finally:
            queue.release_consumer()

    def write_at_once(self, frame: bytes) -> None:
        """``FrameQueue.offer``'s write, from the calling task while this writer is parked:
        the send's first step runs here, and most sends end in it (the server's write
        buffer has room). One that must wait is finished by this writer (woken, or started):
        still one write at a time, and the caller never waits. Asyncio only (``drive``)."""
        if self.broken:
            return
        message: Any = {"type": "http.response.body", "body": frame, "more_body": True}
        step: Any = self.send(message).__await__()  # ASGI asks for an awaitable, not a coroutine
        try:
            signal = step.send(None)
        except StopIteration:
            self.queue.tally.bytes += len(frame)
            self.last_write = self.clock()
            return
        except Exception as exc:
            self._failed(exc)
            return
        self.queue.writing = True
        self.inflight = (step, signal, len(frame))
        self.queue.parking.wake()

    def abandon(self) -> None:
        """The stream is over and its writer gone: close a write it never took over."""
        if self.inflight is not None:
            (step, _, _), self.inflight = self.inflight, None
            step.close()

    # -- the heartbeat -----------------------------------------------------------------

    def arm(self) -> None:
        """The response started: from now on, ping while nothing is written."""
        self.interval = self.producer.ping_seconds()  # known for sure only now (proxy or not)
        self.last_write = self.clock()
        if self.timer is not None:
            self.timer.deadline = self.deadline()

    def deadline(self) -> float:
        if self.interval is None:
            return math.inf
        return max(self.last_write, self.pinged) + self.interval

    async def expired(self) -> None:
        now = self.clock()
        if now >= self.deadline():  # else a write came meanwhile: the next deadline is later
            queue = self.queue
            if queue.reason is None and not queue.frames:
                queue.tally.pings += 1
                if queue.write_now is not None and queue.parking.waiting:
                    await self.write_now(queue.push, PING)  # the writer is idle (or unstarted)
                else:
                    queue.push(PING)
            self.pinged = now  # queued, or the writer is stuck: look again in one interval


async def _until_disconnect(receive: ASGIReceiveCallable, writer: _Writer) -> None:
    """Return when the client has disconnected; beat the heartbeat meanwhile."""
    while True:
        with anyio.CancelScope(deadline=writer.deadline()) as writer.timer:
            if (await receive())["type"] == "http.disconnect":
                return
            continue
        await writer.expired()  # only its own deadline ends the scope without leaving the loop


class _Detached:
    """The producer task of ``Stream.value``: not a child of a task group that the iterator
    opened, since an async generator must not suspend inside one across ``yield`` (PEP 789).
    Its owner cancels it and waits for it, bounded, in its ``finally``."""

    def __init__(self, producer: Producer, where: str) -> None:
        self.producer = producer
        self.where = where
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.task: object = None  # keeps an asyncio task alive

    async def _main(self) -> None:
        try:
            with self.scope:
                await self.producer.run(self.where)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException:  # a trio system task must not raise: it would end the run
            logger.exception("stream producer failed (%s)", self.where)
            self.producer.end("error")
        finally:
            self.done.set()

    def start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            trio: Any = sys.modules["trio"]
            trio.lowlevel.spawn_system_task(self._main, context=contextvars.copy_context())
        else:
            self.task = loop.create_task(self._main())

    async def stop(self) -> None:
        self.scope.cancel()
        with anyio.move_on_after(CLEANUP_TIMEOUT):
            await self.done.wait()


async def frames(producer: Producer, where: str = "Stream.value") -> AsyncGenerator[bytes, None]:
    """The stream's encoded frames, one per item, for a framework's own streaming response:
    the producer runs in a task of its own, this generator only takes frames from the queue.
    Failures before the first item propagate to the consumer; a consumer that stops early
    (``aclose``) ends the stream with ``"disconnect"``, one that falls ``max_buffer`` behind
    with ``"slow-client"``."""
    queue = producer.queue
    queue.bind()
    producer_task: _Detached | None = None
    batch: list[bytes] = []  # taken from the queue, not yet handed to the consumer
    try:
        try:
            await producer.prepare()
        except Exception:
            producer.end("error")
            raise
        producer_task = _Detached(producer, where)

        def ended(reason: CloseReason) -> None:
            if reason in DROPPING and producer_task is not None:  # else flush the queue first
                producer_task.scope.cancel()

        queue.on_end = ended
        producer_task.start()
        while True:
            await queue.wait()
            batch = queue.take_frames()
            if not batch:
                break
            batch.reverse()
            queue.writing = True  # the consumer holds frames: max_buffer applies
            while batch:
                yield batch.pop()
            queue.writing = False
    finally:
        queue.on_end = None
        if not batch:  # the consumer had every frame taken: it did not leave half-way
            queue.writing = False
        with anyio.CancelScope(shield=True):
            if producer_task is not None:
                await producer_task.stop()
            await producer.finish()


class FrameIterator:
    """``Stream.value``: ``frames``, and closing it before its first frame ends the
    stream too (a generator never started would skip its ``finally``)."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._frames = frames(producer)
        self._started = False

    def __aiter__(self) -> FrameIterator:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        return await anext(self._frames)

    async def aclose(self) -> None:
        if not self._started:  # nothing ran: close what the source holds, run on_close
            self._started = True
            self._producer.end("disconnect")
            with anyio.CancelScope(shield=True):
                await self._producer.finish()
        await self._frames.aclose()
