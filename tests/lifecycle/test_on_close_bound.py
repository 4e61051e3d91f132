"""A slow async ``on_close`` callback never makes a request uncancellable nor keeps a server
from exiting.

The rule: the async ``on_close`` callbacks of a stream get at most 1 second (the documented
bound), then they are cancelled; callbacks that finish in time are not disturbed, and the
ones registered before a slow one have run. The bound covers the whole ``on_close`` phase
of a stream, not each callback: five callbacks that hang cost the request one bound, not
five (chosen here so that the time a request may take after its end does not grow with the
number of callbacks). ``StreamMiddleware`` forgets the stream (``active`` drops) *before*
the callbacks run.

A callback that "never returns" awaits an event that only the test's own teardown sets: the
old code shielded the callbacks without bound, so a test that awaited it for real would
hang the test run (a shielded wait cannot be interrupted by ``fail_after``); this way each
test fails within its bound and then frees the request.

Checked in-process (StreamMiddleware and a Stream run as an ASGI app, raw ASGI; the test
cancels the request's task itself) and under a real hypercorn (``serve`` exits, which
shuts the server down).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import CloseReason, Stream, StreamMiddleware
from tests.conftest import serve, stream_app
from tests.helpers import TIMEOUT, Record, Served
from tests.peer import Peer

pytestmark = pytest.mark.anyio

# The documented bound for the on_close callbacks (1 s) plus a margin for a loaded machine.
BOUND = 4.0


class Hanging:
    """An async ``on_close`` callback that does not return by itself. It records when it
    starts and how it ends: "cancelled" (the bound), or "released" (only the test's teardown
    releases it, after the test has failed)."""

    def __init__(self) -> None:
        self.started = Record()
        self.outcome = Record()
        self.release = anyio.Event()

    async def __call__(self, reason: CloseReason) -> None:
        self.started(reason)
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.outcome("cancelled")
            raise
        self.outcome("released")


class Quick:
    """An async ``on_close`` callback that takes ``seconds`` and records that it finished."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.outcome = Record()

    async def __call__(self, reason: CloseReason) -> None:
        try:
            await anyio.sleep(self.seconds)
        except anyio.get_cancelled_exc_class():
            self.outcome("cancelled")
            raise
        self.outcome(("finished", reason))


class InProcess:
    """One in-process request to ``app`` (StreamMiddleware or a Stream), in a task of the
    test: ``returned`` is set when the call returns, ``scope`` cancels it."""

    def __init__(self, app: Any, peer: Peer) -> None:
        self.app = app
        self.peer = peer
        self.returned = anyio.Event()
        self.scope = anyio.CancelScope()

    async def run(self) -> None:
        try:
            with self.scope:
                await self.app(self.peer.scope, self.peer.receive, self.peer.send)
        finally:
            self.returned.set()


