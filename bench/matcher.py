"""Matcher benchmark: lookup cost, load time and memory at 10, 10k and 1M synthetic domains.

    .venv/bin/python bench/matcher.py            # full run (about a minute)
    .venv/bin/python bench/matcher.py --quick    # 10 and 10k only

Every size runs in a fresh subprocess so that resident memory is measured cleanly. The baselines
run in the same process on the same probe hosts: a tldextract-based matcher (registrable domain
via the bundled Public Suffix List, then a set lookup) and a regex alternation (one compiled
pattern over all domains; skipped above 10k, where compiling it takes minutes). The machine is
shared and noisy, so compare the ratios printed at the end, not absolute microseconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (10, 10_000, 1_000_000)
PROBES = 20_000
ROUNDS = 15
REGEX_LIMIT = 10_000


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def synthetic_domains(n: int, rng: random.Random) -> list[str]:
    tlds = ("com", "net", "org", "cn", "io", "co.uk", "com.cn")
    out = set()
    while len(out) < n:
        out.add(f"{rng.getrandbits(40):x}-{len(out)}.{rng.choice(tlds)}")
    return sorted(out)


def probe_hosts(domains: list[str], rng: random.Random) -> list[str]:
    """Half hits (subdomains of listed names), half misses, 3-5 labels, mixed case."""
    hosts = []
    for i in range(PROBES):
        if i % 2 == 0:
            d = rng.choice(domains)
            hosts.append(rng.choice(("www.", "api.v2.", "", "Static.")) + d)
        else:
            hosts.append(f"www.{rng.getrandbits(40):x}-miss.{rng.choice(('com', 'net', 'co.uk'))}")
    rng.shuffle(hosts)
    return hosts


def time_lookups(fn: object, hosts: list[str]) -> float:
    """Median microseconds per lookup over ROUNDS passes."""
    f = fn  # local
    per = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for h in hosts:
            f(h)  # type: ignore[operator]
        per.append((time.perf_counter() - t0) / len(hosts) * 1e6)
    return statistics.median(per)


def run_size(n: int) -> dict[str, float | None]:
    from egresswatch.catalogue import load_catalogue
    from egresswatch.matcher import Matcher

    rng = random.Random(n)
    domains = synthetic_domains(n, rng)
    hosts = probe_hosts(domains, rng)
    result: dict[str, float | None] = {"n": n}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "regimes.yaml").write_text("regimes: []\n")
        (d / "synthetic.yaml").write_text(
            "id: synthetic\nname: Synthetic\ncategory: other\n"
            "lists:\n  - file: synthetic.txt\n    source: bench\n    confidence: low\n"
        )
        (d / "synthetic.txt").write_text("\n".join(domains) + "\n")
        del domains
        gc.collect()
        before = rss_bytes()
        t0 = time.perf_counter()
        cat = load_catalogue([d])
        matcher = Matcher.from_catalogue(cat)
        result["load_s"] = time.perf_counter() - t0
        gc.collect()
        result["bytes_per_domain"] = (rss_bytes() - before) / n
        names = list(cat.apps["synthetic"].lists[0].names)
    result["ours_us"] = time_lookups(matcher.match, hosts)
    hits = sum(1 for h in hosts if matcher.match(h) is not None)
    assert hits == PROBES // 2, hits

    import tldextract

    ext = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    registrable = set(names)

    def tld_match(h: str) -> bool:
        return ext(h.lower()).top_domain_under_public_suffix in registrable

    result["tldextract_us"] = time_lookups(tld_match, hosts)
    if n <= REGEX_LIMIT:
        pattern = re.compile(r"(?:^|\.)(?:" + "|".join(re.escape(x) for x in names) + r")\.?$", re.IGNORECASE)
        result["regex_us"] = time_lookups(pattern.search, hosts)
    else:
        result["regex_us"] = None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 and 10k domains only")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.size:
        print(json.dumps(run_size(args.size)))
        return
    sizes = SIZES[:2] if args.quick else SIZES
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--size", str(n)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout))
    base = rows[0]["ours_us"]
    print(f"{'domains':>9} {'ours µs':>8} {'vs 10':>6} {'tldextract µs':>14} {'regex µs':>9} {'load s':>7} {'B/domain':>9}")
    for r in rows:
        regex = f"{r['regex_us']:.2f}" if r["regex_us"] is not None else "n/a"
        bpd = f"{r['bytes_per_domain']:.0f}" if r["n"] >= 10_000 else "-"
        print(
            f"{r['n']:>9,} {r['ours_us']:>8.3f} {r['ours_us'] / base:>5.2f}x {r['tldextract_us']:>14.2f} "
            f"{regex:>9} {r['load_s']:>7.2f} {bpd:>9}"
        )
    print()
    for r in rows:
        parts = [f"tldextract/ours {r['tldextract_us'] / r['ours_us']:.1f}x"]
        if r["regex_us"] is not None:
            parts.append(f"regex/ours {r['regex_us'] / r['ours_us']:.1f}x")
        print(f"{r['n']:>9,}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
