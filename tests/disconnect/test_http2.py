"""The client leaves over HTTP/2 (h2c, real hypercorn): a dropped connection disconnects every
stream it carried; a reset stream (RST_STREAM, raw ``h2`` client) disconnects only that one."""

from __future__ import annotations

from typing import Any

import anyio
import h2.config
import h2.connection
import h2.events
import pytest

from asgi_stream import Stream
from tests.conftest import serve
from tests.helpers import TIMEOUT, Record, Served, h2_client, track

pytestmark = pytest.mark.anyio


async def test_connection_drop_disconnects_all_its_streams() -> None:
    never = anyio.Event()
    closes = Record()
    opened = Record()
    cancelled = Record()

    def handler(scope: Any) -> Stream:
        async def callback(stream: Stream) -> None:
            try:
                stream.send("open")
                await never.wait()
            except anyio.get_cancelled_exc_class():
                cancelled(scope["path"])
                raise

        return track(Stream(callback), closes)

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with (
            serve(app) as url,
            h2_client() as client,
            anyio.create_task_group() as tg,
        ):

            async def listen(path: str) -> None:
                async with client.stream("GET", url + path) as response:
                    assert response.http_version == "HTTP/2"
                    async for line in response.aiter_lines():
                        assert line == "data: open"
                        opened(path)
                        await never.wait()

            tg.start_soon(listen, "/a")
            tg.start_soon(listen, "/b")
            await opened.wait(2)
            assert app.active == 2
            tg.cancel_scope.cancel()
            # the client (and its one connection) is closed here
            assert await closes.wait(2) == ["disconnect", "disconnect"]
            assert sorted(await cancelled.wait(2)) == ["/a", "/b"]
            await app.finished.wait(2)
            assert app.active == 0


class RawH2:
    """A minimal HTTP/2 client on the ``h2`` state machine, so a test can reset one stream
    (RST_STREAM) while the connection and its other streams stay open."""

    def __init__(self, connection: Any, authority: str) -> None:
        self.socket = connection
        self.authority = authority
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.lock = anyio.Lock()
        self.headers: dict[int, dict[str, str]] = {}
        self.data: dict[int, bytes] = {}
        self.changed = Record()
        self.ended: set[int] = set()

    async def flush(self) -> None:
        async with self.lock:
            data = self.h2.data_to_send()
            if data:
                await self.socket.send(data)

    async def start(self) -> None:
        self.h2.initiate_connection()
        await self.flush()

    async def get(self, path: str) -> int:
        stream_id = int(self.h2.get_next_available_stream_id())
        self.h2.send_headers(
            stream_id,
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", self.authority),
                (":path", path),
            ],
            end_stream=True,
        )
        await self.flush()
        return stream_id

    async def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id)
        await self.flush()

    async def read_forever(self) -> None:
        while True:
            try:
                chunk = await self.socket.receive(65_536)
            except anyio.EndOfStream:
                return
            for event in self.h2.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    self.headers[event.stream_id] = dict(event.headers)  # type: ignore[arg-type]
                elif isinstance(event, h2.events.DataReceived):
                    sid = event.stream_id
                    self.data[sid] = self.data.get(sid, b"") + event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    self.ended.add(event.stream_id)
            await self.flush()
            self.changed(True)

    async def until(self, condition: Any) -> None:
        while not condition():
            await self.changed.wait(len(self.changed) + 1)


async def test_stream_reset_disconnects_only_that_stream() -> None:
    never = anyio.Event()
    go_on = anyio.Event()
    closes: dict[str, Record] = {"/reset": Record(), "/stay": Record()}
    cancelled = Record()

    def handler(scope: Any) -> Stream:
        path = scope["path"]

        async def callback(stream: Stream) -> None:
            stream.send(f"first {path}")
            try:
                await (never if path == "/reset" else go_on).wait()
            except anyio.get_cancelled_exc_class():
                cancelled(path)
                raise
            stream.send(f"second {path}")
            stream.close()

        return track(Stream(callback), closes[path])

    app = Served(handler)
    with anyio.fail_after(TIMEOUT):
        async with serve(app) as url:
            authority = url.removeprefix("http://")
            host, port = authority.rsplit(":", 1)
            connection = await anyio.connect_tcp(host, int(port))
            async with connection, anyio.create_task_group() as tg:
                client = RawH2(connection, authority)
                await client.start()
                tg.start_soon(client.read_forever)
                reset_id = await client.get("/reset")
                stay_id = await client.get("/stay")
                await client.until(
                    lambda: (
                        b"first /reset" in client.data.get(reset_id, b"")
                        and b"first /stay" in client.data.get(stay_id, b"")
                    )
                )
                assert client.headers[reset_id][":status"] == "200"
                assert "connection" not in client.headers[reset_id]

                await client.reset(reset_id)
                assert await closes["/reset"].wait() == ["disconnect"]
                assert await cancelled.wait() == ["/reset"]
                assert await app.finished.wait() == ["/reset"]
                assert app.active == 1  # the other stream on the same connection lives on

                go_on.set()
                await client.until(lambda: stay_id in client.ended)
                assert client.data[stay_id] == b"data: first /stay\n\ndata: second /stay\n\n"
                assert await closes["/stay"].wait() == ["complete"]
                tg.cancel_scope.cancel()
            await app.finished.wait(2)
            assert app.active == 0
