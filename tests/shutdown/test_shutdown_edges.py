"""``StreamMiddleware.shutdown()`` at its edges (SPEC "StreamMiddleware", "Driver
guarantees"):

- a stream still waiting for its first item (a slow first LLM token: an awaitable that has
  not resolved; an async generator whose first ``__anext__`` waits; a proxy whose upstream has
  not answered yet) is ended at once, well before ``grace``: its source is cancelled,
  ``on_close("shutdown")`` runs and the client gets the library's ``503`` (plain text,
  "shutting down"), not the server's own error after the whole grace;
- concurrent ``shutdown()`` calls all return as soon as the streams have ended, not only the
  last one;
- with no stream left, ``shutdown()`` returns at once and ``active`` is 0.

Every ``shutdown`` here gets ``grace=30_000``; the bounds (``anyio.fail_after``) are a few
seconds, so a shutdown that waits out the grace fails the test long before 30 s.
In process (raw ASGI) and under a real hypercorn with an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream, StreamMiddleware
from tests.conftest import answer_lifespan, serve
from tests.helpers import TIMEOUT, Record, Served, proxy_handler, read_raw, track
from tests.peer import Peer

pytestmark = pytest.mark.anyio

GRACE = 30_000  # ms: far beyond every bound below
AT_ONCE = 3  # s: a stream that waits for its first item is ended within this
PROMPT = 2  # s: concurrent shutdown() calls all return within this
WAITING = ["awaitable", "async-generator"]


class FirstItem:
    """Sources that never produce their first item; record that they started waiting and
    that they were abandoned (cancelled or closed)."""

    def __init__(self) -> None:
        self.waiting = Record()
        self.abandoned = Record()

    def source(self, kind: str) -> Any:
        if kind == "awaitable":
            return self._first_token()
        assert kind == "async-generator"
        return self._tokens()

    async def _first_token(self) -> list[str]:
        self.waiting(True)
        try:
            await anyio.sleep_forever()
        finally:
            self.abandoned(True)
        return ["never sent"]  # pragma: no cover

    async def _tokens(self) -> AsyncIterator[str]:
        self.waiting(True)
        try:
            await anyio.sleep_forever()
            yield "never sent"  # pragma: no cover
        finally:
            self.abandoned(True)


def check_503(status: int | None, content_type: str, body: bytes) -> None:
    assert status == 503, f"the client got {status}, not the library's 503"
    assert content_type.startswith("text/plain")
    assert b"shutting down" in body


@pytest.mark.parametrize("kind", WAITING)
async def test_a_stream_waiting_for_its_first_item_ends_at_once_in_process(kind: str) -> None:
    first = FirstItem()
    closes = Record()
    app = Served(lambda scope: track(Stream(first.source(kind)), closes))
    peer = Peer()
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(TIMEOUT):
            tg.start_soon(app, peer.scope, peer.receive, peer.send)
            await first.waiting.wait()
            assert app.active == 1
        with anyio.fail_after(AT_ONCE):
            await app.middleware.shutdown(grace=GRACE)
            assert app.active == 0
            await app.finished.wait()
            assert await closes.wait() == ["shutdown"]
            await first.abandoned.wait()
    check_503(peer.status, peer.headers[b"content-type"].decode(), peer.body)
    assert peer.finished


async def shut_down_while_requested(
    app: Served, url: str, waiting: anyio.Event, closes: Record
) -> tuple[httpx.Response, bytes]:
    """A real client requests ``url``; once the stream is ``waiting`` for its first item,
    ``shutdown()`` must end it at once. Returns the client's response and body."""
    answers: list[tuple[httpx.Response, bytes]] = []
    async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:

        async def request() -> None:
            answers.append(await read_raw(client, url))

        tg.start_soon(request)
        await waiting.wait()
        assert app.active == 1
        with anyio.fail_after(AT_ONCE):
            await app.middleware.shutdown(grace=GRACE)
            assert app.active == 0
            assert await closes.wait() == ["shutdown"]
            await app.finished.wait()
    return answers[0]


@pytest.mark.parametrize("kind", WAITING)
async def test_a_stream_waiting_for_its_first_item_ends_at_once_for_a_real_client(
    kind: str,
) -> None:
    first = FirstItem()
    closes = Record()
    app = Served(lambda scope: track(Stream(first.source(kind)), closes))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url:
            response, body = await shut_down_while_requested(
                app, url + "/first-token", first.waiting, closes
            )
            with anyio.fail_after(AT_ONCE):
                await first.abandoned.wait()
    check_503(response.status_code, response.headers["content-type"], body)


class SilentUpstream:
    """A real upstream (an ASGI app for ``serve``) that takes the request and never sends a
    response start; records the request and the moment its client leaves."""

    def __init__(self) -> None:
        self.requested = Record()
        self.left = Record()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send)
        self.requested(scope["path"])
        while (await receive())["type"] != "http.disconnect":
            pass
        self.left(scope["path"])


