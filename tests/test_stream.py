"""The Stream object without a driver: options, validation, send/close semantics, value."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from asgi_stream import ServerSentEvent, Stream, iterate_in_thread


def test_send_returns_false_once_closed_and_close_is_idempotent() -> None:
    stream = Stream()
    assert stream.send("a") is True and not stream.closed
    stream.close()
    stream.close()
    assert stream.closed
    assert stream.send("b") is False
    assert stream.send(object()) is False  # a closed stream never raises, whatever the data
    assert stream.producer.queue.frames == [b"data: a\n\n"]


def test_none_and_empty_string_send_nothing() -> None:
    stream = Stream()
    assert stream.send(None) and stream.send("")
    assert stream.producer.queue.frames == []


def test_unencodable_data_raises_type_error_naming_the_type() -> None:
    class Widget:
        pass

    with pytest.raises(TypeError, match="Widget"):
        Stream().send(Widget())


def test_on_close_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Stream().on_close("not callable")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_value_yields_the_encoded_frames_of_a_source() -> None:
    async def agen() -> AsyncIterator[Any]:
        yield "a"
        yield ServerSentEvent({"b": 1}, id=2)

    frames = [frame async for frame in Stream(agen(), retry=5).value]
    assert b"".join(frames) == b'retry: 5\n\ndata: a\n\nid: 2\ndata: {"b":1}\n\n'


@pytest.mark.anyio
async def test_value_runs_a_callback_too() -> None:
    async def callback(stream: Stream) -> None:
        stream.send(1)
        await stream.wait(1)
        stream.send(2)
        stream.close()

    frames = [frame async for frame in Stream(callback).value]
    assert b"".join(frames) == b"data: 1\n\ndata: 2\n\n"


@pytest.mark.anyio
async def test_value_has_a_single_consumer() -> None:
    stream = Stream(["a"])
    iterator = stream.value
    with pytest.raises(RuntimeError, match="one consumer"):
        stream.value  # noqa: B018
    assert [frame async for frame in iterator] == [b"data: a\n\n"]


@pytest.mark.anyio
async def test_an_abandoned_value_iterator_still_closes_its_source() -> None:
    import gc

    source_closed, ended = anyio.Event(), anyio.Event()
    reasons: list[str] = []

    async def endless() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
                await anyio.lowlevel.checkpoint()
        finally:
            source_closed.set()

    stream = Stream(endless())
    stream.on_close(lambda reason: (reasons.append(reason), ended.set()))
    iterator = stream.value
    async for frame in iterator:  # a framework that stops reading and forgets to aclose()
        if frame == b"data: 3\n\n":
            break
    del iterator
    gc.collect()  # the event loop's async-generator hook closes it, maybe in another task
    with anyio.fail_after(5):
        await ended.wait()
    assert source_closed.is_set() and reasons == ["disconnect"]


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
