"""The asgi_stream demo: every mode of ``Stream`` live in one page, from a framework-free ASGI app.

Run it with ``./run demo`` (or ``python examples/demo.py [--host HOST] [--port PORT]``) and open
the URL it prints. The page (``demo.html``, beside this file) opens four ``EventSource``s:

``/clock``    callback mode: ``Stream(tick, event="tick")``, one named event per second;
``/counter``  value-based mode: ``Stream(retry=...)`` fed by a task with ``send(n, id=n)``; the
              server ends it every ~5 s, the browser reconnects after ``retry`` ms with
              ``Last-Event-ID`` and the count goes on, nothing lost and nothing repeated;
``/reply``    automatic mode: ``Stream(async_generator)``, an "assistant reply" token by token,
              ending with an ``event: done``;
``/proxy``    proxy mode: ``Stream(client.send(request, stream=True))`` passes another stream
              through unchanged: ``/upstream/ticker``, a stand-in for a remote service (a price
              ticker of named ``quote`` and ``news`` events), read over HTTP with httpx;
``/room``     a channel: ``Stream(channel.subscribe("room"))``, fed by the page's own "Send"
              button (``POST /room``); every subscriber of every worker that shares the store
              gets each message once, and a reload resumes from ``Last-Event-ID``. The store
              is memory, or Redis when ``REDIS_URL`` is set: run two demos on two ports with
              the same ``REDIS_URL`` and the messages cross between them.

No framework: a few lines of routing on raw ASGI, wrapped in ``StreamMiddleware``, served by
hypercorn through ``asgi_stream.hypercorn``: Ctrl-C ends the open streams cleanly, then stops.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import httpx

from asgi_stream import Channel, CloseReason, ServerSentEvent, Stream, StreamMiddleware, wait

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

# The upstream ticker's news: two lines each (headline, then detail), so every one of them is a
# multi-line event that must cross the proxy and reach the page intact.
HEADLINES: tuple[tuple[str, str], ...] = (
    ("Proxy keeps every byte", "The upstream's frames reach your browser exactly as sent."),
    ("Upstream closed on leave", "Close this tab: the ticker stops within one tick."),
    ("Heartbeats hold the line", "An idle stream sends ': ping' so proxies keep it open."),
    ("Slow readers dropped", "A client that stops reading is cut off; its memory is freed."),
    ("Ctrl-C ends streams cleanly", "Every client gets the final frame before the server stops."),
)


@dataclass(frozen=True)
class Settings:
    """The demo's timings, in milliseconds (like every duration in asgi_stream).

    The defaults are for people watching; the tests pass shorter ones.
    """

    clock_every: int = 1_000
    counter_every: int = 500
    counter_batch: int = 10  # values per connection: the server ends the stream after ~5 s
    retry: int = RETRY_MS  # the counter's ``retry:``: how long the browser waits to reconnect
    token_delay: tuple[int, int] = (25, 110)  # random pause before each token of the reply
    ticker_every: int = 700  # the upstream ticker's pace
    news_every: int = 6  # every n-th upstream event is a (two-line) news item
    seed: int | None = None  # of the ticker's random walk: the same prices on every connection
    redis_url: str | None = None  # the room's store: memory, or Redis shared by every worker
    room_history: int = 50  # messages the room keeps for the pages that come back


ROOM_MESSAGE_MAX = 280
"""The longest message the room accepts, in characters."""


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
            "/proxy": self.proxy,
            "/upstream/ticker": self.ticker,
            "/room": self.room,
        }
        # The room's channel: entered by the lifespan, like the resources below.
        self.channel = Channel(
            settings.redis_url, history=settings.room_history, prefix="asgi_stream_demo:"
        )
        # Lives as long as the app (opened and closed by the lifespan): a task group for the
        # producers that outlive their request handler, and the proxy's HTTP client.
        self._tasks: anyio.abc.TaskGroup | None = None
        self._http: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Stream | None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect: refuse it, this demo has none
            await send({"type": "websocket.close", "code": 1008})
        elif scope["method"] == "POST" and scope["path"] == "/room":
            await self.say(receive, send)
        elif scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b"Method Not Allowed\n", headers=((b"allow", b"GET, HEAD"),))
        elif scope["path"] == "/room/info":
            info = {"store": "memory" if self.settings.redis_url is None else "redis"}
            await respond(send, 200, json.dumps({**info, "worker": os.getpid()}).encode())
        elif scope["path"] == "/":
            html = b"text/html; charset=utf-8"
            await respond(send, 200, PAGE, content_type=html, head=scope["method"] == "HEAD")
        elif route := self.routes.get(scope["path"]):
            stream = route(scope)
            stream.on_close(lambda reason: self._closed(scope["path"], reason))
            return stream  # StreamMiddleware takes it from here
        else:
            await respond(send, 404, b"Not Found\n")
        return None

    def _closed(self, path: str, reason: CloseReason) -> None:
        log.info("%s closed: %s", path, reason)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Answer startup and shutdown, and own the long-lived resources in between.

        An app must answer the lifespan scope: hypercorn's trio worker crashes on one that
        returns without a word. On shutdown the remaining producers are cancelled and the
        proxy's client is closed.
        """
        # The proxy's client: no read timeout shorter than the upstream's heartbeat, no
        # pooled connections (each proxied stream owns one, closed when it ends), and no
        # HTTP_PROXY from the environment for a request to this very machine.
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=60.0),
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,
        )
        async with client, self.channel, anyio.create_task_group() as tasks:
            while (await receive())["type"] != "lifespan.shutdown":
                self._tasks, self._http = tasks, client
                await send({"type": "lifespan.startup.complete"})
            self._tasks = self._http = None
            tasks.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    # -- the streams ------------------------------------------------------------------------

    def clock(self, scope: Scope) -> Stream:
        """Callback mode: the driver starts the response at once and runs ``tick`` as a task.

        ``tick`` loops forever without checking anything: when the client leaves (or the server
        shuts down) the driver cancels it. ``event="tick"`` names every event it sends.
        """
        every = self.settings.clock_every

        async def tick(stream: Stream) -> None:
            while True:
                now = time.time()
                local = time.localtime(now)
                clock, date = time.strftime("%H:%M:%S", local), time.strftime("%a %d %b %Y", local)
                stream.send({"time": clock, "date": date, "streams": self.app.active})
                await stream.wait(every - (now * 1000) % every)  # on the next whole period

        return Stream(tick, event="tick")

    def counter(self, scope: Scope) -> Stream:
        """Value-based mode: the handler returns an empty Stream and a task feeds it.

        ``retry=`` tells the browser to reconnect ``settings.retry`` ms after the server ends
        the stream, and every value carries ``id=n``: the reconnect sends ``Last-Event-ID: n``,
        so the new stream resumes at ``n + 1``. A named ``resume`` event first tells the page
        what the server received and where it goes on.
        """
        stream = Stream(retry=self.settings.retry)
        resume_after = _int_or_zero(stream.last_event_id)  # from the request's header
        if stream.last_event_id is not None:
            log.info("/counter resumes after Last-Event-ID %s", stream.last_event_id)
        resume = {"last_event_id": stream.last_event_id, "next": resume_after + 1}
        stream.send({**resume, "retry": self.settings.retry}, event="resume")
        self._background().start_soon(self._count, stream, resume_after + 1)
        return stream

    async def _count(self, stream: Stream, first: int) -> None:
        for n in range(first, first + self.settings.counter_batch):
            if not stream.send(n, id=n):
                return  # closed: the client left or the server is stopping, so stop counting
            await wait(self.settings.counter_every)
        stream.close()  # the browser reconnects `retry` ms later, with Last-Event-ID: n

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

    def proxy(self, scope: Scope) -> Stream:
        """Proxy mode: stream another server's response through, byte for byte.

        The source is the *awaitable* ``client.send(request, stream=True)``: the driver awaits
        it, answers 502 if the upstream fails, keeps the upstream's content type, passes its
        bytes on unchanged, and closes the upstream response when the browser leaves.
        """
        url = f"{_origin(scope)}/upstream/ticker"  # this server, standing in for another one
        client = self._client()
        request = client.build_request("GET", url, headers={"accept": "text/event-stream"})
        return Stream(client.send(request, stream=True))

    def ticker(self, scope: Scope) -> Stream:
        """The upstream of ``/proxy``: named ``quote`` events (JSON) and two-line ``news``."""
        return Stream(self._quotes())

    async def _quotes(self) -> AsyncIterator[ServerSentEvent]:
        rng = random.Random(self.settings.seed)
        price = 100.0
        for n in itertools.count(1):
            if n % self.settings.news_every == 0:
                headline, detail = HEADLINES[(n // self.settings.news_every - 1) % len(HEADLINES)]
                yield ServerSentEvent(f"{headline}\n{detail}", event="news")
            else:
                change = round(rng.gauss(0.02, 0.6), 2)
                price = round(max(1.0, price + change), 2)
                quote = {"symbol": "ASGI", "price": price, "change": change, "n": n}
                yield ServerSentEvent(quote, event="quote")
            await wait(self.settings.ticker_every)

    def room(self, scope: Scope) -> Stream:
        """A channel's topic: every message of every worker, each once, in order.

        ``Last-Event-ID`` (the browser's own reconnection) resumes after the last message
        the page got. Without it, the page passes the id it kept from before a reload as
        ``?from=``; an id the room cannot resume from (``start`` on a first visit, or one
        the bounded history dropped) gets the ``reset`` event, then every message kept.
        """
        query = dict(parse_qsl(scope["query_string"].decode()))
        header = dict(scope["headers"]).get(b"last-event-id")
        given = header.decode("latin-1") if header is not None else query.get("from")
        return Stream(self.channel.subscribe("room", last_event_id=given))

    async def say(self, receive: Receive, send: Send) -> None:
        """``POST /room``: publish the body (text) to every subscriber of the room."""
        body, more = b"", True
        while more and len(body) <= 4 * ROOM_MESSAGE_MAX:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        text = body.decode("utf-8", errors="replace").strip()
        if not text or len(text) > ROOM_MESSAGE_MAX or more:
            problem = f"a message is 1 to {ROOM_MESSAGE_MAX} characters\n".encode()
            await respond(send, 400, problem)
            return
        event_id = await self.channel.publish("room", {"text": text, "worker": os.getpid()})
        await respond(send, 200, json.dumps({"id": event_id}).encode())

    # -- app-wide resources --------------------------------------------------------------------

    def _background(self) -> anyio.abc.TaskGroup:
        """The app-wide task group, for producers that outlive their request handler."""
        if self._tasks is None:
            raise RuntimeError("the lifespan has not started: serve the demo with lifespan on")
        return self._tasks

    def _client(self) -> httpx.AsyncClient:
        """The app-wide HTTP client of the proxy."""
        if self._http is None:
            raise RuntimeError("the lifespan has not started: serve the demo with lifespan on")
        return self._http


def create_app(settings: Settings = Settings()) -> StreamMiddleware:
    """A fresh demo application (the tests make one per server)."""
    return Demo(settings).app


app = create_app(Settings(redis_url=os.environ.get("REDIS_URL") or None))


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


def _origin(scope: Scope) -> str:
    """``http://host:port`` of the address the request came in on (this very server)."""
    host, port = scope.get("server") or ("127.0.0.1", 8000)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- serving -----------------------------------------------------------------------------------


async def serve(app: StreamMiddleware, host: str, port: int, *, grace: int = 2_000) -> None:
    """Serve ``app`` with hypercorn until SIGINT/SIGTERM, then end its streams and stop.

    ``asgi_stream.hypercorn.serve`` runs the shutdown trigger below, then
    ``app.shutdown(grace)``: every open stream ends with its final frame
    (``on_close("shutdown")``) *before* hypercorn stops, so no client is cut off mid-event and
    hypercorn has no endless response to wait for.
    """
    from hypercorn.config import Config

    from asgi_stream.hypercorn import serve as serve_streams

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

    async def ctrl_c() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break  # leaving the block restores the handlers: a second Ctrl-C stops at once
        print(f"\nstopping: ending {app.active} open stream(s)", flush=True)

    await serve_streams(app, config, grace=grace, shutdown_trigger=ctrl_c)
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s  %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per proxied request
    try:
        anyio.run(serve, app, args.host, args.port, backend=args.backend)
    except KeyboardInterrupt:  # the second Ctrl-C
        sys.exit(130)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        sys.exit(f"{args.host}:{args.port} is in use; try another port: --port {args.port + 1}")


if __name__ == "__main__":
    main()
