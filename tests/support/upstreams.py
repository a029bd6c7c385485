"""Loopback upstream servers for the end-to-end tests and the proxy benchmark.

Three servers, each behind a counting TCP relay so a test can prove that a blocked connection
never reached the server (``connections`` and ``bytes_in`` are counted at the relay, before TLS):

- ``http``: plain HTTP/1.1 echo (keep-alive); the body is JSON naming the Host header and path
  (a path under ``/alt-svc`` also gets an ``Alt-Svc`` header advertising h3 and h2);
- ``tls``: the same echo over TLS, with a certificate issued by a test CA for the designated test
  names, so a client verifying against that CA succeeds only if the proxy passes TLS through;
- ``ws``: a WebSocket echo server (the ``websockets`` library);
- ``sink``: answers any bytes with a TLS alert and closes (for hostile ClientHellos).

``route_map()`` maps destination ports 80, 443, 81 and 8443 to them, in that order.

Run as a script (``python tests/support/upstreams.py DIR``) it serves until stdin closes and prints
one JSON line with the ports and the CA path (used by ``bench/proxy.py``).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

#: The servers: HTTP echo, TLS echo, WebSocket echo, and a sink answering a TLS alert to anything.
SERVERS = ("http", "tls", "ws", "sink")
#: What the echo servers add to a response for a path under ``/alt-svc`` (tests of the Alt-Svc
#: signal): HTTP/3 and HTTP/2 alternatives.
ALT_SVC_HEADER = b'alt-svc: h3=":443"; ma=86400, h2=":443"\r\n'
#: Names the test certificate is valid for (the designated test names, plus a neutral one).
TEST_NAMES: tuple[str, ...] = (
    "www.tiktok.com",
    "tiktok.com",
    "api.deepseek.com",
    "chat.deepseek.com",
    "pay.weixin.qq.com",
    "example.test",
    "www.example.test",
    "neutral.test",
    "localhost",
)


@dataclass(frozen=True)
class UpstreamPKI:
    ca_cert: Path
    cert: Path
    key: Path


def make_test_pki(directory: Path, names: Sequence[str] = TEST_NAMES) -> UpstreamPKI:
    """Write a test CA and a leaf certificate (SANs ``names`` + 127.0.0.1) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egresswatch test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = UpstreamPKI(
        directory / "test-ca.pem", directory / "upstream.pem", directory / "upstream-key.pem"
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_pem(leaf, key, pki.cert, pki.key)
    return pki


def write_pem(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path
) -> tuple[Path, Path]:
    """Write ``cert`` and its unencrypted ``key`` (PKCS#8) as PEM files; returns the paths."""
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class ServerStats:
    """What one upstream saw, counted at its relay (thread-safe snapshots via ``Upstreams``)."""

    connections: int = 0
    bytes_in: int = 0
    hosts: list[str] = field(default_factory=list)
    snis: list[str] = field(default_factory=list)


class Upstreams:
    """The three loopback servers, run on an event loop in a daemon thread.

    ``ports`` maps ``http``/``tls``/``ws`` to the public (counting relay) port; ``direct_ports``
    to the servers themselves (the benchmark uses those, to keep the relay out of the figures).
    """

    def __init__(self, pki: UpstreamPKI) -> None:
        self.pki = pki
        self.ports: dict[str, int] = {}
        self.direct_ports: dict[str, int] = {}
        self._stats: dict[str, ServerStats] = {k: ServerStats() for k in SERVERS}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="upstreams", daemon=True
        )
        self._servers: list[asyncio.base_events.Server] = []
        self._ws_server: object | None = None
        self._sni_by_conn: dict[int, str | None] = {}
        self._writers: set[asyncio.StreamWriter] = set()  # open client connections, closed on stop

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Upstreams:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Upstreams:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observations ----------------------------------------------------------------------------
    def stats(self, name: str) -> ServerStats:
        """A copy of what server ``name`` saw so far."""
        with self._lock:
            s = self._stats[name]
            return ServerStats(s.connections, s.bytes_in, list(s.hosts), list(s.snis))

    def reset(self) -> None:
        with self._lock:
            self._stats = {k: ServerStats() for k in SERVERS}

    def route_map(self) -> dict[str, list[object]]:
        """Destination port -> loopback address, for ``tests/support/route_loopback.py``."""
        return {
            "80": ["127.0.0.1", self.ports["http"]],
            "443": ["127.0.0.1", self.ports["tls"]],
            "81": ["127.0.0.1", self.ports["ws"]],
            "8443": ["127.0.0.1", self.ports["sink"]],
        }

    # -- servers ---------------------------------------------------------------------------------
    async def _start(self) -> None:
        from websockets.asyncio.server import serve

        http = await asyncio.start_server(self._echo("http"), "127.0.0.1", 0)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki.cert, self.pki.key)
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = self._record_sni
        tls = await asyncio.start_server(self._echo("tls"), "127.0.0.1", 0, ssl=ctx)
        ws = await serve(self._ws_echo, "127.0.0.1", 0, process_request=self._ws_request)
        sink = await asyncio.start_server(self._sink, "127.0.0.1", 0)
        self._ws_server = ws
        self._servers += [http, tls, sink]
        self.direct_ports = {
            "http": http.sockets[0].getsockname()[1],
            "tls": tls.sockets[0].getsockname()[1],
            "ws": next(iter(ws.sockets)).getsockname()[1],
            "sink": sink.sockets[0].getsockname()[1],
        }
        for name, port in self.direct_ports.items():
            relay = await asyncio.start_server(self._relay(name, port), "127.0.0.1", 0)
            self._servers.append(relay)
            self.ports[name] = relay.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        for s in self._servers:
            s.close()
        if self._ws_server is not None:
            self._ws_server.close()  # type: ignore[attr-defined]
        for w in list(self._writers):
            w.close()
        if self._ws_server is not None:
            await self._ws_server.wait_closed()  # type: ignore[attr-defined]
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _record_sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self._stats["tls"].snis.append(name or "")
            self._sni_by_conn[id(sslobj)] = name

    def _relay(self, name: str, port: int):  # noqa: ANN202 - asyncio callback factory
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with self._lock:
                self._stats[name].connections += 1
            self._writers.add(writer)
            try:
                br, bw = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return

            async def pipe(
                src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool
            ) -> None:
                try:
                    while data := await src.read(65536):
                        if count:
                            with self._lock:
                                self._stats[name].bytes_in += len(data)
                        dst.write(data)
                        await dst.drain()
                except (OSError, asyncio.IncompleteReadError):
                    pass
                finally:
                    try:
                        if dst.can_write_eof():
                            dst.write_eof()
                    except OSError:
                        pass

            await asyncio.gather(pipe(reader, bw, True), pipe(br, writer, False))
            for w in (writer, bw):
                w.close()
            self._writers.discard(writer)

        return handle

    def _echo(self, name: str):  # noqa: ANN202 - asyncio callback factory
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sni = None
            sslobj = writer.get_extra_info("ssl_object")
            if sslobj is not None:
                with self._lock:
                    sni = self._sni_by_conn.pop(id(sslobj), None)
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
                    headers: dict[str, str] = {}
                    for line in lines[1:]:
                        if ":" in line:
                            k, v = line.split(":", 1)
                            headers[k.strip().lower()] = v.strip()
                    length = int(headers.get("content-length", "0") or 0)
                    if length:
                        await reader.readexactly(length)
                    host = headers.get("host", "")
                    with self._lock:
                        self._stats[name].hosts.append(host)
                    body = json.dumps(
                        {"server": name, "method": method, "host": host, "path": target, "sni": sni}
                    ).encode()
                    close = headers.get("connection", "").lower() == "close"
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + (ALT_SVC_HEADER if target.startswith("/alt-svc") else b"")
                        + f"content-length: {len(body)}\r\n".encode()
                        + (b"connection: close\r\n" if close else b"")
                        + b"\r\n"
                        + body
                    )
                    await writer.drain()
                    if close:
                        break
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
                pass
            finally:
                writer.close()

        return handle

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read anything, answer a TLS fatal alert (handshake_failure) and close: an upstream for
        hostile ClientHellos that Python's own TLS server would choke on (non-ASCII SNI)."""
        try:
            await reader.read(65536)
            writer.write(b"\x15\x03\x03\x00\x02\x02\x28")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _ws_request(self, connection: object, request: object) -> None:
        host = request.headers.get("Host", "")  # type: ignore[attr-defined]
        with self._lock:
            self._stats["ws"].hosts.append(host)

    @staticmethod
    async def _ws_echo(websocket: object) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in websocket:  # type: ignore[attr-defined]
                await websocket.send(message)  # type: ignore[attr-defined]
        except ConnectionClosed:
            pass


def main(argv: Sequence[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else Path(".")
    pki = make_test_pki(directory)
    with Upstreams(pki) as ups:
        print(
            json.dumps(
                {"ports": ups.ports, "direct_ports": ups.direct_ports, "ca": str(pki.ca_cert)}
            ),
            flush=True,
        )
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
