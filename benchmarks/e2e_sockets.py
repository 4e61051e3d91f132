"""Benchmark 3e-3j, client side: bare non-blocking sockets and one epoll loop, in a process of
their own, against servers started by ``e2e_server.py`` (no HTTP client library: reading and
counting raw bytes costs a few microseconds per event, far less than the server spends
producing it, so that the client is not the bottleneck; every scenario reports the share of
a core the client used while measuring).

    python benchmarks/e2e_sockets.py '<json job>'

One JSON line per server (in the order of the job's targets):

    awaiting     C clients each read N events of ``/await`` (a source that awaits before each
                 item) as fast as possible: events/s over the client's wall time, and the
                 server's events per CPU-second (/proc/<pid>/stat)
    fanout       K subscribers of ``/subscribe``; once all got their first event, the server
                 is asked to publish E events one every S seconds, then (the "max" variant)
                 E' events back to back: deliveries per server CPU-second, deliveries/s,
                 p50/p99 of the time from each event's creation (``time.monotonic()`` inside
                 it) to its arrival, and the garbage collector's share of the server's CPU
                 time and longest pause (``gc.callbacks`` in the server)
    memory       server VmRSS and GC-tracked objects before and with S idle open streams
                 of PATH (``/idle``: automatic mode, ``/subscribe``: value-based)
    first_event  R fresh connections, at most C at a time: time from sending the request to
                 receiving the first complete event
    replay       a channel's history replay (benchmarks/channels.py): N + 1 events published
                 to a topic, then R reconnections one at a time, each with the first one's id
                 as ``Last-Event-ID``: time from sending the request to having received the N
                 events after it

For a target with a ``redis_port``, ``fanout`` also counts, once every subscriber is
connected, the server process's TCP connections to that redis-server (``/proc``) and the
redis-server's clients (``CLIENT LIST``, less the one asking).
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, percentile, raise_nofile, vm_rss_kib

READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
T_MARK = b'{"t":'


class Conn:
    """One streaming request on a bare socket."""

    __slots__ = ("closed", "count", "fd", "head", "pending", "ready", "request", "sent_at", "sock")

    def __init__(self, host: str, port: int, path: str, headers: str = "") -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.head = b""  # bytes until the first event arrived
        self.ready = False
        self.pending = b""
        self.count = 0
        self.sent_at = 0.0
        self.closed = False
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode()

    def send_request(self) -> None:
        self.sent_at = time.perf_counter()
        self.sock.send(self.request)  # a few bytes: never a partial write on a fresh socket

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


def split_url(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def control(url: str, path: str) -> Any:
    """A GET to the server's control endpoint (HTTP/1.1, ``Connection: close``); the JSON."""
    host, port = split_url(url)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{path}: {head[:100]!r}")
    return json.loads(body)


class Loop:
    """An epoll loop over many ``Conn``s; ``on_data(conn, data, now)`` for every read."""

    def __init__(self, on_data: Callable[[Conn, bytes, float], None]) -> None:
        self.epoll = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.on_data = on_data

    def add(self, conn: Conn) -> None:
        self.conns[conn.fd] = conn
        self.epoll.register(conn.fd, READABLE)

    def remove(self, conn: Conn) -> None:
        if self.conns.pop(conn.fd, None) is not None:
            self.epoll.unregister(conn.fd)
        conn.close()

    def poll(self, timeout: float) -> None:
        monotonic = time.monotonic
        conns, on_data = self.conns, self.on_data
        for fd, _ in self.epoll.poll(timeout, 1024):
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                data = conn.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise RuntimeError(f"a stream failed: {exc}") from exc
            if not data:
                raise RuntimeError(f"the server closed a stream: {conn.head[-200:]!r}")
            on_data(conn, data, monotonic())

    def run_until(
        self, done: Callable[[], bool], timeout: float, what: str, pause: float = 0.0
    ) -> None:
        """Poll until ``done()``; ``pause`` seconds between polls (throughput scenarios: the
        bytes of several events pile up in each socket, so each ``recv`` reads more of them
        and the client costs less per event; the server's writes are unaffected, the kernel
        buffers a socket's few hundred bytes)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
            self.poll(0.05)
            if pause:
                time.sleep(pause)

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self.remove(conn)
        self.epoll.close()


def first_event_seen(conn: Conn, data: bytes, marker: bytes = b"data:") -> bool:
    """Collect the response's first bytes; True once they hold ``marker`` (checks 200)."""
    conn.head += data
    if marker not in conn.head:
        return False
    if not conn.head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {conn.head[:200]!r}")
    conn.ready = True
    return True


