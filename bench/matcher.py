"""Matcher benchmark: lookup cost, load time and memory at 10, 10k and 1M synthetic domains.

    .venv/bin/python bench/matcher.py            # full run (about a minute)
    .venv/bin/python bench/matcher.py --quick    # 10 and 10k only
    .venv/bin/python bench/matcher.py --instructions   # instructions per lookup (callgrind, ~1 min)

The matcher is timed through ``Matcher.match(raw)``, the call the proxy's hooks make
(``egresswatch/proxy/observe.py``; only a miss is normalised again there, to count invalid names).
Contenders, all on the same probe hosts in the same process: the matcher on its native backend
(the C suffix table; what the proxy uses when the extension is built), the matcher on its
pure-Python backend (``EGRESSWATCH_PURE_PYTHON=1``), a tldextract-based matcher (registrable
domain via the bundled Public Suffix List, then a set lookup) and a regex alternation (one
compiled pattern over all domains; skipped above 10k, where compiling it takes minutes).
Load time and resident bytes per domain come from a fresh subprocess per size and backend, so
that memory is measured cleanly. The machine is shared and noisy, so compare the ratios printed
at the end, not absolute microseconds.
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
from egresswatch.catalogue import Catalogue
from egresswatch.matcher import NATIVE_AVAILABLE
from egresswatch.matcher import Backend

SIZES = (10, 10_000, 1_000_000)
PROBES = 20_000
ROUNDS = 9
REGEX_LIMIT = 10_000
BACKENDS: tuple[Backend, ...] = ("native", "python")


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


def fresh(s: str) -> str:
    """A new string object equal to ``s``."""
    return s.encode("ascii").decode("ascii")


def probe_hosts(domains: list[str], rng: random.Random) -> list[str]:
    """Half hits (subdomains of listed names), half misses, 3-5 labels, mixed case.

    Every host is a new string, as a proxy's freshly parsed name is: a probe that were the
    catalogue's own string object (the ``""`` prefix) would sit among a million others in
    memory, and the benchmark would time a cache miss on its own input.
    """
    hosts = []
    for i in range(PROBES):
        if i % 2 == 0:
            d = rng.choice(domains)
            hosts.append(fresh(rng.choice(("www.", "api.v2.", "", "Static.")) + d))
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


def measure_load(n: int, backend: Backend) -> dict[str, float]:
    """Child process: load time and resident bytes per domain for one size and backend."""
    from egresswatch.catalogue import load_catalogue
    from egresswatch.matcher import Matcher

    domains = synthetic_domains(n, random.Random(n))
    with tempfile.TemporaryDirectory() as tmp:
        build_catalogue_dir(Path(tmp), domains)
        del domains
        gc.collect()
        before = rss_bytes()
        t0 = time.perf_counter()
        matcher = Matcher.from_catalogue(load_catalogue([Path(tmp)]), backend)
        load_s = time.perf_counter() - t0
        gc.collect()
        after = rss_bytes()
    assert len(matcher) == n and matcher.backend == backend
    return {"n": n, "load_s": load_s, "bytes_per_domain": (after - before) / n}


def workload(n: int, d: Path) -> tuple[list[str], list[str], Catalogue]:
    """The ``n`` synthetic domains, the probe hosts, and the catalogue written to ``d``: the
    same for a given ``n`` in every mode of this script."""
    from egresswatch.catalogue import load_catalogue

    rng = random.Random(n)
    domains = synthetic_domains(n, rng)
    hosts = probe_hosts(domains, rng)
    build_catalogue_dir(d, domains)
    return domains, hosts, load_catalogue([d])


def lookup_contenders(n: int, tmp: Path) -> tuple[list[str], dict[str, Callable[[str], object]]]:
    from egresswatch.matcher import Matcher

    d = tmp / str(n)
    d.mkdir()
    domains, hosts, catalogue = workload(n, d)
    fns: dict[str, Callable[[str], object]] = {}
    for backend in BACKENDS:
        matcher = Matcher.from_catalogue(catalogue, backend)
        assert matcher.backend == backend
        hits = sum(1 for h in hosts if matcher.match(h) is not None)
        assert hits == PROBES // 2, (backend, hits)
        fns[backend] = matcher.match
    del catalogue
    ext = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    registrable = set(domains)

    def tld_match(h: str) -> bool:
        return ext(h.lower()).top_domain_under_public_suffix in registrable

    fns["tldextract"] = tld_match
    if n <= REGEX_LIMIT:
        pattern = re.compile(
            r"(?:^|\.)(?:" + "|".join(re.escape(x) for x in domains) + r")\.?$", re.IGNORECASE
        )
        fns["regex"] = pattern.search
    return hosts, fns


def instructions_child(n: int, backend: Backend) -> None:
    """Child under callgrind: build one matcher, then one pass over the probes when told.

    Protocol on stdin/stdout: prints ``ready`` when built; on a line from the parent (who has
    switched instrumentation on) runs the pass and prints ``done``; exits on the next line."""
    from egresswatch.matcher import Matcher

    with tempfile.TemporaryDirectory() as tmp:
        domains, hosts, catalogue = workload(n, Path(tmp))
        matcher = Matcher.from_catalogue(catalogue, backend)
    del domains, catalogue
    match = matcher.match
    print("ready", flush=True)
    sys.stdin.readline()
    for h in hosts:
        match(h)
    print("done", flush=True)
    sys.stdin.readline()


def instructions_per_lookup(n: int, backend: Backend, out: Path) -> float:
    """Instructions (callgrind ``Ir``) per ``Matcher.match`` call: one pass over the probe hosts
    with instrumentation on only for the pass (the build and the interpreter start-up are not
    counted). Deterministic for the same binary and inputs, whatever else the machine does."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _callgrind import measure_child

    argv = [sys.executable, __file__, "--ir-child", str(n), "--backend", backend]
    total = measure_child(argv, out, f"{n}/{backend}")
    return total / PROBES


