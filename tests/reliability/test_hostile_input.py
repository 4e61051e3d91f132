"""Hostile input under a real hypercorn (in-process, asyncio and trio, HTTP/1.1 and HTTP/2).

No ``str`` data, event name or id can add an event or a field, CR/LF/NUL in event or id are
refused and lone surrogates give a clear error: property-tested with hypothesis in
tests/test_wire.py (``test_property_*``), not repeated here; here a seeded corpus of such
strings also goes through the driver and hypercorn to the independent parser. This module
covers what only a server shows:

- a 10 MB event: ``max_buffer`` bounds what *waits behind a write in progress*, not the size of
  one event. Sent while the writer is idle, it is written whole (other streams keep flowing
  meanwhile); sent while a write to that client is still in progress (the client is slower
  than the producer), more than max_buffer waits and the client is dropped (``"slow-client"``).
- ``Last-Event-ID``: hypercorn refuses a 1 MB header (HTTP/1.1: 431; HTTP/2: it closes the
  connection) before the app runs. Values with line breaks are either refused by hypercorn (a
  bare CR or a NUL: 400; any CR/LF/NUL over HTTP/2: the connection is closed) or never reach
  the app with a line break (CRLF starts a new header; a bare LF ends the line; an obs-fold
  continuation is joined with a space). Echoed as the ``id`` of an event, what reaches the app
  stays one field of one event (and a line break would be refused by ``send``).
- a client cannot trigger a hand-over by sending the ``x-asgi-stream-handoff`` header, even to
  an app that copies request headers into its response.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import time
from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import ServerSentEvent, Stream, StreamMiddleware
from asgi_stream.middleware import HANDOFF_HEADER
from tests.conftest import serve, stream_app
from tests.helpers import Record, Served, track
from tests.reliability.clients import H1, H2, server_process
from tests.reliability.scenarios import run_corpus
from tests.sse_parser import parse

pytestmark = pytest.mark.anyio

TIMEOUT = 30
BIG = 10_000_000  # characters in the 10 MB event
# Two ticks (20 ms apart) of another stream never arrive further apart than this, even while
# 10 MB go through the same worker (client and server share one loop here) on a loaded box.
MAX_GAP = 1.5

PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])


def client(http2: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=not http2, http2=http2, timeout=TIMEOUT)


async def ticks(n: int) -> Any:
    for i in range(n):
        if i:
            await anyio.sleep(0.02)
        yield i


async def worst_gap(http: httpx.AsyncClient, url: str, first: anyio.Event) -> float:
    """Read a ticks stream to its end: the longest time between two ticks' arrivals."""
    arrivals = []
    async with http.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                first.set()
    return max(b - a for a, b in itertools.pairwise(arrivals))


# -- a 10 MB event -------------------------------------------------------------------------


@pytest.mark.slow
@PROTOCOLS
async def test_a_10mb_event_is_written_whole_while_other_streams_keep_flowing(
    http2: bool,
) -> None:
    closes = Record()
    ticking = anyio.Event()

    def handler(scope: Any) -> Stream:
        if scope["path"] == "/ticks":
            return Stream(ticks(75))

        async def callback(stream: Stream) -> None:
            await ticking.wait()
            stream.send("start")
            stream.send("x" * BIG)  # the writer is idle: accepted, above max_buffer (1 MiB)
            stream.send("end")
            stream.close()

        return track(Stream(callback), closes)

    app = Served(handler)
    bodies: list[bytes] = []
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, client(http2) as http, anyio.create_task_group() as tg:

            async def read_big() -> None:
                response = await http.get(url + "/big")
                bodies.append(response.content)

            tg.start_soon(read_big)
            gap = await worst_gap(http, url + "/ticks", ticking)
        assert await closes.wait() == ["complete"]
    (body,) = bodies
    assert [event.data for event in parse(body).events] == ["start", "x" * BIG, "end"]
    print(f"\nlongest gap between two ticks of another stream: {gap * 1e3:.0f} ms")
    assert gap < MAX_GAP, f"two ticks of another stream arrived {gap:.2f} s apart"