@asynccontextmanager
async def in_process(app: Any, peer: Peer, *hanging: Hanging) -> AsyncIterator[InProcess]:
    """Run the request; on exit (a failed test included) release the hanging callbacks, so
    that the old code's shielded wait ends and the task group can close."""
    request = InProcess(app, peer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(request.run)
        try:
            yield request
        finally:
            for callback in hanging:
                callback.release.set()
            peer.disconnect()


async def until_returned(returned: anyio.Event, what: str, *hanging: Hanging) -> None:
    """Wait at most ``BOUND`` s for ``returned``; if it does not come, release ``hanging``
    (so that the old code's shielded wait ends and everything closes in order), then fail."""
    with anyio.move_on_after(BOUND):
        await returned.wait()
    if not returned.is_set():
        for callback in hanging:
            callback.release.set()
        with anyio.move_on_after(TIMEOUT):
            await returned.wait()
        pytest.fail(f"{what} did not end within {BOUND} s while an on_close callback hung")


def value_stream(*callbacks: Callable[[CloseReason], object], streams: Record) -> Any:
    """A handler returning a value-based ``Stream(ping=None)`` with ``callbacks`` (in that
    order), recorded in ``streams``."""

    def handler(scope: Any) -> Stream:
        stream = Stream(ping=None)
        for callback in callbacks:
            stream.on_close(callback)
        streams(stream)
        return stream

    return handler


# -- in-process: the request returns within the bound --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("end", ["disconnect", "complete"])
@pytest.mark.parametrize("how", ["StreamMiddleware", "Stream as an ASGI app"])
async def test_a_hanging_callback_is_cancelled_within_the_bound(end: str, how: str) -> None:
    hanging = Hanging()
    streams = Record()
    handler = value_stream(hanging, streams=streams)
    app: Any = StreamMiddleware(stream_app(handler)) if how == "StreamMiddleware" else None
    if app is None:
        app = handler(None)  # the Stream itself is the ASGI app
    peer = Peer()
    async with in_process(app, peer, hanging) as request:
        await peer.wait_for(lambda: peer.status == 200)
        with anyio.fail_after(TIMEOUT):
            (stream,) = await streams.wait(1)
        if end == "disconnect":
            peer.disconnect()
        else:
            stream.close()
            await peer.wait_for(lambda: peer.finished)
        with anyio.fail_after(TIMEOUT):
            assert await hanging.started.wait() == [end]
        await until_returned(request.returned, "the request", hanging)
    assert hanging.outcome.items == ["cancelled"]


@pytest.mark.slow
async def test_the_middleware_forgets_the_stream_before_its_callbacks_run() -> None:
    hanging = Hanging()
    streams = Record()
    middleware = StreamMiddleware(stream_app(value_stream(hanging, streams=streams)))
    peer = Peer()
    async with in_process(middleware, peer, hanging) as request:
        await peer.wait_for(lambda: peer.status == 200)
        assert middleware.active == 1
        peer.disconnect()
        with anyio.fail_after(TIMEOUT):
            await hanging.started.wait()
        assert middleware.active == 0  # while the callback runs
        await until_returned(request.returned, "the request", hanging)
    assert middleware.active == 0


@pytest.mark.slow
@pytest.mark.parametrize("when", ["while the callbacks run", "which starts the callbacks"])
async def test_cancelling_the_request_returns_within_the_bound(when: str) -> None:
    hanging = Hanging()
    streams = Record()
    middleware = StreamMiddleware(stream_app(value_stream(hanging, streams=streams)))
    peer = Peer()
    async with in_process(middleware, peer, hanging) as request:
        await peer.wait_for(lambda: peer.status == 200)
        if when == "while the callbacks run":
            with anyio.fail_after(TIMEOUT):
                (stream,) = await streams.wait(1)
            stream.close()
            with anyio.fail_after(TIMEOUT):
                await hanging.started.wait()
        request.scope.cancel()  # e.g. the server cancels the request's task
        with anyio.fail_after(TIMEOUT):
            await hanging.started.wait()
        await until_returned(request.returned, "the cancelled request", hanging)
    assert hanging.outcome.items == ["cancelled"]


# -- several callbacks -----------------------------------------------------------------------


@pytest.mark.slow
async def test_callbacks_before_a_hanging_one_run_and_quick_ones_are_not_cancelled() -> None:
    ran: list[str] = []
    quick, sleeper, hanging = Quick(), Quick(0.1), Hanging()
    streams = Record()

    def sync_callback(reason: CloseReason) -> None:
        ran.append(f"sync {reason}")

    handler = value_stream(sync_callback, quick, sleeper, hanging, streams=streams)
    middleware = StreamMiddleware(stream_app(handler))
    peer = Peer()
    async with in_process(middleware, peer, hanging) as request:
        await peer.wait_for(lambda: peer.status == 200)
        peer.disconnect()
        with anyio.fail_after(TIMEOUT):
            await hanging.started.wait()
        await until_returned(request.returned, "the request", hanging)
    assert ran == ["sync disconnect"]
    assert quick.outcome.items == [("finished", "disconnect")]
    assert sleeper.outcome.items == [("finished", "disconnect")]  # 0.1 s: not cancelled
    assert hanging.outcome.items == ["cancelled"]


async def test_callbacks_that_finish_in_time_are_not_cancelled() -> None:
    """A neighbouring guarantee (true of the old code too): the bound cancels only what
    overruns it; callbacks of 0.1 s each complete, in their order."""
    sleepers = [Quick(0.1), Quick(0.1), Quick(0.1)]
    streams = Record()
    middleware = StreamMiddleware(stream_app(value_stream(*sleepers, streams=streams)))
    peer = Peer()
    async with in_process(middleware, peer) as request:
        await peer.wait_for(lambda: peer.status == 200)
        (stream,) = await streams.wait(1)
        stream.close()
        await until_returned(request.returned, "the request")
    assert [sleeper.outcome.items for sleeper in sleepers] == [[("finished", "complete")]] * 3


@pytest.mark.slow
async def test_the_bound_covers_all_the_callbacks_of_a_stream_together() -> None:
    """Five hanging callbacks: the request still returns within one bound (bounding each
    callback separately would take five seconds and more)."""
    hanging = [Hanging() for _ in range(5)]
    streams = Record()
    middleware = StreamMiddleware(stream_app(value_stream(*hanging, streams=streams)))
    peer = Peer()
    async with in_process(middleware, peer, *hanging) as request:
        await peer.wait_for(lambda: peer.status == 200)
        peer.disconnect()
        with anyio.fail_after(TIMEOUT):
            await hanging[0].started.wait()
        await until_returned(request.returned, "the request with five hanging callbacks", *hanging)
    assert hanging[0].outcome.items == ["cancelled"]
    assert all(callback.outcome.items != ["released"] for callback in hanging)


# -- under a real server: the server exits ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.slow
async def test_a_hanging_callback_does_not_keep_the_server_from_exiting() -> None:
    hanging = Hanging()
    streams = Record()
    app = Served(value_stream(hanging, streams=streams))
    stop, exited = anyio.Event(), anyio.Event()

    async def serving(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        try:
            # hypercorn's own graceful timeout far beyond the bound: the server must exit
            # because the callback is bounded, not because hypercorn gave up waiting for it.
            async with serve(app, graceful_timeout=30) as url:
                task_status.started(url)
                await stop.wait()
        finally:
            exited.set()

    async with anyio.create_task_group() as tg:
        url = await tg.start(serving)
        try:
            with anyio.fail_after(TIMEOUT):
                async with (
                    httpx.AsyncClient() as client,
                    client.stream("GET", url) as response,
                ):
                    assert response.status_code == 200
                # the client has left
                assert await hanging.started.wait() == ["disconnect"]
            active_while_the_callback_runs = app.active
            stop.set()  # leave the serve block: the server shuts down
            await until_returned(exited, "the server", hanging)
            assert hanging.outcome.items == ["cancelled"]
            assert active_while_the_callback_runs == 0
        finally:
            hanging.release.set()
            stop.set()
