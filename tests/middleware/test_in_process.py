"""StreamMiddleware in process: interception, pass-through, defaults, the registry of live
streams, and the hand-over of frameworks that cannot return a Stream (forged markers refused).
(Its shutdown: tests/shutdown/.)"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgi_stream import CloseReason, Stream, StreamMiddleware, hand_over
from asgi_stream.driver import drive
from asgi_stream.middleware import HANDOFF_HEADER
from tests.helpers import returning
from tests.peer import Peer

pytestmark = pytest.mark.anyio


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
    assert stream.producer.queue.limit == 2048 and stream.producer.ping_seconds() is None


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


# -- hand-over by frameworks that cannot return a Stream -----------------------------------


def framework(build: Any, *, extra: Any = (), status: int | None = None) -> Any:
    """A stand-in for a framework: its view builds a Stream and hands it over, then the
    framework sends the stand-in response through its own middleware (which adds headers)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        stream = build()
        headers = [(k.encode(), v.encode()) for k, v in hand_over(stream)]
        await send(
            {
                "type": "http.response.start",
                "status": status or stream.status,
                "headers": [*headers, (b"content-length", b"0"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_a_handed_over_stream_replaces_the_stand_in_and_keeps_added_headers() -> None:
    added = [
        (b"set-cookie", b"session=abc; HttpOnly"),
        (b"set-cookie", b"csrftoken=xyz"),
        (b"access-control-allow-origin", b"https://example.com"),
        (b"content-encoding", b"gzip"),  # describes the stand-in's body: dropped
        (b"cache-control", b"max-age=600"),  # the Stream sets its own: not doubled
    ]
    peer = Peer()
    middleware = StreamMiddleware(framework(lambda: Stream(["a", "b"], status=201), extra=added))
    await middleware(peer.scope, peer.receive, peer.send)
    assert peer.status == 201 and peer.body == b"data: a\n\ndata: b\n\n" and peer.finished
    starts = [m for m in peer.messages if m["type"] == "http.response.start"]
    assert len(starts) == 1
    headers = starts[0]["headers"]
    assert headers == [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"set-cookie", b"session=abc; HttpOnly"),
        (b"set-cookie", b"csrftoken=xyz"),
        (b"access-control-allow-origin", b"https://example.com"),
    ]


@pytest.mark.parametrize("where", ["request header", "app response header"])
async def test_a_forged_marker_does_not_take_over_a_response(where: str) -> None:
    forged = (HANDOFF_HEADER.encode(), b"0" * 32)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # e.g. a proxy view copying an upstream's headers, or echoing the client's
        await send({"type": "http.response.start", "status": 200, "headers": [forged]})
        await send({"type": "http.response.body", "body": b"plain", "more_body": False})

    peer = Peer(headers=[forged] if where == "request header" else [])
    await StreamMiddleware(app)(peer.scope, peer.receive, peer.send)
    assert peer.status == 200 and peer.body == b"plain"


async def test_only_this_requests_token_is_accepted() -> None:
    stream = Stream(["x"])
    leaked: list[tuple[bytes, bytes]] = []

    async def first(scope: Any, receive: Any, send: Any) -> None:
        leaked.extend((k.encode(), v.encode()) for k, v in hand_over(Stream(["y"])))
        raise RuntimeError("first request fails before responding")

    async def second(scope: Any, receive: Any, send: Any) -> None:
        hand_over(stream)  # a real hand-over, but the response below carries an old token
        await send({"type": "http.response.start", "status": 500, "headers": leaked})
        await send({"type": "http.response.body", "body": b"error page", "more_body": False})

    with pytest.raises(RuntimeError):
        peer = Peer()
        await StreamMiddleware(first)(peer.scope, peer.receive, peer.send)
    reasons: list[CloseReason] = []
    stream.on_close(reasons.append)
    peer = Peer()
    await StreamMiddleware(second)(peer.scope, peer.receive, peer.send)
    assert peer.status == 500 and peer.body == b"error page"
    assert reasons == ["error"]  # the handed-over stream never ran: closed, cleaned up


async def test_hand_over_without_the_middleware_names_what_to_install() -> None:
    with pytest.raises(RuntimeError, match="StreamMiddleware"):
        hand_over(Stream())


async def test_a_stream_run_as_an_asgi_response_inside_the_middleware_is_tracked() -> None:
    stream = Stream()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await stream(scope, receive, send)  # what Starlette does with a response object

    middleware, peer = StreamMiddleware(app, max_buffer=4096), Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
        await until(lambda: middleware.active == 1)
        assert stream.producer.queue.limit == 4096  # the middleware's defaults apply
        await middleware.shutdown(grace=1_000)
    assert peer.finished and stream.producer.queue.reason == "shutdown"


# -- regressions found in review -------------------------------------------------------------


async def test_a_stream_returned_twice_does_not_corrupt_the_registry() -> None:
    stream = Stream()
    middleware = StreamMiddleware(returning(stream))
    first, second = Peer(), Peer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, first.scope, first.receive, first.send)
        await until(lambda: middleware.active == 1)
        with pytest.raises(RuntimeError, match="already"):
            await middleware(second.scope, second.receive, second.send)
        assert middleware.active == 1  # the first request's stream is still tracked
        await middleware.shutdown(grace=1_000)
    assert first.finished and stream.producer.queue.reason == "shutdown"


class Upstream:
    def __init__(self) -> None:
        self.status_code, self.headers, self.closed = 200, {}, False

    async def aiter_raw(self) -> Any:
        yield b"data: x\n\n"

    async def aclose(self) -> None:
        self.closed = True


async def test_sources_are_closed_on_paths_that_never_send_them() -> None:
    # 1. the 503 after shutdown
    upstream = Upstream()
    middleware = StreamMiddleware(returning(Stream(upstream)))
    await middleware.shutdown()
    peer = Peer()
    await middleware(peer.scope, peer.receive, peer.send)
    assert peer.status == 503 and upstream.closed

    # 2. an app that answered itself and also returned a Stream
    upstream = Upstream()

    async def answered(scope: Any, receive: Any, send: Any) -> Stream:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return Stream(upstream)

    peer = Peer()
    await StreamMiddleware(answered)(peer.scope, peer.receive, peer.send)
    assert peer.status == 204 and upstream.closed


async def test_a_stream_is_sent_once() -> None:
    stream = Stream(["a"])
    peer = Peer()
    await stream(peer.scope, peer.receive, peer.send)
    with pytest.raises(RuntimeError, match="already"):
        await stream(Peer().scope, peer.receive, peer.send)


async def test_driver_defaults_apply_only_where_the_stream_is_unset() -> None:
    own, default = Stream(max_buffer=123, ping=None), Stream()
    for stream in (own, default):
        stream.close()
        peer = Peer()
        await drive(stream.producer, peer.scope, peer.receive, peer.send, ping=7, max_buffer=456)
    assert (own.producer.queue.limit, own.producer.ping_seconds()) == (123, None)
    assert (default.producer.queue.limit, default.producer.ping_seconds()) == (456, 0.007)
