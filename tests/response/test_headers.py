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
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track
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
