"""pytest fixtures: report (owned by the report area; loaded from conftest.py).

``july_events()`` is a synthetic July 2026 with two proxy instances, written the way the addon
writes (start, config, heartbeat, hit, stop events). Every figure the report must derive from it is
spelled out in ``JULY_*`` constants so that tests compare against numbers worked out by hand, not
against the code under test:

- ``proxy-a`` starts on 30 June 23:50 (catalogue ``cat-v1``, policy ``pol-v1``), beats every
  120 s, goes silent from 5 July 10:00 to 13:00 (a crash: no stop), restarts, reloads the
  catalogue (``cat-v2``) on 8 July 12:00 and the policy (``pol-v2``) on 12 July 09:00, and runs
  past the end of the month.
- ``proxy-b`` starts on 10 July 00:00 and stops cleanly on 20 July 00:00.
- Exceptions: ``X0`` expired before the month, ``X1`` expires during it (date form), ``X2`` is
  granted by ``pol-v2`` and outlives the month, ``X3`` is granted by ``pol-v2`` and expires on
  20 July 12:00 (datetime form).
- Hits: two apps (``tiktok``, ``wechat-pay`` under two regimes), all four actions, five
  pseudonymous clients, three departments plus none, and hits just outside the month that must
  not be counted.

``july_store`` is a :class:`MemoryStore` holding them (session-scoped: it is read-only in tests);
``report_of_july`` its report with the shipped catalogue, ``json_of_july`` that report's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from typing import Any

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report import MonthlyReport
from egresswatch.report import build_report
from egresswatch.report import render_json
from egresswatch.store.memory import MemoryStore

MONTH = "2026-07"
HEARTBEAT = 120.0
TIKTOK_REGIMES = ("us-eo-13942", "us-far-52.204-27")
WECHAT_PAY_REGIMES = ("us-eo-13943", "us-eo-13971")


def ts(text: str) -> float:
    """``"2026-07-05T10:00:00"`` (UTC) -> Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


EXCEPTIONS: dict[str, dict[str, Any]] = {
    "X0": {
        "id": "X0",
        "apps": ["tiktok"],
        "regimes": [],
        "clients": ["10.0.9.0/24"],
        "users": [],
        "reason": "Old marketing pilot",
        "approver": "ciso@example.org",
        "ticket": "SEC-10",
        "expires": "2026-06-25",
    },
    "X1": {
        "id": "X1",
        "apps": ["wechat-pay"],
        "regimes": [],
        "clients": ["10.0.1.0/24"],
        "users": [],
        "reason": "Supplier payments <China office>",
        "approver": "cfo@example.org",
        "ticket": "FIN-7",
        "expires": "2026-07-15",
    },
    "X2": {
        "id": "X2",
        "apps": ["tiktok"],
        "regimes": [],
        "clients": [],
        "users": ["social-media-team"],
        "reason": "Brand account management",
        "approver": "cmo@example.org",
        "ticket": "MKT-3",
        "expires": "2026-09-30",
    },
    "X3": {
        "id": "X3",
        "apps": ["wechat-pay"],
        "regimes": [],
        "clients": ["10.0.2.7/32"],
        "users": [],
        "reason": "One refund",
        "approver": "cfo@example.org",
        "ticket": "FIN-9",
        "expires": "2026-07-20T12:00:00Z",
    },
}

CATALOGUES = {
    "cat-v1": {
        "files": ["domains/tiktok.yaml", "domains/wechat-pay.yaml"],
        "entries": {"tiktok": 40, "wechat-pay": 6},
    },
    "cat-v2": {
        "files": ["domains/tiktok.yaml", "domains/wechat-pay.yaml"],
        "entries": {"tiktok": 41, "wechat-pay": 7},
    },
}
POLICIES = {
    "pol-v1": {
        "exceptions": ["X0", "X1"],
        "dry_run": False,
        "modes": {"tiktok": "block", "wechat-pay": "block"},
    },
    "pol-v2": {
        "exceptions": ["X1", "X2", "X3"],
        "dry_run": False,
        "modes": {"tiktok": "block", "wechat-pay": "block"},
    },
}

