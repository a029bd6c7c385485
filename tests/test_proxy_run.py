"""egresswatch.proxy.run: the master with the addon built in, the SO_REUSEPORT workaround for
workers and the TCP-only check."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from egresswatch.proxy import run as proxy_run
from mitmproxy.options import Options


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


class _Checking(proxy_run.EgressWatchMaster):
    serve = False  # configure, then return: no servers


async def test_the_built_in_addon_sits_where_a_script_would(
    catalogue_dir: Callable[..., Path],
) -> None:
    """EgressWatchMaster puts the addon right after mitmproxy's script loader (before NextLayer
    and TlsConfig, whose decisions its next_layer and TLS hooks must precede) and configures it
    in run(), before any server."""
    cat = catalogue_dir({"watchy": {"domains": [{"domain": "watchy.test"}]}})
    m = _Checking(Options(), with_termlog=False, with_dumper=False)
    try:
        ew = m.egresswatch
        assert ew not in m.addons.chain and ew.state is None  # registered, options declared
        m.options.update(
            egresswatch_bundled=False,
            egresswatch_lists=[str(cat)],
            egresswatch_metrics_listen="off",
            egresswatch_store="memory://",
            egresswatch_checkpoint_interval=0,
        )
        assert ew.state is None  # not yet: one configure, with every option, in run()
        await m.run()
        names = [type(a).__name__ for a in m.addons.chain]
        at = names.index("EgressWatch")
        assert names[at - 1] == "ScriptLoader"
        assert at < names.index("NextLayer") < names.index("TlsConfig")
        assert ew.state is not None and "watchy" in ew.state.catalogue.apps
        assert ew.writer is None  # never ran
    finally:
        m.addons.get("errorcheck").finish()
        await m.done()


async def test_a_refused_configure_exits_before_any_server(
    catalogue_dir: Callable[..., Path],
) -> None:
    cat = catalogue_dir({"watchy": {"domains": [{"domain": "watchy.test"}]}})
    (cat / "watchy.yaml").write_text("id: watchy\nname: Watchy\ndomains:\n  - domain: [\n")
    m = proxy_run.EgressWatchMaster(Options(), with_termlog=False, with_dumper=False)
    try:
        m.options.update(
            egresswatch_bundled=False,
            egresswatch_lists=[str(cat)],
            egresswatch_metrics_listen="off",
            listen_port=0,
        )
        with pytest.raises(SystemExit) as exited:
            await m.run()
        assert exited.value.code == 1
        assert m.addons.get("proxyserver").listen_addrs() == []  # no server was set up
    finally:
        m.addons.get("errorcheck").finish()
        await m.done()
