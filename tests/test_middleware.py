"""StreamMiddleware in process: interception, pass-through, registry and shutdown."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgi_stream import CloseReason, Stream, StreamMiddleware
from tests.peer import Peer

pytestmark = pytest.mark.anyio


def returning(stream: Stream | None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> Stream | None:
        return stream

    return app


async def test_a_returned_stream_is_driven() -> None:
    peer = Peer()
    await StreamMiddleware(returning(Stream(["a"])))(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: a\n\n" and peer.finished


async def test_an_app_that_responds_itself_is_left_alone() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return Stream(["never sent"])

    peer = Peer()
    await StreamMiddleware(app)(peer.scope, peer.receive, peer.send)
    assert peer.status == 204 and peer.body == b""


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_websocket_and_lifespan_pass_through_untouched(kind: str) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        seen.append((scope, receive, send))
        return Stream(["not for " + kind])

    async def receive() -> Any:
        raise AssertionError("not called")

    async def send(message: Any) -> None:
        raise AssertionError("not called")

    scope = {"type": kind}
    await StreamMiddleware(app)(scope, receive, send)
    assert seen == [(scope, receive, send)]


async def test_middleware_defaults_reach_its_streams() -> None:
    stream = Stream()
    stream.close()
    peer = Peer()
    await StreamMiddleware(returning(stream), ping=None, max_buffer=2048)(
        peer.scope, peer.receive, peer.send
    )
    assert stream._limit == 2048 and stream._ping_seconds is None


async def until(condition: Any) -> None:
    """Let other tasks run until ``condition()`` holds (bounded, no sleeping)."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def test_active_counts_live_streams() -> None:
    streams = {"/a": Stream(), "/b": Stream()}

    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        return streams[scope["path"]]

    middleware = StreamMiddleware(app)
    peers = {path: Peer(path=path) for path in streams}
    assert middleware.active == 0
    async with anyio.create_task_group() as tg:
        for peer in peers.values():
            tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
        await until(lambda: middleware.active == 2)
        streams["/a"].close()
        await until(lambda: middleware.active == 1)
        assert peers["/a"].finished and not peers["/b"].finished
        peers["/b"].disconnect()
    assert middleware.active == 0


async def test_shutdown_ends_every_stream_cleanly_then_refuses_new_ones() -> None:
    streams = [Stream(), Stream()]
    reasons: list[CloseReason] = []
    for stream in streams:
        stream.on_close(reasons.append)
        stream.send("queued before shutdown")
    pending = list(streams)

    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        return pending.pop() if pending else Stream(["too late"])

    middleware = StreamMiddleware(app)
    peers = [Peer(), Peer()]
    async with anyio.create_task_group() as tg:
        for peer in peers:
            tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
        for peer in peers:
            await peer.wait_for(lambda peer=peer: b"queued" in peer.body)
        with anyio.fail_after(5):
            await middleware.shutdown(grace=5_000)
        assert middleware.active == 0
    assert reasons == ["shutdown", "shutdown"]
    for peer in peers:
        assert peer.finished and peer.body == b"data: queued before shutdown\n\n"
    late = Peer()
    await middleware(late.scope, late.receive, late.send)
    assert late.status == 503


async def test_shutdown_cuts_off_a_stalled_client_after_grace() -> None:
    stream, peer = Stream(), Peer(stall_after=0)
    reasons: list[CloseReason] = []
    stream.on_close(reasons.append)
    middleware = StreamMiddleware(returning(stream))
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
        stream.send("stuck")
        with anyio.fail_after(5):
            await peer.stalled.wait()
        before = anyio.current_time()
        with anyio.fail_after(5):
            await middleware.shutdown(grace=50)
        assert anyio.current_time() - before < 2
    assert middleware.active == 0 and reasons == ["shutdown"] and not peer.finished


async def test_last_event_id_is_known_when_the_handler_builds_the_stream() -> None:
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> Stream:
        stream = Stream()  # value-based: the handler decides where to resume right here
        seen.append(stream.last_event_id)
        stream.close()
        return stream

    peer = Peer(headers=[(b"last-event-id", b"17")])
    await StreamMiddleware(app)(peer.scope, peer.receive, peer.send)
    assert seen == ["17"] and Stream().last_event_id is None  # outside a request: none
