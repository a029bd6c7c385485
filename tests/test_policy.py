from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import textwrap
from collections.abc import Callable
from collections.abc import Mapping
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.events import Action
from egresswatch.matcher import Match
from egresswatch.matcher import Matcher
from egresswatch.policy import BUILTIN_VERSION
from egresswatch.policy import MAX_DEPARTMENTS
from egresswatch.policy import Decision
from egresswatch.policy import Department
from egresswatch.policy import ExceptionRule
from egresswatch.policy import Mode
from egresswatch.policy import Policy
from egresswatch.policy import PolicyError
from egresswatch.policy import load_policy
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# rb and rm are in force; rold was revoked on 2021-01-01; rnew takes effect in 2099.
REGIMES = """\
regimes:
  - id: rb
    title: Regime that we block
    signed: 2020-01-01
    effective: 2020-01-01
    apps: [a1, a2]
  - id: rm
    title: Regime that we monitor
    signed: 2020-01-01
    effective: 2020-01-01
    apps: [a2, a3]
  - id: rold
    title: Revoked regime
    signed: 2019-01-01
    effective: 2019-01-01
    revoked: 2021-01-01
    apps: [a4]
  - id: rnew
    title: Future regime
    signed: 2098-01-01
    effective: 2099-01-01
    apps: [a4]
"""


