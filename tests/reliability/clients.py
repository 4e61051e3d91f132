"""Clients and a server controller for the reliability tests (and benchmarks/reliability.py).

- :class:`ServerProcess`: ``python -m tests.reliability.server`` in a subprocess: its URL,
  its memory (VmRSS), its counters (``/_stats``), SIGTERM and the final counters.
- :class:`H1`: one HTTP/1.1 request on a raw socket, parsed by ``h11`` (the state machine
  httpx uses), so a test can stop reading, or leave at any byte, at will.
- :class:`H2`: one HTTP/2 connection (h2c, prior knowledge) on the ``h2`` state machine,
  carrying many streams; a stream can be reset, or left without flow-control credit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
import h2.settings
import h11
import httpx

from tests.conftest import _free_port, _wait_listening
from tests.sse_parser import ParseResult, parse

ROOT = Path(__file__).resolve().parents[2]


def raise_nofile(needed: int) -> int:
    """Raise this process's soft limit of open files to ``needed`` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return int(soft)


def rss_of(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class ServerProcess:
    """A running ``tests.reliability.server``; use :func:`server_process` to start one."""

    def __init__(self, process: anyio.abc.Process, port: int, worker: str) -> None:
        self.process = process
        self.port = port
        self.worker = worker
        self.url = f"http://127.0.0.1:{port}"
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.control = httpx.AsyncClient(base_url=self.url, timeout=120)
        self._drained = [anyio.Event(), anyio.Event()]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        return rss_of(self.pid)

    async def stats(self, **params: Any) -> dict[str, Any]:
        """The server's counters. ``settle=s``: once nothing is left running (or after ``s``
        seconds, whichever comes first: check ``["settled"]``); ``until="kind:reason",
        count=n``: once ``on_close(reason)`` ran for n streams of that kind."""
        response = await self.control.get("/_stats", params=params)
        response.raise_for_status()
        return dict(response.json())

    async def go(self) -> None:
        (await self.control.get("/_go")).raise_for_status()

    def output(self) -> str:
        return (self.stdout + self.stderr).decode("utf-8", "replace")

    def final(self) -> dict[str, Any]:
        """The counters the server printed on exit."""
        for line in self.stdout.decode().splitlines():
            if line.startswith("FINAL "):
                return dict(json.loads(line[6:]))
        raise AssertionError(f"the server printed no final counters:\n{self.output()}")

    async def _drain(
        self, source: anyio.abc.ByteReceiveStream | None, into: bytearray, done: anyio.Event
    ) -> None:
        try:
            if source is not None:
                async for chunk in source:
                    into += chunk
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            done.set()

    async def terminate(self) -> float:
        """SIGTERM; returns the seconds until the process exited and its output was read
        (bound it with ``anyio.fail_after``)."""
        started = anyio.current_time()
        self.process.send_signal(signal.SIGTERM)
        return await self.exited() - started

    async def exited(self) -> float:
        """Wait for the process to exit and its output to be read; returns when it exited
        (``anyio.current_time()``)."""
        await self.process.wait()
        exited = anyio.current_time()
        for done in self._drained:
            await done.wait()
        return exited


@asynccontextmanager
async def server_process(
    worker: str,
    *args: str,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[ServerProcess]:
    """Start the reliability server (or ``command``, formatted with ``{bind}`` and
    ``{worker}``) on a free port; stop it (SIGTERM, then SIGKILL) on exit."""
    port = _free_port()
    bind = f"127.0.0.1:{port}"
    if command is None:
        argv = [sys.executable, "-m", "tests.reliability.server", "--worker", worker]
        argv += ["--bind", bind, *args]
    else:
        argv = [part.format(bind=bind, worker=worker) for part in command]
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    process = await anyio.open_process(argv, cwd=ROOT, env=env)
    server = ServerProcess(process, port, worker)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._drain, process.stdout, server.stdout, server._drained[0])
            tg.start_soon(server._drain, process.stderr, server.stderr, server._drained[1])
            try:
                with anyio.fail_after(20):
                    await _wait_listening(port)
                yield server
            finally:
                with anyio.CancelScope(shield=True):
                    await server.control.aclose()
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                        with anyio.move_on_after(10):
                            await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                    with anyio.move_on_after(2):  # the pipes' last bytes
                        for done in server._drained:
                            await done.wait()
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await process.aclose()


# -- HTTP/1.1 ------------------------------------------------------------------------------


class H1:
    """One HTTP/1.1 GET on its own socket, parsed with h11."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = h11.Connection(h11.CLIENT)
        self.socket: anyio.abc.SocketStream | None = None
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.complete = False  # the end of the body arrived (a clean end of stream)
        self.closed_early = False  # the server closed the connection before the end

    async def connect(self, *, rcvbuf: int | None = None) -> None:
        """Connect; ``rcvbuf`` pins a small receive buffer (no autotuning), so that a client
        that stops reading holds little in its kernel buffers."""
        self.socket = await anyio.connect_tcp("127.0.0.1", self.port)
        if rcvbuf is not None:
            raw = self.socket.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    async def send_raw(self, data: bytes) -> None:
        assert self.socket is not None
        await self.socket.send(data)

    async def request(self, target: str, headers: list[tuple[str, str]] | None = None) -> None:
        """Connect (if needed) and send ``GET target``."""
        if self.socket is None:
            await self.connect()
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("host", f"127.0.0.1:{self.port}"), *(headers or [])],
        )
        await self.send_raw(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))

    async def next_event(self) -> Any:
        """The next h11 event (``h11.Data``, ``h11.EndOfMessage``...); ``None`` when the
        server closed the connection."""
        assert self.socket is not None
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.socket.receive(65_536)
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    data = b""
                self.conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {bytes(k): bytes(v) for k, v in event.headers}
                continue
            if isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
            elif isinstance(event, h11.ConnectionClosed):
                self.closed_early = not self.complete
                return None
            return event

    async def read_until(self, predicate: Any) -> bool:
        """Read until ``predicate(self)`` holds (``True``) or the response ends (``False``)."""
        while not predicate(self):
            try:
                event = await self.next_event()
            except h11.RemoteProtocolError:
                self.closed_early = True
                return False
            if event is None or isinstance(event, h11.EndOfMessage):
                return bool(predicate(self))
        return True

    async def read_all(self) -> None:
        await self.read_until(lambda _: False)

    def events(self) -> ParseResult:
        return parse(bytes(self.body))

    async def abort(self) -> None:
        """Leave at once with a TCP reset (SO_LINGER 0), not a polite FIN."""
        if self.socket is None:
            return
        raw = self.socket.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await self.aclose()

    async def aclose(self) -> None:
        if self.socket is not None:
            await self.socket.aclose()


# -- HTTP/2 --------------------------------------------------------------------------------


class H2Stream:
    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.complete = False  # END_STREAM received
        self.reset = False  # RST_STREAM received (or the connection ended first)
        self.stalled = False  # the client gives this stream no flow-control credit

    def events(self) -> ParseResult:
        return parse(bytes(self.body))


class H2:
    """One h2c connection (prior knowledge) carrying many streams."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.authority = f"127.0.0.1:{port}"
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
        self.h2 = h2.connection.H2Connection(config)
        # No Huffman coding: hpack's pure-Python encoder takes minutes for a 1 MB value.
        self.h2.encoder.encode = functools.partial(self.h2.encoder.encode, huffman=False)  # type: ignore[method-assign]
        self.socket: anyio.abc.SocketStream | None = None
        self.streams: dict[int, H2Stream] = {}
        self.lock = anyio.Lock()
        self.closed = False  # the server ended the connection (GOAWAY or EOF)
        self._changed = anyio.Event()

    async def connect(self) -> None:
        self.socket = await anyio.connect_tcp("127.0.0.1", self.port)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20},
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window((1 << 24) - 65_535)  # the connection's window
        await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            data = self.h2.data_to_send()
            if data and self.socket is not None:
                await self.socket.send(data)

    async def get(
        self,
        target: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        stalled: bool = False,
    ) -> H2Stream:
        """Open a stream with ``GET target``; ``stalled``: never give it flow-control credit."""
        stream_id = int(self.h2.get_next_available_stream_id())
        stream = self.streams[stream_id] = H2Stream(stream_id)
        stream.stalled = stalled
        self.h2.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", self.authority.encode()),
                (b":path", target.encode()),
                *(headers or []),
            ],
            end_stream=True,
        )
        await self.flush()
        return stream

    async def reset(self, stream: H2Stream) -> None:
        if not (stream.complete or stream.reset or self.closed):
            self.h2.reset_stream(stream.id)
            stream.reset = True
            await self.flush()

    async def run(self) -> None:
        """Read and dispatch frames until the connection ends (run it in a task)."""
        assert self.socket is not None
        try:
            while True:
                try:
                    data = await self.socket.receive(65_536)
                except (
                    anyio.EndOfStream,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                    ConnectionError,
                ):
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._dispatch(event)
                try:
                    await self.flush()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                    break
                self._notify()
        finally:
            self.closed = True
            for stream in self.streams.values():
                if not stream.complete:
                    stream.reset = True
            self._notify()

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams[event.stream_id]
            headers = dict(event.headers)
            stream.status = int(headers.pop(b":status"))
            stream.headers = headers
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams[event.stream_id]
            stream.body += event.data
            if stream.stalled:  # credit the connection, never the stream
                self.h2.increment_flow_control_window(event.flow_controlled_length)
            else:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].complete = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, predicate: Any) -> bool:
        """Wait until ``predicate()`` holds (``True``) or the connection ended (``False``)."""
        while not predicate():
            if self.closed:
                return bool(predicate())
            await self._changed.wait()
        return True

    async def aclose(self) -> None:
        if self.socket is not None:
            if not self.closed:
                self.h2.close_connection()
                with contextlib.suppress(
                    anyio.BrokenResourceError, anyio.ClosedResourceError, OSError
                ):
                    await self.flush()
            await self.socket.aclose()

    async def abort(self) -> None:
        """Drop the TCP connection with a reset, no GOAWAY."""
        if self.socket is not None:
            raw = self.socket.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            await self.socket.aclose()


def check_sse_ids(result: ParseResult, sid: str, n: int) -> str | None:
    """``None`` if the events are exactly ``sid:0`` .. ``sid:n-1`` with data ``0`` .. ``n-1``
    in order; else what is wrong."""
    got = [(event.id, event.data) for event in result.events]
    want = [(f"{sid}:{i}", str(i)) for i in range(n)]
    if got == want:
        return None
    ids = [event_id for event_id, _ in got]
    duplicated = len(ids) - len(set(ids))
    missing = len(set(want) - set(got))
    return f"stream {sid}: {len(got)} events, {missing} missing, {duplicated} duplicated"
