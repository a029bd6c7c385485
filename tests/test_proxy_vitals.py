"""egresswatch.proxy.vitals: readiness from the components, the beat, and systemd's messages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from egresswatch.proxy.vitals import Vitals

from tests.plugins.addon import Env


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.setblocking(False)
    yield s, path
    s.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_ready_is_sent_once_and_only_when_everything_is_open(
    systemd: tuple[socket.socket, str],
) -> None:
    sock, path = systemd
    v = Vitals(env={"NOTIFY_SOCKET": path})
    v.tick()
    v.store_opened()
    v.tick()
    assert drain(sock) == []  # the catalogue and the policy are not loaded yet
    assert v.health.ready() == (
        False,
        ["catalogue: not yet open", "policy: not yet open", "store: ok"],
    )
    v.loaded()
    v.tick()
    v.tick()
    assert drain(sock) == [b"READY=1\nSTATUS=catalogue, policy and store open"]
    assert v.health.alive()[0]


async def test_the_loop_beats_and_pings_the_watchdog(systemd: tuple[socket.socket, str]) -> None:
    sock, path = systemd
    now = [0.0]
    v = Vitals(
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"},  # a ping every 0.05 s
        clock=lambda: now[0],
        beat_interval=0.01,
        stale_after=5,
    )
    task = asyncio.create_task(v.loop())
    for _ in range(30):
        now[0] += 0.01
        await asyncio.sleep(0.01)
    task.cancel()
    pings = [m for m in drain(sock) if m == b"WATCHDOG=1"]
    assert 3 <= len(pings) <= 8  # 0.3 s of clock at one ping per 0.05 s (plus the first)
    assert v.health.alive() == (True, "event loop beat 0s ago")
    now[0] += 10
    assert v.health.alive() == (False, "event loop beat 10s ago (limit 5s)")


def test_without_systemd_nothing_is_sent() -> None:
    v = Vitals(env={})
    v.loaded()
    v.store_opened()
    v.tick()
    v.stopping()
    assert v.notified_ready and not v.notifier.enabled


async def test_the_addon_reports_its_components_and_keeps_its_pac_file(env: Env) -> None:
    from mitmproxy import exceptions

    vitals = env.addon.vitals
    assert vitals.health.ready()[1][:2] == ["catalogue: ok", "policy: ok"]  # loaded in configure
    env.tctx.configure(env.addon, egresswatch_pac_proxies=["p1.example:8080"])
    env.addon.running()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not vitals.health.ready()[0]:  # the writer opens the store at its first flush
            assert asyncio.get_running_loop().time() < deadline, vitals.health.ready()
            await asyncio.sleep(0.05)
        assert env.addon.background_tasks() == ["egresswatch_heartbeat"]  # the beat is apart
        with pytest.raises(exceptions.OptionsError, match="cannot change while running"):
            env.tctx.configure(env.addon, egresswatch_pac_proxies=["p2.example:8080"])
    finally:
        await env.addon.done()
