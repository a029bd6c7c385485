"""End to end, start-up and supervision with real processes.

A refused start-up (broken catalogue, broken policy, bad option value) of ``egresswatch run``, one
process or ``--workers 2``, prints its ``file:line`` reason and exits non-zero without ever
listening: a probe thread tries to connect to the proxy port every few milliseconds for the whole
run. Under ``mitmdump -s`` the same refusal exits before the "listening" line. A supervisor killed
with SIGKILL takes its workers with it: they get SIGTERM (their graceful stop), write their stop
events, free the port, and the store verifies.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from egresswatch.events import EventKind
from egresswatch.store import open_store

from tests.plugins.proxy import free_port
from tests.plugins.proxy import write_catalogue

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
EGRESSWATCH = Path(sys.executable).with_name("egresswatch")
MITMDUMP = Path(sys.executable).with_name("mitmdump")
POLICY = "default: monitor\napps:\n  deepseek: block\n"


@dataclass
class Probe:
    """Connection attempts to a port while a process runs: how many were accepted."""

    port: int
    attempts: int = 0
    accepted: int = 0


@contextmanager
def probing(port: int) -> Iterator[Probe]:
    """Try to connect to ``127.0.0.1:port`` every 2 ms until the block ends."""
    probe = Probe(port)
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            probe.attempts += 1
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    probe.accepted += 1
            except OSError:
                pass
            time.sleep(0.002)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield probe
    finally:
        done.set()
        t.join(timeout=5)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(tmp_path)
    return env


def run_refused(cmd: list[str], tmp_path: Path, port: int) -> tuple[int, str, Probe]:
    with probing(port) as probe:
        out = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            env=clean_env(tmp_path),
            cwd=tmp_path,
        )
    return out.returncode, out.stdout, probe


# -- refused start-ups ---------------------------------------------------------------------------

#: name -> (options to add, expected text) for one refused start-up; each gets a fresh catalogue.
Breakage = Callable[[Path, Path], tuple[list[str], str]]


def broken_catalogue(cat: Path, _policy: Path) -> tuple[list[str], str]:
    text = (cat / "tiktok.yaml").read_text().replace("confidence: high", "confidence: sure", 1)
    (cat / "tiktok.yaml").write_text(text)
    line = text.splitlines().index("    confidence: sure") + 1
    return [], f"tiktok.yaml:{line}:"


def broken_policy(_cat: Path, policy: Path) -> tuple[list[str], str]:
    policy.write_text("default: monitor\napps:\n  deepseek: blokc\n")
    return [], f"{policy.name}:3:"


def bad_option(_cat: Path, _policy: Path) -> tuple[list[str], str]:
    return (
        ["--set", "egresswatch_decrypt=sometimes"],
        "egresswatch_decrypt: invalid value 'sometimes'",
    )


BREAKAGES: dict[str, Breakage] = {
    "catalogue": broken_catalogue,
    "policy": broken_policy,
    "option": bad_option,
}


def refused_setup(tmp_path: Path, breakage: str) -> tuple[list[str], list[str], str]:
    """(egresswatch run arguments, mitmdump arguments after --, expected reason)."""
    cat = write_catalogue(tmp_path / "cat")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    extra, reason = BREAKAGES[breakage](cat, policy)
    run_args = [
        "--no-bundled", "--lists", str(cat), "--policy", str(policy),
        "--data-dir", str(tmp_path / "data"), "--confdir", str(tmp_path / "conf"),
        "--metrics-listen", "127.0.0.1:0",
    ]  # fmt: skip
    return run_args, extra, reason


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("workers", [None, "2"])
def test_refused_start_up_never_listens(tmp_path: Path, breakage: str, workers: str | None) -> None:
    port = free_port()
    run_args, extra, reason = refused_setup(tmp_path, breakage)
    cmd = [str(EGRESSWATCH), "run", "--listen-port", str(port), *run_args]
    if workers:
        cmd += ["--workers", workers]
    rc, out, probe = run_refused([*cmd, "--", *extra], tmp_path, port)
    assert rc != 0, out
    assert reason in out, out
    assert "listening" not in out, out
    assert "Traceback" not in out, out
    assert probe.attempts > 10 and probe.accepted == 0, probe
    if workers:
        assert "worker 0 started" not in out  # refused once, before any worker
    assert port_is_free(port)


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_refused_start_up_under_mitmdump_script_stops_before_listening(
    tmp_path: Path, breakage: str
) -> None:
    """``mitmdump -s``: mitmproxy loads scripts while it sets up its servers, so the port may be
    bound for the moment the catalogue takes to load; the run still stops there, with the
    reason, before the "listening" line."""
    port = free_port()
    run_args, extra, reason = refused_setup(tmp_path, breakage)
    opts = {"--lists": "egresswatch_lists", "--policy": "egresswatch_policy"}
    sets = ["--set", "egresswatch_bundled=false"]
    for flag, name in opts.items():
        sets += ["--set", f"{name}={run_args[run_args.index(flag) + 1]}"]
    cmd = [
        str(MITMDUMP), "-s", str(REPO / "deploy" / "mitmproxy" / "egresswatch.py"),
        "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--set", f"confdir={tmp_path / 'conf'}", "--set", f"egresswatch_data_dir={tmp_path / 'd'}",
        "--set", "egresswatch_metrics_listen=127.0.0.1:0", *sets, *extra,
    ]  # fmt: skip
    rc, out, _probe = run_refused(cmd, tmp_path, port)
    assert rc == 1, out
    assert reason in out, out
    assert "listening" not in out, out
    assert "Traceback" not in out, out
    assert port_is_free(port)


# -- a supervisor killed -------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def test_workers_stop_gracefully_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    cat = write_catalogue(tmp_path / "cat")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    data = tmp_path / "data"
    log_path = tmp_path / "run.log"
    cmd = [
        str(EGRESSWATCH), "run", "--workers", "2", "--listen-port", str(port),
        "--no-bundled", "--lists", str(cat), "--policy", str(policy), "--instance", "sk",
        "--data-dir", str(data), "--confdir", str(tmp_path / "conf"),
        "--metrics-listen", "127.0.0.1:0", "--",
        "--set", "egresswatch_reload_interval=0", "--set", "termlog_verbosity=info",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        sup = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=clean_env(tmp_path), cwd=tmp_path
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while len(re.findall("egresswatch: running", log_path.read_text())) < 2:
            assert sup.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        workers = children(sup.pid)
        assert len(workers) == 2
        # Blocked requests: answered 403 by whichever worker the kernel picks, each an event.
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(
                    b"CONNECT api.deepseek.com:443 HTTP/1.1\r\nHost: api.deepseek.com\r\n\r\n"
                )
                assert s.recv(64).startswith(b"HTTP/1.1 403")

        sup.kill()
        sup.wait(timeout=10)
        killed = time.monotonic()
        while any(alive(w) for w in workers):
            assert time.monotonic() - killed < 20, log_path.read_text()[-3000:]
            time.sleep(0.05)
        stopped_in = time.monotonic() - killed
    finally:
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    log = log_path.read_text()
    assert stopped_in < 15, log
    assert port_is_free(port)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # SIGTERM is the graceful path: each worker drained and wrote its stop event.
    url = f"sqlite:///{data / 'events.db'}"
    store = open_store(url)
    try:
        events = list(store.iter_events(0, time.time() + 60))
    finally:
        store.close()
    for inst in ("sk-w0", "sk-w1"):
        kinds = [e.kind for e in events if e.instance == inst]
        assert kinds.count(EventKind.START) == 1 and kinds[-1] == EventKind.STOP, (inst, kinds)
    assert sum(e.kind == EventKind.HIT for e in events) == 20
    verify = subprocess.run(
        [str(EGRESSWATCH), "db", "verify", "--store", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "2 chain(s)" in verify.stdout
