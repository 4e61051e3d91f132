"""Blocking sources: iterate a sync iterable in a thread of its own, off the event loop."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ["iterate_in_thread"]

logger = logging.getLogger("asgi_stream")
T = TypeVar("T")


async def iterate_in_thread(iterable: Iterable[T]) -> AsyncIterator[T]:
    """Iterate a blocking iterable (a DB cursor, a file, a sync generator that sleeps) in a
    thread of its own, one item at a time, so it never blocks the event loop:
    ``Stream(iterate_in_thread(rows()))``. Every ``next()`` and the final ``close()`` run in
    that one thread, with the caller's context variables (thread-bound sources such as DB
    connections keep working); stopping
    early never waits for a blocked ``next()``: the source is closed once it returns."""
    requests: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True: next item; False: stop
    results: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def work() -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = iter(iterable)
            while requests.get():
                results.put(("item", next(iterator)))
        except StopIteration:
            results.put(("done", None))
        except BaseException as exc:
            results.put(("error", exc))
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
            kind, value = await anyio.to_thread.run_sync(results.get, abandon_on_cancel=True)
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        requests.put(False)
