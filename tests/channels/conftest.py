"""Every channel test runs on both stores (memory, and a real redis-server) where both apply,
on asyncio and trio."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from asgi_stream import Channel
from tests.redis_server import RedisServer

_prefixes = itertools.count()


def unique_prefix() -> str:
    """A Redis key prefix no other test uses (the session shares one redis-server)."""
    return f"test{next(_prefixes)}:"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_channel(store: str, request: pytest.FixtureRequest) -> Callable[..., Channel]:
    """``make_channel(**options)``: a Channel on the test's store, with a prefix of its own."""
    if store == "memory":
        return Channel
    server: RedisServer = request.getfixturevalue("redis_server")

    def make(**options: Any) -> Channel:
        options.setdefault("prefix", unique_prefix())
        return Channel(server.url, **options)

    return make
