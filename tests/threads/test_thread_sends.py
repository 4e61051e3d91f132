"""``send()`` and ``close()`` of a value-based Stream called from another OS thread (a plain
``threading.Thread``, a ``ThreadPoolExecutor`` job or its done-callback, an
``anyio.to_thread.run_sync`` worker) work on asyncio and trio:

- each event reaches the client promptly (within ``PROMPT`` seconds) and in order, although
  ``ping=None`` and nothing else wakes the event loop meanwhile;
- a burst of sends from the thread (no pacing, the writer busy meanwhile) arrives whole,
  once, in order;
- nothing raises in the thread;
- ``close()`` from the thread ends the stream: the final empty body, ``on_close("complete")``.

Checked in-process (raw ASGI through ``tests.peer.Peer``) and under a real hypercorn with an
httpx-sse client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import Stream, StreamMiddleware
from tests.conftest import serve, stream_app
from tests.helpers import TIMEOUT, Record, record, track
from tests.peer import Peer

pytestmark = pytest.mark.anyio

# How soon an event sent from a thread must reach the client (measured from the send in
# the thread to its arrival). Without a wake-up of the event loop it would wait until
# something else wakes the loop (ping=None, an idle client: nothing but the test's own
# timeout); with one it takes well under a millisecond on loopback. Generous for a loaded
# 2-core machine.
PROMPT = 0.5
# How long a test waits for an event. Longer than PROMPT on purpose: the timer of the wait
# itself wakes the loop, so an event that only arrives then is measured as late.
WAIT = 1.5
ITEMS = ["one", "two", "three", "four"]
RUNNERS = ["thread", "executor", "executor-callback", "to_thread"]


class ThreadProducer:
    """What runs in the other thread: it sends ``items[i]`` once the test opens gate ``i``,
    then ``close()`` once the last gate opens (``paced=False``: everything once gate 0
    opens). Records errors and the threads it ran in.

    After opening a gate, the test's event loop goes idle (it waits for the client to
    receive the event); the thread acts ``LATER`` seconds after its gate opens, so that the
    event comes while the loop sleeps, as a real thread's events do: without that delay, a
    send racing with the loop's own last steps would be seen by chance. After ``close()``
    the thread stays alive until the test ends (``release``): a worker that returns would
    wake the loop (``to_thread``) and hide a send that did not."""

    LATER = 0.05

    def __init__(self, stream: Stream, items: list[str], *, paced: bool = True) -> None:
        self.stream = stream
        self.items = items
        self.gates = [threading.Event() for _ in range(len(items) + 1 if paced else 1)]
        self.hold = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: set[int] = set()
        self.results: list[bool] = []
        self.sent_at: list[float] = []  # time.monotonic() of each send, then of close()
        self.finished = threading.Event()

    def _gate(self, index: int) -> None:
        if not self.gates[index].wait(TIMEOUT):
            raise TimeoutError(f"gate {index} was never opened")
        time.sleep(self.LATER)  # see the class docstring: a send while the loop is idle

    def run(self) -> None:
        self.threads.add(threading.get_ident())
        try:
            paced = len(self.gates) > 1
            if not paced:
                self._gate(0)
            for index, item in enumerate(self.items):
                if paced:
                    self._gate(index)
                self.sent_at.append(time.monotonic())
                self.results.append(self.stream.send(item))
            if paced:
                self._gate(-1)
            self.sent_at.append(time.monotonic())
            self.stream.close()
            self.hold.wait(TIMEOUT)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.finished.set()

    def release(self) -> None:
        for gate in self.gates:
            gate.set()
        self.hold.set()


@asynccontextmanager
async def running(runner: str, producer: ThreadProducer) -> AsyncIterator[None]:
    """Run ``producer.run`` in another OS thread, the ``runner`` way; on exit open every
    gate and wait (bounded) for the thread to finish."""
    executor = ThreadPoolExecutor(max_workers=1)
    async with anyio.create_task_group() as tg:
        if runner == "thread":
            threading.Thread(target=producer.run, daemon=True).start()
        elif runner == "executor":
            executor.submit(producer.run)
        elif runner == "executor-callback":
            # The done-callback runs in the worker thread (the job is still running when
            # the callback is added): e.g. "send the query's result when it is ready".
            started = threading.Event()
            job = executor.submit(started.wait, TIMEOUT)

            def on_done(_: Future[bool]) -> None:
                producer.run()

            job.add_done_callback(on_done)
            started.set()
        else:
            tg.start_soon(partial(anyio.to_thread.run_sync, producer.run))
        try:
            yield
        finally:
            producer.release()
            with anyio.move_on_after(TIMEOUT, shield=True):
                await anyio.to_thread.run_sync(producer.finished.wait, TIMEOUT)
            executor.shutdown(wait=False)
    assert threading.get_ident() not in producer.threads  # it really ran in another thread


def check_latency(producer: ThreadProducer, arrival: float) -> None:
    latency = arrival - producer.sent_at[-1]
    assert latency < PROMPT, (
        f"arrived {latency:.3f} s after the thread's send: the event loop was not woken "
        f"(errors in the thread: {producer.errors!r})"
    )


# -- in-process ----------------------------------------------------------------------------


class TimedPeer(Peer):
    """The in-process client, noting when each ASGI message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []  # time.monotonic() of each message

    async def send(self, message: dict[str, Any]) -> None:
        self.arrivals.append(time.monotonic())
        await super().send(message)


