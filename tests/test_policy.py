from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from collections.abc import Mapping
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.events import Action
from egresswatch.matcher import Match
from egresswatch.policy import BUILTIN_VERSION
from egresswatch.policy import Decision
from egresswatch.policy import Department
from egresswatch.policy import Mode
from egresswatch.policy import Policy
from egresswatch.policy import load_policy

from tests.plugins.policy import DEPARTMENTS
from tests.plugins.policy import NOW
from tests.plugins.policy import REPO
from tests.plugins.policy import WritePolicy


def test_fixture_catalogue_shares_a_name(hit: Callable[[str], Match]) -> None:
    m = hit("www.shared.test")
    assert m.apps == ("a1", "a3")


# --- precedence -------------------------------------------------------------------------------

PRECEDENCE = [
    # (policy, host, action or None (off), regime label)
    ("", "a1.test", Action.MONITOR, "default"),
    ("default: block", "a1.test", Action.BLOCKED, "default"),
    ("default: off", "a1.test", None, None),  # unquoted off: YAML 1.1 bool, still read as off
    ('default: "off"', "a1.test", None, None),
    ("regimes: {rb: block}", "a1.test", Action.BLOCKED, "rb"),
    ("regimes: {rb: block}", "a3.test", Action.MONITOR, "default"),
    ("regimes: {rb: block}", "a2.test", Action.BLOCKED, "rb"),
    ("regimes: {rb: block, rm: off}", "a2.test", Action.BLOCKED, "rb"),  # strictest regime
    ("regimes: {rb: block, rm: off}", "a3.test", None, None),
    ("regimes: {rb: off, rm: monitor}", "a2.test", Action.MONITOR, "rm"),
    ("regimes: {rb: monitor, rm: monitor}", "a2.test", Action.MONITOR, "rb"),  # tie: sorted id
    ("{regimes: {rb: block}, apps: {a2: monitor}}", "a2.test", Action.MONITOR, "app"),
    ("{regimes: {rb: block}, apps: {a2: monitor}}", "a1.test", Action.BLOCKED, "rb"),
    ("{regimes: {rb: block}, apps: {a1: off}}", "a1.test", None, None),
    ("{default: off, apps: {a1: block}}", "a1.test", Action.BLOCKED, "app"),
    ("{default: block, regimes: {rm: monitor}}", "a3.test", Action.MONITOR, "rm"),
    ("{default: block, regimes: {rm: off}}", "a3.test", None, None),
    # a regime rule for a regime the app is not in does not touch it
    ("{default: off, regimes: {rb: block}}", "a5.test", None, None),
    # only_in_force: revoked and not-yet-effective regimes stop setting actions
    ("regimes: {rold: block}", "a4.test", Action.BLOCKED, "rold"),
    ("{only_in_force: true, regimes: {rold: block}}", "a4.test", Action.MONITOR, "default"),
    ("{only_in_force: true, regimes: {rnew: block}, default: off}", "a4.test", None, None),
    ("{only_in_force: true, regimes: {rb: block}}", "a1.test", Action.BLOCKED, "rb"),
    # a shared name takes the strictest of its apps
    ("regimes: {rb: block}", "shared.test", Action.BLOCKED, "rb"),
    ("{apps: {a1: off}, regimes: {rm: monitor}}", "shared.test", Action.MONITOR, "rm"),
    ("{apps: {a1: off, a3: off}}", "shared.test", None, None),
    ("{apps: {a3: block}}", "shared.test", Action.BLOCKED, "app"),
    ("{apps: {a1: monitor}, regimes: {rm: block}}", "shared.test", Action.BLOCKED, "rm"),
    ("{default: off, apps: {a1: monitor}}", "shared.test", Action.MONITOR, "app"),
    # dry run stages blocks only
    ("{dry_run: true, regimes: {rb: block}}", "a1.test", Action.WOULD_BLOCK, "rb"),
    ("{dry_run: yes, default: block}", "a3.test", Action.WOULD_BLOCK, "default"),
    ("{dry_run: true, regimes: {rb: block}}", "a3.test", Action.MONITOR, "default"),
    ("{dry_run: true, apps: {a1: off}}", "a1.test", None, None),
    ("{dry_run: false, regimes: {rb: block}}", "a1.test", Action.BLOCKED, "rb"),
]


