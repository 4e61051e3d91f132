"""A worker of the cross-process channel tests: one hypercorn worker process sharing a Redis
with the others, as ``hypercorn -w N`` or several pods would.

    python -m tests.channels.worker --bind 127.0.0.1:8001 --worker trio

Environment: ``REDIS_URL``, ``CHANNEL_PREFIX``, ``CHANNEL_HISTORY`` (default 1000).

    GET  /events/<topic>[?for=ms&from=start]   the topic: history after Last-Event-ID, then
                                               live; ``for``: the server ends the stream after
                                               that long; ``from=start``: without a
                                               Last-Event-ID, the whole history (after the
                                               reset event: an id it cannot resume)
    GET  /page?topic=t&cancel=url              a page that shows the topic as a reply (browser)
    POST /publish/<topic>?start=a&stop=b&pace=ms[&retry=ms]
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
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.abc

from asgi_stream import Channel, Stream, StreamMiddleware
from asgi_stream.hypercorn import run
from tests.channels.publishing import publish_until_stored

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


async def tokens(count: int, pace: float) -> AsyncIterator[str]:
    for n in range(count):
        await anyio.sleep(pace)
        yield f"token{n} "


PAGE = Path(__file__).with_name("reply_page.html").read_bytes()
timers: list[anyio.abc.TaskGroup] = []  # the lifespan's, for the streams ended by the server


async def end_after(stream: Stream, seconds: float) -> None:
    await anyio.sleep(seconds)
    stream.close()


async def lifespan(receive: Any, send: Any) -> None:
    await receive()  # startup
    async with channel, anyio.create_task_group() as tg:
        timers.append(tg)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
        tg.cancel_scope.cancel()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Any, receive: Any, send: Any) -> Stream | None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return None
    query = dict(parse_qsl(scope["query_string"].decode()))
    if scope["path"] == "/page":
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PAGE})
        return None
    _, action, topic = scope["path"].split("/", 2)
    if action == "events":
        given = dict(scope["headers"]).get(b"last-event-id")
        if given is None and query.get("from") == "start":
            stream = Stream(channel.subscribe(topic, last_event_id="start"))
        else:
            stream = Stream(channel.subscribe(topic))
        if "for" in query:
            timers[0].start_soon(end_after, stream, float(query["for"]) / 1000)
        return stream
    if action == "publish":
        ids = []
        retry = int(query["retry"]) if "retry" in query else None
        for n in range(int(query["start"]), int(query["stop"])):
            ids.append(await publish_until_stored(channel, topic, n, retry=retry))
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
