"""One writer against raw inserts (``bench/store.py --write-only``) and several event writers
into one store at once (``bench/store.py --writers K``).

``--write-only``: per backend and per mix of events (``worst``: uniform, every event its own
rollup row; ``zipf``: :func:`zipf_events`), writer and raw ``executemany`` alternating in A/B
rounds (:func:`_ab`), with the CPU per event of each side and the lateness of an asyncio loop
beside the writer (:func:`loop_lag`).

``--writers K``:
K processes (one per writer, as K proxies or K workers on a host would be) each write their own
instance's events through an :class:`~egresswatch.writer.EventWriter` into the same store URL,
started together; the figure is all events over the wall time from the first start to the last
close. SQLite: one file in WAL mode, each commit takes the write lock (``BEGIN IMMEDIATE``) and a
waiting writer retries within the 10 s busy timeout, so writers take turns. PostgreSQL: one
connection per writer; each locks only its own instance's chain (an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from egresswatch.checkpoint import CheckpointLog
from egresswatch.checkpoint import load_or_create_signer
from egresswatch.events import Event
from egresswatch.store import _codec
from egresswatch.store import _rollups
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


def zipf_events(b: Any, n: int, instance: str = "bench-1", seed: int = 1) -> list[Event]:
    """The realistic mix: clients and apps drawn by Zipf's law (a few clients and apps make
    most of the traffic, as in any proxy log), hosts within an app likewise; each client belongs
    to one department and each app has one action (the policy decides per app), so a day's hits
    fall into far fewer rollup rows than the uniform worst case of ``b.synthetic_events``; the
    names (apps, hosts, clients, ...) are ``bench/store.py``'s (``b``)."""
    rnd = random.Random(seed)
    apps = list(b.APPS)
    clients = b.CLIENTS
    cw = list(itertools.accumulate(1 / (k + 1) ** 1.1 for k in range(len(clients))))
    aw = list(itertools.accumulate(1 / (k + 1) for k in range(len(apps))))
    hw = list(itertools.accumulate(1 / (k + 1) ** 1.5 for k in range(4)))
    t = time.time()
    out = []
    for i in range(n):
        ci = rnd.choices(range(len(clients)), cum_weights=cw)[0]
        ai = rnd.choices(range(len(apps)), cum_weights=aw)[0]
        app = apps[ai]
        signal = rnd.choice(b.SIGNALS)
        host = rnd.choices(b.HOSTS[app], cum_weights=hw)[0]
        who = (b.ACTIONS[ai % len(b.ACTIONS)], clients[ci], b.DEPARTMENTS[ci % len(b.DEPARTMENTS)])
        out.append(b.bench_hit(i, t, instance, signal, app, host, who))
    return out


class _TimedStore:
    """The store the writer opens, with the writer thread's CPU time inside ``write`` added up
    (``time.thread_time``: the thread's own CPU, in Python with the GIL held and in the driver's
    C code, which releases it around the database calls)."""

    def __init__(self, store: Any, cpu: list[float]) -> None:
        self._store = store
        self._cpu = cpu

    def write(self, events: Any) -> None:
        t0 = time.thread_time()
        try:
            self._store.write(events)
        finally:
            self._cpu[0] += time.thread_time() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def through_writer(
    url: str,
    events: list[Event],
    signing_dir: Path | None = None,
    batch: int | None = None,
    wrap: Callable[[Any], Any] = lambda store: store,
) -> tuple[float, int]:
    """Put ``events`` through an :class:`EventWriter` into ``url`` (its store passed through
    ``wrap``; signing checkpoints every second with a key in ``signing_dir`` if given) and wait
    for the last one to be written: (events/s, events written)."""
    written = [0]
    dropped = [0]
    signing: dict[str, Any] = {}
    if signing_dir is not None:
        signer, _ = load_or_create_signer(signing_dir / "signing.key", name="bench")
        signing = {
            "signer": signer,
            "checkpoint_log": CheckpointLog(signing_dir / "checkpoints.log"),
            "checkpoint_interval": 1.0,
        }
    w = EventWriter(
        lambda: wrap(open_store(url)),
        queue_size=len(events) + 1,
        batch_size=batch or backlog_batch(backend_of(url)),  # the proxy's by default
        on_written=lambda n: written.__setitem__(0, written[0] + n),
        on_dropped=lambda n: dropped.__setitem__(0, dropped[0] + n),
        **signing,
    )
    w.start()
    t0 = time.perf_counter()
    for e in events:
        w.put(e)
    w.close(timeout=600)
    elapsed = time.perf_counter() - t0
    assert dropped[0] == 0 and written[0] == len(events), (written, dropped)
    return len(events) / elapsed, written[0]


