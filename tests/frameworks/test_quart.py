"""Quart: a view returns a Stream (``asgi_stream.quart.init_app``), under a real hypercorn,
read by httpx and httpx-sse.

One Quart app (with a blueprint, an ``after_request`` cookie, the session and ``quart_cors``)
is built per test; the server side reports what happened through ``Probe`` records, so every
test awaits events instead of sleeping. Quart runs on asyncio only, so the trio variant of
each test is skipped.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import quart
from anyio.streams.text import TextReceiveStream
from httpx_sse import aconnect_sse
from quart import Blueprint, Quart, request, session
from quart_cors import cors

from asgi_stream import Stream, StreamMiddleware
from asgi_stream.middleware import HANDOFF_HEADER
from asgi_stream.quart import accept_streams, init_app
from tests.conftest import _free_port, _wait_listening, serve
from tests.helpers import TIMEOUT, Record

pytestmark = pytest.mark.anyio

ORIGIN = "https://app.example"
quart_version = version("quart")
QUART_ONLY_ASYNCIO = "Quart runs on asyncio only (asyncio tasks per request); no trio variant"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quart_app.py"


@pytest.fixture(
    params=["asyncio", pytest.param("trio", marks=pytest.mark.skip(reason=QUART_ONLY_ASYNCIO))]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Probe:
    """What the server side reports to the test."""

    def __init__(self) -> None:
        self.closes = Record()  # on_close reasons
        self.stopped = Record()  # producers that ended (finally blocks)
        self.joined = Record()  # value-based streams opened by /values
        self.got_first = anyio.Event()  # the client has read the first event of /confirm

    def track(self, stream: Stream) -> Stream:
        stream.on_close(self.closes)
        return stream


def create_app(probe: Probe, **config: Any) -> tuple[Quart, StreamMiddleware]:
    app = Quart(__name__)
    app.config.update(SECRET_KEY="test", **config)
    middleware = init_app(app)
    cors(app, allow_origin=ORIGIN, allow_credentials=True)

    @app.after_request
    async def set_cookie(response: quart.Response) -> quart.Response:
        response.set_cookie("seen", "1", httponly=True)
        return response

    @app.get("/callback")
    async def callback() -> Any:
        async def produce(stream: Stream) -> None:
            for word in ("one", "two", "three"):
                stream.send(word)
                await stream.wait(10)
            stream.close()

        return probe.track(Stream(produce))

    @app.get("/ordered")
    async def ordered() -> Any:
        async def produce(stream: Stream) -> None:
            for n in range(200):
                stream.send({"n": n}, id=n)
                if n % 20 == 0:
                    await stream.wait(1)
            stream.close()

        return probe.track(Stream(produce, event="count"))

    @app.get("/confirm")
    async def confirm() -> Any:
        async def produce(stream: Stream) -> None:
            stream.send("hello")
            await probe.got_first.wait()  # only once the client has read "hello"
            stream.send("world")
            stream.close()

        return Stream(produce)

    @app.get("/values")
    async def values() -> Any:
        stream = probe.track(Stream())
        probe.joined(stream)  # the test sends to it from outside the view
        return stream

    @app.get("/generator")
    async def generator() -> Any:
        async def numbers() -> AsyncIterator[int]:
            try:
                for n in range(3):
                    yield n
                    await anyio.lowlevel.checkpoint()
            finally:
                probe.stopped("numbers")

        return probe.track(Stream(numbers()))

    @app.get("/iterable")
    async def iterable() -> Any:
        return probe.track(Stream([{"a": 1}, "b"]))

    @app.get("/ndjson")
    async def ndjson() -> Any:
        return probe.track(Stream([{"a": 1}, [2]], format="ndjson"))

    @app.get("/upstream")
    async def upstream() -> Any:
        return quart.Response(b"data: raw\n\n: kept as is\n\n", content_type="text/event-stream")

    @app.get("/proxy")
    async def proxy() -> Any:
        client = httpx.AsyncClient()
        response = client.send(
            client.build_request("GET", request.host_url + "upstream"), stream=True
        )
        stream = probe.track(Stream(response))
        stream.on_close(lambda _: client.aclose())
        return stream

    @app.get("/slow")
    async def slow() -> Any:
        async def produce(stream: Stream) -> None:  # 7 events over 3 seconds
            for n in range(7):
                if n:
                    await stream.wait(500)
                stream.send(n)
            stream.close()

        return probe.track(Stream(produce))

    @app.get("/native-slow")
    async def native_slow() -> Any:
        async def body() -> AsyncIterator[bytes]:  # the same, as Quart's own streaming body
            for n in range(7):
                if n:
                    await anyio.sleep(0.5)
                yield f"data: {n}\n\n".encode()

        return quart.Response(body(), content_type="text/event-stream")

    @app.get("/forever")
    async def forever() -> Any:
        async def produce(stream: Stream) -> None:
            try:
                n = 0
                while True:
                    stream.send(n)
                    n += 1
                    await stream.wait(20)
            finally:
                probe.stopped("callback")

        return probe.track(Stream(produce))

    @app.get("/forever-generator")
    async def forever_generator() -> Any:
        async def ticks() -> AsyncIterator[int]:
            try:
                n = 0
                while True:
                    yield n
                    n += 1
                    await anyio.sleep(0.02)
            finally:
                probe.stopped("generator")

        return probe.track(Stream(ticks()))

    @app.get("/late-disconnect")
    async def late_disconnect() -> Any:
        stream = probe.track(Stream())
        response = await quart.make_response(stream)  # handed over, then the view goes on
        probe.joined(stream)
        try:
            await anyio.sleep_forever()  # e.g. a slow audit-log write; ends by cancellation
        finally:
            probe.stopped("view")
        return response

    @app.get("/tuple/<form>")
    async def tuple_form(form: str) -> Any:
        stream = probe.track(Stream(["x"]))
        forms: dict[str, Any] = {
            "status": (stream, 201),
            "headers": (stream, {"X-Extra": "1", "Cache-Control": "no-store"}),
            "list-headers": (stream, [("X-Extra", "1"), ("X-Extra", "2")]),
            "both": (stream, 202, {"X-Extra": "1", "Content-Type": "text/plain"}),
        }
        return forms[form]

    @app.get("/session")
    async def with_session() -> Any:
        session["user"] = "ada"
        return probe.track(Stream(["hi"]))

    @app.get("/plain")
    async def plain() -> Any:
        return "plain"

    @app.get("/echo")
    async def echo() -> Any:  # echoes the client's header (as a careless view might)
        return "echo", {HANDOFF_HEADER: request.headers.get(HANDOFF_HEADER, "")}

    @app.get("/fake-marker")
    async def fake_marker() -> Any:  # e.g. a proxy view copying an upstream's headers
        return "plain", 200, {HANDOFF_HEADER: secrets.token_hex(16)}

    @app.get("/changed-mind")
    async def changed_mind() -> Any:
        await quart.make_response(probe.track(Stream(["never"])))  # handed over, then dropped
        return "changed my mind", 200

    blueprint = Blueprint("bp", __name__, url_prefix="/bp")

    @blueprint.after_request
    async def mark(response: quart.Response) -> quart.Response:
        response.headers["X-Blueprint"] = "yes"
        return response

    @blueprint.get("/events")
    async def bp_events() -> Any:
        return probe.track(Stream(["from", "blueprint"]))

    app.register_blueprint(blueprint)
    return app, middleware


async def sse_events(client: httpx.AsyncClient, url: str, **kwargs: Any) -> list[Any]:
    async with aconnect_sse(client, "GET", url, **kwargs) as source:
        source.response.raise_for_status()
        return [(sse.event, sse.data) async for sse in source.aiter_sse()]


async def read_raw(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    async with client.stream("GET", url, **kwargs) as response:
        await response.aread()
    return response


# -- the modes, from a view ------------------------------------------------------------


async def test_events_arrive_in_order() -> None:
    probe = Probe()
    app, middleware = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/ordered") as source:
                response = source.response
                events = [sse async for sse in source.aiter_sse()]
            assert await probe.closes.wait() == ["complete"]
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers
    assert [(sse.event, sse.id, json.loads(sse.data)) for sse in events] == [
        ("count", str(n), {"n": n}) for n in range(200)
    ]
    assert middleware.active == 0


async def test_events_are_not_buffered_by_quart() -> None:
    """The producer sends "world" only after the client has read "hello": a deadlock (and a
    fail_after) if Quart or the hand-over held the first event back."""
    probe = Probe()
    app, _ = create_app(probe)
    received = []
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient() as client,
            aconnect_sse(client, "GET", url + "/confirm") as source,
        ):
            async for sse in source.aiter_sse():
                received.append(sse.data)
                probe.got_first.set()
    assert received == ["hello", "world"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/callback", [("message", "one"), ("message", "two"), ("message", "three")]),
        ("/generator", [("message", "0"), ("message", "1"), ("message", "2")]),
        ("/iterable", [("message", '{"a":1}'), ("message", "b")]),
        ("/bp/events", [("message", "from"), ("message", "blueprint")]),
    ],
)
async def test_a_view_returns_a_stream(path: str, expected: list[Any]) -> None:
    probe = Probe()
    app, _ = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            assert await sse_events(client, url + path) == expected
            assert await probe.closes.wait() == ["complete"]
            if path == "/generator":
                assert await probe.stopped.wait() == ["numbers"]


async def test_value_based_stream_fed_from_outside_the_view() -> None:
    probe = Probe()
    app, _ = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/values") as source:
                (stream,) = await probe.joined.wait()
                stream.send("first")
                stream.send({"second": 2}, event="update")
                stream.close()
                events = [(sse.event, sse.data) async for sse in source.aiter_sse()]
            assert await probe.closes.wait() == ["complete"]
    assert events == [("message", "first"), ("update", '{"second":2}')]
    assert stream.send("late") is False


async def test_ndjson_keeps_its_content_type() -> None:
    probe = Probe()
    app, _ = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await read_raw(client, url + "/ndjson")
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.content == b'{"a":1}\n[2]\n'


async def test_proxy_passes_the_upstream_through_unchanged() -> None:
    probe = Probe()
    app, _ = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await read_raw(client, url + "/proxy")
            assert await probe.closes.wait() == ["complete"]
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"  # the upstream's
    assert response.content == b"data: raw\n\n: kept as is\n\n"


# -- Quart's response machinery ----------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "status", "headers"),
    [
        ("status", 201, {"cache-control": "no-cache"}),
        ("headers", 200, {"x-extra": "1", "cache-control": "no-store"}),
        ("list-headers", 200, {"x-extra": "1, 2"}),
        ("both", 202, {"x-extra": "1", "content-type": "text/plain"}),
    ],
)
async def test_tuple_forms_set_status_and_headers(
    form: str, status: int, headers: dict[str, str]
) -> None:
    probe = Probe()
    app, _ = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await read_raw(client, url + "/tuple/" + form)
            assert await probe.closes.wait() == ["complete"]
    assert response.status_code == status
    for name, value in headers.items():
        assert response.headers[name] == value
    assert response.content == b"data: x\n\n"
    assert response.headers.get_list("content-type") == [
        headers.get("content-type", "text/event-stream; charset=utf-8")
    ]


@pytest.mark.parametrize("path", ["/callback", "/bp/events"])
async def test_cookies_cors_and_hook_headers_reach_the_client(path: str) -> None:
    probe = Probe()
    app, _ = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient() as client,
            aconnect_sse(client, "GET", url + path, headers={"Origin": ORIGIN}) as source,
        ):
            response = source.response
            events = [sse.data async for sse in source.aiter_sse()]
    assert events and response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["set-cookie"].startswith("seen=1;")
    assert "httponly" in response.headers["set-cookie"].lower()
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"
    assert response.headers.get("x-blueprint") == ("yes" if path.startswith("/bp") else None)
    assert HANDOFF_HEADER not in response.headers  # the per-request secret never leaves


async def test_the_session_cookie_reaches_the_client() -> None:
    probe = Probe()
    app, _ = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            assert await sse_events(client, url + "/session") == [("message", "hi")]
            cookies = dict(client.cookies)
            again = await client.get(url + "/plain")
    assert set(cookies) == {"seen", "session"}
    assert again.status_code == 200


@pytest.mark.slow
async def test_response_timeout_does_not_cut_a_stream() -> None:
    probe = Probe()
    app, middleware = create_app(probe, RESPONSE_TIMEOUT=1)
    with anyio.fail_after(10):
        async with serve(app) as url, httpx.AsyncClient(timeout=10) as client:
            started = time.monotonic()
            events = await sse_events(client, url + "/slow")
            elapsed = time.monotonic() - started
            assert await probe.closes.wait() == ["complete"]
    assert [data for _, data in events] == [str(n) for n in range(7)]
    assert elapsed >= 2.9  # the events really were spread over 3 s
    assert middleware.active == 0


@pytest.mark.slow
async def test_response_timeout_does_cut_quarts_own_streaming_response() -> None:
    """The control for the test above: the same events as Quart's own streaming body are cut
    off after RESPONSE_TIMEOUT = 1, so that test would see the cut if the stream had one."""
    app, _ = create_app(Probe(), RESPONSE_TIMEOUT=1)
    received: list[str] = []
    with anyio.fail_after(10):
        async with serve(app) as url, httpx.AsyncClient(timeout=10) as client:
            with pytest.raises(httpx.HTTPError):
                async with aconnect_sse(client, "GET", url + "/native-slow") as source:
                    async for sse in source.aiter_sse():
                        received.append(sse.data)
    assert 1 <= len(received) < 7


# -- disconnect and shutdown -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "producer"), [("/forever", "callback"), ("/forever-generator", "generator")]
)
async def test_a_client_disconnect_stops_the_producer(path: str, producer: str) -> None:
    probe = Probe()
    app, middleware = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + path) as source:
                async for sse in source.aiter_sse():
                    if sse.data == "2":
                        break  # leaving the block closes the connection
            assert await probe.closes.wait() == ["disconnect"]
            assert await probe.stopped.wait() == [producer]
            assert middleware.active == 0


async def test_a_disconnect_quart_consumed_after_the_hand_over_ends_the_stream() -> None:
    """The client leaves after the hand-over but before Quart has sent the stand-in: Quart's
    own receiver task reads the http.disconnect (and cancels the view), so only the
    middleware's record of it can end the stream; it must not live on until shutdown."""
    probe = Probe()
    app, middleware = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.get, url + "/late-disconnect")
                await probe.joined.wait()
                tg.cancel_scope.cancel()  # the client leaves while the view still runs
            assert await probe.stopped.wait() == ["view"]  # Quart saw the disconnect
            with anyio.move_on_after(1):
                await probe.closes.wait()
            leaked = middleware.active
            await middleware.shutdown(grace=500)
    assert (probe.closes.items, leaked) == (["disconnect"], 0)


