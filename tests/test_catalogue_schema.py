"""The catalogue formats' messages: each schema error says what is wrong, at the right line."""

from __future__ import annotations

from pathlib import Path

import pytest
from egresswatch.catalogue import CatalogueError
from egresswatch.catalogue import load_catalogue
from egresswatch.catalogue_schema import AppFile
from egresswatch.catalogue_schema import EntryRegime

REGIMES = "regimes:\n  - id: r1\n    title: T\n    apps: [a1]\n"
APP = "# a comment first\nid: a1\nname: A\ncategory: other\nregimes: [r1]\n"
ENTRY = "domains:\n  - domain: a.example\n    source: s\n    confidence: high\n"


def problems(tmp_path: Path, app: str, regimes: str = REGIMES) -> list[str]:
    (tmp_path / "regimes.yaml").write_text(regimes)
    (tmp_path / "a1.yaml").write_text(app)
    with pytest.raises(CatalogueError) as info:
        load_catalogue([tmp_path])
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in info.value.problems]


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (APP.replace("name: A\n", "name:\n"), "a1.yaml:3: name is required"),
        (APP.replace("name: A\n", "name: ''\n"), "a1.yaml:3: name must not be empty"),
        (APP + "vendor: [x]\n", "a1.yaml:6: vendor must be a single value"),
        (
            APP.replace("category: other", "category: games"),
            "a1.yaml:4: category 'games' is not one of",
        ),
        (
            APP.replace("id: a1", "id: A1"),
            "a1.yaml:2: id 'A1' must be lower-case letters, digits and hyphens",
        ),
        (APP + "domains: x\n", "a1.yaml:6: domains must be a list"),
        (APP + "domains:\n  - 5\n", "a1.yaml:7: domains entry must be a mapping"),
        (
            APP + "domains:\n  - source: s\n    confidence: low\n",
            "a1.yaml:7: domain entry: 'domain' is required",
        ),
        (
            APP + ENTRY.replace("a.example", "a..example"),
            "a1.yaml:7: domain: 'a..example' is not a valid hostname",
        ),
        (
            APP + ENTRY.replace("    confidence: high\n", ""),
            "a1.yaml:7: domain 'a.example': confidence is required (high, medium or low)",
        ),
        (APP + ENTRY + "    tags: {x: 1}\n", "a1.yaml:10: domain 'a.example': tags"),
        (
            APP + "carve_outs:\n  - domain: b.example\n    source: s\n",
            "a1.yaml:7: carve-out 'b.example': reason is required",
        ),
        (
            APP + "cidrs:\n  - cidr: 10.0.0.0/8\n    confidence: low\n",
            "a1.yaml:7: cidr '10.0.0.0/8': source is required",
        ),
        (
            APP + "lists:\n  - file: x.txt\n    source: s\n    confidence: low\n    match: regex\n",
            "a1.yaml:10: list 'x.txt': match 'regex' is not suffix or exact",
        ),
        (APP + "name: B\n", "a1.yaml:6: duplicate key 'name' (first on line 3)"),
        (
            "extends: a1\nname: A\n",
            "a1.yaml:2: an extends file adds rules only; 'name' belongs to the app's own file",
        ),
        ("name: A\ncategory: other\n", "a1.yaml:1: id is required"),
        ("", "a1.yaml:1: empty app file"),
        ("- a\n", "a1.yaml:1: app file must be a mapping"),
    ],
)
def test_app_file_messages(tmp_path: Path, app: str, expected: str) -> None:
    found = problems(tmp_path, app)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("regimes", "expected"),
    [
        (
            REGIMES.replace("title: T", "title: T\n    signed: 2020-13-01"),
            "regimes.yaml:4: signed: '2020-13-01' is not an ISO date (YYYY-MM-DD)",
        ),
        (
            REGIMES.replace("title: T", "title: T\n    signed: 1 May 2020"),
            "regimes.yaml:4: signed: '1 May 2020' is not an ISO date (YYYY-MM-DD)",
        ),
        (
            REGIMES.replace("id: r1", "id: R1"),
            "regimes.yaml:2: regime id 'R1' must be lower-case letters, digits, dots and hyphens",
        ),
        (REGIMES.replace("    title: T\n", ""), "regimes.yaml:2: regime r1: title is required"),
        (REGIMES + "  - title: U\n", "regimes.yaml:5: regime: id is required"),
        (REGIMES + "  - 7\n", "regimes.yaml:5: regime must be a mapping"),
        (
            REGIMES.replace("title: T", "title: T\n    colour: blue"),
            "regimes.yaml:4: regime: unknown key 'colour'",
        ),
        (
            REGIMES.replace(
                "title: T", "title: T\n    effective: 2021-01-01\n    revoked: 2020-01-01"
            ),
            "regimes.yaml:5: regime r1: revoked before it took effect",
        ),
        ("regimes: x\n", "regimes.yaml:1: regimes must be a list"),
    ],
)
def test_regimes_messages(tmp_path: Path, regimes: str, expected: str) -> None:
    found = problems(tmp_path, APP, regimes)
    assert any(p.startswith(expected) for p in found), found


def test_broken_app_file_does_not_make_others_fail(tmp_path: Path) -> None:
    """A file that fails its schema still names its app: regimes listing it do not fail too."""
    found = problems(tmp_path, APP + "colour: blue\n")
    assert found == [
        "a1.yaml:6: app file: unknown key 'colour' (allowed: carve_outs, category, cidrs, "
        "completeness, description, domains, extends, id, lists, name, organisations, parent, "
        "patterns, regimes, "
        "vendor)"
    ]


def test_models_accept_one_text_for_a_list_and_numbers_as_text() -> None:
    app = AppFile.model_validate({"id": "a1", "name": 360, "category": "other", "regimes": "r1"})
    assert (app.name, app.regimes) == ("360", ("r1",))
    regime = EntryRegime.model_validate({"id": "r.1", "title": "T", "signed": "2020-01-02"})
    assert regime.effective is None and regime.signed == "2020-01-02"
