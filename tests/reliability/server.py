"""The server of the reliability tests: one hypercorn worker in a process of its own, so that
its memory (VmRSS) can be measured and a signal can stop it.

    python -m tests.reliability.server --worker asyncio --bind 127.0.0.1:8000

serves ``StreamMiddleware(app)`` through ``asgi_stream.hypercorn.serve`` (SIGTERM/SIGINT end
every stream, then hypercorn stops) and prints ``FINAL <stats as JSON>`` on exit. The same
``app`` is importable for plain hypercorn: ``python -m hypercorn tests.reliability.server:app``.

Streams (query parameters in brackets):

    /load?sid=K&n=50[&hold=1&pace=ms&burst=k]
        n events, data ``i``, id ``K:i``; with hold=1 the first event is sent at once and the
        others only after ``/_go``, ``pace`` ms apart, or as fast as possible with a
        checkpoint every ``burst`` events (else only the library's time slice interleaves).
    /forever?kind=agen|callback|values|thread|proxy[&interval=ms&size=bytes]
        an endless producer of each kind (an async generator, a callback, a value-based
        stream fed by a broadcaster task, a blocking generator run by iterate_in_thread, a
        proxy of an endless upstream on a raw TCP listener of this process)
    /flood?[frame=bytes&total=bytes&max_buffer=bytes]
        a callback that sends ``frame``-byte frames every millisecond until ``send()``
        returns False or ``total`` bytes were sent
    /ticks?n=&interval=ms
        n events ``{"i": i, "t": time.monotonic()}`` (a client on this host computes latency)
    /fault?after=k
        an async generator that raises after ``k`` events
    /corpus?seed=S&n=N
        N hostile (data, event, id) triples (``hostile_items``) sent one by one; ``send``
        refuses the invalid ones

Control (plain responses, JSON):

    /_stats[?settle=seconds&tasks=N][?until=closes:KIND:REASON|cleaned:KIND&count=N&timeout=s]
        counters, live objects (after gc) and VmRSS; with settle, first waits (at most that
        long) until no request, stream, producer, thread or upstream connection is left
        (and at most N tasks run); with until, until on_close(REASON) ran for N streams of
        that kind, or N producers of that kind ended
    /_go    release the held /load streams
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio

import asgi_stream
from asgi_stream import ServerSentEvent, Stream, StreamMiddleware, iterate_in_thread

THREAD_NAME = "asgi_stream.iterate_in_thread"


def vm_rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def task_names() -> list[str]:
    """What each task of this event loop (asyncio or trio) runs."""
    if sniffio.current_async_library() == "trio":
        import trio

        names, todo = [], [trio.lowlevel.current_root_task()]
        while todo:
            task = todo.pop()
            names.append(task.name)
            for nursery in task.child_nurseries:
                todo.extend(nursery.child_tasks)
        return names
    return [getattr(task.get_coro(), "__qualname__", "?") for task in asyncio.all_tasks()]


def count_tasks() -> int:
    return len(task_names())


# The streaming code of the library (not asgi_stream.hypercorn, which runs the server).
_LIBRARY = tuple(
    str(path)
    for path in Path(asgi_stream.__file__).parent.glob("*.py")
    if path.name not in ("hypercorn.py", "__init__.py")
)


def stream_tasks() -> int:
    """Tasks that are running asgi_stream's code somewhere in their chain of awaits:
    requests being driven, disconnect watchers, writers, producers, heartbeats."""
    if sniffio.current_async_library() == "trio":
        import trio

        coros, todo = [], [trio.lowlevel.current_root_task()]
        while todo:
            task = todo.pop()
            coros.append(task.coro)
            for nursery in task.child_nurseries:
                todo.extend(nursery.child_tasks)
    else:
        coros = [task.get_coro() for task in asyncio.all_tasks()]
    return sum(_runs_library_code(coro) for coro in coros)


def _runs_library_code(coro: Any) -> bool:
    for _ in range(100):  # the chain of awaits is short; bounded all the same
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is None:
            return False
        if code.co_filename.startswith(_LIBRARY):
            return True
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False


class State:
    """Counters and live objects, shared by the app and the control endpoints."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # for the counters the iterate_in_thread threads touch
        self.built: Counter[str] = Counter()  # Streams built, by kind
        self.started: Counter[str] = Counter()  # producers that started running, by kind
        self.cleaned: Counter[str] = Counter()  # producers whose finally ran, by kind
        self.closes: Counter[str] = Counter()  # on_close calls, "kind:reason"
        self.requests = 0  # http requests (streams) inside the middleware right now
        self.upstream_open = 0
        self.upstream_total = 0
        self.streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self.values: set[Stream] = set()  # value-based streams fed by the broadcaster
        # anyio Events need a running loop: made by bind_loop() (main, or lifespan startup)
        self.go: anyio.Event | None = None
        self._changed: anyio.Event | None = None
        self.notify_from_thread: Callable[[], None] = lambda: None
        self.middleware: StreamMiddleware | None = None
        self.upstream_port = 0
        self.http: Any = None  # httpx.AsyncClient for proxies
        self.echo = False

    def bind_loop(self) -> None:
        """Let threads wake the event loop's waiters (see ``notify``)."""
        if sniffio.current_async_library() == "trio":
            import trio

            token = trio.lowlevel.current_trio_token()

            def from_thread() -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self.notify)
        else:
            loop = asyncio.get_running_loop()

            def from_thread() -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(self.notify)

        self.notify_from_thread = from_thread
        self.go = anyio.Event()
        self._changed = anyio.Event()

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    async def changed(self) -> None:
        assert self._changed is not None
        await self._changed.wait()

    def count(self, counter: Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1
        self.notify()

    def threads(self) -> int:
        return sum(thread.name == THREAD_NAME for thread in threading.enumerate())

    def settled(self) -> bool:
        active = self.middleware.active if self.middleware is not None else 0
        with self.lock:
            producers_done = self.started == self.cleaned
            closes = sum(self.closes.values())
        return (
            self.requests == 0
            and active == 0
            and producers_done
            and closes == sum(self.built.values())
            and self.upstream_open == 0
            and not self.values
            and self.threads() == 0
            and stream_tasks() == 0
        )

    def stats(self) -> dict[str, Any]:
        gc.collect()
        with self.lock:
            return {
                "pid": os.getpid(),
                "worker": sniffio.current_async_library(),
                "rss": vm_rss(),
                "active": self.middleware.active if self.middleware is not None else 0,
                "requests": self.requests,
                "live_streams": len(self.streams),
                "tasks": count_tasks(),
                "stream_tasks": stream_tasks(),
                "threads": self.threads(),
                "built": dict(self.built),
                "started": dict(self.started),
                "cleaned": dict(self.cleaned),
                "closes": dict(self.closes),
                "upstream_open": self.upstream_open,
                "upstream_total": self.upstream_total,
                "values": len(self.values),
                "settled": self.settled(),
                # the library's own counts (StreamMiddleware.stats), as a user exports them
                "counters": self.middleware.stats if self.middleware is not None else {},
            }


state = State()


def _params(scope: dict[str, Any]) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _build(kind: str, source: Any = None, **options: Any) -> Stream:
    stream = Stream(source, **options)
    state.streams.add(stream)
    state.count(state.built, kind)

    def closed(reason: str) -> None:
        state.count(state.closes, f"{kind}:{reason}")
        if state.echo:
            print("closed", kind, reason, flush=True)

    stream.on_close(closed)
    return stream


def _options(params: dict[str, str]) -> dict[str, Any]:
    return {"max_buffer": int(params["max_buffer"])} if "max_buffer" in params else {}


# -- the producers -------------------------------------------------------------------------


async def load_source(sid: str, n: int, hold: bool, pace: float, burst: int) -> AsyncIterator[Any]:
    state.count(state.started, "load")
    try:
        for i in range(n):
            if i == 1 and hold:
                assert state.go is not None
                await state.go.wait()
            if pace:
                await anyio.sleep(pace)
            elif burst and i % burst == 0:
                await anyio.lowlevel.checkpoint()  # let other streams (and the writer) run
            yield ServerSentEvent(str(i), id=f"{sid}:{i}")
    finally:
        state.count(state.cleaned, "load")


async def endless_agen(interval: float, payload: str) -> AsyncIterator[str]:
    state.count(state.started, "agen")
    try:
        i = 0
        while True:
            yield f"{i} {payload}"
            i += 1
            await anyio.sleep(interval)
    finally:
        state.count(state.cleaned, "agen")


def endless_callback(interval: float, payload: str) -> Callable[[Stream], Any]:
    async def callback(stream: Stream) -> None:
        state.count(state.started, "callback")
        try:
            i = 0
            while stream.send(f"{i} {payload}"):
                i += 1
                await stream.wait(interval * 1000)
        finally:
            state.count(state.cleaned, "callback")

    return callback


def blocking_source(interval: float, payload: str) -> Iterator[str]:
    """A sync generator that blocks (``time.sleep``): runs in iterate_in_thread's thread."""
    with state.lock:
        state.started["thread"] += 1
    state.notify_from_thread()
    try:
        i = 0
        while True:
            time.sleep(interval)
            yield f"{i} {payload}"
            i += 1
    finally:
        with state.lock:
            state.cleaned["thread"] += 1
        state.notify_from_thread()


async def broadcaster(interval: float) -> None:
    """Feeds every value-based stream (the caller keeps the Stream and calls send)."""
    i = 0
    while True:
        _send_to_values(f"{i} value")  # in a function: no loop variable keeps a Stream alive
        i += 1
        await anyio.sleep(interval)


def _send_to_values(data: str) -> None:
    for stream in list(state.values):
        stream.send(data)


async def flood(stream: Stream, frame: bytes, total: int) -> None:
    state.count(state.started, "flood")
    try:
        sent = 0
        while sent < total and stream.send(frame):
            sent += len(frame)
            await anyio.sleep(0.001)
    finally:
        state.count(state.cleaned, "flood")
    stream.close()


async def ticks_source(n: int, interval: float) -> AsyncIterator[dict[str, Any]]:
    state.count(state.started, "ticks")
    try:
        for i in range(n):
            if i:
                await anyio.sleep(interval)
            yield {"i": i, "t": time.monotonic()}
    finally:
        state.count(state.cleaned, "ticks")


class Fault(Exception):
    pass


# Pieces of hostile strings: line breaks of every kind, NUL, lone surrogates, BOM, Unicode
# separators, field names and the SSE syntax itself.
HOSTILE_PIECES = (
    "\r", "\n", "\r\n", "\n\r", "\r\r", "\x00", "\ud800", "\udfff", "\ufeff", "\u2028",
    "\u2029", "\x85", "\x0b", "\x0c", " ", ":", "data:", "data: x", "event: evil", "id: 666",
    "retry: 1", ": comment", "\n\nevent: injected\ndata: x\n\n", "é", "漢", "😀", "x", "1",
)  # fmt: skip


def hostile_items(seed: int, n: int) -> list[tuple[str, str | None, str | None]]:
    """``n`` deterministic (data, event, id) triples built from ``HOSTILE_PIECES``."""
    import random

    rng = random.Random(seed)

    def text(most: int) -> str:
        return "".join(rng.choice(HOSTILE_PIECES) for _ in range(rng.randint(0, most)))

    return [
        (
            text(6),
            text(2) if rng.random() < 0.5 else None,
            text(2) if rng.random() < 0.5 else None,
        )
        for _ in range(n)
    ]


def corpus(seed: int, n: int) -> Callable[[Stream], Any]:
    """Sends every hostile item; ``send`` refuses the invalid ones (ValueError)."""

    async def callback(stream: Stream) -> None:
        state.count(state.started, "corpus")
        try:
            for number, (data, event, event_id) in enumerate(hostile_items(seed, n)):
                with contextlib.suppress(ValueError):  # refused: CR/LF/NUL, surrogates
                    stream.send(data, event=event, id=event_id)
                if number % 100 == 99:
                    await stream.drain()
            stream.close()
        finally:
            state.count(state.cleaned, "corpus")

    return callback


async def fault_source(after: int) -> AsyncIterator[str]:
    state.count(state.started, "fault")
    try:
        for i in range(after):
            yield str(i)
            await anyio.sleep(0.005)
        raise Fault(f"the producer fails after {after} events")
    finally:
        state.count(state.cleaned, "fault")


async def upstream_handler(client: Any) -> None:
    """An endless SSE upstream on a raw socket: ``data: up N`` every 20 ms until the proxy
    closes the connection."""
    state.upstream_open += 1
    state.upstream_total += 1
    state.notify()
    try:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await client.receive(4096)
                head += chunk
            await client.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
            )
            i = 0
            while True:
                await client.send(b"data: up %d\n\n" % i)
                i += 1
                await anyio.sleep(0.02)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
        pass
    finally:
        state.upstream_open -= 1
        state.notify()