async def test_shutdown_ends_a_live_stream_cleanly() -> None:
    probe = Probe()
    app, middleware = create_app(probe)
    received = []
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/forever") as source:
                async for sse in source.aiter_sse():  # ends without an error: a clean end
                    received.append(sse.data)
                    if sse.data == "1":
                        await middleware.shutdown(grace=1_000)
            assert await probe.closes.wait() == ["shutdown"]
            refused = await client.get(url + "/callback")
    assert received[:2] == ["0", "1"]
    assert refused.status_code == 503


# -- the hand-over cannot be forged ------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [("/plain", "plain"), ("/echo", "echo")])
async def test_a_client_marker_header_does_not_take_over_a_response(path: str, body: str) -> None:
    app, _ = create_app(Probe())
    forged = {HANDOFF_HEADER: secrets.token_hex(16)}
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url + path, headers=forged)
    assert response.status_code == 200 and response.text == body
    assert response.headers["content-type"] == "text/html; charset=utf-8"


async def test_a_view_cannot_fake_the_marker() -> None:
    app, _ = create_app(Probe())
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url + "/fake-marker")
    assert response.status_code == 200 and response.text == "plain"
    assert response.headers["content-length"] == "5"


async def test_a_stream_still_streams_when_the_client_sends_a_marker() -> None:
    probe = Probe()
    app, _ = create_app(probe)
    forged = {HANDOFF_HEADER: secrets.token_hex(16)}
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            events = await sse_events(client, url + "/callback", headers=forged)
    assert [data for _, data in events] == ["one", "two", "three"]


