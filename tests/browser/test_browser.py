"""What a real browser's ``EventSource`` receives from asgi_stream, and what the server sees.

A small raw-ASGI "lab" app behind ``StreamMiddleware`` and a real hypercorn serves a blank page
and one stream per check; helpers in that page (``LAB_JS``) open ``EventSource``s and resolve
with what they received, which the tests compare with what was sent. Server-side observations
(close reasons, generators' ``finally``, ``Last-Event-ID`` headers) are recorded by the app.
See conftest.py for the browser, and why asyncio only.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
from pydantic import BaseModel

from asgi_stream import ServerSentEvent, Stream, StreamMiddleware
from tests.conftest import serve
from tests.helpers import Record

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.anyio

TIMEOUT = 15  # seconds, for any one test's exchanges with the page and the server

LAB_JS = """
"use strict";
// Open an EventSource on `path`, listen for `types`, resolve with what arrived once an "end"
// event comes (then close, so that the browser does not reconnect).
window.collect = (path, types) => new Promise((resolve, reject) => {
  const got = [];
  const source = new EventSource(path);
  for (const type of types) {
    source.addEventListener(type, (e) => {
      got.push({ type: e.type, data: e.data, id: e.lastEventId });
    });
  }
  source.addEventListener("end", () => { source.close(); resolve(got); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) reject(new Error(path + ": the stream failed"));
  };
  setTimeout(() => { source.close(); reject(new Error(path + ": no end event in time")); }, 10000);
});

// A resumable stream that the server ends every few values: count until `total` values came,
// timing each reconnect from the end of a stream to the open of the next one.
window.resumable = (path, total) => new Promise((resolve, reject) => {
  const values = [], ids = [], delays = [];
  let droppedAt = null, connected = false, opens = 0;
  const source = new EventSource(path);
  source.onopen = () => {
    opens += 1;
    if (droppedAt !== null) delays.push(performance.now() - droppedAt);
    droppedAt = null;
    connected = true;
  };
  source.onmessage = (e) => {
    values.push(JSON.parse(e.data));
    ids.push(e.lastEventId);
    if (values.length === total) { source.close(); resolve({ values, ids, delays, opens }); }
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) reject(new Error(path + ": the stream failed"));
    else if (connected) droppedAt = performance.now();  // ended by the server: reconnecting
    connected = false;
  };
  setTimeout(() => { source.close(); reject(new Error(path + ": too slow")); }, 10000);
});

