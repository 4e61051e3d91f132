"""The request a stream answers: a context variable that StreamMiddleware sets around the app.

It lets a Stream built inside a handler know its request (``last_event_id`` at once) and,
when called as an ASGI app, be driven by that middleware (tracked, ended on shutdown).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from .producer import Producer

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["RequestContext", "current_request"]


class RequestContext(Protocol):
    """What the StreamMiddleware handling the current request offers a Stream."""

    scope: Scope

    async def run(
        self,
        producer: Producer,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        """Drive ``producer`` as a live stream of that middleware."""


current_request: ContextVar[RequestContext | None] = ContextVar(
    "asgi_stream.current_request", default=None
)
"""Set by StreamMiddleware around the app, so Streams built or run inside know their request."""