async def test_a_handed_over_stream_that_the_view_drops_is_closed() -> None:
    probe = Probe()
    app, middleware = create_app(probe)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url + "/changed-mind")
            assert await probe.closes.wait() == ["error"]  # never sent, cleaned up
    assert response.status_code == 200 and response.text == "changed my mind"
    assert middleware.active == 0


# -- the missing pieces fail at once, saying what to do ------------------------------------


def bare_app() -> Quart:
    app = Quart(__name__)

    @app.get("/")
    async def index() -> Any:
        return Stream(["never"])

    return app


async def test_without_any_wiring_quart_refuses_the_stream_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Documented: with neither init_app nor StreamMiddleware, Quart itself rejects the
    Stream (a 500, no hang) and logs its TypeError naming the type."""
    app = bare_app()
    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url)
    assert response.status_code == 500
    assert "The response value type (Stream) is not valid" in caplog.text


async def test_served_without_the_middleware_names_it(caplog: pytest.LogCaptureFixture) -> None:
    app = bare_app()
    middleware = init_app(app)
    app.asgi_app = middleware.app  # e.g. serving an asgi_app taken before init_app
    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.get(url)
    assert response.status_code == 500
    assert re.search(r"no StreamMiddleware handles this request: .*init_app", caplog.text)


async def test_a_middleware_wrapped_by_hand_needs_accept_streams() -> None:
    app = bare_app()
    middleware = StreamMiddleware(app.asgi_app, ping=None)
    app.asgi_app = middleware  # type: ignore[method-assign]
    accept_streams(app)
    accept_streams(app)  # idempotent
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            assert await sse_events(client, url) == [("message", "never")]
    assert middleware.active == 0


async def test_quarts_test_client_reads_a_stream() -> None:
    """No server needed for a user's own tests: the test client goes through app.asgi_app."""
    app, _ = create_app(Probe())
    client = app.test_client()
    with anyio.fail_after(TIMEOUT):
        response = await client.get("/tuple/status")
        body = await response.get_data()
    assert response.status_code == 201
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert body == b"data: x\n\n"


