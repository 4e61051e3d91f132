"""Django (async and sync views) returning Streams, served by a real hypercorn, read by httpx.

Each test builds its own URLconf and MIDDLEWARE (``override_settings``) and serves
``asgi_stream.django.get_asgi_application()``. Django's ASGI handler is asyncio-only.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from httpx_sse import aconnect_sse

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

_DB_DIR = tempfile.TemporaryDirectory(prefix="asgi_stream_django_")
if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="asgi-stream-tests-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(_DB_DIR.name, "db.sqlite3"),
            }
        },
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        USE_TZ=True,
    )
django.setup()

from django.core.asgi import get_asgi_application as django_asgi_application  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from asgi_stream import CloseReason, Stream, StreamMiddleware  # noqa: E402
from asgi_stream.django import MIDDLEWARE_PATH, get_asgi_application  # noqa: E402
from asgi_stream.middleware import HANDOFF_HEADER  # noqa: E402
from tests.conftest import _free_port, _wait_listening, serve  # noqa: E402
from tests.helpers import TIMEOUT, Record, read_raw, track  # noqa: E402

pytestmark = pytest.mark.anyio
urlpatterns: list[Any] = []  # ROOT_URLCONF's default; every test brings its own

ROOT = Path(__file__).resolve().parents[2]
OURS = MIDDLEWARE_PATH
FULL_MIDDLEWARE = [
    "django.middleware.gzip.GZipMiddleware",  # first, as Django's docs ask
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.http.ConditionalGetMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    f"{__name__}.legacy_sync_middleware",  # sync-only: Django runs it in a thread
    OURS,
]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "trio":
        pytest.skip("Django's ASGI handler runs on asyncio only (asyncio.create_task/wait)")
    return str(request.param)


def legacy_sync_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An old-style, sync-only middleware that adds a header."""

    def middleware(request: Any) -> Any:
        response = get_response(request)
        response["X-Legacy"] = "sync"
        return response

    return middleware


class URLConf:
    """A ROOT_URLCONF object (Django accepts any object with ``urlpatterns``)."""

    def __init__(self, views: dict[str, Callable[..., Any]]) -> None:
        self.urlpatterns = [path(route.lstrip("/"), view) for route, view in views.items()]