@pytest.mark.slow
@PROTOCOLS
async def test_a_10mb_event_behind_a_write_in_progress_drops_the_client(http2: bool) -> None:
    closes = Record()
    refused = Record()
    reading_stopped = anyio.Event()
    ticking = anyio.Event()

    def handler(scope: Any) -> Stream:
        if scope["path"] == "/ticks":
            return Stream(ticks(50))

        async def callback(stream: Stream) -> None:
            stream.send("x" * BIG)  # accepted (the writer is idle) and being written...
            await reading_stopped.wait()  # ... to a client that has stopped reading
            for attempt in range(5):  # 50 MB more than socket buffers can hold
                if not stream.send("y" * BIG):
                    refused(attempt)
                    return
                await anyio.sleep(0.02)

        return track(Stream(callback), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            client(http2) as http,
            client(http2) as stalled,  # a connection of its own (HTTP/2 would share one)
            anyio.create_task_group() as tg,
        ):

            async def stop_reading() -> None:
                async with stalled.stream("GET", url + "/big") as response:
                    raw = response.aiter_raw()
                    await anext(raw)  # the first bytes of the 10 MB event, then nothing
                    reading_stopped.set()
                    await closes.wait()
                    await raw.aclose()

            tg.start_soon(stop_reading)
            gap = await worst_gap(http, url + "/ticks", ticking)
            assert await closes.wait() == ["slow-client"]
            assert len(await refused.wait()) == 1  # send() said False: the producer stopped
        await app.finished.wait(2)
        assert app.active == 0
    print(f"\nlongest gap between two ticks of another stream: {gap * 1e3:.0f} ms")
    assert gap < MAX_GAP, f"two ticks of another stream arrived {gap:.2f} s apart"


# -- Last-Event-ID -------------------------------------------------------------------------


def echo_last_event_id(seen: Record) -> Any:
    """An app that resumes from Last-Event-ID: it echoes it as the id of its one event."""

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            seen(stream.last_event_id)
            stream.send(ServerSentEvent("resumed", id=stream.last_event_id))
            stream.close()

        return Stream(callback)

    return StreamMiddleware(stream_app(handler))


async def raw_h1(port: int, request: bytes) -> H1:
    """Send raw request bytes; read whatever comes back (nothing, if hypercorn just closes)."""
    connection = H1(port)
    await connection.connect()
    with contextlib.suppress(anyio.BrokenResourceError, OSError):
        # (hypercorn may answer and close while we are still sending)
        await connection.send_raw(request)
    try:
        await connection.read_all()
    except (anyio.BrokenResourceError, OSError):
        connection.closed_early = True
    await connection.aclose()
    return connection


