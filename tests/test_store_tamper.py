"""Tampering as someone with database access would do it, on SQLite and on a real PostgreSQL.

Each attack first reproduces the finding of issue 12 (the store's own ``verify()``, all that
``db verify`` ran before signed checkpoints, still says OK), then shows that ``egresswatch db
verify`` now fails, naming the first row that disagrees. The attacker works with plain SQL on the
database, the append-only triggers dropped or disabled first, and re-hashes with the code's own
hash functions: the strongest attacker short of one holding the signing key.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from egresswatch.checkpoint import CheckpointLog
from egresswatch.checkpoint import Signer
from egresswatch.checkpoint import load_or_create_signer
from egresswatch.cli import main
from egresswatch.events import Event
from egresswatch.store import EventStore
from egresswatch.store import _codec
from egresswatch.store import open_store
from egresswatch.store._codec import COLUMNS
from egresswatch.store._codec import GENESIS
from egresswatch.store._codec import chain_hash
from egresswatch.store._codec import row_leaf
from egresswatch.store.sqlite import sqlite_path
from egresswatch.witness import make_checkpoint

from tests.plugins.store import unguarded_sql

MakeEvent = Callable[..., Event]


class Attacker:
    """Plain SQL on the database, triggers out of the way (:func:`unguarded_sql`)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return unguarded_sql(self.url, sql, params)

    def rows(self, instance: str) -> list[tuple[Any, ...]]:
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        return self.sql(f"SELECT {cols} FROM events WHERE instance = ? ORDER BY seq", (instance,))

    def rehash_from(self, instance: str, seq: int) -> None:
        """Recompute leaf and chain hashes of rows ``seq``.. and the chain head, as the code
        does: the chain then verifies again."""
        prev = GENESIS
        last = 0
        for row in self.rows(instance):
            n = int(row[1])
            if n >= seq:
                leaf = row_leaf(row, n)
                assert leaf is not None
                link = chain_hash(prev, leaf)
                self.sql(
                    "UPDATE events SET leaf_hash = ?, chain_hash = ? WHERE instance = ? AND seq = ?",
                    (leaf, link, instance, n),
                )
                prev = link
            else:
                prev = row[_codec.CHAIN]
            last = n
        self.sql(
            "UPDATE chain_heads SET seq = ?, chain_hash = ? WHERE instance = ?",
            (last, prev, instance),
        )


class Proxy:
    """Writes events and signs checkpoints the way the writer does (make_checkpoint + sign +
    append), but at moments the test chooses."""

    def __init__(self, store: EventStore, signer: Signer, log: CheckpointLog) -> None:
        self.store, self.signer, self.log = store, signer, log
        self.now = 1_785_100_000.0

    def write(self, events: list[Event]) -> None:
        self.store.write(events)
        self.checkpoint(events[0].instance)

    def checkpoint(self, instance: str) -> None:
        self.now += 60
        cp = make_checkpoint(self.store, instance, self.now)
        assert cp is not None
        self.log.append(self.signer.sign(cp))


@pytest.fixture
def url(sql_store_url: str, tmp_path: Path) -> str:
    """Each SQL backend; SQLite's file in ``tmp_path/data``, where the proxy keeps its log and key."""
    return (
        f"sqlite://{tmp_path}/data/events.db"
        if sql_store_url.startswith("sqlite")
        else sql_store_url
    )


@pytest.fixture
def proxy(url: str, tmp_path: Path, make_event: MakeEvent) -> Iterator[Proxy]:
    """12 chained events of edge-a, signed after each batch of 4 (checkpoints at #4, #8, #12);
    TikTok and WeChat hits; the log and key in the data directory."""
    data = tmp_path / "data"
    signer, _ = load_or_create_signer(data / "signing.key", name="egw-test")
    store = open_store(url)
    p = Proxy(store, signer, CheckpointLog(data / "checkpoints.log"))
    for batch in range(3):
        app = "wechat" if batch == 1 else "tiktok"
        p.write([make_event(instance="edge-a", app=app) for _ in range(4)])
    try:
        yield p
    finally:
        store.close()


DbVerify = Callable[..., tuple[int, str]]


