"""An independent ``text/event-stream`` parser for tests.

It follows the WHATWG HTML "Server-sent events" parsing and event-dispatch rules
(section 9.2.6 "Parsing an event stream" and 9.2.7 "Interpreting an event stream"),
written from the specification and not derived from ``asgi_stream``, so that the wire
format can be checked against what a browser would see:

* the stream is decoded as UTF-8 (errors become U+FFFD) and one leading BOM is dropped;
* lines end at CRLF, a lone CR or a lone LF, and nothing else (not U+2028, not NEL);
* an empty line dispatches the pending event;
* a line starting with ``:`` is a comment;
* otherwise the field name runs up to the first ``:``, and one U+0020 after it is dropped
  from the value (a line without ``:`` is a field with an empty value);
* ``event`` sets the event type buffer, ``data`` appends value + LF to the data buffer,
  ``id`` sets the last event ID buffer unless the value contains NUL, ``retry`` sets the
  reconnection time if the value is non-empty and only ASCII digits; other fields are ignored;
* on dispatch the last event ID is updated even when the data buffer is empty, in which case
  nothing is dispatched; otherwise one trailing LF is removed from the data buffer;
* text after the last line terminator is an incomplete line and is never processed.

Besides the dispatched events it records every comment, every field line and the "blocks"
(groups of lines ended by a blank line), so tests can assert "exactly these fields".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Block", "Event", "ParseResult", "parse", "parse_events"]

_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    """One dispatched ``MessageEvent``."""

    data: str
    #: the ``event`` type; ``None`` when the type buffer was empty (the client uses "message")
    event: str | None = None
    #: the ``id`` field given inside this event's block (``None`` if none was accepted)
    id: str | None = None
    #: WHATWG ``lastEventId``: the last accepted ``id`` so far in the stream ("" initially)
    last_event_id: str = ""
    #: the reconnection time in force when the event was dispatched
    retry: int | None = None


@dataclass(frozen=True)
class Block:
    """The lines between two blank lines: field lines and comments, in order."""

    fields: tuple[tuple[str, str], ...]
    comments: tuple[str, ...]
    dispatched: bool


@dataclass
class ParseResult:
    events: list[Event] = field(default_factory=list)
    #: comment text (after ``:`` and one optional space), in order
    comments: list[str] = field(default_factory=list)
    #: every field line as ``(name, value)``, including ignored/unknown ones
    fields: list[tuple[str, str]] = field(default_factory=list)
    #: one entry per blank line seen
    blocks: list[Block] = field(default_factory=list)
    #: every accepted ``retry`` value, in order
    retries: list[int] = field(default_factory=list)
    #: final reconnection time and last event ID
    retry: int | None = None
    last_event_id: str = ""
    #: lines after the last blank line (an event that was never terminated)
    pending: list[str] = field(default_factory=list)
    #: characters after the last line terminator (an incomplete line)
    tail: str = ""


def _split_field(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon:
        return line, ""
    if value.startswith(" "):
        value = value[1:]
    return name, value


def parse(stream: bytes) -> ParseResult:
    """Parse a complete event stream (the whole body, as received)."""
    if stream.startswith(_BOM):
        stream = stream[len(_BOM) :]
    text = stream.decode("utf-8", errors="replace")
    pieces = _EOL.split(text)
    lines, tail = pieces[:-1], pieces[-1]

    result = ParseResult(tail=tail)
    data_buffer = ""
    type_buffer = ""
    id_buffer = ""
    block_id: str | None = None
    block_fields: list[tuple[str, str]] = []
    block_comments: list[str] = []
    pending: list[str] = []

    for line in lines:
        if line == "":
            # dispatch
            result.last_event_id = id_buffer
            dispatched = data_buffer != ""
            if dispatched:
                data = data_buffer[:-1] if data_buffer.endswith("\n") else data_buffer
                result.events.append(
                    Event(
                        data=data,
                        event=type_buffer or None,
                        id=block_id,
                        last_event_id=id_buffer,
                        retry=result.retry,
                    )
                )
            result.blocks.append(Block(tuple(block_fields), tuple(block_comments), dispatched))
            data_buffer = type_buffer = ""
            block_id = None
            block_fields, block_comments, pending = [], [], []
            continue
        pending.append(line)
        if line.startswith(":"):
            comment = line[1:]
            comment = comment[1:] if comment.startswith(" ") else comment
            block_comments.append(comment)
            result.comments.append(comment)
            continue
        name, value = _split_field(line)
        block_fields.append((name, value))
        result.fields.append((name, value))
        if name == "event":
            type_buffer = value
        elif name == "data":
            data_buffer += value + "\n"
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
                block_id = value
        elif name == "retry" and value.isascii() and value.isdigit():  # "" is not digits
            result.retry = int(value)
            result.retries.append(result.retry)
        # any other field is ignored

    result.pending = pending
    return result


def parse_events(stream: bytes) -> list[Event]:
    """Only the dispatched events."""
    return parse(stream).events
