"""Statuses that cannot carry a body are refused (SPEC "Stream": ``status``): a stream is a
body, and 204 No Content, 205 Reset Content and 304 Not Modified have none, so
``Stream(status=...)`` (and ``asgi_stream.starlette.Stream``'s ``status_code``) raises a
``ValueError`` naming ``status`` and the value instead of silently dropping every event.
Every other status from 200 to 599 is still accepted and sent (in process and under a real
hypercorn).

(Not checked here: keep-alive after such a response. hypercorn drops the body of a 204
itself and keeps the connection usable, so that check cannot fail under it.)

The construction checks need no event loop: plain ``def`` tests, run once."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from asgi_stream.starlette import Stream as StarletteStream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track
from tests.peer import Peer

BODILESS = [204, 205, 304]
ACCEPTED = [201, 206, 404]


@pytest.mark.parametrize("status", BODILESS)
def test_a_status_without_a_body_is_refused(status: int) -> None:
    with pytest.raises(ValueError, match="status") as caught:
        Stream(["never sent"], status=status)
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", BODILESS)
def test_a_status_without_a_body_is_refused_in_every_mode(status: int) -> None:
    for source in (None, lambda stream: None, ["x"]):
        with pytest.raises(ValueError, match="status") as caught:
            Stream(source, status=status)
        assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", BODILESS)
def test_starlette_stream_refuses_it_at_construction(status: int) -> None:
    with pytest.raises(ValueError, match="status") as caught:
        StarletteStream(["never sent"], status=status)
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", BODILESS)
def test_starlette_status_code_setter_refuses_it(status: int) -> None:
    stream = StarletteStream(["x"])
    with pytest.raises(ValueError, match="status") as caught:
        stream.status_code = status
    assert str(status) in str(caught.value)
    assert stream.status_code == 200  # unchanged


@pytest.mark.parametrize("status", [200, 201, 206, 299, 300, 404, 503, 599])
def test_other_statuses_are_accepted(status: int) -> None:
    assert Stream(status=status).status == status
    stream = StarletteStream()
    stream.status_code = status
    assert stream.status_code == status == stream.status


# -- accepted statuses still work end to end -----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", ACCEPTED)
async def test_an_accepted_status_is_sent_in_process(status: int) -> None:
    closes = Record()
    app = Served(lambda scope: track(Stream(["one", "two"], status=status), closes))
    peer = Peer()
    with anyio.fail_after(TIMEOUT):
        await app(peer.scope, peer.receive, peer.send)
        assert await closes.wait() == ["complete"]
    assert peer.status == status
    assert peer.body == b"data: one\n\ndata: two\n\n"
    assert peer.finished


@pytest.mark.anyio
@pytest.mark.parametrize("status", ACCEPTED)
async def test_an_accepted_status_reaches_a_real_client(status: int) -> None:
    closes = Record()
    app = Served(lambda scope: track(Stream(["one", "two"], status=status), closes))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/status")
            assert response.status_code == status
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert body == b"data: one\n\ndata: two\n\n"
            assert await closes.wait() == ["complete"]
            await app.finished.wait()
            assert app.active == 0


@pytest.mark.anyio
async def test_a_handler_learns_of_the_refusal_and_the_connection_keeps_serving() -> None:
    """The refusal happens where the handler builds the Stream, so it can answer otherwise;
    the next request on the same keep-alive connection is served as usual."""
    refused: list[str] = []

    def handler(scope: Any) -> Stream:
        if scope["path"] == "/no-content":
            try:
                Stream(["never sent"], status=204)
            except ValueError as exc:
                refused.append(str(exc))
            return Stream(["fallback"], status=200)
        return Stream(["next"])

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as client,
        ):
            first, first_body = await read_raw(client, url + "/no-content")
            second, second_body = await read_raw(client, url + "/next")
    assert len(refused) == 1 and "204" in refused[0]
    assert (first.status_code, first_body) == (200, b"data: fallback\n\n")
    assert (second.status_code, second_body) == (200, b"data: next\n\n")
