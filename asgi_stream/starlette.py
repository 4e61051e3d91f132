"""Starlette and FastAPI: return a Stream from a route or an endpoint.

Wire ``app = StreamMiddleware(Starlette(...))`` (or ``FastAPI()``) outermost, and keep the
instance (``active``, ``shutdown()``). Starlette runs a returned Stream as an ASGI app inside
its stack; FastAPI needs this module's ``Stream`` (also a Starlette ``Response``), and once
this module is imported a plain ``asgi_stream.Stream`` returned from a FastAPI endpoint raises
a ``TypeError`` naming it, instead of becoming JSON. The guide:
``docs/frameworks/starlette.md`` and ``docs/frameworks/fastapi.md``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Literal, NoReturn, cast

from . import stream as core
from .producer import UNSET, Unset
from .wire import HeadersInput, check_status, normalize_headers

try:
    from starlette.background import BackgroundTask
    from starlette.datastructures import MutableHeaders
    from starlette.responses import Response
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "asgi_stream.starlette needs Starlette: pip install 'asgi-stream[starlette]' "
        "(FastAPI brings it: pip install 'asgi-stream[fastapi]')"
    ) from None

__all__ = ["Stream"]


class _MediaType:
    """``Stream.media_type``: the stream's content type without parameters on an instance,
    ``text/event-stream`` on the class (what FastAPI's OpenAPI reads from a response class)."""

    def __get__(self, obj: Stream | None, owner: type | None = None) -> str:
        if obj is None:
            return "text/event-stream"
        return obj.producer.content_type().decode("latin-1").split(";")[0].strip()


class Stream(core.Stream, Response):
    """An ``asgi_stream.Stream`` that is also a Starlette ``Response``.

    Return it from a FastAPI endpoint (or a Starlette route). It takes the arguments of
    ``asgi_stream.Stream`` plus ``background``, and offers what Starlette and FastAPI use
    on a response: ``status_code`` (the same as ``status``), ``headers`` and ``raw_headers``
    (the Stream's own headers, live: the streaming defaults are added when it is sent unless
    set here), ``set_cookie``/``delete_cookie``, ``media_type`` and ``background``, which runs
    after the stream has ended, whatever the reason. Calling it runs the stream, driven by
    the ``StreamMiddleware`` of the request when there is one.
    """

    # (Response's ``headers`` and ``status_code`` are plain attributes there, properties
    # over the Stream's producer here.)

    media_type = _MediaType()

    def __init__(
        self,
        source: Any = None,
        /,
        *,
        event: str | None = None,
        retry: int | None = None,
        status: int = 200,
        headers: HeadersInput = None,
        ping: float | Unset | None = UNSET,
        max_buffer: int | Unset = UNSET,
        format: Literal["sse", "ndjson", "text"] = "sse",
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            source,
            event=event,
            retry=retry,
            status=status,
            headers=headers,
            ping=ping,
            max_buffer=max_buffer,
            format=format,
        )  # asgi_stream.Stream's; Response.__init__ (which renders a body) is not called
        self.background = background

    @property
    def status_code(self) -> int:
        """The response status: the same as ``status``."""
        return self.status

    @status_code.setter
    def status_code(self, value: int) -> None:
        self.status = check_status(value, "status_code")

    @property
    def headers(self) -> MutableHeaders:
        """The Stream's own headers, as Starlette's ``MutableHeaders`` (changes apply)."""
        return MutableHeaders(raw=self.producer.headers)

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The Stream's own headers as ASGI pairs: the live list (``set_cookie`` adds here)."""
        return self.producer.headers

    @raw_headers.setter
    def raw_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        self.producer.headers = _checked(value)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Send the stream (tracked by the request's StreamMiddleware, if any), then run
        ``background``."""
        # Headers changed through ``headers``/``raw_headers`` get the checks of the constructor.
        self.producer.headers = _checked(self.producer.headers)
        await super().__call__(scope, receive, send)
        if self.background is not None:
            await self.background()


def _checked(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs through the constructor's checks (normalize_headers takes bytes too)."""
    return normalize_headers(cast("HeadersInput", pairs))


def _not_json(stream: object) -> NoReturn:
    raise TypeError(
        "a FastAPI endpoint returned an asgi_stream.Stream, which FastAPI would serialise as "
        "JSON: return asgi_stream.starlette.Stream instead (the same Stream, and a Starlette "
        "Response): from asgi_stream.starlette import Stream"
    )


def _refuse_plain_streams_in_fastapi() -> None:
    """Make FastAPI's ``jsonable_encoder`` raise for a plain ``asgi_stream.Stream`` (an
    endpoint that returned one) instead of turning its attributes into JSON."""
    try:
        if importlib.util.find_spec("fastapi") is None:
            return  # Starlette alone: nothing to guard, and nothing imported
        encoders: Any = importlib.import_module("fastapi.encoders")
        encoders.ENCODERS_BY_TYPE.setdefault(core.Stream, _not_json)
    except Exception:  # pragma: no cover - a broken or different FastAPI: leave it alone
        return


_refuse_plain_streams_in_fastapi()