@pytest.mark.parametrize(("text", "host", "action", "regime"), PRECEDENCE)
def test_precedence(
    policy_from: Callable[[str], Policy],
    hit: Callable[[str], Match],
    text: str,
    host: str,
    action: Action | None,
    regime: str | None,
) -> None:
    decision = policy_from(text).decide(hit(host), "10.0.0.1", None, NOW)
    if action is None:
        assert decision is None
    else:
        assert decision == Decision(action, regime or "", None, "other")


@pytest.mark.parametrize(
    ("now", "action", "regime"),
    [
        (datetime(2020, 12, 31, 23, 59, 59, tzinfo=UTC), Action.BLOCKED, "rold"),
        (datetime(2021, 1, 1, 0, 0, tzinfo=UTC), Action.MONITOR, "default"),
        # 2020-12-31 23:30 at UTC-2 is 2021-01-01 01:30 UTC: regime dates are UTC days
        (
            datetime(2020, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2))),
            Action.MONITOR,
            "default",
        ),
        (datetime(2019, 6, 1), Action.BLOCKED, "rold"),  # naive = UTC
        (datetime(2018, 12, 31, tzinfo=UTC), Action.MONITOR, "default"),  # not yet effective
    ],
)
def test_only_in_force_follows_the_date(
    policy_from: Callable[[str], Policy],
    hit: Callable[[str], Match],
    now: datetime,
    action: Action,
    regime: str,
) -> None:
    policy = policy_from("{only_in_force: true, regimes: {rold: block}}")
    # the per-day table must switch when the day does, in both directions
    for moment in (now, NOW, now):
        decision = policy.decide(hit("a4.test"), None, None, moment)
        assert decision is not None
        if moment is NOW:
            assert decision.action is Action.MONITOR
        else:
            assert (decision.action, decision.regime) == (action, regime)


def test_app_missing_from_the_policy_catalogue_uses_the_match(cat: Catalogue) -> None:
    policy = Policy(cat, regime_rules={"rb": Mode.BLOCK})
    rule = next(iter(cat.apps["a1"].rules))
    stranger = Match(host="x.test", app="newapp", apps=("newapp",), rule=rule, regimes=("rb",))
    decision = policy.decide(stranger, None, None, NOW)
    assert decision is not None and (decision.action, decision.regime) == (Action.BLOCKED, "rb")


# --- exceptions -------------------------------------------------------------------------------

EXCEPTIONS = """\
regimes: {rb: block}
exceptions:
  - id: E1
    apps: [a1]
    clients: [10.2.3.4/32]
    reason: Supplier contact
    approver: CISO
    ticket: SEC-1
    expires: 2026-06-30
  - id: E2
    regimes: [rb]
    users: [alice]
    reason: Research
    approver: CISO
    expires: 2026-06-30T12:00:00Z
  - id: E3
    apps: [a1]
    clients: ["fd00:1::/48"]
    users: [bob]
    reason: Both criteria must hold
    approver: CISO
    expires: 2026-06-30
  - id: E4
    apps: [a3]
    users: [carol]
    reason: An exception on a monitored app
    approver: CISO
    expires: "2026-06-30 14:00:00+02:00"
"""