# (start time, instance, app, action, client, department, host, count): ``count`` hits one second
# apart from the start time.
HITS: list[tuple[str, str, str, str, str, str, str, int]] = [
    ("2026-06-30T23:55:00", "proxy-a", "tiktok", "monitor", "h:aaaa", "sales", "www.tiktok.com", 3),
    ("2026-07-01T08:00:00", "proxy-a", "tiktok", "monitor", "h:aaaa", "sales", "www.tiktok.com", 5),
    (
        "2026-07-02T12:00:00",
        "proxy-a",
        "wechat-pay",
        "exempted",
        "h:dddd",
        "finance",
        "pay.weixin.qq.com",
        6,
    ),
    ("2026-07-03T09:00:00", "proxy-a", "tiktok", "blocked", "h:bbbb", "eng", "api.tiktokv.com", 3),
    ("2026-07-10T10:00:00", "proxy-b", "tiktok", "blocked", "h:aaaa", "sales", "www.tiktok.com", 4),
    (
        "2026-07-15T12:00:00",
        "proxy-b",
        "wechat-pay",
        "would_block",
        "h:eeee",
        "",
        "wx.tenpay.com",
        2,
    ),
    (
        "2026-07-16T12:00:00",
        "proxy-a",
        "wechat-pay",
        "blocked",
        "h:dddd",
        "finance",
        "pay.weixin.qq.com",
        1,
    ),
    ("2026-07-31T23:59:00", "proxy-a", "tiktok", "monitor", "h:cccc", "eng", "www.tiktok.com", 2),
    ("2026-08-01T00:00:00", "proxy-a", "tiktok", "blocked", "h:ffff", "eng", "www.tiktok.com", 7),
]

# What the report must say, worked out by hand from the data above.
JULY_TOTALS = [
    {
        "app": "tiktok",
        "action": "blocked",
        "events": 7,
        "distinct_clients": 2,
        "first_seen": "2026-07-03T09:00:00Z",
        "last_seen": "2026-07-10T10:00:03Z",
    },
    {
        "app": "tiktok",
        "action": "monitor",
        "events": 7,
        "distinct_clients": 2,
        "first_seen": "2026-07-01T08:00:00Z",
        "last_seen": "2026-07-31T23:59:01Z",
    },
    {
        "app": "wechat-pay",
        "action": "blocked",
        "events": 1,
        "distinct_clients": 1,
        "first_seen": "2026-07-16T12:00:00Z",
        "last_seen": "2026-07-16T12:00:00Z",
    },
    {
        "app": "wechat-pay",
        "action": "exempted",
        "events": 6,
        "distinct_clients": 1,
        "first_seen": "2026-07-02T12:00:00Z",
        "last_seen": "2026-07-02T12:00:05Z",
    },
    {
        "app": "wechat-pay",
        "action": "would_block",
        "events": 2,
        "distinct_clients": 1,
        "first_seen": "2026-07-15T12:00:00Z",
        "last_seen": "2026-07-15T12:00:01Z",
    },
]
JULY_SECONDS = 31 * 86400
# proxy-a: the whole month but the three silent hours on 5 July.
JULY_COVERED = {"proxy-a": JULY_SECONDS - 3 * 3600, "proxy-b": 10 * 86400}
JULY_GAPS = {
    "proxy-a": [("2026-07-05T10:00:00Z", "2026-07-05T13:00:00Z", "heartbeat-silence")],
    "proxy-b": [
        ("2026-07-01T00:00:00Z", "2026-07-10T00:00:00Z", "not-running"),
        ("2026-07-20T00:00:00Z", "2026-08-01T00:00:00Z", "stopped"),
    ],
}
JULY_DAILY = [
    ("2026-07-01", "tiktok", 5),
    ("2026-07-02", "wechat-pay", 6),
    ("2026-07-03", "tiktok", 3),
    ("2026-07-10", "tiktok", 4),
    ("2026-07-15", "wechat-pay", 2),
    ("2026-07-16", "wechat-pay", 1),
    ("2026-07-31", "tiktok", 2),
]
JULY_TOP_CLIENTS = [("h:aaaa", 9), ("h:dddd", 7), ("h:bbbb", 3), ("h:cccc", 2), ("h:eeee", 2)]
JULY_TOP_HOSTS = [
    ("www.tiktok.com", 11),
    ("pay.weixin.qq.com", 7),
    ("api.tiktokv.com", 3),
    ("wx.tenpay.com", 2),
]


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"ev{self.n:07d}"


def _policy_detail(version: str) -> dict[str, Any]:
    p = POLICIES[version]
    return {
        "kind": "policy",
        "version": version,
        "file": "/etc/egresswatch/policy.yaml",
        "default": "monitor",
        "dry_run": p["dry_run"],
        "modes": p["modes"],
        "exceptions": [EXCEPTIONS[x] for x in p["exceptions"]],
    }