def test_init_app_checks_its_argument_and_runs_once() -> None:
    app = Quart(__name__)
    middleware = init_app(app, ping=None, max_buffer=4096)
    assert app.asgi_app is middleware
    assert (middleware.ping, middleware.max_buffer) == (None, 4096)
    with pytest.raises(RuntimeError, match="already called"):
        init_app(app)
    with pytest.raises(TypeError, match="Quart app"):
        init_app(object())  # type: ignore[arg-type]


# -- examples/quart_app.py ---------------------------------------------------------------


async def test_the_example_app_streams() -> None:
    from examples.quart_app import app, streams

    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient() as client,
            aconnect_sse(client, "GET", url + "/events") as source,
        ):
            first = await anext(source.aiter_sse())
            assert streams.active == 1
    assert json.loads(first.data) == {"n": 0}


async def test_the_example_script_ends_a_live_stream_on_ctrl_c() -> None:
    """``python examples/quart_app.py PORT``: streams, and on SIGINT its shutdown trigger ends
    the open stream with a complete body (no truncated chunked response) and exits 0."""
    port = _free_port()
    process = await anyio.open_process(
        [sys.executable, str(EXAMPLE), str(port)], stderr=subprocess.STDOUT
    )
    output = ""
    try:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        with anyio.fail_after(15):
            await _wait_listening(port)
            async with (
                httpx.AsyncClient() as client,
                aconnect_sse(client, "GET", f"http://127.0.0.1:{port}/events") as source,
            ):
                events = source.aiter_sse()
                assert json.loads((await anext(events)).data) == {"n": 0}
                process.send_signal(signal.SIGINT)
                rest = [sse.data async for sse in events]  # ends without a protocol error
            assert len(rest) <= 1
            async for chunk in lines:
                output += chunk
            assert await process.wait() == 0, output
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
    assert "Traceback" not in output


def test_the_documentation_shows_the_example() -> None:
    section = (ROOT / "docs" / "frameworks" / "quart.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    assert code == EXAMPLE.read_text(encoding="utf-8")
    assert f"Quart {quart_version}" in section


async def test_the_plain_wiring_works_too() -> None:
    """``app.asgi_app = StreamMiddleware(app.asgi_app)``, the first wiring users try."""
    app = Quart(__name__)

    @app.get("/")
    async def index() -> Any:
        return Stream(["plain", "wiring"]), 201

    app.asgi_app = StreamMiddleware(app.asgi_app)  # type: ignore[method-assign]
    async with (
        serve(app) as url,
        httpx.AsyncClient() as client,
        aconnect_sse(client, "GET", url + "/") as source,
    ):
        assert source.response.status_code == 201
        assert [sse.data async for sse in source.aiter_sse()] == ["plain", "wiring"]
