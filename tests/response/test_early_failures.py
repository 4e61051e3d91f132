"""A source that fails before its first item gives a ``500`` (``text/plain``, a short body),
the failure is logged with the request path and ``on_close("error")`` runs: a generator, an
async generator, a rejected awaitable, a first item that cannot be encoded. In process and
under a real hypercorn. (Failures after the first item: tests/producer/test_faults*.py; an
upstream status outside 2xx, a ``502``: test_proxy*.py here.)"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, record, track
from tests.peer import Peer

pytestmark = pytest.mark.anyio


async def test_generator_failing_before_its_first_item_gives_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> AsyncIterator[str]:
        raise RuntimeError("no first item")
        yield "never"

    stream, peer = Stream(broken()), Peer(path="/llm")
    reasons = record(stream)
    with caplog.at_level(logging.ERROR, logger="asgi_stream"):
        await stream(peer.scope, peer.receive, peer.send)
    assert peer.status == 500 and peer.finished
    assert reasons == ["error"]
    assert "/llm" in caplog.text and "no first item" in caplog.text


async def test_rejected_awaitable_gives_500() -> None:
    async def rejected() -> list[str]:
        raise ConnectionError("upstream down")

    peer = Peer()
    await Stream(rejected())(peer.scope, peer.receive, peer.send)
    assert peer.status == 500


async def test_a_first_item_that_cannot_be_encoded_gives_500() -> None:
    peer = Peer()
    await Stream([object()])(peer.scope, peer.receive, peer.send)
    assert peer.status == 500


class Boom(Exception):
    pass


async def _failing_agen() -> Any:
    await anyio.lowlevel.checkpoint()
    raise Boom("before the first item")
    yield "unreachable"


def _failing_gen() -> Any:
    raise Boom("before the first item")
    yield "unreachable"


async def _failing_coroutine() -> list[str]:
    await anyio.lowlevel.checkpoint()
    raise Boom("the request failed")


async def _coroutine_of_failing_agen() -> Any:
    await anyio.lowlevel.checkpoint()
    return _failing_agen()


EARLY_FAILURES = {
    "async-generator": _failing_agen,
    "generator": _failing_gen,
    "awaitable": _failing_coroutine,
    "awaitable-of-async-generator": _coroutine_of_failing_agen,
}


@pytest.mark.parametrize("kind", list(EARLY_FAILURES))
async def test_source_failing_before_first_item_is_500(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    closes = Record()

    def handler(scope: Any) -> Stream:
        return track(Stream(EARLY_FAILURES[kind]()), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/early-boom")
            assert response.status_code == 500
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            assert body == b"Internal Server Error\n"
            assert await closes.wait() == ["error"]
            await app.finished.wait()
            assert app.active == 0
    failures = [r for r in caplog.records if r.name == "asgi_stream" and r.exc_info]
    assert failures, "the failure was not logged"
    assert "/early-boom" in failures[0].getMessage()
    assert isinstance(failures[0].exc_info[1], Boom)  # type: ignore[index]
