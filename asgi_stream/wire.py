"""Wire format: events and values to bytes. Pure functions, no I/O, no async.

Everything a client will parse is produced here, so that the framing rules (one ``data:``
line per line, validated ``id``/``event``/``retry``) live in one place and can be tested
without an event loop.
"""

from __future__ import annotations

import dataclasses
import json
import json.encoder
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

__all__ = [
    "FORMATS",
    "NO_BODY_STATUSES",
    "PING",
    "Encoder",
    "Format",
    "HeadersInput",
    "ServerSentEvent",
    "check_fields",
    "check_max_buffer",
    "check_ping",
    "check_status",
    "content_type",
    "encode",
    "encode_comment",
    "encode_ndjson",
    "encode_retry",
    "encode_sse",
    "encode_text",
    "encoder_for",
    "json_dumps",
    "normalize_headers",
    "request_header",
    "response_headers",
]

Format = Literal["sse", "ndjson", "text"]
FORMATS: tuple[Format, ...] = ("sse", "ndjson", "text")

PING = b": ping\n\n"

_CONTENT_TYPES: dict[str, bytes] = {
    "sse": b"text/event-stream; charset=utf-8",
    "ndjson": b"application/x-ndjson",
    "text": b"text/plain; charset=utf-8",
}
# Hop-by-hop headers are the server's business; on HTTP/2 they are a protocol error.
# Connection-specific fields (RFC 9110 7.6.1; RFC 9113 8.2.2 makes each a protocol error on
# HTTP/2, which tears the whole connection down), and a length a stream cannot have.
_FORBIDDEN_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
_RAW = (bytes, bytearray, memoryview)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event with explicit fields; ``data`` follows the same rules as ``Stream.send``."""

    data: Any = None
    event: str | None = None
    id: str | int | None = None
    retry: int | None = None
    comment: str | None = None

    def __post_init__(self) -> None:
        check_fields(self.event, self.id, self.retry)
        if self.comment is not None and not isinstance(self.comment, str):
            raise TypeError(
                f"ServerSentEvent.comment must be str, not {type(self.comment).__name__}"
            )
        if isinstance(self.data, _RAW):
            raise TypeError(
                "ServerSentEvent.data cannot be bytes: send pre-encoded bytes directly, or pass str"
            )


def check_fields(event: object, id: object, retry: object) -> None:
    """Refuse values that would break framing; never repair them silently."""
    if event is not None:
        if not isinstance(event, str):
            raise TypeError(f"event must be str, not {type(event).__name__}")
        if "\r" in event or "\n" in event:
            raise ValueError(f"event must not contain CR or LF: {event!r}")
    if id is not None:
        if isinstance(id, bool) or not isinstance(id, (str, int)):
            raise TypeError(f"id must be str or int, not {type(id).__name__}")
        if isinstance(id, str) and ("\r" in id or "\n" in id or "\0" in id):
            raise ValueError(f"id must not contain CR, LF or NUL: {id!r}")
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int) or retry < 0):
        raise ValueError(f"retry must be a non-negative integer (milliseconds), not {retry!r}")


def _unserialisable(obj: object) -> TypeError:
    return TypeError(f"cannot encode an object of type {type(obj).__qualname__} as JSON")


def _json_default(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception as exc:  # pydantic's PydanticSerializationError, say
            raise _unserialisable(obj) from exc
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise _unserialisable(obj)


_JSON = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
)


# CPython's C encoder (None elsewhere), built once and called the way JSONEncoder.iterencode
# calls it for _JSON, without the two Python frames, the closure and the encoder object that
# iterencode makes per call. It keeps no cycle-check state (``markers`` is None), so threads
# can share it; a cycle ends in RecursionError, and _JSON then raises the precise error.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_COMPACT: Any = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None, _json_default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def _json_compact(obj: Any) -> str:
    """``_JSON.encode(obj)`` for a dict or list: the same output and the same errors."""
    if _COMPACT is None:
        return _JSON.encode(obj)
    try:
        return "".join(_COMPACT(obj, 0))
    except RecursionError:  # a cycle, or nesting too deep: say which
        return _JSON.encode(obj)


def json_dumps(obj: Any) -> str:
    """Compact, non-ASCII-escaped JSON; the output never contains a raw CR or LF."""
    dump_json = getattr(type(obj), "model_dump_json", None)
    if dump_json is not None:  # a pydantic model: its own serializer, same compact output
        try:
            return str(dump_json(obj))
        except Exception as exc:  # pydantic's PydanticSerializationError, say
            raise _unserialisable(obj) from exc
    try:
        return _JSON.encode(obj)
    except ValueError as exc:  # NaN/Infinity or a circular reference
        raise ValueError(f"cannot encode {type(obj).__qualname__} as JSON: {exc}") from None


def _utf8(text: str, field: str = "data") -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{field} is not valid Unicode text: {exc.reason} at position {exc.start} "
            f"({text[exc.start : exc.end]!r})"
        ) from None


def _data_lines(text: str) -> bytes:
    raw = _utf8(text)  # CR and LF never occur inside a multi-byte UTF-8 sequence
    if b"\n" not in raw and b"\r" not in raw:
        return b"data: " + raw + b"\n"
    return b"data: " + b"\ndata: ".join(_LINE_BREAK_BYTES.split(raw)) + b"\n"


def _text_of(data: Any) -> str:
    return data if isinstance(data, str) else json_dumps(data)


def encode_sse(
    data: Any,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    default_event: str | None = None,
) -> bytes:
    """Encode one ``send()`` call as an SSE frame; ``b""`` means nothing to send."""
    cls = type(data)
    if cls is str or cls is dict or cls is list:
        # The per-event hot path: str, dict or list data. Fields are validated as below, the
        # frame is built as one str and encoded once. On any encoding problem it falls
        # through to the general path, which raises the precise error.
        if (event is not None or id is not None or retry is not None) and not (
            (event is None or (type(event) is str and "\n" not in event and "\r" not in event))
            and (
                id is None
                or type(id) is int
                or (type(id) is str and "\n" not in id and "\r" not in id and "\0" not in id)
            )
            and (retry is None or (type(retry) is int and retry >= 0))
        ):
            check_fields(event, id, retry)  # raises, or accepts a subclass of str or int
        text: str | None
        if cls is str:
            if not data:
                return b""  # as in the original: nothing to send
            lines = data.replace("\r\n", "\n").replace("\r", "\n") if "\r" in data else data
            text = "data: " + lines.replace("\n", "\ndata: ") + "\n\n"
        else:
            try:  # JSON never contains a raw CR or LF: one data line
                text = "data: " + _json_compact(data) + "\n\n"
            except ValueError:  # NaN, a circular reference
                text = None
        if text is not None:
            name = default_event if event is None else event
            if id is not None or name is not None or retry is not None:
                text = (
                    ("" if id is None else "id: " + (id if type(id) is str else str(id)) + "\n")
                    + ("" if name is None else "event: " + name + "\n")
                    + ("" if retry is None else f"retry: {retry:d}\n")
                    + text
                )
            try:
                return text.encode()
            except UnicodeEncodeError:  # a lone surrogate: the general path names the field
                pass
    if isinstance(data, _RAW):
        if event is not None or id is not None or retry is not None:
            raise TypeError("bytes are pre-encoded wire data: event, id and retry cannot be added")
        return bytes(data)
    if isinstance(data, ServerSentEvent):
        if event is not None or id is not None or retry is not None:
            raise TypeError("pass event, id and retry inside the ServerSentEvent, not beside it")
        sse = data
        data, event, id, retry = sse.data, sse.event, sse.id, sse.retry
        parts = [_comment_lines(sse.comment)] if sse.comment is not None else []
    else:
        if event is not None or id is not None or retry is not None:
            check_fields(event, id, retry)  # even when there is no data: never accept bad input
        if data is None or (isinstance(data, str) and not data):
            return b""  # as in the original: nothing to send
        parts = []
    if id is not None:
        parts.append(b"id: " + _utf8(str(id), "id") + b"\n")
    if data is not None and event is None:
        event = default_event
    if event is not None:
        parts.append(b"event: " + _utf8(event, "event") + b"\n")
    if retry is not None:
        parts.append(b"retry: %d\n" % retry)
    if data is not None:
        parts.append(_data_lines(_text_of(data)))
    if not parts:
        return b""
    parts.append(b"\n")
    return b"".join(parts)


def _comment_lines(text: str) -> bytes:
    raw = _utf8(text, "comment")
    return b"".join(b": " + line + b"\n" for line in _LINE_BREAK_BYTES.split(raw))


def encode_comment(text: str) -> bytes:
    """A comment frame; every line of ``text`` stays a comment."""
    return _comment_lines(text) + b"\n"


def encode_retry(retry: int) -> bytes:
    """The stream-level ``retry:`` frame, written once before any event."""
    check_fields(None, None, retry)
    return b"retry: %d\n\n" % retry


def _no_sse_fields(fmt: str, event: object, id: object, retry: object) -> None:
    if event is not None or id is not None or retry is not None:
        raise TypeError(f"format={fmt!r} has no event, id or retry fields; use format='sse'")


def encode_ndjson(
    data: Any,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    default_event: str | None = None,
) -> bytes:
    """One compact JSON document per line; bytes are written as-is."""
    _no_sse_fields("ndjson", event, id, retry)
    if isinstance(data, _RAW):
        return bytes(data)
    if data is None or (isinstance(data, str) and not data):
        return b""
    if isinstance(data, ServerSentEvent):
        raise TypeError("ServerSentEvent needs format='sse'")
    return _utf8(json_dumps(data)) + b"\n"


def encode_text(
    data: Any,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    default_event: str | None = None,
) -> bytes:
    """Plain text: str as UTF-8, bytes as-is, nothing added."""
    _no_sse_fields("text", event, id, retry)
    if isinstance(data, _RAW):
        return bytes(data)
    if data is None:
        return b""
    if not isinstance(data, str):
        raise TypeError(
            f"format='text' sends str or bytes, not {type(data).__qualname__}; "
            "convert it, or use format='ndjson' or 'sse'"
        )
    return _utf8(data)


_ENCODERS = {"sse": encode_sse, "ndjson": encode_ndjson, "text": encode_text}


def encode(
    fmt: Format,
    data: Any,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    default_event: str | None = None,
) -> bytes:
    """Encode ``data`` in format ``fmt``."""
    return _ENCODERS[fmt](data, event=event, id=id, retry=retry, default_event=default_event)


Encoder = Callable[..., bytes]


def encoder_for(fmt: str) -> Encoder:
    """The encoding function of a format; ``ValueError`` names an unknown one."""
    try:
        return _ENCODERS[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}") from None


def content_type(fmt: Format) -> bytes:
    """The default ``content-type`` of a format."""
    return _CONTENT_TYPES[fmt]


HeadersInput = Mapping[str, str] | Iterable[tuple[str, str]] | None


def normalize_headers(headers: HeadersInput) -> list[tuple[bytes, bytes]]:
    """Validate user headers and turn them into ASGI pairs; names are lower-cased."""
    if headers is None:
        return []
    if isinstance(headers, (str, bytes)) or not isinstance(headers, (Mapping, Iterable)):
        raise TypeError(
            "headers must be a mapping or an iterable of (name, value) pairs, "
            f"not {type(headers).__name__}"
        )
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    result: list[tuple[bytes, bytes]] = []
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise TypeError(
                f"headers must be a mapping or (name, value) pairs, got {pair!r}"
            ) from None
        raw_name = _header_part("name", name, name).lower()
        raw_value = _header_part("value", value, name)
        if raw_name == b"content-length":
            raise ValueError("header 'content-length' cannot be set: a stream has no length")
        if raw_name in _FORBIDDEN_HEADERS:
            raise ValueError(f"header {raw_name.decode()!r} is hop-by-hop; the server sets it")
        result.append((raw_name, raw_value))
    return result


# RFC 9110 5.6.2: a field name is a token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 5.5: a field value has no control character but HTAB.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _header_part(what: str, part: object, name: object) -> bytes:
    if isinstance(name, bytes):  # named in messages as it was given, as text
        name = name.decode("latin-1")
    if isinstance(part, str):
        if not part.isascii():
            raise ValueError(f"header {name!r}: the {what} must be ASCII, not {part!r}")
        raw = part.encode("ascii")
    elif isinstance(part, bytes):
        raw = part
    else:
        raise TypeError(f"header {name!r}: the {what} must be str, not {type(part).__name__}")
    if what == "name" and not _TOKEN.fullmatch(raw):
        raise ValueError(f"header name {part!r} is not an HTTP token (RFC 9110)")
    if what == "value" and _CONTROL.search(raw):
        raise ValueError(f"header {name!r}: the value has a control character: {part!r}")
    if what == "value" and raw != raw.strip(b" \t"):  # RFC 9110 5.5; h11 refuses to send it
        raise ValueError(f"header {name!r}: the value has leading or trailing whitespace")
    return raw


def response_headers(
    default_content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """Our streaming headers, each replaced by a user header of the same name."""
    base = [
        (b"content-type", default_content_type),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    overridden = {name for name, _ in extra}
    return [pair for pair in base if pair[0] not in overridden] + extra


# Responses that cannot carry a body (RFC 9110 6.4.1, 15.3.6): a stream there would complete at
# once while its producer runs on unseen, and wedge the connection.
NO_BODY_STATUSES = frozenset({204, 205, 304})


def check_status(status: object, name: str = "status") -> int:
    """A response status that can carry a stream: an int from 200 to 599 but 204, 205, 304."""
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError(f"{name} must be an int from 200 to 599, not {status!r}")
    if status in NO_BODY_STATUSES:
        raise ValueError(f"{name} {status} cannot carry a body, so it cannot carry a stream")
    return status


def check_ping(ping: object) -> None:
    """``ping`` is ``None`` (off) or a non-negative number of milliseconds."""
    if ping is not None and (
        isinstance(ping, bool) or not isinstance(ping, (int, float)) or ping < 0
    ):
        raise ValueError(f"ping must be None or milliseconds >= 0, not {ping!r}")


def check_max_buffer(max_buffer: object) -> None:
    """``max_buffer`` is a positive number of bytes."""
    if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
        raise ValueError(f"max_buffer must be a positive int (bytes), not {max_buffer!r}")


def request_header(headers: Any, name: bytes) -> str | None:
    """The first header ``name`` (lower-case bytes) of an ASGI header list, as latin-1 text."""
    pairs: Iterable[tuple[bytes, bytes]] = headers
    for key, value in pairs:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
