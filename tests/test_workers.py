"""egresswatch.workers: the supervisor with real child processes (small Python programs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from egresswatch.workers import RESTARTS_ENV
from egresswatch.workers import SUPERVISOR_ENV
from egresswatch.workers import Supervisor
from egresswatch.workers import die_with_supervisor
from egresswatch.workers import worker_count

# A worker that records its start (with the restart count it was given) and its clean stop.
WORKER = """
import os, signal, sys, time
log = sys.argv[1]
with open(log, "a") as f:
    f.write(f"start {os.environ['RESTARTS']}\\n")
def stop(*_):
    with open(log, "a") as f:
        f.write("stop\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
mode = sys.argv[2]
if mode == "crash-once" and os.environ["RESTARTS"] == "0":
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    time.sleep(0.05)
""".replace("RESTARTS", RESTARTS_ENV)


def wait_for(cond: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def start(sup: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(sup.run()))
    t.start()
    return t, result


def test_workers_start_stop_cleanly(tmp_path: Path) -> None:
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    sup = Supervisor([[sys.executable, "-c", WORKER, str(p), "steady"] for p in logs])
    t, result = start(sup)
    wait_for(lambda: all(lines(p) == ["start 0"] for p in logs))
    sup.stop()
    t.join(30)
    assert result == [0]
    assert all(lines(p) == ["start 0", "stop"] for p in logs)
    assert sup.restarts == 0


def test_a_dead_worker_is_restarted_and_counted(tmp_path: Path) -> None:
    crash, steady = tmp_path / "crash.log", tmp_path / "steady.log"
    sup = Supervisor(
        [
            [sys.executable, "-c", WORKER, str(crash), "crash-once"],
            [sys.executable, "-c", WORKER, str(steady), "steady"],
        ],
        restart_delay=0.1,
    )
    t, result = start(sup)
    wait_for(lambda: lines(crash) == ["start 0", "start 1"])
    sup.stop()
    t.join(30)
    assert result == [0]
    assert lines(crash) == ["start 0", "start 1", "stop"]
    assert lines(steady) == ["start 0", "stop"]
    assert [w.restarts for w in sup.workers] == [1, 0]


def test_a_worker_that_ignores_the_stop_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    sup = Supervisor([[sys.executable, "-c", WORKER, str(log), "stubborn"]], stop_timeout=0.5)
    t, result = start(sup)
    wait_for(lambda: lines(log) == ["start 0"])
    sup.stop()
    t.join(30)
    assert result == [1]
    assert sup.workers[0].process is not None and sup.workers[0].process.returncode == -9


@pytest.mark.parametrize(("text", "n"), [("1", 1), ("4", 4), ("auto", 3)])
def test_worker_count(text: str, n: int) -> None:
    assert worker_count(text, available=lambda: 3) == n


@pytest.mark.parametrize("text", ["0", "-1", "two", ""])
def test_worker_count_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--workers"):
        worker_count(text)


def test_no_workers_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Supervisor([])


# -- a worker outlives no supervisor ------------------------------------------------------------

# The "supervisor": starts one child, prints its pid, then waits to be killed.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
print(child.pid, flush=True)
time.sleep(600)
"""
# The "worker": asks to die with its supervisor, records SIGTERM (its graceful stop), waits.
CHILD = """
import os, signal, sys, time
from egresswatch.workers import SUPERVISOR_ENV, die_with_supervisor
log, use_prctl = sys.argv[1], sys.argv[2] == "prctl"
def stop(*_):
    with open(log, "a") as f:
        f.write("sigterm\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
ok = die_with_supervisor({SUPERVISOR_ENV: str(os.getppid())}, poll_interval=0.05,
                         use_prctl=use_prctl)
with open(log, "a") as f:
    f.write(f"ready {ok}\\n")
time.sleep(600)
"""


def _wait_for(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while text not in (got := path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, got
        time.sleep(0.02)
    return got


@pytest.mark.parametrize("how", ["prctl", "polling"])
def test_a_worker_gets_sigterm_when_its_supervisor_is_killed(tmp_path: Path, how: str) -> None:
    log = tmp_path / "child.log"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, str(log), how], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert _wait_for(log, "ready", 30) == "ready True\n"
        parent.kill()
        parent.wait()
        _wait_for(log, "sigterm", 5)
    finally:
        for pid in (child, parent.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.wait()
        parent.stdout.close()


def test_a_worker_whose_supervisor_is_already_gone_does_not_start() -> None:
    """The race prctl cannot cover: the supervisor died before the worker asked. The worker's
    parent is then someone else (here: this test, while the named supervisor has exited)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    code = (
        "import sys; from egresswatch.workers import SUPERVISOR_ENV, die_with_supervisor; "
        f"sys.exit(0 if die_with_supervisor({{SUPERVISOR_ENV: '{gone.pid}'}}) else 7)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 7


def test_no_supervisor_named_means_nothing_to_watch() -> None:
    assert die_with_supervisor({}) is True
    assert die_with_supervisor({SUPERVISOR_ENV: "not-a-pid"}) is True
