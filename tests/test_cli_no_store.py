"""Read commands never create a store, and ``events export | head`` ends quietly."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from egresswatch.cli import main
from egresswatch.events import Event
from egresswatch.store import open_store

from tests.plugins.postgres import PostgresServer

MakeEvent = Callable[..., Event]
READ_COMMANDS = (
    ["report", "--month", "2026-07"],
    ["db", "verify"],
    ["db", "stats"],
    ["events", "export", "--since", "2026-07-01"],
)


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_mistyped_data_dir_is_refused_and_nothing_is_created(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    open_store(f"sqlite://{tmp_path}/data/events.db").close()  # the real one, next door
    rc = main([*command, "--data-dir", "./typo"])
    err = capsys.readouterr().err
    assert rc != 0
    assert f"no event store at {tmp_path}/typo/events.db: the file does not exist" in err
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_file_that_is_not_a_store_is_refused_and_left_alone(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE notes (x TEXT)").connection.close()
    rc = main([*command, "--store", f"sqlite://{path}"])
    assert rc != 0 and "is not an egresswatch database" in capsys.readouterr().err
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("notes",)]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_missing_or_empty_postgres_database_is_refused(
    command: list[str],
    postgres_server: PostgresServer,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = postgres_server.url("nosuch_database")
    rc = main([*command, "--store", missing])
    err = capsys.readouterr().err
    assert rc != 0 and "no event store at postgresql://" in err and "does not exist" in err
    rc = main([*command, "--store", postgres_url])  # exists, but nobody migrated it
    assert rc != 0 and "has no egresswatch schema" in capsys.readouterr().err
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        (found,) = conn.execute("SELECT to_regclass('schema_migrations')").fetchone() or (None,)
    assert found is None


def test_migrate_still_creates_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate", "--data-dir", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "events.db").is_file()
    assert main(["db", "verify", "--data-dir", str(tmp_path / "new")]) == 0


def test_export_into_a_closed_pipe_ends_quietly(tmp_path: Path, make_event: MakeEvent) -> None:
    """``egresswatch events export | head -n 1`` with a real pipe: no traceback, status 141."""
    store = open_store(f"sqlite://{tmp_path}/events.db")
    store.write([make_event() for _ in range(5000)])  # ~3 MB of JSON: more than a pipe holds
    store.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "egresswatch", "events", "export"]
    cmd += ["--since", "2026-07-01", "--data-dir", str(tmp_path)]
    export = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = subprocess.run(["head", "-n", "1"], stdin=export.stdout, capture_output=True, timeout=60)
    assert export.stdout is not None
    export.stdout.close()  # only head holds the read end; it has exited
    _, err = export.communicate(timeout=60)
    assert head.stdout.startswith(b'{"@timestamp":"2026-07-25T')
    assert err == b"", err.decode()
    assert export.returncode == 141