// Receive `count` messages, then close the EventSource from the page.
window.openThenClose = (path, count) => new Promise((resolve, reject) => {
  const got = [];
  const source = new EventSource(path);
  source.onmessage = (e) => {
    got.push(e.data);
    if (got.length === count) { source.close(); resolve(got); }
  };
  source.onerror = () => { source.close(); reject(new Error(path + ": the stream failed")); };
  setTimeout(() => { source.close(); reject(new Error(path + ": too slow")); }, 10000);
});
"""
PAGE = (
    '<!doctype html><meta charset="utf-8"><title>lab</title><link rel="icon" href="data:,">'
    f"<script>{LAB_JS}</script>"
).encode()

END = ServerSentEvent("", event="end")  # data "" still dispatches: the page's cue to close

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# -- what the lab streams -----------------------------------------------------------------------

NAMED = [
    ServerSentEvent("a1", event="alpha"),
    ServerSentEvent("m1"),
    ServerSentEvent("b1", event="beta", id="b-1"),
    ServerSentEvent("nobody listens", event="gamma"),
    ServerSentEvent("a2", event="alpha"),
    ServerSentEvent("m2", event="message"),
    ServerSentEvent("b2", event="beta"),
    ServerSentEvent("m3"),
]
NAMED_RECEIVED = [
    ("alpha", "a1", ""),
    ("message", "m1", ""),
    ("beta", "b1", "b-1"),
    ("alpha", "a2", "b-1"),  # lastEventId stays until another id comes
    ("message", "m2", "b-1"),
    ("beta", "b2", "b-1"),
    ("message", "m3", "b-1"),
]

MULTILINE = [
    "one\ntwo\nthree",
    "crlf\r\nline",
    "cr\rline",
    "blank\n\nline",
    "trailing newline\n",
    "\n",
    "   leading spaces",
    "data: forged\nevent: end\nid: 666\n\nretry: 1",
    "unicode \u2713 caf\u00e9 \u65e5\u672c \U0001f600",
    "x" * 70_000,  # larger than a socket read
]
MULTILINE_RECEIVED = [text.replace("\r\n", "\n").replace("\r", "\n") for text in MULTILINE]


@dataclass
class Point:
    x: float
    label: str


class Model(BaseModel):
    name: str
    tags: list[str]


JSON_ITEMS: list[Any] = [
    {"text": "h\u00e9llo \u2713 \U0001f600", "quote": 'say "hi"\n', "n": -1, "pi": math.pi},
    {"none": None, "yes": True, "nested": {"list": [1, [2, {"deep": "er"}]], "empty": {}}},
    [1, "two", 3.5, None, False],
    Point(1.5, "a</script>"),
    Model(name="m", tags=["x", "y"]),
    0,
    False,
    "a plain string is text, not JSON",
]
JSON_PARSED = [
    JSON_ITEMS[0],
    JSON_ITEMS[1],
    JSON_ITEMS[2],
    {"x": 1.5, "label": "a</script>"},
    {"name": "m", "tags": ["x", "y"]},
    0,
    False,
]


class Lab:
    """The lab app's routes (raw ASGI); ``Lab().app`` is the ASGI application."""

    def __init__(self) -> None:
        self.app = StreamMiddleware(self)
        self.closes = Record()  # (path, close reason) of every stream
        self.finished = Record()  # path of every producer that ran its `finally`
        self.last_event_ids: list[str | None] = []  # of every /resume request
        self.resume_started: list[float] = []  # when each /resume request came

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Stream | None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return None
        path = scope["path"]
        query = {
            key: int(values[0]) for key, values in parse_qs(scope["query_string"].decode()).items()
        }
        stream = None if path == "/" else self.stream(path, query)
        if stream is None:
            status, body = (200, PAGE) if path == "/" else (404, b"")
            headers = [(b"content-type", b"text/html; charset=utf-8")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return None
        stream.on_close(lambda reason: self.closes((path, reason)))
        return stream

    def stream(self, path: str, query: dict[str, int]) -> Stream | None:
        if path == "/order":
            return Stream([*range(query["n"]), END])
        if path == "/named":
            return Stream([*NAMED, END])
        if path == "/multiline":
            return Stream([*MULTILINE, END])
        if path == "/json":
            return Stream([*JSON_ITEMS, END])
        if path == "/heartbeat":
            return Stream(self.heartbeat, ping=20)
        if path == "/resume":
            return self.resume(query["retry"], query["batch"])
        if path == "/forever/generator":
            return Stream(self.forever(path))
        if path == "/forever/callback":
            return Stream(self.forever_callback)
        return None

    async def heartbeat(self, stream: Stream) -> None:
        stream.send("before")
        await stream.wait(200)  # several ": ping" comments meanwhile
        stream.send("after")
        stream.send(END)
        stream.close()  # a callback's stream stays open until closed

    def resume(self, retry: int, batch: int) -> Stream:
        """Value-based: ``batch`` values per connection, ids = values; resumes after the
        request's Last-Event-ID, then ends the stream: the browser reconnects."""
        stream = Stream(retry=retry)
        self.last_event_ids.append(stream.last_event_id)
        self.resume_started.append(anyio.current_time())
        after = int(stream.last_event_id or 0)
        for n in range(after + 1, after + batch + 1):
            stream.send(n, id=n)
        stream.close()
        return stream

    async def forever(self, path: str) -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
                await anyio.sleep(0.02)
        finally:
            self.finished(path)

    async def forever_callback(self, stream: Stream) -> None:
        try:
            n = 0
            while True:
                stream.send(n)
                n += 1
                await stream.wait(20)
        finally:
            self.finished("/forever/callback")


@pytest.fixture
async def lab(page: Page) -> AsyncIterator[tuple[Lab, Page]]:
    """The lab app served on 127.0.0.1, and the page opened on it."""
    lab = Lab()
    async with serve(lab.app) as url:
        await page.goto(url + "/")
        yield lab, page


async def run(page: Page, script: str, *args: Any) -> Any:
    """``page.evaluate`` bounded in time (the page's helpers also time out by themselves)."""
    with anyio.fail_after(TIMEOUT):
        return await page.evaluate(script, list(args))


async def until(record: Record, item: Any) -> None:
    """Wait until ``item`` was recorded."""
    with anyio.fail_after(TIMEOUT):
        while item not in record.items:
            await record.wait(len(record) + 1)


# -- the checks ---------------------------------------------------------------------------------


async def test_events_arrive_in_order(lab: tuple[Lab, Page]) -> None:
    server, page = lab
    got = await run(page, "([path]) => collect(path, ['message'])", "/order?n=500")
    assert [int(event["data"]) for event in got] == list(range(500))
    await until(server.closes, ("/order", "complete"))


async def test_named_events_reach_their_listeners_only(lab: tuple[Lab, Page]) -> None:
    _, page = lab
    got = await run(page, "([path]) => collect(path, ['alpha', 'beta', 'message'])", "/named")
    assert [(e["type"], e["data"], e["id"]) for e in got] == NAMED_RECEIVED


async def test_multi_line_data_arrives_intact(lab: tuple[Lab, Page]) -> None:
    """Every line break becomes a data: line; the browser joins them back with "\\n" (CR
    and CRLF too), and no line can forge a field or an event."""
    _, page = lab
    got = await run(page, "([path]) => collect(path, ['message'])", "/multiline")
    assert [event["data"] for event in got] == MULTILINE_RECEIVED
    assert all(event["id"] == "" for event in got)


async def test_json_payloads_parse_back_to_what_was_sent(lab: tuple[Lab, Page]) -> None:
    _, page = lab
    got = await run(page, "([path]) => collect(path, ['message'])", "/json")
    texts = [event["data"] for event in got]
    assert texts[-1] == JSON_ITEMS[-1]  # a str is sent as text
    parsed = await run(page, "([texts]) => texts.map((text) => JSON.parse(text))", texts[:-1])
    assert parsed == JSON_PARSED
    assert "\u2713" in texts[0] and "\\u" not in texts[0]  # UTF-8, not ASCII-escaped
    assert " " not in texts[2]  # compact


async def test_heartbeat_comments_are_invisible_to_the_page(lab: tuple[Lab, Page]) -> None:
    _, page = lab
    got = await run(page, "([path]) => collect(path, ['message'])", "/heartbeat")
    assert [event["data"] for event in got] == ["before", "after"]
    raw = await run(page, "async ([path]) => (await fetch(path)).text()", "/heartbeat")
    assert ": ping\n\n" in raw  # they were on the wire all the same


@pytest.mark.parametrize("retry", [300, 1200])
async def test_retry_is_honoured_and_last_event_id_resumes_without_loss(
    lab: tuple[Lab, Page], retry: int
) -> None:
    """The server ends the stream after every 4 values; the browser waits ``retry`` ms (not
    its default of about 3 s), reconnects with ``Last-Event-ID``, and the values go on: none
    lost, none repeated."""
    server, page = lab
    batch, connections = 4, 3
    got = await run(
        page,
        "([path, total]) => resumable(path, total)",
        f"/resume?retry={retry}&batch={batch}",
        batch * connections,
    )
    assert got["values"] == list(range(1, batch * connections + 1))
    assert got["ids"] == [str(n) for n in got["values"]]
    assert got["opens"] == connections
    assert server.last_event_ids == [None, "4", "8"]
    assert len(got["delays"]) == connections - 1
    for delay in got["delays"]:
        assert retry <= delay < retry + 2_000, got["delays"]
    # and as the server saw it: the next request came at least `retry` ms after the last one
    gaps = [
        b - a for a, b in zip(server.resume_started[:-1], server.resume_started[1:], strict=True)
    ]
    assert all(gap >= retry / 1000 for gap in gaps), gaps


@pytest.mark.parametrize("path", ["/forever/generator", "/forever/callback"])
async def test_closing_the_event_source_ends_the_producer(lab: tuple[Lab, Page], path: str) -> None:
    """``es.close()`` in the page: the server sees the disconnect, cancels or closes the
    producer (its ``finally`` runs) and fires ``on_close("disconnect")``."""
    server, page = lab
    got = await run(page, "([path, count]) => openThenClose(path, count)", path, 3)
    assert got == ["0", "1", "2"]
    await until(server.closes, (path, "disconnect"))
    await until(server.finished, path)
    assert server.app.active == 0


async def test_the_lab_app_answers_plain_clients_too() -> None:
    """The lab's streams, read by httpx: the same events (a check of the lab itself)."""
    lab = Lab()
    with anyio.fail_after(TIMEOUT):
        async with serve(lab.app) as url, httpx.AsyncClient() as client:
            response = await client.get(url + "/named")
    assert response.text.count("event: alpha\n") == 2
    assert response.text.endswith("event: end\ndata: \n\n")