# -- the app ---------------------------------------------------------------------------


def handle(scope: dict[str, Any]) -> Stream:
    path, params = scope["path"], _params(scope)
    options = _options(params)
    interval = float(params.get("interval", "20")) / 1000
    payload = "x" * int(params.get("size", "16"))
    if path == "/load":
        sid = params.get("sid", "0")
        hold = params.get("hold") == "1"
        pace = float(params.get("pace", "0")) / 1000
        burst = int(params.get("burst", "0"))
        n = int(params.get("n", "50"))
        return _build("load", load_source(sid, n, hold, pace, burst), **options)
    if path == "/forever":
        kind = params.get("kind", "agen")
        if kind == "agen":
            return _build(kind, endless_agen(interval, payload), **options)
        if kind == "callback":
            return _build(kind, endless_callback(interval, payload), **options)
        if kind == "thread":
            return _build(kind, iterate_in_thread(blocking_source(interval, payload)), **options)
        if kind == "values":
            stream = _build(kind, **options)
            state.values.add(stream)
            stream.on_close(lambda _: state.values.discard(stream))
            return stream
        if kind == "proxy":
            request = state.http.build_request("GET", f"http://127.0.0.1:{state.upstream_port}/")
            return _build(kind, state.http.send(request, stream=True), **options)
        raise ValueError(f"unknown kind {kind!r}")
    if path == "/flood":
        frame = b"data: " + b"x" * (int(params.get("frame", "65536")) - 8) + b"\n\n"
        total = int(params.get("total", str(16 * 1_048_576)))

        async def callback(stream: Stream) -> None:
            await flood(stream, frame, total)

        return _build("flood", callback, **options)
    if path == "/ticks":
        n = int(params.get("n", "100"))
        return _build("ticks", ticks_source(n, interval), **options)
    if path == "/corpus":
        seed, n = int(params.get("seed", "0")), int(params.get("n", "1000"))
        return _build("corpus", corpus(seed, n), **options)
    if path == "/fault":
        return _build("fault", fault_source(int(params.get("after", "3"))), **options)
    raise LookupError(path)


