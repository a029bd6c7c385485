"""Workers benchmark: ``egresswatch run --workers 1`` against ``--workers 2`` on this machine.

    .venv/bin/python bench/workers.py            # 4 interleaved rounds x 5 s (~3 minutes)
    .venv/bin/python bench/workers.py --quick    # 2 rounds x 2 s (~1 minute)

Both configurations are the real command (the supervisor, workers sharing the port with
``SO_REUSEPORT``), with the bundled catalogue, monitor mode, a SQLite event store shared by the
workers (WAL) and metrics on. The load is ``bench/load.py``'s: asyncio clients in ``--load-procs``
processes and one upstream process, reached through ``tests/support/route_loopback.py``, with no
cryptography at either end (a CONNECT replays the bytes of a real TLS 1.3 session; the proxy
does what it does for a real one). Scenarios, every operation a hit that writes an event:

- ``http-hit``: keep-alive HTTP/1.1 requests, one connection per client (the kernel spreads the
  clients' connections over the workers);
- ``connect-hit``: a new connection each time: CONNECT, the replayed session, the proxy closes.

Pinning (default; ``--no-pin`` leaves every process free): with one worker, the worker runs on
CPU 0 and the load on the other CPUs; with two workers, worker *i* runs on CPU *i* and the load
floats over all of them. On a 2-core machine the load then takes CPU from the workers, so the
two-worker figure is a lower bound. For each run the report gives, from ``/proc``, the CPU
seconds the workers and the load used per operation and how many cores each kept busy, and what
the rest of the machine (other sessions, the kernel) used meanwhile, so the reader sees who
saturated. Rounds alternate the order of the two configurations and start them afresh; the
report gives medians over rounds, and the median of each round's 2-to-1 ratio.

After every configuration stops, its store is checked: every operation the clients completed
(warm-ups included) has its hit event, and every worker's hash chain verifies.

``--tls-check`` measures instead what the replay changes for the proxy: one egresswatch mitmdump
on CPU 0 driven by ``bench/proxy.py``'s clients (threads, a real TLS handshake per CONNECT,
against the real TLS upstream), another driven by the replay, alternately; it prints each
proxy's CPU per CONNECT hit and each load generator's CPU per CONNECT (threads and upstreams).
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
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load as bl  # noqa: E402  (bench/load.py; it puts the repository on sys.path)
import proxy as bp  # noqa: E402  (bench/proxy.py: the real-TLS load of --tls-check)
from egresswatch.events import EventKind  # noqa: E402
from egresswatch.store import open_store  # noqa: E402

EGRESSWATCH = Path(sys.executable).with_name("egresswatch")
SCENARIOS = ("http-hit", "connect-hit")


@dataclass
class Fleet:
    """``egresswatch run --workers N``: the supervisor and its worker processes."""

    n: int
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    data: Path
    workers: list[int]
    ops: int = 0  # every operation clients completed against it, warm-ups included


@dataclass
class Check:
    """What one configuration's store held after it stopped."""

    ops: int
    hits: int
    per_worker: dict[str, int]
    verified: bool


@dataclass
class Results:
    samples: dict[tuple[str, int], list[bl.Sample]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)


