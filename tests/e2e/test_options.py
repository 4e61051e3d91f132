"""Stream options as a real client sees them over hypercorn."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Served, read_raw

pytestmark = pytest.mark.anyio


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


async def test_single_string_source_is_one_event() -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(lambda scope: Stream("whole string"))) as url,
            httpx.AsyncClient() as client,
        ):
            _response, body = await read_raw(client, url)
    assert body == b"data: whole string\n\n"
