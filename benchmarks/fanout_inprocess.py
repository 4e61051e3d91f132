"""A fan-out in process, without a server: one publisher to K subscribers whose ASGI ``send``
only counts, so that what is left is the library's own per-delivery CPU (and the event
loop's). For before/after comparisons of a change on that path, such as the counters behind
``StreamMiddleware.stats``:

    python benchmarks/fanout_inprocess.py                      # this checkout
    python benchmarks/fanout_inprocess.py --library /tmp/old   # another copy of asgi_stream

Prints microseconds of CPU per delivery for a memory ``Channel``, the README's former
pattern (a set of value-based Streams) and a hand-written per-subscriber queue loop,
alternating them for ``--rounds`` rounds (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ITEM = {"t": 0.0, "i": 0, "msg": "x" * 60}
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 2),
}


class Sink:
    """A client: its ``send`` counts body messages; ``receive`` waits until told to leave."""

    def __init__(self) -> None:
        self.bodies = 0
        self.asked = False
        self.left = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.bodies += 1

    async def receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}


async def one(kind: str, subscribers: int, events: int) -> float:
    """CPU microseconds per delivery for one implementation."""
    from asgi_stream import Channel, Stream, StreamMiddleware

    sinks = [Sink() for _ in range(subscribers)]
    queues: set[asyncio.Queue[Any]] = set()
    streams: set[Stream] = set()
    async with Channel() as channel:
        if kind == "Channel":

            async def app(scope: Any, receive: Any, send: Any) -> Any:
                return Stream(channel.subscribe("t", last_event_id=None))

            middleware: Any = StreamMiddleware(app)

            async def publish(item: Any) -> None:
                await channel.publish("t", item)

        elif kind == "value-based Streams":

            async def app(scope: Any, receive: Any, send: Any) -> Any:
                stream = Stream()
                streams.add(stream)
                return stream

            middleware = StreamMiddleware(app)

            async def publish(item: Any) -> None:
                for stream in streams:
                    stream.send(item)

        else:

            async def middleware(scope: Any, receive: Any, send: Any) -> None:
                queue: asyncio.Queue[Any] = asyncio.Queue()
                queues.add(queue)
                await send({"type": "http.response.start", "status": 200, "headers": []})

                async def body() -> None:
                    while True:
                        data = f"data: {json.dumps(await queue.get())}\n\n".encode()
                        await send({"type": "http.response.body", "body": data, "more_body": True})

                task = asyncio.ensure_future(body())
                await receive()
                await receive()
                task.cancel()

            async def publish(item: Any) -> None:
                for queue in queues:
                    queue.put_nowait(item)

        tasks = [asyncio.ensure_future(middleware(dict(SCOPE), s.receive, s.send)) for s in sinks]
        for _ in range(100):
            await asyncio.sleep(0)
        gc.collect()
        gc.disable()
        started = time.process_time()
        for _ in range(events):
            await publish(ITEM)
            await asyncio.sleep(0)
        while sum(s.bodies for s in sinks) < subscribers * events:  # noqa: ASYNC110 (a count)
            await asyncio.sleep(0)
        spent = time.process_time() - started
        gc.enable()
        for sink in sinks:
            sink.left.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return spent / (subscribers * events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--library", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.library))
    import asgi_stream

    print(f"asgi_stream from {Path(asgi_stream.__file__).parent}")
    kinds = ["Channel", "value-based Streams", "hand-written loop"]
    figures: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            figures[kind].append(asyncio.run(one(kind, args.subscribers, args.events)))
    for kind in kinds:
        print(f"{kind:20s} {statistics.median(figures[kind]):6.2f} us of CPU per delivery")


if __name__ == "__main__":
    main()
