"""``iterate_in_thread`` never holds a token of anyio's default thread limiter while its
source blocks: with more streams blocked in their source's ``next()`` (a slow query) than the
limiter has tokens (40), ``anyio.to_thread.run_sync`` and a Starlette sync endpoint still
answer at once. Released, every stream completes with its items in order; a client that
leaves never waits for a blocked ``next()``.

And its documented properties stay true: one dedicated thread per iterator (never the event
loop's, never shared), every ``next()`` and the final ``close()`` in that thread with the
caller's context variables, and the source closed (in its thread) once a blocked ``next()``
returns after the consumer stopped.

Checked in-process (StreamMiddleware, raw ASGI) and under a real hypercorn with Starlette.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextvars import ContextVar
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_stream import Stream, StreamMiddleware, iterate_in_thread
from tests.conftest import serve, stream_app
from tests.helpers import TIMEOUT, Record, track
from tests.peer import Peer
from tests.reliability.test_producer_faults import ThreadRecord

pytestmark = pytest.mark.anyio

N = 45  # streams: more than the 40 tokens of anyio's default thread limiter
ITEMS = 3
# How long a call that needs a worker thread may take while the sources block: it takes a
# millisecond when a token is free; it waits for as long as the sources block when not.
AT_ONCE = 1.0
REQUEST: ContextVar[str | None] = ContextVar("REQUEST", default=None)


class GatedRows:
    """Sync sources whose ``next()`` blocks on a ``threading.Event`` (a slow query).

    ``block_at``: the item whose ``next()`` blocks (0: the first, before the response starts;
    1: the second, mid-stream). Each source notes, from its own thread, when it is blocked and
    when it is closed (``ThreadRecord``: the test awaits them), and every call: (index, what,
    thread id, the ``REQUEST`` context variable)."""

    def __init__(self, *, block_at: int = 0) -> None:
        self.block_at = block_at
        self.release = threading.Event()
        self.blocked = ThreadRecord()
        self.closed = ThreadRecord()
        self.calls: list[tuple[int, str, int, str | None]] = []

    def rows(self, index: int) -> Iterator[str]:
        try:
            for k in range(ITEMS):
                self.calls.append((index, "next", threading.get_ident(), REQUEST.get()))
                if k == self.block_at:
                    self.blocked(index)
                    if not self.release.wait(TIMEOUT * 4):
                        raise TimeoutError("never released")
                yield f"{index}-{k}"
        finally:
            self.calls.append((index, "close", threading.get_ident(), REQUEST.get()))
            self.closed(index)

    def check_threads(self, indices: range) -> None:
        """One thread per iterator, every call of it there, with the caller's context."""
        loop_thread = threading.get_ident()
        threads: dict[int, set[int]] = {index: set() for index in indices}
        for index, _what, thread, request in self.calls:
            threads[index].add(thread)
            assert request == f"request {index}", (index, request)
        assert all(len(seen) == 1 for seen in threads.values()), threads
        used = [next(iter(seen)) for seen in threads.values()]
        assert len(set(used)) == len(used)  # no thread shared by two iterators
        assert loop_thread not in used
        for index in indices:
            kinds = [what for i, what, _, _ in self.calls if i == index]
            assert kinds[-1] == "close" and kinds.count("close") == 1, (index, kinds)


def expected_body(index: int) -> bytes:
    return b"".join(f"data: {index}-{k}\n\n".encode() for k in range(ITEMS))


def rows_handler(rows: GatedRows, closes: Record) -> Any:
    """A handler for ``/<index>``: the caller sets a context variable, then streams."""

    def handler(scope: Any) -> Stream:
        index = int(scope["path"].rsplit("/", 1)[1])
        REQUEST.set(f"request {index}")
        return track(Stream(iterate_in_thread(rows.rows(index))), closes)

    return handler


