"""The wire format as the driver writes it, in process (tests/peer.py): the retry frame first,
the stream-level event name, the ndjson and text formats."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_stream import ServerSentEvent, Stream
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_retry_is_the_first_frame_and_stream_event_names_data_events() -> None:
    peer = Peer()
    stream = Stream(
        ["a", ServerSentEvent(comment="c"), ServerSentEvent("b", event="own")],
        event="msg",
        retry=3000,
    )
    await stream(peer.scope, peer.receive, peer.send)
    assert peer.body == (b"retry: 3000\n\nevent: msg\ndata: a\n\n: c\n\nevent: own\ndata: b\n\n")


@pytest.mark.parametrize(
    ("fmt", "items", "content_type", "body"),
    [
        ("ndjson", [{"a": 1}, "s", [1]], b"application/x-ndjson", b'{"a":1}\n"s"\n[1]\n'),
        ("text", ["a\n", b"b", "é"], b"text/plain; charset=utf-8", "a\nbé".encode()),
    ],
)
async def test_other_formats(fmt: Any, items: list[Any], content_type: bytes, body: bytes) -> None:
    peer = Peer()
    await Stream(items, format=fmt)(peer.scope, peer.receive, peer.send)
    assert peer.headers[b"content-type"] == content_type and peer.body == body