def _writer_rate(url: str, events: list[Event], batch: int) -> tuple[float, float]:
    """(events/s through an EventWriter, writer-thread CPU µs per event inside ``write``)."""
    cpu = [0.0]
    rate, _ = through_writer(url, events, batch=batch, wrap=lambda s: _TimedStore(s, cpu))
    return rate, cpu[0] / len(events) * 1e6


def python_part(events: list[Event], batch: int) -> float:
    """CPU µs per event of what ``store.write`` does in Python before the database sees a row
    (encode, rollup deltas, chain: all with the GIL held), best of three."""
    best = float("inf")
    for _ in range(3):
        t0 = time.thread_time()
        for i in range(0, len(events), batch):
            part = events[i : i + batch]
            encoded = _codec.encode(part)
            deltas = _rollups.rollup_deltas(part)
            _codec.build_rows(encoded, {})
            [(*k, *agg) for k, agg in deltas.items()]  # the rollup rows, as the store does
        best = min(best, time.thread_time() - t0)
    return best / len(events) * 1e6


def loop_lag(url: str, events: list[Event], batch: int) -> tuple[float, float, float, float]:
    """What the writer thread costs an asyncio event loop in the same process (the proxy's
    case): the loop ticks every millisecond while the writer drains ``events`` (all queued at
    once); returns (p50, p99, max) of how late a tick wakes, in ms, and the same p99 with no
    writer running."""

    async def ticks(until: Callable[[], bool]) -> list[float]:
        late = []
        while not until():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append((time.perf_counter() - t0 - 0.001) * 1000)
        return late

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    t_end = time.perf_counter() + 2.0
    idle = asyncio.run(ticks(lambda: time.perf_counter() > t_end))
    w = EventWriter(lambda: open_store(url), queue_size=len(events) + 1, batch_size=batch)
    w.start()
    for e in events:
        w.put(e)
    closer = threading.Thread(target=w.close, kwargs={"timeout": 600})
    closer.start()
    busy = asyncio.run(ticks(lambda: not closer.is_alive()))
    closer.join()
    return pct(busy, 0.5), pct(busy, 0.99), max(busy), pct(idle, 0.99)


