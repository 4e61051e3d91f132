"""Stream HTTP responses and Server-Sent Events from any ASGI app."""

from .middleware import StreamMiddleware, hand_over
from .stream import CloseReason, Stream, UpstreamError, iterate_in_thread, wait
from .wire import ServerSentEvent

__all__ = [
    "CloseReason",
    "ServerSentEvent",
    "Stream",
    "StreamMiddleware",
    "UpstreamError",
    "hand_over",
    "iterate_in_thread",
    "wait",
]
__version__ = "0.1.0"
