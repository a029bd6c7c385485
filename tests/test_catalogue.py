from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from egresswatch.catalogue import CatalogueError
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue

REGIMES = """\
regimes:
  - id: r1
    title: Test regime one
    signed: 2020-01-01
    effective: 2020-02-01
    revoked: 2021-06-09
    apps: [a1]
  - id: r2
    title: Test regime two
    signed: 2023-06-02
    apps: [a1]
"""

APP = """\
id: a1
name: App One
category: other
regimes: [r1, r2]
domains:
  - domain: example.com
    source: unit test
    confidence: high
    tags: [vendor]
"""

WriteCat = Callable[..., Path]


@pytest.fixture
def write_cat(tmp_path: Path) -> WriteCat:
    def write(files: dict[str, str], name: str = "cat") -> Path:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        for fname, text in files.items():
            (d / fname).write_text(textwrap.dedent(text), encoding="utf-8")
        return d

    return write


def test_load_minimal(write_cat: WriteCat) -> None:
    cat = load_catalogue([write_cat({"regimes.yaml": REGIMES, "a1.yaml": APP})])
    app = cat.apps["a1"]
    assert app.regimes == ("r1", "r2")
    (rule,) = app.rules
    assert (rule.domain, rule.match, rule.confidence, rule.tags, rule.line) == (
        "example.com",
        "suffix",
        "high",
        ("vendor",),
        6,
    )
    assert cat.entries_per_app() == {"a1": 1}
    assert len(cat.version) == 64


def test_version_changes_with_content(write_cat: WriteCat) -> None:
    v1 = load_catalogue([write_cat({"regimes.yaml": REGIMES, "a1.yaml": APP}, "x")]).version
    v2 = load_catalogue(
        [write_cat({"regimes.yaml": REGIMES, "a1.yaml": APP + "description: changed\n"}, "y")]
    ).version
    v3 = load_catalogue([write_cat({"regimes.yaml": REGIMES, "a1.yaml": APP}, "z")]).version
    assert v1 != v2 and v1 == v3


@pytest.mark.parametrize(
    ("on", "r1", "r2"),
    [
        (date(2020, 1, 15), "not_yet_effective", "not_yet_effective"),
        (date(2021, 1, 1), "in_force", "not_yet_effective"),
        (date(2021, 6, 9), "revoked", "not_yet_effective"),
        (date(2026, 11, 28), "revoked", "in_force"),
    ],
)
def test_regime_status(write_cat: WriteCat, on: date, r1: str, r2: str) -> None:
    cat = load_catalogue([write_cat({"regimes.yaml": REGIMES, "a1.yaml": APP})])
    assert (cat.regimes["r1"].status(on), cat.regimes["r2"].status(on)) == (r1, r2)
    expected = tuple(r for r, s in (("r1", r1), ("r2", r2)) if s == "in_force")
    assert cat.regimes_in_force("a1", on) == expected


def test_normalisation_is_reported(write_cat: WriteCat) -> None:
    app = APP.replace("domain: example.com", "domain: Bücher.Example.")
    cat = load_catalogue([write_cat({"regimes.yaml": REGIMES, "a1.yaml": app})])
    assert cat.apps["a1"].rules[0].domain == "xn--bcher-kva.example"
    assert [str(n).split("/")[-1] for n in cat.notes] == [
        "a1.yaml:6: normalised 'Bücher.Example.' to 'xn--bcher-kva.example'"
    ]


@pytest.mark.parametrize(
    ("app_text", "where", "message"),
    [
        (
            APP.replace("domain: example.com", "domain: exa mple.com"),
            "a1.yaml:6",
            "not a valid hostname",
        ),
        (APP.replace("domain: example.com", "domain: '*.example.com'"), "a1.yaml:6", "wildcards"),
        (APP.replace("    source: unit test\n", ""), "a1.yaml:6", "source is required"),
        (
            APP.replace("confidence: high", "confidence: sure"),
            "a1.yaml:8",
            "not high, medium or low",
        ),
        (
            APP.replace("    tags: [vendor]\n", "    match: regex\n"),
            "a1.yaml:9",
            "not suffix or exact",
        ),
        (APP.replace("id: a1", "id: other"), "a1.yaml:1", "must equal the file name"),
        (
            APP.replace("regimes: [r1, r2]", "regimes: [r1, nope]"),
            "a1.yaml:1",
            "regime 'nope' is not defined",
        ),
        (APP + "colour: blue\n", "a1.yaml:10", "unknown key 'colour'"),
        (APP + "domains2: [\n", "a1.yaml:11", "YAML syntax error"),
        (
            APP + "cidrs:\n  - cidr: 10.0.0.1/8\n    source: t\n    confidence: low\n",
            "a1.yaml:11",
            "not a network",
        ),
        (
            APP + "cidrs:\n  - cidr: 0.0.0.0/0\n    source: t\n    confidence: low\n",
            "a1.yaml:11",
            "too broad",
        ),
        (
            APP + "lists:\n  - file: missing.txt\n    source: t\n    confidence: low\n",
            "a1.yaml:11",
            "not found",
        ),
        (
            APP.replace("    tags: [vendor]\n", "    shared_with: [ghost]\n"),
            "a1.yaml:6",
            "unknown app 'ghost'",
        ),
    ],
)
def test_errors_name_file_and_line(
    write_cat: WriteCat, app_text: str, where: str, message: str
) -> None:
    with pytest.raises(CatalogueError) as info:
        load_catalogue([write_cat({"regimes.yaml": REGIMES, "a1.yaml": app_text})])
    lines = [str(p) for p in info.value.problems]
    assert any(where in line and message in line for line in lines), lines