def instructions_report(sizes: tuple[int, ...]) -> None:
    """Print instructions per lookup per size and backend, and the ratio to the 10-domain
    figure: the work a lookup does, without the memory latency that the timed passes include."""
    ir: dict[tuple[int, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for backend in BACKENDS:
                ir[(n, backend)] = instructions_per_lookup(
                    n, backend, Path(tmp) / f"{n}-{backend}.cg"
                )
                print(f"{n:,} {backend}: {ir[(n, backend)]:,.0f} Ir/lookup", file=sys.stderr)
    print(f"instructions per lookup (callgrind Ir, {PROBES:,} hosts, half hits, one pass)")
    print(f"{'domains':>9} " + " ".join(f"{b:>8} {'vs 10':>6}" for b in BACKENDS))
    for n in sizes:
        cells = [f"{ir[(n, b)]:>8,.0f} {ir[(n, b)] / ir[(sizes[0], b)]:>5.2f}x" for b in BACKENDS]
        print(f"{n:>9,} " + " ".join(cells))


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
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--ir-child", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per lookup under callgrind instead of timing",
    )
    args = parser.parse_args()
    if args.load_size:
        print(json.dumps(measure_load(args.load_size, args.backend)))
        return
    if args.ir_child:
        instructions_child(args.ir_child, args.backend)
        return
    if not NATIVE_AVAILABLE:
        sys.exit("egresswatch._suffixtable is not built: pip install -e . (needs a C compiler)")
    sizes = SIZES[:2] if args.quick else SIZES
    if args.instructions:
        instructions_report(sizes)
        return
    loads = {}
    for n in sizes:
        for backend in BACKENDS:
            out = subprocess.run(
                [sys.executable, __file__, "--load-size", str(n), "--backend", backend],
                check=True,
                capture_output=True,
                text=True,
            )
            loads[(n, backend)] = json.loads(out.stdout)
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
    print(f"median µs per lookup ({PROBES:,} hosts, half hits, {ROUNDS} interleaved passes)")
    print(
        f"{'domains':>9} {'native':>7} {'vs 10':>6} {'python':>7} {'vs 10':>6} "
        f"{'tldextract':>11} {'regex':>7}   load s (native/python)   B/domain (native/python)"
    )
    for n in sizes:
        regex = f"{med[(n, 'regex')]:.2f}" if (n, "regex") in med else "n/a"
        cells = []
        for b in BACKENDS:
            cells.append(f"{med[(n, b)]:>7.3f} {med[(n, b)] / med[(sizes[0], b)]:>5.2f}x")
        load = " / ".join(f"{loads[(n, b)]['load_s']:.2f}" for b in BACKENDS)
        bpd = " / ".join(
            f"{loads[(n, b)]['bytes_per_domain']:.0f}" if n >= 10_000 else "-" for b in BACKENDS
        )
        print(
            f"{n:>9,} {cells[0]} {cells[1]} {med[(n, 'tldextract')]:>11.2f} {regex:>7}"
            f"   {load:>22}   {bpd:>24}"
        )
    print()
    for n in sizes:
        native = med[(n, "native")]
        parts = [
            f"python/native {med[(n, 'python')] / native:.1f}x",
            f"tldextract/native {med[(n, 'tldextract')] / native:.1f}x",
        ]
        if (n, "regex") in med:
            parts.append(f"regex/native {med[(n, 'regex')] / native:.1f}x")
        print(f"{n:>9,}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
