"""Event-store benchmark: ``python bench/store.py [--quick] [--pg-url URL]``.

Measures, in one run:

1. sustained events/s into SQLite and PostgreSQL **through the EventWriter** (hash chain, rollups,
   batching: everything production does), against a baseline in the same run: raw
   ``executemany`` inserts of the same rows without chain or rollups, in transactions of the
   writer's batch size, with the store's pragmas; prints the ratio (``--write-only`` runs this
   alone, A/B alternating, on two mixes of events: ``bench/_writers.py``);
2. database bytes per million events (after the write test);
3. full chain verification throughput (events/s) on both backends, over the written events;
4. the monthly report over 10M synthetic events, timed as the real ``report.build_report`` call:
   the month's rollups (synthesised directly as the rollup rows 10M hits produce: one row per
   day x client x host x action), a start event and a heartbeat per minute per instance; then,
   as in production, one recorded full ``verify()`` (the nightly ``egresswatch db verify``), a
   few hours of new traffic (hits on the 1st of the next month), and ``build_report`` with its
   default incremental verification (which recomputes only the rows after the recorded head);
5. the cost of signed checkpoints (``--checkpoints-only`` runs just 5 and 6): events/s through
   the EventWriter without and with a signer (alternating rounds, same run; the signer at a
   1-second interval, 60x the production default, so that the cost is visible), and the cost of
   one checkpoint (read head and verification runs, sign, append with fsync);
6. ``egresswatch db verify`` on a large SQLite store (``--large N`` events, one signed checkpoint
   per 250 events, as 10M events a month signed every 60 s gives; ``--large-only`` runs just 6):
   the chain recomputed, the rollups recounted from the chained rows, the store checked against
   every checkpoint; each step timed.

PostgreSQL: ``--pg-url`` or, by default, a throw-away server started from
``/usr/lib/postgresql/*/bin`` in a temp dir (as the ``postgres`` user when run as root).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from collections.abc import Callable
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from _writers import through_writer  # bench/ (the script's directory) is on sys.path
from egresswatch.checkpoint import Checkpoint
from egresswatch.checkpoint import CheckpointLog
from egresswatch.checkpoint import load_or_create_signer
from egresswatch.checkpoint import read_entries
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import open_store
from egresswatch.store._codec import COLUMN_SQL
from egresswatch.store._codec import COLUMNS
from egresswatch.store._rollups import day_of
from egresswatch.witness import make_checkpoint
from egresswatch.witness import verify_checkpoints
from egresswatch.witness import verify_rollups
from egresswatch.writer import backlog_batch

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


SIGNALS = ("sni", "connect", "http_host", "dns")


def bench_hit(
    i: int, t: float, instance: str, signal: str, app: str, host: str, who: tuple[str, str, str]
) -> Event:
    """The ``i``-th hit of a run started at ``t``; ``who`` is (action, client, department)."""
    action, client, department = who
    return Event(
        ts=t + i * 0.0001,
        kind=EventKind.HIT,
        instance=instance,
        event_id=f"{i:016x}",
        signal=signal,
        host=host,
        app=app,
        regimes=APPS[app],
        action=action,
        rule=f"{app}.example",
        client=client,
        department=department,
        catalogue_version="c" * 64,
        policy_version="p" * 64,
    )


def synthetic_events(n: int, instance: str = "bench-1", seed: int = 1) -> list[Event]:
    """The worst mix: every field drawn uniformly, so nearly every hit is its own rollup row."""
    rnd = random.Random(seed)
    apps = list(APPS)
    out = []
    t = time.time()
    for i in range(n):
        app = rnd.choice(apps)
        signal = rnd.choice(SIGNALS)
        host = rnd.choice(HOSTS[app])
        who = (rnd.choice(ACTIONS), rnd.choice(CLIENTS), rnd.choice(DEPARTMENTS))
        out.append(bench_hit(i, t, instance, signal, app, host, who))
    return out


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
            "decided_by": e.decided_by,
            "decided_id": e.decided_id,
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
    conn.execute("PRAGMA cache_size=-32000")  # the store's pragmas (egresswatch.store.sqlite)
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
    """A start event (with its client identity mode, as the addon writes) and a heartbeat per
    minute per instance."""
    starts = [
        Event(
            ts=MONTH_START - 30.0,
            kind=EventKind.START,
            instance=f"edge-{i + 1}",
            event_id=f"start{i}",
            detail={"egresswatch": "bench", "client_identity": "address"},
        )
        for i in range(instances)
    ]
    return starts + [
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


def monthly_report_path(url: str, new_events: int) -> dict[str, float]:
    """Time the monthly report as production makes it; seconds per step (and counts, "_"-keyed)."""
    from egresswatch.report import build_report

    end = datetime(2026, 8, 1, tzinfo=UTC).timestamp()
    out: dict[str, float] = {}
    store = open_store(url)
    try:
        t0 = time.perf_counter()
        full = store.verify()  # recorded, like the nightly `egresswatch db verify`
        out["full verify() of the raw events (recorded run)"] = time.perf_counter() - t0
        assert full.ok, full.problems
        out["_verified"] = full.checked
        # Traffic since that run: hits in the first hours of August (outside the report month).
        fresh = synthetic_events(new_events, instance="edge-1", seed=3)
        fresh = [dataclasses.replace(e, ts=end + i * 0.25) for i, e in enumerate(fresh)]
        for i in range(0, len(fresh), 5000):
            store.write(fresh[i : i + 5000])
        t0 = time.perf_counter()
        report = build_report(store, "2026-07", now=datetime(2026, 8, 2, tzinfo=UTC))
        out["report.build_report() with incremental verify (the default)"] = (
            time.perf_counter() - t0
        )
        assert report.integrity.ok and report.integrity.mode == "incremental"
        assert report.integrity.checked_now == new_events, report.integrity
        out["_total"] = sum(t.events for t in report.totals)
        out["_checked_now"] = report.integrity.checked_now
    finally:
        store.close()
    return out


def checkpoint_cost(tmp: Path, events: list[Event], rounds: int) -> dict[str, float]:
    """Writer events/s without and with a signer (alternating rounds, fresh store each) and the
    cost of one checkpoint."""
    plain: list[float] = []
    signed: list[float] = []
    signs = 0
    for r in range(rounds):
        for kind in ("plain", "signed") if r % 2 == 0 else ("signed", "plain"):
            d = tmp / f"cp-{kind}-{r}"
            d.mkdir()
            rate, _ = through_writer(
                f"sqlite://{d / 'events.db'}", events, d if kind == "signed" else None
            )
            (signed if kind == "signed" else plain).append(rate)
            if kind == "signed":
                signs += len(read_entries([d / "checkpoints.log"]))
            shutil.rmtree(d)
    d = tmp / "cp-one"
    d.mkdir()
    store = open_store(f"sqlite://{d / 'events.db'}")
    store.write(events[:1000])
    signer, _ = load_or_create_signer(d / "signing.key", name="bench")
    log = CheckpointLog(d / "checkpoints.log")
    n = 200
    t0 = time.perf_counter()
    for i in range(n):
        cp = make_checkpoint(store, "bench-1", time.time() + i)
        assert cp is not None
        log.append(signer.sign(cp))
    one = (time.perf_counter() - t0) / n
    store.close()
    shutil.rmtree(d)
    plain.sort()
    signed.sort()
    return {
        "plain": plain[len(plain) // 2],
        "signed": signed[len(signed) // 2],
        "signs": signs / rounds,
        "one_ms": one * 1000,
    }


def large_verify(tmp: Path, n: int, per_checkpoint: int = 250) -> dict[str, float]:
    """Fill a SQLite store with ``n`` hits (batches of 10,000 through ``store.write``; a signed
    checkpoint for every ``per_checkpoint`` events, made from the stored chain hashes and
    appended once per batch, to fill fast) and time each step of ``egresswatch db verify``."""
    store = open_store(f"sqlite://{tmp / 'large.db'}")
    signer, _ = load_or_create_signer(tmp / "large.key", name="bench")
    t0 = time.perf_counter()
    batch = 10_000
    with open(tmp / "large.log", "a", encoding="utf-8") as log:
        for start in range(0, n, batch):
            # 300 clients, each in one department: ~6 hits per rollup row a day (the month
            # model above assumes ~10), not one row per hit.
            events = [
                dataclasses.replace(
                    e,
                    event_id=f"{start + i:016x}",
                    ts=MONTH_START + (start + i) * 0.25,
                    client=CLIENTS[(start + i) * 7 % 300],
                    department=DEPARTMENTS[(start + i) * 7 % 300 % len(DEPARTMENTS)],
                )
                for i, e in enumerate(synthetic_events(min(batch, n - start), seed=start))
            ]
            store.write(events)
            sizes = list(range(start + per_checkpoint, start + len(events) + 1, per_checkpoint))
            found = store.chain_hashes_at("bench-1", sizes)
            log.write(
                "".join(
                    signer.sign(Checkpoint("bench-1", k, found[k][0], MONTH_START + k * 0.25))
                    + "\n"
                    for k in sizes
                )
            )
    out: dict[str, float] = {"_fill": time.perf_counter() - t0}
    t0 = time.perf_counter()
    result = store.verify()
    out["chain recomputed (store.verify(), full, recorded)"] = time.perf_counter() - t0
    assert result.ok and result.checked == n, result.problems[:3]
    t0 = time.perf_counter()
    problems, _ = verify_rollups(store)
    out["rollups recounted from the chained rows"] = time.perf_counter() - t0
    assert not problems, problems[:3]
    t0 = time.perf_counter()
    entries = read_entries([tmp / "large.log"])
    witness = verify_checkpoints(store, entries, signer.verifier)
    out[f"store checked against {len(entries):,} signed checkpoints"] = time.perf_counter() - t0
    assert witness.ok and witness.checked == len(entries), witness.problems[:3]
    out["_checkpoints"] = len(entries)
    out["_rollups"] = store.stats().rows["rollups"]
    store.checkpoint_wal()  # type: ignore[attr-defined]
    out["_bytes"] = store.stats().bytes  # type: ignore[attr-defined]
    store.close()
    return out


def _print_checkpoint_cost(c: dict[str, float], n: int) -> None:
    print(f"SQLite   checkpoints: writer {c['plain']:,.0f} events/s without a signer, "
          f"{c['signed']:,.0f} with one signing every 1 s (ratio {c['signed'] / c['plain']:.2f}; "
          f"{c['signs']:.0f} checkpoints per {n:,}-event run; medians of the rounds)")  # fmt: skip
    print(f"         one checkpoint (head + runs read, Ed25519 sign, append + fsync): "
          f"{c['one_ms']:.2f} ms")  # fmt: skip


def _print_large(v: dict[str, float], n: int) -> None:
    print(f"SQLite   db verify of {n:,} events ({v['_bytes'] / 1e9:.2f} GB, "
          f"{v['_rollups']:,.0f} rollup rows; filled in {v['_fill']:.0f} s with "
          f"{v['_checkpoints']:,.0f} checkpoints):")  # fmt: skip
    total = 0.0
    for what, secs in v.items():
        if not what.startswith("_"):
            total += secs
            print(f"    {secs:7.1f} s  {what}")
    print(f"    {total:7.1f} s  in all = {n / total:,.0f} events/s; "
          f"10M events at this rate: {10_000_000 / (n / total):,.0f} s")  # fmt: skip


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
    print(f"             ({times['_verified']:,.0f} rows in the full run; "
          f"{times['_checked_now']:,.0f} new rows verified by the report)")  # fmt: skip


def _print_verify(name: str, rate: float) -> None:
    print(f"{name} verify: {rate:9,.0f} events/s full chain verification "
          f"(10M events in {10_000_000 / rate:,.0f} s)")  # fmt: skip


def _print_write(
    name: str, rate: float, base: float, size: int, n: int, batch: int | None = None
) -> None:
    batch = batch or backlog_batch("sqlite" if name.startswith("SQLite") else "postgresql")
    print(f"{name} writer: {rate:9,.0f} events/s through EventWriter, batches of {batch:,} "
          f"(baseline raw executemany {base:,.0f}/s; ratio {rate / base:.2f})")  # fmt: skip
    if not size:
        return
    print(
        f"{name} size:   {size / n:9,.0f} bytes per event = {size / n:,.0f} MB per million events"
    )


def _full_run(
    name: str,
    urls: tuple[str, str],
    baseline: Callable[[], float],
    events: list[Event],
    n_month: int,
    n_new: int,
) -> None:
    """The full run's figures for one backend: the writer into ``urls[0]`` then ``baseline()``
    (the raw baseline's events/s), the size, a full verify, and a month's report (``urls[1]``)."""
    (url, month_url), n_write = urls, len(events)
    rate, _ = through_writer(url, events)
    base = baseline()
    s = open_store(url)
    if hasattr(s, "checkpoint_wal"):  # SQLite: the WAL folded in before the file is measured
        s.checkpoint_wal()
    size = s.stats().bytes  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    checked = s.verify().checked
    verify_rate = checked / (time.perf_counter() - t0)
    s.close()
    _print_write(name, rate, base, size, n_write)
    _print_verify(name, verify_rate)
    t0 = time.perf_counter()
    rows = load_month(month_url, n_month)
    load = time.perf_counter() - t0
    _print_month(name, monthly_report_path(month_url, n_new), rows, load, n_month)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run, ~1 minute)")
    ap.add_argument("--pg-url", help="PostgreSQL server URL prefix ending in '/' (databases "
                    "bench_write, bench_base, bench_month must exist and be empty)")  # fmt: skip
    ap.add_argument("--checkpoints-only", action="store_true",
                    help="only the checkpoint cost and the large verify (5 and 6)")  # fmt: skip
    ap.add_argument("--large", type=int, metavar="N",
                    help="events in the large verify store (default 1,000,000; --quick 100,000)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the checkpoint cost (4)")
    ap.add_argument("--large-only", action="store_true", help="only the large verify (6)")
    ap.add_argument("--write-only", action="store_true",
                    help="only the writer against raw executemany (1), both backends")  # fmt: skip
    ap.add_argument("--writers", type=int, metavar="K",
                    help="only K writers (processes) at once into one SQLite file and one "
                    "PostgreSQL database, against one writer (see bench/_writers.py)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.writers or args.write_only:
        from _writers import write_only

        return write_only(sys.modules[__name__], args.quick, args.pg_url, args.writers)
    n_write = 30_000 if args.quick else 300_000
    n_month = 1_000_000 if args.quick else 10_000_000
    # New hits between the nightly full verify and the report: ~3 hours at 10M events a month.
    n_new = 4_000 if args.quick else 40_000
    print(f"egresswatch store benchmark ({'quick' if args.quick else 'full'}); "
          f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    events = synthetic_events(n_write)
    n_large = args.large or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="egresswatch-bench-") as d:
        tmp = Path(d)
        if not args.large_only:
            _print_checkpoint_cost(checkpoint_cost(tmp, events, args.rounds), n_write)
        _print_large(large_verify(tmp, n_large), n_large)
    if args.checkpoints_only or args.large_only:
        return 0
    with tempfile.TemporaryDirectory(prefix="egresswatch-bench-") as d:
        tmp = Path(d)
        _full_run(
            "SQLite  ",
            (f"sqlite://{tmp / 'write.db'}", f"sqlite://{tmp / 'month.db'}"),
            lambda: baseline_sqlite(tmp / "base.db", events, backlog_batch("sqlite")),
            events,
            n_month,
            n_new,
        )
    with temp_postgres() if not args.pg_url else contextlib.nullcontext(args.pg_url) as pg:
        if pg is not None:
            _full_run(
                "Postgres",
                (pg + "bench_write", pg + "bench_month"),
                lambda: baseline_postgres(pg + "bench_base", events, backlog_batch("postgresql")),
                events,
                n_month,
                n_new,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
