"""Instructions an idle proxy executes per second: plain mitmdump vs mitmdump + egresswatch.

    .venv/bin/python bench/idle.py              # 100,000-domain list, 30 s windows (~4 min)
    .venv/bin/python bench/idle.py --domains 1000000 --seconds 60

Each configuration runs as ``valgrind --tool=callgrind --instr-atstart=no mitmdump …`` (the
configurations of ``bench/proxy.py``: ``plain`` is mitmdump with ``--ignore-hosts .``, ``addon``
is egresswatch with the bundled catalogue plus a synthetic list). Once the proxy listens, it is
left alone for ``--settle`` seconds (start-up work: the writer's first flush, the metrics server,
the file watch being set up), then instrumentation is switched on for ``--seconds`` seconds with
no traffic at all, and the dump's ``Ir`` total divided by the window's length is the idle rate.
Everything the process runs counts: the event loop and its timers, the egresswatch writer
thread, the metrics server thread, and the file watch (a ``watchfiles`` thread that wakes every
200 ms; ``addon-polling`` instead stats every catalogue file every 2 s, as all reloads did before).
The counts do not depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxy as bp  # noqa: E402  (bench/proxy.py; it puts the repository on sys.path)
from _callgrind import VALGRIND  # noqa: E402
from _callgrind import control  # noqa: E402
from _callgrind import dump_total  # noqa: E402

CONFIGS = ("plain", "addon", "addon-polling")


def idle_rate(
    name: str,
    tmp: Path,
    lists: Path,
    routes: dict[str, list[object]],
    ca: str,
    cpu: int,
    a: argparse.Namespace,
) -> float:
    """Ir per second of one idle mitmdump of configuration ``name``."""
    work = tmp / f"{name}-files"
    work.mkdir()
    configs = bp.build_configs(work, lists, [])
    extra = configs["plain" if name == "plain" else "addon"]
    if name == "addon-polling":
        extra = [*extra, "--set", "egresswatch_reload_polling=true"]
    out = tmp / f"{name}.callgrind"
    wrapper = [VALGRIND, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    t0 = time.monotonic()
    p = bp.start_proxy(name, tmp, routes, ca, extra, {cpu}, wrapper, timeout=1800)
    try:
        print(f"{name}: ready in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        time.sleep(a.settle)
        before = set(out.parent.glob(out.name + "*"))
        t1 = time.monotonic()
        control(p.proc.pid, "--instr=on")
        time.sleep(a.seconds)
        control(p.proc.pid, "--instr=off")
        seconds = time.monotonic() - t1
        control(p.proc.pid, "--dump")
        rate = dump_total(out, before) / seconds
        print(f"{name}: {rate:,.0f} Ir/s over {seconds:.1f} s", file=sys.stderr)
        return rate
    finally:
        bp.stop(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", type=int, default=100_000, help="synthetic list size")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the idle window")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds between ready and window")
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--jobs", type=int, default=2, help="mitmdumps measured at once, one per CPU")
    a = ap.parse_args()
    if "plain" not in a.configs:
        ap.error("--configs must include plain (the baseline)")

    import mitmproxy.version

    cpus: queue.Queue[int] = queue.Queue()
    for cpu in sorted(os.sched_getaffinity(0))[: max(1, a.jobs)]:
        cpus.put(cpu)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as t:
        tmp = Path(t)
        ups, info = bp.start_upstreams(tmp)
        try:
            routes, ca = bp.upstream_routes(info)
            lists = bp.synthetic_list(tmp / "lists", a.domains)

            def job(name: str) -> None:
                cpu = cpus.get()
                try:
                    rates[name] = idle_rate(name, tmp, lists, routes, ca, cpu, a)
                finally:
                    cpus.put(cpu)

            with ThreadPoolExecutor(max_workers=cpus.qsize()) as pool:
                for f in [pool.submit(job, c) for c in a.configs]:
                    f.result()
        finally:
            assert ups.stdin is not None
            ups.stdin.close()
            ups.wait(timeout=10)
    vg = subprocess.run([VALGRIND, "--version"], capture_output=True, text=True).stdout.strip()
    args = " ".join(sys.argv[1:])
    print(
        f"Command: `python bench/idle.py{' ' + args if args else ''}`; valgrind "
        f"{vg.removeprefix('valgrind-')} callgrind, mitmproxy {mitmproxy.version.VERSION}, Python "
        f"{sys.version.split()[0]}; synthetic list {a.domains:,} domains plus the bundled "
        f"catalogue; idle window {a.seconds:g} s after {a.settle:g} s of settling.\n"
    )
    print("| config | Ir/s idle | × plain |\n|---|---|---|")
    for name in a.configs:
        print(f"| {name} | {rates[name]:,.0f} | {rates[name] / rates['plain']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
