"""``bench/workers.py``: its arithmetic, and one short run of the real command end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import workers as bw  # noqa: E402  (bench/workers.py imports bench/load.py as ``load``)

bl = bw.bl


def sample(rate: float, proxy_ms: float, load_ms: float, others: float) -> bl.Sample:
    """A 10-second window at ``rate`` ops/s with the given CPU per op and other processes' cores."""
    ops = int(rate * 10)
    proxy, load = proxy_ms * ops / 1000, load_ms * ops / 1000
    return bl.Sample(10.0, ops, ops, proxy, load, proxy + load + others * 10, 20.0)


def results() -> bw.Results:
    res = bw.Results()
    for scenario in bw.SCENARIOS:
        res.samples[(scenario, 1)] = [sample(500, 2.0, 0.2, 0.1), sample(400, 2.5, 0.2, 0.5)]
        res.samples[(scenario, 2)] = [sample(900, 2.0, 0.2, 0.0), sample(700, 2.2, 0.4, 0.4)]
        res.ratios[scenario] = [1.8, 1.7]
    return res


def test_table_reports_medians_per_operation_and_cores() -> None:
    lines = bw.table(results())
    assert len(lines) == 2 + 2 * len(bw.SCENARIOS)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    # 1 worker: median 450/s, ratio 1, 2.25 ms/op, 1.0 core in both windows, load 0.2 ms and
    # 0.09 cores (0.1 and 0.08), the rest 0.3 cores (0.1 and 0.5).
    assert cells == ["http-hit", "1", "450", "1.00", "2.25", "1.00", "0.20", "0.09", "0.30"]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    # 2 workers: 800/s, ratio 1.75, 2.1 ms, 1.8 and 1.54 cores, load 0.3 ms and 0.18 / 0.28
    # cores, the rest 0.0 and 0.4.
    assert cells == ["http-hit", "2", "800", "1.75", "2.10", "1.67", "0.30", "0.23", "0.20"]


def test_ceilings_use_the_lower_cost_for_both_configurations() -> None:
    # Worker: 1 worker 2.25 ms, 2 workers 2.10 ms -> 2.10 for both; load with 2 workers 0.3 ms.
    # One worker <= 1000/2.10 = 476/s; two <= 2000/2.4 = 833/s; 833/476 = 1.75.
    line = bw.ceilings(results(), 2)[0]
    assert "1 / 2.10 ms = 476/s" in line
    assert "2 / (2.10 + 0.30) ms = 833/s" in line
    assert "**1.75x**" in line


@pytest.mark.e2e
def test_a_short_run_prints_the_table_and_every_event_is_stored() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "workers.py"), "--rounds", "1", "--seconds", "0.5",
         "--clients", "4"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if re.match(r"\| (http|connect)-hit \|", line)]
    assert len(rows) == 4
    m = re.search(r"Store check: ([\d,]+) hit events stored for ([\d,]+) operations", out.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(1).replace(",", "")) > 0
    assert "every chain verifies: True" in out.stdout