def request_with(header: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\nhost: test\r\n" + header + b"\r\n\r\n"


async def check_served_normally(port: int, seen: Record) -> None:
    """A well-behaved request afterwards is answered as usual."""
    before = len(seen)
    response = await raw_h1(port, request_with(b"last-event-id: 41"))
    assert response.status == 200 and response.complete
    assert [(e.id, e.data) for e in response.events().events] == [("41", "resumed")]
    assert seen.items[before:] == ["41"]


async def test_a_1mb_last_event_id_is_refused_before_the_app_runs() -> None:
    seen = Record()
    with anyio.fail_after(TIMEOUT):
        async with serve(echo_last_event_id(seen)) as url:
            port = int(url.rsplit(":", 1)[1])
            http1 = await raw_h1(port, request_with(b"last-event-id: " + b"7" * 1_048_576))
            # 431 Request Header Fields Too Large (or a reset, if it came while we still sent)
            assert http1.status == 431 or (http1.status is None and http1.closed_early)
            connection = H2(port)
            await connection.connect()
            async with anyio.create_task_group() as tg:
                tg.start_soon(connection.run)
                stream = await connection.get("/", [(b"last-event-id", b"7" * 1_048_576)])
                await connection.until(lambda: stream.complete)
                tg.cancel_scope.cancel()
            assert connection.closed and stream.status is None  # the connection was closed
            assert seen.items == []  # the app never saw it
            await check_served_normally(port, seen)


H1_LINE_BREAKS = {
    "CRLF (a new header line)": b"last-event-id: 1\r\ndata: evil",
    "obs-fold continuation": b"last-event-id: 1\r\n data: evil",
    "bare CR": b"last-event-id: 1\rdata: evil",
    "bare LF": b"last-event-id: 1\ndata: evil",
    "NUL": b"last-event-id: 1\x00data: evil",
}


async def test_line_breaks_in_last_event_id_over_http1_inject_nothing() -> None:
    seen = Record()
    outcomes = {}
    with anyio.fail_after(TIMEOUT):
        async with serve(echo_last_event_id(seen)) as url:
            port = int(url.rsplit(":", 1)[1])
            for name, header in H1_LINE_BREAKS.items():
                before = len(seen)
                response = await raw_h1(port, request_with(header))
                reached_app = seen.items[before:]
                outcomes[name] = (response.status, reached_app)
                if response.status != 200:
                    assert response.status == 400 and reached_app == []  # refused by hypercorn
                    continue
                (value,) = reached_app
                assert not set(value) & {"\r", "\n", "\0"}
                result = parse(bytes(response.body))
                # one event, one id field: the value cannot add an event or a field
                assert [(e.id, e.data) for e in result.events] == [(value, "resumed")]
                assert [field for field, _ in result.fields] == ["id", "data"]
            await check_served_normally(port, seen)
    print("\nLast-Event-ID over HTTP/1.1 (status, value the app saw):", outcomes)
    assert outcomes == {
        "CRLF (a new header line)": (200, ["1"]),
        "obs-fold continuation": (200, ["1 data: evil"]),
        "bare CR": (400, []),
        "bare LF": (200, ["1"]),
        "NUL": (400, []),
    }


@pytest.mark.parametrize("value", [b"1\r\ndata: evil", b"1\ndata: evil", b"1\rx", b"1\x00x"])
async def test_line_breaks_in_last_event_id_over_http2_close_the_connection(value: bytes) -> None:
    """The h2 stack refuses such a header field: hypercorn closes that client's connection
    (not only the stream); the app never runs; other connections are not affected."""
    seen = Record()
    with anyio.fail_after(TIMEOUT):
        async with serve(echo_last_event_id(seen)) as url:
            port = int(url.rsplit(":", 1)[1])
            connection = H2(port)
            await connection.connect()
            async with anyio.create_task_group() as tg:
                tg.start_soon(connection.run)
                stream = await connection.get("/", [(b"last-event-id", value)])
                await connection.until(lambda: stream.complete)
                tg.cancel_scope.cancel()
            assert connection.closed and stream.status is None
            assert seen.items == []
            await check_served_normally(port, seen)


# -- hand-over ----------------------------------------------------------------------------


@PROTOCOLS
async def test_a_client_cannot_trigger_a_hand_over(http2: bool) -> None:
    """An app that copies the client's headers into its response (a debugging echo, a naive
    proxy) receives a forged hand-over marker: its plain response goes out unchanged."""

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), *scope["headers"]],
            }
        )
        await send({"type": "http.response.body", "body": b"plain"})

    app = StreamMiddleware(echo)
    forged = {HANDOFF_HEADER: secrets.token_hex(16)}
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, client(http2) as http:
            response = await http.get(url, headers=forged)
    assert response.status_code == 200 and response.content == b"plain"
    assert response.headers["content-type"] == "text/plain"
    assert response.headers[HANDOFF_HEADER] == forged[HANDOFF_HEADER]  # echoed, not taken
    assert app.active == 0


# -- hostile strings end to end ----------------------------------------------------------------


@pytest.mark.slow
async def test_hostile_strings_through_the_wire_add_no_event_and_no_field(
    anyio_backend: str,
) -> None:
    """2,000 (data, event, id) triples built from line breaks of every kind, NUL, lone
    surrogates, BOM, Unicode separators and SSE syntax, sent by a stream of a subprocess
    worker over HTTP/1.1 and HTTP/2: the invalid ones are refused by ``send`` (ValueError);
    each valid one arrives as exactly one event with exactly its data, event and id."""
    async with server_process(anyio_backend) as server:
        with anyio.fail_after(60):
            for http2 in (False, True):
                result = await run_corpus(server, seed=4, n=2_000, http2=http2)
                assert result.mismatches == []
                assert result.received == result.expected
                assert 0 < result.refused < result.tried and result.expected > 1_000
