"""pytest fixtures: a real Prometheus server (Debian ``prometheus``) on loopback.

``start_prometheus(targets, rules=...)`` writes a config that scrapes ``targets`` as
``job="egresswatch"`` every second, evaluates the given rule files every second, and starts
``/usr/bin/prometheus`` on a free loopback port with storage in ``tmp_path``. The returned
:class:`RunningPrometheus` has ``query()``, ``alerts()`` and ``wait_until()``; teardown stops it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import TypeVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "egresswatch.rules.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningPrometheus:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        qs = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{qs}", timeout=5) as r:  # noqa: S310
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: a list of ``{"metric": {...}, "value": [ts, "v"]}``."""
        result: list[dict[str, Any]] = self.api("/api/v1/query", query=expr)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("/api/v1/alerts")["alerts"]
        return result

    def wait_until(self, fn: Callable[[], T | None], timeout: float = 30, what: str = "") -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what or fn}; log:\n{self.log()[-3000:]}"
                )
            time.sleep(0.25)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., RunningPrometheus]]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("Debian package prometheus (/usr/bin/prometheus) is not installed")
    started: list[RunningPrometheus] = []

    def start(targets: Sequence[str], rules: Sequence[Path] = (RULES,)) -> RunningPrometheus:
        run = tmp_path / f"prometheus-{len(started)}"
        (run / "rules").mkdir(parents=True)
        rule_files = []
        for i, src in enumerate(rules):
            dst = run / "rules" / f"{i}-{src.name}"
            shutil.copy(src, dst)
            rule_files.append(str(dst))
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            "rule_files": rule_files,
            "scrape_configs": [
                {"job_name": "egresswatch", "static_configs": [{"targets": list(targets)}]}
            ],
        }
        (run / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        log_path = run / "prometheus.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={run / 'prometheus.yml'}",
                    f"--storage.tsdb.path={run / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-lifecycle",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=run,
            )
        prom = RunningPrometheus(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)
        started.append(prom)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{prom.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as r:  # noqa: S310
                    return bool(r.status == 200)
            except OSError:
                return False

        prom.wait_until(ready, timeout=30, what="prometheus /-/ready")
        return prom

    yield start
    for prom in started:
        prom.stop()
