"""The driver: runs one Stream against one ASGI ``send``/``receive``.

Every way a Stream reaches a client goes through :func:`drive`: the calling task watches
``receive`` for the disconnect and keeps the heartbeat (a ``: ping`` comment after ``ping``
ms without a write), one task starts the response and runs the producer, and one writer
drains the Stream's bounded queue into ``send`` (coalescing frames that already wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from .stream import DEFAULT_MAX_BUFFER, DEFAULT_PING, Stream, UpstreamError, request_header
from .wire import PING

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["drive", "drive_claimed", "send_plain"]

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
    stream: Stream,
    scope: Scope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    *,
    ping: float | None = DEFAULT_PING,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> None:
    """Send ``stream`` as the response to the HTTP request ``scope``; return when it ends.

    ``ping`` and ``max_buffer`` are defaults for a Stream that left them unset.
    """
    if scope["type"] != "http":
        raise TypeError(f"a Stream answers http requests, not {scope['type']!r}")
    stream._claim()
    await drive_claimed(stream, scope, receive, send, ping=ping, max_buffer=max_buffer)


async def drive_claimed(
    stream: Stream,
    scope: Scope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    *,
    ping: float | None = DEFAULT_PING,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> None:
    """:func:`drive` for a Stream its caller has already claimed (``Stream._claim``)."""
    stream._configure(ping=ping, max_buffer=max_buffer)
    stream.last_event_id = request_header(scope, b"last-event-id")
    where = f"{scope.get('method', 'GET')} {scope.get('path', '')}"
    head = scope.get("method") == "HEAD"
    try:
        # Two groups, because a server may not let a blocked write be cancelled (hypercorn's
        # trio worker shields it): the writer lives in the outer group, so that when the
        # inner one ends (completion, disconnect, slow client, shutdown) the cleanup and
        # on_close run at once, and only then does the driver wait out a stuck write.
        # Two tasks per stream, not four: the calling task waits for the disconnect and keeps
        # the heartbeat as a timeout on that wait (an open stream's memory is mostly tasks).
        heartbeat = _Heartbeat(stream)
        async with anyio.create_task_group() as writing:
            async with anyio.create_task_group() as tg:
                stream._abort = tg.cancel_scope.cancel

                async def write() -> None:
                    await _write(stream, send, where, heartbeat)
                    tg.cancel_scope.cancel()

                async def write_now() -> None:
                    await _write_now(stream, send, where, heartbeat)

                async def run() -> None:
                    """Start the response, then the writer, then the producer."""
                    if await _start(stream, send, where, head=head):
                        heartbeat.arm()
                        writing.start_soon(write)
                        if not head:
                            await stream._run(where)
                        return  # the writer ends the group once everything is written
                    tg.cancel_scope.cancel()

                if _on_asyncio():
                    stream._write_now = write_now
                tg.start_soon(run)
                try:
                    await _until_disconnect(receive, heartbeat)
                except Exception:  # a broken receive: the client is as good as gone
                    logger.warning("receive() failed (%s)", where, exc_info=True)
                stream._end("disconnect")
                tg.cancel_scope.cancel()
            writing.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await stream._cleanup()
    finally:
        stream._abort = stream._write_now = None
        with anyio.CancelScope(shield=True):
            await stream._cleanup()  # idempotent: covers an exception or outer cancellation


async def _start(stream: Stream, send: ASGISendCallable, where: str, *, head: bool) -> bool:
    """Prepare the source and send the response start; ``False`` if the stream is over."""
    if not stream._starts_at_once:
        try:
            await stream._prepare()
        except UpstreamError as exc:
            logger.warning("proxy stream failed (%s): %s", where, exc)
            stream._end("error")
            await _answer(send, 502, f"Bad Gateway: {exc}\n")
            return False
        except Exception:
            logger.exception("stream source failed before the first item (%s)", where)
            stream._end("error")
            await _answer(send, 500, "Internal Server Error\n")
            return False
    if stream._reason == "shutdown":
        await _answer(send, 503, "Service Unavailable: the server is shutting down\n")
        return False
    if head:  # headers only: nothing is produced or written
        stream._take()
        stream.close()
    try:
        await send(
            {
                "type": "http.response.start",
                "status": stream.status,
                "headers": stream._response_headers(),
                "trailers": False,
            }
        )
    except OSError:
        stream._end("disconnect")
        return False
    except Exception:
        logger.exception("sending the response start failed (%s)", where)
        stream._end("error")
        return False
    return True


async def _answer(send: ASGISendCallable, status: int, text: str) -> None:
    with contextlib.suppress(OSError):  # the client left: nothing to answer
        await send_plain(send, status, text)


def _on_asyncio() -> bool:
    """Whether writes may come from the producer (``Stream._put_and_write``): not on trio,
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


class _Heartbeat:
    """A ``: ping`` comment after ``ping`` ms without a write, once the response started.

    It is a timeout on the wait for the disconnect, re-armed from the last write when it
    expires, so that it costs neither a task nor anything per event. The ping goes through
    the queue like any frame: it counts towards ``max_buffer`` and never follows a close."""

    __slots__ = ("clock", "interval", "last_write", "pinged", "stream", "timer")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.clock = _clock()
        self.interval: float | None = None
        self.last_write = self.pinged = -math.inf
        self.timer: anyio.CancelScope | None = None

    def arm(self) -> None:
        """The response started: from now on, ping while nothing is written."""
        self.interval = self.stream._ping_seconds  # known for sure only now (proxy or not)
        self.last_write = self.clock()
        if self.timer is not None:
            self.timer.deadline = self.deadline()

    def deadline(self) -> float:
        if self.interval is None:
            return math.inf
        return max(self.last_write, self.pinged) + self.interval

    def expired(self) -> None:
        now = self.clock()
        if now >= self.deadline():  # else a write came meanwhile: the next deadline is later
            stream = self.stream
            if stream._reason is None and not stream._frames:
                stream._push(PING)
            self.pinged = now  # queued, or the writer is stuck: look again in one interval


async def _until_disconnect(receive: ASGIReceiveCallable, heartbeat: _Heartbeat) -> None:
    """Return when the client has disconnected; beat the heartbeat meanwhile."""
    while True:
        with anyio.CancelScope(deadline=heartbeat.deadline()) as heartbeat.timer:
            if (await receive())["type"] == "http.disconnect":
                return
            continue
        heartbeat.expired()  # only its own deadline ends the scope without leaving the loop


async def _write_now(
    stream: Stream, send: ASGISendCallable, where: str, heartbeat: _Heartbeat
) -> None:
    """Write what is queued from the calling task while the writer is parked
    (``Stream._put_and_write``)."""
    try:
        if chunk := stream._take():
            stream._writing = True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            stream._writing = False
            heartbeat.last_write = heartbeat.clock()
    except OSError:
        stream._end("disconnect")
    except Exception:
        logger.exception("sending the stream failed (%s)", where)
        stream._end("error")


async def _write(stream: Stream, send: ASGISendCallable, where: str, heartbeat: _Heartbeat) -> None:
    """Write queued frames until the stream is closed, then the final empty body."""
    try:
        while chunk := await stream._next_chunk():
            stream._writing = True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            stream._writing = False
            heartbeat.last_write = heartbeat.clock()
        if stream._reason not in ("disconnect", "slow-client") and not stream._writing:
            # (_writing still set: the producer's write failed, the response is broken)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:  # whatever the server's spec_version: the client is gone
        stream._end("disconnect")
    except Exception:
        logger.exception("sending the stream failed (%s)", where)
        stream._end("error")
