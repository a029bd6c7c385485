"""Proxy throughput benchmark: plain mitmdump vs mitmdump + egresswatch vs built-in ``block_list``.

    .venv/bin/python bench/proxy.py             # full run (about 6 minutes)
    .venv/bin/python bench/proxy.py --quick     # about a minute, for a smoke check
    .venv/bin/python bench/proxy.py --write-docs   # also replace the "Proxy" section of docs/benchmarks.md

Configurations (every one routes upstream connections to loopback servers with
``tests/support/route_loopback.py``; nothing leaves 127.0.0.0/8):

- ``plain``: mitmdump with ``--ignore-hosts .`` (TLS passed through, the cheapest way);
- ``hook``: mitmdump with a five-line addon that sets ``ignore_connection`` in ``tls_clienthello``
  (what any SNI-reading addon pays: mitmproxy parses the ClientHello);
- ``addon``: mitmdump with egresswatch, the bundled catalogue plus a 1,000,000-domain synthetic
  user list (an app file with a ``lists:`` .txt file), monitor mode, SQLite event store and
  the metrics endpoint on;
- ``addon-memstore``: the same with the in-memory event store (``-hit`` only), to show what the
  SQLite write path costs per hit;
- ``block_list``: mitmdump with ``block_list`` holding one ``~d`` filter per domain of the
  bundled catalogue (about 1,200: the same apps' real domains) and ``--ignore-hosts .``.

Scenarios: ``http`` = keep-alive HTTP/1.1 requests through the proxy from concurrent clients;
``connect`` = one CONNECT + TLS handshake (client verifies the upstream's test CA, so TLS is
passed through) + one request per connection. ``-miss`` sends a name in no list; ``-hit`` a
designated name (www.tiktok.com: egresswatch counts it and writes an event per request or
connection; ``block_list`` would block it, so it does not run ``-hit``).

Runs are interleaved: every round runs every (scenario, config) once, in a rotated order. The
report gives median ops/s, the median of the per-round ratios to ``plain``, mitmdump CPU
milliseconds per op, and resident memory (VmRSS) of each mitmdump at the end.

CPU pinning (default on a machine with 2 or more CPUs; ``--no-pin`` turns it off): every
mitmdump runs on CPU 0, the load generator and the upstream servers on the other CPUs. Then a
proxy's throughput depends on its own CPU cost per operation (addon threads included: the event
writer shares CPU 0) rather than on how the scheduler places it next to the load generator;
two identically configured plain mitmdumps measured 2% apart pinned, 10% unpinned.

Fresh processes every round (``--no-restart`` keeps them): one mitmdump process can run several
per cent faster or slower than another identical one for its whole life (memory layout, hash
seeds); restarting every config each round turns that into round-to-round spread, which the
median over rounds absorbs. Two identical plain configs on CONNECT: 0.86 apart kept, 0.99 apart
restarted (median of 5-6 rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from egresswatch.catalogue import bundled_dir  # noqa: E402
from egresswatch.catalogue import load_catalogue  # noqa: E402

from tests.support.clients import read_http_response  # noqa: E402

MITMDUMP = Path(sys.executable).with_name("mitmdump")
SUPPORT = REPO / "tests" / "support"
ENTRY = REPO / "deploy" / "mitmproxy" / "egresswatch.py"
HIT_HOST = "www.tiktok.com"
MISS_HOST = "www.example.test"  # in no list; the test certificate covers example.test names
HOOK_ADDON = """\
from mitmproxy import tls


class Ignore:
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        data.ignore_connection = True


addons = [Ignore()]
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Proxy:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@dataclass
class Results:
    ops: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    cpu_ms: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    ratios: dict[tuple[str, str], list[float]] = field(default_factory=dict)


# -- set-up ---------------------------------------------------------------------------------------
def synthetic_list(directory: Path, n: int) -> Path:
    """A user catalogue directory with one app whose ``lists:`` file holds ``n`` domains."""
    directory.mkdir(parents=True)
    rng = random.Random(n)
    tlds = ("com", "net", "org", "cn", "io", "co.uk", "com.cn")
    names = {f"{rng.getrandbits(40):x}-{i}.{rng.choice(tlds)}" for i in range(n)}
    (directory / "synthetic.txt").write_text("\n".join(sorted(names)) + "\n")
    (directory / "synthetic.yaml").write_text(
        "id: synthetic\nname: Synthetic\ncategory: other\nregimes: []\n"
        "description: Benchmark list.\n"
        "lists:\n  - file: synthetic.txt\n    match: suffix\n    source: bench/proxy.py\n"
        "    confidence: low\n"
    )
    return directory


