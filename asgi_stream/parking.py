"""A reusable wake-up for one parked task: how a stream's writer waits for frames.

``anyio.Event`` is one-shot, so waiting on one per write means three objects and a backend
lookup (sniffio) per wait; with thousands of streams those allocations drive the garbage
collector. A ``Parking`` is made once per stream, for the running backend, and each wait
costs only what the backend itself needs (an asyncio future; nothing on trio).

Waits are cancellable like any anyio checkpoint (a cancel scope cancels the parked task).
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["Parking", "parking", "rest_of"]


class Parking:
    """One task at a time waits in ``wait``; ``wake`` lets it go on (or does nothing).

    ``waiting`` is true while a task is parked and wants waking, or while none was started
    yet and ``start`` would start it (the first ``wake`` calls ``start``: a task that is
    only made when needed). ``hold`` keeps it parked (or unstarted) without it (someone
    else does its work meanwhile) until ``release``; ``wake`` still wakes it.

    This base is the parking of a queue not bound to an event loop yet: nobody can wait.
    """

    __slots__ = ("_waiter", "start", "waiting")

    def __init__(self) -> None:
        self._waiter: Any = None  # what the parked task waits on (backend-specific)
        self.waiting = False
        self.start: Callable[[], object] | None = None

    async def wait(self) -> None:
        raise RuntimeError("nothing waits on a queue before it is bound to its event loop")

    def _resume(self, waiter: Any) -> None:
        """Let the task parked on ``waiter`` go on."""

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self.waiting = False
            self._resume(waiter)
        elif self.start is not None:
            start, self.start = self.start, None
            self.waiting = False
            start()

    def hold(self) -> None:
        self.waiting = False

    def release(self) -> None:
        self.waiting = self._waiter is not None or self.start is not None

    def on_demand(self, start: Callable[[], object] | None) -> None:
        """No task waits yet: the first ``wake`` calls ``start`` (``None``: not any more)."""
        self.start = start
        self.release()


class _AsyncioParking(Parking):
    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop

    async def wait(self) -> None:
        self._waiter = future = self._loop.create_future()
        self.waiting = True
        try:
            await future
        finally:
            self._waiter = None
            self.waiting = False

    def _resume(self, waiter: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)


class _TrioParking(Parking):
    __slots__ = ("_lowlevel",)

    def __init__(self, trio: Any) -> None:
        super().__init__()
        self._lowlevel = trio.lowlevel

    async def wait(self) -> None:
        lowlevel = self._lowlevel
        self._waiter = lowlevel.current_task()
        self.waiting = True
        await lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: object) -> object:
        self._waiter = None  # cancelled: nobody to wake any more
        self.waiting = False
        return self._lowlevel.Abort.SUCCEEDED

    def _resume(self, waiter: Any) -> None:
        self._lowlevel.reschedule(waiter)


def parking() -> Parking:
    """A ``Parking`` for the event loop running in this thread (asyncio or trio)."""
    try:
        return _AsyncioParking(asyncio.get_running_loop())
    except RuntimeError:  # not asyncio, so trio (the only other anyio backend)
        return _TrioParking(sys.modules["trio"])


@types.coroutine
def rest_of(step: Any, signal: object) -> Generator[Any, Any, Any]:
    """Await the rest of an awaitable whose first step was run by hand (``step.send(None)``,
    which suspended with ``signal``): what the event loop sends or throws goes on to it,
    until it returns. How a task finishes what another started, or what it started itself
    to see whether it would suspend (``sources.pump``, ``driver._Writer``)."""
    while True:
        try:
            sent = yield signal
        except BaseException as exc:  # cancellation included: the source handles it
            try:
                signal = step.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        if sent is None:  # asyncio resumes with None: plain delegation from here on
            return (yield from step)
        try:
            signal = step.send(sent)
        except StopIteration as done:
            return done.value