@pytest.fixture
def db_verify(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> DbVerify:
    """``egresswatch db verify`` of ``url`` with extra arguments: its exit code and output.
    SQLite finds the log and key beside the store; PostgreSQL is given them (as an auditor with
    a SIEM's copy would)."""

    def run(*extra: str) -> tuple[int, str]:
        data = tmp_path / "data"
        argv = ["db", "verify", "--store", url, *extra]
        if not url.startswith("sqlite") and "--checkpoints" not in extra:
            argv += ["--checkpoints", str(data / "checkpoints.log")]
        if not url.startswith("sqlite") and "--public-key" not in extra:
            argv += ["--public-key", str(data / "signing.key.pub")]
        rc = main(argv)
        out, err = capsys.readouterr()
        return rc, out + err

    return run


def test_untouched_store_verifies_against_its_checkpoints(
    proxy: Proxy, make_event: MakeEvent, db_verify: DbVerify
) -> None:
    proxy.store.write([make_event(instance="edge-a"), make_event(instance="edge-b")])
    rc, out = db_verify()
    assert rc == 0, out
    assert "witnessed: 3 signed checkpoint(s)" in out
    assert "NOTE: edge-a: rows #13..#13 are not yet witnessed" in out
    assert "NOTE: edge-b: not witnessed: no checkpoint of this instance" in out
    assert "OK: 14 events checked in 2 chain(s)" in out


def test_edit_and_rehash_is_named_with_the_first_row_that_disagrees(
    proxy: Proxy, url: str, db_verify: DbVerify
) -> None:
    attacker = Attacker(url)
    attacker.sql("UPDATE events SET app = 'notepad' WHERE instance = 'edge-a' AND seq = 6")
    attacker.rehash_from("edge-a", 6)
    assert proxy.store.verify().ok  # the finding: the chain alone verifies
    rc, out = db_verify()
    assert rc == 1, out
    assert "PROBLEM edge-a#5: rewritten: rows #5..#8 disagree with " in out
    assert "checkpoints.log:9: it signed chain hash" in out  # the entry of the #8 checkpoint


def test_truncate_and_rewind_is_named(proxy: Proxy, url: str, db_verify: DbVerify) -> None:
    attacker = Attacker(url)
    attacker.sql("DELETE FROM events WHERE instance = 'edge-a' AND seq > 9")
    attacker.rehash_from("edge-a", 10)  # only rewinds the head to #9
    assert proxy.store.verify().ok
    rc, out = db_verify()
    assert rc == 1, out
    assert "PROBLEM edge-a#10: deleted: rows #10..#12 are missing" in out
    assert "the store's chain ends at #9" in out


def test_rollback_to_an_older_copy_then_new_writes_is_named(
    proxy: Proxy, url: str, tmp_path: Path, make_event: MakeEvent, db_verify: DbVerify
) -> None:
    attacker = Attacker(url)
    if url.startswith("sqlite"):
        # A copy of the database file from before the last batch (as a backup would be).
        path = Path(sqlite_path(url))
        proxy.store.close()
        shutil.copy(path, tmp_path / "backup.db")
        proxy.store = open_store(url)
        proxy.write([make_event(instance="edge-a") for _ in range(2)])  # #13..#14, signed
        proxy.store.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.copy(tmp_path / "backup.db", path)
        proxy.store = open_store(url)
    else:
        # PostgreSQL: the rows after #12 go, and the head returns to #12: what a restore does.
        proxy.write([make_event(instance="edge-a") for _ in range(2)])
        attacker.sql("DELETE FROM events WHERE instance = 'edge-a' AND seq > 12")
        attacker.rehash_from("edge-a", 13)
    # The proxy carries on writing into the restored copy, and keeps signing.
    proxy.write([make_event(instance="edge-a", host="other.example") for _ in range(2)])
    assert proxy.store.verify().ok
    rc, out = db_verify()
    assert rc == 1, out
    assert "PROBLEM edge-a#13: rolled back: checkpoints " in out
    assert "sign two different heads at #14" in out
    assert "PROBLEM edge-a#13: rewritten: rows #13..#14 disagree with" in out


def test_deleted_verification_record_is_named(proxy: Proxy, url: str, db_verify: DbVerify) -> None:
    for _ in range(3):
        assert proxy.store.verify().ok  # three recorded runs
    proxy.checkpoint("edge-a")  # the proxy's next checkpoint commits to them
    # The guard: no UPDATE or DELETE through the store's own connection rules.
    conn_url = url
    if conn_url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(conn_url))
        with pytest.raises(sqlite3.DatabaseError, match="verifications are append-only"):
            conn.execute("DELETE FROM verifications WHERE id = 2")
        with pytest.raises(sqlite3.DatabaseError, match="verifications are append-only"):
            conn.execute("UPDATE verifications SET ok = 0")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(conn_url, autocommit=True) as pg:
            for sql in (
                "DELETE FROM verifications WHERE id = 2",
                "UPDATE verifications SET ok = false",
                "TRUNCATE verifications",
            ):
                with pytest.raises(psycopg.Error, match="verifications are append-only"):
                    pg.execute(sql)
    # The attacker drops the guard first.
    Attacker(url).sql("DELETE FROM verifications WHERE id = 2")
    assert proxy.store.verify().ok
    rc, out = db_verify()
    assert rc == 1, out
    assert "PROBLEM edge-a: deleted: verification records changed:" in out
    assert "covers 3 run(s) of this instance up to run #3; the store holds 2 of them" in out