async def delivered(peer: TimedPeer, count: int, producer: ThreadProducer) -> dict[str, Any]:
    """Wait until the peer got ``count`` messages; check that the last one arrived within
    ``PROMPT`` s of the thread's last send (or close); return it."""
    try:
        await peer.wait_for(lambda: len(peer.messages) >= count, within=WAIT)
    except TimeoutError:
        pytest.fail(
            f"not delivered within {WAIT} s (have {len(peer.messages)} of {count} messages); "
            f"errors in the thread: {producer.errors!r}"
        )
    check_latency(producer, peer.arrivals[count - 1])
    return peer.messages[count - 1]


def value_based_app() -> tuple[StreamMiddleware, Record, Record]:
    """A middleware whose handler returns a fresh ``Stream(ping=None)`` (recorded)."""
    streams, closes = Record(), Record()

    def handler(scope: Any) -> Stream:
        stream = track(Stream(ping=None), closes)
        streams(stream)
        return stream

    return StreamMiddleware(stream_app(handler), ping=None), streams, closes


@pytest.mark.parametrize("runner", RUNNERS)
async def test_sends_from_a_thread_arrive_promptly_in_process(runner: str) -> None:
    middleware, streams, closes = value_based_app()
    peer = TimedPeer()
    returned = anyio.Event()

    async def request() -> None:
        await middleware(peer.scope, peer.receive, peer.send)
        returned.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await peer.wait_for(lambda: peer.status is not None)
        assert peer.status == 200
        with anyio.fail_after(TIMEOUT):
            (stream,) = await streams.wait(1)
        producer = ThreadProducer(stream, ITEMS)
        try:
            async with running(runner, producer):
                for index, item in enumerate(ITEMS):
                    producer.gates[index].set()
                    message = await delivered(peer, index + 2, producer)
                    assert message["body"] == f"data: {item}\n\n".encode()
                    assert message["more_body"] is True
                producer.gates[-1].set()  # close() from the thread
                message = await delivered(peer, len(ITEMS) + 2, producer)
                assert message == {"type": "http.response.body", "body": b"", "more_body": False}
                with anyio.fail_after(WAIT):
                    await returned.wait()
                    assert await closes.wait() == ["complete"]
        finally:
            peer.disconnect()
    assert producer.errors == []
    assert producer.results == [True] * len(ITEMS)
    assert middleware.active == 0


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_burst_of_sends_from_a_thread_arrives_whole_and_in_order(runner: str) -> None:
    """No pacing: the thread sends 500 events and closes while the writer is busy taking
    frames out of the queue: every event arrives once, in order, then the end."""
    items = [f"event {n}" for n in range(500)]
    middleware, streams, closes = value_based_app()
    peer = Peer()
    returned = anyio.Event()

    async def request() -> None:
        await middleware(peer.scope, peer.receive, peer.send)
        returned.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await peer.wait_for(lambda: peer.status is not None)
        with anyio.fail_after(TIMEOUT):
            (stream,) = await streams.wait(1)
        producer = ThreadProducer(stream, items, paced=False)
        try:
            async with running(runner, producer):
                producer.gates[0].set()
                try:
                    with anyio.fail_after(TIMEOUT):
                        await returned.wait()
                except TimeoutError:
                    pytest.fail(f"the stream never ended; errors in the thread: {producer.errors}")
        finally:
            peer.disconnect()
    assert peer.body == b"".join(f"data: {item}\n\n".encode() for item in items)
    assert peer.finished and peer.bodies[-1]["more_body"] is False
    assert closes.items == ["complete"]
    assert producer.errors == []


