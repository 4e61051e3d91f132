"""Disconnect storm: 500 clients of every kind of producer leave at random points (right
after the request, after the headers, inside an event, after a few events; HTTP/1.1 with a
FIN or a TCP reset, HTTP/2 with RST_STREAM or by dropping the whole connection). Afterwards
every producer's cleanup ran, every Stream got exactly one ``on_close("disconnect")``, and
nothing outlives its request: no Stream object (gc + weakrefs), no task running library code,
no iterate_in_thread thread, no upstream connection of a proxy stream, no registry entry.

``RELIABILITY_SEED=n`` replays another storm.
"""

from __future__ import annotations

import os

import anyio
import pytest

from tests.reliability.clients import server_process
from tests.reliability.scenarios import KINDS, run_storm

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLIENTS = 500
SEED = int(os.environ.get("RELIABILITY_SEED", "4"))


async def test_500_clients_leave_at_random_points_and_nothing_outlives_them(
    anyio_backend: str,
) -> None:
    async with server_process(anyio_backend) as server:
        with anyio.fail_after(110):  # (pytest-timeout: 120 s)
            result = await run_storm(server, clients=CLIENTS, h2_share=0.4, seed=SEED)
    print(f"\n{anyio_backend}, seed {SEED}: {result.seconds:.1f} s, {result.leaves}")
    after = result.after
    assert after["settled"], after
    built = sum(after["built"].values())
    assert set(after["built"]) == set(KINDS)
    # every client that saw its response start had a Stream (others may have left before
    # hypercorn even read the request)
    assert result.saw_headers <= built <= CLIENTS
    # one on_close per Stream, always "disconnect"
    assert sum(after["closes"].values()) == built
    assert {key.split(":")[1] for key in after["closes"]} == {"disconnect"}
    # every producer that started ran its cleanup (finally), the threads' ones included
    assert after["started"] == after["cleaned"]
    assert after["cleaned"]["thread"] > 0
    # nothing outlives its request
    assert after["live_streams"] == 0  # no Stream object left (after gc)
    assert after["stream_tasks"] == 0  # no task running asgi_stream code
    assert after["threads"] == 0  # no iterate_in_thread thread
    assert after["upstream_open"] == 0 < after["upstream_total"]  # proxies closed upstreams
    assert (after["active"], after["requests"], after["values"]) == (0, 0, 0)
