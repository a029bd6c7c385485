"""pytest fixtures: a real ``mitmdump`` with egresswatch, loopback upstreams, a test catalogue.

- ``upstreams`` (session): HTTP, TLS (test CA) and WebSocket echo servers on loopback, each behind a
  counting relay (``tests/support/upstreams.py``).
- ``systemd``: a datagram socket in place of systemd's ``NOTIFY_SOCKET``, and its path.
- ``e2e_catalogue`` (session): a small catalogue directory with the designated test names.
- ``start_proxy`` (function) / ``start_proxy_module`` (module): factories that run
  ``.venv/bin/mitmdump`` with the egresswatch entry script and the test addons, wait until it
  listens and return a :class:`RunningProxy`. Teardown stops every proxy and fails the test if
  mitmdump logged a traceback or an "Addon error".

Every upstream connection mitmdump opens is sent to a loopback upstream by
``tests/support/route_loopback.py`` (or refused), so no test traffic leaves 127.0.0.0/8.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from signal import SIGHUP
from signal import SIGINT
from typing import Any

import pytest

from tests.plugins.store import stored_events
from tests.support.upstreams import UpstreamPKI
from tests.support.upstreams import Upstreams
from tests.support.upstreams import make_test_pki

REPO = Path(__file__).resolve().parents[2]
MITMDUMP = Path(sys.executable).with_name("mitmdump")
#: The operator's entry script; ``EGRESSWATCH_E2E_ENTRY`` points the harness at another one.
ENTRY_SCRIPT = Path(
    os.environ.get("EGRESSWATCH_E2E_ENTRY", REPO / "deploy" / "mitmproxy" / "egresswatch.py")
)
SUPPORT = REPO / "tests" / "support"
METRICS_LINE = re.compile(r"egresswatch: metrics listening at (http://\S+/metrics)")
#: Log text that fails a test at teardown unless the test allowed it.
BAD_LOG = re.compile(r"Traceback \(most recent call last\)|Addon error")


class ProxyStartError(RuntimeError):
    """mitmdump exited (or never became ready) while starting; ``log`` holds its output."""

    def __init__(self, message: str, returncode: int | None, log: str) -> None:
        super().__init__(
            f"{message} (returncode={returncode})\n--- mitmdump log ---\n{log[-4000:]}"
        )
        self.returncode = returncode
        self.log = log


@dataclass
class RunningProxy:
    """A running mitmdump subprocess. ``ports`` maps mode type (``regular``, ``socks5``, ``dns``…)
    to its listening port; ``proxy_url`` is the regular mode's ``http://127.0.0.1:PORT``."""

    proc: subprocess.Popen[bytes]
    proxy_url: str | None
    ports: dict[str, int]
    metrics_url: str | None
    data_dir: Path
    store_url: str
    log_path: Path
    confdir: Path
    allowed_errors: tuple[str, ...] = ()
    _returncode: int | None = field(default=None, repr=False)

    # -- process ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def mitmproxy_ca(self) -> Path:
        """mitmproxy's CA certificate (PEM) in this proxy's confdir, for decrypting tests."""
        return self.confdir / "mitmproxy-ca-cert.pem"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 30) -> int:
        """Wait for the process to exit by itself; return its exit code."""
        self._returncode = self.proc.wait(timeout=timeout)
        return self._returncode

    def stop(self, signal: int = SIGINT, timeout: float = 20) -> int:
        """Send ``signal`` (default SIGINT: a graceful shutdown) and wait; SIGKILL after
        ``timeout`` (then re-raises ``subprocess.TimeoutExpired``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        self._returncode = self.proc.returncode
        return self._returncode

    def open_fds(self) -> int:
        """Open file descriptors of mitmdump right now (``/proc/PID/fd``)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        """Resident set size of mitmdump in KiB (``VmRSS``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    # -- log -------------------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_for_log(self, pattern: str, timeout: float = 10, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (regex) appears in the log after byte offset ``start``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_bytes()[start:].decode(errors="replace")
            if m := rx.search(text):
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not logged within {timeout}s; log since offset:\n{text[-4000:]}"
                )
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mitmdump exited ({self.proc.returncode}); log:\n{text[-4000:]}"
                )
            time.sleep(0.05)

    def reload(self, timeout: float = 15) -> str:
        """Run the ``egresswatch.reload`` command (via SIGHUP and ``tests/support/sighup_reload``);
        return the log lines it produced (ends with an accepted or rejected reload line)."""
        start = self.log_size()
        self.proc.send_signal(SIGHUP)
        self.wait_for_log(
            r"egresswatch: (catalogue|policy) reload(ed| rejected)|sighup_reload: .* failed",
            timeout,
            start,
        )
        time.sleep(0.2)  # let the rest of the reload's lines land
        return self.log_path.read_bytes()[start:].decode(errors="replace")

    def check_log(self) -> None:
        """Fail if the log holds a traceback or an "Addon error" not matched by ``allowed_errors``."""
        text = self.log()
        for m in BAD_LOG.finditer(text):
            # From two lines before the match (asyncio names the failing callback there).
            line_start = max(text.rfind("\n", 0, m.start()), 0)
            for _ in range(2):
                line_start = max(text.rfind("\n", 0, line_start), 0)
            excerpt = text[line_start : m.start() + 2000]
            if not any(re.search(p, excerpt) for p in self.allowed_errors):
                pytest.fail(f"mitmdump logged an error:\n{excerpt}", pytrace=False)

    # -- observations ----------------------------------------------------------------------------
    def metrics_text(self, timeout: float = 5) -> str:
        assert self.metrics_url, "no metrics endpoint (egresswatch_metrics_listen not set?)"
        with urllib.request.urlopen(self.metrics_url, timeout=timeout) as r:  # noqa: S310 - loopback
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample's value from the metrics page (``None`` when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of every sample of ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += float(s.value)
        return total

    def events(self) -> list[Any]:
        """Every row of the event store (call after :meth:`stop`, which flushes the writer)."""
        return stored_events(self.store_url)


StartProxy = Callable[..., RunningProxy]


def free_port() -> int:
    """A loopback port free for both TCP and UDP right now (for a second proxy mode)."""
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class ProxyFactory:
    """Builds mitmdump command lines, starts them and remembers them for teardown."""

    def __init__(self, base: Path, upstreams: Upstreams, pki: UpstreamPKI) -> None:
        self.base = base
        self.upstreams = upstreams
        self.pki = pki
        self.started: list[RunningProxy] = []

    def __call__(
        self,
        modes: Sequence[str] = ("regular",),
        options: Mapping[str, str | Sequence[str]] | None = None,
        policy: str | None = None,
        lists: Sequence[Path] = (),
        extra_args: Sequence[str] = (),
        *,
        with_addon: bool = True,
        wait_ready: bool = True,
        allowed_errors: Sequence[str] = (),
        routes: Mapping[str, Sequence[object]] | None = None,
        exec_prefix: Sequence[str] = (),
        timeout: float = 40,
    ) -> RunningProxy:
        run = self.base / f"proxy-{uuid.uuid4().hex[:8]}"
        confdir, data_dir = run / "conf", run / "data"
        confdir.mkdir(parents=True)
        data_dir.mkdir()
        portfile = run / "ports.json"
        log_path = run / "mitmdump.log"
        store_url = f"sqlite:///{data_dir / 'events.db'}"
        if isinstance(custom_store := (options or {}).get("egresswatch_store"), str):
            store_url = custom_store

        args: list[str] = [str(MITMDUMP), "--listen-host", "127.0.0.1"]
        for i, mode in enumerate(modes):
            # mitmproxy refuses two modes on 127.0.0.1:0; later modes get a port free now.
            args += ["--mode", mode if "@" in mode else f"{mode}@{0 if i == 0 else free_port()}"]
        sets: list[tuple[str, str]] = [
            ("confdir", str(confdir)),
            ("flow_detail", "0"),
            ("termlog_verbosity", "info"),
            ("ssl_verify_upstream_trusted_ca", str(self.pki.ca_cert)),
            ("portfile", str(portfile)),
            ("route_loopback", json.dumps(routes or self.upstreams.route_map())),
        ]
        if with_addon:
            args += ["-s", str(ENTRY_SCRIPT)]
            sets += [
                ("egresswatch_store", store_url),
                ("egresswatch_data_dir", str(data_dir)),
                ("egresswatch_metrics_listen", "127.0.0.1:0"),
            ]
            for d in lists:
                sets.append(("egresswatch_lists", str(d)))
            if policy is not None:
                policy_path = run / "policy.yaml"
                policy_path.write_text(policy)
                sets.append(("egresswatch_policy", str(policy_path)))
        for name in ("route_loopback.py", "portfile.py", "sighup_reload.py"):
            args += ["-s", str(SUPPORT / name)]
        for k, v in (options or {}).items():
            if isinstance(v, str):
                # A test's value replaces the harness default: mitmproxy silently ignores every
                # --set of an option that is given twice.
                sets = [(name, value) for name, value in sets if name != k]
                sets.append((k, v))
            else:
                sets += [(k, item) for item in v]
        for k, v in sets:
            args += ["--set", f"{k}={v}"]
        args += list(extra_args)
        # e.g. ``ip netns exec NS``: run mitmdump inside a test's network namespace.
        args = [*exec_prefix, *args]

        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["PYTHONUNBUFFERED"] = "1"
        env["HOME"] = str(run)  # nothing may touch the real ~/.mitmproxy
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=run,
            )
        proxy = RunningProxy(
            proc=proc,
            proxy_url=None,
            ports={},
            metrics_url=None,
            data_dir=data_dir,
            store_url=store_url,
            log_path=log_path,
            confdir=confdir,
            allowed_errors=tuple(allowed_errors),
        )
        self.started.append(proxy)
        if wait_ready:
            self._wait_ready(proxy, portfile, with_addon, timeout)
        return proxy

    @staticmethod
    def _wait_ready(proxy: RunningProxy, portfile: Path, with_addon: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not portfile.exists() or (with_addon and proxy.metrics_url is None):
            if proxy.proc.poll() is not None:
                raise ProxyStartError(
                    "mitmdump exited during start-up", proxy.proc.returncode, proxy.log()
                )
            if time.monotonic() > deadline:
                raise ProxyStartError("mitmdump not ready in time", proxy.proc.poll(), proxy.log())
            if with_addon and proxy.metrics_url is None and (m := METRICS_LINE.search(proxy.log())):
                proxy.metrics_url = m.group(1)
            time.sleep(0.05)
        info = json.loads(portfile.read_text())
        for server in info["servers"]:
            kind = re.split(r"[:@]", server["mode"], maxsplit=1)[0]
            key = kind if kind not in proxy.ports else server["mode"]
            proxy.ports[key] = int(server["addrs"][0][1])
        if "regular" in proxy.ports:
            proxy.proxy_url = f"http://127.0.0.1:{proxy.ports['regular']}"
        # mitmproxy's ErrorCheck exits just after running() when an error was logged at start-up.
        time.sleep(0.1)
        if proxy.proc.poll() is not None:
            raise ProxyStartError(
                "mitmdump exited after start-up", proxy.proc.returncode, proxy.log()
            )

    def teardown(self) -> None:
        failures: list[str] = []
        for p in self.started:
            try:
                p.stop(timeout=15)
            except subprocess.TimeoutExpired:
                failures.append(f"mitmdump {p.pid} ignored SIGINT for 15 s (killed)")
        self.started.clear()
        if failures:
            pytest.fail("; ".join(failures), pytrace=False)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``, and its path."""
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(20)
    yield s, path
    s.close()


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    """A test CA and a leaf certificate for the designated test names (``TEST_NAMES``)."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def upstreams(test_pki: UpstreamPKI) -> Iterator[Upstreams]:
    ups = Upstreams(test_pki).start()
    yield ups
    ups.stop()


def _factory(base: Path, upstreams: Upstreams, pki: UpstreamPKI) -> Iterator[ProxyFactory]:
    factory = ProxyFactory(base, upstreams, pki)
    started = factory.started
    yield factory
    proxies = list(started)
    factory.teardown()
    for p in proxies:
        p.check_log()


@pytest.fixture
def start_proxy(
    tmp_path: Path, upstreams: Upstreams, test_pki: UpstreamPKI
) -> Iterator[ProxyFactory]:
    """Factory: ``start_proxy(modes=("regular",), options={}, policy=None, lists=(), extra_args=())``."""
    yield from _factory(tmp_path, upstreams, test_pki)


@pytest.fixture(scope="module")
def start_proxy_module(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams, test_pki: UpstreamPKI
) -> Iterator[ProxyFactory]:
    """Like ``start_proxy``, but proxies live until the end of the test module."""
    yield from _factory(tmp_path_factory.mktemp("proxies"), upstreams, test_pki)


# -- the test catalogue --------------------------------------------------------------------------
E2E_REGIMES = """\
regimes:
  - id: test-order
    title: Test order designating the end-to-end test apps
    jurisdiction: Test
    signed: 2021-01-05
    effective: 2021-01-05
    citation: none (test data)
    apps: [tiktok, deepseek, wechat-pay, example-app]
