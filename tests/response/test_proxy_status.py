"""Proxy mode never turns an upstream status outside 2xx into a 200 (SPEC "Stream", proxy):
a redirect (not followed), a 304, a 404, a 500 or an odd 399 from the upstream becomes a
``502`` whose short plain-text body names the upstream status, and the upstream response is
closed. A 2xx upstream (200, 201, 206) still passes its bytes through unchanged.

The upstream is a real hypercorn on loopback; the proxying app is driven in process (raw
ASGI) and under a second real hypercorn with an httpx client. Both documented forms of the
source are used: ``client.send(request, stream=True)`` (an awaitable) and an already-opened
``httpx.Response``."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from asgi_stream import Stream
from tests.conftest import answer_lifespan, serve
from tests.helpers import TIMEOUT, Record, Served, read_raw, track
from tests.peer import Peer

pytestmark = pytest.mark.anyio

REFUSED = [301, 302, 307, 304, 399, 404, 500]
PASSED = [200, 201, 206]
FORMS = ["awaitable", "opened"]
UPSTREAM_BODY = b"data: upstream body\n\n"


async def upstream_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers ``/<status>`` with that status; a body unless the status forbids one."""
    if scope["type"] == "lifespan":
        return await answer_lifespan(receive, send)
    status = int(scope["path"].strip("/"))
    headers = [(b"content-type", b"text/event-stream")]
    if 300 <= status < 400 and status != 304:
        headers.append((b"location", b"/elsewhere"))
    body = b"" if status == 304 else UPSTREAM_BODY
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Proxy:
    """The proxying handler, in one of the two documented forms; remembers every upstream
    response it opened (through httpx's response hook, for the awaitable form too)."""

    def __init__(self, upstream_url: str, form: str) -> None:
        self.upstream_url = upstream_url
        self.form = form
        self.responses: list[httpx.Response] = []
        self.closes = Record()
        self.client = httpx.AsyncClient(
            follow_redirects=False, event_hooks={"response": [self._opened]}
        )

    async def _opened(self, response: httpx.Response) -> None:
        self.responses.append(response)

    async def __call__(self, scope: Any) -> Stream:
        request = self.client.build_request("GET", self.upstream_url + scope["path"])
        if self.form == "awaitable":
            return track(Stream(self.client.send(request, stream=True)), self.closes)
        response = await self.client.send(request, stream=True)
        return track(Stream(response), self.closes)


def check_refused(status: int, got: int | None, content_type: str, body: bytes) -> None:
    assert got == 502, f"upstream {status} was sent as {got}"
    assert content_type == "text/plain; charset=utf-8"
    assert str(status).encode() in body
    assert len(body) < 200
    assert UPSTREAM_BODY not in body


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", REFUSED)
async def test_upstream_status_outside_2xx_is_a_502_in_process(status: int, form: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with serve(upstream_app) as upstream_url:
            proxy = Proxy(upstream_url, form)
            async with proxy.client:
                app = Served(proxy)
                peer = Peer(path=f"/{status}")
                await app(peer.scope, peer.receive, peer.send)
                await proxy.closes.wait()
    check_refused(status, peer.status, peer.headers[b"content-type"].decode(), peer.body)
    assert peer.finished
    assert len(proxy.responses) == 1 and proxy.responses[0].status_code == status
    assert proxy.responses[0].is_closed, "the upstream response was left open"
    assert len(proxy.closes) == 1
    assert app.active == 0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", REFUSED)
async def test_upstream_status_outside_2xx_is_a_502_for_a_real_client(
    status: int, form: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with serve(upstream_app) as upstream_url:
            proxy = Proxy(upstream_url, form)
            app = Served(proxy)
            async with proxy.client, serve(app) as url, httpx.AsyncClient() as client:
                response, body = await read_raw(client, url + f"/{status}")
                await app.finished.wait()
                await proxy.closes.wait()
    check_refused(status, response.status_code, response.headers["content-type"], body)
    assert len(proxy.responses) == 1 and proxy.responses[0].status_code == status
    assert proxy.responses[0].is_closed, "the upstream response was left open"
    assert proxy.closes.items == ["error"]
    assert app.active == 0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", PASSED)
async def test_upstream_2xx_passes_through_in_process(status: int, form: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with serve(upstream_app) as upstream_url:
            proxy = Proxy(upstream_url, form)
            async with proxy.client:
                app = Served(proxy)
                peer = Peer(path=f"/{status}")
                await app(peer.scope, peer.receive, peer.send)
                assert await proxy.closes.wait() == ["complete"]
    assert peer.status is not None and 200 <= peer.status < 300
    assert peer.headers[b"content-type"] == b"text/event-stream"
    assert peer.body == UPSTREAM_BODY
    assert peer.finished
    assert proxy.responses[0].is_closed


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", PASSED)
async def test_upstream_2xx_passes_through_to_a_real_client(status: int, form: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with serve(upstream_app) as upstream_url:
            proxy = Proxy(upstream_url, form)
            app = Served(proxy)
            async with proxy.client, serve(app) as url, httpx.AsyncClient() as client:
                response, body = await read_raw(client, url + f"/{status}")
                assert await proxy.closes.wait() == ["complete"]
    assert 200 <= response.status_code < 300
    assert response.headers["content-type"] == "text/event-stream"
    assert body == UPSTREAM_BODY
    assert proxy.responses[0].is_closed
