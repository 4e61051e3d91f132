"""The wire format (SPEC "Wire format"), checked byte-for-byte and against an independent
WHATWG event-stream parser (tests/sse_parser.py). All synchronous: no event loop."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import re
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_stream import ServerSentEvent, Stream
from asgi_stream.wire import (
    PING,
    encode_comment,
    encode_ndjson,
    encode_retry,
    encode_sse,
    encode_text,
    json_dumps,
    normalize_headers,
)
from tests.sse_parser import Event, parse

_EOL = re.compile(r"\r\n|\r|\n")


def lines(text: str) -> list[str]:
    return _EOL.split(text)


def as_client_sees(text: str) -> str:
    """SSE data cannot carry CR: every line break reaches the client as LF."""
    return "\n".join(lines(text))


def one_event(frame: bytes) -> Event:
    """The frame is complete and dispatches exactly one event."""
    result = parse(frame)
    assert result.tail == "" and result.pending == [], f"unterminated frame: {frame!r}"
    assert len(result.events) == 1, f"expected one event in {frame!r}, got {result.events}"
    return result.events[0]


def field_names(frame: bytes) -> list[str]:
    return [name for name, _ in parse(frame).fields]


def frames_of(stream: Stream) -> list[bytes]:
    return list(stream.producer.queue.frames)


# --------------------------------------------------------------------------------------
# The oracle itself: the WHATWG examples and rules, so a passing wire test means something.


def test_parser_whatwg_examples() -> None:
    result = parse(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert [e.data for e in result.events] == ["YHOO\n+2\n10"]

    result = parse(
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    assert result.comments == ["test stream"]
    assert [(e.data, e.last_event_id) for e in result.events] == [
        ("first event", "1"),
        ("second event", ""),
        (" third event", ""),
    ]

    result = parse(b"data\n\ndata\ndata\n\ndata:")
    assert [e.data for e in result.events] == ["", "\n"]
    assert result.tail == "data:"

    assert [e.data for e in parse(b"data:test\n\ndata: test\n\n").events] == ["test", "test"]


def test_parser_line_endings_bom_and_ignored_fields() -> None:
    stream = b"\xef\xbb\xbfdata: a\r\ndata: b\rdata: c\n\r\n"
    assert [e.data for e in parse(stream).events] == ["a\nb\nc"]
    # only CR and LF end lines; U+2028 and NEL do not
    assert [e.data for e in parse("data: a\u2028b\x85c\n\n".encode()).events] == ["a\u2028b\x85c"]
    result = parse(b"id: 1\x002\nretry: 1.5\nretry: x\nfoo: bar\nevent: e\ndata: d\n\n")
    assert result.events == [Event(data="d", event="e", id=None, last_event_id="", retry=None)]
    assert ("foo", "bar") in result.fields
    # no data: nothing dispatched, but the id still becomes the last event id
    result = parse(b"id: 7\nevent: e\n\ndata: x\n\n")
    assert result.events == [Event(data="x", event=None, id=None, last_event_id="7")]
    assert parse(b"retry: 3000\n\n").retry == 3000


# --------------------------------------------------------------------------------------
# The encoding table: str


def test_str_is_one_data_line() -> None:
    assert encode_sse("hello") == b"data: hello\n\n"
    assert one_event(encode_sse("hello")) == Event(data="hello")


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\r\n\r\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\n\rb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\n", b"data: a\ndata: \n\n"),
        ("\n", b"data: \ndata: \n\n"),
        ("\r\n", b"data: \ndata: \n\n"),
        ("\nx", b"data: \ndata: x\n\n"),
    ],
)
def test_str_one_data_line_per_line(text: str, wire: bytes) -> None:
    assert encode_sse(text) == wire
    assert one_event(wire).data == as_client_sees(text)


def test_str_cannot_inject_fields_or_events() -> None:
    """Known fault: newlines in data were not split, so a string could inject fields/events."""
    evil = "hello\n\nevent: evil\nid: 666\nretry: 1\n\rdata: x\r\n"
    frame = encode_sse(evil)
    event = one_event(frame)
    assert event == Event(data=as_client_sees(evil))
    assert set(field_names(frame)) == {"data"}
    assert parse(frame).retries == []


def test_str_containing_field_names_is_data() -> None:
    """Known fault: any string containing ``id:`` was written raw."""
    assert encode_sse("id: 5") == b"data: id: 5\n\n"
    assert encode_sse(": not a comment") == b"data: : not a comment\n\n"
    assert one_event(encode_sse("retry: 10")).data == "retry: 10"


@pytest.mark.parametrize("text", ["a\u2028b", "a\u2029b", "a\x85b", "a\x00b", "\x0b\x0c", " lead"])
def test_str_other_characters_stay_on_one_line(text: str) -> None:
    frame = encode_sse(text)
    assert frame == b"data: " + text.encode() + b"\n\n"
    assert one_event(frame).data == text


def test_str_is_utf8() -> None:
    assert encode_sse("héllo ☃ 🎉") == "data: héllo ☃ 🎉\n\n".encode()


# bytes, bytearray, memoryview


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("raw", [b"data: pre\n\n", b"\x00\xff not even sse", b"event: x\n"])
def test_raw_bytes_are_written_as_is(kind: Any, raw: bytes) -> None:
    frame = encode_sse(kind(raw))
    assert type(frame) is bytes
    assert frame == raw
    stream = Stream(event="default")
    stream.send(kind(raw))
    assert frames_of(stream) == [raw]


@pytest.mark.parametrize("kwargs", [{"event": "e"}, {"id": "1"}, {"retry": 5}])
def test_raw_bytes_take_no_fields(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="bytes"):
        encode_sse(b"data: x\n\n", **kwargs)


def test_empty_bytes_send_nothing() -> None:
    assert encode_sse(b"") == b""
    stream = Stream()
    assert stream.send(b"") is True
    assert frames_of(stream) == []


# ServerSentEvent


@pytest.mark.parametrize(
    ("sse", "wire"),
    [
        (ServerSentEvent("x"), b"data: x\n\n"),
        (ServerSentEvent("x", event="e"), b"event: e\ndata: x\n\n"),
        (ServerSentEvent("x", id="7"), b"id: 7\ndata: x\n\n"),
        (ServerSentEvent("x", id=7), b"id: 7\ndata: x\n\n"),
        (ServerSentEvent("x", id=""), b"id: \ndata: x\n\n"),
        (ServerSentEvent("x", retry=0), b"retry: 0\ndata: x\n\n"),
        (ServerSentEvent("x", retry=1500), b"retry: 1500\ndata: x\n\n"),
        (ServerSentEvent({"a": 1}), b'data: {"a":1}\n\n'),
        (ServerSentEvent("a\nb", event="e"), b"event: e\ndata: a\ndata: b\n\n"),
        (ServerSentEvent(comment="hi"), b": hi\n\n"),
        (ServerSentEvent(comment="a\r\nb\nc"), b": a\n: b\n: c\n\n"),
        (ServerSentEvent(id="5"), b"id: 5\n\n"),
        (ServerSentEvent(retry=10), b"retry: 10\n\n"),
        (ServerSentEvent(), b""),
    ],
)
def test_server_sent_event_fields(sse: ServerSentEvent, wire: bytes) -> None:
    assert encode_sse(sse) == wire
    stream = Stream()
    stream.send(sse)
    assert frames_of(stream) == ([wire] if wire else [])


def test_server_sent_event_all_fields_in_order() -> None:
    sse = ServerSentEvent("x\ny", event="e", id="7", retry=1000, comment="note\nmore")
    frame = encode_sse(sse)
    result = parse(frame)
    assert result.events == [Event(data="x\ny", event="e", id="7", last_event_id="7", retry=1000)]
    assert result.comments == ["note", "more"]
    assert [name for name, _ in result.fields] == ["id", "event", "retry", "data", "data"]
    assert result.tail == "" and result.pending == []


def test_server_sent_event_comment_lines_stay_comments() -> None:
    frame = encode_sse(ServerSentEvent(comment="a\n\ndata: injected\n\nid: 9"))
    result = parse(frame)
    assert result.events == [] and result.fields == [] and result.last_event_id == ""
    assert result.comments == ["a", "", "data: injected", "", "id: 9"]


def test_server_sent_event_without_data_updates_last_event_id_only() -> None:
    frame = encode_sse(ServerSentEvent(id="5")) + encode_sse("next")
    result = parse(frame)
    assert result.events == [Event(data="next", last_event_id="5")]


def test_server_sent_event_empty_string_is_an_explicit_empty_data_field() -> None:
    assert one_event(encode_sse(ServerSentEvent(""))) == Event(data="")


def test_server_sent_event_refuses_bytes_and_fields_beside_it() -> None:
    for raw in (b"x", bytearray(b"x"), memoryview(b"x")):
        with pytest.raises(TypeError, match="bytes"):
            ServerSentEvent(raw)
    with pytest.raises(TypeError):
        encode_sse(ServerSentEvent("x"), event="e")
    with pytest.raises(TypeError, match="comment"):
        ServerSentEvent("x", comment=5)  # type: ignore[arg-type]


def test_keyword_fields_in_order() -> None:
    assert encode_sse("x", event="e", id=3, retry=10) == b"id: 3\nevent: e\nretry: 10\ndata: x\n\n"
    assert encode_sse("x", retry=0, id="a") == b"id: a\nretry: 0\ndata: x\n\n"


# None and ""


@pytest.mark.parametrize("nothing", [None, ""])
def test_none_and_empty_string_send_nothing(nothing: Any) -> None:
    assert encode_sse(nothing) == b""
    assert encode_sse(nothing, event="e", id="1", retry=5) == b""
    assert encode_sse(nothing, default_event="tick") == b""
    stream = Stream(event="tick")
    assert stream.send(nothing) is True
    assert frames_of(stream) == []


# anything else: compact JSON


@dataclasses.dataclass
class Point:
    x: int
    label: str


@dataclasses.dataclass
class Path:
    points: list[Point]
    closed: bool = False


class User(pydantic.BaseModel):
    name: str
    born: datetime.date
    tags: list[str] = []


class Team(pydantic.BaseModel):
    lead: User
    size: int


@dataclasses.dataclass
class Holder:
    user: User


_BORN = datetime.date(2000, 1, 2)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": 1}, '{"a":1}'),
        ({"a": [1, 2], "b": {"c": None}}, '{"a":[1,2],"b":{"c":null}}'),
        ([1, "two", None, 2.5], '[1,"two",null,2.5]'),
        ([], "[]"),
        ({}, "{}"),
        (0, "0"),
        (1, "1"),
        (-7, "-7"),
        (1.5, "1.5"),
        (0.0, "0.0"),
        (True, "true"),
        (False, "false"),
        (("t", 1), '["t",1]'),
        ({"é": "☃ 🎉"}, '{"é":"☃ 🎉"}'),
        ({"s": "a\nb\rc"}, '{"s":"a\\nb\\rc"}'),
        ({"s": "a\u2028b"}, '{"s":"a\u2028b"}'),
        (Point(1, "é"), '{"x":1,"label":"é"}'),
        (
            Path([Point(1, "a"), Point(2, "b")]),
            '{"points":[{"x":1,"label":"a"},{"x":2,"label":"b"}],"closed":false}',
        ),
        (User(name="ann", born=_BORN), '{"name":"ann","born":"2000-01-02","tags":[]}'),
        (
            Team(lead=User(name="ann", born=_BORN, tags=["x"]), size=3),
            '{"lead":{"name":"ann","born":"2000-01-02","tags":["x"]},"size":3}',
        ),
        (
            {"user": User(name="bo", born=_BORN), "all": [User(name="cy", born=_BORN)]},
            '{"user":{"name":"bo","born":"2000-01-02","tags":[]},'
            '"all":[{"name":"cy","born":"2000-01-02","tags":[]}]}',
        ),
        (
            Holder(User(name="di", born=_BORN)),
            '{"user":{"name":"di","born":"2000-01-02","tags":[]}}',
        ),
    ],
)
def test_json_values(value: Any, text: str) -> None:
    assert json_dumps(value) == text
    frame = encode_sse(value)
    assert frame == b"data: " + text.encode() + b"\n\n"
    assert one_event(frame).data == text
    assert encode_ndjson(value) == text.encode() + b"\n"


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        ({"nested": [Opaque()]}, "Opaque"),
        (object(), "object"),
        ({1, 2}, "set"),
        (datetime.datetime(2020, 1, 1), "datetime"),
        (decimal.Decimal("1.5"), "Decimal"),
        (Point(1, Opaque()), "Opaque"),  # type: ignore[arg-type]
    ],
)
def test_unencodable_raises_type_error_naming_the_type(value: Any, type_name: str) -> None:
    for encode in (encode_sse, encode_ndjson):
        with pytest.raises(TypeError, match=type_name):
            encode(value)
    stream = Stream()
    with pytest.raises(TypeError, match=type_name):
        stream.send(value)
    assert frames_of(stream) == []


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), {"x": [float("nan")]}]
)
def test_nan_and_infinity_raise_value_error(value: Any) -> None:
    for encode in (encode_sse, encode_ndjson):
        with pytest.raises(ValueError):
            encode(value)


# --------------------------------------------------------------------------------------
# Stream-level event and retry


def test_stream_default_event_applies_to_data_events_without_their_own() -> None:
    stream = Stream(event="tick")
    stream.send("a")
    stream.send("b", event="own")
    stream.send({"n": 1})
    stream.send(ServerSentEvent("c"))
    stream.send(ServerSentEvent("d", event="sse-own"))
    stream.send(ServerSentEvent(comment="just a comment"))
    stream.send(ServerSentEvent(id="9"))
    stream.send(ServerSentEvent(retry=100))
    stream.send(b"data: raw\n\n")
    result = parse(b"".join(frames_of(stream)))
    assert [(e.data, e.event) for e in result.events] == [
        ("a", "tick"),
        ("b", "own"),
        ('{"n":1}', "tick"),
        ("c", "tick"),
        ("d", "sse-own"),
        ("raw", None),
    ]
    assert frames_of(stream)[5:8] == [b": just a comment\n\n", b"id: 9\n\n", b"retry: 100\n\n"]


def test_default_event_in_encoder() -> None:
    assert encode_sse("x", default_event="tick") == b"event: tick\ndata: x\n\n"
    assert encode_sse("x", event="own", default_event="tick") == b"event: own\ndata: x\n\n"
    assert encode_sse(ServerSentEvent(id="1"), default_event="tick") == b"id: 1\n\n"


def test_stream_retry_is_the_first_frame() -> None:
    stream = Stream(retry=2500, event="e")
    assert frames_of(stream) == [b"retry: 2500\n\n"]
    stream.send("x")
    result = parse(b"".join(frames_of(stream)))
    assert result.retries == [2500]
    assert result.events == [Event(data="x", event="e", retry=2500)]
    assert Stream(retry=0).producer.queue.frames == [b"retry: 0\n\n"]
    assert Stream().producer.queue.frames == []


def test_encode_retry() -> None:
    assert encode_retry(0) == b"retry: 0\n\n"
    assert encode_retry(3000) == b"retry: 3000\n\n"
    result = parse(encode_retry(3000))
    assert result.retry == 3000 and result.events == [] and result.pending == []


def test_encode_comment_and_ping() -> None:
    assert encode_comment("hi") == b": hi\n\n"
    result = parse(encode_comment("a\r\nb\rc\nd"))
    assert result.comments == ["a", "b", "c", "d"] and result.fields == []
    assert PING == b": ping\n\n"
    assert parse(PING).comments == ["ping"]


# --------------------------------------------------------------------------------------
# Validation: raise, never alter


BAD_EVENTS = ["\r", "\n", "\r\n", "a\nb", "a\rb", "tick\n", "\ndata: x"]
BAD_IDS = [*BAD_EVENTS, "\0", "a\0b", "1\0"]


@pytest.mark.parametrize("event", BAD_EVENTS)
def test_event_with_line_break_raises(event: str) -> None:
    with pytest.raises(ValueError, match="event"):
        encode_sse("x", event=event)
    with pytest.raises(ValueError, match="event"):
        ServerSentEvent("x", event=event)
    with pytest.raises(ValueError, match="event"):
        Stream(event=event)
    stream = Stream()
    with pytest.raises(ValueError, match="event"):
        stream.send("x", event=event)
    assert frames_of(stream) == []


@pytest.mark.parametrize("id", BAD_IDS)
def test_id_with_line_break_or_nul_raises(id: str) -> None:
    with pytest.raises(ValueError, match="id"):
        encode_sse("x", id=id)
    with pytest.raises(ValueError, match="id"):
        ServerSentEvent("x", id=id)
    with pytest.raises(ValueError, match="id"):
        ServerSentEvent(id=id)
    stream = Stream()
    with pytest.raises(ValueError, match="id"):
        stream.send({"a": 1}, id=id)
    assert frames_of(stream) == []


def test_event_may_contain_nul() -> None:
    # Only CR and LF break framing for event; the WHATWG parser keeps NUL in the type.
    assert one_event(encode_sse("x", event="a\0b")).event == "a\0b"


@pytest.mark.parametrize("retry", [-1, -1000, 1.5, 1.0, float("nan"), True, False, "5", "1000"])
def test_invalid_retry_raises(retry: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="retry"):
        encode_sse("x", retry=retry)
    with pytest.raises((ValueError, TypeError), match="retry"):
        ServerSentEvent("x", retry=retry)
    with pytest.raises((ValueError, TypeError), match="retry"):
        encode_retry(retry)
    with pytest.raises((ValueError, TypeError), match="retry"):
        Stream(retry=retry)
    stream = Stream()
    with pytest.raises((ValueError, TypeError), match="retry"):
        stream.send("x", retry=retry)
    assert frames_of(stream) == []


@pytest.mark.parametrize("event", [5, b"tick", ["a"]])
def test_event_of_wrong_type_raises(event: Any) -> None:
    with pytest.raises(TypeError, match="event"):
        encode_sse("x", event=event)


@pytest.mark.parametrize("id", [1.5, True, b"1", ["1"]])
def test_id_of_wrong_type_raises(id: Any) -> None:
    with pytest.raises(TypeError, match="id"):
        encode_sse("x", id=id)


@pytest.mark.parametrize("nothing", [None, ""])
@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"id": "a\rb"}, {"id": "a\0b"}, {"retry": -1}, {"retry": 1.5}],
)
def test_invalid_fields_raise_even_when_data_is_empty(nothing: Any, kwargs: dict[str, Any]) -> None:
    """SPEC: an invalid event/id/retry "raises ValueError at send time" -- unconditionally.
    Dropping the call silently hides the bug until the data happens to be non-empty."""
    stream = Stream()
    with pytest.raises(ValueError):
        stream.send(nothing, **kwargs)


# --------------------------------------------------------------------------------------
# Lone surrogates: not encodable as UTF-8


@pytest.mark.parametrize("text", ["\udc80", "a\ud800b", "ok\nbad\udfff"])
def test_lone_surrogate_in_data_raises_clear_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)data.*(unicode|surrogate)"):
        encode_sse(text)
    with pytest.raises(ValueError, match=r"(?i)unicode|surrogate"):
        encode_sse({"k": text})
    with pytest.raises(ValueError, match=r"(?i)unicode|surrogate"):
        encode_ndjson(text)
    with pytest.raises(ValueError, match=r"(?i)unicode|surrogate"):
        encode_text(text)
    stream = Stream()
    with pytest.raises(ValueError):
        stream.send(text)
    assert frames_of(stream) == []


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("event", {"event": "a\udc80"}),
        ("id", {"id": "a\udc80"}),
        ("comment", {"comment": "\ud800"}),
    ],
)
def test_lone_surrogate_in_field_names_that_field(field: str, kwargs: dict[str, Any]) -> None:
    """A lone surrogate in event/id/comment is refused, and the message names that field
    (not "data", which is fine)."""
    with pytest.raises(ValueError, match=rf"\b{field}\b") as info:
        encode_sse(ServerSentEvent("x", **kwargs))
    assert not str(info.value).startswith("data ")


# --------------------------------------------------------------------------------------
# format="ndjson" and format="text"


def test_ndjson_encoding() -> None:
    assert encode_ndjson({"a": 1}) == b'{"a":1}\n'
    assert encode_ndjson("hi") == b'"hi"\n'
    assert encode_ndjson("a\nb") == b'"a\\nb"\n'
    assert encode_ndjson(0) == b"0\n"
    assert encode_ndjson(False) == b"false\n"
    assert encode_ndjson({"é": "☃"}) == '{"é":"☃"}\n'.encode()
    assert encode_ndjson(b'{"raw":true}\n') == b'{"raw":true}\n'
    assert encode_ndjson(memoryview(b"x")) == b"x"
    assert encode_ndjson(None) == b""
    assert encode_ndjson("") == b""
    stream = Stream(format="ndjson")
    stream.send({"a": 1})
    stream.send([1, 2])
    stream.send(None)
    assert b"".join(frames_of(stream)) == b'{"a":1}\n[1,2]\n'


@pytest.mark.parametrize("kwargs", [{"event": "e"}, {"id": "1"}, {"id": 1}, {"retry": 5}])
def test_ndjson_and_text_refuse_sse_fields(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="ndjson"):
        encode_ndjson({"a": 1}, **kwargs)
    with pytest.raises(TypeError, match="text"):
        encode_text("x", **kwargs)
    for fmt in ("ndjson", "text"):
        stream = Stream(format=fmt)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            stream.send("x", **kwargs)
        assert frames_of(stream) == []


@pytest.mark.parametrize("fmt", ["ndjson", "text"])
def test_ndjson_and_text_streams_refuse_event_and_retry(fmt: Any) -> None:
    with pytest.raises(TypeError):
        Stream(format=fmt, event="e")
    with pytest.raises(TypeError):
        Stream(format=fmt, retry=1000)


def test_ndjson_refuses_server_sent_event() -> None:
    with pytest.raises(TypeError, match="ServerSentEvent"):
        encode_ndjson(ServerSentEvent("x"))


def test_text_encoding() -> None:
    assert encode_text("héllo\r\nworld\n") == "héllo\r\nworld\n".encode()
    assert encode_text(b"\x00\xff") == b"\x00\xff"
    assert encode_text(bytearray(b"ab")) == b"ab"
    assert encode_text(None) == b""
    assert encode_text("") == b""
    stream = Stream(format="text")
    stream.send("a")
    stream.send(b"b")
    stream.send("")
    assert b"".join(frames_of(stream)) == b"ab"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (1, "int"),
        (1.5, "float"),
        (True, "bool"),
        ({"a": 1}, "dict"),
        ([1], "list"),
        (ServerSentEvent("x"), "ServerSentEvent"),
        (Point(1, "a"), "Point"),
    ],
)
def test_text_refuses_non_str_naming_the_type(value: Any, type_name: str) -> None:
    with pytest.raises(TypeError, match=type_name):
        encode_text(value)
    stream = Stream(format="text")
    with pytest.raises(TypeError, match=type_name):
        stream.send(value)
    assert frames_of(stream) == []


def test_unknown_format_raises() -> None:
    with pytest.raises(ValueError, match="format"):
        Stream(format="xml")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Properties against the independent parser

_CHAR = st.characters(exclude_categories=("Cs",))
_TRICKY = st.sampled_from(
    ["\r", "\n", "\r\n", "\n\r", "\u2028", "\u2029", "\x85", "\x00", "\ufeff", " ", ":", "data: "]
)
TEXT = st.lists(st.one_of(st.text(alphabet=_CHAR, max_size=8), _TRICKY), max_size=8).map("".join)
EVENT_NAMES = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"))
ID_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\0"))
IDS = st.one_of(ID_TEXT, st.integers())
RETRIES = st.integers(min_value=0, max_value=2**40)


def _expected_fields(text: str, event: str | None, id: object, retry: int | None) -> list[str]:
    names = ["id"] if id is not None else []
    names += ["event"] if event is not None else []
    names += ["retry"] if retry is not None else []
    return names + ["data"] * len(lines(text))


@settings(max_examples=300, deadline=None)
@given(
    data=TEXT,
    event=st.none() | EVENT_NAMES,
    id=st.none() | IDS,
    retry=st.none() | RETRIES,
)
def test_property_one_str_event_round_trips(
    data: str, event: str | None, id: str | int | None, retry: int | None
) -> None:
    frame = encode_sse(data, event=event, id=id, retry=retry)
    if data == "":
        assert frame == b""
        return
    result = parse(frame)
    assert result.tail == "" and result.pending == [] and result.comments == []
    assert len(result.blocks) == 1
    assert result.events == [
        Event(
            data=as_client_sees(data),
            event=event or None,  # "" is the default type, "message"
            id=None if id is None else str(id),
            last_event_id="" if id is None else str(id),
            retry=retry,
        )
    ]
    assert field_names(frame) == _expected_fields(data, event, id, retry)
    # the same frame through ServerSentEvent
    assert encode_sse(ServerSentEvent(data, event=event, id=id, retry=retry)) == frame


_ITEM = st.tuples(
    st.sampled_from(["send", "sse"]),
    st.none() | TEXT,
    st.none() | EVENT_NAMES,
    st.none() | IDS,
    st.none() | RETRIES,
    st.none() | TEXT,
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(_ITEM, max_size=10),
    default_event=st.none() | EVENT_NAMES,
    stream_retry=st.none() | RETRIES,
)
def test_property_many_events_round_trip(
    items: list[tuple[str, str | None, str | None, str | int | None, int | None, str | None]],
    default_event: str | None,
    stream_retry: int | None,
) -> None:
    stream = Stream(event=default_event, retry=stream_retry)
    expected: list[Event] = []
    comments: list[str] = []
    blocks = 0 if stream_retry is None else 1
    last_id = ""
    retry = stream_retry
    for kind, data, event, id, item_retry, comment in items:
        if kind == "send":
            stream.send(data, event=event, id=id, retry=item_retry)
            if data is None or data == "":
                continue
        else:
            sse = ServerSentEvent(data, event=event, id=id, retry=item_retry, comment=comment)
            stream.send(sse)
            if comment is not None:
                comments += lines(comment)
            if all(v is None for v in (data, event, id, item_retry, comment)):
                continue
        blocks += 1
        if id is not None:
            last_id = str(id)
        if item_retry is not None:
            retry = item_retry
        if data is None:
            continue
        chosen = event if event is not None else default_event
        expected.append(
            Event(
                data=as_client_sees(data),
                event=chosen or None,
                id=None if id is None else str(id),
                last_event_id=last_id,
                retry=retry,
            )
        )
    result = parse(b"".join(frames_of(stream)))
    assert result.events == expected
    assert result.comments == comments
    assert len(result.blocks) == blocks
    assert result.last_event_id == last_id
    assert result.retry == retry
    assert result.tail == "" and result.pending == []
    assert {name for name, _ in result.fields} <= {"id", "event", "retry", "data"}


def _with_break(draw_text: st.SearchStrategy[str], breaks: str) -> st.SearchStrategy[str]:
    return st.tuples(draw_text, st.sampled_from([*breaks, "\r\n"]), draw_text).map("".join)


NON_EMPTY_DATA = st.one_of(
    TEXT.filter(bool), st.integers(), st.dictionaries(st.text(max_size=3), st.integers())
)


@settings(max_examples=150, deadline=None)
@given(data=NON_EMPTY_DATA, bad=_with_break(EVENT_NAMES, "\r\n"))
def test_property_invalid_event_always_raises(data: Any, bad: str) -> None:
    with pytest.raises(ValueError):
        encode_sse(data, event=bad)
    with pytest.raises(ValueError):
        ServerSentEvent(data, event=bad)
    stream = Stream()
    with pytest.raises(ValueError):
        stream.send(data, event=bad)
    assert frames_of(stream) == []


@settings(max_examples=150, deadline=None)
@given(data=NON_EMPTY_DATA, bad=_with_break(ID_TEXT, "\r\n\0"))
def test_property_invalid_id_always_raises(data: Any, bad: str) -> None:
    with pytest.raises(ValueError):
        encode_sse(data, id=bad)
    with pytest.raises(ValueError):
        ServerSentEvent(data, id=bad)
    stream = Stream()
    with pytest.raises(ValueError):
        stream.send(data, id=bad)
    assert frames_of(stream) == []


_JSON_TEXT = st.lists(st.one_of(st.text(alphabet=_CHAR, max_size=4), _TRICKY), max_size=3).map(
    "".join
)
_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _JSON_TEXT
)
JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_JSON_TEXT, children, max_size=4)
    ),
    max_leaves=15,
)
JSON_CONTAINERS = st.lists(JSON_VALUES, max_size=4) | st.dictionaries(
    _JSON_TEXT, JSON_VALUES, max_size=4
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(value=JSON_CONTAINERS, event=st.none() | EVENT_NAMES)
def test_property_json_round_trips(value: Any, event: str | None) -> None:
    frame = encode_sse(value, event=event)
    assert field_names(frame).count("data") == 1  # compact JSON is one line
    parsed = one_event(frame)
    assert json.loads(parsed.data) == value
    assert parsed.event == (event or None)
    line = encode_ndjson(value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    assert json.loads(line) == value


@settings(max_examples=100, deadline=None)
@given(text=TEXT)
def test_property_comments_stay_comments(text: str) -> None:
    result = parse(encode_comment(text))
    assert result.comments == lines(text)
    assert result.events == [] and result.fields == [] and result.pending == []


@settings(max_examples=100, deadline=None)
@given(text=TEXT)
def test_property_text_format_is_utf8(text: str) -> None:
    assert encode_text(text) == text.encode("utf-8")


@settings(max_examples=100, deadline=None)
@given(value=_with_break(st.text(alphabet=st.characters(max_codepoint=127), max_size=5), "\r\n"))
def test_property_header_values_with_line_breaks_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_headers({"x-test": value})


# --------------------------------------------------------------------------------------
# The hot path (exact str, dict and list) against the general path (their subclasses):
# the same bytes, and the same error type and message, for good and bad input alike.


class _Str(str):
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _List(list):  # type: ignore[type-arg]
    pass


def _outcome(data: Any, **fields: Any) -> bytes | tuple[str, str]:
    try:
        return encode_sse(data, **fields)
    except Exception as exc:  # compared, not swallowed
        return type(exc).__name__, str(exc)


_ANY_FIELD = st.none() | st.text(max_size=4) | st.integers(-3, 3) | st.booleans() | st.floats()
_BAD_JSON = st.sampled_from([float("nan"), float("inf"), object(), b"x", {1, 2}, "\ud800"])


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    data=TEXT | st.text(max_size=6) | JSON_CONTAINERS | st.lists(_BAD_JSON, min_size=1, max_size=2),
    event=_ANY_FIELD | EVENT_NAMES,
    id=_ANY_FIELD | IDS,
    retry=_ANY_FIELD | RETRIES,
    default_event=st.none() | EVENT_NAMES,
)
def test_property_hot_path_equals_general_path(
    data: Any, event: Any, id: Any, retry: Any, default_event: str | None
) -> None:
    cls = type(data)
    general = {str: _Str, dict: _Dict, list: _List}[cls](data)
    fields = {"event": event, "id": id, "retry": retry, "default_event": default_event}
    expected = _outcome(general, **fields)
    if isinstance(expected, tuple):  # the message names the type it was given
        expected = expected[0], expected[1].replace(type(general).__name__, cls.__name__)
    assert _outcome(data, **fields) == expected


def test_hot_path_refuses_what_the_general_path_refuses() -> None:
    """The fast path's own inline checks, one bad field or value at a time."""
    for data in ("x", {"a": 1}, [1]):
        for fields in (
            {"event": "a\nb"},
            {"id": "a\rb"},
            {"id": "a\0b"},
            {"id": True},
            {"retry": -1},
            {"retry": 1.5},
            {"event": 1},
        ):
            with pytest.raises((TypeError, ValueError)):
                encode_sse(data, **fields)
    with pytest.raises(ValueError, match="data is not valid Unicode"):
        encode_sse("\ud800")
    with pytest.raises(ValueError, match="cannot encode dict as JSON"):
        encode_sse({"a": float("nan")})
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="cannot encode list as JSON"):
        encode_sse(circular)
    with pytest.raises(TypeError, match="cannot encode an object of type object as JSON"):
        encode_sse({"a": object()})
