"""Publishing through a Redis that is being cut off or restarted, for the fault tests and
the test workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgi_stream import Channel


async def publish_until_stored(
    channel: Channel, topic: str, data: Any, *, retry: int | None = None, within: float = 20
) -> str:
    """``publish``, again while it raises ``ConnectionError``: the tests cut connections
    between two publishes, so a publish that raised stored nothing and is not repeated."""
    with anyio.fail_after(within):
        while True:
            try:
                return await channel.publish(topic, data, retry=retry)
            except ConnectionError:
                await anyio.sleep(0.02)


async def paused_tokens(
    produced: list[int], third: anyio.Event, release: anyio.Event, count: int = 1000
) -> AsyncIterator[int]:
    """An LLM-like reply for ``publish_from``: yields 0, 1, 2, sets ``third``, and waits for
    ``release`` before going on; every item it made is in ``produced``."""
    for n in range(count):
        produced.append(n)
        yield n
        if n == 2:
            third.set()
            await release.wait()
