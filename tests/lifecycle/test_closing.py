"""Closing a Stream: ``close()`` is idempotent and ``send()`` after it returns ``False`` (never
raises, whatever the data); ``on_close`` takes a callable only."""

from __future__ import annotations

import pytest

from asgi_stream import Stream


def test_send_returns_false_once_closed_and_close_is_idempotent() -> None:
    stream = Stream()
    assert stream.send("a") is True and not stream.closed
    stream.close()
    stream.close()
    assert stream.closed
    assert stream.send("b") is False
    assert stream.send(None) is False
    assert stream.send(object()) is False  # a closed stream never raises, whatever the data
    assert stream.producer.queue.frames == [b"data: a\n\n"]


def test_on_close_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Stream().on_close("not callable")  # type: ignore[arg-type]
