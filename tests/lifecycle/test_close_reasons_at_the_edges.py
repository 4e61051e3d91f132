"""The close reason ``on_close`` hears is the truth at the edges, and nothing waits or leaks
there: a Stream handed over by an app that then fails; ``Stream.value`` failing before its
first item, read to its last frame, or with a producer that raises a BaseException; a write
that fails after the stream was complete; sends from another thread that race the start or
the end of the stream. (Found in review of the layered core; each failed before its fix.)"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgi_stream import Stream, StreamMiddleware, hand_over

pytestmark = pytest.mark.anyio

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}


def reasons_of(stream: Stream) -> list[str]:
    reasons: list[str] = []
    stream.on_close(reasons.append)
    return reasons


async def never() -> dict[str, Any]:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def test_a_stream_handed_over_by_an_app_that_then_fails_is_finished() -> None:
    closed = anyio.Event()
    reasons: list[str] = []

    async def source() -> AsyncIterator[str]:
        try:
            yield "x"
        finally:
            closed.set()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        stream = Stream(source())
        stream.on_close(reasons.append)
        hand_over(stream)
        raise RuntimeError("the framework failed after hand_over")

    middleware = StreamMiddleware(app)

    async def send(message: Any) -> None:
        return None

    with anyio.fail_after(5), pytest.raises(RuntimeError, match="after hand_over"):
        await middleware(dict(SCOPE), never, send)
    assert reasons == ["error"] and middleware.active == 0


async def test_value_failing_before_its_first_item_does_not_wait() -> None:
    async def failing() -> AsyncIterator[str]:
        raise RuntimeError("boom")
        yield "never"

    stream = Stream(failing())
    reasons = reasons_of(stream)
    started = time.monotonic()
    with anyio.fail_after(5), pytest.raises(RuntimeError, match="boom"):
        async for _ in stream.value:
            pass
    assert time.monotonic() - started < 0.5, "the consumer waited for a producer never started"
    assert reasons == ["error"]


async def test_value_read_to_its_last_frame_then_closed_is_complete() -> None:
    stream = Stream(["a", "b"])
    reasons = reasons_of(stream)
    iterator = stream.value
    got = []
    with anyio.fail_after(5):
        async for frame in iterator:
            got.append(frame)
            if frame == b"data: b\n\n":
                break  # the common "read until the last event, then stop"
        await iterator.aclose()  # type: ignore[attr-defined]
    assert got == [b"data: a\n\n", b"data: b\n\n"]
    assert reasons == ["complete"]


async def test_a_value_producer_raising_a_base_exception_ends_the_stream_not_the_run() -> None:
    async def callback(stream: Stream) -> None:
        stream.send("first")
        await anyio.lowlevel.checkpoint()
        raise SystemExit(3)  # not an Exception: on trio, a system task must not raise it

    stream = Stream(callback)
    reasons = reasons_of(stream)
    with anyio.fail_after(5):
        frames = [frame async for frame in stream.value]
    assert frames == [b"data: first\n\n"]
    assert reasons == ["error"]


async def test_a_write_failing_after_the_stream_was_complete_is_an_error() -> None:
    stream = Stream(["a", "b"], ping=None)
    reasons = reasons_of(stream)

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            raise RuntimeError("the server refused the chunk")  # not an OSError

    with anyio.fail_after(5):
        await stream(dict(SCOPE), never, send)
    assert reasons == ["error"]


@pytest.mark.slow
async def test_a_thread_send_landing_after_the_end_is_dropped_and_the_end_stays_complete() -> None:
    class SlowToEncode:
        """Widens the gap between send()'s "still open?" and the hand-over to the loop."""

        def model_dump_json(self) -> str:
            time.sleep(0.3)
            return '{"late":true}'

    stream = Stream(ping=None)
    reasons = reasons_of(stream)
    bodies: list[bytes] = []
    sent: list[bool] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            if not message.get("more_body"):
                await anyio.sleep(0.5)  # the server takes its time with the final body

    async def close_meanwhile() -> None:
        thread = threading.Thread(target=lambda: sent.append(stream.send(SlowToEncode())))
        thread.start()
        await anyio.sleep(0.1)  # the thread is encoding
        stream.close()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(close_meanwhile)
            await stream(dict(SCOPE), never, send)
        await anyio.to_thread.run_sync(lambda: None)
    assert bodies == [b""]  # the late frame was never written, nor left behind
    assert reasons == ["complete"]


async def race_one_start() -> str | None:
    """One stream whose thread sends 50 events and closes while the stream starts; what
    went wrong, if anything."""
    stream = Stream(ping=None)
    errors: list[BaseException] = []
    going = threading.Event()

    def produce() -> None:
        going.set()
        try:
            for _ in range(200):
                stream.send("x")
            stream.close()
        except BaseException as exc:
            errors.append(exc)

    threading.Thread(target=produce, daemon=True).start()
    going.wait()
    body: list[bytes] = []
    ended = anyio.Event()

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            body.append(message["body"])
            if not message.get("more_body"):
                ended.set()

    async def receive() -> dict[str, Any]:
        with anyio.move_on_after(2):
            await ended.wait()
            await anyio.sleep_forever()
        return {"type": "http.disconnect"}

    await stream(dict(SCOPE), receive, send)
    if errors:
        return f"the thread's send raised {errors!r}"
    if b"".join(body) != b"data: x\n\n" * 200:
        return "the stream wedged"
    return None


@pytest.mark.slow
@pytest.mark.slow
async def test_sends_from_a_thread_racing_the_start_of_the_stream() -> None:
    """A thread that sends while the stream is being started (a handler that starts a
    producer thread, then returns the Stream): every event arrives, nothing raises in the
    thread. The race is narrow: many short runs, with a tiny thread switch interval (before
    the fix, trio failed within the first 20 runs)."""
    runs, deadline = 0, time.monotonic() + 8
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        while runs < 300 and time.monotonic() < deadline:
            runs += 1
            problem = await race_one_start()
            assert problem is None, f"run {runs}: {problem}"
    finally:
        sys.setswitchinterval(switch)


async def test_value_closed_before_its_first_frame_still_ends_the_stream() -> None:
    closed = anyio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            yield "never read"
        finally:
            closed.set()

    generator = source()
    await anext(generator)  # started, so that closing it runs its finally
    stream = Stream(generator)
    reasons = reasons_of(stream)
    iterator = stream.value
    with anyio.fail_after(5):
        await iterator.aclose()  # type: ignore[attr-defined]
        await closed.wait()
    assert reasons == ["disconnect"] and stream.closed