async def lifespan(receive: Any, send: Any) -> None:
    """Runs for the server's lifetime: the upstream listener, the broadcaster and the httpx
    client of the proxies live here (under ``hypercorn`` or ``asgi_stream.hypercorn.run``);
    on shutdown, after hypercorn closed every connection, prints ``FINAL <counters>``."""
    import httpx

    message = await receive()
    assert message["type"] == "lifespan.startup"
    state.bind_loop()
    state.echo = state.echo or os.environ.get("RELIABILITY_ECHO") == "1"
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(limits=limits, timeout=None) as http,
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tg,
    ):
        state.http = http
        state.upstream_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(listener.serve, upstream_handler)
        tg.start_soon(broadcaster, 0.02)
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        tg.cancel_scope.cancel()
    # A thread source ends once its blocked next() returns (up to one interval after the
    # stream was cancelled): wait for that, within a bound, so that FINAL is not a race.
    with anyio.move_on_after(2):
        while state.started != state.cleaned:
            await state.changed()
    print("FINAL", json.dumps(state.stats()), flush=True)
    await send({"type": "lifespan.shutdown.complete"})


async def inner(scope: dict[str, Any], receive: Any, send: Any) -> Any:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return None
    try:
        return handle(scope)
    except LookupError:
        await _json(send, {"error": "not found"}, status=404)
        return None


