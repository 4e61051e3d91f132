"""The end of a stream: what it owns is closed, then ``on_close`` callbacks hear the reason.

Runs once per stream, shielded from the cancellation that usually ends it (a disconnect), but
bounded: closing each owned object gets at most ``CLEANUP_TIMEOUT`` seconds, and the async
callbacks, which run together, get ``CLEANUP_TIMEOUT`` seconds in all. User code that never
returns can neither make a request uncancellable nor keep a server from exiting.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from .frames import CloseReason, FrameQueue

__all__ = ["CLEANUP_TIMEOUT", "Lifecycle", "close_quietly"]

logger = logging.getLogger("asgi_stream")

CLEANUP_TIMEOUT: Final = 1.0
"""Seconds that closing one owned object, or a stream's async ``on_close`` callbacks, may take."""


async def close_quietly(obj: object) -> None:
    """Close a source or iterator the way it wants to be closed (``aclose`` or ``close``);
    a coroutine never awaited is closed unawaited, a task or future cancelled. Failures are
    logged, not raised."""
    closer = getattr(obj, "aclose", None) or getattr(obj, "close", None)
    if closer is None:
        closer = getattr(obj, "cancel", None)  # an asyncio Task or Future: never awaited
    if closer is None:
        return
    try:
        result = closer()
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("closing the stream source %r failed", obj)


class Lifecycle:
    """Who wants to hear that a stream ended."""

    __slots__ = ("callbacks", "ended", "listeners")

    def __init__(self) -> None:
        self.callbacks: list[Callable[[CloseReason], object]] = []  # the user's on_close
        self.listeners: list[Callable[[], object]] = []  # ours (a registry): told first
        self.ended = False

    def on_close(self, callback: Callable[[CloseReason], object]) -> None:
        if not callable(callback):
            raise TypeError(f"on_close() needs a callable, not {type(callback).__name__}")
        if self.ended:
            raise RuntimeError("the stream has already ended; on_close() is too late")
        self.callbacks.append(callback)

    async def finish(self, queue: FrameQueue, owned: tuple[object, ...]) -> None:
        """Once: close the queue (``"disconnect"`` unless it has a reason), tell the
        listeners, close what is ``owned`` in order, then run the callbacks: each is called in
        order, and the awaitables they return are awaited together, within the bound.
        Call it shielded: it must run even when its caller was cancelled."""
        if self.ended:
            return
        self.ended = True
        queue.end("disconnect")  # a no-op when it already has a reason
        reason = queue.reason
        assert reason is not None
        # Each is called once: let go of them (their closures often refer back to the
        # stream, a cycle only the garbage collector would break).
        listeners, callbacks = self.listeners, self.callbacks
        self.listeners, self.callbacks = [], []
        for listener in listeners:
            listener()
        for obj in owned:
            with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
                await close_quietly(obj)
            if scope.cancelled_caught:
                logger.warning("closing %r took over %s s; left", obj, CLEANUP_TIMEOUT)
        pending: list[tuple[Callable[[CloseReason], object], Awaitable[object]]] = []
        for callback in callbacks:  # called in order; the async ones then run together
            try:
                result = callback(reason)
            except Exception:
                logger.exception("on_close callback %r failed", callback)
            else:
                if inspect.isawaitable(result):
                    pending.append((callback, result))
        if pending:
            with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
                async with anyio.create_task_group() as tg:
                    for callback, awaitable in pending:
                        tg.start_soon(_complete, callback, awaitable)
            if scope.cancelled_caught:
                logger.warning("on_close callbacks took over %s s; cancelled", CLEANUP_TIMEOUT)


async def _complete(
    callback: Callable[[CloseReason], object], awaitable: Awaitable[object]
) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("on_close callback %r failed", callback)