END_OF_JUNE = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("host", "client", "user", "now", "action", "exception_id"),
    [
        ("a1.test", "10.2.3.4", None, NOW, Action.EXEMPTED, "E1"),
        ("a1.test", "::ffff:10.2.3.4", None, NOW, Action.EXEMPTED, "E1"),
        ("a1.test", "10.2.3.5", None, NOW, Action.BLOCKED, None),
        ("a1.test", None, None, NOW, Action.BLOCKED, None),
        ("a2.test", "10.9.9.9", "alice", NOW, Action.EXEMPTED, "E2"),  # via regime rb
        ("a1.test", "10.9.9.9", "alice", NOW, Action.EXEMPTED, "E2"),
        ("a2.test", "10.9.9.9", "Alice", NOW, Action.BLOCKED, None),  # users are exact
        ("a5.test", "10.9.9.9", "alice", NOW, Action.MONITOR, None),  # a5 is not in rb
        ("a1.test", "fd00:1::5", "bob", NOW, Action.EXEMPTED, "E3"),
        ("a1.test", "fd00:1::5", "carol", NOW, Action.BLOCKED, None),  # clients AND users
        ("a1.test", "10.9.9.9", "bob", NOW, Action.BLOCKED, None),
        ("a1.test", "fd00:2::5", "bob", NOW, Action.BLOCKED, None),
        ("a3.test", "10.9.9.9", "carol", NOW, Action.EXEMPTED, "E4"),  # monitor -> exempted
        ("shared.test", "10.9.9.9", "carol", NOW, Action.EXEMPTED, "E4"),  # any app of a match
        # expiry boundaries: a date is the end of that day (UTC), a datetime the instant
        (
            "a1.test",
            "10.2.3.4",
            None,
            END_OF_JUNE - timedelta(microseconds=1),
            Action.EXEMPTED,
            "E1",
        ),
        ("a1.test", "10.2.3.4", None, END_OF_JUNE, Action.BLOCKED, None),
        (
            "a2.test",
            "10.9.9.9",
            "alice",
            datetime(2026, 6, 30, 11, 59, 59, tzinfo=UTC),
            Action.EXEMPTED,
            "E2",
        ),
        (
            "a2.test",
            "10.9.9.9",
            "alice",
            datetime(2026, 6, 30, 12, 0, tzinfo=UTC),
            Action.BLOCKED,
            None,
        ),
        (
            "a3.test",
            "10.9.9.9",
            "carol",
            datetime(2026, 6, 30, 11, 59, tzinfo=UTC),
            Action.EXEMPTED,
            "E4",
        ),
        (
            "a3.test",
            "10.9.9.9",
            "carol",
            datetime(2026, 6, 30, 12, 0, tzinfo=UTC),
            Action.MONITOR,
            None,
        ),
        ("a1.test", "10.2.3.4", None, datetime(2027, 1, 1, tzinfo=UTC), Action.BLOCKED, None),
    ],
)
def test_exceptions(
    policy_from: Callable[[str], Policy],
    hit: Callable[[str], Match],
    host: str,
    client: str | None,
    user: str | None,
    now: datetime,
    action: Action,
    exception_id: str | None,
) -> None:
    decision = policy_from(EXCEPTIONS).decide(hit(host), client, user, now)
    assert decision is not None
    assert (decision.action, decision.exception_id) == (action, exception_id)
    assert decision.lets_through == (action is not Action.BLOCKED)


@pytest.mark.parametrize(
    ("prefix", "action"),
    [
        ("dry_run: true\n", Action.EXEMPTED),  # the exception wins over the staged block
        ("apps: {a1: off}\n", None),  # off: no event at all, exception or not
    ],
)
def test_exception_with_dry_run_and_off(
    policy_from: Callable[[str], Policy],
    hit: Callable[[str], Match],
    prefix: str,
    action: Action | None,
) -> None:
    decision = policy_from(prefix + EXCEPTIONS).decide(hit("a1.test"), "10.2.3.4", None, NOW)
    assert (decision.action if decision else None) == action


