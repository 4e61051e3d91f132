"""Serve a StreamMiddleware app with hypercorn so that SIGINT/SIGTERM ends every stream cleanly.

Plain ``hypercorn module:app`` stops accepting, waits ``graceful_timeout`` for open
connections (an endless stream never finishes), then cancels them mid-stream. Here the
shutdown trigger first calls ``StreamMiddleware.shutdown``: every stream gets
``on_close("shutdown")`` and its final frame, and hypercorn then has nothing left to wait for.
It also corrects hypercorn's HTTP/2 backpressure (see ``_fix_http2_backpressure``), without
which ``max_buffer`` cannot hold for an HTTP/2 client that stops reading; resets an HTTP/2
stream whose app gave up its response (``_reset_unfinished_http2_streams``: a stream dropped as
"slow-client" would stay open for its client); and bounds the shutdown when a client stopped
reading, which would hold hypercorn's worker for as long as it stays connected: trio's
shielded socket write (``_bound_trio_writes``), asyncio's waits for the transport to flush
(``_abort_cut_off_asyncio_connections``).
Needs hypercorn (``pip install asgi-stream[demo]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import anyio

logger = logging.getLogger("asgi_stream")

if TYPE_CHECKING:
    from hypercorn.config import Config

    from .middleware import StreamMiddleware

__all__ = ["run", "serve"]

# hypercorn internals this module replaces, each once: (class, attribute name).
_PATCHED: set[tuple[object, str]] = set()


def _patch(owner: Any, name: str, replacement: Any) -> bool:
    """Replace hypercorn's ``owner.<name>`` (a private one, mostly) with ``replacement``;
    ``False`` if it was already replaced. Names are passed as data: these are hypercorn's
    internals, reached on purpose and checked before each patch."""
    if (owner, name) in _PATCHED:
        return False
    setattr(owner, name, replacement)
    _PATCHED.add((owner, name))
    return True


def _fix_http2_backpressure() -> None:
    """hypercorn's HTTP/2 ``StreamBuffer.pop`` releases a paused writer whenever the popped
    data is short, including the ``pop(0)`` it makes when a stream has no flow-control
    credit: ``send()`` then never waits, so a client that stops reading is never detected
    and hypercorn buffers without bound. Release the writer only once the *buffer* is below
    its low-water mark. Idempotent; skipped if hypercorn's internals are not the ones known."""
    try:
        from hypercorn.protocol import h2
    except ImportError:  # pragma: no cover - depends on the installed hypercorn
        return
    buffer_class = getattr(h2, "StreamBuffer", None)
    low_water = getattr(h2, "BUFFER_LOW_WATER", None)
    if buffer_class is None or low_water is None or (buffer_class, "pop") in _PATCHED:
        return

    async def pop(self: Any, max_length: int) -> bytes:
        length = min(len(self.buffer), max_length)
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        if len(self.buffer) < low_water:  # hypercorn: len(data) < low water
            await self._paused.set()
        if len(self.buffer) == 0:
            await self._is_empty.set()
        return data

    _patch(buffer_class, "pop", pop)


