"""Several event writers into one store at once (``bench/store.py --writers K``).

K processes (one per writer, as K proxies or K workers on a host would be) each write their own
instance's events through an :class:`~egresswatch.writer.EventWriter` into the same store URL,
started together; the figure is all events over the wall time from the first start to the last
close. SQLite: one file in WAL mode, each commit takes the write lock (``BEGIN IMMEDIATE``) and a
waiting writer retries within the 10 s busy timeout, so writers take turns. PostgreSQL: one
connection per writer; each locks only its own instance's chain (an advisory lock).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egresswatch.events import Event
from egresswatch.store import backend_of
from egresswatch.store import open_store
from egresswatch.writer import EventWriter
from egresswatch.writer import backlog_batch


def _one(url: str, events: list[Event], start: Any, out: Any) -> None:
    written = [0]
    w = EventWriter(
        lambda: open_store(url),
        queue_size=len(events) + 1,
        batch_size=backlog_batch(backend_of(url)),  # what the proxy uses
        on_written=lambda n: written.__setitem__(0, written[0] + n),
    )
    start.wait()
    t0 = time.time()
    w.start()
    for e in events:
        w.put(e)
    w.close(timeout=600)
    out.put((t0, time.time(), written[0]))


def several_writers(
    url: str, make_events: Callable[[int, str, int], list[Event]], per_writer: int, k: int
) -> tuple[float, list[float]]:
    """(total events/s, each writer's events/s) for ``k`` writers of ``per_writer`` events."""
    open_store(url).close()  # the schema exists before the writers race to it
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out = ctx.Queue()
    batches = [make_events(per_writer, f"bench-w{i}", i + 10) for i in range(k)]
    procs = [ctx.Process(target=_one, args=(url, b, start, out)) for b in batches]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start.set()
    results = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    assert all(r[2] == per_writer for r in results), results
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return k * per_writer / wall, [per_writer / (r[1] - r[0]) for r in results]


def write_only(b: Any, quick: bool, pg_url: str | None, writers: int | None) -> int:
    """Part 1 alone (``--write-only``), or one against K writers at once (``--writers K``);
    ``b`` is ``bench/store.py`` (its event maker, baselines and printing)."""
    n = 30_000 if quick else 300_000
    print(f"egresswatch store write benchmark; {n:,} events; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    events = b.synthetic_events(n)
    with tempfile.TemporaryDirectory(prefix="egresswatch-bench-") as d:
        tmp = Path(d)
        if writers:
            for k in (1, writers):
                total, each = several_writers(
                    f"sqlite://{tmp}/w{k}.db", b.synthetic_events, n // k, k
                )
                _print_writers("SQLite  ", k, total, each)
        else:
            base = b.baseline_sqlite(tmp / "base.db", events)
            for batch in (1000, 5000):
                rate, _ = b.through_writer(f"sqlite://{tmp}/write{batch}.db", events, batch=batch)
                b._print_write("SQLite  ", rate, base, 0, n, batch)
    with b.temp_postgres() if not pg_url else contextlib.nullcontext(pg_url) as pg:
        if pg is None:
            return 0
        if writers:
            import psycopg

            for k in (1, writers):
                with psycopg.connect(pg + "postgres", autocommit=True) as c:
                    c.execute(f"CREATE DATABASE bench_writers_{k}")
                total, each = several_writers(
                    pg + f"bench_writers_{k}", b.synthetic_events, n // k, k
                )
                _print_writers("Postgres", k, total, each)
        else:
            import psycopg

            base = b.baseline_postgres(pg + "bench_base", events)
            for batch in (1000, 5000):
                with psycopg.connect(pg + "postgres", autocommit=True) as c:
                    c.execute(f"CREATE DATABASE bench_write_{batch}")
                rate, _ = b.through_writer(pg + f"bench_write_{batch}", events, batch=batch)
                b._print_write("Postgres", rate, base, 0, n, batch)
    return 0


def _print_writers(name: str, k: int, total: float, each: list[float]) -> None:
    print(f"{name} {k} writer(s) at once: {total:9,.0f} events/s in all "
          f"(each {min(each):,.0f}..{max(each):,.0f}/s)")  # fmt: skip
