"""Tests for egresswatch.importers: every input format, provenance and the YAML it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from egresswatch.catalogue import load_catalogue
from egresswatch.importers import FORMATS
from egresswatch.importers import Entry
from egresswatch.importers import ListImportError
from egresswatch.importers import parse
from egresswatch.importers import parse_file
from egresswatch.importers import render_yaml
from egresswatch.lint import Severity
from egresswatch.lint import check_dirs

from tests.plugins.catalogue import CatalogueDirFactory

DATA = Path(__file__).parent / "data" / "import"

# (format, file, [(domain, match, origin file, line, tags)], [(origin file, line, reason part)])
CASES = [
    (
        "hosts",
        "hosts.txt",
        [
            ("ads.demo.example", "exact", "hosts.txt", 4, ()),
            ("tracker.demo.example", "exact", "hosts.txt", 4, ()),
            ("api.demo.example", "exact", "hosts.txt", 5, ()),
            ("xn--bcher-kva.demo.example", "exact", "hosts.txt", 6, ()),
            ("com", "exact", "hosts.txt", 12, ()),  # the parser keeps it; lists import screens it
        ],
        [
            ("hosts.txt", 7, "first field is not an IP address"),
            ("hosts.txt", 8, "not allowed in a hostname"),
            ("hosts.txt", 9, "duplicate of"),
            ("hosts.txt", 11, "IP literal"),
        ],
    ),
    (
        "adblock",
        "adblock.txt",
        [
            ("demo.example", "suffix", "adblock.txt", 3, ()),
            ("cdn.demo-static.example", "suffix", "adblock.txt", 4, ()),
            ("exact.demo.example", "exact", "adblock.txt", 5, ()),
            ("tracker.demo.example", "suffix", "adblock.txt", 6, ()),
            ("akamaized.net", "suffix", "adblock.txt", 14, ()),
        ],
        [
            ("adblock.txt", 7, "$third-party cannot be expressed"),
            ("adblock.txt", 8, "exception rule"),
            ("adblock.txt", 9, "not a ||domain^ rule"),
            ("adblock.txt", 10, "not a ||domain^ rule"),
            ("adblock.txt", 11, "not a ||domain^ rule"),
            ("adblock.txt", 12, "not a ||domain^ rule"),
            ("adblock.txt", 13, "duplicate of"),
        ],
    ),
    (
        "plain",
        "plain.txt",
        [
            ("demo.example", "suffix", "plain.txt", 2, ()),
            ("wild.demo.example", "suffix", "plain.txt", 3, ()),
            ("dot.demo.example", "suffix", "plain.txt", 4, ()),
            ("mixed.demo.example", "suffix", "plain.txt", 5, ()),
        ],
        [
            ("plain.txt", 7, "more than one field"),
            ("plain.txt", 8, "IP literal"),
            ("plain.txt", 9, "hyphen"),
            ("plain.txt", 10, "duplicate of"),
        ],
    ),
    (
        "v2fly",
        "v2fly/demo",
        [
            ("demo-static.example", "suffix", "v2fly/demo-cdn", 2, ()),
            ("img.demo-static.example", "exact", "v2fly/demo-cdn", 3, ("cdn",)),
            # include:demo-ads @ads keeps only the entries carrying @ads
            ("ads.demo.example", "suffix", "v2fly/demo-ads", 1, ("ads",)),
            ("pixel.demo.example", "exact", "v2fly/demo-ads", 3, ("ads", "tracker")),
            ("demo.example", "suffix", "v2fly/demo", 4, ()),
            ("demo-app.example", "suffix", "v2fly/demo", 5, ("cn",)),
            ("login.demo.example", "exact", "v2fly/demo", 6, ()),
        ],
        [
            ("v2fly/demo", 7, "regexp: rules cannot be expressed"),
            ("v2fly/demo", 8, "keyword: rules cannot be expressed"),
            ("v2fly/demo", 9, "cannot read"),
            ("v2fly/demo", 10, "unknown v2fly rule type"),
        ],
    ),
    (
        "v2fly",
        "v2fly/loop-a",
        [
            ("loop-a.example", "suffix", "v2fly/loop-a", 1, ()),
            ("loop-b.example", "suffix", "v2fly/loop-b", 1, ()),
        ],
        [("v2fly/loop-b", 2, "include cycle")],
    ),
    (
        "adguard",
        "adguard.yml",
        [
            ("demo.example", "suffix", "adguard.yml", 4, ()),
            ("demo-api.example", "suffix", "adguard.yml", 5, ()),
            ("exact.demo-api.example", "exact", "adguard.yml", 8, ()),
        ],
        [
            ("adguard.yml", 6, "not a ||domain^ rule"),
            ("adguard.yml", 7, "$dnsrewrite cannot be expressed"),
        ],
    ),
]


def _rel(origin: str) -> str:
    return Path(origin).relative_to(DATA).as_posix()


@pytest.mark.parametrize(("fmt", "name", "entries", "skipped"), CASES, ids=[c[1] for c in CASES])
def test_formats(
    fmt: str,
    name: str,
    entries: list[tuple[str, str, str, int, tuple[str, ...]]],
    skipped: list[tuple[str, int, str]],
) -> None:
    result = parse_file(fmt, DATA / name)
    got = [(e.domain, e.match, _rel(e.origin), e.line, e.tags) for e in result.entries]
    assert got == entries
    got_skipped = [(_rel(s.origin), s.line, s.reason) for s in result.skipped]
    assert [(o, line) for o, line, _ in got_skipped] == [(o, line) for o, line, _ in skipped]
    for (_, _, reason), (_, _, part) in zip(got_skipped, skipped, strict=True):
        assert part in reason


def test_adguard_metadata() -> None:
    result = parse_file("adguard", DATA / "adguard.yml")
    assert (result.service_id, result.name) == ("demo", "Demo Service")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("domain:a.example\nfull:a.example\n", [("a.example", "suffix", 1)]),
        # a later suffix entry replaces an earlier exact one for the same name
        ("full:a.example\ndomain:a.example\n", [("a.example", "suffix", 2)]),
        ("a.example @ads &affiliated\n", [("a.example", "suffix", 1)]),
        ("domain:a.example trailing-text\n", []),
        ("include:other\n", []),  # no directory to resolve it in
    ],
)
def test_v2fly_lines(text: str, expected: list[tuple[str, str, int]]) -> None:
    result = parse("v2fly", text, origin="<stdin>")
    assert [(e.domain, e.match, e.line) for e in result.entries] == expected


def test_suffix_covering_exact_is_reported() -> None:
    result = parse("v2fly", "full:a.example\ndomain:a.example\n", origin="x")
    assert [(s.line, s.reason) for s in result.skipped] == [
        (1, "covered by a.example (suffix) at x:2")
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("||a.example^", ("a.example", "suffix")),
        ("||a.example^|", ("a.example", "suffix")),
        ("|a.example^", ("a.example", "exact")),
        ("||a.example^$important", ("a.example", "suffix")),
        ("||a.example^$important,third-party", None),
        ("||a.example", None),  # no ^: a substring rule, it would also hit a.example.org
        ("a.example", None),
        ("||a.example:8080^", None),
        ("! comment", None),
        ("# comment", None),
    ],
)
def test_adblock_rules(rule: str, expected: tuple[str, str] | None) -> None:
    result = parse("adblock", rule + "\n", origin="x")
    got = [(e.domain, e.match) for e in result.entries]
    assert got == ([expected] if expected else [])


def test_hosts_skips_local_names_silently() -> None:
    text = "127.0.0.1 localhost localhost.localdomain\n255.255.255.255 broadcasthost\n"
    result = parse("hosts", text, origin="x")
    assert result.entries == [] and result.skipped == []


@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        ("adguard", "id: [unclosed\n", "not valid YAML"),
        ("adguard", "- a\n- b\n", "YAML mapping"),
        ("adguard", "id: x\nname: X\n", "no 'rules:' list"),
        ("csv", "a.example\n", "unknown format"),
    ],
)
def test_unusable_input_raises(fmt: str, text: str, message: str) -> None:
    with pytest.raises(ListImportError, match=message):
        parse(fmt, text, origin="x")


def test_parse_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ListImportError, match="cannot read"):
        parse_file("plain", tmp_path / "nope.txt")


def test_parse_file_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"caf\xe9.example\n")
    with pytest.raises(ListImportError, match="not UTF-8"):
        parse_file("plain", f)


def test_formats_constant() -> None:
    assert FORMATS == ("hosts", "adblock", "plain", "v2fly", "adguard")


# --- render_yaml ---------------------------------------------------------------------------------


def _entries() -> list[Entry]:
    return [
        Entry("a.example", "suffix", "lists/in.txt", 3, ("ads",)),
        Entry("www.b.example", "exact", "lists/in.txt", 7),
    ]


def test_render_app_file_keeps_provenance(tmp_path: Path) -> None:
    text = render_yaml(_entries(), app="demo", name="Demo", header="first\nsecond")
    assert text.startswith("# first\n# second\n")
    doc = yaml.safe_load(text)
    assert doc["id"] == "demo" and doc["name"] == "Demo" and doc["regimes"] == []
    assert doc["domains"] == [
        {
            "domain": "a.example",
            "match": "suffix",
            "source": "lists/in.txt:3",
            "confidence": "medium",
            "tags": ["ads"],
        },
        {
            "domain": "www.b.example",
            "match": "exact",
            "source": "lists/in.txt:7",
            "confidence": "medium",
        },
    ]
    d = tmp_path / "cat"
    d.mkdir()
    (d / "demo.yaml").write_text(text, encoding="utf-8")
    cat = load_catalogue([d])
    rule = cat.apps["demo"].rules[1]
    assert (rule.domain, rule.match, rule.source, rule.line) == (
        "www.b.example",
        "exact",
        "lists/in.txt:7",
        text.splitlines().index("  - domain: www.b.example") + 1,
    )
    assert [f for f in check_dirs([d]) if f.severity is not Severity.NOTE] == []


def test_render_overrides() -> None:
    text = render_yaml(
        _entries(),
        app="demo",
        source="https://lists.example/x.txt",
        confidence="low",
        match="exact",
        tags=["imported"],
    )
    doms = yaml.safe_load(text)["domains"]
    assert {d["source"] for d in doms} == {"https://lists.example/x.txt"}
    assert {d["match"] for d in doms} == {"exact"}
    assert {d["confidence"] for d in doms} == {"low"}
    assert doms[0]["tags"] == ["imported", "ads"] and doms[1]["tags"] == ["imported"]


def test_render_extends(catalogue_dir: CatalogueDirFactory, tmp_path: Path) -> None:
    base = catalogue_dir({"demo": {"domains": [{"domain": "demo.example"}]}})
    text = render_yaml(_entries(), app="demo", extends=True)
    doc = yaml.safe_load(text)
    assert doc["extends"] == "demo" and "id" not in doc and "name" not in doc
    user = tmp_path / "user"
    user.mkdir()
    (user / "demo-extra.yaml").write_text(text, encoding="utf-8")
    cat = load_catalogue([base, user])
    assert [r.domain for r in cat.apps["demo"].rules] == [
        "demo.example",
        "a.example",
        "www.b.example",
    ]


def test_render_rejects_bad_app_id() -> None:
    with pytest.raises(ListImportError, match="app id"):
        render_yaml(_entries(), app="Not Valid")
    # the catalogue refuses ids over 63 characters, so the importer must not write them
    render_yaml(_entries(), app="a" * 63)
    with pytest.raises(ListImportError, match="app id"):
        render_yaml(_entries(), app="a" * 64)
