"""Instructions mitmdump executes per operation: plain vs hook vs egresswatch vs ``block_list``.

    .venv/bin/python bench/proxy_instructions.py           # full run (about 13 minutes)
    .venv/bin/python bench/proxy_instructions.py --quick   # 60 ops, 100k domains, one repetition

A noise-free complement to ``bench/proxy.py``: instead of throughput on a shared machine, count
the instructions mitmdump executes (valgrind's callgrind, ``Ir``) for exactly ``--ops``
operations from ONE sequential client. The count does not depend on what else the machine does.

Each configuration (``plain``, ``hook``, ``addon`` with the synthetic 1M-domain list,
``block_list``: the definitions of ``bench/proxy.build_configs``) runs as
``valgrind --tool=callgrind --instr-atstart=no mitmdump …``, so start-up and the catalogue load
run uninstrumented. The scenarios of ``bench/proxy.py`` (``-hit`` only for ``plain`` and
``addon``) are warmed up with ``--warmup`` operations each, then measured one by one:
``callgrind_control --instr=on``, the operations, a settle wait, ``--instr=off``, and a dump
(``callgrind_control --dump``, which also zeroes the counters) whose ``totals:`` line is the
scenario's ``Ir``. Everything the process runs in that window counts: the event loop, the
egresswatch writer thread, the metrics server thread, timers.

Settle wait, the same for every configuration: ``--settle`` seconds (default 2.0: the event
writer flushes every ``egresswatch_flush_ms`` = 1,000 ms) and, for the addon's ``-hit``
scenarios, until the SQLite event store (read from this process, which costs mitmdump nothing)
holds a row for every hit sent so far; the same check runs before instrumentation is turned on,
so warm-up writes are never counted.

Background work (asyncio timers, the addon's 2 s reload poll and 60 s heartbeat, the writer's
idle wake-ups) costs instructions per second, not per operation; under valgrind the
wall-clock time per operation is 50-100x longer, so it weighs far more than on a real proxy. So
each process also measures an idle window (``--idle`` seconds, instrumentation on, no traffic);
the table reports per-operation figures with that idle rate × the window's length subtracted
(the raw figures are printed too).

Every measurement runs ``--reps`` times (default 2), each time in fresh processes, and prints
every repetition so the stability of the counts can be seen.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxy as bp  # noqa: E402  (bench/proxy.py; it puts the repository on sys.path)
from _callgrind import VALGRIND  # noqa: E402
from _callgrind import control  # noqa: E402
from _callgrind import dump_total  # noqa: E402

CONFIGS = ("plain", "hook", "addon", "block_list")
SCENARIOS = {
    "http-miss": ["plain", "hook", "addon", "block_list"],
    "http-hit": ["plain", "addon"],
    "connect-miss": ["plain", "hook", "addon", "block_list"],
    "connect-hit": ["plain", "addon"],
}
CLIENT_TIMEOUT = 300.0  # seconds; the first instrumented operation re-translates a lot of code


@dataclass
class Window:
    """One instrumented window: instructions, operations, seconds the window was open."""

    ir: int
    ops: int
    seconds: float


def measure(
    p: bp.Proxy,
    out: Path,
    drive: Callable[[], None],
    settle: float,
    wait_rows: Callable[[], None],
    ops: int,
) -> Window:
    """Instrument ``drive()``, the settle wait and ``wait_rows()``; dump; return the window."""
    before = set(out.parent.glob(out.name + "*"))
    t0 = time.monotonic()
    control(p.proc.pid, "--instr=on")
    drive()
    time.sleep(settle)
    wait_rows()
    control(p.proc.pid, "--instr=off")
    seconds = time.monotonic() - t0
    control(p.proc.pid, "--dump")
    return Window(dump_total(out, before), ops, seconds)


# -- load -----------------------------------------------------------------------------------------
def run_ops(port: int, scenario: str, n: int, ctx: ssl.SSLContext) -> None:
    """``n`` operations of ``scenario``, one after the other, from one client."""
    kind, which = scenario.split("-")
    host = bp.HIT_HOST if which == "hit" else bp.MISS_HOST
    if kind == "http":
        req = bp.http_request_bytes(host)
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
            for _ in range(n):
                bp.http_request(sock, req)
    else:
        for _ in range(n):
            bp.connect_once(port, host, ctx, timeout=CLIENT_TIMEOUT)


def event_rows(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        try:
            row = conn.execute("SELECT count(*) FROM events WHERE app = 'tiktok'").fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0
        return int(row[0])
    finally:
        conn.close()


def wait_for_rows(db: Path, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (got := event_rows(db)) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{db}: {got} tiktok events stored, expected {expected}")
        time.sleep(0.2)


# -- one process ----------------------------------------------------------------------------------
def run_config(
    name: str,
    rep: int,
    tmp: Path,
    lists: Path,
    blocks: list[str],
    routes: dict[str, list[object]],
    ca: str,
    cpus: set[int] | None,
    a: argparse.Namespace,
    ctx: ssl.SSLContext,
) -> dict[str, Window]:
    work = tmp / f"{name}-{rep}-files"
    work.mkdir()
    extra = bp.build_configs(work, lists, blocks)[name]
    if name == "addon":
        extra = extra + [x for opt in a.addon_set for x in ("--set", opt)]
    out = tmp / f"{name}-{rep}.callgrind"
    wrapper = [
        VALGRIND,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *a.valgrind_arg,
    ]
    t0 = time.monotonic()
    p = bp.start_proxy(f"{name}-{rep}", tmp, routes, ca, extra, cpus, wrapper, timeout=1800)
    tag = f"{name} #{rep + 1}"
    print(f"{tag}: ready in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    db = work / "events.db"
    hits_sent = 0

    def rows(expected: int) -> Callable[[], None]:
        def wait() -> None:
            if name == "addon":
                wait_for_rows(db, expected)

        return wait

    res: dict[str, Window] = {}
    try:
        for scenario, names in SCENARIOS.items():
            if name in names:
                run_ops(p.port, scenario, a.warmup, ctx)
                hits_sent += a.warmup if scenario.endswith("-hit") else 0
        for scenario, names in SCENARIOS.items():
            if name not in names:
                continue
            time.sleep(a.settle)
            rows(hits_sent)()  # warm-up and earlier hits are written before the window opens
            hits_sent += a.ops if scenario.endswith("-hit") else 0
            t1 = time.monotonic()

            def drive(s: str = scenario) -> None:
                run_ops(p.port, s, a.ops, ctx)

            res[scenario] = measure(p, out, drive, a.settle, rows(hits_sent), a.ops)
            w = res[scenario]
            print(
                f"{tag} {scenario}: {w.ir / w.ops:,.0f} Ir/op raw "
                f"({time.monotonic() - t1:.0f} s, window {w.seconds:.1f} s)",
                file=sys.stderr,
            )
        res["idle"] = measure(p, out, lambda: time.sleep(a.idle), 0.0, rows(hits_sent), 0)
        print(f"{tag} idle: {res['idle'].ir / res['idle'].seconds:,.0f} Ir/s", file=sys.stderr)
    finally:
        bp.stop(p)
    text = p.log.read_text(errors="replace")
    if "Traceback" in text or "Addon error" in text:
        print(f"warning: {p.name} logged an error:\n{text[-2000:]}", file=sys.stderr)
    return res


# -- report ---------------------------------------------------------------------------------------
def per_op(w: Window, idle: Window) -> float:
    """Ir per operation with the idle rate × window length subtracted."""
    rate = idle.ir / idle.seconds
    return (w.ir - rate * w.seconds) / w.ops


def report(runs: list[dict[str, dict[str, Window]]], meta: dict[str, object]) -> str:
    reps = len(runs)
    head = " | ".join(f"Ir/op #{i + 1}" for i in range(reps))
    lines = [
        f"Command: `{meta['command']}`; valgrind {meta['valgrind']} callgrind, mitmproxy "
        f"{meta['mitmproxy']}, Python {meta['python']}; {meta['ops']} operations per "
        f"scenario from one sequential client after {meta['warmup']} warm-up operations; "
        f"{reps} repetition(s), each in fresh processes. Synthetic user list: "
        f"{meta['synthetic']:,} domains; `block_list`: {meta['block_list']:,} `~d` filters. "
        "Ir/op has the process's idle rate × the window's length subtracted (raw in brackets).",
        "",
        f"| scenario | config | {head} | spread | plain Ir / config Ir | Δ Ir/op vs plain |",
        "|---|---|" + "---|" * reps + "---|---|---|",
    ]
    for scenario, configs in SCENARIOS.items():
        plain = statistics.mean(per_op(r["plain"][scenario], r["plain"]["idle"]) for r in runs)
        for config in configs:
            vals = [per_op(r[config][scenario], r[config]["idle"]) for r in runs]
            raws = [r[config][scenario].ir / r[config][scenario].ops for r in runs]
            mean = statistics.mean(vals)
            spread = (max(vals) - min(vals)) / mean
            cells = " | ".join(f"{v:,.0f} ({raw:,.0f})" for v, raw in zip(vals, raws, strict=True))
            lines.append(
                f"| {scenario} | {config} | {cells} | {spread:.2%} | {plain / mean:.3f} "
                f"| {mean - plain:+,.0f} |"
            )
    lines += [
        "",
        "Idle rate (Ir/s, instrumentation on, no traffic), per repetition: "
        + "; ".join(
            f"{c} " + " / ".join(f"{r[c]['idle'].ir / r[c]['idle'].seconds:,.0f}" for r in runs)
            for c in runs[0]
        )
        + ". Measured windows lasted "
        + f"{min(w.seconds for r in runs for c in r.values() for k, w in c.items() if k != 'idle'):.0f}"
        + "-"
        + f"{max(w.seconds for r in runs for c in r.values() for k, w in c.items() if k != 'idle'):.0f}"
        + " s.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 ops, 100k domains, 1 repetition")
    ap.add_argument("--ops", type=int, help="operations per scenario (default 300)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up operations per scenario")
    ap.add_argument("--reps", type=int, help="repetitions in fresh processes (default 2)")
    ap.add_argument("--domains", type=int, help="synthetic list size (default 1,000,000)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before instr off")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of the idle window")
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument(
        "--jobs", type=int, default=2, help="mitmdumps measured at once, each on its own CPU"
    )
    ap.add_argument(
        "--valgrind-arg", action="append", default=[], help="extra valgrind option (repeatable)"
    )
    ap.add_argument(
        "--addon-set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="extra egresswatch option for the addon config (repeatable), e.g. "
        "egresswatch_reload_interval=0 to take file watching out of the per-operation figures",
    )
    a = ap.parse_args()
    a.ops = a.ops or (60 if a.quick else 300)
    reps = a.reps or (1 if a.quick else 2)
    n_domains = a.domains or (100_000 if a.quick else 1_000_000)
    if "plain" not in a.configs:
        ap.error("--configs must include plain (the baseline)")

    import mitmproxy.version

    for s in SCENARIOS.values():
        s[:] = [c for c in s if c in a.configs]
    # Instruction counts do not depend on scheduling, so ``--jobs`` mitmdumps run at once, each
    # pinned to its own CPU (valgrind runs a process's threads one at a time): wall time only.
    free_cpus: queue.Queue[int] = queue.Queue()
    for cpu in sorted(os.sched_getaffinity(0))[: max(1, a.jobs)]:
        free_cpus.put(cpu)
    runs: list[dict[str, dict[str, Window]]] = [{} for _ in range(reps)]
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as t:
        tmp = Path(t)
        ups, info = bp.start_upstreams(tmp)
        try:
            routes, ca = bp.upstream_routes(info)
            print(f"writing a {n_domains:,}-domain synthetic list…", file=sys.stderr)
            lists = bp.synthetic_list(tmp / "lists", n_domains)
            blocks = bp.bundled_block_list()
            ctx = ssl.create_default_context(cafile=ca)

            def job(c: str, rep: int) -> None:
                cpu = free_cpus.get()
                try:
                    runs[rep][c] = run_config(c, rep, tmp, lists, blocks, routes, ca, {cpu}, a, ctx)
                finally:
                    free_cpus.put(cpu)

            with ThreadPoolExecutor(max_workers=free_cpus.qsize()) as pool:
                futures = [pool.submit(job, c, rep) for c in a.configs for rep in range(reps)]
                for f in futures:
                    f.result()
            runs = [{c: r[c] for c in a.configs} for r in runs]
        finally:
            assert ups.stdin is not None
            ups.stdin.close()
            ups.wait(timeout=10)
    vg = subprocess.run([VALGRIND, "--version"], capture_output=True, text=True).stdout.strip()
    cmd = "python bench/proxy_instructions.py" + (" --quick" if a.quick else "")
    meta: dict[str, object] = {
        "command": cmd + "".join(f" {x}" for x in sys.argv[1:] if x != "--quick"),
        "valgrind": vg.removeprefix("valgrind-"),
        "mitmproxy": mitmproxy.version.VERSION,
        "python": sys.version.split()[0],
        "ops": a.ops,
        "warmup": a.warmup,
        "synthetic": n_domains,
        "block_list": len(blocks),
    }
    print(report(runs, meta))
    print(f"(took {(time.monotonic() - t_start) / 60:.1f} min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
