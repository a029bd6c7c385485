"""A cheap load generator and upstream for the workers benchmark: asyncio, no cryptography.

``bench/proxy.py``'s load generator runs Python threads that each do a full TLS handshake per
CONNECT, under one GIL; on a 2-core machine it, not the proxy, was what saturated. The proxy's
work for a CONNECT hit does not need that cryptography at either end: it reads the CONNECT,
reads the SNI of the ClientHello (matching, the decision, the event) and then relays bytes both
ways until one side closes. So:

- :func:`capture_tls` runs one real TLS 1.3 session once, between two in-memory ``ssl`` objects
  (the test CA's certificate for the hit name, one HTTP request inside, its answer and the
  server's close_notify), and keeps its four flights of bytes: the ClientHello, the server's
  handshake flight, the client's Finished with the request, the server's tickets with the answer;
- the client (``client`` processes) sends ``CONNECT``, then replays the client's two flights, and
  checks that the server's flights arrive byte for byte and that the proxy then closes;
- the upstream (one ``upstream`` process) answers each client flight with the next server flight
  after checking that the client's bytes arrived unchanged, then closes. The proxy relays the
  bytes of a real session, in the same four turns, from a real ClientHello with the real SNI.

Keep-alive HTTP: each client holds one connection and sends ``GET http://HOST/bench`` requests
one after the other; the upstream answers each with a fixed small response.

Every client and server is an asyncio protocol or stream on one event loop per process; the
clients can run in several processes (``Load(procs=N)``). The parent drives them with one JSON
line per run on their stdin; a run starts at an agreed wall-clock time, so the parent reads the
CPU counters of every process (``/proc/PID/stat``) at the same window's edges.

    .venv/bin/python bench/load.py upstream FLIGHTS.json   # prints {"http": port, "tls": port}
    .venv/bin/python bench/load.py client FLIGHTS.json     # one JSON command per stdin line
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HIT_HOST = "www.tiktok.com"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nbench answer\n"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the TLS session replayed ---------------------------------------------------------------------
@dataclass(frozen=True)
class Flights:
    """The four flights of one real TLS 1.3 session, in order."""

    client_hello: bytes
    server_hello: bytes  # ServerHello ... Finished (certificate included)
    client_finish: bytes  # the client's Finished and the encrypted request
    server_final: bytes  # session tickets, the encrypted answer and close_notify

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({k: v.hex() for k, v in asdict(self).items()}))

    @classmethod
    def load(cls, path: Path) -> Flights:
        raw = json.loads(path.read_text())
        return cls(**{k: bytes.fromhex(v) for k, v in raw.items()})


def _pump(obj: ssl.SSLObject, step: str) -> None:
    try:
        getattr(obj, step)()
    except ssl.SSLWantReadError:
        pass


def capture_tls(host: str, ca: Path, cert: Path, key: Path) -> Flights:
    """One TLS 1.3 session between two in-memory ``ssl`` objects: the client verifies ``host``
    against ``ca``, sends one request, the server answers it and closes."""
    cctx = ssl.create_default_context(cafile=str(ca))
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert, key)
    for c in (cctx, sctx):
        c.minimum_version = ssl.TLSVersion.TLSv1_3
        c.set_alpn_protocols(["http/1.1"])
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    _pump(client, "do_handshake")
    hello = c_out.read()
    s_in.write(hello)
    _pump(server, "do_handshake")
    server_hello = s_out.read()
    c_in.write(server_hello)
    client.do_handshake()  # verifies the certificate: the session is a valid one
    client.write(f"GET /bench HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    finish = c_out.read()
    s_in.write(finish)
    server.do_handshake()
    request = server.read(65536)
    assert request.startswith(b"GET /bench "), request
    server.write(HTTP_RESPONSE)
    _pump(server, "unwrap")  # close_notify
    final = s_out.read()
    c_in.write(final)
    assert client.read(65536) == HTTP_RESPONSE
    return Flights(hello, server_hello, finish, final)


# -- upstream -------------------------------------------------------------------------------------
@dataclass
class UpstreamStats:
    sessions: int = 0  # TLS replays completed (both client flights arrived unchanged)
    mismatches: int = 0  # a client flight arrived altered: the proxy did not pass it through
    requests: int = 0  # HTTP requests answered


class _Buffered(asyncio.Protocol):
    """A protocol that keeps its transport and the bytes it has not consumed yet."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport


