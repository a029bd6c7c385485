"""The event-store contract, run against sqlite, postgres and memory (the ``store`` fixture)."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import EACH_REGIME
from egresswatch.store import EventStore
from egresswatch.store import InvalidEvent
from egresswatch.store import SchemaTooNew
from egresswatch.store import StoreError
from egresswatch.store import default_data_dir
from egresswatch.store import default_store_url
from egresswatch.store import open_store
from egresswatch.store import redact_url
from egresswatch.store.sqlite import sqlite_path

MakeEvent = Callable[..., Event]


def _ts(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


def test_round_trip_keeps_every_field(store: EventStore, make_event: MakeEvent) -> None:
    events = [
        make_event(
            host="bücher.example",  # stored as given; normalising is the matcher's job
            user="alice",
            exception_id="EXC-7",
            regimes=("b-regime", "a-regime"),
            detail={"ratio": 0.1, "nested": {"k": [1, 2.5, None, "ü"]}, "n": 10**15},
        ),
        make_event(kind=EventKind.START, app=None, host=None, action=None, regimes=()),
        make_event(ts=1_785_000_000.123456, detail=None),
    ]
    store.write(events)
    got = list(store.iter_events(0, 2e9))
    assert sorted(got, key=lambda e: e.event_id) == sorted(events, key=lambda e: e.event_id)
    assert store.verify().ok


def test_seq_is_gap_free_per_instance_across_batches(
    store: EventStore, make_event: MakeEvent
) -> None:
    for batch in range(3):
        store.write([make_event(instance=f"p{i % 3}", event_id=f"b{batch}-{i}") for i in range(10)])
    heads = {h.instance: h for h in store.chain_heads()}
    assert {k: h.seq for k, h in heads.items()} == {"p0": 12, "p1": 9, "p2": 9}
    assert store.instances() == ["p0", "p1", "p2"]
    result = store.verify()
    assert result.ok, result.problems
    assert result.checked == 30
    assert {h.instance: h.chain_hash for h in result.heads} == {
        k: h.chain_hash for k, h in heads.items()
    }


def test_rollups_aggregate_hits_per_day_and_key(store: EventStore, make_event: MakeEvent) -> None:
    d1 = _ts("2026-07-01T10:00:00")
    d2 = _ts("2026-07-02T23:59:59")
    store.write(
        [
            make_event(ts=d1, regimes=("z-reg", "a-reg")),
            make_event(ts=d1 + 5, regimes=("z-reg", "a-reg")),
            make_event(ts=d1 + 2, client="10.0.0.8", regimes=("z-reg", "a-reg")),
            make_event(ts=d2, action="monitor", department=None, regimes=()),
            make_event(ts=d1 + 1, kind=EventKind.HEARTBEAT, app=None),  # not a hit
        ]
    )
    store.write([make_event(ts=d1 - 3, regimes=("a-reg", "z-reg"))])  # upsert, earlier first_seen
    rows = store.rollups(_ts("2026-07-01"), _ts("2026-08-01"))
    by = {(r.day, r.client, r.action): r for r in rows}
    assert len(rows) == 3
    main = by[("2026-07-01", "10.0.0.7", "blocked")]
    assert (main.events, main.first_seen, main.last_seen) == (3, d1 - 3, d1 + 5)
    assert main.regime == "a-reg,z-reg" and main.regime_list == ("a-reg", "z-reg")
    other = by[("2026-07-02", "10.0.0.7", "monitor")]
    assert (other.events, other.department, other.regime, other.regime_list) == (1, "", "", ())
    assert sum(r.events for r in rows) == 5
    # Days overlapping [start, end): 2026-07-02 only.
    assert {r.day for r in store.rollups(_ts("2026-07-02"), _ts("2026-07-03"))} == {"2026-07-02"}
    assert store.rollups(_ts("2026-06-01"), _ts("2026-07-01")) == []


def test_lifecycle_returns_non_hits_in_range_oldest_first(
    store: EventStore, make_event: MakeEvent
) -> None:
    base = _ts("2026-07-10")
    store.write(
        [
            make_event(ts=base + 60, kind=EventKind.HEARTBEAT),
            make_event(ts=base, kind=EventKind.START, detail={"version": "0.1.0"}),
            make_event(ts=base + 30),
            make_event(ts=base + 90, kind=EventKind.STOP),
            make_event(ts=base + 9999, kind=EventKind.CONFIG),
        ]
    )
    got = store.lifecycle(base, base + 100)
    assert [e.kind for e in got] == ["start", "heartbeat", "stop"]
    assert got[0].detail == {"version": "0.1.0"}


def test_iter_events_window_is_half_open_and_ordered(
    store: EventStore, make_event: MakeEvent
) -> None:
    store.write([make_event(ts=float(t)) for t in (5, 1, 3, 2, 4)])
    assert [e.ts for e in store.iter_events(2, 5)] == [2.0, 3.0, 4.0]


def test_invalid_event_writes_nothing(store: EventStore, make_event: MakeEvent) -> None:
    good = make_event()
    with pytest.raises(InvalidEvent) as info:
        store.write([good, make_event(detail={"bad": object()})])
    assert info.value.index == 1
    with pytest.raises(InvalidEvent):
        store.write([make_event(detail={"nan": float("nan")})])
    assert list(store.iter_events(0, 2e9)) == []
    assert store.chain_heads() == []


def test_prune_keeps_rollups_and_verification(store: EventStore, make_event: MakeEvent) -> None:
    old = _ts("2026-03-01T12:00:00")
    new = _ts("2026-07-01T12:00:00")
    store.write([make_event(ts=old + i) for i in range(20)])
    store.write([make_event(ts=new + i, instance="proxy-2") for i in range(5)])
    store.write([make_event(ts=new + i) for i in range(10)])
    before_rollups = store.rollups(_ts("2026-01-01"), _ts("2027-01-01"))
    assert store.prune(_ts("2026-04-01")) == 20
    assert store.prune(_ts("2026-04-01")) == 0  # idempotent
    assert [e.ts for e in store.iter_events(0, 2e9)][:1] == [new]
    assert store.rollups(_ts("2026-01-01"), _ts("2027-01-01")) == before_rollups
    result = store.verify()
    assert result.ok, result.problems
    assert result.checked == 15
    # Writing after a prune continues the same chain.
    store.write([make_event(ts=new + 100)])
    assert store.verify().ok
    assert {h.instance: h.seq for h in store.chain_heads()} == {"proxy-1": 31, "proxy-2": 5}
    # Pruning everything leaves the heads, and verify still agrees with them.
    assert store.prune(2e9) == 16
    result = store.verify()
    assert result.ok and result.checked == 0
    assert {h.instance: h.seq for h in result.heads} == {"proxy-1": 31, "proxy-2": 5}


def test_prune_only_cuts_a_gap_free_prefix(store: EventStore, make_event: MakeEvent) -> None:
    # seq 3 is older than the cut-off but written after a newer event: it must stay, or the
    # chain would have a hole.
    store.write([make_event(ts=float(t)) for t in (10, 20, 5, 30)])
    assert store.prune(15) == 1
    assert sorted(e.ts for e in store.iter_events(0, 100)) == [5, 20, 30]
    assert store.verify().ok


def test_stats_counts_rows(store: EventStore, make_event: MakeEvent) -> None:
    store.write([make_event() for _ in range(7)] + [make_event(kind=EventKind.HEARTBEAT)])
    st = store.stats()  # type: ignore[attr-defined]
    assert st.rows["events"] == 8
    assert st.rows["chain_heads"] == 1
    assert st.rows["rollups"] == 1
    assert st.schema_version >= 1


def _raw_sql(store: EventStore, sql: str) -> None:
    if store.url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(store.url), isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET host = 'x' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 1",
    ],
)
def test_events_are_append_only(sql_store: EventStore, make_event: MakeEvent, sql: str) -> None:
    sql_store.write([make_event()])
    with pytest.raises(Exception, match="append-only"):
        _raw_sql(sql_store, sql)
    assert sql_store.verify().ok


def test_postgres_refuses_truncate(postgres_url: str, make_event: MakeEvent) -> None:
    s = open_store(postgres_url)
    s.write([make_event()])
    with pytest.raises(Exception, match="append-only"):
        _raw_sql(s, "TRUNCATE events")
    s.close()


def test_schema_newer_than_code_is_refused(sql_store_url: str, sql_store: EventStore) -> None:
    _raw_sql(
        sql_store,
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
    )
    with pytest.raises(SchemaTooNew, match="999"):
        open_store(sql_store_url)


def test_reopen_keeps_schema_and_chain(sql_store_url: str, make_event: MakeEvent) -> None:
    store_url = sql_store_url
    s = open_store(store_url)
    s.write([make_event()])
    s.close()
    s = open_store(store_url)
    s.write([make_event()])
    assert [h.seq for h in s.chain_heads()] == [2]
    assert s.verify().ok
    s.close()


def test_concurrent_writers_keep_each_chain_gap_free(
    sql_store_url: str, make_event: MakeEvent
) -> None:
    """Several connections: two instances, two writers each, in parallel."""
    store_url = sql_store_url
    stores = [open_store(store_url) for _ in range(4)]
    errors: list[BaseException] = []

    def work(i: int, s: EventStore) -> None:
        try:
            for b in range(15):
                s.write(
                    [make_event(instance=f"p{i % 2}", event_id=f"w{i}-{b}-{k}") for k in range(20)]
                )
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check = stores[0]
    result = check.verify()
    assert result.ok, result.problems
    assert {h.instance: h.seq for h in result.heads} == {"p0": 600, "p1": 600}
    counts = Counter(e.instance for e in check.iter_events(0, 2e9))
    assert counts == {"p0": 600, "p1": 600}
    for s in stores:
        s.close()


def test_writers_of_mixed_batches_and_prune_run_together(
    sql_store_url: str, make_event: MakeEvent
) -> None:
    """Batches spanning several instances, in different orders, beside repeated prunes: no
    deadlock, no error, every chain intact and gap-free after its checkpoint."""
    stores = [open_store(sql_store_url) for _ in range(4)]
    errors: list[BaseException] = []
    names = ["p0", "p1", "p2"]

    def write(i: int, s: EventStore) -> None:
        try:
            for b in range(10):
                order = names[i % 3 :] + names[: i % 3]
                s.write(
                    [
                        make_event(instance=order[k % 3], ts=1000.0 + b, event_id=f"w{i}-{b}-{k}")
                        for k in range(9)
                    ]
                )
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    def prune(s: EventStore) -> None:
        try:
            for _ in range(10):
                s.prune(1005.0)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores[:3])]
    threads.append(threading.Thread(target=prune, args=(stores[3],)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = stores[0]
    try:
        assert errors == []
        result = check.verify()
        assert result.ok, result.problems
        assert {h.instance: h.seq for h in result.heads} == {"p0": 90, "p1": 90, "p2": 90}
        check.prune(2e9)
        assert list(check.iter_events(0, 2e9)) == []
        assert check.verify().ok
    finally:
        for s in stores:
            s.close()


def test_iter_events_turns_driver_errors_into_store_errors(sql_store: EventStore) -> None:
    _raw_sql(sql_store, "DROP TABLE events")
    with pytest.raises(StoreError, match="iter_events failed"):
        list(sql_store.iter_events(0, 2e9))


def test_open_store_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unknown event store URL scheme"):
        open_store("mysql://x")


def test_unreachable_postgres_is_store_unavailable() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="cannot connect"):
        open_store("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_redact_url() -> None:
    assert redact_url("sqlite:///var/lib/egresswatch/events.db") == (
        "sqlite:///var/lib/egresswatch/events.db"
    )
    assert redact_url("postgresql://egw@db/events") == "postgresql://egw@db/events"
    assert redact_url("postgresql://egw:a@b/c@db:5432/events") == (
        "postgresql://egw:***@db:5432/events"
    )
    assert redact_url("postgres://db/events?user=egw&PASSWORD=x&sslmode=require") == (
        "postgres://db/events?user=egw&PASSWORD=***&sslmode=require"
    )


def test_default_store_url(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("EGRESSWATCH_DATA_DIR", "/srv/ew")
    assert default_store_url(None) == "sqlite:///srv/ew/events.db"
    monkeypatch.delenv("EGRESSWATCH_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    assert default_store_url(None) == "sqlite:///xdg/egresswatch/events.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert default_store_url(None) == "sqlite:///home/u/.local/share/egresswatch/events.db"
    assert default_store_url("/data") == "sqlite:///data/events.db"


def test_summarise_groups_in_the_database(store: EventStore, make_event: MakeEvent) -> None:
    d1 = _ts("2026-07-01T08:00:00")
    d2 = _ts("2026-07-02T08:00:00")
    store.write(
        [
            make_event(ts=d1, client="a", host="h1"),
            make_event(ts=d1 + 1, client="b", host="h2"),
            make_event(ts=d2, client="a", host="h1"),
            make_event(ts=d2 + 5, client=None, app="wechat", action="monitor"),
            make_event(ts=d2 + 9, kind=EventKind.HEARTBEAT),
        ]
    )
    start, end = _ts("2026-07-01"), _ts("2026-08-01")
    by_app = store.summarise(start, end, ("app", "action"))
    assert [(s.key, s.events, s.distinct_clients) for s in by_app] == [
        (("tiktok", "blocked"), 3, 2),
        (("wechat", "monitor"), 1, 0),
    ]
    assert (by_app[0].first_seen, by_app[0].last_seen) == (d1, d2)
    by_day = store.summarise(start, end, ("day",))
    assert [(s.key, s.events) for s in by_day] == [(("2026-07-01",), 2), (("2026-07-02",), 2)]
    (total,) = store.summarise(start, end, ())
    assert (total.key, total.events, total.distinct_clients) == ((), 4, 2)
    assert store.summarise(_ts("2026-09-01"), _ts("2026-10-01"), ()) == []
    # Consistent with the raw rollups.
    assert sum(r.events for r in store.rollups(start, end)) == total.events
    with pytest.raises(ValueError, match="distinct names"):
        store.summarise(start, end, ("app; DROP TABLE events",))


def test_summarise_each_regime_counts_distinct_clients_over_the_month(
    store: EventStore, make_event: MakeEvent
) -> None:
    """A client seen on two days and under two regime lists counts once, in every grouping."""
    d1, d2 = _ts("2026-07-01T08:00:00"), _ts("2026-07-02T08:00:00")
    store.write(
        [
            make_event(ts=d1, client="a", regimes=("r1",)),
            make_event(ts=d2, client="a", regimes=("r1", "r2")),
            make_event(ts=d2 + 1, client="b", regimes=("r2", "r1")),
            make_event(ts=d2 + 2, client="c", regimes=(), app="wechat"),
        ]
    )
    start, end = _ts("2026-07-01"), _ts("2026-08-01")
    got = store.summarise(start, end, ("app", EACH_REGIME))
    assert [(s.key, s.events, s.distinct_clients) for s in got] == [
        (("tiktok", "r1"), 3, 2),
        (("tiktok", "r2"), 2, 2),
        (("wechat", ""), 1, 1),
    ]
    assert (got[0].first_seen, got[0].last_seen) == (d1, d2 + 1)
    by_list = store.summarise(start, end, ("app", "regime"))
    assert [(s.key, s.events) for s in by_list] == [
        (("tiktok", "r1"), 1),
        (("tiktok", "r1,r2"), 2),
        (("wechat", ""), 1),
    ]
    (tiktok, _) = store.summarise(start, end, ("app",))
    assert (tiktok.events, tiktok.distinct_clients) == (3, 2)  # not 1 + 2 from the lists
    with pytest.raises(ValueError):
        store.summarise(start, end, ("regime", EACH_REGIME))


def test_summarise_top_orders_by_events_then_key_and_names_apps(
    store: EventStore, make_event: MakeEvent
) -> None:
    t = _ts("2026-07-03T08:00:00")
    events = [make_event(ts=t, client="b", host="h1") for _ in range(3)]
    events += [make_event(ts=t + 1, client="B", host="h2", app="wechat") for _ in range(3)]
    events += [make_event(ts=t + 2, client="b", host="h2", app="wechat")]
    events += [make_event(ts=t + 3, client="", host="") for _ in range(9)]
    events += [make_event(ts=t + 4, client="a", host="h3")]
    store.write(events)
    start, end = _ts("2026-07-01"), _ts("2026-08-01")
    top = store.summarise(start, end, ("client",), top=2)
    # Empty keys never rank; ties are broken in code-point order ("B" < "b") on every backend.
    assert [(s.key, s.events, s.apps) for s in top] == [
        (("b",), 4, ("tiktok", "wechat")),
        (("B",), 3, ("wechat",)),
    ]
    assert (top[0].first_seen, top[0].last_seen) == (t, t + 2)
    hosts = store.summarise(start, end, ("host",), top=5)
    assert [(s.key[0], s.events, s.apps) for s in hosts] == [
        ("h2", 4, ("wechat",)),
        ("h1", 3, ("tiktok",)),
        ("h3", 1, ("tiktok",)),
    ]
    with pytest.raises(ValueError, match="one dimension"):
        store.summarise(start, end, ("client", "host"), top=3)
    # The same figures without the distinct-client count (0), and with it under top.
    cheap = store.summarise(start, end, ("client",), top=2, clients=False)
    assert [(s.key, s.events, s.distinct_clients, s.apps) for s in cheap] == [
        (("b",), 4, 0, ("tiktok", "wechat")),
        (("B",), 3, 0, ("wechat",)),
    ]
    assert [s.distinct_clients for s in top] == [1, 1]
    assert [(s.key, s.distinct_clients) for s in store.summarise(start, end, ("host",), top=1)] == [
        (("h2",), 2)
    ]
    by_app = store.summarise(start, end, ("app",), clients=False)
    assert [(s.key, s.events, s.distinct_clients) for s in by_app] == [
        (("tiktok",), 13, 0),
        (("wechat",), 4, 0),
    ]


def test_prune_archives_lifecycle_rows(store: EventStore, make_event: MakeEvent) -> None:
    base = _ts("2026-03-10")
    store.write(
        [
            make_event(ts=base, kind=EventKind.START, detail={"client_identity": "hash"}),
            make_event(ts=base + 1),
            make_event(ts=base + 60, kind=EventKind.HEARTBEAT),
            make_event(ts=base + 61, kind=EventKind.CONFIG, detail={"kind": "policy"}),
            make_event(ts=base + 90, kind=EventKind.STOP),
            make_event(ts=base + 86400 * 200, kind=EventKind.HEARTBEAT),
        ]
    )
    before = store.lifecycle(0, 2e9)
    assert store.prune(base + 86400) == 5
    assert list(store.iter_events(0, base + 86400)) == []  # the raw rows are gone ...
    after = store.lifecycle(0, 2e9)
    assert after == before  # ... and lifecycle() reads them from the archive, every field
    assert [e.kind for e in store.lifecycle(base + 30, base + 100)] == [
        "heartbeat",
        "config",
        "stop",
    ]
    assert store.verify().ok
    assert store.stats().rows["lifecycle_archive"] == 4  # type: ignore[attr-defined]
    # A second prune archives only what it deletes.
    assert store.prune(2e9) == 1
    assert store.lifecycle(0, 2e9) == before


def test_lifecycle_archive_is_append_only(sql_store: EventStore, make_event: MakeEvent) -> None:
    sql_store.write([make_event(ts=1.0, kind=EventKind.START)])
    sql_store.prune(2.0)
    for sql in ("UPDATE lifecycle_archive SET host = 'x'", "DELETE FROM lifecycle_archive"):
        with pytest.raises(Exception, match="append-only"):
            _raw_sql(sql_store, sql)


def test_a_version_1_database_is_migrated(tmp_path: object, make_event: MakeEvent) -> None:
    """A store written before verifications and the lifecycle archive existed opens, keeps its
    chain and gains both tables."""
    from egresswatch.store import migrations
    from egresswatch.store.sqlite import _statements

    path = f"{tmp_path}/old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at REAL NOT NULL)"
    )
    for statement in _statements(migrations.SQLITE[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1', 0)")
    conn.close()
    s = open_store(f"sqlite://{path}")
    try:
        s.write([make_event(), make_event(kind=EventKind.HEARTBEAT)])
        assert s.stats().schema_version == len(migrations.SQLITE) == 5  # type: ignore[attr-defined]
        assert s.verify().ok and len(s.verifications()) == 1
        assert s.prune(2e9) == 2 and len(s.lifecycle(0, 2e9)) == 1
    finally:
        s.close()


def test_the_suite_never_uses_the_users_data_directory() -> None:
    """conftest points the default data directory away from the user's, for the whole run."""
    user = Path.home() / ".local" / "share" / "egresswatch"
    assert default_data_dir() != user
    assert not default_data_dir().is_relative_to(Path.home() / ".local")
