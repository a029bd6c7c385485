"""Tests of ``egresswatch report`` (``egresswatch.commands.report``) against a real SQLite store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest
from egresswatch.cli import main
from egresswatch.events import Event
from egresswatch.report import previous_month
from egresswatch.store import open_store

from tests.plugins.report import JULY_TOTALS


@pytest.fixture(scope="module")
def july_db(tmp_path_factory: pytest.TempPathFactory, july: list[Event]) -> Path:
    """A data directory whose ``events.db`` holds the synthetic July."""
    data_dir = tmp_path_factory.mktemp("data")
    store = open_store(f"sqlite://{data_dir / 'events.db'}")
    try:
        store.write(july)
    finally:
        store.close()
    return data_dir


def july_report(data_dir: Path, *argv: str) -> int:
    """``egresswatch report --month 2026-07 --data-dir DATA_DIR ARGV...``"""
    return main(["report", "--month", "2026-07", "--data-dir", str(data_dir), *argv])


def test_json_to_file_with_sha256(
    july_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "july.json"
    url = f"sqlite://{july_db / 'events.db'}"
    rc = main(["report", "--month", "2026-07", "--store", url, "--format", "json", "-o", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["totals"] == JULY_TOTALS
    assert data["integrity"]["ok"] is True
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert (tmp_path / "july.json.sha256").read_text() == f"{digest}  july.json\n"
    assert digest in capsys.readouterr().err
    # the checksum file is in the format sha256sum checks
    check = subprocess.run(
        ["sha256sum", "-c", "july.json.sha256"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_data_dir_markdown_to_stdout(july_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        july_report(july_db, "--format", "md", "--top", "1", "--organisation", "Example Ltd") == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("# egresswatch compliance report 2026-07: Example Ltd\n")
    assert "| tiktok | monitor | 7 | 2 |" in out
    top = out.split("## Top clients", 1)[1].split("## Top hostnames", 1)[0]
    assert "h:aaaa" in top and "h:dddd" not in top  # --top 1


def test_csv_and_html_formats(july_db: Path, tmp_path: Path) -> None:
    for fmt in ("csv", "html"):
        out = tmp_path / f"r.{fmt}"
        assert july_report(july_db, "--format", fmt, "-o", str(out)) == 0
        assert (tmp_path / f"r.{fmt}.sha256").exists()
    assert (
        (tmp_path / "r.csv")
        .read_text()
        .startswith("section,instance,app,regime,action,department,key,metric,value")
    )
    assert "<svg" in (tmp_path / "r.html").read_text()


def test_html_is_the_default_format(july_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert july_report(july_db, "--no-verify") == 0
    out = capsys.readouterr().out
    assert out.startswith("<!DOCTYPE html>")
    assert "Verification: not run" not in out and "not run" in out


def test_lists_adds_an_operator_catalogue(
    july_db: Path, catalogue_dir: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    extra = catalogue_dir(
        {"demo": {"name": "Demo App", "regimes": [], "domains": [{"domain": "demo.example"}]}},
        regimes=[],
    )
    rc = july_report(july_db, "--format", "json", "--lists", str(extra))
    assert rc == 0, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    assert {r["id"]: r["status"] for r in data["regimes"]}["us-far-52.204-27"] == "in_force"


def test_broken_catalogue_is_an_error(
    july_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.yaml").write_text("id: [unclosed\n")
    rc = july_report(july_db, "--lists", str(bad))
    assert rc == 1
    assert "egresswatch report: catalogue: " in capsys.readouterr().err


def test_default_month_is_the_previous_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_store(f"sqlite://{tmp_path}/events.db").close()  # an empty store (a typo is refused)
    before = previous_month(datetime.now(UTC))
    assert main(["report", "--data-dir", str(tmp_path), "--format", "json"]) == 0
    after = previous_month(datetime.now(UTC))
    data = json.loads(capsys.readouterr().out)
    assert data["month"] in {before, after}
    assert data["totals"] == [] and data["integrity"]["ok"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--month", "2026-13"], "YYYY-MM"),
        (["--month", "July"], "YYYY-MM"),
        (["--format", "pdf"], "invalid choice"),
        (["--top", "0"], "positive integer"),
        (["--store", "sqlite:///x", "--data-dir", "/tmp"], "not allowed with"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unopenable_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", "--month", "2026-07", "--store", "nosuch://x"])
    assert rc == 1
    assert "cannot open the event store" in capsys.readouterr().err


def test_tampered_store_warns_but_writes(
    tmp_path: Path, make_event: Callable[..., Event], capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    db = tmp_path / "events.db"
    store = open_store(f"sqlite://{db}")
    store.write([make_event() for _ in range(5)])
    store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("UPDATE events SET host = 'evil.example' WHERE seq = 2")
    conn.close()
    rc = july_report(tmp_path, "--format", "json")
    assert rc == 0
    captured = capsys.readouterr()
    assert "chain verification failed" in captured.err
    assert json.loads(captured.out)["integrity"]["ok"] is False


def test_runs_as_a_module(july_db: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "egresswatch",
            "report",
            "--month",
            "2026-07",
            "--data-dir",
            str(july_db),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"] == JULY_TOTALS


def test_report_verifies_incrementally_after_a_full_run_and_says_so(
    tmp_path: Path, july: list[Event], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite://{tmp_path / 'events.db'}"
    store = open_store(url)
    try:
        store.write(july[:20_000])
    finally:
        store.close()
    assert main(["db", "verify", "--store", url]) == 0  # e.g. the nightly full run
    store = open_store(url)
    try:
        store.write(july[20_000:])
        full_runs = {r.instance: r for r in store.verifications()}
        heads = {h.instance: h for h in store.chain_heads()}
    finally:
        store.close()
    capsys.readouterr()
    argv = ["report", "--month", "2026-07", "--store", url, "--format", "json"]
    assert main(argv) == 0
    integ = json.loads(capsys.readouterr().out)["integrity"]
    assert integ["ok"] and integ["mode"] == "incremental"
    assert integ["checked"] == len(july) and integ["checked_now"] == len(july) - 20_000
    earlier = [v for v in integ["provenance"] if not v["this_report"]]
    now = [v for v in integ["provenance"] if v["this_report"]]
    assert [
        (v["instance"], v["from_seq"], v["to_seq"], v["mode"], v["run_id"]) for v in earlier
    ] == [(name, 1, run.to_seq, "full", run.id) for name, run in sorted(full_runs.items())]
    assert [(v["instance"], v["from_seq"], v["to_seq"], v["mode"]) for v in now] == [
        (name, full_runs[name].to_seq + 1, heads[name].seq, "incremental") for name in sorted(heads)
    ]
    # The Markdown says which rows were verified when (this report builds on the one above), and
    # the chain head, per instance.
    assert main([*argv[:-1], "md"]) == 0
    md = capsys.readouterr().out
    a, head = full_runs["proxy-a"], heads["proxy-a"]
    md = md.replace("\\#", "#")  # Markdown escapes "#"
    line = next(x for x in md.splitlines() if x.startswith("- proxy-a: rows 1.."))
    assert line.startswith(f"- proxy-a: rows 1..{a.to_seq} verified in full at 2")
    assert f"(run #{a.id}); rows {a.to_seq + 1}..{head.seq} verified incrementally at " in line
    assert f"; no rows after #{head.seq} (checked incrementally now, run #" in line
    assert line.endswith(f"; chain head #{head.seq} {head.chain_hash}")
    assert "(incremental: 0 recomputed for this report" in md
    # --full-verify recomputes every row.
    assert main([*argv, "--full-verify"]) == 0
    integ = json.loads(capsys.readouterr().out)["integrity"]
    assert integ["mode"] == "full" and integ["checked_now"] == len(july)
    assert {v["mode"] for v in integ["provenance"]} == {"full"}
    with pytest.raises(SystemExit) as usage:
        main([*argv, "--full-verify", "--no-verify"])
    assert usage.value.code == 2 and "not allowed with" in capsys.readouterr().err
