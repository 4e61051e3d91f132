"""Stream HTTP responses and Server-Sent Events from any ASGI app."""

from .channels import Channel
from .frames import CloseReason
from .middleware import StreamMiddleware, hand_over
from .sources import UpstreamError
from .stream import Stream, wait
from .threads import iterate_in_thread
from .wire import ServerSentEvent

__all__ = [
    "Channel",
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
