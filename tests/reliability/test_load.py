"""Load: 1,000 concurrent streams on one hypercorn worker (asyncio, trio), half of them over
HTTP/1.1 (a connection each), half over HTTP/2 (100 streams per connection), 50 events each:
every event arrives, in order, none twice; the server's memory per open stream; and
``StreamMiddleware.stats`` read under that load (1,000 live) and after it (exact events,
bytes equal to what the clients received, every stream ended "complete").

The server runs in a subprocess (``tests/reliability/server.py``) so that its VmRSS is its
own; the clients run in the test process on raw sockets with h11 / h2 (the state machines
httpx uses), parsed by the independent SSE parser of tests/sse_parser.py.
"""

from __future__ import annotations

import anyio
import pytest

from tests.reliability.clients import server_process
from tests.reliability.scenarios import KiB, run_load

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STREAMS = 1_000
EVENTS = 50
# Measured: 30-45 KiB per open stream (hypercorn's connection, h11/h2 state, socket buffers
# in user space, the Stream, its queue and its 3 tasks). A stream that kept its frames, or
# a task or buffer per event, would blow well past this.
MAX_RSS_PER_STREAM = 256 * KiB


async def test_1000_concurrent_streams_every_event_once_and_in_order(
    anyio_backend: str, open_files: int
) -> None:
    if open_files < 2 * STREAMS + 100:
        pytest.skip(f"needs {2 * STREAMS + 100} open files, RLIMIT_NOFILE is {open_files}")
    async with server_process(anyio_backend) as server:
        with anyio.fail_after(110):  # (pytest-timeout: 120 s)
            result = await run_load(server, streams=STREAMS, events=EVENTS, h2_share=0.5)
    print(
        f"\n{anyio_backend}: {STREAMS} streams ({result.h1} HTTP/1.1, {result.h2} HTTP/2 on "
        f"{result.h2_connections} connections) opened in {result.open_seconds:.1f} s, "
        f"{result.events_received} events in {result.deliver_seconds:.1f} s, "
        f"{result.rss_per_stream / KiB:.1f} KiB RSS per open stream"
    )
    assert result.errors == []
    assert result.events_received == STREAMS * EVENTS
    # all of them were open at once, in one worker
    assert result.active_when_open == STREAMS
    assert result.stats_open["live_streams"] == STREAMS
    after = result.stats_after
    assert after["settled"], after
    assert after["closes"] == {"load:complete": STREAMS + 2}  # + the two warm-up streams
    assert after["started"] == after["cleaned"]
    assert (after["live_streams"], after["stream_tasks"], after["active"]) == (0, 0, 0)
    assert 0 < result.rss_per_stream < MAX_RSS_PER_STREAM
    # StreamMiddleware.stats read under that load, and after it: exact.
    before, during, counted = (
        result.stats_before["counters"],
        result.stats_open["counters"],
        after["counters"],
    )
    assert during["live"] == STREAMS and counted["live"] == 0
    assert counted["ended"]["complete"] - before["ended"]["complete"] == STREAMS
    assert counted["ended"] == {**before["ended"], "complete": counted["ended"]["complete"]}
    assert counted["events"] - before["events"] == STREAMS * EVENTS
    assert counted["bytes"] - before["bytes"] == result.bytes_received
