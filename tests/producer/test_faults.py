"""A producer that fails after the response started, in process (tests/peer.py): the events
so far, then a clean end of stream, the failure logged and ``on_close("error")``; an item that
cannot be encoded is such a failure, naming its type; errors of the server's own ``send`` or
``receive`` never escape as exception groups. (Before the first item: a ``500``,
tests/response/test_early_failures.py.)"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgi_stream import Stream
from tests.helpers import record
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_failure_after_start_ends_cleanly_with_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def flaky() -> AsyncIterator[str]:
        yield "one"
        yield "two"
        raise RuntimeError("midway")

    stream, peer = Stream(flaky()), Peer(path="/flaky")
    reasons = record(stream)
    with caplog.at_level(logging.ERROR, logger="asgi_stream"):
        await stream(peer.scope, peer.receive, peer.send)
    assert peer.status == 200
    assert peer.body == b"data: one\n\ndata: two\n\n"  # nothing sent before the error is lost
    assert peer.finished and reasons == ["error"]
    assert "/flaky" in caplog.text


async def test_callback_that_raises_ends_cleanly_with_error() -> None:
    async def callback(stream: Stream) -> None:
        stream.send("before")
        raise ValueError("bug")

    stream, peer = Stream(callback), Peer()
    reasons = record(stream)
    await stream(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: before\n\n" and peer.finished and reasons == ["error"]


async def test_unencodable_item_is_an_error_naming_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Opaque:
        pass

    stream, peer = Stream(["ok", Opaque()]), Peer()
    reasons = record(stream)
    with caplog.at_level(logging.ERROR, logger="asgi_stream"):
        await stream(peer.scope, peer.receive, peer.send)
    assert reasons == ["error"] and "Opaque" in caplog.text


async def test_server_errors_do_not_escape_as_exception_groups() -> None:
    async def failing_send(message: Any) -> None:
        raise RuntimeError("server bug")

    async def failing_receive() -> Any:
        raise RuntimeError("server bug")

    for send, receive in [(failing_send, Peer().receive), (Peer().send, failing_receive)]:
        stream = Stream(["a"])
        reasons = record(stream)
        with anyio.fail_after(5):
            await stream(Peer().scope, receive, send)  # returns: nothing escapes
        assert reasons in (["error"], ["disconnect"], ["complete"])
