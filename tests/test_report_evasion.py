"""The report's evasion section (``egresswatch.report.evasion``): encrypted DNS and hidden ECH
events are listed apart and never appear as apps in the findings."""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime

from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report import build_report
from egresswatch.report import render_html
from egresswatch.report import render_markdown
from egresswatch.report import report_to_dict
from egresswatch.store.memory import MemoryStore

T0 = datetime(2026, 7, 10, 12, tzinfo=UTC).timestamp()


def _hit(i: int, signal: str, host: str, action: str, app: str | None, client: str) -> Event:
    return Event(
        ts=T0 + i, kind=EventKind.HIT, instance="p1", event_id=f"e{i}", signal=signal,
        host=host, app=app, action=action, client=client,
        regimes=("r1",) if app else (),
    )  # fmt: skip


def test_evasion_rows_seen_blocked_and_kept_out_of_the_apps() -> None:
    store = MemoryStore("memory://")
    store.write(
        [
            _hit(1, "encrypted_dns", "dns.google", "monitor", None, "10.0.0.1"),
            _hit(2, "encrypted_dns", "8.8.8.8", "monitor", None, "10.0.0.2"),
            _hit(3, "encrypted_dns", "dns.quad9.net", "blocked", None, "10.0.0.1"),
            _hit(4, "ech", "cloudflare-ech.com", "monitor", None, "10.0.0.3"),
            _hit(5, "cname", "v16.tiktokcdn.com", "monitor", "tiktok", "10.0.0.1"),
        ]
    )
    r = build_report(store, "2026-07", now=datetime(2026, 8, 2, tzinfo=UTC), verify=False)
    assert [t.app for t in r.totals] == ["tiktok"]
    assert {d.app for d in r.daily} == {"tiktok"}
    got = {(e.kind, e.name, e.action): e.events for e in r.evasion}
    assert got == {
        ("encrypted_dns", "google-dns", "monitor"): 2,  # by name and by address
        ("encrypted_dns", "quad9-dns", "blocked"): 1,
        ("ech", "cloudflare-ech.com", "monitor"): 1,
    }
    md = render_markdown(r)
    assert "## Evasion: encrypted DNS, hidden ECH and HTTP/3 advertisements" in md
    assert "4 evasion events recorded in the period, 1 of them blocked." in md
    assert "| encrypted DNS | google-dns | monitor | 2 | 1 |" in md  # clients: a lower bound
    assert "Still blind" in md
    doc = json.loads(json.dumps(report_to_dict(r)))
    assert doc["evasion"]["rows"][0]["kind"] in ("ech", "encrypted_dns")
    assert len(doc["evasion"]["rows"]) == 3
    assert "hidden ECH" in render_html(r)


def test_empty_period_says_nothing_was_seen() -> None:
    store = MemoryStore("memory://")
    r = build_report(store, "2026-07", now=datetime(2026, 8, 2, tzinfo=UTC), verify=False)
    assert r.evasion == ()
    assert "No connection to a listed encrypted-DNS resolver" in render_markdown(r)


def test_candidates_for_review_are_listed() -> None:
    from egresswatch.candidates import Candidates
    from egresswatch.candidates import to_detail

    c = Candidates(clock=lambda: T0)
    c.note_cname("edge.neutral.test", "tiktok", ("edge.neutral.test", "v16.tiktokcdn.com"))
    store = MemoryStore("memory://")
    store.write(
        [
            Event(
                ts=T0,
                kind=EventKind.CONFIG,
                instance="p1",
                event_id="c1",
                detail=to_detail(c.snapshot()),
            ),
        ]  # fmt: skip
    )
    r = build_report(store, "2026-07", now=datetime(2026, 8, 2, tzinfo=UTC), verify=False)
    assert [(x.name, x.app) for x in r.candidates] == [("edge.neutral.test", "tiktok")]
    md = render_markdown(r)
    assert "### Candidates for review" in md
    assert "| edge.neutral.test | tiktok | cname x1 |" in md.replace("\\", "")
    assert report_to_dict(r)["evasion"]["candidates_for_review"][0]["app"] == "tiktok"


def test_alt_svc_rows_are_listed_as_seen_and_stripped() -> None:
    """Alt-Svc events (no app, decided by the policy key) are their own kind, even for a host
    that is also an ECH-like or resolver-like name, and never an app's hit."""
    from dataclasses import replace

    def alt(i: int, host: str, action: str, client: str) -> Event:
        e = _hit(i, "alt_svc", host, action, None, client)
        return replace(e, decided_by="policy", decided_id="alt_svc", detail={"app": "tiktok"})

    store = MemoryStore("memory://")
    store.write(
        [
            _hit(1, "http_host", "www.tiktok.com", "monitor", "tiktok", "10.0.0.1"),
            alt(2, "www.tiktok.com", "monitor", "10.0.0.1"),
            alt(3, "www.tiktok.com", "blocked", "10.0.0.2"),
            alt(4, "www.tiktok.com", "blocked", "10.0.0.3"),
            alt(5, "dns.google", "blocked", "10.0.0.3"),  # not taken for a resolver
            _hit(6, "ech", "cloudflare-ech.com", "blocked", None, "10.0.0.3"),
        ]
    )
    r = build_report(store, "2026-07", now=datetime(2026, 8, 2, tzinfo=UTC), verify=False)
    assert [(t.app, t.events) for t in r.totals] == [("tiktok", 1)]
    got = {(e.kind, e.name, e.action): (e.events, e.distinct_clients) for e in r.evasion}
    assert got == {
        ("alt_svc", "www.tiktok.com", "monitor"): (1, 1),
        ("alt_svc", "www.tiktok.com", "blocked"): (2, 2),
        ("alt_svc", "dns.google", "blocked"): (1, 1),
        ("ech", "cloudflare-ech.com", "blocked"): (1, 1),
    }
    md = render_markdown(r)
    assert "| HTTP/3 advertised (Alt-Svc) | www.tiktok.com | stripped | 2 | 2 |" in md
    assert "| HTTP/3 advertised (Alt-Svc) | www.tiktok.com | seen | 1 | 1 |" in md
    assert (
        "5 evasion events recorded in the period, 1 of them blocked, "
        "3 HTTP/3 advertisements (Alt-Svc) stripped." in md
    )
    doc = json.loads(json.dumps(report_to_dict(r)))
    kinds = sorted({row["kind"] for row in doc["evasion"]["rows"]})
    assert kinds == ["alt_svc", "ech"]
    assert "stripped" in render_html(r)
