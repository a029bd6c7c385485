"""HTTP/3 (QUIC) upstream server and client for the end-to-end tests, on aioquic.

- :class:`H3Upstream`: an HTTP/3 echo server (test certificate, ALPN ``h3``) on an event loop in
  a daemon thread. It counts every datagram it receives (``stats()``) before aioquic sees it, so
  a test can prove that a dropped QUIC connection never reached it. The answer is JSON naming
  the request's ``:authority`` and path.
- :func:`h3_get`: one HTTP/3 GET with a chosen SNI to an address, verifying the server against a
  CA file; returns (status, body) or raises (``TimeoutError`` when the handshake never ends).

Both are plain asyncio with their own loop, so they also run in a thread that entered a network
namespace (``tests/support/netns.py``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from tests.support.upstreams import UpstreamPKI


@dataclass
class H3Stats:
    datagrams: int = 0
    bytes_in: int = 0
    authorities: list[str] = field(default_factory=list)


class _H3ServerProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, stats: H3Stats, lock: threading.Lock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._stats = stats
        self._lock = lock

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                headers = dict(ev.headers)
                authority = headers.get(b":authority", b"").decode()
                with self._lock:
                    self._stats.authorities.append(authority)
                body = json.dumps(
                    {
                        "server": "h3",
                        "authority": authority,
                        "path": headers.get(b":path", b"").decode(),
                    }
                ).encode()
                self._h3.send_headers(
                    ev.stream_id,
                    [
                        (b":status", b"200"),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                self._h3.send_data(ev.stream_id, body, end_stream=True)
                self.transmit()


class _CountingQuicServer(QuicServer):
    def __init__(self, *, stats: H3Stats, lock: threading.Lock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stats = stats
        self._lock = lock

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        with self._lock:
            self._stats.datagrams += 1
            self._stats.bytes_in += len(data)
        super().datagram_received(data, addr)


class H3Upstream:
    """An HTTP/3 echo server on ``127.0.0.1:port`` (UDP), run in a daemon thread."""

    def __init__(self, pki: UpstreamPKI) -> None:
        self.pki = pki
        self.port = 0
        self._stats = H3Stats()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="h3", daemon=True)
        self._server: _CountingQuicServer | None = None

    def start(self) -> H3Upstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()  # type: ignore[no-untyped-call]

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def stats(self) -> H3Stats:
        with self._lock:
            s = self._stats
            return H3Stats(s.datagrams, s.bytes_in, list(s.authorities))

    async def _start(self) -> None:
        config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        config.load_cert_chain(self.pki.cert, self.pki.key)
        stats, lock = self._stats, self._lock

        def protocol(*args: Any, **kwargs: Any) -> _H3ServerProtocol:
            return _H3ServerProtocol(*args, stats=stats, lock=lock, **kwargs)

        transport, server = await self._loop.create_datagram_endpoint(
            lambda: _CountingQuicServer(
                stats=stats, lock=lock, configuration=config, create_protocol=protocol
            ),
            local_addr=("127.0.0.1", 0),
        )
        self._server = server
        self.port = int(transport.get_extra_info("sockname")[1])


class _H3ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._responses: dict[int, tuple[asyncio.Future[tuple[int, bytes]], list[Any]]] = {}

    async def get(self, authority: str, path: str) -> tuple[int, bytes]:
        sid = self._quic.get_next_available_stream_id()
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._responses[sid] = (fut, [0, b""])
        self._h3.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        self.transmit()
        return await fut

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self._h3.handle_event(event):
            if not isinstance(ev, HeadersReceived | DataReceived) or ev.stream_id not in (
                self._responses
            ):
                continue
            fut, acc = self._responses[ev.stream_id]
            if isinstance(ev, HeadersReceived):
                acc[0] = int(dict(ev.headers)[b":status"])
            else:
                acc[1] += ev.data
            if ev.stream_ended and not fut.done():
                fut.set_result((acc[0], acc[1]))


def padding_alpn(nbytes: int) -> list[str]:
    """About ``nbytes`` of made-up ALPN names (50 characters each, plus a length byte): added to
    a ClientHello, they make it span several QUIC Initial datagrams."""
    return [f"x-pad-{i:04d}-{'p' * 39}" for i in range(nbytes // 51)]


def h3_get(
    address: str,
    port: int,
    sni: str,
    cafile: str,
    path: str = "/",
    timeout: float = 3.0,
    hello_padding: int = 0,
) -> tuple[int, bytes]:
    """GET ``https://<sni><path>`` over HTTP/3 from ``address:port``, verifying against
    ``cafile``; raises ``TimeoutError`` if nothing completes within ``timeout`` seconds.

    ``hello_padding`` adds about that many bytes of extra ALPN names to the ClientHello, so that
    it spans several Initial datagrams (as post-quantum key shares make browsers' do)."""
    extra = padding_alpn(hello_padding)

    async def run() -> tuple[int, bytes]:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[*H3_ALPN, *extra],
            server_name=sni,
            verify_mode=ssl.CERT_REQUIRED,
        )
        config.load_verify_locations(cafile)
        async with asyncio.timeout(timeout):
            async with connect(
                address, port, configuration=config, create_protocol=_H3ClientProtocol
            ) as client:
                assert isinstance(client, _H3ClientProtocol)
                return await client.get(sni, path)

    return asyncio.run(run())
