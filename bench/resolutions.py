"""The DNS correlation table: memory per entry, and the cost of a flood of answers.

    .venv/bin/python bench/resolutions.py            # 100,000 entries, 1,000,000 answers
    .venv/bin/python bench/resolutions.py --quick    # 10,000 entries, 100,000 answers

Three figures (docs/benchmarks.md):

1. **Memory per entry** of a full :class:`~egresswatch.resolutions.ResolutionTable`
   (``tracemalloc``: what the table holds, the shared :class:`Resolution` objects included, one per
   answer as ``DnsWatch`` makes them).
2. **remember() under a flood**: distinct addresses, many more than the table holds, so every
   call past the first ``--entries`` evicts one (the worst case), in ns per call.
3. **dns_response() per answer** through the proxy's hook (``proxy/dnswatch.py``) on a
   mitmproxy ``DNSFlow``: a neutral question whose CNAME chain reaches a designated name, with
   ``--records`` addresses (the hostile "huge answer" case is capped at 64 records read).
"""

from __future__ import annotations

import argparse
import ipaddress
import time
import tracemalloc

from egresswatch.resolutions import Resolution
from egresswatch.resolutions import ResolutionTable


def _addresses(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


def memory_per_entry(entries: int) -> float:
    addrs = _addresses(entries)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    table = ResolutionTable(entries, clock=lambda: 0.0)
    for i, a in enumerate(addrs):
        res = Resolution("tiktok", "v16.tiktokcdn.com", ("cdn.example.net", "v16.tiktokcdn.com"))
        table.remember(a, res, ttl=60 + i % 60)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(table) == entries
    return used / entries


def flood(entries: int, answers: int) -> tuple[float, int]:
    addrs = _addresses(answers)
    table = ResolutionTable(entries, clock=time.monotonic)
    res = Resolution("tiktok", "v16.tiktokcdn.com", ("v16.tiktokcdn.com",))
    t0 = time.perf_counter()
    for a in addrs:
        table.remember(a, res, ttl=300)
    dt = time.perf_counter() - t0
    return dt / answers * 1e9, table.evictions


def hook(records: int, answers: int) -> float:
    from egresswatch.proxy.addon import EgressWatch
    from mitmproxy import dns
    from mitmproxy.test import taddons
    from mitmproxy.test import tflow
    from mitmproxy.test import tutils
    from prometheus_client import CollectorRegistry

    addon = EgressWatch(registry=CollectorRegistry())
    with taddons.context(addon) as tctx:
        tctx.configure(
            addon,
            egresswatch_metrics_listen="off",
            egresswatch_store="memory://",
            egresswatch_reload_interval=0,
        )
        flows = []
        for i in range(answers):
            q = f"n{i}.neutral.example"
            req = tutils.tdnsreq(questions=[dns.Question(q, dns.types.A, dns.classes.IN)])
            f = tflow.tdnsflow(req=req)
            rrs = [dns.ResourceRecord.CNAME(q, "v16.tiktokcdn.com")]
            rrs += [
                dns.ResourceRecord.A(
                    "v16.tiktokcdn.com", ipaddress.IPv4Address(f"10.{i % 250}.{j // 250}.{j % 250}")
                )
                for j in range(records)
            ]
            f.response = f.request.succeed(rrs)
            flows.append(f)
        t0 = time.perf_counter()
        for f in flows:
            addon.dns_response(f)
        dt = time.perf_counter() - t0
        if addon.metrics is not None:
            addon.metrics.close()
    return dt / answers * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--entries", type=int)
    ap.add_argument("--answers", type=int)
    ap.add_argument("--records", type=int, default=4)
    a = ap.parse_args()
    entries = a.entries or (10_000 if a.quick else 100_000)
    answers = a.answers or (100_000 if a.quick else 1_000_000)
    print(f"memory per entry ({entries:,} entries): {memory_per_entry(entries):.0f} bytes")
    ns, evictions = flood(entries, answers)
    print(
        f"remember() flood ({answers:,} distinct addresses into {entries:,}): "
        f"{ns:.0f} ns/call, {evictions:,} evictions"
    )
    n = 2_000 if a.quick else 20_000
    for records in (a.records, 64):
        us = hook(records, n)
        print(f"dns_response() with a CNAME to a designated name and {records} A records: "
              f"{us:.1f} us/answer ({n:,} answers)")  # fmt: skip


if __name__ == "__main__":
    main()