def _catalogue_detail(version: str) -> dict[str, Any]:
    return {"kind": "catalogue", "version": version, **CATALOGUES[version]}


def july_events() -> list[Event]:
    """Every event of the scenario (including June and August ones), in time order."""
    ids = _Ids()
    out: list[Event] = []
    state = {"proxy-a": ["cat-v1", "pol-v1"], "proxy-b": ["cat-v1", "pol-v1"]}

    def ev(t: float, kind: EventKind, inst: str, **kw: Any) -> None:
        cat, pol = state[inst]
        out.append(
            Event(
                ts=t,
                kind=kind,
                instance=inst,
                event_id=ids(),
                catalogue_version=cat,
                policy_version=pol,
                **kw,
            )
        )

    def boot(t: float, inst: str) -> None:
        cat, pol = state[inst]
        ev(
            t,
            EventKind.START,
            inst,
            detail={
                "egresswatch": "0.1.0",
                "mitmproxy": "12.3.1",
                "catalogue_version": cat,
                "policy_version": pol,
                "client_identity": "hash",
            },
        )
        ev(t, EventKind.CONFIG, inst, detail=_catalogue_detail(cat))
        ev(t, EventKind.CONFIG, inst, detail=_policy_detail(pol))

    def beats(inst: str, first: float, last: float) -> Iterator[float]:
        t = first
        while t <= last:
            yield t
            t += HEARTBEAT

    # proxy-a
    boot(ts("2026-06-30T23:50:00"), "proxy-a")
    for t in beats("proxy-a", ts("2026-06-30T23:52:00"), ts("2026-07-05T10:00:00")):
        ev(t, EventKind.HEARTBEAT, "proxy-a")
    boot(ts("2026-07-05T13:00:00"), "proxy-a")
    for t in beats("proxy-a", ts("2026-07-05T13:02:00"), ts("2026-08-01T00:10:00")):
        if t == ts("2026-07-08T12:00:00"):
            state["proxy-a"][0] = "cat-v2"
            ev(t, EventKind.CONFIG, "proxy-a", detail=_catalogue_detail("cat-v2"))
        if t == ts("2026-07-12T09:00:00"):
            state["proxy-a"][1] = "pol-v2"
            ev(t, EventKind.CONFIG, "proxy-a", detail=_policy_detail("pol-v2"))
        ev(t, EventKind.HEARTBEAT, "proxy-a")
    # proxy-b
    boot(ts("2026-07-10T00:00:00"), "proxy-b")
    for t in beats("proxy-b", ts("2026-07-10T00:02:00"), ts("2026-07-19T23:58:00")):
        ev(t, EventKind.HEARTBEAT, "proxy-b")
    ev(ts("2026-07-20T00:00:00"), EventKind.STOP, "proxy-b")
    # hits
    for start, inst, app, action, client, dept, host, count in HITS:
        regimes = TIKTOK_REGIMES if app == "tiktok" else WECHAT_PAY_REGIMES
        for i in range(count):
            ev(
                ts(start) + i,
                EventKind.HIT,
                inst,
                signal="sni",
                host=host,
                app=app,
                regimes=regimes,
                action=action,
                rule=f"{app}.yaml:10",
                client=client,
                department=dept or None,
                exception_id="X1" if action == "exempted" else None,
            )
    out.sort(key=lambda e: e.ts)
    return out


@pytest.fixture(scope="session")
def july() -> list[Event]:
    return july_events()


@pytest.fixture(scope="session")
def july_store(july: list[Event]) -> Iterator[MemoryStore]:
    store = MemoryStore()
    store.write(july)
    yield store
    store.close()


#: A ``now`` after July has ended (the report is complete, not partial).
AFTER_JULY = datetime(2026, 8, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def bundled_catalogue() -> Catalogue:
    return load_catalogue([bundled_dir()])


@pytest.fixture(scope="session")
def report_of_july(july_store: MemoryStore, bundled_catalogue: Catalogue) -> MonthlyReport:
    """The July report over the memory store, with the shipped catalogue's names and regimes."""
    return build_report(
        july_store, MONTH, now=AFTER_JULY, organisation="Example Ltd", catalogue=bundled_catalogue
    )


@pytest.fixture(scope="session")
def json_of_july(report_of_july: MonthlyReport) -> dict[str, Any]:
    """:data:`report_of_july` as its JSON rendering reads back."""
    data: dict[str, Any] = json.loads(render_json(report_of_july))
    return data
