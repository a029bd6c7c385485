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
