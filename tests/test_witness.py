"""egresswatch.witness on every backend: checkpoints and prune, rollup recount, report helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from egresswatch.checkpoint import CheckpointLog
from egresswatch.checkpoint import Signer
from egresswatch.checkpoint import load_or_create_signer
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import EventStore
from egresswatch.store import _codec
from egresswatch.witness import Witnessed
from egresswatch.witness import check_checkpoint
from egresswatch.witness import checkpoints_covering
from egresswatch.witness import make_checkpoint
from egresswatch.witness import verify_checkpoints
from egresswatch.witness import verify_rollups

from tests.plugins.store import Tamper

MakeEvent = Callable[..., Event]
DAY = 86400.0
T0 = 1_785_000_000.0 - 1_785_000_000.0 % DAY  # 2026-07-25 00:00 UTC


def sign(store: EventStore, signer: Signer, log: CheckpointLog, instance: str, now: float) -> None:
    cp = make_checkpoint(store, instance, now)
    assert cp is not None
    log.append(signer.sign(cp))


def test_checkpoints_survive_a_prune_and_rollups_of_pruned_days_are_not_recounted(
    store: EventStore, make_event: MakeEvent, tmp_path: Path
) -> None:
    signer, _ = load_or_create_signer(tmp_path / "k", name="egw")
    log = CheckpointLog(tmp_path / "checkpoints.log")
    # Day 1: 3 hits; day 3: 2 hits and a heartbeat. A checkpoint after each day.
    store.write([make_event(ts=T0 + 100 + i) for i in range(3)])
    sign(store, signer, log, "proxy-1", T0 + DAY)
    store.write([make_event(ts=T0 + 2 * DAY + 100 + i) for i in range(2)])
    store.write([make_event(ts=T0 + 2 * DAY + 200, kind=EventKind.HEARTBEAT)])
    sign(store, signer, log, "proxy-1", T0 + 3 * DAY)
    assert store.prune(T0 + 2 * DAY) == 3
    result = verify_checkpoints(store, log.entries(), signer.verifier)
    assert result.ok, result.problems
    assert result.checked == 1
    assert any("1 checkpoint(s) at or before the pruned row #3" in n for n in result.notes)
    problems, notes = verify_rollups(store)
    assert problems == []
    assert notes == [
        "proxy-1: 2 rollup row(s) up to 2026-07-27 not recounted (their events were pruned)"
    ]


def test_rollup_recount_names_a_changed_row_on_every_backend(
    store: EventStore, make_event: MakeEvent, tamper: Tamper
) -> None:
    store.write([make_event(ts=T0 + i, app="tiktok") for i in range(3)])
    store.write([make_event(ts=T0 + 10, app="wechat", host="weixin.qq.com")])
    assert verify_rollups(store) == ([], [])
    # Memory backend: edit its rollup table; SQL backends: plain SQL, as an attacker would.
    if tamper._is_memory():
        key = next(k for k in tamper._memory.rollup_table if k[2] == "wechat")
        tamper._memory.rollup_table[key][0] = 5
    else:
        tamper._sql("UPDATE rollups SET events = 5 WHERE app = 'wechat'")
    problems, _ = verify_rollups(store)
    assert [p.kind for p in problems] == ["rollup"]
    assert "/wechat/" in problems[0].message and "says 5 event(s)" in problems[0].message
    # An instance whose chain has problems is skipped (its rows are not evidence).
    assert verify_rollups(store, skip=["proxy-1"]) == (
        [],
        ["proxy-1: rollups not recounted (the chain has problems)"],
    )


def test_check_checkpoint_and_the_checkpoints_a_report_embeds(
    store: EventStore, make_event: MakeEvent, tamper: Tamper, tmp_path: Path
) -> None:
    signer, _ = load_or_create_signer(tmp_path / "k", name="egw")
    log = CheckpointLog(tmp_path / "checkpoints.log")
    for day in range(4):  # one event a day, a checkpoint at the end of each day
        store.write([make_event(ts=T0 + day * DAY + 5)])
        sign(store, signer, log, "proxy-1", T0 + (day + 1) * DAY - 1)
    witnessed = [Witnessed(signer.verifier.verify(e.note), e.source, e.note) for e in log.entries()]
    # A report of days 1..2: the last checkpoint signed before it (end of day 0, #1) and the
    # first one signed at or after its end (end of day 3, #4), which covers all of it.
    chosen = checkpoints_covering(witnessed, T0 + DAY, T0 + 3 * DAY)
    assert [w.checkpoint.size for w in chosen] == [1, 4]
    # A period still running: the latest checkpoint stands in for the end.
    assert [w.checkpoint.size for w in checkpoints_covering(witnessed, T0, T0 + 10 * DAY)] == [4]
    assert all(check_checkpoint(store, w) == [] for w in witnessed)
    tamper.delete("proxy-1", 4)
    tamper.set_head("proxy-1", 3, tamper.row("proxy-1", 3)[_codec.CHAIN])
    problems = check_checkpoint(store, witnessed[-1])
    assert [(p.seq, p.kind) for p in problems] == [(4, "deleted")]
    assert check_checkpoint(store, witnessed[2]) == []


def test_rollup_days_are_counted_as_the_writer_counts_them_at_midnight(
    store: EventStore, make_event: MakeEvent
) -> None:
    """The database groups hit rows by day number; a hit a microsecond before midnight, at
    midnight, and a rollup row per side must agree with the writer's rollups."""
    stamps = [T0 + DAY - 1e-6, T0 + DAY - 0.5, T0 + DAY, T0 + DAY + 1e-6, T0 + 2 * DAY - 1e-6]
    store.write([make_event(ts=ts) for ts in stamps])
    assert sorted(r.day for r in store.rollups(T0, T0 + 3 * DAY)) == [
        "2026-07-25",
        "2026-07-26",
    ]
    assert verify_rollups(store) == ([], [])