def _server_cpu(url: str) -> Callable[[], float]:
    """A reader of the CPU seconds used so far by the PostgreSQL server behind ``url`` when it
    runs on this machine (its postmaster, found by port, with every backend, live or reaped);
    a reader of 0.0 otherwise."""
    port = str(urlsplit(url).port or 5432)
    pids = [int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*")]
    masters = [
        pid
        for pid in pids
        if (cmd := _cmdline(pid)) and "postgres" in cmd[0] and port in cmd and "-p" in cmd
    ]
    if not masters:
        return lambda: 0.0
    master = masters[0]
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        total = 0
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(stat.split("/")[2])
                f = Path(stat).read_text().rsplit(")", 1)[1].split()
                if pid == master:  # its own time and that of the backends it has reaped
                    total += sum(int(x) for x in f[11:15])
                elif int(f[1]) == master:
                    total += int(f[11]) + int(f[12])
        return total / tick

    return read


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ab(
    backend: str,
    mixes: dict[str, list[Event]],
    rounds: int,
    fresh: Callable[[str], str],
    baseline: Callable[[str, list[Event], int], float],
) -> None:
    """Writer and raw baseline alternating (baseline first in even rounds), per mix; medians.
    Besides events/s (wall time, which other processes on a shared machine move), the CPU per
    event of each side: this process's, plus the PostgreSQL server's when it runs here."""
    batch = backlog_batch(backend)
    name = "SQLite  " if backend == "sqlite" else "Postgres"
    for mix, events in mixes.items():
        rates: list[float] = []
        bases: list[float] = []
        cpus: list[float] = []
        ratios: list[float] = []
        cpu_w: list[float] = []
        cpu_b: list[float] = []
        for r in range(rounds):
            order = ("base", "writer") if r % 2 == 0 else ("writer", "base")
            got: dict[str, float] = {}
            for what in order:
                url = fresh(f"{mix}_{what}_{r}")
                server = _server_cpu(url) if backend == "postgresql" else (lambda: 0.0)
                c0, s0 = time.process_time(), server()
                if what == "base":
                    got["base"] = baseline(url, events, batch)
                else:
                    got["writer"], cpu = _writer_rate(url, events, batch)
                    cpus.append(cpu)
                used = (time.process_time() - c0 + server() - s0) / len(events) * 1e6
                (cpu_b if what == "base" else cpu_w).append(used)
            rates.append(got["writer"])
            bases.append(got["base"])
            ratios.append(got["writer"] / got["base"])
        lag = loop_lag(fresh(f"{mix}_lag"), events, batch)
        med = statistics.median
        where = "process + server" if backend == "postgresql" else "process"
        print(f"{name} {mix:5s} mix: writer {med(rates):9,.0f} events/s, raw executemany "
              f"{med(bases):9,.0f}/s, batches of {batch:,}: ratio {med(ratios):.2f} "
              f"(rounds {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip
        print(f"{name} {mix:5s} mix: CPU ({where}) per event: writer {med(cpu_w):.1f} µs, raw "
              f"{med(cpu_b):.1f} µs: CPU ratio {med(cpu_b) / med(cpu_w):.2f}; writer thread "
              f"{med(cpus):.1f} µs in write()")  # fmt: skip
        print(f"{name} {mix:5s} mix: an asyncio loop ticking every 1 ms beside the writer wakes "
              f"late by p50 {lag[0]:.2f} / p99 {lag[1]:.2f} / max {lag[2]:.1f} ms "
              f"(p99 {lag[3]:.2f} ms without a writer)")  # fmt: skip


def write_only(
    b: Any, quick: bool, pg_url: str | None, writers: int | None, rounds: int = 3
) -> int:
    """The writer against raw ``executemany`` of the same rows (``--write-only``: same batch
    size and pragmas, A/B alternating in one run, both mixes), or one against K writers at once
    (``--writers K``); ``b`` is ``bench/store.py`` (its event maker, baselines and printing)."""
    n = 30_000 if quick else 300_000
    print(f"egresswatch store write benchmark; {n:,} events; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    events = b.synthetic_events(n)
    mixes = {"worst": events, "zipf": zipf_events(b, n)}
    if not writers:
        for mix, evs in mixes.items():
            batch = backlog_batch("sqlite")
            upserts = sum(
                len(_rollups.rollup_deltas(evs[i : i + batch])) for i in range(0, n, batch)
            )
            rows = len(_rollups.rollup_deltas(evs))
            print(f"{mix:5s} mix: {upserts / n:.2f} rollup upserts per event in batches of "
                  f"{batch:,} ({rows / n:.2f} distinct rows per event over the run); Python "
                  f"part of write() {python_part(evs, batch):.1f} µs CPU/event")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="egresswatch-bench-") as d:
        tmp = Path(d)
        if writers:
            for k in (1, writers):
                total, each = several_writers(
                    f"sqlite://{tmp}/w{k}.db", b.synthetic_events, n // k, k
                )
                _print_writers("SQLite  ", k, total, each)
        else:
            _ab(
                "sqlite",
                mixes,
                rounds,
                lambda name: f"sqlite://{tmp}/{name}.db",
                lambda url, evs, batch: b.baseline_sqlite(Path(url[9:]), evs, batch),
            )
    with b.temp_postgres() if not pg_url else contextlib.nullcontext(pg_url) as pg:
        if pg is None:
            return 0
        import psycopg

        def fresh(name: str) -> str:
            with psycopg.connect(pg + "postgres", autocommit=True) as c:
                c.execute(f"CREATE DATABASE bench_{name}")
            return pg + f"bench_{name}"

        if writers:
            for k in (1, writers):
                total, each = several_writers(fresh(f"writers_{k}"), b.synthetic_events, n // k, k)
                _print_writers("Postgres", k, total, each)
        else:
            _ab("postgresql", mixes, rounds, fresh, b.baseline_postgres)
    return 0


def _print_writers(name: str, k: int, total: float, each: list[float]) -> None:
    print(f"{name} {k} writer(s) at once: {total:9,.0f} events/s in all "
          f"(each {min(each):,.0f}..{max(each):,.0f}/s)")  # fmt: skip
