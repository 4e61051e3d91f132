"""A pydantic model that cannot be serialised is a ``TypeError`` naming the model's type
(SPEC "Wire format": "an object that cannot be encoded raises ``TypeError`` naming its
type"), with pydantic's own error chained as its cause; from ``Stream.send`` (sse and
ndjson) and from a ``ServerSentEvent`` carrying the model. In automatic mode such an item
fails the stream before the response started: a ``500``.

The encoding checks need no event loop: plain ``def`` tests, run once. The stream checks
run on asyncio and trio, in process and under a real hypercorn."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from asgi_stream import ServerSentEvent, Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track
from tests.peer import Peer


class Opaque(BaseModel):
    """``Any`` accepts an arbitrary object, which pydantic cannot serialise to JSON."""

    value: Any


def unserialisable() -> list[Opaque]:
    models = [Opaque(value=object()), Opaque(value={object()})]
    for model in models:  # the premise: pydantic itself refuses them
        with pytest.raises(PydanticSerializationError):
            model.model_dump_json()
    return models


def send_error(stream: Stream, data: Any, **fields: Any) -> Exception:
    """What ``stream.send(data, **fields)`` raises (the test fails if it raises nothing)."""
    try:
        stream.send(data, **fields)
    except Exception as exc:
        return exc
    raise AssertionError(f"send({data!r}) did not raise")


def check_error(error: BaseException) -> None:
    assert isinstance(error, TypeError), f"{type(error).__name__} is not a TypeError"
    assert "Opaque" in str(error)
    assert isinstance(error.__cause__, PydanticSerializationError)


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_send_raises_a_type_error_naming_the_model(fmt: Any) -> None:
    for model in unserialisable():
        check_error(send_error(Stream(format=fmt), model))


def test_send_with_fields_raises_a_type_error_naming_the_model() -> None:
    stream = Stream(event="tick")
    for model in unserialisable():
        check_error(send_error(stream, model, id="1", event="other"))


def test_a_server_sent_event_carrying_the_model_raises_at_send() -> None:
    stream = Stream()
    for model in unserialisable():
        check_error(send_error(stream, ServerSentEvent(model, event="tick", id="7")))


def test_nothing_is_queued_and_the_stream_stays_usable() -> None:
    stream = Stream(format="ndjson")
    check_error(send_error(stream, unserialisable()[0]))
    assert not stream.closed
    assert stream.send({"ok": True}) is True


# -- automatic mode: the first item fails before the response started --------------------


def logged_type_error(records: list[logging.LogRecord]) -> bool:
    """Whether a logged failure of the stream is the TypeError naming the model."""
    for record in records:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            if isinstance(error, TypeError) and "Opaque" in str(error):
                return True
    return False


@pytest.mark.anyio
async def test_automatic_mode_gives_a_500_in_process(caplog: pytest.LogCaptureFixture) -> None:
    closes = Record()
    app = Served(lambda scope: track(Stream(unserialisable()), closes))
    peer = Peer()
    with caplog.at_level(logging.ERROR, logger="asgi_stream"), anyio.fail_after(TIMEOUT):
        await app(peer.scope, peer.receive, peer.send)
        assert await closes.wait() == ["error"]
    assert peer.status == 500
    assert peer.headers[b"content-type"].startswith(b"text/plain")
    assert peer.finished
    assert logged_type_error(caplog.records), "the logged failure is not the TypeError"


@pytest.mark.anyio
async def test_automatic_mode_gives_a_500_to_a_real_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closes = Record()

    async def models() -> Any:
        for model in unserialisable():
            yield model

    app = Served(lambda scope: track(Stream(models(), format="ndjson"), closes))
    with caplog.at_level(logging.ERROR, logger="asgi_stream"), anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/models")
            assert await closes.wait() == ["error"]
            await app.finished.wait()
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert b"Opaque" not in body  # details go to the log, not to the client
    assert logged_type_error(caplog.records), "the logged failure is not the TypeError"
