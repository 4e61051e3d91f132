"""Django integration: a view may ``return Stream(...)``.

``StreamViewMiddleware`` (last in ``MIDDLEWARE``) hands the Stream a view returns over to
the ASGI ``asgi_stream.StreamMiddleware`` around Django (``get_asgi_application()``) and
answers with an empty streaming stand-in, which Django's middleware treat as usual. A sync
view's iterable source runs in a thread of its own (``asgi_stream.iterate_in_thread``).
The guide: ``docs/frameworks/django.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.http import StreamingHttpResponse  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from .middleware import StreamMiddleware, hand_over
from .producer import DEFAULT_MAX_BUFFER, DEFAULT_PING
from .sources import IterableSource, is_single_item
from .stream import Stream
from .threads import iterate_in_thread

__all__ = ["StreamViewMiddleware", "get_asgi_application"]

MIDDLEWARE_PATH = "asgi_stream.django.StreamViewMiddleware"
_ASGI_HINT = (
    "serve Django through ASGI with `application = asgi_stream.django.get_asgi_application()` "
    "in asgi.py (or wrap it yourself: asgi_stream.StreamMiddleware(get_asgi_application())); "
    "`manage.py runserver` serves WSGI, and Django's test Client and AsyncClient bypass ASGI "
    "(test through the application, e.g. httpx.ASGITransport(app=application))"
)


class StreamViewMiddleware:
    """Django middleware (the last entry of ``MIDDLEWARE``) that lets views return a
    ``asgi_stream.Stream``: it hands the Stream over to the ASGI ``StreamMiddleware``
    around Django and returns an empty streaming stand-in response in its place.

    Sync- and async-capable; other responses pass through untouched."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        _check_last(settings.MIDDLEWARE)
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return _respond(request, self.get_response(request))

    async def __acall__(self, request: Any) -> Any:
        return _respond(request, await self.get_response(request))


def _respond(request: Any, response: Any) -> Any:
    """``response`` itself, or for a Stream, the stand-in that hands it over."""
    if not isinstance(response, Stream):
        return response
    if _is_sync_view(request):
        _iterate_source_in_thread(response)
    try:
        headers = hand_over(response)
    except RuntimeError as exc:
        raise ImproperlyConfigured(
            f"a view returned a Stream, but no asgi_stream.StreamMiddleware handles this "
            f"request ({exc}): {_ASGI_HINT}"
        ) from exc
    stand_in = StreamingHttpResponse(_nothing(), status=response.status)
    for name, value in headers:  # the Stream's own headers (content type...) and the marker
        stand_in[name] = value
    return stand_in


async def _nothing() -> AsyncIterator[bytes]:
    """The stand-in's body: empty, and async so Django need not consume it in a thread."""
    chunks: tuple[bytes, ...] = ()
    for chunk in chunks:
        yield chunk


def _is_sync_view(request: Any) -> bool:
    """Whether the view Django called for ``request`` was a sync one (unknown: sync, the
    safe side, since running a sync source in a thread never blocks the loop)."""
    func = getattr(getattr(request, "resolver_match", None), "func", None)
    return func is None or not iscoroutinefunction(func)


def _iterate_source_in_thread(stream: Stream) -> None:
    """Make a Stream with a blocking iterable source iterate it in a thread of its own."""
    producer = stream.producer
    source = producer.source.source
    if (
        type(producer.source) is not IterableSource
        or producer.claimed
        or is_single_item(source)
        or isinstance(source, (list, tuple))  # in memory: iterating them never blocks
        or hasattr(source, "__aiter__")  # async-iterable (a QuerySet is both): left async
        or not hasattr(source, "__iter__")
    ):
        return
    producer.source = IterableSource(iterate_in_thread(_closing_connections(source)))


def _closing_connections(iterable: Iterable[Any]) -> Iterator[Any]:
    """The source's items; then, in the source's own thread, close the database connections
    that thread opened (Django's connections are per thread), as Django does for a request."""
    try:
        yield from iterable
    finally:
        from django.db import connections  # type: ignore[import-untyped]

        connections.close_all()


def _is_ours(entry: str) -> bool:
    try:
        cls = import_string(entry)
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, StreamViewMiddleware)


def _check_last(middleware: Iterable[str]) -> None:
    entries = list(middleware)
    ours = [index for index, entry in enumerate(entries) if _is_ours(entry)]
    if not ours:
        return  # used outside settings.MIDDLEWARE (e.g. wrapped by hand): nothing to check
    after = entries[ours[-1] + 1 :]
    if after:
        raise ImproperlyConfigured(
            f"{MIDDLEWARE_PATH} must be the last entry of settings.MIDDLEWARE (closest to the "
            f"views): {', '.join(after)} would receive the view's Stream instead of a response"
        )


def get_asgi_application(
    *, ping: float | None = DEFAULT_PING, max_buffer: int = DEFAULT_MAX_BUFFER
) -> StreamMiddleware:
    """Django's ASGI application wrapped in a ``asgi_stream.StreamMiddleware`` (with
    these defaults for its streams), after checking that ``settings.MIDDLEWARE`` ends with
    ``"asgi_stream.django.StreamViewMiddleware"``. For ``asgi.py``; call ``shutdown()`` on
    it from the server's shutdown trigger to end open streams cleanly."""
    from django.core.asgi import get_asgi_application as django_application  # type: ignore[import-untyped]

    handler = django_application()  # django.setup(), then the middleware chain is built
    if not any(_is_ours(entry) for entry in settings.MIDDLEWARE):
        raise ImproperlyConfigured(
            f'views cannot return a Stream: add "{MIDDLEWARE_PATH}" as the last entry of '
            "settings.MIDDLEWARE"
        )
    return StreamMiddleware(handler, ping=ping, max_buffer=max_buffer)
