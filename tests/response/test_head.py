"""HEAD must not run the producer (SPEC "Stream", "Wire format"): for a HEAD request the
response has the stream's status and headers and an empty body, and the source is left
alone: an awaitable is never awaited (it is closed unawaited: a coroutine's body never runs
and Python never warns that it was not awaited), an (async) iterator or generator is never
pulled, a callback is never called. ``on_close`` runs once.

Checked in process (raw ASGI, method ``HEAD``) and under a real hypercorn with httpx's
``client.head``."""

from __future__ import annotations

import gc
import inspect
import warnings
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream, StreamMiddleware
from tests.conftest import serve
from tests.helpers import TIMEOUT, FakeUpstream, Record, Served, track
from tests.peer import Peer

pytestmark = pytest.mark.anyio

KINDS = [
    "coroutine",
    "awaitable",
    "iterator",
    "generator",
    "async-iterator",
    "async-generator",
    "callback",
]
SSE = "text/event-stream; charset=utf-8"


class Probe:
    """What was done to a source: its body run (awaited, called), items pulled, closes."""

    def __init__(self) -> None:
        self.ran = 0
        self.pulled = 0
        self.closed = 0


class RecordingAwaitable:
    """An awaitable that is not a coroutine: records ``__await__`` and ``close()``."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def __await__(self) -> Generator[Any, None, list[str]]:
        self.probe.ran += 1
        if False:  # a generator that finishes at once
            yield
        return ["never sent"]

    def close(self) -> None:
        self.probe.closed += 1


class CountingIterator:
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        self.probe.pulled += 1
        return "never sent"


class CountingAsyncIterator:
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        self.probe.pulled += 1
        return "never sent"


def make_source(kind: str, probe: Probe) -> Any:
    """A source of the given kind that records in ``probe`` whatever is done to it."""
    if kind == "coroutine":

        async def reply() -> list[str]:
            probe.ran += 1
            return ["never sent"]

        return reply()
    if kind == "awaitable":
        return RecordingAwaitable(probe)
    if kind == "iterator":
        return CountingIterator(probe)
    if kind == "generator":

        def items() -> Iterator[str]:
            probe.ran += 1
            yield "never sent"

        return items()
    if kind == "async-iterator":
        return CountingAsyncIterator(probe)
    if kind == "async-generator":

        async def async_items() -> AsyncIterator[str]:
            probe.ran += 1
            yield "never sent"

        return async_items()
    assert kind == "callback"

    def callback(stream: Stream) -> None:
        probe.ran += 1
        stream.send("never sent")
        stream.close()

    return callback


def check_untouched(kind: str, probe: Probe, source: Any) -> None:
    assert probe.ran == 0, f"HEAD ran the {kind} source"
    assert probe.pulled == 0, f"HEAD pulled {probe.pulled} item(s) from the {kind} source"
    if kind == "coroutine":
        # closed without being awaited: Python has nothing to warn about
        assert inspect.getcoroutinestate(source) == inspect.CORO_CLOSED
    if kind == "awaitable":
        assert probe.closed == 1, "the awaitable was not closed"


@pytest.mark.parametrize("kind", KINDS)
async def test_head_in_process_leaves_the_source_alone(kind: str) -> None:
    probe = Probe()
    source = make_source(kind, probe)
    closes = Record()
    app = Served(lambda scope: track(Stream(source, status=201, headers={"x-kind": kind}), closes))
    peer = Peer(method="HEAD", path="/head")
    with anyio.fail_after(TIMEOUT):
        await app(peer.scope, peer.receive, peer.send)
        await closes.wait()
    assert peer.status == 201
    assert peer.headers[b"content-type"] == SSE.encode()
    assert peer.headers[b"cache-control"] == b"no-cache"
    assert peer.headers[b"x-kind"] == kind.encode()
    assert peer.body == b""
    assert peer.finished
    check_untouched(kind, probe, source)
    assert len(closes) == 1
    assert app.active == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_head_on_a_real_server_leaves_the_source_alone(kind: str) -> None:
    probes: list[Probe] = []
    sources: list[Any] = []
    closes = Record()

    def handler(scope: Any) -> Stream:
        assert scope["method"] == "HEAD"
        probes.append(Probe())
        sources.append(make_source(kind, probes[-1]))
        return track(Stream(sources[-1], headers={"x-kind": kind}), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response = await client.head(url + "/head")
            assert response.status_code == 200
            assert response.headers["content-type"] == SSE
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-kind"] == kind
            assert response.content == b""
            await app.finished.wait()
            await closes.wait()
    check_untouched(kind, probes[0], sources[0])
    assert len(closes) == 1
    assert app.active == 0


async def test_head_never_leaves_an_unawaited_coroutine_behind() -> None:
    """The coroutine is built in the handler and nothing else keeps it: once the request is
    done and garbage collected, Python must not warn "coroutine ... was never awaited"."""
    ran = Record()
    closes = Record()

    def handler(scope: Any) -> Stream:
        async def reply() -> list[str]:
            ran(True)
            return ["never sent"]

        return track(Stream(reply()), closes)

    app = Served(handler)
    peer = Peer(method="HEAD")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with anyio.fail_after(TIMEOUT):
            await app(peer.scope, peer.receive, peer.send)
            await closes.wait()
        gc.collect()
    assert ran.items == [], "HEAD awaited the coroutine"
    never_awaited = [w for w in caught if "never awaited" in str(w.message)]
    assert never_awaited == []
    assert peer.status == 200 and peer.body == b"" and peer.finished
    assert len(closes) == 1


async def test_head_request_sends_headers_only() -> None:
    peer = Peer(method="HEAD")
    await Stream(["a", "b"])(peer.scope, peer.receive, peer.send)
    assert peer.status == 200 and peer.body == b"" and peer.finished


async def test_head_runs_no_producer_and_writes_no_body() -> None:
    ran = []
    upstream = FakeUpstream([b"data: x\n\n"])
    for source in (lambda s: ran.append(s), upstream):
        peer = Peer(method="HEAD")
        await Stream(source, retry=1000)(peer.scope, peer.receive, peer.send)
        assert peer.status == 200 and peer.body == b"" and peer.finished
    assert ran == [] and upstream.closed.is_set()


async def test_head_request_gets_headers_and_no_body() -> None:
    closes = Record()
    results = Record()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            results(stream.send("ignored"))
            stream.close()

        return track(Stream(callback, headers={"x-custom": "yes"}), closes)

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            response = await client.head(url)
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["x-custom"] == "yes"
            assert response.content == b""
            assert await closes.wait() == ["complete"]


async def test_a_head_cut_off_before_its_headers_were_written_is_not_complete() -> None:
    """The server never takes the response start (a stuck write); the shutdown's grace runs
    out: the stream was cut off, as the same GET would be."""

    class Stuck(Peer):
        stuck = anyio.Event()

        async def send(self, message: Any) -> None:
            if message["type"] == "http.response.start":
                self.stuck.set()
                await anyio.sleep_forever()
            await super().send(message)

    for method in ("GET", "HEAD"):
        stream = Stream()
        reasons: list[str] = []
        stream.on_close(reasons.append)

        async def app(scope: Any, receive: Any, send: Any, stream: Stream = stream) -> Stream:
            return stream

        middleware = StreamMiddleware(app)
        peer = Stuck(method=method)
        peer.stuck = anyio.Event()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(middleware, peer.scope, peer.receive, peer.send)
                await peer.stuck.wait()
                await middleware.shutdown(grace=100)
        assert peer.start is None, method
        assert reasons == ["shutdown"], method
