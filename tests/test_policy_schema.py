"""``egresswatch.policy_schema``: every problem of a policy file, named with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.policy import PolicyError
from egresswatch.policy import load_policy

from tests.plugins.policy import WritePolicy

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