def test_expiry_register(policy_from: Callable[[str], Policy]) -> None:
    policy = policy_from(EXCEPTIONS)
    e1_end = datetime(2026, 7, 1, tzinfo=UTC)
    e2_end = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
    assert [e.id for e in policy.exceptions_in_force(NOW)] == ["E1", "E2", "E3", "E4"]
    assert [e.id for e in policy.exceptions_in_force(e2_end)] == ["E1", "E3"]
    assert [e.id for e in policy.exceptions_in_force(e1_end)] == []
    assert policy.next_expiry(NOW) == e2_end  # E2 and E4 both end at 12:00 UTC
    assert policy.next_expiry(e2_end) == e1_end
    assert policy.next_expiry(e1_end) is None

    # Sweeping time in consecutive windows reports each expiry exactly once, in order.
    seen: list[tuple[str, datetime]] = []
    prev = NOW
    for minutes in range(30, 60 * 24 * 45, 37):
        now = NOW + timedelta(minutes=minutes)
        seen += [(e.id, now) for e in policy.expired_since(prev, now)]
        prev = now
    assert [s[0] for s in seen] == ["E2", "E4", "E1", "E3"]
    for exc_id, logged_at in seen:
        exc = next(e for e in policy.exceptions if e.id == exc_id)
        assert exc.expires <= logged_at < exc.expires + timedelta(minutes=37)
    # the window is (prev, now]: an expiry exactly at `now` is reported, exactly at `prev` not
    assert [e.id for e in policy.expired_since(e2_end - timedelta(seconds=1), e2_end)] == [
        "E2",
        "E4",
    ]
    assert policy.expired_since(e2_end, e2_end + timedelta(seconds=1)) == []


# --- defaults, version, modes, snapshot ---------------------------------------------------------


def test_builtin_default(cat: Catalogue, hit: Callable[[str], Match]) -> None:
    policy = load_policy(None, cat)
    assert policy.version == BUILTIN_VERSION and policy.file is None
    assert not policy.dry_run and policy.default is Mode.MONITOR and policy.contact is None
    for host in ("a1.test", "a2.test", "a3.test", "a4.test", "a5.test", "shared.test"):
        assert policy.decide(hit(host), "10.0.0.1", "u", NOW) == Decision(
            Action.MONITOR, "default", None, "other"
        )
    assert policy.modes(NOW) == dict.fromkeys(["a1", "a2", "a3", "a4", "a5"], "monitor")
    assert policy.departments == ("other", "unknown")
    assert policy.exceptions_in_force(NOW) == [] and policy.next_expiry(NOW) is None


def test_empty_file_is_the_default_with_its_own_version(
    write_policy: WritePolicy, cat: Catalogue
) -> None:
    path = write_policy("# nothing yet\n")
    policy = load_policy(path, cat)
    assert policy.version == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy.modes(NOW) == load_policy(None, cat).modes(NOW)


def test_version_is_the_file_hash(write_policy: WritePolicy, cat: Catalogue) -> None:
    path = write_policy("default: block\n")
    v1 = load_policy(path, cat).version
    assert v1 == hashlib.sha256(b"default: block\n").hexdigest()
    path.write_text("default: block  # same, with a comment\n")
    assert load_policy(path, cat).version != v1


def test_modes(policy_from: Callable[[str], Policy]) -> None:
    policy = policy_from("{dry_run: true, regimes: {rb: block}, apps: {a3: off}}")
    assert policy.modes(NOW) == {
        "a1": "dry_run",
        "a2": "dry_run",
        "a3": "off",
        "a4": "monitor",
        "a5": "monitor",
    }
    staged = policy_from("{only_in_force: true, regimes: {rold: block, rb: block}}")
    assert staged.modes(datetime(2020, 6, 1, tzinfo=UTC))["a4"] == "block"
    assert staged.modes(NOW)["a4"] == "monitor"
    assert staged.regime_labels() == ("app", "default", "rb", "rold")


