"""Each label vocabulary has one definition; the modules that use it derive from it.

These tests check the links by behaviour: the values the policy produces are the values the
metrics pre-initialise, and every hook label names a hook the addon implements.
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from types import SimpleNamespace as NS

from egresswatch import metrics
from egresswatch import policy
from egresswatch import policy_schema
from egresswatch.proxy.addon import EgressWatch
from mitmproxy import hooks
from prometheus_client import CollectorRegistry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _catalogue() -> NS:
    in_force = NS(status=lambda on: "in_force")
    return NS(
        apps={"a": NS(regimes=("r1",)), "b": NS(regimes=("r1",)), "c": NS(regimes=())},
        regimes={"r1": in_force},
    )


def test_every_mode_the_policy_reports_is_a_metric_label_value() -> None:
    seen: set[str] = set()
    for default in policy.Mode:
        for dry_run in (False, True):
            pol = policy.Policy(
                _catalogue(),
                default=default,
                dry_run=dry_run,
                regime_rules={"r1": policy.Mode.BLOCK},
                app_rules={"b": policy.Mode.OFF},
            )
            seen.update(pol.modes(NOW).values())
    assert seen == set(metrics.MODES) == {"monitor", "block", "off", "dry_run"}


def test_decision_rule_labels_are_the_metrics_extra_regimes() -> None:
    pol = policy.Policy(_catalogue(), app_rules={"b": policy.Mode.BLOCK})
    labels = {pol.effective(app, NOW)[1] for app in ("a", "b", "c")}
    assert labels == set(metrics.EXTRA_REGIMES) == {"app", "default"}
    assert set(pol.regime_labels()) == labels


def test_departments_outside_any_cidr_share_the_metrics_label() -> None:
    pol = policy.Policy(_catalogue(), departments=[policy.Department("eng", ("10.0.0.0/8",))])
    assert pol.department("192.0.2.1") == metrics.OTHER_DEPARTMENT
    assert pol.department(None) == policy.UNKNOWN
    assert set(policy_schema.RESERVED_DEPARTMENTS) == {metrics.OTHER_DEPARTMENT, policy.UNKNOWN}


def test_metrics_accept_every_mode_the_policy_reports() -> None:
    """``Metrics.policy_loaded`` refuses a mode outside its vocabulary: feed it each one."""
    m = metrics.Metrics(registry=CollectorRegistry())
    for default in policy.Mode:
        pol = policy.Policy(
            _catalogue(), default=default, dry_run=True, app_rules={"a": policy.Mode.BLOCK}
        )
        m.policy_loaded(pol.version, pol.modes(NOW), 0.0)


def test_every_hook_label_is_a_hook_the_addon_implements() -> None:
    addon = EgressWatch(registry=CollectorRegistry())  # hooks are bound to its pieces per instance
    for hook in metrics.Hook:
        assert hook in hooks.all_hooks, hook
        assert callable(getattr(addon, hook, None)), hook