async def _json(send: Any, body: Any, status: int = 200) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(data)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class App:
    """Control endpoints in front of ``StreamMiddleware(inner)``; ``shutdown`` is the
    middleware's, so ``asgi_stream.hypercorn.serve`` can end the streams on SIGTERM."""

    def __init__(self, max_buffer: int = 1_048_576, ping: float | None = 15_000) -> None:
        self.middleware = StreamMiddleware(inner, max_buffer=max_buffer, ping=ping)
        state.middleware = self.middleware

    async def shutdown(self, grace: float = 5_000) -> None:
        await self.middleware.shutdown(grace)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            # (StreamMiddleware passes lifespan through untouched: calling the app directly
            # keeps the count of tasks in library code at 0 when no request is served.)
            await inner(scope, receive, send)
        elif scope["path"] == "/_stats":
            params = _params(scope)
            if "until" in params:  # e.g. until=closes:flood:slow-client&count=5
                counter_name, _, key = params["until"].partition(":")
                counter = {"closes": state.closes, "cleaned": state.cleaned}[counter_name]
                with anyio.move_on_after(float(params.get("timeout", "30"))):
                    while counter[key] < int(params.get("count", "1")):
                        await state.changed()
            if "settle" in params:
                await settle(float(params["settle"]), int(params.get("tasks", "-1")))
            stats = state.stats()
            if "debug" in params:
                stats["task_names"] = sorted(task_names())
                stats["streams"] = [repr(stream) for stream in state.streams]
            await _json(send, stats)
        elif scope["path"] == "/_go":
            assert state.go is not None
            state.go.set()
            await _json(send, {"go": True})
        else:
            state.requests += 1
            try:
                await self.middleware(scope, receive, send)
            finally:
                state.requests -= 1
                state.notify()


