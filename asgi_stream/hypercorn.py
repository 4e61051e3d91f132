"""Serve a StreamMiddleware app with hypercorn so that SIGINT/SIGTERM ends every stream cleanly.

Plain ``hypercorn module:app`` stops accepting, waits ``graceful_timeout`` for open
connections (an endless stream never finishes), then cancels them mid-stream. Here the
shutdown trigger first calls :meth:`StreamMiddleware.shutdown`: every stream gets
``on_close("shutdown")`` and its final frame, and hypercorn then has nothing left to wait for.
Needs hypercorn (``pip install asgi-stream[demo]``).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Literal

import anyio

if TYPE_CHECKING:
    from hypercorn.config import Config

    from .middleware import StreamMiddleware

__all__ = ["run", "serve"]


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
    config = config or Config()
    if bind is not None:
        config.bind = [bind]
    wait_for_stop = shutdown_trigger or _signalled

    async def stop() -> None:
        await wait_for_stop()
        await app.shutdown(grace)

    if _running_trio():
        from hypercorn.trio import serve as hypercorn_serve
    else:
        from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]
    await hypercorn_serve(app, config, shutdown_trigger=stop)  # type: ignore[arg-type]


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
