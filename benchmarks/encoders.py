"""Benchmark 1: encoding one event to wire bytes, per implementation and kind of event.

Each implementation gets the same ``send(data, event=, id=, retry=)`` arguments and encodes
them the way its users do:

- asgi_stream: ``asgi_stream.wire.encode_sse`` (what ``Stream.send`` calls).
- sse-starlette: ``ServerSentEvent(data, event=, id=, retry=).encode()``; a dict goes through
  its ``JSONServerSentEvent`` (compact JSON, like ours).
- fastapi (format_sse_event): the formatter alone, ``fastapi.sse.format_sse_event`` with the
  data already a string (``json.dumps`` for the dict).
- fastapi (yielded item): what FastAPI's router does per item an SSE endpoint yields:
  a string with fields is yielded as ``fastapi.sse.ServerSentEvent(raw_data=...)`` (a plain
  str would be JSON-quoted), a dict is yielded as is (``jsonable_encoder`` + ``json.dumps``),
  then ``format_sse_event``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from common import ENCODER_CASES, normalized, parse_sse

Encode = Callable[[], bytes]
Factory = Callable[[dict[str, Any]], Encode]

BASELINE = "sse-starlette"


def _asgi_stream() -> Factory:
    from asgi_stream.wire import encode_sse

    def factory(case: dict[str, Any]) -> Encode:
        data = case["data"]
        event, id_, retry = case.get("event"), case.get("id"), case.get("retry")
        if event is None and id_ is None and retry is None:
            return lambda: encode_sse(data)
        return lambda: encode_sse(data, event=event, id=id_, retry=retry)

    return factory


def _sse_starlette() -> Factory:
    from sse_starlette import JSONServerSentEvent, ServerSentEvent

    def factory(case: dict[str, Any]) -> Encode:
        data = case["data"]
        event, id_, retry = case.get("event"), case.get("id"), case.get("retry")
        cls = ServerSentEvent if isinstance(data, str) else JSONServerSentEvent
        return lambda: cls(data, event=event, id=id_, retry=retry).encode()

    return factory


def _fastapi_format() -> Factory:
    from fastapi.sse import format_sse_event

    def factory(case: dict[str, Any]) -> Encode:
        data = case["data"]
        event, id_, retry = case.get("event"), case.get("id"), case.get("retry")
        if isinstance(data, str):
            return lambda: format_sse_event(data_str=data, event=event, id=id_, retry=retry)
        dumps = json.dumps
        return lambda: format_sse_event(data_str=dumps(data), event=event, id=id_, retry=retry)

    return factory


def _fastapi_item() -> Factory:
    from fastapi.encoders import jsonable_encoder
    from fastapi.sse import ServerSentEvent, format_sse_event

    try:  # what the router applies to plain items before json.dumps (private in 0.165)
        from fastapi.routing import _normalize_non_finite_floats as normalize
    except ImportError:

        def normalize(value: Any) -> Any:
            return value

    def factory(case: dict[str, Any]) -> Encode:
        data = case["data"]
        event, id_, retry = case.get("event"), case.get("id"), case.get("retry")
        if isinstance(data, str):

            def encode() -> bytes:
                item = ServerSentEvent(raw_data=data, event=event, id=id_, retry=retry)
                return format_sse_event(
                    data_str=item.raw_data,
                    event=item.event,
                    id=item.id,
                    retry=item.retry,
                    comment=item.comment,
                )

            return encode
        dumps = json.dumps
        return lambda: format_sse_event(data_str=dumps(normalize(jsonable_encoder(data))))

    return factory


IMPLEMENTATIONS: dict[str, Callable[[], Factory]] = {
    "asgi_stream": _asgi_stream,
    "sse-starlette": _sse_starlette,
    "fastapi (format_sse_event)": _fastapi_format,
    "fastapi (yielded item)": _fastapi_item,
}


def load() -> tuple[dict[str, Factory], dict[str, str]]:
    """The implementations that can be imported, and why the others cannot."""
    found: dict[str, Factory] = {}
    missing: dict[str, str] = {}
    for name, make in IMPLEMENTATIONS.items():
        try:
            found[name] = make()
        except ImportError as exc:
            missing[name] = f"not installed ({exc.name})"
    return found, missing


def check(factories: dict[str, Factory]) -> None:
    """Every implementation encodes every case to the same events (or the run is wrong)."""
    for case_name, case in ENCODER_CASES.items():
        json_data = not isinstance(case["data"], str)
        expected = None
        for name, factory in factories.items():
            events = normalized(parse_sse(factory(case)()), json_data=json_data)
            if expected is None:
                expected = events
            elif events != expected:
                raise AssertionError(f"{name} encodes {case_name!r} as {events}, not {expected}")