async def settle(seconds: float, tasks: int) -> None:
    """Wait until nothing is left running (and at most ``tasks`` tasks, if >= 0)."""
    with anyio.move_on_after(seconds):
        while not (state.settled() and (tasks < 0 or count_tasks() <= tasks)):
            # counters notify; task and thread counts are re-checked every 50 ms
            with anyio.move_on_after(0.05):
                await state.changed()


app = App()  # for plain hypercorn; main() builds its own with the options given


def main(args: argparse.Namespace) -> None:
    """The documented wiring: ``asgi_stream.hypercorn.run`` (SIGTERM/SIGINT end every stream
    with ``on_close("shutdown")`` and a final frame, then hypercorn stops)."""
    from hypercorn.config import Config

    from asgi_stream.hypercorn import run

    state.echo = args.echo
    config = Config()
    config.backlog = 4096
    config.graceful_timeout = args.graceful_timeout
    config.h2_max_concurrent_streams = args.h2_max_streams
    config.loglevel = "WARNING"
    served = App(max_buffer=args.max_buffer, ping=args.ping or None)
    run(served, bind=args.bind, grace=args.grace, backend=args.worker, config=config)  # type: ignore[arg-type]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--bind", default="127.0.0.1:8000")
    parser.add_argument("--max-buffer", type=int, default=1_048_576)
    parser.add_argument("--ping", type=float, default=0, help="ms; 0: no heartbeat")
    parser.add_argument("--grace", type=float, default=3_000, help="shutdown grace, ms")
    parser.add_argument("--graceful-timeout", type=float, default=1.0)
    parser.add_argument("--h2-max-streams", type=int, default=100)
    parser.add_argument("--echo", action="store_true", help="print each on_close")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16_384)), hard))
    main(parse_args())