def _reset_unfinished_http2_streams() -> None:
    """hypercorn ends an HTTP/2 stream only when the app sends its final body. An app that
    returns or raises after its response started, without it (as the driver does for a client
    dropped as "slow-client"), leaves the stream open for as long as the connection lives:
    its client waits for ever and hypercorn keeps the stream's buffer. Reset such a stream
    (RST_STREAM, as HTTP/1.1 closes the connection) once hypercorn's sender has sent what
    flow control allows of its buffer, and forget it. The connection and its other streams go
    on. Idempotent; skipped if hypercorn's internals are not the ones known."""
    try:
        import h2.errors
        import h2.exceptions
        from hypercorn.protocol import h2 as h2_protocol
        from hypercorn.protocol.events import StreamClosed
        from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
        from priority.priority import PriorityError
    except ImportError:  # pragma: no cover - depends on the installed hypercorn
        return
    protocol = getattr(h2_protocol, "H2Protocol", None)
    started = {getattr(ASGIHTTPState, name, None) for name in ("RESPONSE", "TRAILERS")}
    sender = "_send_data"
    if (
        protocol is None
        or None in started
        or (protocol, sender) in _PATCHED
        or not all(
            callable(getattr(protocol, name, None))
            for name in ("stream_send", sender, "_flush", "_window_updated")
        )
    ):
        return
    stream_send, send_data = protocol.stream_send, getattr(protocol, sender)

    async def send(self: Any, event: Any) -> None:
        # StreamClosed while the response is started and not ended: the app gave it up.
        stream = self.streams.get(event.stream_id) if isinstance(event, StreamClosed) else None
        given_up = isinstance(stream, HTTPStream) and stream.state in started
        await stream_send(self, event)
        if given_up and event.stream_id in self.stream_buffers:
            self.__dict__.setdefault("_asgi_stream_given_up", set()).add(event.stream_id)
            await self._window_updated(event.stream_id)  # the sender takes it from here

    async def send_then_reset(self: Any, stream_id: int) -> None:
        await send_data(self, stream_id)
        given_up: set[int] | None = self.__dict__.get("_asgi_stream_given_up")
        if not given_up or stream_id not in given_up:
            return
        buffer = self.stream_buffers.get(stream_id)
        if buffer is None:  # gone meanwhile: reset by the client, or the connection closed
            given_up.discard(stream_id)
            return
        try:
            if buffer.buffer and self.connection.local_flow_control_window(stream_id) > 0:
                return  # more of it can go out first
            self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.ProtocolError:  # closed meanwhile
            pass
        else:
            await self._flush()
        given_up.discard(stream_id)
        self.stream_buffers.pop(stream_id, None)
        with contextlib.suppress(PriorityError):
            self.priority.remove_stream(stream_id)
        await buffer.close()  # wakes a writer still waiting for room

    _patch(protocol, "stream_send", send)
    _patch(protocol, sender, send_then_reset)


def _bound_trio_writes() -> None:
    """hypercorn's trio worker shields every socket write from cancellation (so that a
    cancelled app cannot cut a frame in half). A write to a client that stopped reading then
    never ends, not even when hypercorn cuts the connections off ``graceful_timeout`` after
    a shutdown began: the worker hangs for as long as that client stays connected. Close the
    connection's socket when hypercorn cuts it off: the shielded write fails (closed), which
    hypercorn handles as a closed connection. One sleeping task per connection. Idempotent;
    skipped if hypercorn's internals are not the ones known."""
    try:
        import trio
        from hypercorn.trio import tcp_server
    except ImportError:  # pragma: no cover - depends on the installed hypercorn
        return
    server_class = getattr(tcp_server, "TCPServer", None)
    run = getattr(server_class, "run", None)
    if (
        server_class is None
        or run is None
        or (server_class, "run") in _PATCHED
        or not callable(getattr(server_class, "protocol_send", None))
        or "stream" not in inspect.signature(server_class).parameters
    ):
        return

    async def close_when_cut_off(server: Any, own: trio.CancelScope) -> None:
        try:
            await trio.sleep_forever()
        finally:
            if not own.cancel_called:  # cancelled from outside: hypercorn cut it off
                stream = getattr(server, "stream", None)
                sock = getattr(getattr(stream, "transport_stream", stream), "socket", None)
                if sock is not None:
                    sock.close()  # wakes a blocked send_all with ClosedResourceError

    async def run_bounded(self: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_when_cut_off, self, nursery.cancel_scope)
            try:
                await run(self)
            finally:
                nursery.cancel_scope.cancel()

    _patch(server_class, "run", run_bounded)


async def _nothing(*args: object) -> None:
    """Stands in for a hypercorn coroutine method that must no longer act."""