class App:
    """The served ASGI app; records when it returns from each http request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.finished = Record()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.finished(scope["path"])


@asynccontextmanager
async def served(
    views: dict[str, Callable[..., Any]],
    *,
    middleware: list[str] = FULL_MIDDLEWARE,
    wrap: Callable[[], Any] = get_asgi_application,
) -> AsyncIterator[tuple[str, App]]:
    """Serve a Django project with ``views`` and ``middleware`` on hypercorn."""
    with override_settings(ROOT_URLCONF=URLConf(views), MIDDLEWARE=middleware):
        app = App(wrap())
        async with serve(app) as url:
            yield url, app


class ThreadRecord(Record):
    """A Record that sync code in other threads appends to (through the event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()

    def from_thread(self, item: Any = None) -> None:
        self._loop.call_soon_threadsafe(self, item)


async def read_events(client: httpx.AsyncClient, url: str, **kwargs: Any) -> list[tuple[str, str]]:
    async with aconnect_sse(client, "GET", url, **kwargs) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        return [(sse.event, sse.data) async for sse in source.aiter_sse()]


# -- async and sync views ------------------------------------------------------------------


async def test_async_views_stream_in_order() -> None:
    closes = Record()

    async def generator_view(request: Any) -> Stream:
        async def tokens() -> AsyncIterator[str]:
            for n in range(5):
                await anyio.lowlevel.checkpoint()
                yield f"token {n}"

        return track(Stream(tokens(), event="token"), closes)

    async def callback_view(request: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send({"n": 1})
            await stream.wait(10)
            stream.send("two\nlines", event="multi", id=2)
            stream.close()

        return track(Stream(callback), closes)

    async with served({"/tokens": generator_view, "/callback": callback_view}) as (url, app):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                assert await read_events(client, url + "/tokens") == [
                    ("token", f"token {n}") for n in range(5)
                ]
                assert await read_events(client, url + "/callback") == [
                    ("message", '{"n":1}'),
                    ("multi", "two\nlines"),
                ]
            assert await closes.wait(2) == ["complete", "complete"]
            await app.finished.wait(2)
            assert app.app.active == 0


async def test_sync_views_stream_in_order() -> None:
    threads = ThreadRecord()

    def generator_view(request: Any) -> Stream:
        def numbers() -> Iterator[dict[str, int]]:
            for n in range(5):
                threads.from_thread(threading.get_ident())
                yield {"n": n}

        return Stream(numbers(), headers={"x-view": "sync"})

    def list_view(request: Any) -> Stream:
        return Stream(["a", "b", "c"], event="letter", status=201)

    async with served({"/numbers": generator_view, "/list": list_view}) as (url, _):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                async with aconnect_sse(client, "GET", url + "/numbers") as source:
                    assert source.response.headers["x-view"] == "sync"
                    events = [sse.json() async for sse in source.aiter_sse()]
                assert events == [{"n": n} for n in range(5)]
                async with aconnect_sse(client, "GET", url + "/list") as source:
                    assert source.response.status_code == 201
                    letters = [(sse.event, sse.data) async for sse in source.aiter_sse()]
                assert letters == [("letter", "a"), ("letter", "b"), ("letter", "c")]
            idents = await threads.wait(5)
    # one thread for the whole generator, and not the event loop's
    assert len(set(idents)) == 1 and idents[0] != threading.get_ident()


async def test_a_sync_views_generator_streams_item_by_item() -> None:
    """The generator produces its second item only after the client has read the first one:
    collecting the generator first (Django's own way with sync iterators) would deadlock."""
    gate = threading.Event()

    def view(request: Any) -> Stream:
        def items() -> Iterator[str]:
            yield "first"
            yield "second" if gate.wait(TIMEOUT) else "the client never got the first item"

        return Stream(items())

    async with served({"/gated": view}) as (url, _):
        with anyio.fail_after(TIMEOUT):
            async with (
                httpx.AsyncClient() as client,
                aconnect_sse(client, "GET", url + "/gated") as source,
            ):
                received = []
                async for sse in source.aiter_sse():
                    received.append(sse.data)
                    gate.set()
    assert received == ["first", "second"]


def query(n: int) -> int:
    """A database round trip (raises SynchronousOnlyOperation on the event loop)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s * 10", [n])
        (value,) = cursor.fetchone()
    return int(value)


async def test_a_sync_views_generator_may_query_the_database() -> None:
    closes = Record()
    used: list[Any] = []

    def view(request: Any) -> Stream:
        def rows() -> Iterator[int]:
            used.append(connections["default"])  # this thread's connection
            for n in range(3):
                yield query(n)

        return track(Stream(rows()), closes)

    async def async_view(request: Any) -> Stream:  # an async view's source runs on the loop
        return Stream(query(n) for n in range(3))

    async with served({"/rows": view, "/async-rows": async_view}) as (url, _):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                assert await read_events(client, url + "/rows") == [
                    ("message", "0"),
                    ("message", "10"),
                    ("message", "20"),
                ]
                assert await closes.wait() == ["complete"]
                response = await client.get(url + "/async-rows")
                assert response.status_code == 500  # SynchronousOnlyOperation, logged
    (wrapper,) = used
    assert wrapper.connection is None  # the generator thread's connection was closed


# -- Django's middleware -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_django_middleware_neither_buffers_nor_breaks_the_stream(kind: str) -> None:
    """Session, CSRF, Common, Security, GZip (the client accepts gzip), ConditionalGet,
    X-Frame-Options and a sync-only middleware: the stream is not buffered (the second
    event is produced only after the client read the first), not compressed, and the
    cookies and headers they set reach the client."""
    got_first = threading.Event()  # for the sync view's thread
    got_first_here = anyio.Event()  # for the async view

    def prepare(request: Any) -> None:
        request.session["visits"] = 1  # SessionMiddleware sets the session cookie
        get_token(request)  # CsrfViewMiddleware sets the csrftoken cookie

    def items() -> Iterator[str]:
        yield "first"
        yield "second" if got_first.wait(TIMEOUT) else "buffered: the client saw nothing"

    def sync_view(request: Any) -> Stream:
        prepare(request)
        return Stream(items())

    async def async_view(request: Any) -> Stream:
        prepare(request)

        async def gated() -> AsyncIterator[str]:
            yield "first"
            with anyio.move_on_after(TIMEOUT):
                await got_first_here.wait()
            yield "second" if got_first_here.is_set() else "buffered: the client saw nothing"

        return Stream(gated())

    view = sync_view if kind == "sync" else async_view
    async with served({"/stream": view}) as (url, _):
        with anyio.fail_after(TIMEOUT):
            async with (
                httpx.AsyncClient() as client,
                client.stream(
                    "GET", url + "/stream", headers={"accept-encoding": "gzip"}
                ) as response,
            ):
                chunks = []
                async for chunk in response.aiter_raw():
                    chunks.append(chunk)
                    got_first.set()
                    got_first_here.set()
    body = b"".join(chunks)
    assert body == b"data: first\n\ndata: second\n\n"  # raw bytes: not gzipped
    assert response.status_code == 200
    headers = response.headers
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert "content-encoding" not in headers and "content-length" not in headers
    assert "etag" not in headers and HANDOFF_HEADER not in headers
    cookies = response.cookies
    assert "sessionid" in cookies and "csrftoken" in cookies
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-legacy"] == "sync"
    assert "Cookie" in headers["vary"]


async def test_other_responses_are_untouched_by_the_middleware() -> None:
    def page(request: Any) -> HttpResponse:
        return HttpResponse("<p>" + "hello " * 100 + "</p>")

    async with served({"/page": page}) as (url, _):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                response, body = await read_raw(
                    client, url + "/page", headers={"accept-encoding": "gzip"}
                )
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == ("<p>" + "hello " * 100 + "</p>").encode()


async def test_the_cache_middleware_never_caches_the_stand_in() -> None:
    """The stand-in is a streaming response, so UpdateCacheMiddleware leaves it alone even
    when the Stream allows caching: a cached empty stand-in would answer later requests with
    an empty 200."""
    calls = Record()

    def view(request: Any) -> Stream:
        calls(True)
        return Stream([f"call {len(calls)}"], headers={"cache-control": "public, max-age=60"})

    middleware = [
        "django.middleware.cache.UpdateCacheMiddleware",
        *FULL_MIDDLEWARE[:-1],
        "django.middleware.cache.FetchFromCacheMiddleware",
        OURS,
    ]
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(CACHES=caches):
        async with served({"/cached": view}, middleware=middleware) as (url, _):
            with anyio.fail_after(TIMEOUT):
                async with httpx.AsyncClient() as client:
                    for n in (1, 2):
                        events = await read_events(client, url + "/cached")
                        assert events == [("message", f"call {n}")]


# -- disconnect and shutdown ---------------------------------------------------------------


async def read_first_event_and_leave(client: httpx.AsyncClient, url: str) -> str:
    async with aconnect_sse(client, "GET", url) as source:
        async for sse in source.aiter_sse():
            return sse.data
    pytest.fail("the stream ended before the client could leave")


async def test_disconnect_stops_an_async_views_producer() -> None:
    closes = Record()
    finally_ran = Record()

    async def view(request: Any) -> Stream:
        async def forever() -> AsyncIterator[int]:
            try:
                n = 0
                while True:
                    yield n
                    n += 1
                    await anyio.sleep(0.01)
            finally:
                finally_ran(True)

        return track(Stream(forever()), closes)

    async with served({"/forever": view}) as (url, app):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                assert await read_first_event_and_leave(client, url + "/forever") == "0"
            assert await closes.wait() == ["disconnect"]
            assert await finally_ran.wait() == [True]
            await app.finished.wait()
            assert app.app.active == 0


async def test_disconnect_stops_a_sync_views_generator() -> None:
    closes = Record()
    finally_ran = ThreadRecord()
    used: list[Any] = []

    def view(request: Any) -> Stream:
        def forever() -> Iterator[int]:
            try:
                used.append(connections["default"])
                n = 0
                while True:
                    yield query(n)
                    n += 1
                    time.sleep(0.01)
            finally:
                finally_ran.from_thread(threading.current_thread())

        return track(Stream(forever()), closes)

    async with served({"/forever": view}) as (url, app):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                assert await read_first_event_and_leave(client, url + "/forever") == "0"
            assert await closes.wait() == ["disconnect"]
            (thread,) = await finally_ran.wait()  # the generator was closed in its thread
            await app.finished.wait()
            assert app.app.active == 0
            await anyio.to_thread.run_sync(thread.join, TIMEOUT)  # its thread then ends
    assert thread is not threading.current_thread() and not thread.is_alive()
    (wrapper,) = used
    assert wrapper.connection is None  # after closing the database connection it opened


async def test_disconnect_before_django_has_answered_still_stops_the_stream() -> None:
    """The client leaves after the view handed its Stream over but while an outer
    middleware still works on the stand-in: Django's handler reads that disconnect."""
    handed_over = Record()
    closes = Record()

    async def view(request: Any) -> Stream:
        stream = Stream(["never sent"])
        handed_over(True)
        return track(stream, closes)

    async with served(
        {"/slow": view}, middleware=[f"{__name__}.hold_response", *FULL_MIDDLEWARE]
    ) as (url, app):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
                tg.start_soon(client.get, url + "/slow")
                await handed_over.wait()
                tg.cancel_scope.cancel()  # the client leaves
            assert await closes.wait() == ["disconnect"]
            await app.finished.wait()
            assert app.app.active == 0


async def test_plain_wrap_disconnect_before_django_has_answered() -> None:
    """Same as above with ``StreamMiddleware(django_asgi_application())`` instead of the
    helper: the core drives the Stream for a client that has gone, and an endless source
    runs on until shutdown (the helper replays the disconnect to the driver)."""
    handed_over = Record()
    closes = Record()

    async def view(request: Any) -> Stream:
        async def forever() -> AsyncIterator[int]:
            while True:
                yield 1
                await anyio.sleep(0.01)

        handed_over(True)
        return track(Stream(forever()), closes)

    wrap = lambda: StreamMiddleware(django_asgi_application())  # noqa: E731
    middleware = [f"{__name__}.hold_response", *FULL_MIDDLEWARE]
    async with served({"/slow": view}, middleware=middleware, wrap=wrap) as (url, app):
        async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
            tg.start_soon(client.get, url + "/slow")
            with anyio.fail_after(TIMEOUT):
                await handed_over.wait()
            tg.cancel_scope.cancel()  # the client leaves
        with anyio.move_on_after(1):
            await closes.wait()
        try:
            assert closes.items == ["disconnect"]
        finally:
            await app.app.shutdown(grace=100)  # end the orphan


def hold_response(get_response: Any) -> Any:
    """An async middleware that never finishes with the response (until cancelled)."""

    async def middleware(request: Any) -> Any:
        response = await get_response(request)
        await anyio.sleep_forever()
        return response

    from asgiref.sync import markcoroutinefunction

    return markcoroutinefunction(middleware)


hold_response.async_capable = True  # type: ignore[attr-defined]
hold_response.sync_capable = False  # type: ignore[attr-defined]


async def test_shutdown_ends_a_django_stream_cleanly() -> None:
    closes = Record()

    async def view(request: Any) -> Stream:
        stream = Stream()
        stream.send("open")
        return track(stream, closes)

    async with served({"/open": view}) as (url, app):
        with anyio.fail_after(TIMEOUT):
            async with (
                httpx.AsyncClient() as client,
                aconnect_sse(client, "GET", url + "/open") as source,
            ):
                events = []
                async for sse in source.aiter_sse():
                    events.append(sse.data)
                    await app.app.shutdown(grace=1_000)
    assert events == ["open"] and closes.items == ["shutdown"]


# -- forged hand-overs ---------------------------------------------------------------------


async def test_forged_hand_overs_are_refused() -> None:
    def plain(request: Any) -> HttpResponse:
        return HttpResponse("plain body")

    def echo(request: Any) -> HttpResponse:
        # a view that copies the client's header (or an upstream's) onto its response
        response = HttpResponse("echoed body")
        response[HANDOFF_HEADER] = request.headers.get(HANDOFF_HEADER, "0" * 32)
        return response

    def stream_view(request: Any) -> Stream:
        return Stream(["real"])

    forged = {HANDOFF_HEADER: "0" * 32}
    views = {"/plain": plain, "/echo": echo, "/stream": stream_view}
    async with served(views) as (url, app):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                response = await client.get(url + "/plain", headers=forged)
                assert (response.status_code, response.text) == (200, "plain body")
                for headers in ({}, forged):
                    response = await client.get(url + "/echo", headers=headers)
                    assert (response.status_code, response.text) == (200, "echoed body")
                assert await read_events(client, url + "/stream", headers=forged) == [
                    ("message", "real")
                ]
            await app.finished.wait(4)
            assert app.app.active == 0


# -- missing pieces ------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # (no server: one run is enough)
async def test_the_helper_requires_the_django_middleware() -> None:
    middleware = [m for m in FULL_MIDDLEWARE if m != OURS]
    with override_settings(MIDDLEWARE=middleware), pytest.raises(ImproperlyConfigured) as info:
        get_asgi_application()
    assert f'add "{OURS}" as the last entry of settings.MIDDLEWARE' in str(info.value)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_helper_passes_stream_defaults_on() -> None:
    with override_settings(MIDDLEWARE=FULL_MIDDLEWARE):
        app = get_asgi_application(ping=None, max_buffer=4096)
    assert isinstance(app, StreamMiddleware) and (app.ping, app.max_buffer) == (None, 4096)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_django_middleware_must_be_last() -> None:
    middleware = [OURS, "django.middleware.common.CommonMiddleware"]
    with override_settings(MIDDLEWARE=middleware), pytest.raises(ImproperlyConfigured) as info:
        get_asgi_application()
    message = str(info.value)
    assert "must be the last entry" in message
    assert "django.middleware.common.CommonMiddleware" in message


async def test_without_the_asgi_middleware_a_stream_fails_at_once_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def view(request: Any) -> Stream:
        return Stream(["x"])

    async with served({"/stream": view}, wrap=django_asgi_application) as (url, _):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                response = await client.get(url + "/stream")
    assert response.status_code == 500
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ImproperlyConfigured]
    assert errors, caplog.text
    message = str(errors[0].exc_info[1])  # type: ignore[index]
    assert "no asgi_stream.StreamMiddleware handles this request" in message
    assert "asgi_stream.django.get_asgi_application()" in message


def test_under_wsgi_a_stream_fails_naming_what_to_use() -> None:
    def view(request: Any) -> Stream:
        return Stream(["x"])

    urlconf = URLConf({"/stream": view})
    with (
        override_settings(ROOT_URLCONF=urlconf, MIDDLEWARE=[OURS]),
        pytest.raises(ImproperlyConfigured, match="get_asgi_application"),
    ):
        Client().get("/stream")


async def test_a_stream_without_the_django_middleware_fails_at_once() -> None:
    """Wrapped by hand but not in MIDDLEWARE: Django's own middleware meet the Stream. The
    request fails at once (a 500, never a hang); the helper prevents this at startup."""

    def view(request: Any) -> Stream:
        return Stream(["x"])

    middleware = [m for m in FULL_MIDDLEWARE if m != OURS]
    wrap = lambda: StreamMiddleware(django_asgi_application())  # noqa: E731
    async with served({"/stream": view}, middleware=middleware, wrap=wrap) as (url, _):
        with anyio.fail_after(TIMEOUT):
            async with httpx.AsyncClient() as client:
                response = await client.get(url + "/stream")
    assert response.status_code == 500


# -- the example -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_example_app_streams_and_stops_cleanly() -> None:
    port = _free_port()
    example = ROOT / "examples" / "django_app.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reasons: list[CloseReason] = []
    process = await anyio.open_process(
        [sys.executable, str(example), "--port", str(port)], env=env, cwd=ROOT
    )
    try:
        with anyio.fail_after(TIMEOUT * 2):
            await _wait_listening(port)
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as client:
                async with aconnect_sse(client, "GET", url + "/clock") as source:
                    async for sse in source.aiter_sse():
                        assert sse.event == "tick"
                        break
                async with aconnect_sse(client, "GET", url + "/count?to=3") as source:
                    assert [sse.data async for sse in source.aiter_sse()] == ["1", "2", "3"]
                page = await client.get(url + "/")
                assert page.status_code == 200 and "EventSource" in page.text
                async with aconnect_sse(client, "GET", url + "/clock") as source:
                    async for _ in source.aiter_sse():
                        process.send_signal(signal.SIGINT)
                    reasons.append("shutdown")  # the server ended the stream cleanly
            assert await process.wait() == 0
            assert process.stdout is not None
            output = b"".join([chunk async for chunk in process.stdout])
            assert b"stopping: ending 1 open stream(s)" in output
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
    assert reasons == ["shutdown"]