def app_file(app_id: str, regimes: list[str], extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        id: {app_id}
        name: App {app_id}
        category: other
        regimes: [{", ".join(regimes)}]
        domains:
          - domain: {app_id}.test
            source: unit test
            confidence: high
        """)
        + extra
    )


SHARED = """\
  - domain: shared.test
    source: unit test
    confidence: medium
    shared_with: [{other}]
"""


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    d = tmp_path_factory.mktemp("cat")
    (d / "regimes.yaml").write_text(REGIMES)
    files = {
        "a1": app_file("a1", ["rb"], SHARED.format(other="a3")),
        "a2": app_file("a2", ["rb", "rm"]),
        "a3": app_file("a3", ["rm"], SHARED.format(other="a1")),
        "a4": app_file("a4", ["rold", "rnew"]),
        "a5": app_file("a5", ["rm"]),
    }
    for app_id, text in files.items():
        (d / f"{app_id}.yaml").write_text(text)
    return load_catalogue([d])


@pytest.fixture(scope="module")
def matcher(cat: Catalogue) -> Matcher:
    return Matcher.from_catalogue(cat)


@pytest.fixture
def hit(matcher: Matcher) -> Callable[[str], Match]:
    def make(host: str) -> Match:
        m = matcher.match(host)
        assert m is not None, host
        return m

    return make


WritePolicy = Callable[[str], Path]


@pytest.fixture
def write_policy(tmp_path: Path) -> WritePolicy:
    def write(text: str) -> Path:
        p = tmp_path / "policy.yaml"
        p.write_text(textwrap.dedent(text), encoding="utf-8")
        return p

    return write


@pytest.fixture
def policy_from(write_policy: WritePolicy, cat: Catalogue) -> Callable[[str], Policy]:
    def make(text: str) -> Policy:
        return load_policy(write_policy(text), cat)

    return make


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


# --- departments ------------------------------------------------------------------------------

DEPARTMENTS = """\
departments:
  - name: engineering
    cidrs: [10.1.0.0/16, "fd00:1::/48"]
  - name: lab
    cidrs: [10.1.200.0/24, "fd00:1:0:42::/64"]
  - name: finance
    cidrs: [10.2.0.0/16, 192.0.2.7]
  - name: corp
    cidrs: [10.0.0.0/8]
"""


@pytest.mark.parametrize(
    ("client", "department"),
    [
        ("10.1.2.3", "engineering"),
        ("10.1.200.9", "lab"),  # the most specific network wins
        ("10.2.0.1", "finance"),
        ("192.0.2.7", "finance"),  # a bare address is a /32
        ("192.0.2.8", "other"),
        ("10.77.0.1", "corp"),
        ("11.0.0.1", "other"),
        ("::ffff:10.2.0.1", "finance"),  # IPv4-mapped IPv6 (dual-stack listeners)
        ("fd00:1::1", "engineering"),
        ("fd00:1:0:ffff::1", "engineering"),
        ("fd00:1:1::1", "other"),
        ("fd00:1:0:42::1", "lab"),
        ("[fd00:1::1]", "engineering"),
        ("fd00:1::1%eth0", "engineering"),
        ("fd00:2::1", "other"),
        ("::1", "other"),
        (None, "unknown"),
        ("", "unknown"),
        ("not-an-address", "unknown"),
    ],
)
def test_departments(
    policy_from: Callable[[str], Policy],
    hit: Callable[[str], Match],
    client: str | None,
    department: str,
) -> None:
    policy = policy_from(DEPARTMENTS)
    assert policy.department(client) == department
    decision = policy.decide(hit("a1.test"), client, None, NOW)
    assert decision is not None and decision.department == department


def test_department_names(
    policy_from: Callable[[str], Policy], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="egresswatch.policy"):
        policy = policy_from(DEPARTMENTS)
    assert policy.departments == ("corp", "engineering", "finance", "lab", "other", "unknown")
    assert "departments" not in caplog.text


def test_many_departments_warn(
    policy_from: Callable[[str], Policy], caplog: pytest.LogCaptureFixture
) -> None:
    n = MAX_DEPARTMENTS + 1
    text = "departments:\n" + "".join(
        f"  - {{name: d{i}, cidrs: [10.{i}.0.0/16]}}\n" for i in range(n)
    )
    with caplog.at_level(logging.WARNING, logger="egresswatch.policy"):
        policy = policy_from(text)
    assert f"{n} departments" in caplog.text
    assert len(policy.departments) == n + 2
    assert policy.department("10.50.1.1") == "d50"


# --- errors -----------------------------------------------------------------------------------

ERRORS = [
    # (policy text, expected (line, message fragment) pairs)
    ("colour: red\n", [(1, "unknown key 'colour'")]),
    ("version: 2\n", [(1, "only version 1")]),
    ("default: allow\n", [(1, "'allow' is not an action")]),
    ("dry_run: maybe\n", [(1, "dry_run must be true or false")]),
    ("only_in_force: 1\n", [(1, "only_in_force must be true or false")]),
    ("apps:\n  nope: block\n", [(2, "unknown app 'nope'")]),
    ("regimes:\n  rb: block\n  nope: monitor\n", [(3, "unknown regime 'nope'")]),
    ("apps:\n  a1: blocks\n", [(2, "apps.a1: 'blocks' is not an action")]),
    ("apps: [a1]\n", [(1, "apps must be a mapping")]),
    ("default: block\ndefault: monitor\n", [(2, "duplicate key 'default' (first on line 1)")]),
    ("- a\n- b\n", [(1, "policy must be a mapping")]),
    ("apps: {a1: block\n", [(2, "YAML")]),
    ("contact: [a, b]\n", [(1, "contact must be a value")]),
    (
        "departments:\n  - name: eng\n    cidrs: [10.1.0.0/33]\n",
        [(3, "bad CIDR '10.1.0.0/33'")],
    ),
    (
        "departments:\n  - name: eng\n    cidrs:\n      - 10.1.0.1/16\n",
        [(4, "has host bits set")],
    ),
    ("departments:\n  - name: other\n    cidrs: [10.1.0.0/16]\n", [(2, "'other' is reserved")]),
    ("departments:\n  - name: a b\n    cidrs: [10.1.0.0/16]\n", [(2, "department name 'a b'")]),
    (
        "departments:\n  - {name: x, cidrs: [10.1.0.0/16]}\n  - {name: x, cidrs: [10.2.0.0/16]}\n",
        [(3, "duplicate department 'x' (first on line 2)")],
    ),
    (
        "departments:\n  - {name: x, cidrs: [10.1.0.0/16]}\n  - {name: y, cidrs: [10.1.0.0/16]}\n",
        [(3, "10.1.0.0/16 is already in department x")],
    ),
    ("departments:\n  - {name: x}\n", [(2, "needs a name and cidrs")]),
    ("departments:\n  - {name: x, cidrs: []}\n", [(2, "department x has no cidrs")]),
    (
        "departments:\n  - {name: x, cidrs: [10.1.0.0/16], color: red}\n",
        [(2, "unknown key 'color'")],
    ),
]

EXC_HEAD = "exceptions:\n  - id: E1\n"
EXC_BODY = {
    "apps": "    apps: [a1]\n",
    "clients": "    clients: [10.2.3.4/32]\n",
    "reason": "    reason: r\n",
    "approver": "    approver: CISO\n",
    "expires": "    expires: 2026-12-31\n",
}


def exc_text(**replace: str) -> str:
    body = {**EXC_BODY, **replace}
    return EXC_HEAD + "".join(v for v in body.values() if v)


EXCEPTION_ERRORS = [
    (exc_text(expires=""), [(2, "exception E1: missing expires")]),
    (exc_text(approver=""), [(2, "exception E1: missing approver")]),
    (exc_text(reason=""), [(2, "exception E1: missing reason")]),
    (exc_text(reason="    reason:\n"), [(5, "exception E1 reason must be a value")]),
    (exc_text(clients=""), [(2, "blanket exceptions are not allowed")]),
    (
        exc_text(clients="    clients: []\n    users: []\n"),
        [(2, "blanket exceptions are not allowed")],
    ),
    (exc_text(clients="    clients: [0.0.0.0/0]\n"), [(4, "0.0.0.0/0 is every address")]),
    (exc_text(clients="    clients: ['::/0']\n"), [(4, "::/0 is every address")]),
    (exc_text(clients="    users: ['*']\n"), [(4, "'*' is not a user")]),
    (exc_text(clients="    clients: [10.2.3.4/33]\n"), [(4, "bad CIDR")]),
    (exc_text(apps="    apps: [nope]\n"), [(3, "unknown app 'nope'")]),
    (exc_text(apps="    regimes: [nope]\n"), [(3, "unknown regime 'nope'")]),
    (exc_text(apps=""), [(2, "list the apps or regimes it covers")]),
    (exc_text(apps="    apps: []\n"), [(2, "apps and regimes are empty")]),
    (exc_text(expires="    expires: next week\n"), [(7, "'next week' is not a date")]),
    (exc_text(expires="    expires: 2026-02-30\n"), [(7, "'2026-02-30' is not a date")]),
    (exc_text(ticket="    tikcet: X\n"), [(8, "unknown key 'tikcet'")]),
    (
        EXC_HEAD.replace("  - id: E1\n", "  - apps: [a1]\n") + "".join(list(EXC_BODY.values())[1:]),
        [(2, "exception ?: missing id")],
    ),
    (
        exc_text() + exc_text().removeprefix("exceptions:\n"),
        [(8, "duplicate exception id 'E1' (first on line 2)")],
    ),
    ("exceptions: {E1: x}\n", [(1, "exceptions must be a list")]),
    ("exceptions:\n  - E1\n", [(2, "exception must be a mapping")]),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS + EXCEPTION_ERRORS)
def test_errors_name_file_and_line(
    write_policy: WritePolicy, cat: Catalogue, text: str, expected: list[tuple[int, str]]
) -> None:
    path = write_policy(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path, cat)
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == len(expected), problems
    for problem, (line, fragment) in zip(problems, expected, strict=True):
        assert problem.startswith(f"{path}:{line}: "), problem
        assert fragment in problem, problem
    assert str(info.value) == "\n".join(problems)


def test_every_problem_is_reported_at_once(write_policy: WritePolicy, cat: Catalogue) -> None:
    text = "default: allow\napps: {nope: block}\nregimes: {rb: stop}\n" + exc_text(expires="")
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(text), cat)
    assert [p.line for p in info.value.problems] == [1, 2, 3, 5]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot read policy"), (b"\xff\xfe\x00", "not UTF-8")],
)
def test_unreadable_file(
    tmp_path: Path, cat: Catalogue, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / "policy.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PolicyError, match=fragment) as info:
        load_policy(path, cat)
    assert str(info.value.problems[0]).startswith(f"{path}:0: ")


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


# --- the prefix-bucketed lookup agrees with a plain longest-prefix scan -------------------------

_NETS = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: ipaddress.ip_network((t[0], t[1]), strict=False)
    ),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
        lambda t: ipaddress.ip_network((t[0], t[1]), strict=False)
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    nets=st.lists(_NETS, min_size=1, max_size=12, unique=True),
    probes=st.lists(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1)), max_size=8),
)
def test_department_lookup_is_longest_prefix_match(
    cat: Catalogue, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], probes: list[int]
) -> None:
    departments = [Department(f"d{i}", (str(n),)) for i, n in enumerate(nets)]
    policy = Policy(cat, departments=departments)
    # probe each network's first and last address too, and random ones of both families
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for n in nets:
        addresses += [n.network_address, n.broadcast_address]
    for p in probes:
        addresses.append(ipaddress.ip_address(p) if p < 2**32 else ipaddress.IPv6Address(p))
    for addr in addresses:
        # documented: IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are looked up as IPv4
        mapped = getattr(addr, "ipv4_mapped", None)
        seen_as = mapped if mapped is not None else addr
        containing = [(n.prefixlen, f"d{i}") for i, n in enumerate(nets) if seen_as in n]
        expected = max(containing)[1] if containing else "other"
        assert policy.department(str(addr)) == expected, (addr, nets)


def test_effective_per_app(policy_from: Callable[[str], Policy]) -> None:
    policy = policy_from("{regimes: {rb: block}, apps: {a3: off}}")
    assert policy.effective("a2", NOW) == (Mode.BLOCK, "rb")
    assert policy.effective("a3", NOW) == (Mode.OFF, "app")
    assert policy.effective("a5", NOW) == (Mode.MONITOR, "default")
    assert policy.effective("not-in-catalogue", NOW) == (Mode.MONITOR, "default")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"apps": ("a1",)}, "blanket exception"),
        ({"clients": ("10.0.0.0/8",)}, "neither apps nor regimes"),
        ({"apps": ("a1",), "clients": ("10.0.0.300/32",)}, "does not appear to be"),
    ],
)
def test_exception_rule_checks_itself(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ExceptionRule(id="X", reason="r", approver="a", expires=NOW, **kwargs)


def test_exception_rule_naive_expiry_is_utc() -> None:
    rule = ExceptionRule(
        id="X", reason="r", approver="a", expires=datetime(2026, 7, 1), users=("u",), apps=("a1",)
    )
    assert rule.expires == datetime(2026, 7, 1, tzinfo=UTC)
    assert rule.in_force(datetime(2026, 6, 30, 23, 59)) and not rule.in_force(rule.expires)
    assert rule.covers(None, "u") and not rule.covers(None, None)


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