def bundled_block_list() -> list[str]:
    cat = load_catalogue([bundled_dir()])
    domains = sorted({r.domain for app in cat.apps.values() for r in app.rules})
    return [f"/~d {d}/403" for d in domains]


def build_configs(tmp: Path, lists: Path, blocks: list[str]) -> dict[str, list[str]]:
    """The mitmdump arguments of every configuration (files they need are written to ``tmp``)."""
    (tmp / "hook.py").write_text(HOOK_ADDON)
    block_conf = tmp / "block_list.json"
    block_conf.write_text(json.dumps(blocks))

    def addon(store: str) -> list[str]:
        return [
            "-s", str(ENTRY),
            "--set", f"egresswatch_lists={lists}",
            "--set", f"egresswatch_store={store}",
            "--set", f"egresswatch_data_dir={tmp}",
            "--set", "egresswatch_metrics_listen=127.0.0.1:0",
        ]  # fmt: skip

    return {
        "plain": ["--ignore-hosts", "."],
        "hook": ["-s", str(tmp / "hook.py")],
        "addon": addon(f"sqlite:///{tmp / 'events.db'}"),
        "addon-memstore": addon("memory://"),
        "block_list": ["--ignore-hosts", "."]
        + [x for b in blocks for x in ("--set", f"block_list={b}")],
    }  # fmt: skip


