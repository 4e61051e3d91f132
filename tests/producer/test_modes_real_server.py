"""The documented examples of Elysia's Stream plugin, in Python, under a real hypercorn.

(The fetch-proxy example lives in tests/response/test_proxy.py.)
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
from httpx_sse import aconnect_sse
from pydantic import BaseModel

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track

pytestmark = pytest.mark.anyio


# -- (a) callback --------------------------------------------------------------------------


async def test_callback_example_hello_world() -> None:
    closes = Record()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send("hello")
            await stream.wait(50)
            stream.send("world")
            stream.close()

        return track(Stream(callback), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url + "/hello") as source:
                assert source.response.status_code == 200
                headers = source.response.headers
                assert headers["content-type"] == "text/event-stream; charset=utf-8"
                assert headers["cache-control"] == "no-cache"
                assert headers["x-accel-buffering"] == "no"
                events = [(sse.event, sse.data) async for sse in source.aiter_sse()]
            assert events == [("message", "hello"), ("message", "world")]
            assert await closes.wait() == ["complete"]
            await app.finished.wait()
            assert app.active == 0


async def test_callback_events_are_not_buffered() -> None:
    """The client sees "hello" while the callback is still running: the callback only sends
    "world" once the client has confirmed receiving "hello" (a deadlock if buffered)."""
    got_hello = anyio.Event()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            stream.send("hello")
            await got_hello.wait()
            stream.send("world")
            stream.close()

        return Stream(callback)

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url) as source:
                received = []
                async for sse in source.aiter_sse():
                    received.append(sse.data)
                    got_hello.set()
            assert received == ["hello", "world"]


async def test_callback_returning_keeps_stream_open_until_close() -> None:
    """As in the original: when the callback returns, the stream stays open until close()."""
    holder: list[Stream] = []
    returned = Record()

    def handler(scope: Any) -> Stream:
        def callback(stream: Stream) -> None:  # a sync callback
            holder.append(stream)
            stream.send("hello")
            returned()

        return Stream(callback)

    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", url) as source:
                received = []
                async for sse in source.aiter_sse():
                    received.append(sse.data)
                    if sse.data == "hello":
                        await returned.wait()
                        (stream,) = holder
                        assert not stream.closed
                        assert stream.send("late")
                        stream.close()
                        assert not stream.send("after close")
            assert received == ["hello", "late"]


# -- (b) value-based, setInterval -------------------------------------------------------------


async def test_value_based_interval_example() -> None:
    """``const stream = new Stream(); setInterval(() => stream.send(n++), 20)``, closed after 5."""
    closes = Record()
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as timers:

            def handler(scope: Any) -> Stream:
                stream = track(Stream(), closes)

                async def interval() -> None:
                    for count in range(5):
                        await stream.wait(20)
                        assert stream.send(count)
                    stream.close()

                timers.start_soon(interval)
                return stream

            app = Served(handler)
            async with serve(app) as url, httpx.AsyncClient() as client:
                started = time.monotonic()
                async with aconnect_sse(client, "GET", url + "/counter") as source:
                    data = [sse.data async for sse in source.aiter_sse()]
                elapsed = time.monotonic() - started
                assert data == ["0", "1", "2", "3", "4"]
                assert elapsed >= 0.1  # five 20 ms ticks happened before the last event
                assert await closes.wait() == ["complete"]
                await app.finished.wait()
                assert app.active == 0


# -- (c) OpenAI-style: a coroutine resolving to an async iterable of pydantic models ---------


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]


def make_chunks(model: str, pieces: list[str]) -> list[ChatCompletionChunk]:
    chunks = [
        ChatCompletionChunk(
            id="chatcmpl-1",
            created=1_700_000_000,
            model=model,
            choices=[ChunkChoice(index=0, delta=Delta(role="assistant", content=piece))],
        )
        for piece in pieces
    ]
    chunks.append(
        ChatCompletionChunk(
            id="chatcmpl-1",
            created=1_700_000_000,
            model=model,
            choices=[ChunkChoice(index=0, delta=Delta(), finish_reason="stop")],
        )
    )
    return chunks


class FakeAsyncStream:
    """Shaped like ``openai.AsyncStream``: an async iterable of chunks with ``async close()``.

    With ``hold`` set, generation pauses before the chunk at index ``hold_at`` until it is set.
    """

    def __init__(
        self,
        chunks: list[ChatCompletionChunk],
        *,
        hold: anyio.Event | None = None,
        hold_at: int = 1,
    ) -> None:
        self.chunks = chunks
        self.hold = hold
        self.hold_at = hold_at
        self.generation_ended = Record()
        self.closed = Record()

    async def __aiter__(self) -> Any:
        try:
            for index, chunk in enumerate(self.chunks):
                if self.hold is not None and index == self.hold_at:
                    await self.hold.wait()
                await anyio.lowlevel.checkpoint()  # "network"
                yield chunk
        finally:
            self.generation_ended(True)

    async def close(self) -> None:
        self.closed(True)


class FakeCompletions:
    def __init__(self, client: FakeOpenAI) -> None:
        self.client = client

    async def create(
        self, *, model: str, messages: list[dict[str, str]], stream: bool = False
    ) -> FakeAsyncStream:
        assert stream, "this fake only streams"
        await anyio.lowlevel.checkpoint()  # "the request"
        self.client.requests.append({"model": model, "messages": messages})
        result = FakeAsyncStream(make_chunks(model, self.client.pieces), hold=self.client.hold)
        self.client.streams.append(result)
        return result


class FakeChat:
    def __init__(self, client: FakeOpenAI) -> None:
        self.completions = FakeCompletions(client)


class FakeOpenAI:
    def __init__(self, pieces: list[str], *, hold: anyio.Event | None = None) -> None:
        self.pieces = pieces
        self.hold = hold
        self.requests: list[dict[str, Any]] = []
        self.streams: list[FakeAsyncStream] = []
        self.chat = FakeChat(self)


def openai_handler(client: FakeOpenAI, closes: Record) -> Any:
    def handler(scope: Any) -> Stream:
        return track(
            Stream(
                client.chat.completions.create(
                    model="gpt-fake",
                    messages=[{"role": "user", "content": "Say hi"}],
                    stream=True,
                )
            ),
            closes,
        )

    return handler


async def test_openai_style_stream_sends_each_model_as_compact_json() -> None:
    pieces = ["Bonjour", ", ça va ?\n", '👋 "quoted"']
    client = FakeOpenAI(pieces)
    closes = Record()
    app = Served(openai_handler(client, closes))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as http:
            async with aconnect_sse(http, "GET", url + "/chat") as source:
                assert source.response.status_code == 200
                events = [sse async for sse in source.aiter_sse()]
            (fake_stream,) = client.streams
            assert [sse.data for sse in events] == [c.model_dump_json() for c in fake_stream.chunks]
            assert [json.loads(sse.data) for sse in events] == [
                c.model_dump(mode="json") for c in fake_stream.chunks
            ]
            assert "".join(
                json.loads(sse.data)["choices"][0]["delta"]["content"] or "" for sse in events
            ) == "".join(pieces)
            assert client.requests == [
                {"model": "gpt-fake", "messages": [{"role": "user", "content": "Say hi"}]}
            ]
            assert await closes.wait() == ["complete"]
            assert await fake_stream.closed.wait() == [True]  # the SDK stream was closed
            await app.finished.wait()
            assert app.active == 0


async def test_openai_style_stream_closed_when_client_disconnects() -> None:
    """The client leaves after the first chunk while the "model" is still generating: the
    generation is stopped and the SDK stream closed (so the upstream request ends)."""
    never = anyio.Event()
    client = FakeOpenAI(["one", "two", "three"], hold=never)
    closes = Record()
    app = Served(openai_handler(client, closes))
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as http:
            async with aconnect_sse(http, "GET", url + "/chat") as source:
                async for sse in source.aiter_sse():
                    assert json.loads(sse.data)["choices"][0]["delta"]["content"] == "one"
                    break
            assert await closes.wait() == ["disconnect"]
            (fake_stream,) = client.streams
            assert await fake_stream.generation_ended.wait() == [True]
            assert await fake_stream.closed.wait() == [True]
            await app.finished.wait()
            assert app.active == 0


async def test_single_string_source_is_one_event() -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(Served(lambda scope: Stream("whole string"))) as url,
            httpx.AsyncClient() as client,
        ):
            _response, body = await read_raw(client, url)
    assert body == b"data: whole string\n\n"
