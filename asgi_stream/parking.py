"""A reusable wake-up for one parked task: how a stream's writer waits for frames.

``anyio.Event`` is one-shot, so waiting on one per write means three objects and a backend
lookup (sniffio) per wait; with thousands of streams those allocations drive the garbage
collector. A :class:`Parking` is made once per stream, for the running backend, and each wait
costs only what the backend itself needs (an asyncio future; nothing on trio).

Waits are cancellable like any anyio checkpoint (a cancel scope cancels the parked task).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Parking", "Unbound", "parking"]


class Parking(Protocol):
    """One task at a time waits in ``wait``; ``wake`` lets it go on (or does nothing).

    ``waiting`` is true while a task is parked and wants waking, or while none was started
    yet and ``start`` would start it (the first ``wake`` calls ``start``: a task that is
    only made when needed). ``hold`` keeps it parked (or unstarted) without it (someone
    else does its work meanwhile) until ``release``; ``wake`` still wakes it.
    """

    waiting: bool
    start: Callable[[], object] | None

    async def wait(self) -> None: ...

    def wake(self) -> None: ...

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def on_demand(self, start: Callable[[], object] | None) -> None:
        """No task waits yet: the first ``wake`` calls ``start`` (``None``: not any more)."""


class Unbound:
    """Nobody can be parked yet (the queue has no consumer's loop): waking does nothing."""

    __slots__ = ()
    waiting = False
    start: Callable[[], object] | None = None

    async def wait(self) -> None:
        raise RuntimeError("nothing waits on a queue before it is bound to its event loop")

    def wake(self) -> None:
        return None

    def hold(self) -> None:
        return None

    def release(self) -> None:
        return None

    def on_demand(self, start: Callable[[], object] | None) -> None:
        return None


class _AsyncioParking:
    __slots__ = ("_future", "_loop", "start", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None
        self.waiting = False
        self.start: Callable[[], object] | None = None

    async def wait(self) -> None:
        self._future = future = self._loop.create_future()
        self.waiting = True
        try:
            await future
        finally:
            self._future = None
            self.waiting = False

    def wake(self) -> None:
        future = self._future
        if future is not None:
            self._future = None
            self.waiting = False
            if not future.done():
                future.set_result(None)
        elif self.start is not None:
            start, self.start = self.start, None
            self.waiting = False
            start()

    def hold(self) -> None:
        self.waiting = False

    def release(self) -> None:
        self.waiting = self._future is not None or self.start is not None

    def on_demand(self, start: Callable[[], object] | None) -> None:
        self.start = start
        self.release()


class _TrioParking:
    __slots__ = ("_lowlevel", "_task", "start", "waiting")

    def __init__(self, trio: Any) -> None:
        self._lowlevel = trio.lowlevel
        self._task: object = None
        self.waiting = False
        self.start: Callable[[], object] | None = None

    async def wait(self) -> None:
        lowlevel = self._lowlevel
        self._task = lowlevel.current_task()
        self.waiting = True
        await lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: object) -> object:
        self._task = None  # cancelled: nobody to wake any more
        self.waiting = False
        return self._lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            self.waiting = False
            self._lowlevel.reschedule(task)
        elif self.start is not None:
            start, self.start = self.start, None
            self.waiting = False
            start()

    def hold(self) -> None:
        self.waiting = False

    def release(self) -> None:
        self.waiting = self._task is not None or self.start is not None

    def on_demand(self, start: Callable[[], object] | None) -> None:
        self.start = start
        self.release()


def parking() -> Parking:
    """A :class:`Parking` for the event loop running in this thread (asyncio or trio)."""
    try:
        return _AsyncioParking(asyncio.get_running_loop())
    except RuntimeError:  # not asyncio, so trio (the only other anyio backend)
        return _TrioParking(sys.modules["trio"])
