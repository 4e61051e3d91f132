"""Stalled clients: a client that stops reading while its producer keeps sending (``/flood``:
64 KiB frames every millisecond, up to 16 MiB) is dropped with ``on_close("slow-client")``
once more than ``max_buffer`` bytes wait behind a write in progress; the server's memory stays
bounded by about ``max_buffer`` per stalled stream; healthy clients of the same worker keep
receiving their ticks on time.

What bounds memory, per worker and protocol (measured here, 256 KiB max_buffer):

- asyncio, HTTP/1.1: hypercorn awaits ``drain()``, so our write blocks once the socket and
  asyncio's transport buffer are full; the queue then grows past max_buffer, the client is
  dropped, the queue is released and the producer cancelled; the write (cancellable) is
  abandoned. What stays until the client goes is the one chunk handed to the transport.
- trio, HTTP/1.1: hypercorn shields ``send_all``, so the write cannot be interrupted. The drop
  happens all the same (the rule looks at the queue, not at the write): ``on_close`` runs, the
  queue is released, the producer is cancelled and the middleware forgets the stream at once;
  only the driver itself waits out the stuck write, holding the chunk it was writing (at most
  max_buffer plus one frame) until the client reads or leaves. The test checks that those
  drivers are still there and that memory is bounded all the same.
- HTTP/2, a connection whose socket is never read: hypercorn's connection writer blocks, each
  stream's buffer (32 KiB) fills, our writes block (cancellable on both workers): dropped.
- HTTP/2, a stream that never gets flow-control credit (the connection itself is read and
  credited, e.g. a fetch() reader that stopped in a browser): see
  test_http2_stream_without_flow_control_credit_is_dropped.
"""

from __future__ import annotations

import anyio
import pytest

from tests.reliability.clients import server_process
from tests.reliability.scenarios import KiB, MiB, StalledResult, run_stalled

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MAX_BUFFER = 256 * KiB
# Per stalled stream: the chunk in flight (up to max_buffer + a frame) and hypercorn's own
# buffers; plus slack for the allocator and the connections themselves. Without the bound
# every stalled stream would keep all of its 16 MiB.
PER_STALLED = 2 * MAX_BUFFER + 256 * KiB
SLACK = 16 * MiB
# Healthy ticks are stamped when produced and measured when received: a few ms normally. An
# upper bound generous enough for a loaded 2-core machine, far below what a blocked loop or a
# writer stuck behind a stalled client would show.
MAX_LATENCY = 2.0


def check_bounded(result: StalledResult, *, dropped_reason: str = "slow-client") -> None:
    closes = result.dropped["closes"]
    assert closes.get(f"flood:{dropped_reason}", 0) == result.stalled, closes
    growth = result.rss_dropped - result.rss_before
    assert growth <= result.stalled * PER_STALLED + SLACK, (
        f"{growth / MiB:.1f} MiB more for {result.stalled} stalled streams "
        f"({result.rss_per_stalled / KiB:.0f} KiB each)"
    )
    assert result.healthy_missing == []
    assert max(result.latencies) < MAX_LATENCY
    after = result.after
    assert after["settled"], after
    assert (after["live_streams"], after["stream_tasks"], after["active"]) == (0, 0, 0)


def report(name: str, result: StalledResult) -> None:
    latencies = sorted(result.latencies)
    dropped = result.dropped["closes"].get("flood:slow-client", 0)
    print(
        f"\n{name}: {dropped} of {result.stalled} stalled streams dropped, "
        f"{result.rss_per_stalled / KiB:.0f} KiB RSS each (max_buffer {MAX_BUFFER // KiB} KiB); "
        f"{len(latencies)} healthy events, latency p50 {latencies[len(latencies) // 2] * 1e3:.1f}"
        f" ms, max {latencies[-1] * 1e3:.1f} ms"
    )


async def test_stalled_clients_are_dropped_memory_stays_bounded_others_keep_their_latency(
    anyio_backend: str,
) -> None:
    async with server_process(anyio_backend, "--max-buffer", str(MAX_BUFFER)) as server:
        with anyio.fail_after(120):
            result = await run_stalled(
                server,
                max_buffer=MAX_BUFFER,
                stalled_h1=20,
                stalled_h2_tcp=(2, 5),
                stalled_h2_window=0,
                healthy_h1=10,
                healthy_h2=5,
            )
    report(anyio_backend, result)
    check_bounded(result)
    # dropped streams are forgotten at once, whatever their writes do
    assert result.dropped["active"] <= result.healthy
    if anyio_backend == "trio":
        # hypercorn's trio worker shields the socket write: the drivers of the stalled
        # HTTP/1.1 clients still wait for it (memory bounded all the same, checked above)
        assert result.dropped["requests"] >= result.stalled_h1


async def test_http2_stream_without_flow_control_credit_is_dropped(
    anyio_backend: str, request: pytest.FixtureRequest
) -> None:
    """Five HTTP/2 streams whose client never grants flow-control credit (after the 1 MiB
    initial window), on a connection that is read and credited and also carries five healthy
    streams."""
    async with server_process(anyio_backend, "--max-buffer", str(MAX_BUFFER)) as server:
        with anyio.fail_after(120):
            result = await run_stalled(
                server,
                max_buffer=MAX_BUFFER,
                stalled_h1=0,
                stalled_h2_tcp=(0, 0),
                stalled_h2_window=5,
                healthy_h1=0,
                healthy_h2=5,
                settle=15,
            )
    report(anyio_backend, result)
    check_bounded(result)
