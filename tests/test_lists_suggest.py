"""Discovery end to end in-process: the proxy's CNAME candidates are persisted as CONFIG events
and ``egresswatch lists suggest`` turns them into reviewable catalogue files that load."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from egresswatch.candidates import Candidates
from egresswatch.candidates import from_details
from egresswatch.candidates import to_detail
from egresswatch.catalogue import load_catalogue
from egresswatch.cli import main
from egresswatch.events import EventKind
from egresswatch.store import open_store
from mitmproxy import dns

from tests.plugins.addon import Env
from tests.plugins.addon import dns_flow


def test_detail_round_trip_keeps_the_largest_counts_and_skips_bad_entries() -> None:
    c = Candidates(clock=lambda: 5.0)
    c.note_cname("cdn.example.net", "tiktok", ("cdn.example.net", "v16.tiktokcdn.com"))
    one = to_detail(c.snapshot())
    c.note_cname("cdn.example.net", "tiktok", ("cdn.example.net", "v16.tiktokcdn.com"))
    two = to_detail(c.snapshot())
    bad = {"kind": "candidates", "candidates": [{"name": "x"}, "junk", {"app": 3}]}
    (merged,) = from_details([one, two, bad, {"kind": "catalogue"}, "nonsense"])
    assert (merged.name, merged.app, merged.evidence) == ("cdn.example.net", "tiktok", {"cname": 2})
    assert "v16.tiktokcdn.com" in merged.examples["cname"]


def _cname_answer(question: str, target: str) -> dns.DNSFlow:
    f = dns_flow(question)
    f.response = f.request.succeed(
        [
            dns.ResourceRecord.CNAME(question, target),
            dns.ResourceRecord.A(target, ipaddress.IPv4Address("203.0.113.20")),
        ]
    )
    return f


def test_proxy_persists_candidates_and_suggest_writes_a_loadable_file(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = env.addon.journal.on_heartbeat  # what the heartbeat loop calls
    assert beat is not None
    env.addon.dns_response(_cname_answer("edge.neutral.test", "cdn.watched.test"))
    beat(env.clock[0])  # the first evidence is saved at the next heartbeat
    env.addon.dns_response(_cname_answer("other.neutral.test", "cdn.watched.test"))
    env.clock[0] += 60
    beat(env.clock[0])  # < 10 min since the last snapshot: not yet
    configs = [
        e for e in env.events(EventKind.CONFIG) if (e.detail or {}).get("kind") == "candidates"
    ]
    assert len(configs) == 1  # at most one snapshot per interval
    env.clock[0] += 601
    beat(env.clock[0])
    env.addon.dns_response(_cname_answer("third.neutral.test", "cdn.watched.test"))
    env.clock[0] += 60
    beat(env.clock[0])  # too soon again; the stop saves what is left
    assert env.addon.discovery.save(env.clock[0], final=True)
    assert not env.addon.discovery.save(env.clock[0] + 1e4, final=True)  # nothing new
    configs = [
        e for e in env.events(EventKind.CONFIG) if (e.detail or {}).get("kind") == "candidates"
    ]
    assert len(configs) == 3
    assert [c["name"] for c in configs[1].detail["candidates"]] == [  # type: ignore[index]
        "edge.neutral.test", "other.neutral.test"
    ]  # fmt: skip
    names = {c["name"] for c in configs[-1].detail["candidates"]}  # type: ignore[index]
    assert names == {"edge.neutral.test", "other.neutral.test", "third.neutral.test"}
    assert all("client" not in c for c in configs[-1].detail["candidates"])  # type: ignore[index]

    db = tmp_path / "events.db"
    store = open_store(f"sqlite:///{db}", create=True)
    store.write(configs)
    store.close()
    out = tmp_path / "suggested"
    assert main(["lists", "suggest", "--store", f"sqlite:///{db}", "-o", str(out)]) == 0
    (path,) = out.glob("*.yaml")
    assert path.name == "watchy-candidates.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["extends"] == "watchy"
    assert [d["domain"] for d in doc["domains"]] == [
        "edge.neutral.test", "other.neutral.test", "third.neutral.test"
    ]  # fmt: skip
    assert all(d["confidence"] == "low" and "cname" in d["source"] for d in doc["domains"])
    # the file is a valid catalogue extension of the app it names
    cat = load_catalogue([env.cat_dir, out])
    assert any(r.domain == "edge.neutral.test" for r in cat.apps["watchy"].rules)


def test_suggest_with_nothing_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "events.db"
    open_store(f"sqlite:///{db}", create=True).close()
    assert main(["lists", "suggest", "--store", f"sqlite:///{db}"]) == 0
    assert "no candidates" in capsys.readouterr().err
