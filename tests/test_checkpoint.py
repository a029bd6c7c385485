"""Signed checkpoints: the note format, the key file, the log file, and the writer signing them."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from egresswatch.checkpoint import Checkpoint
from egresswatch.checkpoint import CheckpointError
from egresswatch.checkpoint import CheckpointLog
from egresswatch.checkpoint import KeyError_
from egresswatch.checkpoint import load_or_create_signer
from egresswatch.checkpoint import load_verifier
from egresswatch.checkpoint import parse_entries
from egresswatch.checkpoint import read_entries
from egresswatch.events import Event
from egresswatch.store.memory import MemoryStore
from egresswatch.writer import EventWriter

MakeEvent = Callable[..., Event]
HEAD = hashlib.sha256(b"head").hexdigest()


def test_note_follows_the_signed_note_format_checked_by_hand(tmp_path: Path) -> None:
    """Re-derive the key hash and check the signature from the C2SP signed-note text alone."""
    signer, created = load_or_create_signer(tmp_path / "signing.key", name="egw-test")
    assert created
    note = signer.sign(Checkpoint("edge-a", 42, HEAD, 1_785_000_000.25, 2, 9, "AAAA"))
    body, sigline = note.split("\n\n")
    lines = body.split("\n")
    assert lines[0] == "egresswatch/edge-a" and lines[1] == "42"
    assert base64.b64decode(lines[2]) == bytes.fromhex(HEAD)
    assert lines[3] == "time 2026-07-25T17:20:00.250000Z"
    assert lines[4] == "verifications 2 9 AAAA"
    dash, name, sig64 = sigline.rstrip("\n").split(" ")
    assert dash == "\u2014" and name == "egw-test"
    pub_name, pub_hash, pub64 = (tmp_path / "signing.key.pub").read_text().strip().split("+", 2)
    raw = base64.b64decode(pub64)
    assert pub_name == "egw-test" and raw[0] == 1 and len(raw) == 33
    key_hash = hashlib.sha256(b"egw-test\n\x01" + raw[1:]).digest()[:4]
    assert pub_hash == key_hash.hex()
    sig = base64.b64decode(sig64)
    assert sig[:4] == key_hash
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig[4:], (body + "\n").encode())
    # And the module's own verifier reads it back.
    cp = load_verifier(tmp_path / "signing.key.pub").verify(note)
    assert (cp.instance, cp.size, cp.head, cp.runs, cp.runs_last_id) == ("edge-a", 42, HEAD, 2, 9)
    assert cp.time == pytest.approx(1_785_000_000.25)


def test_edited_note_or_another_key_does_not_verify(tmp_path: Path) -> None:
    signer, _ = load_or_create_signer(tmp_path / "a.key", name="egw")
    other, _ = load_or_create_signer(tmp_path / "b.key", name="egw")
    verifier = load_verifier(tmp_path / "a.key.pub")
    note = signer.sign(Checkpoint("edge-a", 42, HEAD, 1.0))
    with pytest.raises(CheckpointError, match="does not verify"):
        verifier.verify(note.replace("\n42\n", "\n41\n"))
    with pytest.raises(CheckpointError, match="another key named 'egw'"):
        verifier.verify(other.sign(Checkpoint("edge-a", 42, HEAD, 1.0)))
    stranger, _ = load_or_create_signer(tmp_path / "c.key", name="mallory")
    with pytest.raises(CheckpointError, match="not signed by the trusted key 'egw'"):
        verifier.verify(stranger.sign(Checkpoint("edge-a", 42, HEAD, 1.0)))


def test_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.key"
    signer, created = load_or_create_signer(path)
    assert created and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert signer.name.startswith("egresswatch-")
    again, created = load_or_create_signer(path)
    assert not created and again.verifier.text() == signer.verifier.text()
    os.chmod(path, 0o640)
    with pytest.raises(KeyError_, match=r"readable or writable by group or others \(mode 0640\)"):
        load_or_create_signer(path)
    os.chmod(path, 0o600)
    path.write_text("garbage\n")
    with pytest.raises(KeyError_, match=r"signing.key:1: not an egresswatch signing key"):
        load_or_create_signer(path)


def test_log_appends_one_entry_per_note_and_names_a_torn_one(tmp_path: Path) -> None:
    signer, _ = load_or_create_signer(tmp_path / "k", name="egw")
    log = CheckpointLog(tmp_path / "checkpoints.log")
    notes = [signer.sign(Checkpoint("edge-a", n, HEAD, float(n))) for n in (1, 2, 3)]
    for note in notes:
        log.append(note)
    entries = log.entries()
    assert [e.note for e in entries] == notes
    assert [e.source.rsplit(":", 1)[1] for e in entries] == ["1", "9", "17"]
    # A torn last append (the process died mid-write): named with file:line.
    with open(log.path, "a") as f:
        f.write("egresswatch/edge-a\n4\n")
    with pytest.raises(CheckpointError, match=r"checkpoints.log:25: entry has no signature"):
        log.entries()
    # An ECS export of checkpoints (one JSON document per line) reads the same notes.
    ecs = tmp_path / "siem.jsonl"
    ecs.write_text(
        "".join(
            json.dumps(
                {
                    "event": {"dataset": "egresswatch.checkpoints"},
                    "egresswatch": {"checkpoint": {"note": n}},
                }
            )
            + "\n"
            for n in notes
        )
    )
    assert [e.note for e in read_entries([ecs])] == notes
    assert list(parse_entries('{"event": {"dataset": "egresswatch.events"}}\n', "x")) == []
    with pytest.raises(CheckpointError, match=r"bad.jsonl:2: not a JSON object"):
        list(parse_entries('{"x": 1}\n{oops\n', "bad.jsonl"))
    with pytest.raises(CheckpointError, match=r"bad.jsonl:1: no egresswatch.checkpoint.note"):
        list(parse_entries('{"event": {"dataset": "egresswatch.checkpoints"}}\n', "bad.jsonl"))


def test_writer_signs_at_the_interval_and_once_more_at_close(
    tmp_path: Path, make_event: MakeEvent, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    signer, _ = load_or_create_signer(tmp_path / "signing.key", name="egw")
    log = CheckpointLog(tmp_path / "checkpoints.log")
    w = EventWriter(
        lambda: store,
        flush_interval=0.02,
        signer=signer,
        checkpoint_log=log,
        checkpoint_interval=0.1,
    )
    caplog.set_level(logging.INFO, logger="egresswatch.writer")
    w.start()
    for _ in range(5):
        w.put(make_event(instance="edge-a"))
    deadline = time.monotonic() + 5
    while not log.path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.35)  # several intervals with no new events: no new checkpoint
    verifier = load_verifier(tmp_path / "signing.key.pub")
    first = [verifier.verify(e.note) for e in log.entries()]
    assert [c.size for c in first] == [5]
    for _ in range(3):
        w.put(make_event(instance="edge-a"))
        w.put(make_event(instance="edge-b"))
    w.close()
    cps = [verifier.verify(e.note) for e in log.entries()]
    last = {c.instance: c for c in cps}
    heads = {h.instance: h for h in store.chain_heads()}
    assert last["edge-a"].size == 8 and last["edge-a"].head == heads["edge-a"].chain_hash
    assert last["edge-b"].size == 3 and last["edge-b"].head == heads["edge-b"].chain_hash
    assert w.checkpoints == len(cps)
    lines = [r.getMessage() for r in caplog.records if "signed checkpoint:" in r.message]
    assert len(lines) == len(cps)
    assert json.loads(lines[-1].split("; note ", 1)[1]) == log.entries()[-1].note


def test_writer_refuses_half_a_signing_setup(tmp_path: Path) -> None:
    signer, _ = load_or_create_signer(tmp_path / "k")
    with pytest.raises(ValueError, match="signer and checkpoint_log go together"):
        EventWriter(MemoryStore, signer=signer)


def test_db_key_creates_the_key_and_prints_the_public_half(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from egresswatch.cli import main

    assert main(["db", "key", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    pub = (tmp_path / "signing.key.pub").read_text().strip()
    assert f"created signing key {tmp_path / 'signing.key'}" in out and pub in out
    assert stat.S_IMODE(os.stat(tmp_path / "signing.key").st_mode) == 0o600
    assert main(["db", "key", "--data-dir", str(tmp_path)]) == 0
    assert "existing signing key" in capsys.readouterr().out
    os.chmod(tmp_path / "signing.key", 0o604)
    assert main(["db", "key", "--data-dir", str(tmp_path)]) == 2
    assert "run chmod 600" in capsys.readouterr().err
