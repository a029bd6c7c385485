"""Issue 12, item 2: a sealed JSON report (embedded signed checkpoints and its own digest) and
``egresswatch report verify``: a clean report verifies; an edited figure, an edited digest, a
rollup or event edited in the store, or a checkpoint signed by another key makes it fail, naming
the first disagreement."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from egresswatch.checkpoint import CHECKPOINT_LOG_NAME
from egresswatch.checkpoint import SIGNING_KEY_NAME
from egresswatch.checkpoint import CheckpointLog
from egresswatch.checkpoint import load_or_create_signer
from egresswatch.cli import main
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report.seal import canonical_digest
from egresswatch.store import open_store
from egresswatch.witness import make_checkpoint

from tests.plugins.report import ts
from tests.plugins.store import unguarded_sql


def _events() -> list[Event]:
    out = [Event(ts=ts("2026-07-01T00:00:00"), kind=EventKind.START, instance="p1", event_id="s")]
    out += [
        Event(ts=ts(f"2026-07-01T{h:02d}:00:00"), kind=EventKind.HEARTBEAT, instance="p1",
              event_id=f"hb{h}")
        for h in range(1, 24)
    ]  # fmt: skip
    for n, (day, app, client, by, rid) in enumerate(
        [
            (2, "tiktok", "10.0.0.1", "regime", "us-nttgda-2022"),
            (3, "tiktok", "10.0.0.2", "regime", "us-nttgda-2022"),
            (4, "alipay", "10.0.0.1", "app", "alipay"),
        ]
    ):
        out.append(
            Event(
                ts=ts(f"2026-07-{day:02d}T10:00:00"), kind=EventKind.HIT, instance="p1",
                event_id=f"h{n}", host=f"www.{app}.com", app=app, regimes=("r",),
                action="blocked", client=client, department="other", decided_by=by,
                decided_id=rid,
            )
        )  # fmt: skip
    out.append(
        Event(ts=ts("2026-07-05T00:00:00"), kind=EventKind.STOP, instance="p1", event_id="x")
    )
    return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    store = open_store(f"sqlite://{d / 'events.db'}")
    try:
        store.write(_events())
        signer, _ = load_or_create_signer(d / SIGNING_KEY_NAME)
        cp = make_checkpoint(store, "p1", time.time())
        assert cp is not None
        CheckpointLog(d / CHECKPOINT_LOG_NAME).append(signer.sign(cp))
    finally:
        store.close()
    return d


@pytest.fixture
def sealed(data_dir: Path, tmp_path: Path) -> Path:
    """The sealed JSON report of July over ``data_dir``, written beside it."""
    out = tmp_path / "july.json"
    args = ["report", "--month", "2026-07", "--data-dir", str(data_dir), "--format", "json"]
    assert main([*args, "--no-verify", "-o", str(out)]) == 0
    return out


def _verify(data_dir: Path, report: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["report", "verify", str(report), "--data-dir", str(data_dir)])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_a_clean_report_embeds_its_checkpoint_and_verifies(
    data_dir: Path, sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(sealed.read_text())
    (cp,) = doc["evidence"]["checkpoints"]
    assert (cp["instance"], cp["size"]) == ("p1", 28)
    assert cp["note"].startswith("egresswatch/p1\n28\n")
    assert doc["digest"] == canonical_digest(doc)
    rc, text = _verify(data_dir, sealed, capsys)
    assert rc == 0, text
    assert "OK" in text and "1 signed checkpoint" in text


def _rewrite(path: Path, change: Any, *, reseal: bool) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    if reseal:
        doc["digest"] = canonical_digest(doc)
    path.write_text(json.dumps(doc))


def test_an_edited_figure_fails_at_the_digest_or_at_the_figure(
    data_dir: Path, sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fewer(doc: dict[str, Any]) -> None:
        tiktok = next(t for t in doc["totals"] if t["app"] == "tiktok")
        tiktok["events"] = 0

    _rewrite(sealed, fewer, reseal=False)
    rc, text = _verify(data_dir, sealed, capsys)
    assert rc == 1 and "FAILED at digest" in text
    _rewrite(sealed, lambda doc: None, reseal=True)  # a forger who recomputes the digest
    rc, text = _verify(data_dir, sealed, capsys)
    assert rc == 1 and "events: the report says 0, the store gives 2" in text, text


@pytest.mark.parametrize(
    ("edit", "failure"),
    [
        ("UPDATE rollups SET events = 0 WHERE app = 'tiktok'", "FAILED at store: rollups"),
        (
            "UPDATE events SET decided_id = 'us-eo-13971' WHERE event_id = 'h2'",
            "FAILED at store: hash chain",
        ),
    ],
    ids=["rollup", "event"],
)
def test_an_edited_store_fails(
    data_dir: Path, sealed: Path, capsys: pytest.CaptureFixture[str], edit: str, failure: str
) -> None:
    unguarded_sql(f"sqlite://{data_dir / 'events.db'}", edit)
    rc, text = _verify(data_dir, sealed, capsys)
    assert rc == 1 and failure in text, text


def test_a_checkpoint_signed_by_another_key_fails(
    data_dir: Path, sealed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other, _ = load_or_create_signer(tmp_path / "other.key")
    pub = tmp_path / "other.key.pub"
    rc = main(
        ["report", "verify", str(sealed), "--data-dir", str(data_dir), "--public-key", str(pub)]
    )
    text = capsys.readouterr().err
    assert rc == 1 and "evidence.checkpoints[0]: signature" in text, text
    assert other.name  # the key exists; only its public half was trusted
