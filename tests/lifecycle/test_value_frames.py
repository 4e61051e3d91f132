"""``Stream.value``, the encoded frames for a framework's own streaming response, in process:
the frames of a source (retry first) or of a callback, one consumer only, and an iterator that
is abandoned without ``aclose()`` still closes its source (``on_close("disconnect")``). (Its
lifecycle under load and under a real server: test_value.py here.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgi_stream import ServerSentEvent, Stream


@pytest.mark.anyio
async def test_value_yields_the_encoded_frames_of_a_source() -> None:
    async def agen() -> AsyncIterator[Any]:
        yield "a"
        yield ServerSentEvent({"b": 1}, id=2)

    frames = [frame async for frame in Stream(agen(), retry=5).value]
    assert b"".join(frames) == b'retry: 5\n\ndata: a\n\nid: 2\ndata: {"b":1}\n\n'


@pytest.mark.anyio
async def test_value_runs_a_callback_too() -> None:
    async def callback(stream: Stream) -> None:
        stream.send(1)
        await stream.wait(1)
        stream.send(2)
        stream.close()

    frames = [frame async for frame in Stream(callback).value]
    assert b"".join(frames) == b"data: 1\n\ndata: 2\n\n"


@pytest.mark.anyio
async def test_value_has_a_single_consumer() -> None:
    stream = Stream(["a"])
    iterator = stream.value
    with pytest.raises(RuntimeError, match="one consumer"):
        stream.value  # noqa: B018
    assert [frame async for frame in iterator] == [b"data: a\n\n"]


@pytest.mark.anyio
async def test_an_abandoned_value_iterator_still_closes_its_source() -> None:
    import gc

    source_closed, ended = anyio.Event(), anyio.Event()
    reasons: list[str] = []

    async def endless() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
                await anyio.lowlevel.checkpoint()
        finally:
            source_closed.set()

    stream = Stream(endless())
    stream.on_close(lambda reason: (reasons.append(reason), ended.set()))
    iterator = stream.value
    async for frame in iterator:  # a framework that stops reading and forgets to aclose()
        if frame == b"data: 3\n\n":
            break
    del iterator
    gc.collect()  # the event loop's async-generator hook closes it, maybe in another task
    with anyio.fail_after(5):
        await ended.wait()
    assert source_closed.is_set() and reasons == ["disconnect"]
