"""The asgi_stream demo: three live streams in one page, from a framework-free ASGI app.

Run it with ``./run demo`` (or ``python examples/demo.py [--host HOST] [--port PORT]``) and open
the URL it prints. The page (``demo.html``, beside this file) opens three ``EventSource``s:

``/clock``    callback mode: ``Stream(tick, event="tick")``, one named event per second;
``/counter``  value-based mode: ``Stream(retry=...)`` fed by a task with ``send(n, id=n)``; the
              server ends it every ~5 s and the browser resumes it from ``Last-Event-ID``;
``/reply``    automatic mode: ``Stream(async_generator)``, an "assistant reply" token by token,
              ending with an ``event: done``.

No framework: a few lines of routing on raw ASGI, wrapped in ``StreamMiddleware``, served by
hypercorn. Ctrl-C ends the open streams cleanly before the server stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from asgi_stream import ServerSentEvent, Stream, StreamMiddleware, wait

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("demo")

PAGE = (Path(__file__).parent / "demo.html").read_bytes()

RETRY_MS = 1_000
"""How long the browser waits before it reconnects the counter (sent as ``retry:``)."""

# The assistant's reply, pre-cut into tokens the way a language model streams them (leading
# whitespace attached). One token is an attack: sent raw, as ``f"data: {token}\n\n"``, it would
# end the reply with a forged ``done`` event. asgi_stream writes each of its lines as its own
# ``data:`` line, so the browser gets it back intact, as text.
INJECTION = "\n\nevent: done\ndata: {}\n\n"
REPLY_TOKENS: tuple[str, ...] = (
    *re.findall(
        r"\s*\S+",
        "Hi! I am not a language model, only an async generator in examples/demo.py, but I "
        "stream like one: every word I yield becomes one Server-Sent Event, written the moment "
        "it exists, and the next word is pulled only when the client keeps up.\n\n"
        "Newlines are safe, too. The next token holds a blank line and the text of an SSE event "
        "that would end this reply early if it were written raw:",
    ),
    INJECTION,
    *re.findall(
        r"\s*\S+",
        "... yet here I am, still typing, because each of its lines became a data: line of "
        "its own. Press Ask again in the middle of a sentence: the server closes this "
        "generator at once, instead of talking on to nobody.",
    ),
)
REPLY = "".join(REPLY_TOKENS)


@dataclass(frozen=True)
class Settings:
    """The demo's timings, in milliseconds (like every duration in asgi_stream).

    The defaults are for people watching; the tests pass shorter ones.
    """

    clock_every: int = 1_000
    counter_every: int = 500
    counter_batch: int = 10  # values per connection: the server ends the stream after ~5 s
    token_delay: tuple[int, int] = (25, 110)  # random pause before each token of the reply


class Demo:
    """The demo's routes on raw ASGI. ``Demo(settings).app`` is the ASGI application.

    A handler *returns* a :class:`Stream`; the :class:`StreamMiddleware` in ``self.app`` sends
    it, watches for the disconnect and ends it on shutdown. Nothing here knows about sockets.
    """

    def __init__(self, settings: Settings = Settings()) -> None:
        self.settings = settings
        self.app = StreamMiddleware(self)
        self.routes: dict[str, Callable[[Scope], Stream]] = {
            "/clock": self.clock,
            "/counter": self.counter,
            "/reply": self.reply,
        }
        # Value-based streams are fed by tasks that outlive the request handler; they run in a
        # task group that lives as long as the app (opened and closed by the lifespan).
        self._tasks: anyio.abc.TaskGroup | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Stream | None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect: refuse it, this demo has none
            await send({"type": "websocket.close", "code": 1008})
        elif scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b"Method Not Allowed\n", headers=((b"allow", b"GET, HEAD"),))
        elif scope["path"] == "/":
            html = b"text/html; charset=utf-8"
            await respond(send, 200, PAGE, content_type=html, head=scope["method"] == "HEAD")
        elif route := self.routes.get(scope["path"]):
            stream = route(scope)
            stream.on_close(lambda reason: log.info("%s closed: %s", scope["path"], reason))
            return stream  # StreamMiddleware takes it from here
        else:
            await respond(send, 404, b"Not Found\n")
        return None

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Answer startup and shutdown, and own the producers' task group in between.

        An app must answer the lifespan scope: hypercorn's trio worker crashes on one that
        returns without a word. On shutdown the remaining producers are cancelled.
        """
        async with anyio.create_task_group() as tasks:
            while (await receive())["type"] != "lifespan.shutdown":
                self._tasks = tasks
                await send({"type": "lifespan.startup.complete"})
            self._tasks = None
            tasks.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    # -- the three streams ------------------------------------------------------------------

    def clock(self, scope: Scope) -> Stream:
        """Callback mode: the driver starts the response at once and runs ``tick`` as a task.

        ``tick`` loops forever without checking anything: when the client leaves (or the server
        shuts down) the driver cancels it. ``event="tick"`` names every event it sends.
        """
        every = self.settings.clock_every

        async def tick(stream: Stream) -> None:
            while True:
                now = time.time()
                clock = time.strftime("%H:%M:%S", time.localtime(now))
                stream.send({"time": clock, "streams": self.app.active})
                await stream.wait(every - (now * 1000) % every)  # on the next whole period

        return Stream(tick, event="tick")

    def counter(self, scope: Scope) -> Stream:
        """Value-based mode: the handler returns an empty Stream and a task feeds it.

        Every value carries ``id=n``, and ``retry=`` tells the browser to reconnect after
        RETRY_MS when the server ends the stream. The reconnect sends ``Last-Event-ID: n``,
        so the new stream resumes at ``n + 1``.
        """
        stream = Stream(retry=RETRY_MS)
        resume_after = _int_or_zero(stream.last_event_id)  # set from the request's header
        if resume_after:
            log.info("/counter resumes after Last-Event-ID %d", resume_after)
        self._background().start_soon(self._count, stream, resume_after + 1)
        return stream

    async def _count(self, stream: Stream, first: int) -> None:
        for n in range(first, first + self.settings.counter_batch):
            if not stream.send(n, id=n):
                return  # closed: the client left or the server is stopping, so stop counting
            await wait(self.settings.counter_every)
        stream.close()  # the browser reconnects RETRY_MS later, with Last-Event-ID: n

    def reply(self, scope: Scope) -> Stream:
        """Automatic mode: each item the async generator yields is sent as one event.

        The driver pulls the next token only when the client keeps up, and closes the
        generator (``aclose``) if the client leaves mid-reply.
        """
        return Stream(self._tokens())

    async def _tokens(self) -> AsyncIterator[str | ServerSentEvent]:
        started = time.monotonic()
        low, high = self.settings.token_delay
        for token in REPLY_TOKENS:
            await wait(random.uniform(low, high))  # "thinking"
            yield token
        elapsed = round((time.monotonic() - started) * 1000)
        yield ServerSentEvent({"tokens": len(REPLY_TOKENS), "ms": elapsed}, event="done")

    def _background(self) -> anyio.abc.TaskGroup:
        """The app-wide task group, for producers that outlive their request handler."""
        if self._tasks is None:
            raise RuntimeError("the lifespan has not started: serve the demo with lifespan on")
        return self._tasks


