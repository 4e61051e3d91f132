"""The request's ``Last-Event-ID`` is ``stream.last_event_id`` (``None`` without one): known
to a callback, and already when the handler builds the Stream under the middleware; in process
and as a real client sends it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import Stream, StreamMiddleware
from tests.conftest import serve
from tests.helpers import TIMEOUT, Served
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_last_event_id_comes_from_the_request() -> None:
    seen: list[str | None] = []

    def callback(stream: Stream) -> None:
        seen.append(stream.last_event_id)
        stream.close()

    peer = Peer(headers=[(b"last-event-id", b"41")])
    await Stream(callback)(peer.scope, peer.receive, peer.send)
    assert seen == ["41"]


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


@pytest.mark.parametrize("last_event_id", ["42", None])
async def test_last_event_id_request_header(last_event_id: str | None) -> None:
    def handler(scope: Any) -> Stream:
        def callback(stream: Stream) -> None:
            stream.send({"resume_after": stream.last_event_id})
            stream.close()

        return Stream(callback)

    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(handler)) as url,
            httpx.AsyncClient() as client,
            aconnect_sse(client, "GET", url, headers=headers) as source,
        ):
            data = [json.loads(sse.data) async for sse in source.aiter_sse()]
    assert data == [{"resume_after": last_event_id}]
