"""Django integration: a view may ``return Stream(...)``.

Two pieces, one on each side of Django:

``settings.py``::

    MIDDLEWARE = [
        ...,  # Session, CSRF, Common, Security, GZip...: they all work
        "asgi_stream.django.StreamViewMiddleware",  # last: closest to the views
    ]

``asgi.py``::

    application = asgi_stream.django.get_asgi_application()
    # = asgi_stream.StreamMiddleware(django.core.asgi.get_asgi_application()), checked

A Django response must be an ``HttpResponse``, so :class:`StreamViewMiddleware` hands the
Stream a view returns over to the ASGI :class:`~asgi_stream.StreamMiddleware` around Django
and answers with an empty streaming *stand-in* response. Django's middleware treat the stand-in
as the response it is (cookies, ``Vary``, security headers; no buffering, no ``Content-Length``,
no ETag, no gzip of a body it does not have), Django sends it, and the ASGI middleware sends the
Stream in its place with the headers Django added: one driver for every framework.

A **sync view**'s iterable source (a generator doing ORM queries, a plain iterator) is iterated
in one worker thread of its own, item by item, never on the event loop; the database
connections it opened there are closed when it ends. An async view's source runs as in any
ASGI app (use an async generator and Django's async ORM, or ``iterate_in_thread``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.http import StreamingHttpResponse  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from .middleware import StreamMiddleware, hand_over
from .stream import DEFAULT_MAX_BUFFER, DEFAULT_PING, Stream, _is_single_item

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, Scope

__all__ = ["StreamViewMiddleware", "get_asgi_application"]

logger = logging.getLogger("asgi_stream")

MIDDLEWARE_PATH = "asgi_stream.django.StreamViewMiddleware"
_ASGI_HINT = (
    "serve Django through ASGI with `application = asgi_stream.django.get_asgi_application()` "
    "in asgi.py (or wrap it yourself: asgi_stream.StreamMiddleware(get_asgi_application())); "
    "`manage.py runserver` serves WSGI, and Django's test Client and AsyncClient bypass ASGI "
    "(test through the application, e.g. httpx.ASGITransport(app=application))"
)


class StreamViewMiddleware:
    """Django middleware (the last entry of ``MIDDLEWARE``) that lets views return a
    :class:`~asgi_stream.Stream`: it hands the Stream over to the ASGI ``StreamMiddleware``
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
    source = stream._source
    if (
        stream._mode != "iterable"
        or stream._claimed
        or _is_single_item(source)
        or isinstance(source, (list, tuple))  # in memory: iterating them never blocks
        or hasattr(source, "__aiter__")  # async-iterable (a QuerySet is both): left async
        or not hasattr(source, "__iter__")
    ):
        return
    stream._source = _in_one_thread(source, contextvars.copy_context())


async def _in_one_thread(
    iterable: Iterable[Any], context: contextvars.Context
) -> AsyncIterator[Any]:
    """Iterate ``iterable`` item by item in one dedicated thread (with the view's context).

    One thread, not one per item, because Django's database connections are per thread: a
    generator's queries, transactions and server-side cursors stay on one connection, which
    is closed at the end as Django closes a request's. If the stream ends (a disconnect)
    while an item is being produced, the driver does not wait for that blocking call: the
    generator is closed in its thread once the call returns."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asgi_stream.django")
    pending: Future[Any] | None = None
    iterator: Any = None
    done = object()

    def call(function: Any, *args: Any) -> asyncio.Future[Any]:
        nonlocal pending
        pending = executor.submit(context.run, function, *args)
        return asyncio.wrap_future(pending)

    try:
        iterator = await call(iter, iterable)
        while (item := await call(next, iterator, done)) is not done:
            yield item
    finally:
        finished = executor.submit(context.run, _finish, iterable, iterator)
        executor.shutdown(wait=False)
        if pending is None or pending.done():
            with anyio.CancelScope(shield=True):
                await asyncio.wrap_future(finished)


def _finish(iterable: Any, iterator: Any) -> None:
    """In the source's thread: close the iterator (and the iterable, if distinct), then the
    database connections this thread opened."""
    for obj in (iterator, iterable) if iterator is not iterable else (iterator,):
        close = getattr(obj, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("closing the stream source %r failed", obj)
    try:
        from django.db import connections  # type: ignore[import-untyped]

        connections.close_all()
    except Exception:
        logger.exception("closing the database connections of a stream source failed")


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
    """Django's ASGI application wrapped in a :class:`~asgi_stream.StreamMiddleware` (with
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
    return _DjangoStreamMiddleware(handler, ping=ping, max_buffer=max_buffer)


class _DjangoStreamMiddleware(StreamMiddleware):
    """StreamMiddleware whose driver also learns of a disconnect that Django's handler read.

    Django reads ``receive`` in a task of its own while the response is being produced. If
    the client leaves after a view handed its Stream over but before Django has finished,
    Django takes the ``http.disconnect`` message: a server sends it once, so the driver would
    wait for it forever. Here every later ``receive()`` returns it again at once."""

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            receive = _remember_disconnect(receive)
        await super().__call__(scope, receive, send)


def _remember_disconnect(receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    disconnect: ASGIReceiveEvent | None = None

    async def remembering() -> ASGIReceiveEvent:
        nonlocal disconnect
        if disconnect is not None:
            return disconnect
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnect = message
        return message

    return remembering
