"""Starlette: routes return Streams, served by a real hypercorn and read by httpx.

Both ``asgi_stream.Stream`` (Starlette calls any returned object as an ASGI app) and
``asgi_stream.starlette.Stream`` (also a Starlette ``Response``) are driven inside Starlette's
stack by the ``StreamMiddleware`` around the app.
"""

from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import asgi_stream
import asgi_stream.starlette
from asgi_stream import ServerSentEvent, hand_over
from tests.conftest import serve
from tests.frameworks.starlette_support import MARKER, ORIGIN
from tests.helpers import (
    TIMEOUT,
    Record,
    Wrapped,
    listen_then_shut_down,
    read_first_line_and_leave,
    read_raw,
    track,
)

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize(
    "stream_class",
    [asgi_stream.Stream, asgi_stream.starlette.Stream],
    ids=["asgi_stream.Stream", "asgi_stream.starlette.Stream"],
)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "starlette_app.py"


@BOTH
async def test_a_route_returning_a_stream_sends_its_events_in_order(stream_class: Any) -> None:
    closes = Record()

    async def numbers(count: int) -> Any:
        for n in range(count):
            yield ServerSentEvent({"n": n}, event="number", id=n)

    async def endpoint(request: Request) -> Any:
        return track(stream_class(numbers(int(request.query_params["count"]))), closes)

    app = Wrapped(Starlette(routes=[Route("/numbers", endpoint)]))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/numbers?count=50") as source:
                assert source.response.status_code == 200
                headers = source.response.headers
                assert headers["content-type"] == "text/event-stream; charset=utf-8"
                assert headers["cache-control"] == "no-cache"
                events = [(sse.event, sse.id, sse.data) async for sse in source.aiter_sse()]
            assert events == [("number", str(n), f'{{"n":{n}}}') for n in range(50)]
            assert await closes.wait() == ["complete"]
            assert await app.finished.wait() == ["/numbers"]
            assert app.active == 0


@BOTH
async def test_the_middleware_drives_the_stream_with_its_own_defaults(stream_class: Any) -> None:
    """The stream gets the ``ping`` of the StreamMiddleware around the app (20 ms here, not
    the Stream's 15 s default): proof that the middleware, not a bare driver, sends it."""

    async def endpoint(request: Request) -> Any:
        async def callback(stream: Any) -> None:
            stream.send("a")

        return stream_class(callback)

    app = Wrapped(Starlette(routes=[Route("/", endpoint)]), ping=20)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with client.stream("GET", url) as response:
                lines = []
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == ": ping" and "data: a" in lines:
                        break  # a heartbeat after the event (one may also come before it)
            assert [line for line in lines if line not in ("", ": ping")] == ["data: a"]
            await app.finished.wait()
            assert app.active == 0


@BOTH
async def test_events_are_not_buffered_by_starlette_or_its_gzip(stream_class: Any) -> None:
    """The producer sends "world" only after the client has received "hello": a deadlock
    (caught by fail_after) if anything in the stack buffered the body."""
    got_hello = anyio.Event()

    async def endpoint(request: Request) -> Any:
        async def callback(stream: Any) -> None:
            stream.send("hello")
            await got_hello.wait()
            stream.send("world")
            stream.close()

        return stream_class(callback)

    inner = Starlette(
        routes=[Route("/", endpoint)], middleware=[Middleware(GZipMiddleware, minimum_size=1)]
    )
    with anyio.fail_after(TIMEOUT):
        async with serve(Wrapped(inner)) as url, httpx.AsyncClient() as client:
            headers = {"accept-encoding": "gzip"}
            async with aconnect_sse(client, "GET", url, headers=headers) as source:
                assert "content-encoding" not in source.response.headers
                received = []
                async for sse in source.aiter_sse():
                    received.append(sse.data)
                    got_hello.set()
            assert received == ["hello", "world"]


@BOTH
async def test_active_counts_the_streams_and_shutdown_ends_them_cleanly(
    stream_class: Any,
) -> None:
    clients = 3
    never = anyio.Event()
    closes = Record()
    producers_ended = Record()

    async def endpoint(request: Request) -> Any:
        name = request.path_params["name"]

        async def callback(stream: Any) -> None:
            try:
                stream.send(f"hello {name}")
                await never.wait()
                stream.send("never sent")
            finally:
                producers_ended(name)

        return track(stream_class(callback), closes)

    app = Wrapped(Starlette(routes=[Route("/{name}", endpoint)]))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            names = [f"c{n}" for n in range(clients)]
            received = await listen_then_shut_down(
                app, client, {name: f"{url}/{name}" for name in names}, grace=TIMEOUT * 1000 / 2
            )
            assert received == {f"c{n}": [f"hello c{n}"] for n in range(clients)}
            assert await closes.wait(clients) == ["shutdown"] * clients
            assert sorted(await producers_ended.wait(clients)) == [f"c{n}" for n in range(clients)]
            await app.finished.wait(clients)

            # after shutdown, a new Stream is refused with a 503
            response, body = await read_raw(client, url + "/late")
            assert response.status_code == 503
            assert b"shutting down" in body
            assert await closes.wait(clients + 1) == ["shutdown"] * (clients + 1)
            assert app.active == 0


