"""Serve a StreamMiddleware app with hypercorn so that SIGINT/SIGTERM ends every stream cleanly.

Plain ``hypercorn module:app`` stops accepting, waits ``graceful_timeout`` for open
connections (an endless stream never finishes), then cancels them mid-stream. Here the
shutdown trigger first calls :meth:`StreamMiddleware.shutdown`: every stream gets
``on_close("shutdown")`` and its final frame, and hypercorn then has nothing left to wait for.
It also corrects hypercorn's HTTP/2 backpressure (see ``_fix_http2_backpressure``), without
which ``max_buffer`` cannot hold for an HTTP/2 client that stops reading.
Needs hypercorn (``pip install asgi-stream[demo]``).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import anyio

if TYPE_CHECKING:
    from hypercorn.config import Config

    from .middleware import StreamMiddleware

__all__ = ["run", "serve"]


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
    if buffer_class is None or low_water is None or getattr(buffer_class, "_asgi_stream", False):
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

    buffer_class.pop = pop
    buffer_class._asgi_stream = True


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
    config = config or Config()
    if bind is not None:
        config.bind = [bind]
    wait_for_stop = shutdown_trigger or _signalled

    async def stop() -> None:
        await wait_for_stop()
        await app.shutdown(grace)

    if _running_trio():
        from hypercorn.trio import serve as hypercorn_serve

        await hypercorn_serve(app, config, shutdown_trigger=stop)  # type: ignore[arg-type]
        return
    import asyncio

    from hypercorn.asyncio import serve as asyncio_serve

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
