"""Make uvicorn end every stream first on SIGINT/SIGTERM, then stop: ``graceful(app)``.

On SIGINT/SIGTERM uvicorn stops accepting and waits for each open response to finish before
the lifespan's shutdown. An endless stream never finishes: plain ``uvicorn module:app`` waits
for it forever, or, with ``--timeout-graceful-shutdown``, cancels it mid-event when the
timeout expires (the client sees a truncated body). ``graceful(app)`` makes uvicorn's shutdown,
in this process, first call ``StreamMiddleware.shutdown``: every stream gets
``on_close("shutdown")`` and its final frame, and uvicorn has nothing left to wait for::

    # myapp.py
    from asgi_stream import StreamMiddleware
    from asgi_stream.uvicorn import graceful

    app = graceful(StreamMiddleware(inner))

    $ uvicorn myapp:app --workers 4    # each worker imports myapp, and ends its own streams

or from Python, ``uvicorn.run(graceful(StreamMiddleware(inner)), ...)``. Needs uvicorn.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .middleware import StreamMiddleware

__all__ = ["graceful"]

# Every app given to ``graceful`` in this process, with its grace in ms.
_GRACEFUL: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def graceful(app: StreamMiddleware, *, grace: float = 5_000) -> StreamMiddleware:
    """Return ``app``, whose streams uvicorn's shutdown in this process now ends first,
    each within ``grace`` ms (then they are cut off), before it waits for connections."""
    if not callable(getattr(app, "shutdown", None)) or not hasattr(app, "active"):
        raise TypeError(
            f"graceful() needs the StreamMiddleware itself (it calls its shutdown()), "
            f"not {type(app).__name__}"
        )
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
        raise ValueError(f"grace must be a number of milliseconds >= 0, not {grace!r}")
    _GRACEFUL[app] = grace
    _end_streams_first()
    return app


def _end_streams_first() -> None:
    """Wrap ``uvicorn.Server.shutdown`` (public, called once per server on its way out):
    stop accepting, end the registered apps' streams, then do what uvicorn does."""
    try:
        from uvicorn.server import Server
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("asgi_stream.uvicorn needs uvicorn: pip install uvicorn") from None
    original = Server.shutdown
    if getattr(original, "ends_streams_first", False):
        return

    async def shutdown(self: Any, sockets: Any = None) -> None:
        for server in getattr(self, "servers", ()):
            server.close()  # no new connection meanwhile (uvicorn closes them again: harmless)
        apps = list(_GRACEFUL.items())
        await asyncio.gather(*(app.shutdown(grace) for app, grace in apps))
        await original(self, sockets)

    shutdown.ends_streams_first = True  # type: ignore[attr-defined]
    Server.shutdown = shutdown  # type: ignore[method-assign]
