"""``egresswatch db verify|migrate|prune|stats`` on sqlite and postgres."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from egresswatch.cli import main
from egresswatch.events import Event
from egresswatch.store import EventStore
from egresswatch.store import open_store
from egresswatch.store.migrations import MIGRATION_NAMES

from tests.plugins.store import Tamper

MakeEvent = Callable[..., Event]


@pytest.fixture
def filled(sql_store: EventStore, make_event: MakeEvent) -> EventStore:
    sql_store.write([make_event(instance="edge-a") for _ in range(6)])
    sql_store.write([make_event(instance="edge-b") for _ in range(4)])
    return sql_store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_verify_clean_store_prints_counts_and_heads(
    filled: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, "db", "verify", "--store", filled.url)
    heads = {h.instance: h for h in filled.chain_heads()}
    assert rc == 0
    assert f"edge-a: 6 events checked, head #6 {heads['edge-a'].chain_hash}" in out
    assert f"edge-b: 4 events checked, head #4 {heads['edge-b'].chain_hash}" in out
    assert "OK: 10 events checked in 2 chain(s)" in out


def test_verify_names_every_problem(filled: EventStore, capsys: pytest.CaptureFixture[str]) -> None:
    tamper = Tamper(filled)
    tamper.edit("edge-a", 2, "host", "harmless.example")
    tamper.delete("edge-a", 4)
    tamper.swap("edge-b", 1, 2)
    tamper.insert_copy("edge-b", 3, event_id="forged")
    rc, out, err = run(capsys, "db", "verify", "--store", filled.url)
    assert rc == 1
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert problems == [
        "PROBLEM edge-a#2: edited: content does not match its leaf hash (event_id 'ev000002')",
        "PROBLEM edge-a#4: deleted: rows #4 are missing",
        "PROBLEM edge-b#1: reordered: holds the event written as #2 (event_id 'ev000008')",
        "PROBLEM edge-b#2: reordered: holds the event written as #1 (event_id 'ev000007')",
        "PROBLEM edge-b#3: inserted: duplicate seq (event_id 'forged')",
    ]
    assert "FAILED: 5 problem(s)" in err
    rc, out, _ = run(capsys, "db", "verify", "--store", filled.url, "--instance", "edge-a")
    assert rc == 1 and "edge-b" not in out


def test_verify_unknown_instance_fails(
    filled: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(capsys, "db", "verify", "--store", filled.url, "--instance", "nope")
    assert rc == 1 and "no instance 'nope'" in err


def test_data_dir_and_environment_default(
    tmp_path: Path,
    make_event: MakeEvent,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = open_store(f"sqlite://{tmp_path / 'events.db'}")
    s.write([make_event()])
    s.close()
    rc, out, _ = run(capsys, "db", "verify", "--data-dir", str(tmp_path))
    assert rc == 0 and "proxy-1: 1 events checked" in out
    monkeypatch.setenv("EGRESSWATCH_DATA_DIR", str(tmp_path))
    rc, out, _ = run(capsys, "db", "stats")
    assert rc == 0 and "events: 1 rows" in out


def test_migrate_stats_and_prune(
    sql_store_url: str, make_event: MakeEvent, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, "db", "migrate", "--store", sql_store_url)
    assert rc == 0 and f"schema version {len(MIGRATION_NAMES)} (up to date)" in out
    s = open_store(sql_store_url)
    now = time.time()
    s.write([make_event(ts=now - 100 * 86400 + i) for i in range(3)])
    s.write([make_event(ts=now - 10) for _ in range(2)])
    s.close()
    rc, out, _ = run(capsys, "db", "stats", "--store", sql_store_url)
    assert rc == 0
    assert (
        "events: 5 rows" in out and "rollups: 2 rows" in out and "instance proxy-1: head #5" in out
    )
    assert "size: " in out
    rc, out, _ = run(capsys, "db", "prune", "--days", "90", "--store", sql_store_url)
    assert rc == 0 and "pruned 3 events older than 90 days" in out
    rc, out, _ = run(capsys, "db", "stats", "--store", sql_store_url)
    assert "events: 2 rows" in out and "rollups: 2 rows" in out
    rc, out, _ = run(capsys, "db", "verify", "--store", sql_store_url)
    assert rc == 0 and "proxy-1: 2 events checked, head #5" in out
    rc, out, _ = run(capsys, "db", "stats", "--store", sql_store_url)
    assert "lifecycle_archive: 0 rows" in out and "verifications: 1 rows" in out


def test_migrate_and_stats_never_print_the_password(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Local trust authentication ignores the password: the URL still carries one to print.
    url = postgres_url.replace("@", ":s3cret@", 1)
    for command in ("migrate", "stats"):
        rc, out, err = run(capsys, "db", command, "--store", url)
        assert rc == 0, err
        assert "s3cret" not in out + err and ":***@" in out


def test_unusable_store_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(
        capsys, "db", "verify", "--store", "postgresql://postgres@127.0.0.1:1/x?connect_timeout=2"
    )
    assert rc == 2 and "cannot connect" in err
    rc, _, err = run(capsys, "db", "stats", "--store", "nosuch://x")
    assert rc == 2 and "unknown event store URL scheme" in err


def test_console_script_runs_verify(tmp_path: Path, make_event: MakeEvent) -> None:
    s = open_store(f"sqlite://{tmp_path / 'events.db'}")
    s.write([make_event()])
    s.close()
    proc = subprocess.run(
        [sys.executable, "-m", "egresswatch", "db", "verify", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK: 1 events checked" in proc.stdout


def test_verify_is_full_by_default_and_incremental_on_request(
    filled: EventStore, make_event: MakeEvent, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, "db", "verify", "--store", filled.url)
    assert rc == 0 and "edge-a: rows 1..6 verified full (run #" in out
    filled.write([make_event(instance="edge-a") for _ in range(2)])
    rc, out, _ = run(capsys, "db", "verify", "--store", filled.url, "--incremental")
    first_a = filled.verifications("edge-a")[0].id
    assert rc == 0 and "OK: 2 events checked in 2 chain(s)" in out
    assert f"edge-a: rows 7..8 verified incremental, continuing run #{first_a}" in out
    # The default (and --full-verify) recompute everything again.
    rc, out, _ = run(capsys, "db", "verify", "--store", filled.url, "--full-verify")
    assert rc == 0 and "OK: 12 events checked" in out and "edge-a: rows 1..8 verified full" in out
    with pytest.raises(SystemExit) as usage:
        main(["db", "verify", "--store", filled.url, "--full-verify", "--incremental"])
    assert usage.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_nightly_systemd_unit_runs_a_full_verify_this_cli_accepts(
    tmp_path: Path, make_event: MakeEvent, capsys: pytest.CaptureFixture[str]
) -> None:
    """deploy/systemd/egresswatch-verify.service: its command line, run against a real store."""
    import configparser
    import shlex

    deploy = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((deploy / "egresswatch-verify.service").read_text())
    service = parser["Service"]
    assert service["Type"] == "oneshot" and service["StateDirectory"] == "egresswatch"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/egresswatch") and argv[1:4] == ["db", "verify", "--full-verify"]
    timer = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    timer.read_string((deploy / "egresswatch-verify.timer").read_text())
    assert (
        timer["Timer"]["OnCalendar"] == "*-*-* 01:15:00" and timer["Timer"]["Persistent"] == "true"
    )
    s = open_store(f"sqlite://{tmp_path / 'events.db'}")
    try:
        s.write([make_event() for _ in range(3)])
    finally:
        s.close()
    args = argv[1:]
    args[args.index("--data-dir") + 1] = str(tmp_path)
    rc, out, _ = run(capsys, *args)
    assert rc == 0 and "proxy-1: rows 1..3 verified full (run #1)" in out
