"""SIGTERM with open streams, hypercorn in a subprocess (asyncio and trio workers).

- With the documented wiring, ``asgi_stream.hypercorn.run(StreamMiddleware(app), ...)``: 100
  open streams of every producer kind, over HTTP/1.1 and HTTP/2, each get
  ``on_close("shutdown")`` and their final frame at once; every client sees a clean end
  (HTTP/1.1: the terminating chunk; HTTP/2: END_STREAM); every producer's cleanup runs, thread
  sources and upstream connections included; the process exits 0 well within the grace period.
- Under plain ``hypercorn module:app`` (no shutdown trigger of ours): hypercorn stops
  accepting, waits ``--graceful-timeout`` for the streams (which never end by themselves),
  then cancels them: clients see an *incomplete* body (HTTP/1.1: no terminating chunk; HTTP/2:
  the connection closes without END_STREAM), the streams get ``on_close("disconnect")`` (the
  driver's cleanup still runs). Use ``asgi_stream.hypercorn.run`` (or a ``shutdown_trigger``
  that first awaits ``StreamMiddleware.shutdown()``) for a clean end.
"""

from __future__ import annotations

import sys

import anyio
import pytest

from tests.reliability.clients import server_process
from tests.reliability.scenarios import KINDS, run_shutdown

pytestmark = pytest.mark.anyio

GRACE = 3.0  # seconds: --grace of the server (StreamMiddleware.shutdown)
GRACEFUL_TIMEOUT = 1.0  # seconds: hypercorn's own wait for connections


@pytest.mark.slow
async def test_sigterm_ends_100_streams_cleanly_under_asgi_stream_hypercorn_run(
    anyio_backend: str,
) -> None:
    async with server_process(
        anyio_backend, "--grace", str(GRACE * 1000), "--graceful-timeout", str(GRACEFUL_TIMEOUT)
    ) as server:
        with anyio.fail_after(60):
            result = await run_shutdown(server, h1=60, h2_connections=2, per_connection=20)
        final = server.final()
    print(
        f"\n{anyio_backend}: 100 streams ended {max(result.ended_after):.2f} s after SIGTERM, "
        f"exit after {result.exited_after:.2f} s"
    )
    assert server.process.returncode == 0, server.output()
    # every client saw a clean end, not a cut
    h1_ends = [(c.status, c.complete, c.closed_early) for c in result.h1]
    assert h1_ends == [(200, True, False)] * 60
    assert [(s.status, s.complete) for s in result.h2] == [(200, True)] * 40
    # ended by our shutdown, not by a timeout: well within the grace period
    assert max(result.ended_after) < GRACE
    assert result.exited_after < GRACE + GRACEFUL_TIMEOUT + 2
    # every stream: on_close("shutdown"); every producer cleaned up; nothing left
    assert final["closes"] == {f"{kind}:shutdown": 20 for kind in KINDS}, final
    assert final["started"] == final["cleaned"]
    assert final["upstream_open"] == 0 and final["upstream_total"] == 20
    assert (final["active"], final["live_streams"], final["stream_tasks"]) == (0, 0, 0)


@pytest.mark.slow
async def test_plain_hypercorn_cuts_streams_after_its_graceful_timeout(
    anyio_backend: str,
) -> None:
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--worker-class",
        "{worker}",
        "--bind",
        "{bind}",
        "--graceful-timeout",
        f"{GRACEFUL_TIMEOUT:g}",  # an int for hypercorn's command line
        "tests.reliability.server:app",
    ]
    async with server_process(
        anyio_backend, command=command, env={"RELIABILITY_ECHO": "1"}
    ) as server:
        with anyio.fail_after(60):
            result = await run_shutdown(server, h1=10, h2_connections=1, per_connection=10)
        final = server.final()
    print(
        f"\n{anyio_backend}, plain hypercorn: streams cut {min(result.ended_after):.2f}-"
        f"{max(result.ended_after):.2f} s after SIGTERM, exit after {result.exited_after:.2f} s"
    )
    assert server.process.returncode == 0, server.output()
    # hypercorn waited for its graceful timeout, then cut the streams off mid-body
    assert min(result.ended_after) >= GRACEFUL_TIMEOUT * 0.9
    assert [(c.complete, c.closed_early) for c in result.h1] == [(False, True)] * 10
    assert [s.complete for s in result.h2] == [False] * 10
    # the driver still cleaned up: on_close("disconnect") for each, producers closed
    assert sum(final["closes"].values()) == 20
    assert {key.split(":")[1] for key in final["closes"]} == {"disconnect"}
    assert final["started"] == final["cleaned"]
    assert final["upstream_open"] == 0


# -- asgi_stream.hypercorn.serve inside a larger program -------------------------------------


async def _taskgroup_leaves_a_cancel_request() -> bool:
    """Whether the asyncio TaskGroup hypercorn uses leaves a cancel request on its parent
    task when a child fails while the group is exiting (CPython before 3.13): hypercorn's
    ``serve`` stops that way, so the task that awaited it is left "cancelling"."""
    import asyncio

    from hypercorn.asyncio.run import TaskGroup

    task = asyncio.current_task()
    if task is None or not hasattr(task, "cancelling"):
        return False
    before = task.cancelling()

    async def fail() -> None:
        await asyncio.sleep(0)
        raise LookupError

    try:
        async with TaskGroup() as group:
            group.create_task(fail())
    except Exception:  # the ExceptionGroup of the probe
        pass
    left = task.cancelling() > before
    while task.cancelling() > before:
        task.uncancel()
    return left


async def test_serve_returns_normally_inside_a_task_group(
    anyio_backend: str, request: pytest.FixtureRequest
) -> None:
    """An application that runs ``serve()`` next to background tasks, and cancels those once
    the server has stopped, must carry on normally (here: reach the line after its task
    group). On asyncio with CPython < 3.13 it is cancelled instead, by the cancel request
    hypercorn's serve() leaves on the calling task."""
    from hypercorn.config import Config

    from asgi_stream import Stream, StreamMiddleware
    from asgi_stream.hypercorn import serve
    from tests.conftest import _free_port, _wait_listening, stream_app

    app = StreamMiddleware(stream_app(lambda scope: Stream(["x"])))
    config = Config()
    port = _free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    stop = anyio.Event()
    outcome: list[str] = []

    async def application() -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep_forever)  # a background job of the application
                await serve(app, config, shutdown_trigger=stop.wait)
                tg.cancel_scope.cancel()  # the server is done: stop the background job
            outcome.append("returned")
        except BaseException as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")
            raise

    with anyio.fail_after(20):
        async with anyio.create_task_group() as outer:
            outer.start_soon(application)
            await _wait_listening(port)
            stop.set()
    assert outcome == ["returned"]
