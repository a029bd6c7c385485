"""Event-store benchmark: ``python bench/store.py [--quick] [--pg-url URL]``.

Measures, in one run:

1. sustained events/s into SQLite and PostgreSQL **through the EventWriter** (hash chain, rollups,
   batching: everything production does), against a baseline in the same run: raw
   ``executemany`` inserts of the same rows without chain or rollups; prints the ratio;
2. database bytes per million events (after the write test);
3. the monthly report's store path over 10M synthetic events: the month's rollups (synthesised
   directly as the rollup rows 10M hits produce: one row per day x client x host x action) plus
   a heartbeat per minute per instance, then ``rollups()`` + ``lifecycle()`` + the aggregation a
   report does (or ``egresswatch.report.build_report`` when that module is present).

PostgreSQL: ``--pg-url`` or, by default, a throw-away server started from
``/usr/lib/postgresql/*/bin`` in a temp dir (as the ``postgres`` user when run as root).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import EventStore
from egresswatch.store import open_store
from egresswatch.store._codec import COLUMN_SQL
from egresswatch.store._codec import COLUMNS
from egresswatch.store._codec import day_of
from egresswatch.writer import EventWriter

APPS = {
    "tiktok": ("us-far-52-204-27",),
    "wechat": ("us-eo-13943",),
    "wechat-pay": ("us-eo-13971",),
    "alipay": ("us-eo-13971",),
    "deepseek": ("au-pspf-2025-01", "us-state-bans"),
    "camscanner": ("us-eo-13971",),
    "shareit": ("us-eo-13971",),
    "tencent-qq": ("us-eo-13971",),
    "wps-office": ("us-eo-13971",),
    "capcut": ("us-far-52-204-27",),
    "lemon8": ("us-far-52-204-27",),
    "vmate": ("us-eo-13971",),
}
HOSTS = {app: [f"{p}.{app}.example" for p in ("www", "api", "cdn", "log")] for app in APPS}
ACTIONS = ("blocked", "monitor", "would_block", "exempted")
DEPARTMENTS = ("sales", "eng", "finance", "hr", "ops", "legal", "support", "exec")
CLIENTS = [f"10.{i // 250}.{i % 250}.{(i * 7) % 250}" for i in range(2000)]
MONTH_START = datetime(2026, 7, 1, tzinfo=UTC).timestamp()
DAYS = 31


def synthetic_events(n: int, instance: str = "bench-1", seed: int = 1) -> list[Event]:
    rnd = random.Random(seed)
    apps = list(APPS)
    out = []
    t = time.time()
    for i in range(n):
        app = rnd.choice(apps)
        out.append(
            Event(
                ts=t + i * 0.0001,
                kind=EventKind.HIT,
                instance=instance,
                event_id=f"{i:016x}",
                signal=rnd.choice(("sni", "connect", "http_host", "dns")),
                host=rnd.choice(HOSTS[app]),
                app=app,
                regimes=APPS[app],
                action=rnd.choice(ACTIONS),
                rule=f"{app}.example",
                client=rnd.choice(CLIENTS),
                department=rnd.choice(DEPARTMENTS),
                catalogue_version="c" * 64,
                policy_version="p" * 64,
            )
        )
    return out


def through_writer(url: str, events: list[Event]) -> tuple[float, int]:
    written = [0]
    dropped = [0]
    w = EventWriter(
        lambda: open_store(url),
        queue_size=len(events) + 1,
        on_written=lambda n: written.__setitem__(0, written[0] + n),
        on_dropped=lambda n: dropped.__setitem__(0, dropped[0] + n),
    )
    w.start()
    t0 = time.perf_counter()
    for e in events:
        w.put(e)
    w.close(timeout=600)
    elapsed = time.perf_counter() - t0
    assert dropped[0] == 0 and written[0] == len(events), (written, dropped)
    return len(events) / elapsed, written[0]


def _raw_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    rows = []
    for i, e in enumerate(events, 1):
        values = {
            "instance": e.instance,
            "seq": i,
            "event_id": e.event_id,
            "ts": e.ts,
            "kind": str(e.kind),
            "signal": e.signal,
            "host": e.host,
            "app": e.app,
            "regimes": '["' + '","'.join(e.regimes) + '"]',
            "action": e.action,
            "rule": e.rule,
            "exception_id": None,
            "client": e.client,
            "user": None,
            "department": e.department,
            "catalogue_version": e.catalogue_version,
            "policy_version": e.policy_version,
            "detail": None,
            "leaf_hash": "0" * 64,
            "chain_hash": "0" * 64,
        }
        rows.append(tuple(values[c] for c in COLUMNS))
    return rows


def baseline_sqlite(path: Path, events: list[Event], batch: int = 1000) -> float:
    open_store(f"sqlite://{path}").close()  # same schema, indexes and triggers
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = f"INSERT INTO events ({COLUMN_SQL}) VALUES ({', '.join('?' * len(COLUMNS))})"
    t0 = time.perf_counter()
    rows = _raw_rows(events)
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(events) / elapsed


def baseline_postgres(url: str, events: list[Event], batch: int = 1000) -> float:
    import psycopg

    open_store(url).close()
    sql = f"INSERT INTO events ({COLUMN_SQL}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # no triggers in the baseline
        t0 = time.perf_counter()
        rows = _raw_rows(events)
        for i in range(0, len(rows), batch):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows[i : i + batch])
        elapsed = time.perf_counter() - t0
    return len(events) / elapsed


def synthetic_rollups(total_events: int, seed: int = 2) -> Iterator[tuple[Any, ...]]:
    """Rollup rows for ``total_events`` hits over the month (3 instances)."""
    rnd = random.Random(seed)
    apps = list(APPS)
    # A client hits on average ~10 events per (day, host, action): about total/10 rows.
    rows = max(1, total_events // 10)
    per_row = total_events // rows
    extra = total_events - per_row * rows
    seen: set[tuple[Any, ...]] = set()
    made = 0
    while made < rows:
        d = rnd.randrange(DAYS)
        day_start = MONTH_START + d * 86400
        app = rnd.choice(apps)
        key = (
            day_of(day_start),
            f"edge-{rnd.randrange(3) + 1}",
            app,
            ",".join(sorted(APPS[app])),
            rnd.choice(ACTIONS),
            rnd.choice(DEPARTMENTS),
            rnd.choice(CLIENTS),
            rnd.choice(HOSTS[app]),
        )
        if key in seen:
            continue
        seen.add(key)
        n = per_row + (extra if made == 0 else 0)
        first = day_start + rnd.uniform(0, 40000)
        made += 1
        yield (*key, n, first, first + rnd.uniform(0, 40000))


def heartbeats(instances: int = 3) -> list[Event]:
    return [
        Event(
            ts=MONTH_START + m * 60.0,
            kind=EventKind.HEARTBEAT,
            instance=f"edge-{i + 1}",
            event_id=f"hb{i}-{m}",
        )
        for i in range(instances)
        for m in range(DAYS * 1440)
    ]


def load_month(url: str, total_events: int) -> int:
    open_store(url).close()  # schema
    rows = list(synthetic_rollups(total_events))
    cols = "day, instance, app, regime, action, department, client, host, events, first_seen, last_seen"
    if url.startswith("sqlite"):
        from egresswatch.store.sqlite import sqlite_path

        conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO rollups ({cols}) VALUES ({', '.join('?' * 11)})", rows)
        conn.execute("COMMIT")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor() as cur:
            with cur.copy(f"COPY rollups ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
    store = open_store(url)
    hb = heartbeats()
    for i in range(0, len(hb), 5000):
        store.write(hb[i : i + 5000])
    store.close()
    return len(rows)


def monthly_report_path(url: str) -> dict[str, float]:
    """Time what a monthly report reads and aggregates, several ways; seconds per way."""
    end = datetime(2026, 8, 1, tzinfo=UTC).timestamp()
    out: dict[str, float] = {}
    store = open_store(url)
    try:
        t0 = time.perf_counter()
        total = _aggregate_summaries(store, MONTH_START, end)
        out["summarise() grouped in SQL + lifecycle()"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        total2 = _aggregate(store, MONTH_START, end)
        out["rollups() + aggregation in Python + lifecycle()"] = time.perf_counter() - t0
        assert total == total2, (total, total2)
        try:
            from egresswatch.report import build_report
        except ImportError:
            pass
        else:
            t0 = time.perf_counter()
            # verify=False: the chain check is timed on its own (verify events/s above).
            build_report(store, "2026-07", now=datetime(2026, 8, 2, tzinfo=UTC), verify=False)
            out["report.build_report(verify=False), as it reads today"] = time.perf_counter() - t0
    finally:
        store.close()
    out["_total"] = total
    return out


def _aggregate_summaries(store: EventStore, start: float, end: float) -> int:
    """The report's numbers from grouped queries (``EventStore.summarise``)."""
    totals = store.summarise(start, end, ("app", "action"))
    store.summarise(start, end, ("app", "regime", "action"))
    store.summarise(start, end, ("app", "department"))
    store.summarise(start, end, ("day", "app"))
    clients = store.summarise(start, end, ("client",))
    hosts = store.summarise(start, end, ("host",))
    sorted(clients, key=lambda s: -s.events)[:20]
    sorted(hosts, key=lambda s: -s.events)[:20]
    lifecycle = store.lifecycle(start, end)
    assert lifecycle and totals
    return sum(s.events for s in totals)


