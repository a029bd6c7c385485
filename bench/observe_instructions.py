"""Instructions per ``Observer.observe`` call (callgrind ``Ir``), by scenario: the hook path's
own cost without mitmproxy's, so a change of a few hundred instructions per name shows.

    .venv/bin/python bench/observe_instructions.py            # about 2 minutes
    PYTHONPATH=/path/to/other/checkout/addon .venv/bin/python bench/observe_instructions.py

An ``EgressWatch`` is configured in mitmproxy's test context (the bundled catalogue, a policy
monitoring everything, a memory store, no metrics endpoint, a fixed clock), then, under
``valgrind --tool=callgrind --instr-atstart=no``, each scenario calls ``observe`` ``--calls``
times with instrumentation on only for those calls:

- ``miss``: a name no rule matches, from a client with no designated hit in memory;
- ``miss-after-hit``: the same, from a client that hit a designated app just before (the
  follows-a-hit evidence of ``candidates.py``: credited once, then a set lookup);
- ``hit``: a designated name, not deduplicated (decision, metrics, the event queued).

The same script runs against another checkout through ``PYTHONPATH`` (before/after figures).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _callgrind import measure_child  # noqa: E402

SCENARIOS = ("miss", "miss-after-hit", "hit")
MISS, HIT = "www.example.test", "www.tiktok.com"


def child(scenario: str, calls: int) -> None:
    """Under callgrind: configure the addon, print ``ready``; on a line from the parent run the
    calls and print ``done``; exit on the next line."""
    from egresswatch.events import Signal
    from egresswatch.proxy.addon import EgressWatch
    from egresswatch.store.memory import MemoryStore
    from mitmproxy.proxy.mode_specs import ProxyMode
    from mitmproxy.test import taddons
    from mitmproxy.test import tflow
    from prometheus_client import CollectorRegistry

    store = MemoryStore("memory://")
    addon = EgressWatch(
        registry=CollectorRegistry(), clock=lambda: 1_790_000_000.0, store_opener=lambda u: store
    )
    with tempfile.TemporaryDirectory() as tmp, taddons.context(addon) as tctx:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text("default: monitor\n")
        tctx.configure(
            addon,
            egresswatch_policy=str(policy),
            egresswatch_metrics_listen="off",
            egresswatch_store="memory://",
            egresswatch_reload_interval=0,
        )
        client = tflow.tclient_conn()
        client.peername = ("10.0.0.1", 50000)
        client.proxy_mode = ProxyMode.parse("regular")
        observe = addon.observer.observe
        if scenario == "miss-after-hit":
            observe(HIT, Signal.HTTP_HOST, client, dedupe=False)
        name = HIT if scenario == "hit" else MISS
        observe(name, Signal.HTTP_HOST, client, dedupe=False)  # warm
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(calls):
            observe(name, Signal.HTTP_HOST, client, dedupe=False)
        print("done", flush=True)
        sys.stdin.readline()


def measure(scenario: str, calls: int, out: Path) -> float:
    argv = [sys.executable, __file__, "--child", scenario, "--calls", str(calls)]
    total = measure_child(argv, out, scenario)
    return total / calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20_000, help="observe calls per scenario")
    ap.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.calls)
        return 0
    import egresswatch

    print(f"egresswatch from {Path(egresswatch.__file__).parent}; {a.calls:,} calls per scenario")
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in SCENARIOS:
            ir = measure(scenario, a.calls, Path(tmp) / f"{scenario}.cg")
            print(f"{scenario:15} {ir:10,.0f} Ir per observe", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
