"""The client leaves mid-stream under a real hypercorn: every kind of producer is stopped,
``on_close`` says "disconnect" and the middleware forgets the stream."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, proxy_handler, read_first_line_and_leave, track

pytestmark = pytest.mark.anyio

FORMS = ["awaitable", "opened"]  # the proxy's upstream: send(...) awaited by the Stream, or opened


async def test_disconnect_cancels_callback() -> None:
    never = anyio.Event()
    closes = Record()
    cancelled = Record()
    finally_ran = Record()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            try:
                stream.send("first")
                await never.wait()
                stream.send("never sent")
            except anyio.get_cancelled_exc_class():
                cancelled(True)
                raise
            finally:
                finally_ran(True)

        return track(Stream(callback), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            await read_first_line_and_leave(client, url + "/callback", "data: first")
            assert await closes.wait() == ["disconnect"]
            assert await cancelled.wait() == [True]
            assert await finally_ran.wait() == [True]
            assert await app.finished.wait() == ["/callback"]
            assert app.active == 0


async def test_disconnect_closes_async_generator() -> None:
    never = anyio.Event()
    closes = Record()
    finally_ran = Record()
    generators: list[Any] = []

    def handler(scope: Any) -> Stream:
        async def source() -> Any:
            try:
                for n in range(1_000):
                    if n == 1:
                        await never.wait()
                    yield n
            finally:
                finally_ran(True)

        gen = source()
        generators.append(gen)
        return track(Stream(gen), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            await read_first_line_and_leave(client, url + "/gen", "data: 0")
            assert await closes.wait() == ["disconnect"]
            assert await finally_ran.wait() == [True]
            await app.finished.wait()
            assert generators[0].ag_frame is None  # finished: nothing left to resume
            assert app.active == 0


class Ticker:
    """A hand-written async iterator (not a generator) with ``aclose``: one item, then it
    blocks until released. Records whether it was closed and whether it was cancelled."""

    def __init__(self, release: anyio.Event) -> None:
        self.release = release
        self.count = 0
        self.acloses = Record()
        self.cancelled = Record()

    def __aiter__(self) -> Ticker:
        return self

    async def __anext__(self) -> str:
        self.count += 1
        if self.count > 1:
            try:
                await self.release.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled(True)
                raise
        if self.count > 3:
            raise StopAsyncIteration
        return f"tick {self.count}"

    async def aclose(self) -> None:
        self.acloses(True)


async def test_disconnect_calls_aclose_on_async_iterator() -> None:
    never = anyio.Event()
    closes = Record()
    tickers: list[Ticker] = []

    def handler(scope: Any) -> Stream:
        ticker = Ticker(never)
        tickers.append(ticker)
        return track(Stream(ticker), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            await read_first_line_and_leave(client, url + "/ticker", "data: tick 1")
            assert await closes.wait() == ["disconnect"]
            (ticker,) = tickers
            assert await ticker.cancelled.wait() == [True]
            assert await ticker.acloses.wait() == [True]
            await app.finished.wait()
            assert app.active == 0


async def test_disconnect_stops_value_based_producer() -> None:
    """A producer task that owns a value-based Stream learns of the disconnect through
    ``send`` returning ``False`` (it never raises) and stops."""
    closes = Record()
    producer_stopped = Record()
    client_left = anyio.Event()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as producers:

            def handler(scope: Any) -> Stream:
                stream = track(Stream(), closes)

                async def produce() -> None:
                    assert stream.send(0)
                    await client_left.wait()
                    for n in range(1, 1_000):  # bounded
                        if not stream.send(n):
                            producer_stopped(n)
                            return
                        await stream.wait(5)
                    producer_stopped(None)

                producers.start_soon(produce)
                return stream

            app = Served(handler)
            async with serve(app) as url, httpx.AsyncClient() as client:
                await read_first_line_and_leave(client, url + "/values", "data: 0")
                client_left.set()
                assert await closes.wait() == ["disconnect"]
                (stopped_at,) = await producer_stopped.wait()
                assert stopped_at is not None
                await app.finished.wait()
                assert app.active == 0


async def test_disconnect_while_awaitable_pending_cancels_it() -> None:
    """The client gives up before the awaitable source (say, an LLM request) has resolved:
    the awaitable is cancelled, no response is started, ``on_close("disconnect")`` runs."""
    never = anyio.Event()
    closes = Record()
    pending = anyio.Event()
    cancelled = Record()

    def handler(scope: Any) -> Stream:
        async def slow_request() -> list[str]:
            pending.set()
            try:
                await never.wait()
            except anyio.get_cancelled_exc_class():
                cancelled(True)
                raise
            return ["never"]

        return track(Stream(slow_request()), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with anyio.create_task_group() as tg:

                async def request() -> None:
                    await client.get(url + "/pending")
                    pytest.fail("the request was answered")

                tg.start_soon(request)
                await pending.wait()
                tg.cancel_scope.cancel()  # the client gives up: its connection is closed
            assert await closes.wait() == ["disconnect"]
            assert await cancelled.wait() == [True]
            await app.finished.wait()
            assert app.active == 0


async def test_disconnect_of_one_client_leaves_others_streaming() -> None:
    """Two clients on the same stream endpoint; one leaves, the other gets everything."""
    closes = Record()
    go_on = anyio.Event()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send("first")
            await go_on.wait()
            stream.send("second")
            stream.close()

        return track(Stream(callback), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient() as stayer,
            httpx.AsyncClient() as leaver,
        ):
            async with stayer.stream("GET", url + "/stay") as response:
                lines = response.aiter_lines()
                assert await anext(lines) == "data: first"
                await read_first_line_and_leave(leaver, url + "/leave", "data: first")
                assert await closes.wait() == ["disconnect"]
                assert await app.finished.wait() == ["/leave"]
                assert app.active == 1
                go_on.set()
                rest = [line async for line in lines]
            assert rest == ["", "data: second", ""]
            assert await closes.wait(2) == ["disconnect", "complete"]
            await app.finished.wait(2)
            assert app.active == 0


@pytest.mark.parametrize("form", FORMS)
async def test_proxy_client_disconnect_closes_upstream(form: str) -> None:
    """The client leaves mid-stream: the upstream response is closed, so the upstream server
    sees a disconnect and its producer stops."""
    never = anyio.Event()
    upstream_closes = Record()
    upstream_finally = Record()
    upstream_started = Record()

    def upstream_handler(scope: Any) -> Stream:
        async def events() -> Any:
            upstream_started(True)
            try:
                yield b"data: first\n\n"
                await never.wait()  # an LLM still thinking
                yield b"data: never sent\n\n"
            finally:
                upstream_finally(True)

        return track(Stream(events()), upstream_closes)

    closes = Record()
    opened: list[Any] = []
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(upstream_handler)) as upstream_url,
            httpx.AsyncClient() as upstream,
        ):
            app = Served(proxy_handler(upstream, upstream_url, form, closes, opened))
            async with serve(app) as url, httpx.AsyncClient() as client:
                async with client.stream("GET", url + "/events") as response:
                    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                    async for line in response.aiter_lines():
                        assert line == "data: first"
                        break
                assert await closes.wait() == ["disconnect"]
                assert await upstream_closes.wait() == ["disconnect"]
                assert await upstream_finally.wait() == [True]
                assert len(upstream_started) == 1
                await app.finished.wait()
                assert app.active == 0
                if form == "opened":
                    assert opened[0].is_closed