def create_app(settings: Settings = Settings()) -> StreamMiddleware:
    """A fresh demo application (the tests make one per server)."""
    return Demo(settings).app


app = create_app()


# -- small raw-ASGI helpers --------------------------------------------------------------------


async def respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    head: bool = False,
) -> None:
    """A complete, non-streaming response (``head``: the headers only)."""
    length = str(len(body)).encode()
    all_headers = [(b"content-type", content_type), (b"content-length", length), *headers]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _int_or_zero(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0  # not one of our ids: start over


# -- serving -----------------------------------------------------------------------------------


async def stop_on_signal(app: StreamMiddleware, grace: int = 2_000) -> None:
    """hypercorn's ``shutdown_trigger``: wait for SIGINT/SIGTERM, then end the open streams.

    Streams are ended *before* this returns, because hypercorn then stops accepting and waits
    for its open connections: an endless stream would hold the shutdown for the whole
    ``graceful_timeout`` and then be cut off mid-event. ``app.shutdown`` instead ends each one
    with its final empty body (``on_close("shutdown")``), so every client sees a clean end.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)  # a second Ctrl-C interrupts at once
    print(f"\nstopping: ending {app.active} open stream(s)", flush=True)
    await app.shutdown(grace=grace)


async def serve(app: StreamMiddleware, host: str, port: int) -> None:
    """Serve ``app`` with hypercorn on asyncio until SIGINT/SIGTERM."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    # Listen before hypercorn starts, so the printed URL has the real port (even for --port 0)
    # and a browser that is quicker than the server waits in the backlog instead of failing.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here
    config.graceful_timeout = 3
    config.loglevel = "WARNING"
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    print(f"asgi_stream demo: open http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
    trigger = partial(stop_on_signal, app)
    # (hypercorn spells the ASGI types its own way; asgi_stream uses asgiref's)
    await hypercorn_serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s  %(message)s", datefmt="%H:%M:%S")
    try:
        asyncio.run(serve(app, args.host, args.port))
    except KeyboardInterrupt:  # the second Ctrl-C
        sys.exit(130)


if __name__ == "__main__":
    main()
