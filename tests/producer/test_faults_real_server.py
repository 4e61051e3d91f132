"""Producer failures after the first item under a real hypercorn: the events so far and a clean
end of stream (the connection stays usable), ``on_close("error")``; an upstream that dies
midway included. (Before the first item, a 500 or 502: tests/response/.)"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import Stream
from tests.conftest import answer_lifespan, serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def _agen_failing_after_two() -> Any:
    yield "one"
    yield "two"
    await anyio.lowlevel.checkpoint()
    raise Boom("midway")


def _gen_failing_after_two() -> Any:
    yield "one"
    yield "two"
    raise Boom("midway")


def _callback_failing_after_two(stream: Stream) -> Any:
    async def run() -> None:
        stream.send("one")
        await anyio.lowlevel.checkpoint()
        stream.send("two")
        raise Boom("midway")

    return run()


def _local_port(response: httpx.Response) -> int:
    network_stream = response.extensions["network_stream"]
    return int(network_stream.get_extra_info("client_addr")[1])


LATE_FAILURES = {
    "async-generator": lambda: _agen_failing_after_two(),
    "generator": lambda: _gen_failing_after_two(),
    "callback": lambda: _callback_failing_after_two,
}


@pytest.mark.parametrize("kind", list(LATE_FAILURES))
async def test_producer_failing_midway_ends_stream_cleanly(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    closes = Record()

    def handler(scope: Any) -> Stream:
        return track(Stream(LATE_FAILURES[kind]()), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            # A response cut off without its final chunk raises httpx.RemoteProtocolError.
            async with aconnect_sse(client, "GET", url + "/late-boom") as source:
                assert source.response.status_code == 200
                first_port = _local_port(source.response)
                data = [sse.data async for sse in source.aiter_sse()]
            assert data == ["one", "two"]
            assert await closes.wait() == ["error"]
            await app.finished.wait()
            assert app.active == 0
            # The connection was left in a clean state: it is reused for the next request.
            async with aconnect_sse(client, "GET", url + "/late-boom") as source:
                assert _local_port(source.response) == first_port
                assert [sse.data async for sse in source.aiter_sse()] == ["one", "two"]
    failures = [r for r in caplog.records if r.name == "asgi_stream" and r.exc_info]
    assert failures, "the failure was not logged"
    assert "/late-boom" in failures[0].getMessage()


async def test_callback_raising_at_once_still_ends_cleanly() -> None:
    """A callback stream has already answered 200 when its callback runs: a callback that
    raises at once gives an empty, cleanly ended stream and ``on_close("error")``."""
    closes = Record()

    def handler(scope: Any) -> Stream:
        def callback(stream: Stream) -> None:
            raise Boom("at once")

        return track(Stream(callback), closes)

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url)
            assert response.status_code == 200
            assert body == b""
            assert await closes.wait() == ["error"]


async def test_proxy_upstream_dying_midway_ends_our_stream_cleanly() -> None:
    """The upstream connection breaks after one event: our client gets that event and a clean
    end of stream (not a hang, not a cut connection), and ``on_close("error")`` runs."""
    client_got_first = anyio.Event()

    async def dying_upstream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await client_got_first.wait()
        # returning without the final body: hypercorn cuts the connection

    closes = Record()
    with anyio.fail_after(TIMEOUT):
        async with serve(dying_upstream) as upstream_url, httpx.AsyncClient() as upstream:

            def handler(scope: Any) -> Stream:
                request = upstream.build_request("GET", upstream_url)
                return track(Stream(upstream.send(request, stream=True)), closes)

            app = Served(handler)
            async with serve(app) as url, httpx.AsyncClient() as client:
                async with client.stream("GET", url) as response:
                    lines = []
                    async for line in response.aiter_lines():
                        lines.append(line)
                        client_got_first.set()
                assert lines == ["data: one", ""]
                assert await closes.wait() == ["error"]
                await app.finished.wait()
                assert app.active == 0