@BOTH
async def test_client_disconnect_stops_the_producer(stream_class: Any) -> None:
    never = anyio.Event()
    closes = Record()
    finally_ran = Record()

    async def endpoint(request: Request) -> Any:
        async def source() -> Any:
            try:
                yield "first"
                await never.wait()
                yield "never sent"
            finally:
                finally_ran(True)

        return track(stream_class(source()), closes)

    app = Wrapped(Starlette(routes=[Route("/gen", endpoint)]))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            await read_first_line_and_leave(client, url + "/gen", "data: first")
            assert await closes.wait() == ["disconnect"]
            assert await finally_ran.wait() == [True]
            assert await app.finished.wait() == ["/gen"]
            assert app.active == 0


async def test_cors_session_and_stream_cookies_reach_the_client() -> None:
    """CORSMiddleware and SessionMiddleware add their headers to the stream's response start;
    cookies set on the Stream (set_cookie, or a set-cookie header) are sent too."""

    async def plain(request: Request) -> Any:
        request.session["user"] = "ada"
        return asgi_stream.Stream(["a", "b"], headers=[("set-cookie", "plain=1; Path=/")])

    async def own(request: Request) -> Any:
        request.session["user"] = "bob"
        stream = asgi_stream.starlette.Stream(["a", "b"], headers={"x-stream": "yes"})
        stream.set_cookie("flavour", "chocolate", httponly=True)
        stream.delete_cookie("old")
        return stream

    inner = Starlette(
        routes=[Route("/plain", plain), Route("/own", own)],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=[ORIGIN],
                allow_credentials=True,
                expose_headers=["x-stream"],
            ),
            Middleware(SessionMiddleware, secret_key="not-a-secret"),
        ],
    )
    app = Wrapped(inner)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            for path, own_cookies in (
                ("/plain", ["plain=1; Path=/"]),
                ("/own", ["flavour=chocolate; HttpOnly; Path=/; SameSite=lax", 'old="";']),
            ):
                response, body = await read_raw(client, url + path, headers={"origin": ORIGIN})
                assert response.status_code == 200
                assert body == b"data: a\n\ndata: b\n\n"
                headers = response.headers
                assert headers["content-type"] == "text/event-stream; charset=utf-8"
                assert headers["access-control-allow-origin"] == ORIGIN
                assert headers["access-control-allow-credentials"] == "true"
                cookies = headers.get_list("set-cookie")
                assert sum(c.startswith("session=") for c in cookies) == 1, cookies
                for expected in own_cookies:
                    assert any(c.startswith(expected) for c in cookies), (expected, cookies)
            assert headers["x-stream"] == "yes"
            assert headers["access-control-expose-headers"] == "x-stream"
            assert "max-age=0" in next(c for c in cookies if c.startswith("old=")).lower()
            # the session cookie really carries what the route stored
            assert client.cookies.get("session") is not None
            await app.finished.wait(2)
            assert app.active == 0


async def test_status_and_headers_set_on_the_starlette_stream_reach_the_client() -> None:
    async def endpoint(request: Request) -> Any:
        stream = asgi_stream.starlette.Stream(["x"], format="text")
        stream.status_code = 201
        stream.headers["x-request-path"] = request.url.path
        stream.headers["content-type"] = "text/markdown; charset=utf-8"
        return stream

    app = Wrapped(Starlette(routes=[Route("/made", endpoint)]))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/made")
            assert response.status_code == 201
            assert response.headers["x-request-path"] == "/made"
            assert response.headers["content-type"] == "text/markdown; charset=utf-8"
            assert body == b"x"


async def test_background_runs_after_the_stream_has_ended() -> None:
    log = Record()

    async def background(name: str) -> None:
        log(f"background {name}")

    async def endpoint(request: Request) -> Any:
        stream = asgi_stream.starlette.Stream(
            ["a", "b"], background=BackgroundTask(background, "task")
        )
        stream.on_close(lambda reason: log(f"on_close {reason}"))
        return stream

    app = Wrapped(Starlette(routes=[Route("/", endpoint)]))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            _response, body = await read_raw(client, url)
            assert body == b"data: a\n\ndata: b\n\n"
            assert await log.wait(2) == ["on_close complete", "background task"]
            await app.finished.wait()


@BOTH
async def test_without_the_middleware_a_stream_still_streams(stream_class: Any) -> None:
    """Not tracked (nothing to shut it down), but sent by the same driver."""
    closes = Record()

    async def endpoint(request: Request) -> Any:
        return track(stream_class(["a", "b"]), closes)

    with anyio.fail_after(TIMEOUT):
        async with serve(Starlette(routes=[Route("/", endpoint)])) as url:
            async with httpx.AsyncClient() as client:
                _response, body = await read_raw(client, url)
            assert body == b"data: a\n\ndata: b\n\n"
            assert await closes.wait() == ["complete"]


