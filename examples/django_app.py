"""A minimal single-file Django app whose views return Streams.

    python examples/django_app.py                 # hypercorn on http://127.0.0.1:8002/
    curl -N http://127.0.0.1:8002/clock           # async view: one "tick" event per second
    curl -N 'http://127.0.0.1:8002/count?to=5'    # sync view: a blocking generator, streamed

In a real project the settings go to settings.py and ``application`` to asgi.py.
Ctrl-C ends the open streams cleanly, then the server stops.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Iterator

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.gzip.GZipMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "asgi_stream.django.StreamViewMiddleware",  # last: lets views return a Stream
    ],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
)
django.setup()

from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from asgi_stream import Stream  # noqa: E402
from asgi_stream.django import get_asgi_application  # noqa: E402

PAGE = """<!doctype html>
<title>asgi_stream + Django</title>
<p>clock: <b id="clock">…</b></p>
<script>
  new EventSource("/clock").addEventListener("tick", (e) => {
    document.getElementById("clock").textContent = e.data;
  });
</script>
"""


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


async def clock(request: HttpRequest) -> Stream:
    """Async view, callback mode: runs until the client leaves or the server stops."""

    async def tick(stream: Stream) -> None:
        while True:
            stream.send(time.strftime("%H:%M:%S"), event="tick")
            await stream.wait(1_000)

    return Stream(tick)


def count(request: HttpRequest) -> Stream:
    """Sync view, automatic mode: the generator may block (sleep, ORM queries); it runs in
    a thread of its own, and each item reaches the client as soon as it is yielded."""
    to = int(request.GET.get("to", "10"))

    def numbers() -> Iterator[int]:
        for n in range(1, to + 1):
            yield n
            if n < to:
                time.sleep(0.25)

    return Stream(numbers())


urlpatterns = [path("", index), path("clock", clock), path("count", count)]

# asgi.py: Django wrapped in asgi_stream.StreamMiddleware (and MIDDLEWARE checked)
application = get_asgi_application()


async def stop_on_signal() -> None:
    """hypercorn's shutdown trigger: on SIGINT/SIGTERM, first end every open stream (each
    client sees a clean end), then let hypercorn stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"stopping: ending {application.active} open stream(s)", flush=True)
    await application.shutdown(grace=2_000)


async def main(port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 3
    print(f"open http://127.0.0.1:{port}/  (Ctrl-C to stop)", flush=True)
    await serve(application, config, shutdown_trigger=stop_on_signal)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="asgi_stream Django example")
    parser.add_argument("--port", type=int, default=8002)
    asyncio.run(main(parser.parse_args().port))
