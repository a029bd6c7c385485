"""The policy's evasion keys: ``alt_svc`` (count | strip | off) and the ``ech`` scope (everywhere
or designated vendors' client-facing names), loaded from files with file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.events import Action
from egresswatch.policy import AltSvcMode
from egresswatch.policy import EchScope
from egresswatch.policy import Mode
from egresswatch.policy import Policy
from egresswatch.policy import PolicyError
from egresswatch.policy import load_policy

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return load_catalogue([bundled_dir()])


def load(tmp_path: Path, cat: Catalogue, text: str) -> Policy:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return load_policy(p, cat)


def errors(tmp_path: Path, cat: Catalogue, text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        load(tmp_path, cat, text)
    return [str(p) for p in e.value.problems]


def test_defaults(cat: Catalogue) -> None:
    pol = Policy(cat)
    assert pol.alt_svc is AltSvcMode.COUNT
    assert pol.ech is Mode.MONITOR and pol.ech_scope is EchScope.EVERYWHERE


@pytest.mark.parametrize(
    ("text", "mode", "action"),
    [
        ("alt_svc: count\n", AltSvcMode.COUNT, Action.MONITOR),
        ("alt_svc: strip\n", AltSvcMode.STRIP, Action.BLOCKED),
        ("alt_svc: strip\ndry_run: true\n", AltSvcMode.STRIP, Action.WOULD_BLOCK),
        ("alt_svc: 'off'\n", AltSvcMode.OFF, None),
        ("version: 1\n", AltSvcMode.COUNT, Action.MONITOR),
    ],
)
def test_alt_svc_decisions(
    tmp_path: Path, cat: Catalogue, text: str, mode: AltSvcMode, action: Action | None
) -> None:
    pol = load(tmp_path, cat, text)
    assert pol.alt_svc is mode
    got = pol.decide_alt_svc("10.0.0.1")
    assert (got.action if got is not None else None) == action
    if got is not None:
        assert got.regime == "policy" and got.exception_id is None and got.department == "other"


def test_alt_svc_bad_value_names_the_line(tmp_path: Path, cat: Catalogue) -> None:
    probs = errors(tmp_path, cat, "default: monitor\nalt_svc: block\n")
    assert probs == [
        f"{tmp_path / 'policy.yaml'}:2: alt_svc: 'block' is not a setting (count, strip or off)"
    ]


def test_ech_short_form_is_everywhere(tmp_path: Path, cat: Catalogue) -> None:
    pol = load(tmp_path, cat, "ech: block\n")
    assert pol.ech is Mode.BLOCK and pol.ech_scope is EchScope.EVERYWHERE
    assert pol.ech_mode(designated=False) is Mode.BLOCK
    assert pol.ech_mode(designated=True) is Mode.BLOCK


def test_ech_scope_designated(tmp_path: Path, cat: Catalogue) -> None:
    pol = load(tmp_path, cat, "ech:\n  action: block\n  scope: designated\n")
    assert pol.ech is Mode.BLOCK and pol.ech_scope is EchScope.DESIGNATED
    assert pol.ech_mode(designated=True) is Mode.BLOCK
    assert pol.ech_mode(designated=False) is Mode.MONITOR
    # the scope narrows a block only: monitor and off stay as they are
    off = load(tmp_path, cat, "ech: {action: 'off', scope: designated}\n")
    assert off.ech_mode(designated=False) is Mode.OFF
    mon = load(tmp_path, cat, "ech: {scope: designated}\n")
    assert mon.ech_mode(designated=True) is Mode.MONITOR


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("ech: blok\n", 1, "ech: 'blok' is not an action (monitor, block or off)"),
        ("ech:\n  action: blok\n", 2, "ech: 'blok' is not an action (monitor, block or off)"),
        (
            "ech:\n  action: block\n  scope: vendors\n",
            3,
            "ech.scope: 'vendors' is not a scope (everywhere or designated)",
        ),
        (
            "ech:\n  action: block\n  where: all\n",
            3,
            "ech: unknown key 'where' (known: action, scope)",
        ),
        (
            "ech: [block]\n",
            1,
            "ech must be an action (monitor, block or off) or a mapping (action, scope)",
        ),
    ],
)
def test_ech_errors_name_file_and_line(
    tmp_path: Path, cat: Catalogue, text: str, line: int, message: str
) -> None:
    assert errors(tmp_path, cat, text) == [f"{tmp_path / 'policy.yaml'}:{line}: {message}"]


def test_published_schema_describes_both_keys() -> None:
    schema = json.loads((REPO / "schemas" / "egresswatch-policy.schema.json").read_text())
    props, defs = schema["properties"], schema["$defs"]
    assert props["alt_svc"]["$ref"] == "#/$defs/AltSvcMode"
    assert defs["AltSvcMode"]["enum"] == ["count", "strip", "off"]
    # the short form (an action) and the long form (action, scope) are both accepted
    refs = [alt["$ref"] for alt in props["ech"]["anyOf"]]
    assert refs == ["#/$defs/Mode", "#/$defs/EntryEch"]
    assert set(defs["EntryEch"]["properties"]) == {"action", "scope"}
    assert defs["EchScope"]["enum"] == ["everywhere", "designated"]
