"""Tests of ``egresswatch.report.history``: catalogue and policy versions and exceptions in force."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.policy import Policy
from egresswatch.report import build_report
from egresswatch.report import render
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import AFTER_JULY
from tests.plugins.report import MONTH
from tests.plugins.report import ts

AT = ts("2026-07-02T10:00:00")


def config(n: int, detail: dict[str, object]) -> Event:
    """The CONFIG row ``c<n>`` of instance p1, ``n`` seconds after ``AT``."""
    return Event(
        ts=AT + n,
        kind=EventKind.CONFIG,
        instance="p1",
        event_id=f"c{n}",
        catalogue_version="cat-9",
        detail=detail,
    )


def test_catalogue_versions_in_force(json_of_july: dict) -> None:  # type: ignore[type-arg]
    cats = {c["version"]: c for c in json_of_july["catalogues"]}
    assert list(cats) == ["cat-v1", "cat-v2"]
    # cat-v1 was loaded on 30 June (found by looking back) and is in force from the 1st.
    assert cats["cat-v1"]["first_seen"] == "2026-07-01T00:00:00Z"
    assert cats["cat-v1"]["last_seen"] == "2026-07-20T00:00:00Z"  # proxy-b's stop
    assert cats["cat-v1"]["loads"] == 2  # proxy-a's restart and proxy-b's start
    assert cats["cat-v1"]["instances"] == ["proxy-a", "proxy-b"]
    assert cats["cat-v1"]["entries"] == {"tiktok": 40, "wechat-pay": 6}
    assert cats["cat-v2"]["first_seen"] == "2026-07-08T12:00:00Z"
    assert cats["cat-v2"]["last_seen"] == "2026-07-31T23:58:00Z"
    assert (cats["cat-v2"]["loads"], cats["cat-v2"]["instances"]) == (1, ["proxy-a"])
    assert cats["cat-v2"]["entries"] == {"tiktok": 41, "wechat-pay": 7}


def test_policies_in_force(json_of_july: dict) -> None:  # type: ignore[type-arg]
    pols = {p["version"]: p for p in json_of_july["policies"]}
    assert list(pols) == ["pol-v1", "pol-v2"]
    assert pols["pol-v2"]["first_seen"] == "2026-07-12T09:00:00Z"
    assert pols["pol-v1"]["modes"] == {"tiktok": "block", "wechat-pay": "block"}
    assert pols["pol-v1"]["dry_run"] is False
    assert pols["pol-v1"]["file"] == "/etc/egresswatch/policy.yaml"


def test_exceptions_in_force_granted_expired(json_of_july: dict) -> None:  # type: ignore[type-arg]
    flags = {
        x["id"]: (x["in_force"], x["granted"], x["expired"]) for x in json_of_july["exceptions"]
    }
    assert flags == {
        "X0": (False, False, False),  # expired in June
        "X1": (True, False, True),  # from June, expires at the end of 15 July
        "X2": (True, True, False),  # granted in July, runs to September
        "X3": (True, True, True),  # granted and expired in July (datetime expiry)
    }
    x1 = next(x for x in json_of_july["exceptions"] if x["id"] == "X1")
    assert x1["expires_at"] == "2026-07-16T00:00:00Z"
    assert (x1["approver"], x1["ticket"]) == ("cfo@example.org", "FIN-7")
    x3 = next(x for x in json_of_july["exceptions"] if x["id"] == "X3")
    assert x3["expires_at"] == "2026-07-20T12:00:00Z"


def test_a_malformed_config_row_is_named_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    store.write(
        [
            Event(
                ts=AT, kind=EventKind.START, instance="p1", event_id="s", catalogue_version="cat-9"
            ),
            config(1, {"kind": "catalogue", "version": "cat-9", "entries": {"tiktok": "many"}}),
            config(2, {"kind": "policy", "version": "pol-9", "modes": {"tiktok": "block"}}),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        r = build_report(store, MONTH, now=AFTER_JULY, verify=False)
    assert any(
        "config event p1/c1: detail.entries: expected an object of whole numbers" in m
        for m in caplog.messages
    )
    # The policy row still counts; the catalogue version is known only from the start row's
    # column: in force, but without a load or its entries.
    assert [(p.version, p.modes) for p in r.policies] == [("pol-9", (("tiktok", "block"),))]
    assert [(c.version, c.loads, c.entries) for c in r.catalogues] == [("cat-9", 0, ())]


def test_the_policy_table_shows_the_evasion_keys_in_force(
    policy_from: Callable[[str], Policy],
) -> None:
    """The evasion keys a policy version set (encrypted DNS, ECH and its scope, Alt-Svc) are
    recorded on load and shown beside its modes; a row recorded before them says so."""
    policy = policy_from("version: 1\nalt_svc: strip\nech: {action: block, scope: designated}\n")
    store = MemoryStore()
    store.write(
        [
            Event(
                ts=AT, kind=EventKind.START, instance="p1", event_id="s", catalogue_version="cat-9"
            ),
            config(1, {"kind": "policy", **policy.snapshot()}),
            config(2, {"kind": "policy", "version": "pol-old", "modes": {}}),
        ]
    )
    r = build_report(store, MONTH, now=AFTER_JULY, verify=False)
    evasion = {p.version: dict(p.evasion) for p in r.policies}
    assert evasion == {
        policy.version: {
            "encrypted_dns": "monitor",
            "ech": "block",
            "ech_scope": "designated",
            "alt_svc": "strip",
        },
        "pol-old": {},
    }
    md = render(r, "md")
    # (Markdown escapes the underscores)
    assert r"alt\_svc=strip, ech=block, ech\_scope=designated, encrypted\_dns=monitor" in md
    assert "not recorded" in md
    csv_rows = [line for line in render(r, "csv").splitlines() if policy.version in line]
    assert any("alt_svc" in line and "strip" in line for line in csv_rows)