def _aggregate(store: EventStore, start: float, end: float) -> int:
    """What a report computes from rollups (stand-in while report.py is not there)."""
    totals: dict[tuple[str, str], list[Any]] = {}
    clients: dict[tuple[str, str], set[str]] = defaultdict(set)
    per_regime: Counter[tuple[str, str]] = Counter()
    per_dept: Counter[tuple[str, str]] = Counter()
    top_clients: Counter[str] = Counter()
    top_hosts: Counter[str] = Counter()
    daily: Counter[str] = Counter()
    total = 0
    for r in store.rollups(start, end):
        key = (r.app, r.action)
        agg = totals.get(key)
        if agg is None:
            totals[key] = [r.events, r.first_seen, r.last_seen]
        else:
            agg[0] += r.events
            agg[1] = min(agg[1], r.first_seen)
            agg[2] = max(agg[2], r.last_seen)
        clients[key].add(r.client)
        for regime in r.regime_list:
            per_regime[(r.app, regime)] += r.events
        per_dept[(r.app, r.department)] += r.events
        top_clients[r.client] += r.events
        top_hosts[r.host] += r.events
        daily[r.day] += r.events
        total += r.events
    lifecycle = store.lifecycle(start, end)
    beats = Counter(e.instance for e in lifecycle if e.kind == EventKind.HEARTBEAT)
    top_clients.most_common(20)
    top_hosts.most_common(20)
    assert beats and totals
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temp_postgres() -> Iterator[str | None]:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not bins:
        print(
            "PostgreSQL: skipped (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)"
        )
        yield None
        return
    bindir = Path(bins[0]).parent
    prefix: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="egresswatch-bench-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = tmp / "data"
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    # Durable settings (fsync on) so the figure means something; only the socket is private.
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c shared_buffers=256MB"
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-o", opts, "-w", "start"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    try:
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True
        ) as c:
            c.execute("CREATE DATABASE bench_write")
            c.execute("CREATE DATABASE bench_base")
            c.execute("CREATE DATABASE bench_month")
        yield f"postgresql://postgres@127.0.0.1:{port}/"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True, env=env,
        )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


