"""A private network namespace for end-to-end tests of the transparent-type proxy modes.

Transparent, WireGuard and local mode need packets redirected by the kernel. Doing that on the
host would touch its network, so each test module gets its own namespace (``ip netns add
egw-<random>``, ``lo`` up) and everything runs inside it: mitmdump (``ip netns exec`` prefix),
the loopback upstreams and in-process clients (a fresh thread that ``os.setns`` into it: a
network namespace is per thread, and threads started from that thread inherit it), and
subprocess clients such as curl. Deleting the namespace removes its interfaces, routes and nft
rules; no packet ever leaves it.

- :func:`missing` names the first missing prerequisite (root, ``ip``, ``nft``…), for a skip.
- :class:`NetNS`: ``create()``, ``ip(...)``, ``nft(script)``, ``run(cmd)``, ``popen(cmd)``,
  ``call(fn, ...)`` (in a thread inside the namespace), ``delete()`` (kills what is left in it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import TypeVar

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")


def missing(tools: Sequence[str] = ("ip",), devices: Sequence[str] = ()) -> str | None:
    """Why the namespace tests cannot run here (None: they can): not root, a tool not on PATH
    (``/usr/sbin`` and ``/sbin`` included), a device node absent."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in tools:
        if which(tool) is None:
            return f"{tool} not installed"
    for dev in devices:
        if not Path(dev).exists():
            return f"{dev} missing"
    return None


def which(tool: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(tool, path=path)


class NetNS:
    """One named network namespace (``/run/netns/<name>``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []

    @classmethod
    def create(cls, prefix: str = "egw") -> NetNS:
        ns = cls(f"{prefix}-{uuid.uuid4().hex[:8]}")
        subprocess.run([_tool("ip"), "netns", "add", ns.name], check=True, capture_output=True)
        try:
            ns.ip("link", "set", "lo", "up")
        except BaseException:
            ns.delete()
            raise
        return ns

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix a command line with this to run it inside the namespace (``ip netns exec``
        execs the command, so the process keeps its pid and receives signals directly)."""
        return [_tool("ip"), "netns", "exec", self.name]

    # -- commands --------------------------------------------------------------------------------
    def ip(self, *args: str) -> str:
        return self._check([_tool("ip"), "-n", self.name, *args])

    def nft(self, script: str) -> str:
        return self._check([*self.exec_prefix, _tool("nft"), "-f", "-"], stdin=script)

    def run(
        self,
        cmd: Sequence[str],
        timeout: float = 30,
        check: bool = False,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace and capture its output."""
        out = subprocess.run(
            [*self.exec_prefix, *cmd],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C.UTF-8"},
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr}")
        return out

    def popen(
        self, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the namespace; it is killed by :meth:`delete`."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*self.exec_prefix, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.procs.append(proc)
        return proc

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a new thread that has entered this namespace; return
        its result or re-raise its exception. Threads ``fn`` starts stay in the namespace."""
        result: list[T] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.setns(fd, os.CLONE_NEWNET)
                finally:
                    os.close(fd)
                result.append(fn(*args, **kwargs))
            except BaseException as e:  # re-raised in the caller
                error.append(e)

        t = threading.Thread(target=target, name=f"netns-{self.name}", daemon=True)
        t.start()
        t.join()
        if error:
            raise error[0]
        return result[0]

    # -- teardown --------------------------------------------------------------------------------
    def delete(self) -> None:
        """Stop the processes started here (SIGTERM, then SIGKILL), then any other process still
        inside the namespace, and remove it (interfaces, routes and rules go with it)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.procs.clear()
        if not self.path.exists():
            return
        pids = subprocess.run(
            [_tool("ip"), "netns", "pids", self.name], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run([_tool("ip"), "netns", "del", self.name], capture_output=True)

    def _check(self, cmd: list[str], stdin: str | None = None) -> str:
        out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout


def _tool(name: str) -> str:
    path = which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not installed")
    return path
