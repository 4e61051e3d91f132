"""Response headers are validated when the Stream is built (SPEC "Stream": ``headers``), not
when the server meets them: a header name must be an HTTP token (RFC 9110 ``tchar``:
``!#$%&'*+-.^_`|~``, digits, letters) and a value must be free of control characters
(0x00-0x1F and 0x7F), except horizontal tab, which is allowed. Otherwise ``Stream(headers=...)``
raises a ``ValueError`` that names the header. A valid header, a tab in its value included,
reaches a real client unchanged.

The construction checks need no event loop: plain ``def`` tests, run once."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from asgi_stream.starlette import Stream as StarletteStream
from asgi_stream.wire import content_type, normalize_headers, response_headers
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, callback_stream, read_raw, track
from tests.peer import Peer

BAD_NAMES = ["x y", "x(y", "x@y", "x/y", "x,y", 'x"y', "x{y", "x-é", ""]
BAD_VALUES = ["a\x01b", "a\x7fb", "a\x00b", "a\rb", "a\nb", "a\x1fb", "\x08"]
TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_is_not_a_token_is_refused_naming_it(name: str) -> None:
    for headers in ({name: "ok"}, [(name, "ok")]):
        with pytest.raises(ValueError, match="header") as caught:
            Stream(headers=headers)
        if name:
            assert name in str(caught.value)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_value_with_a_control_character_is_refused_naming_the_header(value: str) -> None:
    for headers in ({"x-bad": value}, [("x-bad", value)]):
        with pytest.raises(ValueError) as caught:
            Stream(["x"], headers=headers)
        assert "x-bad" in str(caught.value)


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n.isascii()])
def test_starlette_raw_headers_get_the_same_name_check(name: str) -> None:
    stream = StarletteStream(["x"])
    with pytest.raises(ValueError, match="header"):
        stream.raw_headers = [(name.encode(), b"ok")]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_starlette_raw_headers_get_the_same_value_check(value: str) -> None:
    stream = StarletteStream(["x"])
    with pytest.raises(ValueError) as caught:
        stream.raw_headers = [(b"x-bad", value.encode())]
    assert "x-bad" in str(caught.value)


def test_every_token_character_and_a_tab_in_a_value_are_accepted() -> None:
    stream = StarletteStream(headers={TCHARS: "v", "x-tab": "a\tb", "x-text": 'a b;c="d"'})
    assert stream.raw_headers == [
        (TCHARS.encode(), b"v"),
        (b"x-tab", b"a\tb"),
        (b"x-text", b'a b;c="d"'),
    ]


# -- valid headers reach the client unchanged ----------------------------------------------


@pytest.mark.anyio
async def test_a_tab_in_a_value_is_sent_in_process() -> None:
    closes = Record()
    app = Served(lambda scope: track(Stream(["x"], headers={"x-tab": "a\tb", TCHARS: "v"}), closes))
    peer = Peer()
    with anyio.fail_after(TIMEOUT):
        await app(peer.scope, peer.receive, peer.send)
        assert await closes.wait() == ["complete"]
    assert peer.status == 200
    assert peer.headers[b"x-tab"] == b"a\tb"
    assert peer.headers[TCHARS.encode()] == b"v"
    assert peer.body == b"data: x\n\n"


@pytest.mark.anyio
async def test_a_tab_in_a_value_reaches_a_real_client_unchanged() -> None:
    closes = Record()

    def handler(scope: Any) -> Stream:
        return track(Stream(["x"], headers={"x-tab": "a\tb", TCHARS: "v"}), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url + "/headers")
            assert response.status_code == 200
            assert response.headers["x-tab"] == "a\tb"
            assert response.headers[TCHARS] == "v"
            assert body == b"data: x\n\n"
            assert await closes.wait() == ["complete"]


# -- the wire module's header helpers: normalize_headers, content_type, response_headers --


def test_normalize_headers() -> None:
    assert normalize_headers(None) == []
    assert normalize_headers({}) == []
    assert normalize_headers({"X-Foo": "Bar", "Cache-Control": "no-store"}) == [
        (b"x-foo", b"Bar"),
        (b"cache-control", b"no-store"),
    ]
    assert normalize_headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2")]) == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert normalize_headers([(b"X-Raw", b"v")]) == [(b"x-raw", b"v")]


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\nb", "\r\n", "x\n", "a\0b"])
def test_normalize_headers_rejects_line_breaks(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_headers({"x-ok": bad})
    with pytest.raises(ValueError):
        normalize_headers({"x" + bad: "ok"})
    with pytest.raises(ValueError):
        normalize_headers([(b"x-ok", bad.encode())])
    with pytest.raises(ValueError):
        Stream(headers={"x-ok": bad})


@pytest.mark.parametrize(
    "name", ["connection", "Connection", "CONNECTION", "transfer-encoding", "Transfer-Encoding"]
)
def test_normalize_headers_rejects_hop_by_hop(name: str) -> None:
    with pytest.raises(ValueError, match=name.lower()):
        normalize_headers({name: "close"})
    with pytest.raises(ValueError):
        Stream(headers=[(name, "chunked")])


def test_normalize_headers_rejects_bad_shapes() -> None:
    with pytest.raises(TypeError):
        normalize_headers(["x-foo"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        normalize_headers({"x-foo": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        normalize_headers({"": "v"})
    with pytest.raises(ValueError):
        normalize_headers({"a:b": "v"})
    with pytest.raises(ValueError):
        normalize_headers({"x-foo": "naïve"})


def test_content_types() -> None:
    assert content_type("sse") == b"text/event-stream; charset=utf-8"
    assert content_type("ndjson") == b"application/x-ndjson"
    assert content_type("text") == b"text/plain; charset=utf-8"


def test_response_headers_defaults() -> None:
    headers = response_headers(content_type("sse"), [])
    assert headers == [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    names = {name for name, _ in headers}
    assert not names & {b"connection", b"transfer-encoding"}


def test_response_headers_user_headers_override_defaults() -> None:
    extra = normalize_headers(
        {
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "yes",
            "Content-Type": "text/event-stream",
            "Access-Control-Allow-Origin": "*",
        }
    )
    headers = response_headers(content_type("sse"), extra)
    assert sorted(headers) == sorted(
        [
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"yes"),
            (b"content-type", b"text/event-stream"),
            (b"access-control-allow-origin", b"*"),
        ]
    )
    partial = response_headers(content_type("ndjson"), [(b"x-extra", b"1")])
    assert (b"content-type", b"application/x-ndjson") in partial
    assert (b"x-extra", b"1") in partial
    assert len(partial) == 4


@pytest.mark.anyio
async def test_response_headers_status_and_overrides() -> None:
    peer = Peer()
    stream = Stream(["x"], status=201, headers={"X-Trace": "1", "Cache-Control": "no-store"})
    await stream(peer.scope, peer.receive, peer.send)
    assert peer.status == 201
    assert peer.headers == {
        b"content-type": b"text/event-stream; charset=utf-8",
        b"cache-control": b"no-store",
        b"x-accel-buffering": b"no",
        b"x-trace": b"1",
    }
    names = [name for name, _ in peer.start["headers"]]  # type: ignore[index]
    assert b"connection" not in names and b"transfer-encoding" not in names


@pytest.mark.anyio
async def test_custom_status_and_headers() -> None:
    handler = callback_stream(
        "created",
        status=201,
        headers={"X-Custom": "yes", "Cache-Control": "no-store", "set-cookie": "a=1"},
    )
    with anyio.fail_after(TIMEOUT):
        async with serve(Served(handler)) as url, httpx.AsyncClient() as client:
            response, body = await read_raw(client, url)
    assert response.status_code == 201
    assert response.headers["x-custom"] == "yes"
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers["set-cookie"] == "a=1"
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-accel-buffering"] == "no"
    assert body == b"data: created\n\n"


@pytest.mark.anyio
async def test_bad_headers_name_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"headers must be .* not int"):
        Stream(headers=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"headers must be .* not str"):
        Stream(headers="x-a")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["te", "keep-alive", "proxy-connection", "upgrade", "content-length", "Content-Length"]
)
def test_connection_specific_and_length_headers_are_refused_naming_them(name: str) -> None:
    """``te`` and the other connection-specific fields are a protocol error on HTTP/2 (RFC 9113
    8.2.2: the whole connection was torn down), and a stream has no ``content-length``."""
    with pytest.raises(ValueError, match=name.lower()):
        Stream(["x"], headers={name: "trailers" if name == "te" else "3"})


@pytest.mark.parametrize("value", ["abc ", " abc", "\tabc", "abc\t"])
def test_a_value_with_leading_or_trailing_whitespace_is_refused_naming_the_header(
    value: str,
) -> None:
    """RFC 9110 5.5: no leading or trailing whitespace; h11 (uvicorn) refuses to send it, and
    the client got no response at all. Refused, never silently stripped."""
    with pytest.raises(ValueError, match="x-trace"):
        Stream(["x"], headers={"x-trace": value})