async def test_a_proxy_whose_upstream_has_not_answered_ends_at_once_in_process() -> None:
    silent = SilentUpstream()
    closes = Record()
    peer = Peer(path="/completion")
    with anyio.fail_after(TIMEOUT):
        async with serve(silent) as upstream_url, httpx.AsyncClient() as upstream:
            app = Served(proxy_handler(upstream, upstream_url, "awaitable", closes, []))
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, peer.scope, peer.receive, peer.send)
                await silent.requested.wait()
                assert app.active == 1
                with anyio.fail_after(AT_ONCE):
                    await app.middleware.shutdown(grace=GRACE)
                    assert app.active == 0
                    await app.finished.wait()
                    assert await closes.wait() == ["shutdown"]
                    # the upstream request was abandoned: the upstream sees its client leave
                    assert await silent.left.wait() == ["/completion"]
    check_503(peer.status, peer.headers[b"content-type"].decode(), peer.body)
    assert peer.finished


async def test_a_proxy_whose_upstream_has_not_answered_ends_at_once_for_a_real_client() -> None:
    silent = SilentUpstream()
    closes = Record()
    with anyio.fail_after(TIMEOUT):
        async with serve(silent) as upstream_url, httpx.AsyncClient() as upstream:
            app = Served(proxy_handler(upstream, upstream_url, "awaitable", closes, []))
            async with serve(app) as url:
                response, body = await shut_down_while_requested(
                    app, url + "/completion", silent.requested, closes
                )
                with anyio.fail_after(AT_ONCE):
                    assert await silent.left.wait() == ["/completion"]
    check_503(response.status_code, response.headers["content-type"], body)


# -- concurrent shutdown() calls --------------------------------------------------------


def open_stream(opened: Record, closes: Record) -> Any:
    """A callback stream that sends one event and then waits: it ends promptly on shutdown."""

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send("open")
            opened(scope["path"])
            await anyio.sleep_forever()

        return track(Stream(callback), closes)

    return handler


async def shutdown_three_times(middleware: StreamMiddleware) -> list[int]:
    """Three ``shutdown(grace=GRACE)`` started together; the order in which they returned."""
    returned: list[int] = []

    async def shutdown(n: int) -> None:
        await middleware.shutdown(grace=GRACE)
        returned.append(n)

    with anyio.fail_after(PROMPT):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(shutdown, n)
    return returned


async def test_concurrent_shutdowns_all_return_once_the_stream_ended_in_process() -> None:
    opened, closes = Record(), Record()
    app = Served(open_stream(opened, closes))
    peer = Peer()
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(TIMEOUT):
            tg.start_soon(app, peer.scope, peer.receive, peer.send)
            await opened.wait()
            await peer.wait_for(lambda: peer.body == b"data: open\n\n")
        assert sorted(await shutdown_three_times(app.middleware)) == [0, 1, 2]
        assert app.active == 0
        with anyio.fail_after(TIMEOUT):
            await app.finished.wait()
    assert closes.items == ["shutdown"]
    assert peer.status == 200 and peer.body == b"data: open\n\n" and peer.finished


async def test_concurrent_shutdowns_all_return_once_the_stream_ended_for_a_real_client() -> None:
    opened, closes = Record(), Record()
    app = Served(open_stream(opened, closes))
    answers: list[tuple[httpx.Response, bytes]] = []
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with anyio.create_task_group() as tg:

                async def request() -> None:
                    answers.append(await read_raw(client, url + "/open"))

                tg.start_soon(request)
                await opened.wait()
                assert sorted(await shutdown_three_times(app.middleware)) == [0, 1, 2]
                assert app.active == 0
            await app.finished.wait()
    assert closes.items == ["shutdown"]
    response, body = answers[0]
    assert response.status_code == 200
    assert body == b"data: open\n\n"  # and a clean end: read_raw raises on a cut-off body


# -- nothing to wait for ----------------------------------------------------------------


async def test_shutdown_without_streams_returns_at_once_in_process() -> None:
    closes = Record()
    app = Served(lambda scope: track(Stream(["done"]), closes))
    with anyio.fail_after(1):
        await app.middleware.shutdown(grace=GRACE)
    assert app.active == 0
    # a stream that has already ended is nothing to wait for either
    app = Served(lambda scope: track(Stream(["done"]), closes))
    peer = Peer()
    with anyio.fail_after(TIMEOUT):
        await app(peer.scope, peer.receive, peer.send)
        assert await closes.wait() == ["complete"]
    with anyio.fail_after(1):
        await app.middleware.shutdown(grace=GRACE)
        await app.middleware.shutdown(grace=GRACE)  # and again
    assert app.active == 0
    assert peer.body == b"data: done\n\n" and peer.finished


async def test_shutdown_without_streams_returns_at_once_under_a_real_server() -> None:
    closes = Record()
    app = Served(lambda scope: track(Stream(["done"]), closes))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/done")
            assert (response.status_code, body) == (200, b"data: done\n\n")
            assert await closes.wait() == ["complete"]
            await app.finished.wait()
            with anyio.fail_after(1):
                await app.middleware.shutdown(grace=GRACE)
            assert app.active == 0
            late, late_body = await read_raw(client, url + "/late")
    assert late.status_code == 503 and b"shutting down" in late_body