def _abort_cut_off_asyncio_connections() -> None:
    """hypercorn's asyncio worker cuts a connection off at shutdown by cancelling its task
    ``graceful_timeout`` after the shutdown began. When its client stopped reading, the
    connection's cleanup then waits on that client without end: its close waits for the
    transport to flush (``wait_closed``), and over HTTP/2 an app cut off mid-``send()`` ends
    its stream with one more write that waits in ``drain()``, a wait nothing cancels again.
    Either way the worker hangs. Abort the transport the moment the connection is cut off,
    dropping what is unsent: every such wait then ends, and hypercorn's cleanup runs as for a
    lost connection. Idempotent; skipped if hypercorn's internals are not the ones known."""
    try:
        from hypercorn.asyncio import tcp_server
    except ImportError:  # pragma: no cover - depends on the installed hypercorn
        return
    server_class = getattr(tcp_server, "TCPServer", None)
    run = getattr(server_class, "run", None)
    if (
        server_class is None
        or run is None
        or (server_class, "run") in _PATCHED
        or "writer" not in inspect.signature(server_class).parameters
    ):
        return

    async def run_or_abort(self: Any) -> None:
        connection = asyncio.ensure_future(run(self))
        try:
            await asyncio.shield(connection)
        except asyncio.CancelledError:  # cut off
            idle_timer = getattr(self, "idle_task", None)
            if callable(getattr(idle_timer, "restart", None)):
                # Never idle again: hypercorn would restart the timer in a task group that
                # is shutting down (RuntimeError, and a coroutine never awaited).
                idle_timer.restart = _nothing  # type: ignore[union-attr]
            transport = getattr(getattr(self, "writer", None), "transport", None)
            if transport is not None:
                transport.abort()
            connection.cancel()
            try:
                await connection  # bounded now: nothing can wait on the client any more
            except asyncio.CancelledError:
                pass
            except Exception:  # it ends cancelled all the same: it was cut off
                logger.debug("hypercorn's cleanup of a cut-off connection", exc_info=True)
            raise

    _patch(server_class, "run", run_or_abort)


def _running_trio() -> bool:
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


async def _signalled() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def serve(
    app: StreamMiddleware,
    config: Config | None = None,
    *,
    bind: str | None = None,
    grace: float = 5_000,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve ``app`` with hypercorn on the running backend (asyncio or trio) until
    ``shutdown_trigger`` returns (default: SIGINT or SIGTERM); then end every stream within
    ``grace`` ms before hypercorn stops."""
    try:
        from hypercorn.config import Config
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("asgi_stream.hypercorn needs hypercorn: pip install hypercorn") from None
    if not callable(getattr(app, "shutdown", None)):
        raise TypeError(
            f"serve() needs the StreamMiddleware itself (it calls its shutdown()), "
            f"not {type(app).__name__}"
        )
    _fix_http2_backpressure()
    _reset_unfinished_http2_streams()
    config = config or Config()
    if bind is not None:
        config.bind = [bind]
    wait_for_stop = shutdown_trigger or _signalled

    async def stop() -> None:
        await wait_for_stop()
        await app.shutdown(grace)

    if _running_trio():
        from hypercorn.trio import serve as hypercorn_serve

        _bound_trio_writes()
        await hypercorn_serve(app, config, shutdown_trigger=stop)  # type: ignore[arg-type]
        return
    from hypercorn.asyncio import serve as asyncio_serve

    _abort_cut_off_asyncio_connections()
    task = asyncio.current_task()
    if task is not None and not hasattr(task, "uncancel"):  # Python 3.10: nothing to undo
        task = None
    before = task.cancelling() if task is not None else 0
    await asyncio_serve(app, config, shutdown_trigger=stop)  # type: ignore[arg-type]
    # hypercorn's asyncio.TaskGroup may leave a cancel request on this task (it never calls
    # uncancel() on CPython < 3.13): a later cancel scope here would then cancel the caller.
    while task is not None and task.cancelling() > before:
        task.uncancel()


def run(
    app: StreamMiddleware,
    *,
    bind: str = "127.0.0.1:8000",
    grace: float = 5_000,
    backend: Literal["asyncio", "trio"] = "asyncio",
    config: Config | None = None,
) -> None:
    """Blocking entry point: ``run(StreamMiddleware(app), bind="0.0.0.0:8000")``."""
    anyio.run(partial(serve, app, config, bind=bind, grace=grace), backend=backend)