def open_streams(
    url: str, path: str, count: int, on_data: Callable[[Conn, bytes, float], None], gate: int = 200
) -> Loop:
    """``count`` streams of ``path``, at most ``gate`` waiting for their first event at once;
    returns once every one of them got its first event."""
    host, port = split_url(url)
    ready = [0]

    def handle(conn: Conn, data: bytes, now: float) -> None:
        if conn.ready:
            on_data(conn, data, now)
        elif first_event_seen(conn, data):
            ready[0] += 1
            on_data(conn, conn.head, now)

    loop = Loop(handle)
    deadline = time.monotonic() + 30 + count / 50
    try:
        for opened in range(count):
            while opened - ready[0] >= gate:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ready[0]} of {opened} streams got their first event")
                loop.poll(0.05)
            conn = Conn(host, port, path)
            loop.add(conn)
            conn.send_request()
            if opened % 50 == 0:
                loop.poll(0)
        loop.run_until(lambda: ready[0] >= count, deadline - time.monotonic(), "streams")
    except BaseException:
        loop.close()
        raise
    return loop


def redis_command(port: int, *args: str) -> bytes:
    """One command to the redis-server on 127.0.0.1:``port``; its reply's payload (a bulk
    string's bytes, or a simple reply's line)."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        request += f"${len(arg.encode())}\r\n{arg}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        raw = b""
        while b"\r\n" not in raw:
            raw += sock.recv(65536)
        head, _, rest = raw.partition(b"\r\n")
        if not head.startswith(b"$"):
            if head.startswith(b"-"):
                raise RuntimeError(f"redis: {head.decode()}")
            return head[1:]
        length = int(head[1:])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("redis closed the connection mid-reply")
            rest += chunk
        return rest[:length]


def tcp_connections_to(pid: int, port: int) -> int:
    """How many of process ``pid``'s sockets are established TCP connections to ``port``
    (its ``/proc/<pid>/fd`` socket inodes, looked up in ``/proc/<pid>/net/tcp``)."""
    inodes: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                rows = lines.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                count += 1
    return count


def redis_connections(pid: int, port: int) -> dict[str, int]:
    """The server's connections to the redis-server, counted from both ends."""
    clients = redis_command(port, "CLIENT", "LIST").decode().strip().splitlines()
    return {
        "redis_connections": tcp_connections_to(pid, port),
        "redis_clients": len(clients) - 1,  # less this one
    }


