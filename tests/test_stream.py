"""The Stream object without a driver: options, validation, send/close semantics, value."""

from __future__ import annotations

import pytest

from asgi_stream import Stream


def test_none_and_empty_string_send_nothing() -> None:
    stream = Stream()
    assert stream.send(None) and stream.send("")
    assert stream.producer.queue.frames == []


def test_unencodable_data_raises_type_error_naming_the_type() -> None:
    class Widget:
        pass

    with pytest.raises(TypeError, match="Widget"):
        Stream().send(Widget())