class HttpUpstream(_Buffered):
    """Answers every request head (no body) with ``HTTP_RESPONSE`` on a keep-alive connection."""

    def __init__(self, stats: UpstreamStats) -> None:
        super().__init__()
        self.stats = stats

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buf + data
        while (i := buf.find(b"\r\n\r\n")) >= 0:
            buf = buf[i + 4 :]
            self.transport.write(HTTP_RESPONSE)
            self.stats.requests += 1
        self.buf = buf


class TlsUpstream(_Buffered):
    """Replays the server's side of :class:`Flights`, checking the client's side arrives intact."""

    def __init__(self, flights: Flights, stats: UpstreamStats) -> None:
        super().__init__()
        self.steps = [
            (flights.client_hello, flights.server_hello),
            (flights.client_finish, flights.server_final),
        ]
        self.stats = stats

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while self.steps and len(self.buf) >= len(self.steps[0][0]):
            expect, answer = self.steps.pop(0)
            if self.buf[: len(expect)] != expect:
                self.stats.mismatches += 1
                self.transport.abort()
                return
            self.buf = self.buf[len(expect) :]
            self.transport.write(answer)
        if not self.steps:
            self.stats.sessions += 1
            self.transport.close()


async def serve_upstream(flights: Flights) -> None:
    """Serve until stdin closes; print the ports, then the stats for every line read."""
    loop = asyncio.get_running_loop()
    stats = UpstreamStats()
    http = await loop.create_server(lambda: HttpUpstream(stats), "127.0.0.1", 0, backlog=1024)
    tls = await loop.create_server(
        lambda: TlsUpstream(flights, stats), "127.0.0.1", 0, backlog=1024
    )
    ports = {"http": http.sockets[0].getsockname()[1], "tls": tls.sockets[0].getsockname()[1]}
    print(json.dumps(ports), flush=True)
    done = asyncio.Event()

    def stdin() -> None:  # a thread: a blocking read of the parent's lines
        for _ in sys.stdin:
            print(json.dumps(asdict(stats)), flush=True)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=stdin, daemon=True).start()
    await done.wait()


# -- clients --------------------------------------------------------------------------------------
@dataclass
class ClientResult:
    ops: int = 0  # completed inside the window
    total: int = 0  # completed, the ones finished after the window included
    errors: int = 0
    first_error: str = ""


class ReplayError(Exception):
    pass


async def _http_client(port: int, host: str, start: float, end: float, res: ClientResult) -> None:
    req = f"GET http://{host}/bench HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < end:
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise ReplayError(f"answer {head[:40]!r}")
            low = head.lower()
            i = low.find(b"content-length:")
            length = int(low[i + 15 : low.index(b"\r\n", i)]) if i >= 0 else 0
            await reader.readexactly(length)
            res.total += 1
            if time.monotonic() < end:
                res.ops += 1
    finally:
        writer.close()


