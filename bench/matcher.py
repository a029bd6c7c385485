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
from collections.abc import Callable
from pathlib import Path

import tldextract

SIZES = (10, 10_000, 1_000_000)
PROBES = 20_000
ROUNDS = 9
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


def build_catalogue_dir(d: Path, domains: list[str]) -> None:
    (d / "regimes.yaml").write_text("regimes: []\n")
    (d / "synthetic.yaml").write_text(
        "id: synthetic\nname: Synthetic\ncategory: other\n"
        "lists:\n  - file: synthetic.txt\n    source: bench\n    confidence: low\n"
    )
    (d / "synthetic.txt").write_text("\n".join(domains) + "\n")


def measure_load(n: int) -> dict[str, float]:
    """Child process: load time and resident bytes per domain for one size."""
    from egresswatch.catalogue import load_catalogue
    from egresswatch.matcher import Matcher

    domains = synthetic_domains(n, random.Random(n))
    with tempfile.TemporaryDirectory() as tmp:
        build_catalogue_dir(Path(tmp), domains)
        del domains
        gc.collect()
        before = rss_bytes()
        t0 = time.perf_counter()
        matcher = Matcher.from_catalogue(load_catalogue([Path(tmp)]))
        load_s = time.perf_counter() - t0
        gc.collect()
        after = rss_bytes()
    assert len(matcher) == n
    return {"n": n, "load_s": load_s, "bytes_per_domain": (after - before) / n}


def lookup_contenders(n: int, tmp: Path) -> tuple[list[str], dict[str, Callable[[str], object]]]:
    from egresswatch.catalogue import load_catalogue
    from egresswatch.matcher import Matcher

    rng = random.Random(n)
    domains = synthetic_domains(n, rng)
    hosts = probe_hosts(domains, rng)
    d = tmp / str(n)
    d.mkdir()
    build_catalogue_dir(d, domains)
    matcher = Matcher.from_catalogue(load_catalogue([d]))
    hits = sum(1 for h in hosts if matcher.match(h) is not None)
    assert hits == PROBES // 2, hits
    ext = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    registrable = set(domains)

    def tld_match(h: str) -> bool:
        return ext(h.lower()).top_domain_under_public_suffix in registrable

    fns: dict[str, Callable[[str], object]] = {"ours": matcher.match, "tldextract": tld_match}
    if n <= REGEX_LIMIT:
        pattern = re.compile(
            r"(?:^|\.)(?:" + "|".join(re.escape(x) for x in domains) + r")\.?$", re.IGNORECASE
        )
        fns["regex"] = pattern.search
    return hosts, fns


def one_pass(fn: Callable[[str], object], hosts: list[str]) -> float:
    t0 = time.perf_counter()
    for h in hosts:
        fn(h)
    return (time.perf_counter() - t0) / len(hosts) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 and 10k domains only")
    parser.add_argument("--load-size", type=int, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.load_size:
        print(json.dumps(measure_load(args.load_size)))
        return
    sizes = SIZES[:2] if args.quick else SIZES
    loads = {}
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--load-size", str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        loads[n] = json.loads(out.stdout)
    # Lookups: every contender at every size in one process, passes interleaved round-robin so
    # that the machine's background load hits all of them alike; the median pass counts.
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {n: lookup_contenders(n, Path(tmp)) for n in sizes}
        samples: dict[tuple[int, str], list[float]] = {}
        for _ in range(ROUNDS):
            for n, (hosts, fns) in contenders.items():
                for name, fn in fns.items():
                    samples.setdefault((n, name), []).append(one_pass(fn, hosts))
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med[(sizes[0], "ours")]
    print(f"median µs per lookup ({PROBES:,} hosts, half hits, {ROUNDS} interleaved passes)")
    print(
        f"{'domains':>9} {'ours':>7} {'vs 10':>6} {'tldextract':>11} {'regex':>9} {'load s':>7} {'B/domain':>9}"
    )
    for n in sizes:
        regex = f"{med[(n, 'regex')]:.2f}" if (n, "regex") in med else "n/a"
        bpd = f"{loads[n]['bytes_per_domain']:.0f}" if n >= 10_000 else "-"
        print(
            f"{n:>9,} {med[(n, 'ours')]:>7.3f} {med[(n, 'ours')] / base:>5.2f}x {med[(n, 'tldextract')]:>11.2f} "
            f"{regex:>9} {loads[n]['load_s']:>7.2f} {bpd:>9}"
        )
    print()
    for n in sizes:
        parts = [f"tldextract/ours {med[(n, 'tldextract')] / med[(n, 'ours')]:.1f}x"]
        if (n, "regex") in med:
            parts.append(f"regex/ours {med[(n, 'regex')] / med[(n, 'ours')]:.1f}x")
        print(f"{n:>9,}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
