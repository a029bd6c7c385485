"""egresswatch.resolutions: CNAME chains and the bounded address table, including hostile answers."""

from __future__ import annotations

import tracemalloc

import pytest
from egresswatch.resolutions import MAX_CHAIN
from egresswatch.resolutions import Answer
from egresswatch.resolutions import Resolution
from egresswatch.resolutions import ResolutionTable
from egresswatch.resolutions import follow_chain
from hypothesis import given
from hypothesis import strategies as st

TIKTOK = Resolution("tiktok", "v16.tiktokcdn.com", ("cdn.example.net", "v16.tiktokcdn.com"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_chain_from_question_to_addresses() -> None:
    chain = follow_chain(
        "CDN.Example.NET.",
        [
            Answer("cdn.example.net.", "CNAME", "edge.example.org.", 300),
            Answer("edge.example.org", "CNAME", "v16.TikTokCDN.com", 60),
            Answer("v16.tiktokcdn.com", "A", "203.0.113.7", 20),
            Answer("v16.tiktokcdn.com", "AAAA", "2001:db8:0:0::7", 20),
            Answer("unrelated.example", "A", "198.51.100.1", 20),  # not on the chain
        ],
    )
    assert chain.names == ("cdn.example.net", "edge.example.org", "v16.tiktokcdn.com")
    assert chain.addresses == (("203.0.113.7", 20), ("2001:db8::7", 20))
    assert chain.broken is None


def test_no_cname_keeps_the_question() -> None:
    chain = follow_chain("a.example", [Answer("a.example", "A", "192.0.2.1", 5)])
    assert chain.names == ("a.example",) and chain.addresses == (("192.0.2.1", 5),)


def test_loops_and_long_chains_stop() -> None:
    loop = follow_chain(
        "a.example",
        [
            Answer("a.example", "CNAME", "b.example", 1),
            Answer("b.example", "CNAME", "a.example", 1),
        ],
    )
    assert loop.names == ("a.example", "b.example") and loop.broken == "CNAME loop at a.example"
    long = [Answer(f"n{i}.example", "CNAME", f"n{i + 1}.example", 1) for i in range(100)]
    chain = follow_chain("n0.example", long)
    assert len(chain.names) == MAX_CHAIN + 1
    assert chain.broken == f"CNAME chain longer than {MAX_CHAIN}"


def test_forged_values_are_ignored() -> None:
    chain = follow_chain(
        "a.example",
        [
            Answer("a.example", "A", "not-an-address", 5),
            Answer("a.example", "A", "2001:db8::1", 5),  # an IPv6 value in an A record
            Answer("a.example", "AAAA", "192.0.2.1", 5),  # and the other way round
            Answer("a.example", "A", "192.0.2.9", -5),  # a negative TTL counts as 0
        ],
    )
    assert chain.addresses == (("192.0.2.9", 0),)


@given(
    st.lists(
        st.builds(
            Answer,
            st.sampled_from(["a.example", "b.example", "c.example", "x"]),
            st.sampled_from(["A", "AAAA", "CNAME", "TXT"]),
            st.sampled_from(["a.example", "b.example", "192.0.2.1", "::1", "", "c.example"]),
            st.integers(-(2**31), 2**31),
        ),
        max_size=50,
    )
)
def test_any_answer_set_gives_a_simple_chain(answers: list[Answer]) -> None:
    chain = follow_chain("a.example", answers)
    assert chain.names[0] == "a.example"
    assert len(set(chain.names)) == len(chain.names) <= MAX_CHAIN + 1


def test_table_lookup_ttl_and_clamping() -> None:
    clock = Clock()
    t = ResolutionTable(10, clock=clock, min_ttl=30, max_ttl=600)
    t.remember("203.0.113.7", TIKTOK, ttl=0)  # clamped up to 30 s
    clock.now = 29.9
    assert t.lookup("203.0.113.7") == TIKTOK
    clock.now = 30.0
    assert t.lookup("203.0.113.7") is None and len(t) == 0
    t.remember("203.0.113.8", TIKTOK, ttl=10**9)  # clamped down to 600 s
    clock.now = 30.0 + 599
    assert t.lookup("203.0.113.8") == TIKTOK
    clock.now = 30.0 + 600
    assert t.expire() == 1 and len(t) == 0


def test_table_is_bounded_and_evicts_least_recently_used() -> None:
    t = ResolutionTable(3, clock=lambda: 0.0)
    for i in range(3):
        t.remember(f"192.0.2.{i}", TIKTOK, ttl=60)
    assert t.lookup("192.0.2.0") == TIKTOK  # now the most recently used
    t.remember("192.0.2.3", TIKTOK, ttl=60)
    assert t.lookup("192.0.2.1") is None  # the least recently used went
    assert t.lookup("192.0.2.0") == TIKTOK
    assert len(t) == 3 and t.evictions == 1
    with pytest.raises(ValueError, match="at least one"):
        ResolutionTable(0)


def test_memory_stays_bounded_under_a_flood_of_answers() -> None:
    t = ResolutionTable(1000, clock=lambda: 0.0)
    tracemalloc.start()
    for i in range(1000):
        t.remember(f"10.0.{i // 256}.{i % 256}", TIKTOK, ttl=60)
    full, _ = tracemalloc.get_traced_memory()
    for i in range(50_000):
        t.remember(f"10.{i // 65536 + 1}.{i // 256 % 256}.{i % 256}", TIKTOK, ttl=60)
    flooded, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(t) == 1000 and t.evictions == 50_000
    assert flooded < full * 1.5, (full, flooded)