def wait_for_subscribers(url: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (now := control(url, "/control/subscribers")) != count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{now} subscribers registered, expected {count}")
        time.sleep(0.05)


# -- scenarios -------------------------------------------------------------------------------


def awaiting(target: dict[str, Any], clients: int, events: int) -> dict[str, float]:
    pid, url = target["pid"], target["url"]
    host, port = split_url(url)
    total = [0]

    def on_data(conn: Conn, data: bytes, now: float) -> None:
        if not conn.ready:
            if not first_event_seen(conn, data):
                return
            data = conn.head  # the headers and the first bytes of the body
        buf = conn.pending + data if conn.pending else data
        found = buf.count(b"data:")
        conn.count += found
        total[0] += found
        conn.pending = buf[-4:]
        if conn.count >= events:
            loop.remove(conn)

    loop = Loop(on_data)
    conns = [Conn(host, port, f"/await?n={events}") for _ in range(clients)]
    try:
        cpu0, client0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        for conn in conns:
            loop.add(conn)
            conn.send_request()
        loop.run_until(
            lambda: not loop.conns, 60 + clients * events / 2000, "awaiting", pause=0.002
        )
        wall = time.perf_counter() - t0
        cpu, client = cpu_seconds(pid) - cpu0, time.process_time() - client0
    finally:
        loop.close()
    counts = sorted({c.count for c in conns})
    if counts != [events]:
        raise RuntimeError(f"expected {events} events per client, got {counts}")
    n = clients * events
    return {
        "events_per_s": n / wall,
        "server_events_per_cpu_s": n / max(cpu, 0.01),
        "client_cpu_share": client / wall,
        "server_cpu_share": cpu / wall,
    }


def fanout(
    target: dict[str, Any],
    subscribers: int,
    variants: list[dict[str, Any]],
    settle: float,
    measure_memory: bool,
) -> dict[str, Any]:
    """``variants``: [{"name": ..., "events": E, "interval": S}, ...], run in turn on the same
    subscribers. A target with a ``redis_port`` also gets its Redis connections counted, once
    every subscriber is connected."""
    pid, url = target["pid"], target["url"]
    redis_port: int | None = target.get("redis_port")
    latencies: list[float] = []
    delivered = [0]

    def on_data(conn: Conn, data: bytes, now: float) -> None:
        buf = conn.pending + data if conn.pending else data
        pos = 0
        find = buf.find
        while True:
            j = find(T_MARK, pos)
            if j < 0:
                conn.pending = buf[max(pos, len(buf) - 4) :]
                return
            k = find(b",", j + 5)
            if k < 0:
                conn.pending = buf[j:]
                return
            latencies.append(now - float(buf[j + 5 : k]))
            delivered[0] += 1
            pos = k

    result: dict[str, Any] = {}
    if measure_memory:
        time.sleep(settle)
        objects0 = control(url, "/control/objects")
        rss0 = vm_rss_kib(pid)
    loop = open_streams(url, "/subscribe", subscribers, on_data)
    try:
        wait_for_subscribers(url, subscribers)
        if measure_memory:
            time.sleep(settle)
            objects1 = control(url, "/control/objects")
            rss1 = vm_rss_kib(pid)
            result["kib_per_stream"] = (rss1 - rss0) / subscribers
            result["objects_per_stream"] = (objects1 - objects0) / subscribers
        if redis_port is not None:
            result.update(redis_connections(pid, redis_port))
        for variant in variants:
            time.sleep(0.2)
            latencies.clear()
            delivered[0] = 0
            events, interval = variant["events"], variant["interval"]
            expected = events * subscribers
            control(url, "/control/gc?reset=1")
            cpu0, client0, t0 = cpu_seconds(pid), time.process_time(), time.monotonic()
            control(url, f"/control/publish?n={events}&interval={interval}")
            loop.run_until(
                lambda expected=expected: delivered[0] >= expected,  # type: ignore[misc]
                30 + events * interval * 3 + expected / 5000,
                f"{variant['name']}: {delivered[0]} of {expected} deliveries",
                pause=0.001 if interval == 0 else 0.0,  # back to back: deliveries/s only
            )
            wall = time.monotonic() - t0
            cpu, client = cpu_seconds(pid) - cpu0, time.process_time() - client0
            gc_report = control(url, "/control/gc")
            if delivered[0] != expected:
                raise RuntimeError(f"{delivered[0]} deliveries, expected {expected}")
            result[variant["name"]] = {
                "deliveries_per_cpu_s": expected / max(cpu, 0.01),
                "deliveries_per_s": expected / wall,
                "p50_ms": percentile(latencies, 50) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000,
                "gc_share_pct": 100 * gc_report["gc_s"] / max(cpu, 0.01),
                "gc_max_pause_ms": gc_report["gc_max_pause_s"] * 1000,
                "gc_collections": gc_report["gc_collections"],
                "gc_full_collections": gc_report["gc_full_collections"],
                "server_cpu_share": cpu / wall,
                "client_cpu_share": client / wall,
            }
    finally:
        loop.close()
    wait_for_subscribers(url, 0)
    # What the subscribers that left keep for the cycle collector (0 if reference counting
    # freed everything); collected here, so the next scenario starts without it.
    time.sleep(0.2)
    result["garbage_per_stream"] = control(url, "/control/collect") / subscribers
    return result


def memory(target: dict[str, Any], path: str, streams: int, settle: float) -> dict[str, float]:
    pid, url = target["pid"], target["url"]
    open_streams(url, path, 20, lambda conn, data, now: None).close()  # warm-up
    time.sleep(settle)
    objects0 = control(url, "/control/objects")
    rss0 = vm_rss_kib(pid)
    loop = open_streams(url, path, streams, lambda conn, data, now: None)
    try:
        time.sleep(settle)
        objects1 = control(url, "/control/objects")
        rss1 = vm_rss_kib(pid)
        open_fds = len(os.listdir(f"/proc/{pid}/fd"))
    finally:
        loop.close()
    deadline = time.monotonic() + 15  # until the server closed its end of every stream
    while len(os.listdir(f"/proc/{pid}/fd")) > open_fds - streams + 20:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    garbage = control(url, "/control/collect") / streams
    if open_fds < streams:  # each open stream is one connection, so one socket, in the server
        raise RuntimeError(f"the server holds {open_fds} files for {streams} open streams")
    return {
        "kib_per_stream": (rss1 - rss0) / streams,
        "objects_per_stream": (objects1 - objects0) / streams,
        "garbage_per_stream": garbage,
        "rss_before_kib": rss0,
        "rss_during_kib": rss1,
    }


def first_event(
    target: dict[str, Any], requests: int, concurrency: int, path: str, warm: int = 0
) -> dict[str, float]:
    if warm:
        first_event(target, warm, concurrency, path)
    host, port = split_url(target["url"])
    times: list[float] = []

    def on_data(conn: Conn, data: bytes, now: float) -> None:
        conn.head += data
        j = conn.head.find(b"data:")
        if j < 0 or (b"\n\n" not in conn.head[j:] and b"\r\n\r\n" not in conn.head[j:]):
            return
        times.append(time.perf_counter() - conn.sent_at)
        if not conn.head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {conn.head[:200]!r}")
        loop.remove(conn)
        start_one()

    started = [0]

    def start_one() -> None:
        if started[0] < requests:
            started[0] += 1
            conn = Conn(host, port, path)
            loop.add(conn)
            conn.send_request()

    loop = Loop(on_data)
    try:
        for _ in range(min(concurrency, requests)):
            start_one()
        loop.run_until(lambda: len(times) >= requests, 30 + requests / 20, "first events")
    finally:
        loop.close()
    return {
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "max_ms": max(times) * 1000,
    }


def replay(
    target: dict[str, Any], topic: str, events: int, repeats: int, warm: int
) -> dict[str, float]:
    """A reconnecting client ``events`` events behind: the server publishes ``events + 1``
    events to ``topic``, then each repeat opens a connection (not timed), sends the request
    with the first event's id as ``Last-Event-ID`` and counts ``data:`` lines until all the
    events after it arrived. Checks that they were resumed (no reset event, the last one
    last)."""
    pid, url = target["pid"], target["url"]
    host, port = split_url(url)
    after = control(url, f"/control/fill?topic={topic}&n={events + 1}")
    last = f'"i":{events},'.encode()
    times: list[float] = []
    received = bytearray()
    count = [0]

    def on_data(conn: Conn, data: bytes, now: float) -> None:
        tail = bytes(received[-4:])
        received.extend(data)
        count[0] += (tail + data).count(b"data:")
        if count[0] >= events and conn.ready is False:
            conn.ready = True  # done: the time is taken once
            times.append(time.perf_counter() - conn.sent_at)

    cpu = 0.0
    for r in range(warm + repeats):
        received.clear()
        count[0] = 0
        loop = Loop(on_data)
        conn = Conn(host, port, f"/replay?topic={topic}", f"Last-Event-ID: {after}\r\n")
        try:
            loop.add(conn)
            cpu0 = cpu_seconds(pid)
            conn.send_request()
            loop.run_until(lambda conn=conn: conn.ready, 30, "replay")  # type: ignore[misc]
            if r >= warm:
                cpu += cpu_seconds(pid) - cpu0
        finally:
            loop.close()
        body = bytes(received)
        if not body.startswith(b"HTTP/1.1 200") or b"event:" in body or last not in body:
            raise RuntimeError(f"not a resumed history of {events} events: {body[:300]!r}")
        if count[0] != events:
            raise RuntimeError(f"{count[0]} events replayed, expected {events}")
        if r < warm:
            times.pop()
        time.sleep(0.02)  # the server lets go of the subscription
    return {
        "p50_ms": percentile(times, 50) * 1000,
        "p90_ms": percentile(times, 90) * 1000,
        "min_ms": min(times) * 1000,
        "max_ms": max(times) * 1000,
        "server_cpu_ms": cpu / repeats * 1000,
    }


def run_job(job: dict[str, Any]) -> None:
    params = job["params"]
    scenario = job["scenario"]
    for index, target in enumerate(job["targets"]):
        if index:
            time.sleep(job.get("settle", 0.5))
        result: dict[str, Any] = {"implementation": target["implementation"]}
        try:
            if scenario == "awaiting":
                result.update(awaiting(target, params["clients"], params["events"]))
            elif scenario == "fanout":
                result.update(
                    fanout(
                        target,
                        params["subscribers"],
                        params["variants"],
                        params["settle"],
                        params.get("memory", False),
                    )
                )
            elif scenario == "replay":
                result.update(
                    replay(
                        target,
                        params["topic"],
                        params["events"],
                        params["repeats"],
                        params.get("warm", 0),
                    )
                )
            elif scenario == "memory":
                result.update(memory(target, params["path"], params["streams"], params["settle"]))
            elif scenario == "first_event":
                result.update(
                    first_event(
                        target,
                        params["requests"],
                        params["concurrency"],
                        params["path"],
                        params.get("warm", 0),
                    )
                )
            else:
                raise ValueError(f"unknown scenario {scenario!r}")
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        print(json.dumps(result), flush=True)


def main() -> None:
    job = json.loads(sys.argv[1])
    raise_nofile(int(job.get("nofile", 4096)))
    run_job(job)


if __name__ == "__main__":
    main()