def start(n: int, tmp: Path, routes: dict[str, list[object]], run: int, pin: bool) -> Fleet:
    d = tmp / f"w{n}-{run}"
    d.mkdir(parents=True)
    port = bl.free_port()
    log = d / "run.log"
    cmd = [
        str(EGRESSWATCH), "run", "--workers", str(n), "--listen-port", str(port),
        "--metrics-listen", "127.0.0.1:0", "--data-dir", str(d / "data"),
        "--confdir", str(d / "conf"), "--instance", f"bench{n}", "--",
        "-s", str(bl.REPO / "tests" / "support" / "route_loopback.py"),
        "--set", f"route_loopback={json.dumps(routes)}",
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
    if pin:
        cpus = sorted(os.sched_getaffinity(0))
        for i, pid in enumerate(pids):  # each worker (and its threads) on its own CPU
            bl.pin(pid, {cpus[i % len(cpus)]})
    return Fleet(n, proc, port, log, d / "data", pids)


def stop_and_check(f: Fleet) -> Check:
    """Stop the fleet (the workers drain) and check its store against the operations."""
    if f.proc.poll() is None:
        f.proc.send_signal(signal.SIGTERM)
        f.proc.wait(timeout=60)
    text = f.log.read_text(errors="replace")
    if "Traceback" in text or "Addon error" in text:
        print(f"warning: --workers {f.n} logged an error:\n{text[-2000:]}", file=sys.stderr)
    store = open_store(f"sqlite:///{f.data / 'events.db'}", create=False)
    try:
        per_worker: dict[str, int] = {}
        for e in store.iter_events(0.0, time.time() + 3600):
            if e.kind == EventKind.HIT:
                per_worker[e.instance] = per_worker.get(e.instance, 0) + 1
        verified = store.verify(full=True, record=False).ok
    finally:
        store.close()
    return Check(f.ops, sum(per_worker.values()), per_worker, verified)


def measure(a: argparse.Namespace) -> Results:
    rounds = a.rounds or (2 if a.quick else 4)
    seconds = a.seconds or (2.0 if a.quick else 5.0)
    res = Results()
    all_cpus = set(os.sched_getaffinity(0))
    pin = not a.no_pin and len(all_cpus) > 1
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as t:
        tmp = Path(t)
        load = bl.Load(tmp, procs=a.load_procs)
        try:
            for r in range(rounds):
                got: dict[tuple[str, int], float] = {}
                for n in (1, 2) if r % 2 == 0 else (2, 1):
                    if pin:  # one worker: the load off CPU 0; two: the load everywhere
                        load.pin(all_cpus - {min(all_cpus)} if n == 1 else all_cpus)
                    fleet = start(n, tmp, load.routes(), r, pin)
                    try:
                        for scenario in SCENARIOS:
                            warm = load.run(fleet.port, scenario, 0.5, a.clients, fleet.workers)
                            s = load.run(fleet.port, scenario, seconds, a.clients, fleet.workers)
                            fleet.ops += warm.total + s.total
                            res.samples.setdefault((scenario, n), []).append(s)
                            got[(scenario, n)] = s.rate
                            print(
                                f"round {r + 1}/{rounds} {scenario} workers={n}: {s.rate:,.0f}/s, "
                                f"workers {s.proxy_cpu / s.seconds:.2f} cores, load "
                                f"{s.load_cpu / s.seconds:.2f}, rest of the machine "
                                f"{(s.busy - s.proxy_cpu - s.load_cpu) / s.seconds:.2f}",
                                file=sys.stderr,
                            )
                    finally:
                        res.checks.append(check := stop_and_check(fleet))
                    print(f"  stored {check.hits:,} hits for {check.ops:,} operations "
                          f"{check.per_worker}, chains verify: {check.verified}",
                          file=sys.stderr)  # fmt: skip
                for scenario in SCENARIOS:
                    res.ratios.setdefault(scenario, []).append(
                        got[(scenario, 2)] / got[(scenario, 1)]
                    )
            up = load.upstream_stats()
        finally:
            load.close()
    if up.mismatches:
        raise RuntimeError(f"{up.mismatches} replayed sessions arrived altered at the upstream")
    return res


def table(res: Results) -> list[str]:
    lines = [
        "| scenario | workers | ops/s (median) | 2 / 1 (median of rounds) | workers' CPU ms/op "
        "| workers' cores busy | load CPU ms/op | load's cores | rest of the machine, cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        for n in (1, 2):
            ss = res.samples[(scenario, n)]

            def med(f: Callable[[bl.Sample], float], ss: list[bl.Sample] = ss) -> float:
                return statistics.median(f(s) for s in ss)

            ratio = statistics.median(res.ratios[scenario]) if n == 2 else 1.0
            lines.append(
                f"| {scenario} | {n} | {med(lambda s: s.rate):,.0f} | {ratio:.2f} "
                f"| {med(lambda s: s.proxy_cpu * 1000 / s.ops):.2f} "
                f"| {med(lambda s: s.proxy_cpu / s.seconds):.2f} "
                f"| {med(lambda s: s.load_cpu * 1000 / s.ops):.2f} "
                f"| {med(lambda s: s.load_cpu / s.seconds):.2f} "
                f"| {med(lambda s: (s.busy - s.proxy_cpu - s.load_cpu) / s.seconds):.2f} |"
            )
    return lines


def ceilings(res: Results, cpus: int) -> list[str]:
    """What the CPU per operation allows on a machine left to the benchmark: one worker is bound
    by its core, two workers and the load share every CPU. One worker's cost per operation, the
    lower of the two configurations' (contention from other processes only raises it), for
    both: the conservative ratio."""
    out = []
    for scenario in SCENARIOS:
        p = min(
            statistics.median(s.proxy_cpu / s.ops for s in res.samples[(scenario, n)])
            for n in (1, 2)
        )
        load = statistics.median(s.load_cpu / s.ops for s in res.samples[(scenario, 2)])
        one, two = 1 / p, cpus / (p + load)
        out.append(
            f"- {scenario}: one worker ≤ 1 / {p * 1000:.2f} ms = {one:,.0f}/s; two workers and "
            f"the load on {cpus} CPUs ≤ {cpus} / ({p * 1000:.2f} + {load * 1000:.2f}) ms = "
            f"{two:,.0f}/s: **{two / one:.2f}x** at most"
        )
    return out


def tls_check(a: argparse.Namespace) -> int:
    """The proxy's CPU per CONNECT hit under real TLS clients and under the replay."""
    rounds, seconds = a.rounds or (2 if a.quick else 4), a.seconds or (2.0 if a.quick else 5.0)
    cpus = sorted(os.sched_getaffinity(0))
    proxy_cpus, load_cpus = ({cpus[0]}, set(cpus[1:])) if len(cpus) > 1 else (None, set(cpus))
    per_op: dict[str, list[float]] = {"real": [], "replay": []}
    load_op: dict[str, list[float]] = {"real": [], "replay": []}
    with tempfile.TemporaryDirectory(prefix="bench-tls-check-") as t:
        tmp = Path(t)
        os.sched_setaffinity(0, load_cpus)  # the real-TLS client threads run in this process
        ups, info = bp.start_upstreams(tmp)
        load = bl.Load(tmp, procs=a.load_procs)
        load.pin(load_cpus)
        procs: list[bp.Proxy] = []
        try:
            routes, ca = bp.upstream_routes(info)
            ctx = ssl.create_default_context(cafile=ca)
            addon = ["-s", str(bp.ENTRY), "--set", "egresswatch_metrics_listen=127.0.0.1:0"]
            for name, r in (("real", routes), ("replay", load.routes())):
                (tmp / name).mkdir()
                extra = [*addon, "--set", f"egresswatch_data_dir={tmp / name}",
                         "--set", f"egresswatch_store=sqlite:///{tmp / name / 'events.db'}"]  # fmt: skip
                procs.append(bp.start_proxy(name, tmp, r, ca, extra, proxy_cpus))
            real, replay = procs
            bp.run_load(real, "connect-hit", 0.5, a.clients, ctx)
            load.run(replay.port, "connect-hit", 0.5, a.clients, [replay.proc.pid])
            for r in range(rounds):
                for name in ("real", "replay") if r % 2 == 0 else ("replay", "real"):
                    if name == "real":
                        l0 = bl.cpu_seconds(os.getpid()) + bl.cpu_seconds(ups.pid)
                        rate, ms = bp.run_load(real, "connect-hit", seconds, a.clients, ctx)
                        lcpu = bl.cpu_seconds(os.getpid()) + bl.cpu_seconds(ups.pid) - l0
                        lms = lcpu * 1000 / (rate * seconds)
                    else:
                        s = load.run(replay.port, "connect-hit", seconds, a.clients,
                                     [replay.proc.pid])  # fmt: skip
                        rate, ms = s.rate, s.proxy_cpu * 1000 / s.ops
                        lms = s.load_cpu * 1000 / s.ops
                    per_op[name].append(ms)
                    load_op[name].append(lms)
                    print(f"round {r + 1}/{rounds} {name}: {rate:,.0f}/s, proxy {ms:.2f} ms CPU/op, "
                          f"load {lms:.2f} ms CPU/op", file=sys.stderr)  # fmt: skip
        finally:
            for p in procs:
                bp.stop(p)
            load.close()
            assert ups.stdin is not None
            ups.stdin.close()
            ups.wait(timeout=10)
    real_ms, replay_ms = statistics.median(per_op["real"]), statistics.median(per_op["replay"])
    print(f"Command: `.venv/bin/python bench/workers.py --tls-check{' --quick' if a.quick else ''}`"
          f"; {rounds} rounds x {seconds:g} s, {a.clients} clients, load average "
          f"{os.getloadavg()[0]:.1f} at the end.\n")  # fmt: skip
    print(
        "| CONNECT hit driven by | proxy CPU ms/op (median) | load generator + upstream CPU ms/op |"
    )
    print("|---|---|---|")
    for name, label in (
        ("real", "threads, real TLS handshake"),
        ("replay", "bench/load.py replay"),
    ):
        print(f"| {label} | {statistics.median(per_op[name]):.2f} "
              f"| {statistics.median(load_op[name]):.2f} |")  # fmt: skip
    print(f"\nreplay / real, proxy CPU per CONNECT: {replay_ms / real_ms:.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds x 2 s")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--clients", type=int, default=16, help="concurrent client connections")
    ap.add_argument("--load-procs", type=int, default=2, help="client processes (default 2)")
    ap.add_argument("--no-pin", action="store_true", help="pin neither workers nor the load")
    ap.add_argument("--tls-check", action="store_true", help="the proxy's CPU per CONNECT: real "
                    "TLS clients against the replay (one mitmdump each)")  # fmt: skip
    a = ap.parse_args()
    if a.tls_check:
        return tls_check(a)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    res = measure(a)
    rounds = len(res.ratios[SCENARIOS[0]])
    seconds = res.samples[(SCENARIOS[0], 1)][0].seconds
    cpus = len(os.sched_getaffinity(0))
    args = " ".join(sys.argv[1:])
    print(f"Command: `.venv/bin/python bench/workers.py{' ' + args if args else ''}`; "
          f"{rounds} rounds x {seconds:g} s, {a.clients} client connections over "
          f"{a.load_procs} load processes, {cpus} CPUs"
          f"{', pinned' if not a.no_pin and cpus > 1 else ', unpinned'}; "
          f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
          f"{time.monotonic() - t0:.0f} s in all.")  # fmt: skip
    print()
    print("\n".join(table(res)))
    print()
    print("What the CPU per operation allows on a machine left to the benchmark (worker CPU per "
          "operation: the lower of the two rows):")  # fmt: skip
    print("\n".join(ceilings(res, cpus)))
    ops = sum(c.ops for c in res.checks)
    hits = sum(c.hits for c in res.checks)
    ok = ops == hits and all(c.verified for c in res.checks)
    print(f"\nStore check: {hits:,} hit events stored for {ops:,} operations completed "
          f"({len(res.checks)} configurations started), every chain verifies: "
          f"{all(c.verified for c in res.checks)}.")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
