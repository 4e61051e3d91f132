"""Quart integration: call ``init_app(app)`` once, then a view may ``return Stream(...)``.

Quart turns a view's return value into a Response and rejects any other type, so a Stream
never reaches the middleware on its own: ``init_app`` wraps ``app.asgi_app`` in
``StreamMiddleware`` and ``make_response`` so that a Stream (alone or in Quart's tuple
forms) is handed over and replaced by an empty stand-in response, which Quart's hooks see as
usual. The guide: ``docs/frameworks/quart.md``.
"""

from __future__ import annotations

from typing import Any

from quart import Quart
from quart.typing import ResponseReturnValue, ResponseTypes
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from .middleware import StreamMiddleware, hand_over, register_app_adapter
from .producer import DEFAULT_MAX_BUFFER, DEFAULT_PING
from .request import current_request
from .stream import Stream
from .wire import normalize_headers

__all__ = ["accept_streams", "init_app"]

_EXTENSION = "asgi_stream"
_HOOKED = "asgi_stream.make_response"


def init_app(
    app: Quart, *, ping: float | None = DEFAULT_PING, max_buffer: int = DEFAULT_MAX_BUFFER
) -> StreamMiddleware:
    """Let the views of ``app`` (and its blueprints) return a ``Stream``.

    ``ping`` and ``max_buffer`` are the defaults for the app's streams (see
    ``StreamMiddleware``). Returns the middleware: ``await middleware.shutdown()`` ends
    the live streams (do it before the server stops, e.g. in hypercorn's shutdown trigger).
    """
    if not isinstance(app, Quart):
        raise TypeError(f"init_app() takes a Quart app, not {type(app).__name__}")
    if _EXTENSION in app.extensions:
        raise RuntimeError("asgi_stream.quart.init_app() was already called for this app")
    middleware = StreamMiddleware(app.asgi_app, ping=ping, max_buffer=max_buffer)
    # (hypercorn's ASGI types are spelled differently from asgiref's, which asgi_stream uses)
    app.asgi_app = middleware  # type: ignore[method-assign, assignment]
    app.extensions[_EXTENSION] = middleware
    accept_streams(app)
    return middleware


def accept_streams(app: Quart) -> None:
    """Only the ``make_response`` half of ``init_app``, for an app whose ``asgi_app``
    is wrapped in ``StreamMiddleware`` some other way. Idempotent."""
    if app.extensions.get(_HOOKED):
        return
    make_response = app.make_response

    async def stand_in_for_streams(
        result: ResponseReturnValue | HTTPException,
    ) -> ResponseTypes:
        """A Stream becomes a stand-in response; anything else goes to Quart unchanged."""
        parts = _split(result)
        if parts is None:
            return await make_response(result)
        stream, status, headers = parts
        if current_request.get() is None:
            raise RuntimeError(
                "a view returned a Stream but no StreamMiddleware handles this request: call "
                "asgi_stream.quart.init_app(app), which puts one in app.asgi_app, and serve "
                "the app itself, not an asgi_app taken before init_app"
            )
        if headers is not None:
            # The tuple's headers belong to the Stream (they may replace its content-type or
            # cache-control, which the middleware would not take from the stand-in).
            given = normalize_headers(Headers(headers).items())
            names = {name for name, _ in given}
            producer = stream.producer
            producer.headers = [p for p in producer.headers if p[0] not in names] + given
        stand_in = app.response_class(b"", status=stream.status, headers=Headers(hand_over(stream)))
        # Quart applies the tuple's status to the stand-in; the middleware keeps it.
        return await make_response(stand_in if status is None else (stand_in, int(status)))

    app.make_response = stand_in_for_streams  # type: ignore[method-assign]
    app.extensions[_HOOKED] = True


def _split(result: object) -> tuple[Stream, Any, Any] | None:
    """``(stream, status, headers)`` if ``result`` is a Stream or one of Quart's tuple forms
    around one (parsed as Quart does), else ``None``."""
    if isinstance(result, Stream):
        return result, None, None
    if not isinstance(result, tuple) or not result or not isinstance(result[0], Stream):
        return None
    if len(result) == 3:
        return result[0], result[1], result[2]
    if len(result) == 2:
        if isinstance(result[1], (Headers, dict, list)):
            return result[0], None, result[1]
        return result[0], result[1], None
    return None  # Quart's own TypeError names the valid forms


def _adapt(app: object) -> None:
    """The plain wiring, ``app.asgi_app = StreamMiddleware(app.asgi_app)``, works too once
    this module is imported: the middleware hands us its app, and a Quart app's bound
    ``asgi_app`` gets ``accept_streams``."""
    owner = getattr(app, "__self__", None)
    if isinstance(owner, Quart):
        accept_streams(owner)


register_app_adapter(_adapt)