class _ConnectClient(_Buffered):
    """One CONNECT and the replayed session on one connection, as a state machine: each step
    waits for an exact number of bytes (or the proxy's answer head, or the end)."""

    def __init__(self, connect: bytes, flights: Flights, done: asyncio.Future[None]) -> None:
        super().__init__()
        self.connect = connect
        self.flights = flights
        self.done = done
        self.step = 0  # 0: CONNECT answer, 1: server hello, 2: server final, 3: the end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(self.connect)

    def _fail(self, why: str) -> None:
        assert self.transport is not None
        if not self.done.done():
            self.done.set_exception(ReplayError(why))
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        f = self.flights
        if self.step == 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 200 "):
                return self._fail(f"CONNECT answer {self.buf[:40]!r}")
            self.buf = self.buf[i + 4 :]
            self.step = 1
            self.transport.write(f.client_hello)
        if self.step == 1 and len(self.buf) >= len(f.server_hello):
            if self.buf[: len(f.server_hello)] != f.server_hello:
                return self._fail("the server's handshake flight arrived altered")
            self.buf = self.buf[len(f.server_hello) :]
            self.step = 2
            self.transport.write(f.client_finish)
        if self.step == 2 and len(self.buf) >= len(f.server_final):
            if self.buf != f.server_final:
                return self._fail("the server's last flight arrived altered or with more bytes")
            self.buf = b""
            self.step = 3
        elif self.step == 3 and self.buf:
            self._fail("bytes after the session")

    def eof_received(self) -> bool:
        if self.step != 3:
            self._fail(f"the proxy closed at step {self.step}")
        elif not self.done.done():
            self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ReplayError(f"connection lost at step {self.step}"))


async def _connect_client(
    port: int, host: str, flights: Flights, start: float, end: float, res: ClientResult
) -> None:
    loop = asyncio.get_running_loop()
    connect = f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode()
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    while time.monotonic() < end:
        done = loop.create_future()
        transport, _ = await loop.create_connection(
            functools.partial(_ConnectClient, connect, flights, done), "127.0.0.1", port
        )
        try:
            await done
        finally:
            transport.close()
        res.total += 1
        if time.monotonic() < end:
            res.ops += 1


async def drive(
    port: int, scenario: str, clients: int, start_wall: float, seconds: float, flights: Flights
) -> ClientResult:
    """Run ``clients`` concurrent clients of ``scenario`` from ``start_wall`` (``time.time()``)
    for ``seconds``; every client finishes the operation it is in when the window ends."""
    start = time.monotonic() + (start_wall - time.time())
    end = start + seconds
    res = ClientResult()

    async def guarded(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except (OSError, EOFError, asyncio.IncompleteReadError, ReplayError) as e:
            res.errors += 1
            res.first_error = res.first_error or repr(e)

    if scenario == "http-hit":
        tasks = [_http_client(port, HIT_HOST, start, end, res) for _ in range(clients)]
    elif scenario == "connect-hit":
        tasks = [_connect_client(port, HIT_HOST, flights, start, end, res) for _ in range(clients)]
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    await asyncio.gather(*(guarded(t) for t in tasks))
    return res


def client_main(flights: Flights) -> None:
    """One JSON command per stdin line (``port``, ``scenario``, ``clients``, ``start``,
    ``seconds``); one JSON :class:`ClientResult` per command on stdout."""
    for line in sys.stdin:
        cmd = json.loads(line)
        res = asyncio.run(
            drive(cmd["port"], cmd["scenario"], cmd["clients"], cmd["start"], cmd["seconds"],
                  flights)
        )  # fmt: skip
        print(json.dumps(asdict(res)), flush=True)


# -- the parent's side ----------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (``/proc/stat``; idle and iowait
    are not busy)."""
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(vals[:8])  # user nice system idle iowait irq softirq steal (guests are in user)
    return (total - vals[3] - vals[4]) / CLK_TCK, total / CLK_TCK


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Pin every thread of ``pid`` (and what it starts from now on) to ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), set(cpus))
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sample:
    """One run's window: operations and the CPU seconds each side used in it."""

    seconds: float
    ops: int
    total: int
    proxy_cpu: float
    load_cpu: float  # clients and upstream
    busy: float  # the whole machine
    capacity: float  # CPU seconds the machine had in the window (CPUs x seconds)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


