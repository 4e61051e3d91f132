"""Bad Stream options and bad event fields are refused where they are given, naming them:
options when the Stream is built, fields when ``send()`` is called (nothing is queued and the
stream stays usable). No event loop: plain ``def`` tests, run once."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_stream import Stream


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"format": "xml"}, ValueError, "format"),
        ({"status": 99}, ValueError, "status"),
        ({"status": "200"}, ValueError, "status"),
        ({"retry": -1}, ValueError, "retry"),
        ({"retry": 1.5}, ValueError, "retry"),
        ({"event": "a\nb"}, ValueError, "event"),
        ({"event": 3}, TypeError, "event"),
        ({"ping": -5}, ValueError, "ping"),
        ({"max_buffer": 0}, ValueError, "max_buffer"),
        ({"headers": {"Connection": "close"}}, ValueError, "connection"),
        ({"headers": {"X-A": "a\r\nSet-Cookie: x"}}, ValueError, "header"),
        ({"format": "ndjson", "event": "x"}, TypeError, "format"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs: dict[str, Any], error: type, names: str) -> None:
    with pytest.raises(error, match=names):
        Stream(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"event": "x\ry"}, ValueError, "event"),
        ({"id": "1\n2"}, ValueError, "id"),
        ({"id": "1\x002"}, ValueError, "id"),
        ({"retry": -3}, ValueError, "retry"),
        ({"retry": True}, ValueError, "retry"),
    ],
)
def test_bad_fields_raise_at_send_time(kwargs: dict[str, Any], error: type, names: str) -> None:
    stream = Stream()
    with pytest.raises(error, match=names):
        stream.send("data", **kwargs)
    assert stream.producer.queue.frames == [] and not stream.closed