def test_snapshot_is_json_with_every_exception_field(policy_from: Callable[[str], Policy]) -> None:
    policy = policy_from(
        'contact: "IT security, security@example.org"\n' + DEPARTMENTS + EXCEPTIONS
    )
    snap = json.loads(json.dumps(policy.snapshot(NOW)))
    assert snap["version"] == policy.version and snap["file"] == policy.file
    assert (snap["default"], snap["dry_run"], snap["contact"]) == (
        "monitor",
        False,
        "IT security, security@example.org",
    )
    assert snap["regimes"] == {"rb": "block"}
    assert snap["modes"]["a1"] == "block"
    assert snap["departments"][0] == {
        "name": "engineering",
        "cidrs": ["10.1.0.0/16", "fd00:1::/48"],
    }
    assert snap["exceptions"][0] == {
        "id": "E1",
        "apps": ["a1"],
        "regimes": [],
        "clients": ["10.2.3.4/32"],
        "users": [],
        "reason": "Supplier contact",
        "approver": "CISO",
        "ticket": "SEC-1",
        "expires": "2026-06-30",  # as written
        "expires_at": "2026-07-01T00:00:00+00:00",  # the end of that day, UTC
    }
    assert snap["exceptions"][3]["expires"] == "2026-06-30 14:00:00+02:00"
    assert snap["exceptions"][3]["expires_at"] == "2026-06-30T12:00:00+00:00"


def test_policy_reads_the_regime_status_on_the_utc_day(cat: Catalogue) -> None:
    # the catalogue's status() is called with a date, once per day, not per hit
    calls: list[date] = []
    regime = cat.regimes["rold"]

    class Counting:
        def status(self, on: date) -> str:
            calls.append(on)
            return regime.status(on)

    class Cat:
        apps = cat.apps
        regimes: Mapping[str, Any] = {**cat.regimes, "rold": Counting()}

    policy = Policy(Cat(), regime_rules={"rold": Mode.BLOCK}, only_in_force=True)
    m = Match(
        host="a4.test", app="a4", apps=("a4",), rule=cat.apps["a4"].rules[0], regimes=("rold",)
    )
    for i in range(100):
        policy.decide(m, None, None, NOW + timedelta(seconds=i))
    assert calls == [NOW.date()]


# --- the shipped example ----------------------------------------------------------------------


def test_shipped_example_loads() -> None:
    catalogue = load_catalogue([bundled_dir()])
    policy = load_policy(REPO / "deploy" / "policy.example.yaml", catalogue)
    assert policy.exceptions and policy.department_rules and policy.contact
    modes = policy.modes(NOW)
    assert (modes["deepseek"], modes["tiktok"], modes["vmate"]) == ("dry_run", "dry_run", "off")
    assert modes["alipay"] == "monitor"


def test_effective_per_app(policy_from: Callable[[str], Policy]) -> None:
    policy = policy_from("{regimes: {rb: block}, apps: {a3: off}}")
    assert policy.effective("a2", NOW) == (Mode.BLOCK, "rb")
    assert policy.effective("a3", NOW) == (Mode.OFF, "app")
    assert policy.effective("a5", NOW) == (Mode.MONITOR, "default")
    assert policy.effective("not-in-catalogue", NOW) == (Mode.MONITOR, "default")


def test_client_cache_is_bounded_and_gives_the_same_decisions(
    monkeypatch: pytest.MonkeyPatch, cat: Catalogue, hit: Callable[[str], Match]
) -> None:
    import egresswatch.policy as policy_module

    monkeypatch.setattr(policy_module, "_CLIENT_CACHE", 3)
    pol = Policy(cat, departments=[Department("eng", ("10.1.0.0/16",))])
    match = hit("a2.test")
    now = datetime(2026, 11, 28, tzinfo=UTC)
    seen = []
    for ip in ["10.1.2.3", "10.2.0.1", None, "10.1.2.3", "bogus", "10.1.9.9", "10.1.2.3"]:
        d = pol.decide(match, ip, None, now)
        assert d is not None
        seen.append(d.department)
        assert len(pol._clients) <= 3
    assert seen == ["eng", "other", "unknown", "eng", "unknown", "eng", "eng"]