# -- the hand-over cannot be forged -------------------------------------------------------


async def test_a_client_sending_the_handoff_header_changes_nothing() -> None:
    async def as_json(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def reflect(request: Request) -> Response:
        # an app that copies a request header into its response (as a proxy might)
        return PlainTextResponse("reflected", headers={MARKER: request.headers[MARKER]})

    async def stream(request: Request) -> Any:
        return asgi_stream.starlette.Stream(["s"])

    app = Wrapped(
        Starlette(routes=[Route("/json", as_json), Route("/reflect", reflect), Route("/s", stream)])
    )
    forged = {MARKER: secrets.token_hex(16)}
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/json", headers=forged)
            assert (response.status_code, body) == (200, b'{"ok":true}')
            assert response.headers["content-type"] == "application/json"
            response, body = await read_raw(client, url + "/reflect", headers=forged)
            assert (response.status_code, body) == (200, b"reflected")
            assert response.headers[MARKER] == forged[MARKER]
            response, body = await read_raw(client, url + "/s", headers=forged)
            assert (response.status_code, body) == (200, b"data: s\n\n")
            await app.finished.wait(3)
            assert app.active == 0


async def test_a_normal_response_with_a_fake_marker_is_sent_as_it_is() -> None:
    closes = Record()

    async def fake(request: Request) -> Response:
        return PlainTextResponse("normal body", headers={MARKER: secrets.token_hex(16)})

    async def after_real_hand_over(request: Request) -> Response:
        # A Stream really handed over in this request, but the response the app sends
        # carries a forged marker value: the middleware must not take it over.
        hand_over(track(asgi_stream.Stream(["never sent"]), closes))
        return PlainTextResponse("normal body", headers={MARKER: secrets.token_hex(16)})

    app = Wrapped(Starlette(routes=[Route("/fake", fake), Route("/real", after_real_hand_over)]))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            for path in ("/fake", "/real"):
                response, body = await read_raw(client, url + path)
                assert response.status_code == 200
                assert response.headers["content-type"] == "text/plain; charset=utf-8"
                assert body == b"normal body"
            assert await closes.wait() == ["error"]  # the handed-over Stream was dropped
            await app.finished.wait(2)
            assert app.active == 0


# -- the Response side of asgi_stream.starlette.Stream -------------------------------------


async def test_the_starlette_stream_is_both_a_stream_and_a_response() -> None:
    stream = asgi_stream.starlette.Stream(["x"], status=202, headers={"X-A": "1"})
    assert isinstance(stream, asgi_stream.Stream)
    assert isinstance(stream, Response)
    assert stream.status_code == 202
    stream.status_code = 200
    assert stream.status == 200
    with pytest.raises(ValueError, match="status_code"):
        stream.status_code = 99
    assert stream.headers["x-a"] == "1"
    stream.headers["x-b"] = "2"
    stream.set_cookie("c", "3")
    assert stream.raw_headers == [
        (b"x-a", b"1"),
        (b"x-b", b"2"),
        (b"set-cookie", b"c=3; Path=/; SameSite=lax"),
    ]
    assert asgi_stream.starlette.Stream.media_type == "text/event-stream"
    assert stream.media_type == "text/event-stream"
    assert asgi_stream.starlette.Stream(format="ndjson").media_type == "application/x-ndjson"
    stream.headers["content-type"] = "text/plain; charset=utf-8"
    assert stream.media_type == "text/plain"
    assert stream.background is None


async def test_headers_set_through_starlette_get_the_constructor_checks() -> None:
    stream = asgi_stream.starlette.Stream(["x"])
    with pytest.raises(ValueError, match="hop-by-hop"):
        stream.raw_headers = [(b"connection", b"close")]
    stream.headers["x-bad"] = "a\r\nx-injected: 1"
    with pytest.raises(ValueError, match=r"header .x-bad.: the value has a control character"):
        await stream({"type": "http"}, None, None)


# -- the documented example ----------------------------------------------------------------


async def test_the_example_app_streams_and_shuts_down() -> None:
    spec = importlib.util.spec_from_file_location("starlette_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with anyio.fail_after(TIMEOUT):
        async with serve(module.app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/count?to=3") as source:
                data = [sse.data async for sse in source.aiter_sse()]
            assert data == ["1", "2", "3"]
            async with client.stream("GET", url + "/clock") as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        break
                assert module.app.active == 1
                await module.app.shutdown(grace=1_000)
                # the rest arrives and ends cleanly (httpx raises if it is cut off)
                rest = [line async for line in lines]
            assert module.app.active == 0
            assert all(not line or line.startswith(("data: ", "event: ")) for line in rest)
