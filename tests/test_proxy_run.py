"""egresswatch.proxy.run: the SO_REUSEPORT workaround for workers and the TCP-only check."""

from __future__ import annotations

import asyncio
import socket

import pytest
from egresswatch.proxy import run as proxy_run


async def test_two_servers_share_one_port_with_the_workaround() -> None:
    async def answer(tag: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(tag)
        await w.drain()
        w.close()

    first = await asyncio.start_server(lambda r, w: answer(b"A", r, w), "127.0.0.1", 0)
    port = first.sockets[0].getsockname()[1]
    first.close()
    await first.wait_closed()
    # Without the workaround a second bind to a port in use fails.
    plain = await asyncio.start_server(lambda r, w: answer(b"A", r, w), "127.0.0.1", port)
    with pytest.raises(OSError):
        await asyncio.start_server(lambda r, w: answer(b"B", r, w), "127.0.0.1", port)
    plain.close()
    await plain.wait_closed()

    restore = proxy_run.listen_with_reuse_port()
    try:
        again = proxy_run.listen_with_reuse_port()  # wraps once
        again()
        a = await asyncio.start_server(lambda r, w: answer(b"A", r, w), "127.0.0.1", port)
        b = await asyncio.start_server(lambda r, w: answer(b"B", r, w), "127.0.0.1", port)
        for srv in (a, b):
            s = srv.sockets[0]
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        seen: set[bytes] = set()
        # The kernel spreads connections by a hash of their addresses: many source ports
        # reach both listeners.
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            seen.add(await reader.read(1))
            writer.close()
            if seen == {b"A", b"B"}:
                break
        assert seen == {b"A", b"B"}
        a.close()
        b.close()
    finally:
        restore()
    assert not getattr(asyncio.start_server, "_egresswatch_reuse_port", False)


@pytest.mark.parametrize(
    ("mode", "ok"),
    [
        ("regular", True),
        ("socks5", True),
        ("transparent", True),
        ("upstream:http://up.example:3128", True),
        ("reverse:http://app.example", True),
        ("dns", False),
        ("wireguard", False),
        ("reverse:https://app.example", False),  # HTTP/3 too: UDP
        ("reverse:udp://app.example:53", False),
    ],
)
def test_only_tcp_modes_may_have_workers(mode: str, ok: bool) -> None:
    if ok:
        proxy_run.check_tcp_modes([mode])
    else:
        with pytest.raises(ValueError, match=f"mode '{mode}' uses UDP"):
            proxy_run.check_tcp_modes(["regular", mode])


def test_a_malformed_mode_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--mode 'nonsense'"):
        proxy_run.check_tcp_modes(["nonsense"])