def test_all_problems_are_collected(write_cat: WriteCat) -> None:
    bad = APP.replace("domain: example.com", "domain: a..b") + "colour: blue\n"
    with pytest.raises(CatalogueError) as info:
        load_catalogue([write_cat({"regimes.yaml": REGIMES, "a1.yaml": bad})])
    assert len(info.value.problems) == 2


def test_bulk_list_lines_and_errors(write_cat: WriteCat) -> None:
    app = (
        APP
        + "lists:\n  - file: big.txt\n    source: bulk source\n    confidence: low\n    match: exact\n"
    )
    d = write_cat(
        {
            "regimes.yaml": REGIMES,
            "a1.yaml": app,
            "big.txt": "# header\nzz.example\n\naa.example  # note\n",
        }
    )
    cat = load_catalogue([d])
    (bulk,) = cat.apps["a1"].lists
    assert bulk.names == ["zz.example", "aa.example"]
    assert (bulk.line_of("aa.example"), bulk.line_of("zz.example"), bulk.line_of("x")) == (4, 2, 0)
    assert bulk.rule("zz.example", 2).match == "exact"
    (d / "big.txt").write_text("ok.example\nbad..name\n")
    with pytest.raises(CatalogueError, match=r"big.txt:2: 'bad..name' is not a valid hostname"):
        load_catalogue([d])


def test_bulk_list_line_numbers_follow_text_mode_newlines(write_cat: WriteCat) -> None:
    """CRLF and lone CR end a line as a text-mode file reads it; a form feed does not."""
    app = APP + "lists:\n  - file: big.txt\n    source: s\n    confidence: low\n"
    d = write_cat({"regimes.yaml": REGIMES, "a1.yaml": app})
    (d / "big.txt").write_bytes(b"one.example\r\ntwo.example\rthree.example\n\x0c\nfour.example\n")
    (bulk,) = load_catalogue([d]).apps["a1"].lists
    lines = [bulk.line_of(n) for n in ("one.example", "two.example", "three.example")]
    assert lines + [bulk.line_of("four.example")] == [1, 2, 3, 5]


def test_version_covers_the_bulk_list_bytes(write_cat: WriteCat) -> None:
    app = APP + "lists:\n  - file: big.txt\n    source: s\n    confidence: low\n"
    d = write_cat({"regimes.yaml": REGIMES, "a1.yaml": app, "big.txt": "one.example\n"})
    v1 = load_catalogue([d]).version
    (d / "big.txt").write_text("one.example\ntwo.example\n")
    cat = load_catalogue([d])
    assert cat.version != v1 and (d / "big.txt").resolve() in [p.resolve() for p in cat.files]


def test_regimes_yml_is_refused_not_ignored(write_cat: WriteCat) -> None:
    d = write_cat({"regimes.yml": REGIMES, "a1.yaml": APP})
    with pytest.raises(CatalogueError) as info:
        load_catalogue([d])
    assert any(
        p.file.endswith("regimes.yml") and "read from regimes.yaml only" in p.message
        for p in info.value.problems
    )


def test_user_dir_extends_and_conflicts(write_cat: WriteCat) -> None:
    base = write_cat({"regimes.yaml": REGIMES, "a1.yaml": APP}, "base")
    ext = write_cat(
        {
            "more.yaml": "extends: a1\ndomains:\n  - domain: extra.example\n    source: ours\n    confidence: medium\n"
        },
        "ext",
    )
    cat = load_catalogue([base, ext])
    assert [r.domain for r in cat.apps["a1"].rules] == ["example.com", "extra.example"]
    dup = write_cat({"a1.yaml": APP}, "dup")
    with pytest.raises(CatalogueError, match="already defined"):
        load_catalogue([base, dup])
    orphan = write_cat({"more.yaml": "extends: zz\n"}, "orphan")
    with pytest.raises(CatalogueError, match="extends 'zz': no such app"):
        load_catalogue([base, orphan])


def test_regime_listing_unknown_app(write_cat: WriteCat) -> None:
    with pytest.raises(
        CatalogueError, match=r"regimes.yaml:2: regime r1: app 'a1' is not in the catalogue"
    ):
        load_catalogue([write_cat({"regimes.yaml": REGIMES})])


def test_missing_directory() -> None:
    with pytest.raises(CatalogueError, match="catalogue directory not found"):
        load_catalogue([Path("/nonexistent/egresswatch")])


def test_bundled_dir_is_the_repository_catalogue() -> None:
    assert (bundled_dir() / "regimes.yaml").is_file()


def test_app_regimes_include_those_of_apps_sharing_names(write_cat: WriteCat) -> None:
    regimes = REGIMES.replace("    apps: [a1]\n  - id: r2", "    apps: [a1]\n  - id: r2").replace(
        "    signed: 2023-06-02\n    apps: [a1]", "    signed: 2023-06-02\n    apps: [a2]"
    )
    a1 = APP.replace("regimes: [r1, r2]", "regimes: [r1]") + (
        "  - domain: shared.example\n    shared_with: [a2]\n    source: t\n    confidence: low\n"
    )
    a2 = (
        "id: a2\nname: App Two\ncategory: other\nregimes: [r2]\ndomains:\n"
        "  - domain: shared.example\n    shared_with: [a1]\n    source: t\n    confidence: low\n"
    )
    cat = load_catalogue([write_cat({"regimes.yaml": regimes, "a1.yaml": a1, "a2.yaml": a2})])
    # A hit on shared.example is attributed to a1 but may be decided under a2's regime r2.
    assert cat.app_regimes() == {"a1": ("r1", "r2"), "a2": ("r2", "r1")}
