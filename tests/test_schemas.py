"""The published JSON Schema files: generated from the models, and every shipped file passes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from egresswatch.catalogue import CatalogueError
from egresswatch.catalogue import load_catalogue
from egresswatch.schemas import json_schemas
from egresswatch.schemas import main
from egresswatch.schemas import render
from egresswatch.yamlpos import read_yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
APP_FILES = sorted(p for p in (ROOT / "domains").glob("*.yaml") if p.name != "regimes.yaml")


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"egresswatch-{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _messages(errs: Any) -> list[str]:
    """Every message, including those under ``anyOf`` branches (an optional list is
    ``anyOf: [array, null]``: the real reason is in the array branch)."""
    out: list[str] = []
    for e in errs:
        out.append(e.message)
        out += _messages(e.context or ())
    return out


def errors(name: str, text: str) -> list[str]:
    doc = read_yaml(text, "x.yaml")
    assert not doc.problems
    return _messages(validator(name).iter_errors(doc.data))


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_committed_schema_is_the_generated_one(name: str) -> None:
    committed = (SCHEMAS / name).read_text(encoding="utf-8")
    assert committed == render(json_schemas()[name]), (
        f"schemas/{name} is stale: run `python -m egresswatch.schemas schemas/`"
    )


def test_main_writes_every_schema(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in SCHEMAS.iterdir())
    assert main([]) == 2


@pytest.mark.parametrize(
    ("name", "path"),
    [("app", p) for p in APP_FILES]
    + [("regimes", ROOT / "domains" / "regimes.yaml")]
    + [("policy", ROOT / "deploy" / "policy.example.yaml")],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_every_shipped_file_passes_its_json_schema(name: str, path: Path) -> None:
    doc = read_yaml(path.read_text(encoding="utf-8"), str(path))
    found = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(doc.data)]
    assert found == []


APP = "id: a1\nname: A\ncategory: other\ndomains:\n  - domain: a.example\n    source: s\n    confidence: high\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (APP + "colour: blue\n", "'colour' was unexpected"),
        (APP.replace("confidence: high", "confidence: sure"), "'sure' is not one of"),
        (APP.replace("    source: s\n", ""), "'source' is a required property"),
        (APP.replace("category: other", "category: games"), "'games' is not one of"),
        (APP.replace("id: a1", "id: A1"), "does not match"),
        ("name: A\ncategory: other\n", "'id' is a required property"),
        ("extends: a1\nname: A\n", "should not be valid"),
    ],
)
def test_app_schema_rejects_what_the_loader_rejects(
    tmp_path: Path, text: str, fragment: str
) -> None:
    assert any(fragment in m for m in errors("app", text)), errors("app", text)
    (tmp_path / "regimes.yaml").write_text("regimes: []\n")
    (tmp_path / "a1.yaml").write_text(text)
    with pytest.raises(CatalogueError):
        load_catalogue([tmp_path])


def test_app_schema_accepts_an_extends_file() -> None:
    assert (
        errors(
            "app", "extends: a1\ndomains:\n  - {domain: b.example, source: s, confidence: low}\n"
        )
        == []
    )


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("default: off\ndry_run: true\nregimes: {r1: block}\n", True),
        ("default: allow\n", False),
        ("dry_run: 1\n", False),
        ("departments:\n  - {name: other, cidrs: [10.0.0.0/8]}\n", False),
        ("departments:\n  - {name: eng, cidrs: []}\n", False),
        ("exceptions:\n  - {id: E1, apps: [a], users: [u], reason: r, approver: a}\n", False),
        (
            "exceptions:\n  - {id: E1, apps: [a], users: [u], reason: r, approver: a, expires: 2026-01-01}\n",
            True,
        ),
    ],
)
def test_policy_schema(text: str, ok: bool) -> None:
    assert (errors("policy", text) == []) is ok, errors("policy", text)


def test_schemas_name_their_dialect() -> None:
    for schema in json_schemas().values():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert isinstance(schema.get("properties"), dict)


def _keys(schema: dict[str, Any]) -> set[str]:
    return set(schema["properties"])


def test_policy_schema_lists_every_documented_key() -> None:
    documented = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    for key in _keys(json_schemas()["egresswatch-policy.schema.json"]):
        assert f"`{key}`" in documented, key
