"""egresswatch.candidates: evidence per name, bounded, no client identity kept."""

from __future__ import annotations

import dataclasses

from egresswatch.candidates import Candidates


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_evidence_aggregates_per_name_and_app() -> None:
    clock = Clock()
    c = Candidates(clock=clock)
    c.note_cname("cdn.example.net", "tiktok", ("cdn.example.net", "v16.tiktokcdn.com"))
    clock.now += 5
    c.note_cname("cdn.example.net", "tiktok", ("cdn.example.net", "v19.tiktokcdn.com"))
    c.note_certificate("img.example.net", "wechat", "SAN *.weixin.qq.com")
    (cname, cert) = c.snapshot()
    assert (cname.name, cname.evidence, cname.first_seen, cname.last_seen) == (
        "cdn.example.net",
        {"cname": 2},
        1000.0,
        1005.0,
    )
    assert cname.examples == {"cname": "cdn.example.net -> v16.tiktokcdn.com"}
    assert (cert.app, cert.evidence) == ("wechat", {"certificate": 1})


def test_follows_hit_only_within_the_window_and_per_client() -> None:
    clock = Clock()
    c = Candidates(clock=clock, window=5)
    c.note_hit("k1", "tiktok")
    clock.now += 3
    c.note_unmatched("k1", "new.example")  # 3 s after k1's hit
    c.note_unmatched("k2", "other.example")  # k2 had no hit
    clock.now += 3
    c.note_unmatched("k1", "late.example")  # 6 s: outside the window
    (only,) = c.snapshot()
    assert (only.name, only.app, only.evidence) == ("new.example", "tiktok", {"follows_hit": 1})
    assert only.examples["follows_hit"] == "3.0s after a hit on tiktok"


def test_no_client_identity_in_candidates() -> None:
    c = Candidates(clock=Clock())
    c.note_hit("client-key-secret", "tiktok")
    c.note_unmatched("client-key-secret", "x.example")
    text = repr([dataclasses.asdict(x) for x in c.snapshot()])
    assert "client-key-secret" not in text


def test_bounded_weak_names_make_room_strong_ones_stay() -> None:
    clock = Clock()
    c = Candidates(clock=clock, max_names=3)
    c.note_cname("a.example", "tiktok", ("a.example", "t.tiktokcdn.com"))
    c.note_hit("k", "tiktok")
    c.note_unmatched("k", "weak1.example")
    c.note_unmatched("k", "weak2.example")
    c.note_cname("b.example", "tiktok", ("b.example", "t.tiktokcdn.com"))  # evicts a weak one
    names = {x.name for x in c.snapshot()}
    assert {"a.example", "b.example"} <= names and len(names) == 3
    c.note_cname("c.example", "tiktok", ("c.example", "t.tiktokcdn.com"))  # evicts the other
    c.note_cname("d.example", "tiktok", ("d.example", "t.tiktokcdn.com"))  # all strong: dropped
    assert {x.name for x in c.snapshot()} == {"a.example", "b.example", "c.example"}
    assert c.dropped == 3


def test_client_memory_is_bounded() -> None:
    clock = Clock()
    c = Candidates(clock=clock, max_clients=2)
    for k in ("k1", "k2", "k3"):
        c.note_hit(k, "tiktok")
    c.note_unmatched("k1", "forgotten.example")  # k1 fell out of the bounded memory
    c.note_unmatched("k3", "kept.example")
    assert [x.name for x in c.snapshot()] == ["kept.example"]


def test_a_flood_of_strong_names_into_a_full_table_costs_no_scan_each() -> None:
    import time as _time

    c = Candidates(max_names=2000, clock=lambda: 1.0)
    for i in range(2000):
        c.note_cname(f"n{i}.test", "tiktok", (f"n{i}.test", "v16.tiktokcdn.com"))
    t0 = _time.perf_counter()
    for i in range(2000, 22000):
        c.note_cname(f"n{i}.test", "tiktok", (f"n{i}.test", "v16.tiktokcdn.com"))
    elapsed = _time.perf_counter() - t0
    assert len(c) == 2000 and c.dropped == 20000
    # a scan of 2,000 items per name would take seconds here; O(1) each takes milliseconds
    assert elapsed < 1.0, elapsed