def _print_month(name: str, times: dict[str, float], rows: int, load: float, n: int) -> None:
    assert times["_total"] == n, times
    print(f"{name} month: {n:,} events = {rows:,} rollup rows + {DAYS * 1440 * 3:,} heartbeats "
          f"(loaded in {load:.1f} s)")  # fmt: skip
    for what, secs in times.items():
        if not what.startswith("_"):
            print(f"    {secs:7.2f} s  {what}")


def _print_write(name: str, rate: float, base: float, size: int, n: int) -> None:
    print(f"{name} writer: {rate:9,.0f} events/s through EventWriter "
          f"(baseline raw executemany {base:,.0f}/s; ratio {rate / base:.2f})")  # fmt: skip
    print(
        f"{name} size:   {size / n:9,.0f} bytes per event = {size / n:,.0f} MB per million events"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run, ~1 minute)")
    ap.add_argument("--pg-url", help="PostgreSQL server URL prefix ending in '/' (databases "
                    "bench_write, bench_base, bench_month must exist and be empty)")  # fmt: skip
    args = ap.parse_args(argv)
    n_write = 30_000 if args.quick else 300_000
    n_month = 1_000_000 if args.quick else 10_000_000
    print(f"egresswatch store benchmark ({'quick' if args.quick else 'full'}); "
          f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    events = synthetic_events(n_write)
    with tempfile.TemporaryDirectory(prefix="egresswatch-bench-") as d:
        tmp = Path(d)
        url = f"sqlite://{tmp / 'write.db'}"
        rate, _ = through_writer(url, events)
        base = baseline_sqlite(tmp / "base.db", events)
        s = open_store(url)
        s.checkpoint_wal()  # type: ignore[attr-defined]
        size = s.stats().bytes  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        checked = s.verify().checked
        verify_rate = checked / (time.perf_counter() - t0)
        s.close()
        _print_write("SQLite  ", rate, base, size, n_write)
        print(f"SQLite   verify: {verify_rate:9,.0f} events/s")
        murl = f"sqlite://{tmp / 'month.db'}"
        t0 = time.perf_counter()
        rows = load_month(murl, n_month)
        load = time.perf_counter() - t0
        _print_month("SQLite  ", monthly_report_path(murl), rows, load, n_month)
    with temp_postgres() if not args.pg_url else contextlib.nullcontext(args.pg_url) as pg:
        if pg is not None:
            rate, _ = through_writer(pg + "bench_write", events)
            base = baseline_postgres(pg + "bench_base", events)
            s = open_store(pg + "bench_write")
            size = s.stats().bytes  # type: ignore[attr-defined]
            s.close()
            _print_write("Postgres", rate, base, size, n_write)
            t0 = time.perf_counter()
            rows = load_month(pg + "bench_month", n_month)
            load = time.perf_counter() - t0
            _print_month("Postgres", monthly_report_path(pg + "bench_month"), rows, load, n_month)
    return 0


if __name__ == "__main__":
    sys.exit(main())
