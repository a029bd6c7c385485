"""Workers benchmark: ``egresswatch run --workers 1`` against ``--workers 2`` on this machine.

    .venv/bin/python bench/workers.py            # 4 interleaved rounds x 5 s (~3 minutes)
    .venv/bin/python bench/workers.py --quick    # 2 rounds x 2 s

Both configurations are the real command (the supervisor, workers sharing the port with
``SO_REUSEPORT``), with the bundled catalogue, monitor mode, a SQLite event store shared by the
workers (WAL) and metrics on; upstream connections go to loopback servers through
``tests/support/route_loopback.py`` (the load generator, the routing and the scenarios are
``bench/proxy.py``'s). Scenarios: ``http-hit`` (keep-alive HTTP/1.1 requests to a designated
name, an event per request; each client is one connection, so the kernel spreads clients over
the workers) and ``connect-hit`` (one CONNECT + TLS handshake passed through + one request per
connection, an event per connection).

Pinning on a 2-core machine: with one worker, the worker runs on CPU 0 and the load generator
and upstreams on CPU 1 (as ``bench/proxy.py``); with two workers, worker *i* runs on CPU *i*
and the load generator and upstreams float over both, taking CPU from the workers. So the
2-worker figure is a lower bound of what two cores give two workers; the CPU per operation
(the workers' user+system time over the operations, read from ``/proc``) shows the cost per
operation does not grow with workers. Rounds alternate the order of the two configurations and
restart them; the report gives the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as bp  # noqa: E402  (bench/proxy.py; it puts the repository on sys.path)

from tests.plugins.proxy import free_port  # noqa: E402

EGRESSWATCH = Path(sys.executable).with_name("egresswatch")
SCENARIOS = ("http-hit", "connect-hit")


@dataclass
class Fleet:
    """``egresswatch run --workers N``: the supervisor and its worker processes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    workers: list[int]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.workers:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / bp.CLK_TCK
        return total


def start(n: int, tmp: Path, routes: dict[str, list[object]], ca: str, run: int) -> Fleet:
    d = tmp / f"w{n}-{run}"
    d.mkdir(parents=True)
    port = free_port()
    log = d / "run.log"
    cmd = [
        str(EGRESSWATCH), "run", "--workers", str(n), "--listen-port", str(port),
        "--metrics-listen", "127.0.0.1:0", "--data-dir", str(d / "data"),
        "--confdir", str(d / "conf"), "--instance", f"bench{n}", "--",
        "-s", str(bp.SUPPORT / "route_loopback.py"),
        "--set", f"route_loopback={json.dumps(routes)}",
        "--set", f"ssl_verify_upstream_trusted_ca={ca}",
        "--set", "egresswatch_reload_interval=0",
        "--set", "flow_detail=0", "--set", "termlog_verbosity=info",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(d)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=d)
    deadline = time.monotonic() + 120
    while len(re.findall(r"egresswatch: running", log.read_text(errors="replace"))) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"--workers {n} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pids = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    cpus = sorted(os.sched_getaffinity(0))
    for i, pid in enumerate(pids):  # each worker (and its threads, from now on) on its own CPU
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), {cpus[i % len(cpus)]})
    return Fleet(f"workers={n}", proc, port, log, pids)


def stop(f: Fleet) -> None:
    if f.proc.poll() is None:
        f.proc.send_signal(signal.SIGTERM)
        f.proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds x 2 s")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--clients", type=int, default=16, help="concurrent client connections")
    a = ap.parse_args()
    rounds = a.rounds or (2 if a.quick else 4)
    seconds = a.seconds or (2.0 if a.quick else 5.0)
    ops: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    all_cpus = set(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as t:
        tmp = Path(t)
        ups, info = bp.start_upstreams(tmp)
        try:
            routes, ca = bp.upstream_routes(info)
            ctx = ssl.create_default_context(cafile=ca)
            for r in range(rounds):
                for n in (1, 2) if r % 2 == 0 else (2, 1):
                    # One worker: the load generator and upstreams off CPU 0. Two: everywhere.
                    load_cpus = (
                        all_cpus - {min(all_cpus)} if n == 1 and len(all_cpus) > 1 else all_cpus
                    )
                    os.sched_setaffinity(0, load_cpus)
                    os.sched_setaffinity(ups.pid, load_cpus)
                    fleet = start(n, tmp, routes, ca, r)
                    try:
                        for scenario in SCENARIOS:
                            bp.run_load(fleet, scenario, 0.5, a.clients, ctx)  # type: ignore[arg-type]
                            o, c = bp.run_load(fleet, scenario, seconds, a.clients, ctx)  # type: ignore[arg-type]
                            ops.setdefault((scenario, n), []).append(o)
                            cpu.setdefault((scenario, n), []).append(c)
                            print(f"round {r + 1}/{rounds} {scenario} workers={n}: {o:,.0f}/s, "
                                  f"{c:.2f} ms CPU/op", file=sys.stderr)  # fmt: skip
                    finally:
                        stop(fleet)
        finally:
            assert ups.stdin is not None
            ups.stdin.close()
            ups.wait(timeout=10)
    print(f"Command: `.venv/bin/python bench/workers.py{' --quick' if a.quick else ''}`; "
          f"{rounds} rounds x {seconds:g} s, {a.clients} client connections, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print()
    print("| scenario | workers | ops/s (median) | ratio to 1 worker | worker CPU ms per op |")
    print("|---|---|---|---|---|")
    for scenario in SCENARIOS:
        one = statistics.median(ops[(scenario, 1)])
        for n in (1, 2):
            med = statistics.median(ops[(scenario, n)])
            print(f"| {scenario} | {n} | {med:,.0f} | {med / one:.2f} | "
                  f"{statistics.median(cpu[(scenario, n)]):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