async def until_all_blocked(rows: GatedRows) -> None:
    """Wait until the ``N`` sources are blocked in their ``next()``."""
    try:
        with anyio.fail_after(TIMEOUT):
            await rows.blocked.wait(N)
    except TimeoutError:
        limiter = anyio.to_thread.current_default_thread_limiter()
        pytest.fail(
            f"only {len(rows.blocked)} of {N} sources ever reached their blocking next(): "
            f"the others wait for one of the {limiter.total_tokens} tokens of the default "
            f"thread limiter ({limiter.borrowed_tokens} held by blocked iterators)"
        )


async def check_a_worker_thread_is_free() -> None:
    """``anyio.to_thread.run_sync`` (default limiter) answers at once."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    try:
        with anyio.fail_after(AT_ONCE):
            assert await anyio.to_thread.run_sync(lambda: 42) == 42
    except TimeoutError:
        pytest.fail(
            f"anyio.to_thread.run_sync waited more than {AT_ONCE} s: "
            f"{limiter.borrowed_tokens} of {limiter.total_tokens} tokens of the default "
            f"thread limiter are held while the sources block"
        )


# -- in-process ----------------------------------------------------------------------------


async def test_blocked_sources_hold_no_thread_limiter_token_in_process() -> None:
    rows = GatedRows()
    closes = Record()
    middleware = StreamMiddleware(stream_app(rows_handler(rows, closes)))
    peers = [Peer(path=f"/{index}") for index in range(N)]
    try:
        async with anyio.create_task_group() as tg:
            for peer in peers:
                tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
            await until_all_blocked(rows)  # every source is blocked in its first next()
            await check_a_worker_thread_is_free()
            rows.release.set()
            for peer in peers:
                await peer.wait_for(lambda peer=peer: peer.finished)  # type: ignore[misc]
    finally:
        rows.release.set()
    for index, peer in enumerate(peers):
        assert peer.status == 200
        assert peer.body == expected_body(index)
    assert closes.items == ["complete"] * N
    with anyio.fail_after(TIMEOUT):
        await rows.closed.wait(N)
    rows.check_threads(range(N))
    assert middleware.active == 0


async def test_leaving_never_waits_for_a_blocked_next_in_process() -> None:
    rows = GatedRows(block_at=1)  # the first item is sent, the second next() blocks
    closes = Record()
    middleware = StreamMiddleware(stream_app(rows_handler(rows, closes)))
    peers = [Peer(path=f"/{index}") for index in range(N)]
    returned = Record()

    async def request(peer: Peer) -> None:
        await middleware(peer.scope, peer.receive, peer.send)
        returned(peer.scope["path"])

    try:
        async with anyio.create_task_group() as tg:
            for peer in peers:
                tg.start_soon(request, peer)
            await until_all_blocked(rows)
            with anyio.fail_after(TIMEOUT):
                for index, peer in enumerate(peers):
                    await peer.wait_for(lambda peer=peer: bool(peer.bodies))  # type: ignore[misc]
                    assert peer.body == f"data: {index}-0\n\n".encode()
            await check_a_worker_thread_is_free()
            for peer in peers:
                peer.disconnect()
            # Every request ends while every next() is still blocked.
            with anyio.fail_after(AT_ONCE):
                await returned.wait(N)
                assert await closes.wait(N) == ["disconnect"] * N
            assert middleware.active == 0
            assert rows.closed.items == []  # not closed under a running next()
            rows.release.set()
            # Once next() returns, each source is closed, in its own thread.
            with anyio.fail_after(TIMEOUT):
                await rows.closed.wait(N)
    finally:
        rows.release.set()
    assert all(not peer.finished and peer.sent_after_disconnect == 0 for peer in peers)
    rows.check_threads(range(N))


async def test_iterate_in_thread_used_directly_keeps_its_properties() -> None:
    """Without a Stream: items in order, one thread, the caller's context, closed at the end;
    and a consumer that stops while next() blocks returns at once."""
    rows = GatedRows(block_at=1)
    results: dict[int, list[str]] = {}
    stopped = Record()

    async def consume(index: int, *, stop_early: bool) -> None:
        REQUEST.set(f"request {index}")
        iterator = iterate_in_thread(rows.rows(index))
        got = results.setdefault(index, [])
        if stop_early:
            got.append(await anext(iterator))
            with anyio.move_on_after(0.05):  # the second next() blocks
                got.append(await anext(iterator))
            await iterator.aclose()  # type: ignore[attr-defined]
            stopped(index)
        else:
            got.extend([item async for item in iterator])

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(consume, 0, stop_early=True))
        with anyio.fail_after(TIMEOUT):
            await stopped.wait(1)  # returned although its next() is still blocked
        assert rows.closed.items == []
        for index in range(1, N):
            tg.start_soon(partial(consume, index, stop_early=False))
        await until_all_blocked(rows)
        await check_a_worker_thread_is_free()
        rows.release.set()
    with anyio.fail_after(TIMEOUT):
        await rows.closed.wait(N)
    assert results[0] == ["0-0"]
    assert all(results[index] == [f"{index}-{k}" for k in range(ITEMS)] for index in range(1, N))
    rows.check_threads(range(N))


# -- under a real server -------------------------------------------------------------------


async def test_blocked_sources_leave_sync_endpoints_and_to_thread_free_under_a_real_server() -> (
    None
):
    rows = GatedRows()
    closes = Record()
    handler = rows_handler(rows, closes)

    async def stream_rows(request: Request) -> Stream:
        return handler(request.scope)  # type: ignore[no-any-return]

    def sync_endpoint(request: Request) -> PlainTextResponse:  # Starlette: a worker thread
        return PlainTextResponse("42")

    app = StreamMiddleware(
        Starlette(routes=[Route("/rows/{index:int}", stream_rows), Route("/sync", sync_endpoint)])
    )
    bodies: dict[int, bytes] = {}
    limits = httpx.Limits(max_connections=N + 5)
    try:
        with anyio.fail_after(TIMEOUT * 3):
            async with (
                serve(app) as url,
                httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT * 2) as client,
                anyio.create_task_group() as tg,
            ):

                async def read(index: int) -> None:
                    response = await client.get(f"/rows/{index}")
                    assert response.status_code == 200
                    bodies[index] = response.content

                for index in range(N):
                    tg.start_soon(read, index)
                await until_all_blocked(rows)
                try:
                    with anyio.fail_after(AT_ONCE):
                        response = await client.get("/sync")
                except TimeoutError:
                    pytest.fail(f"a Starlette sync endpoint did not answer within {AT_ONCE} s")
                assert (response.status_code, response.text) == (200, "42")
                await check_a_worker_thread_is_free()
                rows.release.set()
    finally:
        rows.release.set()
    assert bodies == {index: expected_body(index) for index in range(N)}
    assert closes.items == ["complete"] * N
    with anyio.fail_after(TIMEOUT):
        await rows.closed.wait(N)
    rows.check_threads(range(N))
    assert app.active == 0


async def test_leaving_never_waits_for_a_blocked_next_under_a_real_server() -> None:
    rows = GatedRows(block_at=1)
    closes = Record()
    app = StreamMiddleware(stream_app(rows_handler(rows, closes)))
    limits = httpx.Limits(max_connections=N + 5)
    try:
        with anyio.fail_after(TIMEOUT * 3):
            async with (
                serve(app) as url,
                httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT * 2) as client,
            ):
                first_lines = Record()
                leave = anyio.Event()

                async def read_first_and_leave(index: int) -> None:
                    async with client.stream("GET", f"/{index}") as response:
                        lines = response.aiter_lines()
                        first_lines((index, await anext(lines)))
                        await leave.wait()

                async with anyio.create_task_group() as tg:
                    for index in range(N):
                        tg.start_soon(read_first_and_leave, index)
                    await until_all_blocked(rows)
                    await first_lines.wait(N)
                    await check_a_worker_thread_is_free()
                    leave.set()  # every client leaves while its source blocks in next()
                with anyio.fail_after(AT_ONCE):
                    assert await closes.wait(N) == ["disconnect"] * N
                assert app.active == 0
                assert rows.closed.items == []
                rows.release.set()
                await rows.closed.wait(N)
    finally:
        rows.release.set()
    assert sorted(first_lines.items) == sorted((index, f"data: {index}-0") for index in range(N))
    rows.check_threads(range(N))
