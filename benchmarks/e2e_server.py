"""Benchmark 3, server side: one implementation served by hypercorn (asyncio) or uvicorn
(uvloop + httptools), one worker, on 127.0.0.1, in its own process.

    python benchmarks/e2e_server.py IMPLEMENTATION [--server hypercorn|uvicorn]

binds a free port, prints ``READY <port> <pid>`` and serves until SIGTERM/SIGINT or until its
standard input closes (so it never outlives the benchmark that started it), or at most
``--max-seconds``.

Every implementation streams the same async generators (``SOURCES``); each one only changes
how the items become SSE on the wire:

    /stream?n=N               N events as fast as possible (throughput)
    /ticks?n=N&interval=S&phase=P
                              N events, one every S seconds, each carrying its creation time
                              (``time.monotonic()``, system-wide on Linux) for latency
    /await?n=N                N events, ``await asyncio.sleep(0)`` before each one (a source
                              that awaits per item: LLM tokens, database rows)
    /idle                     one event, then nothing until the client leaves (memory)
    /track?id=X               an event every 50 ms until the client leaves; the generator's
                              ``finally`` records when the producer was cleaned up
    /control/cleaned?id=X     that time as JSON (``null`` until it happened)

Fan-out (value-based streams, the same payloads for every implementation):

    /subscribe                a subscriber: one "hello" event at once, then every published
                              event until the client leaves
    /control/subscribers      how many subscribers are registered
    /control/publish?n=E&interval=S
                              start publishing E events to every subscriber, one every S
                              seconds (S=0: back to back, ``await asyncio.sleep(0)`` between
                              them); each carries ``time.monotonic()`` at its creation
    /control/gc               time spent in the garbage collector since the last
                              /control/gc?reset=1, and the longest single pause
    /control/objects          ``len(gc.get_objects())`` after ``gc.collect()``
    /control/collect          ``gc.collect()``: how many unreachable objects it found

Channels (``asgi_stream Channel`` and ``asgi_stream Channel (Redis)`` only; the channel is
entered in the app's lifespan; benchmarks/channels.py):

    /subscribe                ``Stream(channel.subscribe(topic, last_event_id=...))``: the
                              library's reset event first (see ``channel_app``), then every
                              event published to the topic
    /replay?topic=T           ``Stream(channel.subscribe(T))``: the history after the
                              request's ``Last-Event-ID``, then live
    /control/fill?topic=T&n=N publish N events to T; the first one's id as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ITEM_TEXT, make_item, raise_nofile

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Wrap = Callable[[dict[str, Any]], Any]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SERVERS = ("hypercorn", "uvicorn")
background: set[asyncio.Task[None]] = set()
cleaned: dict[str, float] = {}  # /track id -> time.monotonic() of the producer's cleanup


# -- the sources (the same for every implementation) ----------------------------------------


async def stream_source(params: dict[str, str], wrap: Wrap | None) -> AsyncIterator[Any]:
    for i in range(int(params.get("n", "100"))):
        item = make_item(i)
        yield item if wrap is None else wrap(item)


async def ticks_source(params: dict[str, str], wrap: Wrap | None) -> AsyncIterator[Any]:
    """The first event at once, then one every ``interval`` seconds at a fixed phase
    (``phase`` in [0, 1)), so that many clients' events are spread evenly over time."""
    interval = float(params.get("interval", "0.5"))
    phase = float(params.get("phase", "0")) * interval
    start = (time.monotonic() // interval + 1) * interval + phase
    for i in range(int(params.get("n", "10"))):
        if i:
            await anyio.sleep(max(0.0, start + (i - 1) * interval - time.monotonic()))
        item = {"i": i, "t": time.monotonic()}
        yield item if wrap is None else wrap(item)


async def await_source(params: dict[str, str], wrap: Wrap | None) -> AsyncIterator[Any]:
    sleep = asyncio.sleep
    for i in range(int(params.get("n", "100"))):
        await sleep(0)
        item = make_item(i)
        yield item if wrap is None else wrap(item)


async def idle_source(params: dict[str, str], wrap: Wrap | None) -> AsyncIterator[Any]:
    item = make_item(0)
    yield item if wrap is None else wrap(item)
    await anyio.sleep_forever()


async def track_source(params: dict[str, str], wrap: Wrap | None) -> AsyncIterator[Any]:
    try:
        i = 0
        while True:
            item = make_item(i)
            yield item if wrap is None else wrap(item)
            i += 1
            await anyio.sleep(0.05)
    finally:
        cleaned[params.get("id", "")] = time.monotonic()


SOURCES = {
    "/stream": stream_source,
    "/ticks": ticks_source,
    "/await": await_source,
    "/idle": idle_source,
    "/track": track_source,
}


# -- fan-out and the garbage collector -----------------------------------------------------

HELLO = {"hello": True}
subscriber_count: list[Callable[[], int]] = [lambda: 0]
# A maker's publish: returns None (it delivered at once) or an awaitable (a channel's publish).
publish_one: list[Callable[[dict[str, Any]], Awaitable[object] | None]] = [lambda item: None]
# What a maker needs open while the server runs (a channel), entered in the app's lifespan.
lifespan_contexts: list[Callable[[], contextlib.AbstractAsyncContextManager[Any]]] = []
# A maker's own streaming paths and control endpoints (JSON answers).
stream_paths: set[str] = {*SOURCES, "/subscribe"}
controls: dict[str, Callable[[dict[str, str]], Awaitable[Any]]] = {}


class GCTimer:
    """Time spent in the garbage collector, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.reset()
        gc.callbacks.append(self.callback)

    def reset(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.collections = 0
        self.full_collections = 0  # generation 2
        self.since = time.perf_counter()

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.started:
            pause = time.perf_counter() - self.started
            self.total += pause
            self.longest = max(self.longest, pause)
            self.collections += 1
            self.full_collections += info.get("generation") == 2
            self.started = 0.0

    def report(self) -> dict[str, float]:
        return {
            "gc_s": self.total,
            "gc_max_pause_s": self.longest,
            "gc_collections": self.collections,
            "gc_full_collections": self.full_collections,
            "wall_s": time.perf_counter() - self.since,
        }


gc_timer = GCTimer()


async def publisher(n: int, interval: float) -> None:
    """``n`` events to every subscriber, on a fixed schedule (no drift) or back to back."""
    publish = publish_one[0]
    start = time.monotonic()
    for i in range(n):
        pending = publish({"t": time.monotonic(), "i": i, "msg": ITEM_TEXT})
        if pending is not None:  # a channel's publish (once per event: no cost per delivery)
            await pending
        if interval > 0:
            await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
        else:
            await asyncio.sleep(0)


# -- one streaming endpoint per implementation --------------------------------------------


async def respond_by_hand(
    receive: Receive, send: Send, body: Callable[[], Awaitable[None]]
) -> None:
    """The hand-written loop's response: the head, then ``body()`` writes the events while a
    task watches ``receive``, so that a client that leaves stops it (without it the loop would
    only notice on its next send)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        with contextlib.suppress(OSError):
            await body()
        tg.cancel_scope.cancel()


def hand_written_app() -> Callable[..., Awaitable[None]]:
    """Encode and send each event, one ``send`` per event (``respond_by_hand``)."""

    async def run(source: Any, scope: Scope, receive: Receive, send: Send) -> None:
        dumps = json.dumps

        async def body() -> None:
            async for item in source:
                data = f"data: {dumps(item)}\n\n".encode()
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await respond_by_hand(receive, send, body)
        finally:
            await source.aclose()

    queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(item: dict[str, Any]) -> None:
        for queue in queues:
            queue.put_nowait(item)

    subscriber_count[0] = queues.__len__
    publish_one[0] = publish

    async def subscribe(scope: Scope, receive: Receive, send: Send) -> None:
        """One ``asyncio.Queue`` per subscriber; this request's task sends what arrives."""
        dumps = json.dumps
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        queue.put_nowait(HELLO)

        async def body() -> None:
            while True:
                item = await queue.get()
                data = f"data: {dumps(item)}\n\n".encode()
                await send({"type": "http.response.body", "body": data, "more_body": True})

        queues.add(queue)
        try:
            await respond_by_hand(receive, send, body)
        finally:
            queues.discard(queue)

    async def app(path: str, params: dict[str, str], scope: Scope, receive: Receive, send: Send):  # type: ignore[no-untyped-def]
        if path == "/subscribe":
            await subscribe(scope, receive, send)
        else:
            await run(SOURCES[path](params, None), scope, receive, send)

    return app


def asgi_stream_app() -> Callable[..., Awaitable[None]]:
    """The way a user serves it: an app that returns a ``Stream``, behind StreamMiddleware."""
    from asgi_stream import Stream, StreamMiddleware

    subscribers: set[Stream] = set()  # README's fan-out pattern

    def publish(item: dict[str, Any]) -> None:
        for stream in list(subscribers):
            stream.send(item)

    subscriber_count[0] = subscribers.__len__
    publish_one[0] = publish

    async def inner(scope: Scope, receive: Receive, send: Send) -> Stream:
        path, params = scope["path"], scope["bench.params"]
        if path == "/subscribe":
            stream = Stream()
            subscribers.add(stream)
            stream.on_close(lambda reason: subscribers.discard(stream))
            stream.send(HELLO)
            return stream
        return Stream(SOURCES[path](params, None))

    middleware = StreamMiddleware(inner)  # type: ignore[arg-type]

    async def app(path: str, params: dict[str, str], scope: Scope, receive: Receive, send: Send):  # type: ignore[no-untyped-def]
        scope["bench.params"] = params
        await middleware(scope, receive, send)  # type: ignore[arg-type]

    return app


def sse_starlette_app() -> Callable[..., Awaitable[None]]:
    from sse_starlette import EventSourceResponse, JSONServerSentEvent

    queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(item: dict[str, Any]) -> None:
        for queue in queues:
            queue.put_nowait(item)

    subscriber_count[0] = queues.__len__
    publish_one[0] = publish

    async def subscription(queue: asyncio.Queue[dict[str, Any]]) -> AsyncIterator[Any]:
        """sse-starlette's broadcasting pattern: a queue per client, drained by a generator."""
        try:
            while True:
                yield JSONServerSentEvent(await queue.get())
        finally:
            queues.discard(queue)

    async def app(path: str, params: dict[str, str], scope: Scope, receive: Receive, send: Send):  # type: ignore[no-untyped-def]
        if path == "/subscribe":
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            queue.put_nowait(HELLO)
            queues.add(queue)
            response = EventSourceResponse(subscription(queue))
        else:
            response = EventSourceResponse(SOURCES[path](params, JSONServerSentEvent))
        await response(scope, receive, send)

    return app


# The history a benchmark channel keeps: room for the replay benchmark's 1,000 events back
# (the Last-Event-ID itself must still be kept to resume after it, and Redis trims
# approximately). Its size does not change what a publish costs (a bounded deque, or Redis's
# ``XADD MAXLEN ~``, which trims whole nodes now and then).
CHANNEL_HISTORY = 2_000
# Where ``asgi_stream Channel (Redis)`` finds its redis-server (set by benchmarks/channels.py).
REDIS_URL_ENV = "ASGI_STREAM_BENCH_REDIS_URL"
# The Last-Event-ID every fan-out subscriber gives: never issued, so the channel answers with
# its reset event, which is the subscriber's first event (see ``channel_app``).
FANOUT_RESUME_FROM = "bench-first-event"


def channel_app(url: str | None) -> Callable[..., Awaitable[None]]:
    """The channel pattern: one ``Channel`` entered in the lifespan, each subscriber a
    ``Stream(channel.subscribe(topic))``, one ``await channel.publish(topic, item)`` per
    event (encoded once, the same frame bytes queued for every subscriber), behind
    StreamMiddleware.

    The fan-out client waits for every subscriber's first event before it publishes. A
    subscription gives one only from the topic's history or the reset event, so each batch of
    subscribers (from the first one to arrive while none is connected, to the last one to
    leave) gets a topic of its own, never published to before, and subscribes with an id the
    channel never issued: its first event is the reset event (``{"last_event_id": ...,
    "earliest": null}``, no timestamp, so the client counts it neither as a delivery nor as
    a latency sample), and no event of an earlier batch, or of an earlier server process on
    the same Redis (the topic names a random token), ever reaches it."""
    from asgi_stream import Channel, Stream, StreamMiddleware

    channel = Channel(url, history=CHANNEL_HISTORY)
    lifespan_contexts.append(lambda: channel)
    token = secrets.token_hex(4)
    state = {"batch": 0, "subscribers": 0}
    topic = [f"fanout-{token}-0"]

    def publish(item: dict[str, Any]) -> Awaitable[str]:
        return channel.publish(topic[0], item)

    def left(reason: object) -> None:
        state["subscribers"] -= 1

    subscriber_count[0] = lambda: state["subscribers"]
    publish_one[0] = publish

    async def fill(params: dict[str, str]) -> str:
        """Publish ``n`` events to ``topic`` (the replay's history); the first one's id."""
        name, n = params["topic"], int(params["n"])
        ids = [await channel.publish(name, make_item(i)) for i in range(n)]
        return ids[0]

    controls["/control/fill"] = fill
    stream_paths.add("/replay")

    async def inner(scope: Scope, receive: Receive, send: Send) -> Stream:
        path, params = scope["path"], scope["bench.params"]
        if path == "/subscribe":
            if state["subscribers"] == 0:  # a new batch: a topic nobody published to yet
                state["batch"] += 1
                topic[0] = f"fanout-{token}-{state['batch']}"
            state["subscribers"] += 1
            stream = Stream(channel.subscribe(topic[0], last_event_id=FANOUT_RESUME_FROM))
            stream.on_close(left)
            return stream
        if path == "/replay":  # the history after the request's Last-Event-ID, then live
            return Stream(channel.subscribe(params["topic"]))
        return Stream(SOURCES[path](params, None))

    middleware = StreamMiddleware(inner)

    async def app(path: str, params: dict[str, str], scope: Scope, receive: Receive, send: Send):  # type: ignore[no-untyped-def]
        scope["bench.params"] = params
        await middleware(scope, receive, send)  # type: ignore[arg-type]

    return app


MAKERS: dict[str, Callable[[], Callable[..., Awaitable[None]]]] = {
    "hand-written loop": hand_written_app,
    "asgi_stream": asgi_stream_app,
    "sse-starlette": sse_starlette_app,
    "asgi_stream Channel": lambda: channel_app(None),
    "asgi_stream Channel (Redis)": lambda: channel_app(os.environ[REDIS_URL_ENV]),
}
IMPLEMENTATIONS = tuple(MAKERS)


def router(stream_app: Callable[..., Awaitable[None]]) -> App:
    async def plain(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with contextlib.AsyncExitStack() as stack:
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        try:
                            for context in lifespan_contexts:
                                await stack.enter_async_context(context())
                        except Exception as exc:
                            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                            return
                    else:
                        await stack.aclose()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
        if scope["type"] != "http":
            return
        path = scope["path"]
        params = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if path in stream_paths:
            await stream_app(path, params, scope, receive, send)
        elif path in controls:
            await plain(send, 200, json.dumps(await controls[path](params)).encode())
        elif path == "/control/subscribers":
            await plain(send, 200, json.dumps(subscriber_count[0]()).encode())
        elif path == "/control/publish":
            task = asyncio.get_running_loop().create_task(
                publisher(int(params.get("n", "10")), float(params.get("interval", "0")))
            )
            background.add(task)
            task.add_done_callback(background.discard)
            await plain(send, 200, b'"started"')
        elif path == "/control/gc":
            if params.get("reset"):
                if os.environ.get("ASGI_STREAM_BENCH_GC_FREEZE"):  # benchmarks/gc_freeze.py
                    gc.collect()
                    gc.freeze()
                gc_timer.reset()
            await plain(send, 200, json.dumps(gc_timer.report()).encode())
        elif path == "/control/collect":  # objects found unreachable: cyclic garbage
            await plain(send, 200, json.dumps(gc.collect()).encode())
        elif path == "/control/objects":
            gc.collect()
            await plain(send, 200, json.dumps(len(gc.get_objects())).encode())
        elif path == "/control/cleaned":
            await plain(send, 200, json.dumps(cleaned.get(params.get("id", ""))).encode())
        elif path == "/control/ping":
            await plain(send, 200, b'"ok"')
        else:
            await plain(send, 404, b'"not found"')

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("implementation", choices=IMPLEMENTATIONS)
    parser.add_argument("--server", choices=SERVERS, default="hypercorn")
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--nofile", type=int, default=4096, help="open files needed")
    args = parser.parse_args()
    raise_nofile(args.nofile)

    app = router(MAKERS[args.implementation]())
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)

    async def serve_until_told(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def shut_down() -> None:
            stop.set()
            # in case the graceful shutdown hangs: exit anyway a few seconds later
            threading.Thread(target=lambda: (time.sleep(5), os._exit(3)), daemon=True).start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shut_down)
        loop.call_later(args.max_seconds, shut_down)

        def watch_stdin() -> None:  # the parent is gone when our stdin closes
            sys.stdin.buffer.read()
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(shut_down)

        threading.Thread(target=watch_stdin, daemon=True).start()
        print(f"READY {listener.getsockname()[1]} {os.getpid()}", flush=True)
        await serve(stop)

    if args.server == "hypercorn":
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{listener.fileno()}"]
        config.backlog = 4096
        config.loglevel = "WARNING"
        config.accesslog = None
        config.graceful_timeout = 1

        async def serve(stop: asyncio.Event) -> None:
            await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

        asyncio.run(serve_until_told(serve))
    else:
        import uvicorn
        import uvloop

        async def serve(stop: asyncio.Event) -> None:
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    loop="uvloop",
                    http="httptools",
                    lifespan="on",
                    log_level="warning",
                    access_log=False,
                    backlog=4096,
                    timeout_graceful_shutdown=1,
                )
            )

            async def exit_when_told() -> None:
                await stop.wait()
                server.should_exit = True

            watcher = asyncio.get_running_loop().create_task(exit_when_told())
            await server.serve(sockets=[listener])
            watcher.cancel()

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_until_told(serve))


if __name__ == "__main__":
    main()
