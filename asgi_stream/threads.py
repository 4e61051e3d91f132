"""Blocking sources: iterate a sync iterable in a thread of its own, off the event loop."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["iterate_in_thread"]

logger = logging.getLogger("asgi_stream")
T = TypeVar("T")


async def iterate_in_thread(iterable: Iterable[T]) -> AsyncIterator[T]:
    """Iterate a blocking iterable (a DB cursor, a file, a sync generator that sleeps) in a
    thread of its own, one item at a time, so it never blocks the event loop:
    ``Stream(iterate_in_thread(rows()))``. Every ``next()`` and the final ``close()`` run in
    that one thread, with the caller's context variables (thread-bound sources such as DB
    connections keep working); stopping
    early never waits for a blocked ``next()``: the source is closed once it returns.

    While ``next()`` blocks, nothing of anyio's is held: no worker thread and no token of
    the default thread limiter (``anyio.to_thread``), however many iterators wait. The
    thread hands each result to the event loop (``anyio.from_thread.run_sync`` with the
    loop's token), where it wakes the waiting consumer."""
    token = anyio.lowlevel.current_token()
    requests: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True: next item; False: stop
    stopped = threading.Event()  # the consumer is gone: hand nothing back any more
    # Touched in the event loop's thread only: the answers handed back, and the event the
    # consumer waits on until the next one arrives.
    answers: deque[tuple[str, Any]] = deque()
    arrived: anyio.Event | None = None

    def deliver(answer: tuple[str, Any]) -> None:  # runs in the event loop
        answers.append(answer)
        if arrived is not None:
            arrived.set()

    def hand_back(answer: tuple[str, Any]) -> bool:
        """Give ``answer`` to the consumer; ``False`` if nobody will take it."""
        if stopped.is_set():
            return False
        try:
            anyio.from_thread.run_sync(deliver, answer, token=token)
        except RuntimeError:  # the event loop has finished (anyio's RunFinishedError)
            return False
        return True

    def work() -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = iter(iterable)
            while requests.get():
                try:
                    answer: tuple[str, Any] = ("item", next(iterator))
                except StopIteration:
                    hand_back(("done", None))
                    break
                if not hand_back(answer):
                    break
        except BaseException as exc:
            hand_back(("error", exc))
        closer = getattr(iterator, "close", None)
        if closer is not None:
            try:
                closer()
            except Exception:
                logger.exception("closing %r failed", iterator)

    context = contextvars.copy_context()  # as anyio.to_thread does: the caller's context
    thread = threading.Thread(target=context.run, args=(work,), daemon=True)
    thread.name = "asgi_stream.iterate_in_thread"
    thread.start()
    try:
        while True:
            requests.put(True)
            while not answers:
                arrived = anyio.Event()
                await arrived.wait()
            kind, value = answers.popleft()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stopped.set()
        requests.put(False)