class Load:
    """The upstream process and ``procs`` client processes, kept for a whole benchmark."""

    def __init__(self, tmp: Path, procs: int = 2) -> None:
        from tests.support.upstreams import make_test_pki

        pki = make_test_pki(tmp / "load-pki")
        self.flights = capture_tls(HIT_HOST, pki.ca_cert, pki.cert, pki.key)
        path = tmp / "flights.json"
        self.flights.save(path)
        me = [sys.executable, str(Path(__file__).resolve())]
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
        self.upstream = subprocess.Popen([*me, "upstream", str(path)], **pipes)  # type: ignore[call-overload]
        assert self.upstream.stdout is not None
        self.ports: dict[str, int] = json.loads(self.upstream.stdout.readline())
        self.clients = [
            subprocess.Popen([*me, "client", str(path)], **pipes)  # type: ignore[call-overload]
            for _ in range(procs)
        ]

    @property
    def pids(self) -> list[int]:
        return [self.upstream.pid] + [c.pid for c in self.clients]

    def routes(self) -> dict[str, list[object]]:
        """``route_loopback``'s map: port 80 to the HTTP upstream, 443 to the TLS replay."""
        return {"80": ["127.0.0.1", self.ports["http"]], "443": ["127.0.0.1", self.ports["tls"]]}

    def pin(self, cpus: Iterable[int]) -> None:
        for pid in self.pids:
            pin(pid, cpus)

    def upstream_stats(self) -> UpstreamStats:
        assert self.upstream.stdin is not None and self.upstream.stdout is not None
        self.upstream.stdin.write("stats\n")
        self.upstream.stdin.flush()
        return UpstreamStats(**json.loads(self.upstream.stdout.readline()))

    def run(self, port: int, scenario: str, seconds: float, clients: int, proxy_pids: list[int]
            ) -> Sample:  # fmt: skip
        """Drive the proxy at ``port`` for ``seconds`` with ``clients`` connections spread over
        the client processes; CPU counters are read at the window's edges."""
        start = time.time() + 0.3  # time for every process to read its command and connect
        for i, c in enumerate(self.clients):
            share = clients // len(self.clients) + (i < clients % len(self.clients))
            assert c.stdin is not None
            cmd = {"port": port, "scenario": scenario, "clients": share, "start": start,
                   "seconds": seconds}  # fmt: skip
            c.stdin.write(json.dumps(cmd) + "\n")
            c.stdin.flush()
        time.sleep(max(0.0, start - time.time()))
        p0 = sum(cpu_seconds(p) for p in proxy_pids)
        l0 = sum(cpu_seconds(p) for p in self.pids)
        b0, t0 = machine_busy()
        time.sleep(max(0.0, start + seconds - time.time()))
        p1 = sum(cpu_seconds(p) for p in proxy_pids)
        l1 = sum(cpu_seconds(p) for p in self.pids)
        b1, t1 = machine_busy()
        results = []
        for c in self.clients:
            assert c.stdout is not None
            results.append(ClientResult(**json.loads(c.stdout.readline())))
        errors = [r for r in results if r.errors]
        if errors:
            raise RuntimeError(
                f"{scenario}: {sum(r.errors for r in errors)} clients failed: {errors[0].first_error}"
            )
        return Sample(
            seconds, sum(r.ops for r in results), sum(r.total for r in results),
            p1 - p0, l1 - l0, b1 - b0, t1 - t0,
        )  # fmt: skip

    def close(self) -> None:
        for p in [*self.clients, self.upstream]:
            assert p.stdin is not None
            p.stdin.close()
        for p in [*self.clients, self.upstream]:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            assert p.stdout is not None
            p.stdout.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("upstream", "client"):
        print(__doc__, file=sys.stderr)
        return 2
    flights = Flights.load(Path(argv[2]))
    if argv[1] == "upstream":
        asyncio.run(serve_upstream(flights))
    else:
        client_main(flights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
