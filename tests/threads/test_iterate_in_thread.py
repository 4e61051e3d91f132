"""``iterate_in_thread(iterator)``, in process: the loop stays free while the source blocks its
thread, one thread serves every ``next()`` of one iterator, closing the async iterator closes
the source in its thread, and stopping does not wait for a ``next()`` that is blocked. (Under
a real server: tests/reliability/test_producer_faults.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from asgi_stream import iterate_in_thread


@pytest.mark.anyio
async def test_iterate_in_thread_keeps_the_loop_free_while_the_source_blocks() -> None:
    import threading

    release, closed = threading.Event(), threading.Event()
    ticks = 0

    def blocking() -> Iterator[int]:
        try:
            yield 1
            release.wait(5)  # e.g. a DB cursor waiting for rows
            yield 2
            release.wait(5)
            yield 3
        finally:
            closed.set()

    async def ticker() -> None:
        nonlocal ticks
        while ticks < 3:
            ticks += 1
            await anyio.sleep(0.001)
        release.set()  # the loop kept running while the source blocked its thread

    iterator = iterate_in_thread(blocking())
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with anyio.fail_after(5):
            assert [item async for item in iterator] == [1, 2, 3]
    assert ticks == 3 and closed.is_set()


@pytest.mark.anyio
async def test_closing_iterate_in_thread_closes_the_source() -> None:
    import threading

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    iterator = iterate_in_thread(endless())
    assert await anext(iterator) == 1
    await iterator.aclose()  # type: ignore[attr-defined]
    assert await anyio.to_thread.run_sync(closed.wait, 5)  # closed in its own thread


@pytest.mark.anyio
async def test_iterate_in_thread_uses_one_thread_for_every_call() -> None:
    import threading

    threads: set[int] = set()

    def thread_bound() -> Iterator[int]:  # e.g. a sqlite3 cursor: usable in one thread only
        try:
            for n in range(20):
                threads.add(threading.get_ident())
                yield n
        finally:
            threads.add(threading.get_ident())

    results: list[list[int]] = []

    async def consume() -> None:
        results.append([n async for n in iterate_in_thread(thread_bound())])

    async with anyio.create_task_group() as tg:
        for _ in range(4):  # concurrent consumers spread over anyio's worker pool
            tg.start_soon(consume)
    assert results == [list(range(20))] * 4
    assert len(threads) == 4  # one thread per iterator, never a pool thread hop


@pytest.mark.anyio
async def test_stopping_does_not_wait_for_a_blocked_next() -> None:
    import threading

    release, closed = threading.Event(), threading.Event()

    def stuck() -> Iterator[int]:
        try:
            yield 1
            release.wait(10)  # blocked in next(): cannot be interrupted
            yield 2
        finally:
            closed.set()

    iterator = iterate_in_thread(stuck())
    assert await anext(iterator) == 1
    with anyio.move_on_after(0.05):
        await anext(iterator)
    with anyio.fail_after(1):
        await iterator.aclose()  # type: ignore[attr-defined]  # returns at once
    assert not closed.is_set()
    release.set()  # next() returns: the source is closed in its thread right after
    assert await anyio.to_thread.run_sync(closed.wait, 5)
