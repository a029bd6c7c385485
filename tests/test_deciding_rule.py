"""Issue 12, item 3: every hit records the rule that decided it (app, regime, default,
exception), the ECS export carries it as ``rule.ruleset`` / ``rule.id``, and the report counts
each hit once, under that rule, with the regime's status beside it.

Built on the shipped catalogue: Alipay is designated by us-eo-13971 (revoked 2021) and blocked
here by an app rule; TikTok is designated by five regimes and blocked by one regime rule;
WeChat Pay is blocked by a rule on the revoked us-eo-13971."""

from __future__ import annotations

import dataclasses
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.commands.events import ecs_document
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.matcher import Matcher
from egresswatch.policy import Policy
from egresswatch.policy import load_policy
from egresswatch.report import build_report
from egresswatch.report import render_markdown
from egresswatch.report import report_to_dict
from egresswatch.store import EventStore
from egresswatch.witness import verify_rollups

from tests.plugins.addon import Env
from tests.plugins.addon import request_flow
from tests.plugins.report import AFTER_JULY
from tests.plugins.report import MONTH
from tests.plugins.report import ts

POLICY = """\
default: monitor
apps:
  alipay: block
regimes:
  us-nttgda-2022: block
  us-far-52.204-27: monitor
  us-eo-13971: block
exceptions:
  - id: EXC-7
    apps: [tiktok]
    clients: [10.9.9.9/32]
    reason: Supplier contact
    approver: CISO
    ticket: SEC-7
    expires: 2027-12-31
"""
WHEN = datetime(2026, 7, 10, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue([bundled_dir()])


@pytest.fixture(scope="module")
def matcher(catalogue: Catalogue) -> Matcher:
    return Matcher.from_catalogue(catalogue)


@pytest.fixture
def policy(catalogue: Catalogue, tmp_path: Path) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return load_policy(path, catalogue)


@pytest.mark.parametrize(
    ("host", "client", "by", "rule_id", "action"),
    [
        ("mobilegw.alipay.com", "10.0.0.1", "app", "alipay", "blocked"),
        ("www.tiktok.com", "10.0.0.1", "regime", "us-nttgda-2022", "blocked"),
        ("pay.weixin.qq.com", "10.0.0.1", "regime", "us-eo-13971", "blocked"),
        ("www.tiktok.com", "10.9.9.9", "exception", "EXC-7", "exempted"),
        ("www.deepseek.com", "10.0.0.1", "default", None, "monitor"),
    ],
)
def test_the_decision_names_its_rule(
    policy: Policy, matcher: Matcher, host: str, client: str, by: str, rule_id: str | None,
    action: str,
) -> None:  # fmt: skip
    match = matcher.match(host)
    assert match is not None
    d = policy.decide(match, client, None, WHEN)
    assert d is not None
    assert (d.decided_by, d.decided_id, d.action) == (by, rule_id, action)


def test_the_hit_event_and_its_ecs_export_carry_the_rule(env: Env) -> None:
    f = request_flow("api.blocked.test")
    env.observe.requestheaders(f)
    g = request_flow("www.watched.test")
    env.observe.requestheaders(g)
    blocked, watched = env.events()
    assert (blocked.decided_by, blocked.decided_id) == ("app", "blocky")
    assert (watched.decided_by, watched.decided_id) == ("default", None)
    rule = ecs_document(blocked)["rule"]
    assert (rule["ruleset"], rule["id"], rule["name"]) == ("app", "blocky", "blocked.test")
    assert "id" not in ecs_document(watched)["rule"]


def _hits(policy: Policy, matcher: Matcher) -> list[Event]:
    plan = [  # (day, host, client)
        (2, "mobilegw.alipay.com", "10.0.0.1"),
        (3, "mobilegw.alipay.com", "10.0.0.2"),
        (4, "www.tiktok.com", "10.0.0.1"),
        (5, "www.tiktok.com", "10.0.0.3"),
        (6, "www.tiktok.com", "10.9.9.9"),
        (7, "pay.weixin.qq.com", "10.0.0.1"),
    ]
    out = []
    for n, (day, host, client) in enumerate(plan):
        when = ts(f"2026-07-{day:02d}T10:00:00")
        m = matcher.match(host)
        assert m is not None
        d = policy.decide(m, client, None, datetime.fromtimestamp(when, UTC))
        assert d is not None
        out.append(
            Event(
                ts=when, kind=EventKind.HIT, instance="p1", event_id=f"h{n}", host=host,
                app=m.app, regimes=tuple(m.regimes), action=d.action, rule=m.rule.domain,
                exception_id=d.exception_id, client=client, department=d.department,
                decided_by=d.decided_by, decided_id=d.decided_id,
            )
        )  # fmt: skip
    return out


def test_the_report_counts_each_hit_once_under_the_rule_that_decided(
    store: EventStore, policy: Policy, matcher: Matcher, catalogue: Catalogue
) -> None:
    store.write(_hits(policy, matcher))
    report = build_report(store, MONTH, now=AFTER_JULY, verify=False, catalogue=catalogue)
    d = report_to_dict(report)
    rows = sorted((r["app"], r["regime"], r["action"], r["events"]) for r in d["by_regime"])
    assert rows == [
        ("alipay", "app", "blocked", 2),  # not under the revoked us-eo-13971
        ("tiktok", "exception", "exempted", 1),
        ("tiktok", "us-nttgda-2022", "blocked", 2),  # once, not once per regime
        ("wechat-pay", "us-eo-13971", "blocked", 1),
    ]
    assert sum(r[3] for r in rows) == sum(t["events"] for t in d["totals"]) == 6
    assert {r["id"]: r["status"] for r in d["regimes"]} == {
        "us-nttgda-2022": "in_force",
        "us-eo-13971": "revoked",
    }
    md = render_markdown(report)
    assert "| tiktok | us-nttgda-2022 | in force | blocked | 2 |" in md
    assert "| wechat-pay | us-eo-13971 | revoked | blocked | 1 |" in md
    assert "| alipay | app | app rule | blocked | 2 |" in md
    # The rollup recount agrees with rollups keyed by the deciding rule.
    problems, _notes = verify_rollups(store)
    assert problems == []


def test_hits_without_the_rule_keep_their_regime_list(
    store: EventStore, policy: Policy, matcher: Matcher
) -> None:
    """Rows written before events named the deciding rule still count per regime (as before)
    and still recount."""
    old = [dataclasses.replace(e, decided_by=None, decided_id=None) for e in _hits(policy, matcher)]
    store.write(old[2:4])
    d = report_to_dict(build_report(store, MONTH, now=AFTER_JULY, verify=False))
    assert len(d["by_regime"]) == 5 and {r["events"] for r in d["by_regime"]} == {2}
    assert verify_rollups(store)[0] == []
