"""A worker of the cross-process channel tests: one hypercorn worker process sharing a Redis
with the others, as ``hypercorn -w N`` or several pods would.

    python -m tests.channels.worker --bind 127.0.0.1:8001 --worker trio

Environment: ``REDIS_URL``, ``CHANNEL_PREFIX``, ``CHANNEL_HISTORY`` (default 1000).

    GET  /events/<topic>                       the topic: history after Last-Event-ID, then live
    POST /publish/<topic>?start=a&stop=b&pace=ms
                                               publishes the ints a..b-1, ``pace`` ms apart,
                                               each retried while Redis is unreachable
                                               (never twice: a publish that raised stored
                                               nothing, as the tests kill connections between
                                               publishes); answers the ids as JSON
    POST /close/<topic>                        closes the topic
    POST /reply/<topic>?tokens=n&pace=ms       publish_from: a token generator (the LLM reply)
    POST /cancel/<topic>                       cancel(topic), whichever worker runs the reply
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import anyio

from asgi_stream import Channel, Stream, StreamMiddleware
from asgi_stream.hypercorn import run

channel = Channel(
    os.environ.get("REDIS_URL"),
    prefix=os.environ.get("CHANNEL_PREFIX", "asgi_stream:"),
    history=int(os.environ.get("CHANNEL_HISTORY", "1000")),
)


async def answer(send: Any, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def publish_retrying(topic: str, data: Any) -> str:
    with anyio.fail_after(20):
        while True:
            try:
                return await channel.publish(topic, data)
            except ConnectionError:
                await anyio.sleep(0.02)


async def tokens(count: int, pace: float) -> AsyncIterator[str]:
    for n in range(count):
        await anyio.sleep(pace)
        yield f"token{n} "


async def lifespan(receive: Any, send: Any) -> None:
    await receive()  # startup
    async with channel:
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Any, receive: Any, send: Any) -> Stream | None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return None
    _, action, topic = scope["path"].split("/", 2)
    query = dict(parse_qsl(scope["query_string"].decode()))
    if action == "events":
        return Stream(channel.subscribe(topic))
    if action == "publish":
        ids = []
        for n in range(int(query["start"]), int(query["stop"])):
            ids.append(await publish_retrying(topic, n))
            await anyio.sleep(float(query.get("pace", 0)) / 1000)
        await answer(send, 200, ids)
    elif action == "close":
        await channel.close(topic)
        await answer(send, 200, "closed")
    elif action == "reply":
        channel.publish_from(topic, tokens(int(query["tokens"]), float(query["pace"]) / 1000))
        await answer(send, 200, "started")
    elif action == "cancel":
        await channel.cancel(topic)
        await answer(send, 200, "cancelled")
    else:
        await answer(send, 404, "no such action")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--worker", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    run(StreamMiddleware(app), bind=args.bind, backend=args.worker, grace=2_000)


if __name__ == "__main__":
    main()
