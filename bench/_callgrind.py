"""callgrind helpers shared by the instruction-count benchmarks (``proxy_instructions.py``,
``matcher.py --instructions``): switch a running valgrind'd process's instrumentation and read
the instruction total (``Ir``) of its dumps."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

VALGRIND = "/usr/bin/valgrind"
CALLGRIND_CONTROL = "/usr/bin/callgrind_control"


def control(pid: int, *args: str) -> None:
    r = subprocess.run(
        [CALLGRIND_CONTROL, *args, str(pid)], capture_output=True, text=True, timeout=300
    )
    if r.returncode != 0 or "Error" in r.stdout + r.stderr:
        raise RuntimeError(f"callgrind_control {' '.join(args)} {pid}: {r.stdout}{r.stderr}")


def dump_total(out: Path, before: set[Path]) -> int:
    """Total ``Ir`` of the one dump file that appeared since ``before``."""
    deadline = time.monotonic() + 120
    while True:
        new = [p for p in out.parent.glob(out.name + "*") if p not in before]
        done = [p for p in new if p.stat().st_size and _totals(p) is not None]
        if done:
            if len(done) > 1:
                raise RuntimeError(f"more than one new dump: {done}")
            total = _totals(done[0])
            assert total is not None
            return total
        if time.monotonic() > deadline:
            raise RuntimeError(f"no callgrind dump appeared next to {out}")
        time.sleep(0.2)


def _totals(path: Path) -> int | None:
    m = re.search(r"^totals:\s*(\d+)", path.read_text(errors="replace"), re.M)
    return int(m.group(1)) if m else None


def measure_child(argv: list[str], out: Path, what: str) -> int:
    """Run ``argv`` (a Python child) under callgrind with instrumentation off, and return the
    instructions of its measured part.

    The child's protocol on stdin/stdout: it prints ``ready`` once set up, waits for a line
    ``go``, runs the part to measure, prints ``done``, then waits for one more line and exits.
    Only the part between ``go`` and ``done`` is counted."""
    cmd = [VALGRIND, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    child = subprocess.Popen(cmd + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"callgrind child for {what} did not start")
        control(child.pid, "--instr=on")
        child.stdin.write("go\n")
        child.stdin.flush()
        if child.stdout.readline().strip() != "done":
            raise RuntimeError(f"callgrind child for {what} failed")
        before = set(out.parent.glob(out.name + "*"))
        control(child.pid, "--dump")
        total = dump_total(out, before)
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    return total
