"""Several proxy processes behind one listening address, supervised (``egresswatch run --workers``).

mitmproxy serves from one event loop on one core, so a host with N cores runs N proxy processes.
They all bind the same address and port with ``SO_REUSEPORT``, and the kernel spreads incoming
connections over them (a hash of each connection's addresses): no relay, no extra hop, and every
worker sees each client's real address. Each worker is its own instance (its own hash chain, its
own metrics port), named ``<instance>-w<i>``.

The :class:`Supervisor` here only starts, watches and stops processes; it never imports
mitmproxy. A worker that dies is started again after ``restart_delay`` seconds, and the restart
is logged and counted (the restarted process learns its count from the environment variable
``EGRESSWATCH_WORKER_RESTARTS`` and reports it in its metrics and start event). A stop
(SIGTERM or SIGINT to the supervisor) is forwarded to every worker, which drains and writes its
last events; workers still alive after ``stop_timeout`` seconds are killed.

A supervisor that dies without that stop (SIGKILL, the OOM killer, a crash) must not leave its
workers holding the port. Each worker calls :func:`die_with_supervisor` first thing: on Linux it
asks the kernel for SIGTERM when its parent goes (``prctl(PR_SET_PDEATHSIG)``), SIGTERM being the
worker's graceful stop (drain, stop event, checkpoint); then it compares ``os.getppid()`` with the
supervisor's pid (``EGRESSWATCH_SUPERVISOR_PID``), which closes the race of a supervisor that died
before the ``prctl``. The kernel sends the signal when the *thread* that started the worker ends,
so the thread that calls :meth:`Supervisor.run` (it starts and restarts every worker) must live
as long as the supervisor: the CLI calls it from the main thread. Elsewhere (no ``prctl``) a
daemon thread polls ``os.getppid()`` once a second and sends the same SIGTERM when it changes.

>>> worker_count("auto", available=lambda: 6)
6
>>> worker_count("2", available=lambda: 6)
2
>>> worker_count("0", available=lambda: 6)
Traceback (most recent call last):
ValueError: --workers: expected a positive number or 'auto', got '0'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

__all__ = [
    "RESTARTS_ENV",
    "SUPERVISOR_ENV",
    "Supervisor",
    "WorkerSpec",
    "available_cores",
    "die_with_supervisor",
    "restarts_from_env",
    "worker_count",
]

logger = logging.getLogger(__name__)

#: How a restarted worker learns how many times its slot was restarted before it.
RESTARTS_ENV = "EGRESSWATCH_WORKER_RESTARTS"
#: The supervisor's pid, so a worker can tell whether it is still its parent.
SUPERVISOR_ENV = "EGRESSWATCH_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_parent_death_signal(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``; False where there is no such call (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    return True


def _watch_parent(parent: int, interval: float) -> None:
    """Send this process SIGTERM once its parent is no longer ``parent`` (polling fallback)."""
    while os.getppid() == parent:
        time.sleep(interval)
    logger.warning("supervisor (pid %d) is gone; stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def die_with_supervisor(
    env: Mapping[str, str] | None = None, *, poll_interval: float = 1.0, use_prctl: bool = True
) -> bool:
    """Arrange SIGTERM for this worker when its supervisor dies (see the module docstring).

    Returns False when the supervisor named in the environment is already gone (the caller
    should not start), True otherwise, including when no supervisor started this process
    (``egresswatch run --worker I`` under systemd, whose unit stops its own processes)."""
    text = (os.environ if env is None else env).get(SUPERVISOR_ENV, "")
    if not text.isdigit():
        return True
    parent = int(text)
    if not (use_prctl and _set_parent_death_signal(signal.SIGTERM)):
        threading.Thread(
            target=_watch_parent,
            args=(parent, poll_interval),
            name="egresswatch parent watch",
            daemon=True,
        ).start()
    return os.getppid() == parent


def restarts_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """The restarts a supervisor passed to this worker (None when not run by one).

    >>> restarts_from_env({RESTARTS_ENV: "3"}), restarts_from_env({})
    (3, None)
    """
    text = (os.environ if env is None else env).get(RESTARTS_ENV, "")
    return int(text) if text.isdigit() else None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_count(text: str, available: Callable[[], int] = available_cores) -> int:
    """``--workers`` as a number: ``auto`` is the available cores."""
    if text == "auto":
        return max(1, available())
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--workers: expected a positive number or 'auto', got {text!r}")
    return int(text)


@dataclass
class WorkerSpec:
    """One worker slot: its command line and the process running it now."""

    index: int
    argv: list[str]
    restarts: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Supervisor:
    """Start ``argvs`` (one command line per worker), restart the ones that die, stop them all.

    ``run()`` blocks until :meth:`stop` is called (the CLI calls it from a signal handler) and
    returns 0 when every worker stopped by itself within the timeout, 1 otherwise.
    """

    def __init__(
        self,
        argvs: Sequence[Sequence[str]],
        *,
        restart_delay: float = 1.0,
        stop_timeout: float = 30.0,
        poll_interval: float = 0.2,
        env: dict[str, str] | None = None,
    ) -> None:
        if not argvs:
            raise ValueError("a supervisor needs at least one worker")
        self.workers = [WorkerSpec(i, list(a)) for i, a in enumerate(argvs)]
        self._restart_delay = restart_delay
        self._stop_timeout = stop_timeout
        self._poll = poll_interval
        self._env = dict(os.environ if env is None else env)
        self._stopping = threading.Event()

    @property
    def restarts(self) -> int:
        """Restarts of all slots so far."""
        return sum(w.restarts for w in self.workers)

    def _start(self, w: WorkerSpec) -> None:
        env = {**self._env, RESTARTS_ENV: str(w.restarts), SUPERVISOR_ENV: str(os.getpid())}
        w.process = subprocess.Popen(w.argv, env=env)
        logger.info("worker %d started (pid %d)", w.index, w.process.pid)

    def stop(self) -> None:
        """Ask :meth:`run` to stop every worker and return (safe from a signal handler)."""
        self._stopping.set()

    def run(self) -> int:
        for w in self.workers:
            self._start(w)
        due: dict[int, float] = {}  # slot -> monotonic time of its restart
        while not self._stopping.wait(self._poll):
            now = time.monotonic()
            for w in self.workers:
                assert w.process is not None
                rc = w.process.poll()
                if rc is not None and w.index not in due:
                    logger.error(
                        "worker %d (pid %d) exited with status %d; restarting in %.1fs",
                        w.index,
                        w.process.pid,
                        rc,
                        self._restart_delay,
                    )
                    due[w.index] = now + self._restart_delay
                if w.index in due and now >= due[w.index]:
                    del due[w.index]
                    w.restarts += 1
                    self._start(w)
        return self._stop_all()

    def _stop_all(self) -> int:
        alive = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        for w in alive:
            assert w.process is not None
            w.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        clean = True
        for w in alive:
            assert w.process is not None
            try:
                w.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "worker %d did not stop in %.0fs; killing it", w.index, self._stop_timeout
                )
                w.process.kill()
                w.process.wait()
                clean = False
        logger.info("all %d workers stopped (%d restarts)", len(self.workers), self.restarts)
        return 0 if clean else 1