def test_edited_rollup_is_named(proxy: Proxy, url: str, db_verify: DbVerify) -> None:
    Attacker(url).sql("UPDATE rollups SET events = 0 WHERE app = 'tiktok'")
    assert proxy.store.verify().ok
    rc, out = db_verify()
    assert rc == 1, out
    assert "PROBLEM edge-a: rollup: rollup 2026-07-25/edge-a/tiktok/" in out
    assert "says 0 event(s)" in out and "the chained hit rows count 8" in out
    # A rollup row with nothing behind it, and one deleted, are named as well.
    Attacker(url).sql("UPDATE rollups SET events = 8 WHERE app = 'tiktok'")
    Attacker(url).sql("DELETE FROM rollups WHERE app = 'wechat'")
    rc, out = db_verify()
    assert rc == 1 and "/wechat/" in out and ": missing; the chained hit rows count 4" in out


def test_forged_checkpoint_log_signed_by_another_key_is_refused(
    proxy: Proxy, url: str, tmp_path: Path, db_verify: DbVerify
) -> None:
    trusted = tmp_path / "pinned.pub"  # the auditor's copy of the public key
    shutil.copy(tmp_path / "data" / "signing.key.pub", trusted)
    attacker = Attacker(url)
    attacker.sql("UPDATE events SET app = 'notepad' WHERE instance = 'edge-a' AND seq = 2")
    attacker.rehash_from("edge-a", 2)
    # A new key under the same name, and a fresh log re-signing the rewritten chain.
    forged_dir = tmp_path / "forged"
    mallory, _ = load_or_create_signer(forged_dir / "signing.key", name="egw-test")
    log = tmp_path / "data" / "checkpoints.log"
    log.unlink()
    Proxy(proxy.store, mallory, CheckpointLog(log)).checkpoint("edge-a")
    assert proxy.store.verify().ok
    rc, out = db_verify("--public-key", str(trusted))
    assert rc == 1, out
    assert "checkpoints.log:1: forged: signed by another key named 'egw-test'" in out


def test_a_missing_log_or_key_given_explicitly_exits_2(
    proxy: Proxy, tmp_path: Path, db_verify: DbVerify
) -> None:
    rc, out = db_verify("--checkpoints", str(tmp_path / "nope.log"))
    assert rc == 2 and "nope.log" in out
    rc, out = db_verify("--public-key", str(tmp_path / "nope.pub"))
    assert rc == 2 and "public key" in out and "nope.pub" in out


def test_a_siem_copy_and_a_pinned_key_catch_what_a_forged_local_log_hides(
    proxy: Proxy, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], db_verify: DbVerify
) -> None:
    """The export a SIEM kept carries the signed checkpoints; an attacker who rewrites the chain
    and replaces both the local log and the public key beside it fools a verify that trusts the
    data directory (the documented limit), not one given the SIEM's copy and a pinned key."""
    data = tmp_path / "data"
    pinned = tmp_path / "pinned.pub"
    shutil.copy(data / "signing.key.pub", pinned)
    siem = tmp_path / "siem.jsonl"
    argv = ["events", "export", "--since", "2026-07-01", "--store", url, "-o", str(siem)]
    if not url.startswith("sqlite"):
        argv += ["--checkpoints", str(data / "checkpoints.log")]
    assert main(argv) == 0
    assert "exported 12 events and 3 signed checkpoints" in capsys.readouterr().err
    attacker = Attacker(url)
    # The user is not a rollup dimension: the rollups need no repair to match.
    attacker.sql("""UPDATE events SET "user" = 'nobody' WHERE instance = 'edge-a' AND seq = 3""")
    attacker.rehash_from("edge-a", 3)
    for name in ("checkpoints.log", "signing.key", "signing.key.pub"):
        (data / name).unlink()
    mallory, _ = load_or_create_signer(data / "signing.key", name="egw-test")
    Proxy(proxy.store, mallory, CheckpointLog(data / "checkpoints.log")).checkpoint("edge-a")
    rc, out = db_verify()
    assert rc == 0, out  # everything in reach of the attacker agrees with itself
    rc, out = db_verify("--checkpoints", str(siem), "--public-key", str(pinned))
    assert rc == 1, out
    assert "PROBLEM edge-a#1: rewritten: rows #1..#4 disagree with " in out
    assert "siem.jsonl:" in out