"""


def _app(app_id: str, name: str, domains: Sequence[tuple[str, str]], extra: str = "") -> str:
    lines = [
        f"id: {app_id}",
        f"name: {name}",
        "vendor: Test vendor",
        "category: other",
        "regimes: [test-order]",
        "description: End-to-end test app.",
        "domains:",
    ]
    for domain, match in domains:
        lines += [
            f"  - domain: {domain}",
            f"    match: {match}",
            "    source: tests/plugins/proxy.py",
            "    confidence: high",
        ]
    return "\n".join(lines) + "\n" + extra


E2E_APPS = {
    "tiktok": _app("tiktok", "TikTok", [("tiktok.com", "suffix")]),
    "deepseek": _app("deepseek", "DeepSeek", [("deepseek.com", "suffix")]),
    "wechat-pay": _app("wechat-pay", "WeChat Pay", [("pay.weixin.qq.com", "exact")]),
    "example-app": _app(
        "example-app",
        "Example",
        [("example.test", "suffix"), ("xn--bcher-kva.test", "suffix")],
        "cidrs:\n  - cidr: 198.51.100.0/24\n    source: tests/plugins/proxy.py\n    confidence: high\n",
    ),
}


def write_catalogue(directory: Path, apps: Mapping[str, str] = E2E_APPS) -> Path:
    """Write ``regimes.yaml`` and one file per app into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "regimes.yaml").write_text(E2E_REGIMES)
    for app_id, text in apps.items():
        (directory / f"{app_id}.yaml").write_text(text)
    return directory


@pytest.fixture(scope="session")
def e2e_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue directory: tiktok (tiktok.com), deepseek (deepseek.com), wechat-pay
    (pay.weixin.qq.com exact) and example-app (example.test, bücher.test, 198.51.100.0/24).
    Use it with ``egresswatch_bundled=false`` so the bundled catalogue cannot change the tests."""
    return write_catalogue(tmp_path_factory.mktemp("catalogue"))