def pin_cpus(enabled: bool) -> set[int] | None:
    """Move this process (load generator; children inherit it) off CPU 0; the proxies' CPU set."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return None
    os.sched_setaffinity(0, set(cpus[1:]))
    return {cpus[0]}


def upstream_routes(info: dict[str, object]) -> tuple[dict[str, list[object]], str]:
    """``route_loopback`` routes to the upstreams ``start_upstreams`` reported, and their CA."""
    direct = info["direct_ports"]
    assert isinstance(direct, dict)
    routes: dict[str, list[object]] = {
        "80": ["127.0.0.1", direct["http"]],
        "443": ["127.0.0.1", direct["tls"]],
    }
    return routes, str(info["ca"])


def start_upstreams(tmp: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, str(SUPPORT / "upstreams.py"), str(tmp / "pki")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


def start_proxy(
    name: str,
    tmp: Path,
    routes: dict[str, list[object]],
    ca: str,
    extra: list[str],
    cpus: set[int] | None = None,
    wrapper: list[str] | None = None,
    timeout: float = 300,
) -> Proxy:
    """Start one mitmdump (``wrapper``, e.g. a valgrind command line, runs it) and wait for its
    port; ``bench/proxy_instructions.py`` uses the wrapper and a longer ``timeout``."""
    run = tmp / name
    (run / "conf").mkdir(parents=True)
    portfile = run / "ports.json"
    log = run / "mitmdump.log"
    args = [
        *(wrapper or []),
        str(MITMDUMP),
        "--listen-host", "127.0.0.1",
        "-p", "0",
        "--set", f"confdir={run / 'conf'}",
        "--set", "flow_detail=0",
        "--set", "termlog_verbosity=warn",
        "--set", f"ssl_verify_upstream_trusted_ca={ca}",
        *extra,
        "-s", str(SUPPORT / "route_loopback.py"),
        "-s", str(SUPPORT / "portfile.py"),
        "--set", f"route_loopback={json.dumps(routes)}",
        "--set", f"portfile={portfile}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(run)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=run)
    if cpus is not None:
        os.sched_setaffinity(proc.pid, cpus)  # before it starts any thread: all inherit it
    deadline = time.monotonic() + timeout
    while not portfile.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: mitmdump did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    port = json.loads(portfile.read_text())["servers"][0]["addrs"][0][1]
    return Proxy(name, proc, int(port), log)


def stop(p: Proxy) -> None:
    if p.proc.poll() is not None:
        return
    p.proc.terminate()
    try:
        p.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.proc.kill()
        p.proc.wait()


# -- load -----------------------------------------------------------------------------------------
def http_request_bytes(host: str) -> bytes:
    return f"GET http://{host}/bench HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def http_request(sock: socket.socket, req: bytes) -> None:
    """One keep-alive proxy request (``http_request_bytes``) on ``sock``."""
    sock.sendall(req)
    r = read_http_response(sock)
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status} through the proxy")


def connect_once(port: int, host: str, ctx: ssl.SSLContext, timeout: float = 10) -> None:
    """One CONNECT + TLS handshake (verifying the upstream) + one request, then close."""
    connect = f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode()
    req = f"GET /bench HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(connect)
        if read_http_response(sock).status != 200:
            raise RuntimeError("CONNECT refused")
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(req)
            if read_http_response(tls).status != 200:
                raise RuntimeError("request in the tunnel failed")


def http_worker(port: int, host: str, stop: float, counts: list[int], i: int) -> None:
    req = http_request_bytes(host)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        while time.monotonic() < stop:
            http_request(sock, req)
            counts[i] += 1
    finally:
        sock.close()


def connect_worker(
    port: int, host: str, stop: float, counts: list[int], i: int, ctx: ssl.SSLContext
) -> None:
    while time.monotonic() < stop:
        connect_once(port, host, ctx)
        counts[i] += 1


def run_load(
    proxy: Proxy, scenario: str, seconds: float, clients: int, ctx: ssl.SSLContext
) -> tuple[float, float]:
    """Drive ``proxy`` for ``seconds``; return (ops/s, mitmdump CPU ms per op)."""
    kind, which = scenario.split("-")
    host = HIT_HOST if which == "hit" else MISS_HOST
    counts = [0] * clients
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds
    target: Callable[..., None]
    extra: tuple[object, ...] = ()
    if kind == "http":
        target = http_worker
    else:
        target, extra = connect_worker, (ctx,)

    def guarded(i: int) -> None:
        try:
            target(proxy.port, host, stop, counts, i, *extra)
        except BaseException as e:  # reported after the run
            errors.append(e)

    cpu0, t0 = proxy.cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.monotonic() - t0, proxy.cpu_seconds() - cpu0
    if errors:
        raise RuntimeError(f"{proxy.name}/{scenario}: {errors[0]!r}")
    ops = sum(counts)
    return ops / elapsed, (cpu * 1000 / ops if ops else float("nan"))


# -- report ---------------------------------------------------------------------------------------
def report(
    res: Results, rss: dict[str, float], meta: dict[str, object], scenarios: dict[str, list[str]]
) -> str:
    lines = [
        f"Command: `{meta['command']}`; {meta['rounds']} interleaved rounds × {meta['seconds']} s "
        f"per run, {meta['clients']} concurrent clients; mitmproxy {meta['mitmproxy']}, "
        f"Python {meta['python']}, {meta['cpus']} CPUs ("
        + (
            "mitmdump pinned to CPU 0, load generator and upstreams on the others"
            if meta["pinned"]
            else "unpinned: load generator, upstreams and mitmdump share every CPU"
        )
        + "). Synthetic user list: "
        f"{meta['synthetic']:,} domains; `block_list`: {meta['block_list']:,} `~d` filters.",
        "",
        "| scenario | config | median ops/s | median ratio to plain | mitmdump CPU ms/op |",
        "|---|---|---|---|---|",
    ]
    for scenario, configs in scenarios.items():
        for config in configs:
            key = (scenario, config)
            ops = statistics.median(res.ops[key])
            ratio = statistics.median(res.ratios[key]) if config != "plain" else 1.0
            cpu = statistics.median(res.cpu_ms[key])
            lines.append(f"| {scenario} | {config} | {ops:,.0f} | {ratio:.2f} | {cpu:.2f} |")
    lines += [
        "",
        "Resident memory at the end (VmRSS): "
        + ", ".join(f"{k} {v:,.0f} MB" for k, v in rss.items())
        + f". egresswatch adds **{rss['addon'] - rss['plain']:,.0f} MB** over plain mitmdump "
        f"(catalogue of {meta['synthetic']:,} + bundled domains, matcher, metrics, writer).",
    ]
    return "\n".join(lines)


def write_docs(text: str) -> Path:
    path = REPO / "docs" / "benchmarks.md"
    section = f"## Proxy\n\n{text}\n"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    m = re.search(r"^## Proxy\n.*?(?=^## |\Z)", old, flags=re.S | re.M)
    new = (
        old[: m.start()] + section + "\n" + old[m.end() :] if m else old.rstrip() + "\n\n" + section
    )
    path.write_text(new.rstrip() + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds × 2 s, 100k-domain list")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--domains", type=int)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument(
        "--no-pin", action="store_true", help="do not pin mitmdump to CPU 0 and the load elsewhere"
    )
    ap.add_argument("--no-restart", action="store_true", help="keep each mitmdump for all rounds")
    a = ap.parse_args()
    rounds = a.rounds or (2 if a.quick else 5)
    seconds = a.seconds or (2.0 if a.quick else 5.0)
    n_domains = a.domains or (100_000 if a.quick else 1_000_000)

    import mitmproxy.version

    scenarios = {
        "http-miss": ["plain", "hook", "addon", "block_list"],
        "http-hit": ["plain", "addon", "addon-memstore"],
        "connect-miss": ["plain", "hook", "addon", "block_list"],
        "connect-hit": ["plain", "addon", "addon-memstore"],
    }
    proxy_cpus = pin_cpus(not a.no_pin)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as t:
        tmp = Path(t)
        ups, info = start_upstreams(tmp)
        procs: list[Proxy] = []
        try:
            routes, ca = upstream_routes(info)
            print(f"writing a {n_domains:,}-domain synthetic list…", file=sys.stderr)
            lists = synthetic_list(tmp / "lists", n_domains)
            blocks = bundled_block_list()
            configs = build_configs(tmp, lists, blocks)
            proxies: dict[str, Proxy] = {}
            ctx = ssl.create_default_context(cafile=ca)

            def launch(name: str, run: int) -> None:
                """Start (or restart) one config and warm it up on each of its scenarios (which
                also checks that it works)."""
                old = proxies.get(name)
                if old is not None:
                    stop(old)
                t0 = time.monotonic()
                proxies[name] = p = start_proxy(
                    f"{name}-{run}", tmp, routes, ca, configs[name], proxy_cpus
                )
                procs.append(p)
                if run == 0:
                    print(f"{name}: ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
                for scenario, names in scenarios.items():
                    if name in names:
                        run_load(p, scenario, 0.5, a.clients, ctx)

            for name in configs:
                launch(name, 0)
            res = Results()
            for r in range(rounds):
                if r and not a.no_restart:
                    # Fresh processes each round: a process's memory layout (hash seeds, ASLR)
                    # shifts its speed by several per cent for its whole life; new processes
                    # every round make that part of the spread the median absorbs.
                    for name in configs:
                        launch(name, r)
                for scenario, names in scenarios.items():
                    order = names[r % len(names) :] + names[: r % len(names)]
                    got: dict[str, float] = {}
                    for name in order:
                        ops, cpu = run_load(proxies[name], scenario, seconds, a.clients, ctx)
                        res.ops.setdefault((scenario, name), []).append(ops)
                        res.cpu_ms.setdefault((scenario, name), []).append(cpu)
                        got[name] = ops
                    for name in names:
                        res.ratios.setdefault((scenario, name), []).append(got[name] / got["plain"])
                    print(
                        f"round {r + 1}/{rounds} {scenario}: "
                        + ", ".join(f"{k} {v:,.0f}/s" for k, v in got.items()),
                        file=sys.stderr,
                    )
            rss = {name: p.rss_mb() for name, p in proxies.items()}
        finally:
            for p in procs:
                stop(p)
            assert ups.stdin is not None
            ups.stdin.close()
            ups.wait(timeout=10)
        for p in procs:
            text = p.log.read_text(errors="replace")
            if "Traceback" in text or "Addon error" in text:
                print(f"warning: {p.name} logged an error:\n{text[-2000:]}", file=sys.stderr)
    meta: dict[str, object] = {
        "command": "python bench/proxy.py" + (" --quick" if a.quick else ""),
        "rounds": rounds,
        "seconds": seconds,
        "clients": a.clients,
        "mitmproxy": mitmproxy.version.VERSION,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "pinned": proxy_cpus is not None,
        "synthetic": n_domains,
        "block_list": len(blocks),
    }
    text = report(res, rss, meta, scenarios)
    print(text)
    if a.write_docs:
        print(f"wrote {write_docs(text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
