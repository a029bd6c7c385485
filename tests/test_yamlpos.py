"""The shared position-carrying YAML reader: data as YAML 1.2 reads it, lines from node marks."""

from __future__ import annotations

from pathlib import Path

import pytest
from egresswatch.catalogue import CatalogueError
from egresswatch.catalogue import load_catalogue
from egresswatch.policy import PolicyError
from egresswatch.policy import load_policy
from egresswatch.yamlpos import lookup
from egresswatch.yamlpos import read_yaml


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("v: off", "off"),
        ("v: yes", "yes"),
        ("v: true", True),
        ("v: False", False),
        ("v: 12", 12),
        ("v: -3", -3),
        ("v: 0x1f", 31),
        ("v: 1.5", 1.5),
        ("v: '12'", "12"),
        ('v: "true"', "true"),
        ("v: 2026-12-31", "2026-12-31"),
        ("v: 10.0.0.0/8", "10.0.0.0/8"),
        ("v: ~", None),
        ("v:", None),
        ("v: null", None),
        ("v: |\n  12\n", "12\n"),
        ("v: tRUe", "tRUe"),
        ("v: +7", 7),
        ("v: .5", 0.5),
        ("v: -x", "-x"),
        ("v: !!str 12", "12"),
    ],
)
def test_scalars_read_as_yaml_1_2(text: str, value: object) -> None:
    doc = read_yaml(text, "f.yaml")
    assert doc.problems == []
    assert lookup(doc.data, ("v",)) == value
    assert type(lookup(doc.data, ("v",))) is type(value)


def test_positions_are_node_lines() -> None:
    text = "# c\na: 1\nb:\n  - x\n  - y: 2\n    z:\n"
    doc = read_yaml(text, "f.yaml")
    assert doc.positions.line(()) == 2
    assert [doc.positions.line(p) for p in [("a",), ("b",), ("b", 0), ("b", 1), ("b", 1, "y")]] == [
        2,
        4,
        4,
        5,
        5,
    ]
    assert doc.positions.line(("b", 1, "z")) == 6  # a null with no node: its key's line
    assert doc.positions.line(("b", 1, "missing", 3)) == 5  # the nearest node that exists


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
        ("a:\n  - {k: 1, k: 2}\n", 2, "duplicate key 'k' (first on line 2)"),
        ("? [x]\n: 1\n", 1, "keys must be plain names"),
        ("a: [1\n", 2, "YAML syntax error"),
    ],
)
def test_problems_carry_lines(text: str, line: int, fragment: str) -> None:
    (problem,) = read_yaml(text, "f.yaml").problems
    assert (problem.file, problem.line) == ("f.yaml", line)
    assert fragment in problem.message


def test_empty_document() -> None:
    doc = read_yaml("# nothing\n", "f.yaml")
    assert (doc.data, doc.problems) == (None, [])


REGIMES = "regimes:\n  - id: r1\n    title: T\n    apps: [a1]\n"
APP = "id: a1\nname: A\ncategory: other\nregimes: [r1]\n"


def test_duplicate_key_is_one_rule_for_catalogue_and_policy(tmp_path: Path) -> None:
    """The same mistake gives the same message, with file and line, in both formats."""
    (tmp_path / "regimes.yaml").write_text(REGIMES)
    (tmp_path / "a1.yaml").write_text(APP + "name: B\n")
    with pytest.raises(CatalogueError) as cat_err:
        load_catalogue([tmp_path])
    assert [str(p) for p in cat_err.value.problems] == [
        f"{tmp_path / 'a1.yaml'}:5: duplicate key 'name' (first on line 2)"
    ]
    (tmp_path / "a1.yaml").write_text(APP)
    cat = load_catalogue([tmp_path])
    policy = tmp_path / "policy.yaml"
    policy.write_text("default: block\ndry_run: true\ndefault: monitor\n")
    with pytest.raises(PolicyError) as pol_err:
        load_policy(policy, cat)
    assert [str(p) for p in pol_err.value.problems] == [
        f"{policy}:3: duplicate key 'default' (first on line 1)"
    ]