# -- under a real server -------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
async def test_sends_from_a_thread_arrive_promptly_under_a_real_server(runner: str) -> None:
    middleware, streams, closes = value_based_app()
    with anyio.fail_after(TIMEOUT * 2):
        async with (
            serve(middleware) as url,
            httpx.AsyncClient(timeout=TIMEOUT) as client,
            aconnect_sse(client, "GET", url) as source,
        ):
            assert source.response.status_code == 200
            events = source.aiter_sse()
            (stream,) = await streams.wait(1)
            producer = ThreadProducer(stream, ITEMS)
            async with running(runner, producer):
                for index, item in enumerate(ITEMS):
                    producer.gates[index].set()
                    try:
                        with anyio.fail_after(WAIT):
                            event = await anext(events)
                    except TimeoutError:
                        pytest.fail(
                            f"event {index} not received within {WAIT} s; "
                            f"errors in the thread: {producer.errors!r}"
                        )
                    check_latency(producer, time.monotonic())
                    assert event.data == item
                producer.gates[-1].set()  # close() from the thread: the stream ends
                try:
                    with anyio.fail_after(WAIT):
                        rest = [event async for event in events]
                        assert await closes.wait() == ["complete"]
                except TimeoutError:
                    pytest.fail(
                        f"close() from the thread did not end the stream within {WAIT} s; "
                        f"errors in the thread: {producer.errors!r}"
                    )
                check_latency(producer, time.monotonic())
                assert rest == []
    assert producer.errors == []
    assert producer.results == [True] * len(ITEMS)


async def test_a_send_from_a_thread_starts_an_automatic_streams_writer(
    anyio_backend: str,
) -> None:
    """An automatic stream has no writer task until one is needed (asyncio): a send from
    another thread, run on the loop as a callback (no task), starts it; the event arrives
    after the source's own, then close() from the thread ends the stream."""
    started = anyio.Event()

    async def one_then_quiet() -> AsyncIterator[str]:
        yield "first"
        started.set()
        await anyio.sleep_forever()

    stream, peer = Stream(one_then_quiet(), ping=None), Peer()
    reasons = record(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, peer.scope, peer.receive, peer.send)
        with anyio.fail_after(TIMEOUT):
            await started.wait()
            await peer.wait_for(lambda: peer.body == b"data: first\n\n")

            def from_thread() -> None:
                stream.send("from a thread")
                stream.close()

            thread = threading.Thread(target=from_thread)
            thread.start()
            await peer.wait_for(lambda: peer.finished)
            thread.join()
    assert peer.body == b"data: first\n\ndata: from a thread\n\n"
    assert reasons == ["complete"]
