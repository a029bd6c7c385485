"""Tests for egresswatch.lint: each check firing (with its file:line) and not firing."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from egresswatch.catalogue import Problem
from egresswatch.catalogue import bundled_dir
from egresswatch.lint import BROAD_INFRASTRUCTURE
from egresswatch.lint import Finding
from egresswatch.lint import NameChecker
from egresswatch.lint import Severity
from egresswatch.lint import check_dirs
from egresswatch.lint import exit_status

from tests.plugins.catalogue import SAMPLE_TODAY
from tests.plugins.catalogue import CatalogueDirFactory

TODAY = SAMPLE_TODAY


def line_of(path: Path, text: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line of ``path`` that contains ``text``."""
    seen = 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text in line:
            seen += 1
            if seen == nth:
                return i
    raise AssertionError(f"{text!r} not in {path}")


def findings(d: Path | list[Path], severity: Severity | None = None) -> list[Finding]:
    dirs = d if isinstance(d, list) else [d]
    out = check_dirs(dirs, today=TODAY)
    return [f for f in out if severity is None or f.severity is severity]


def one_app(domains: list[dict[str, Any]], **extra: Any) -> dict[str, dict[str, Any]]:
    return {"demo": {"domains": domains, **extra}}


@pytest.fixture(scope="module")
def checker() -> NameChecker:
    return NameChecker()


# --- names on their own --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "match", "tags", "severity", "message"),
    [
        ("com", "suffix", (), Severity.ERROR, "is a TLD"),
        ("co.uk", "suffix", (), Severity.ERROR, "bare public suffix"),
        ("co.uk", "exact", (), Severity.ERROR, "bare public suffix"),
        ("xn--fiqs8s", "suffix", (), Severity.ERROR, "is a TLD"),  # .中国
        ("alipay", "suffix", (), Severity.ERROR, "is a TLD"),
        ("alipay", "suffix", ("brand-tld",), None, ""),  # the documented exception
        ("alipay", "exact", ("brand-tld",), Severity.ERROR, "is a TLD"),
        ("alipay.com", "suffix", ("brand-tld",), Severity.ERROR, "tagged brand-tld but is not"),
        ("github.io", "suffix", (), Severity.ERROR, "shared infrastructure"),
        ("myshopify.com", "suffix", (), Severity.ERROR, "private section"),
        ("github.io", "exact", (), None, ""),  # the host itself, not the suffix
        ("s3.amazonaws.com", "suffix", (), Severity.ERROR, "bare public suffix"),
        ("192.0.2.7", "suffix", (), Severity.ERROR, "IP literal"),
        ("2001:db8::1", "exact", (), Severity.ERROR, "IP literal"),
        ("fastly.net", "suffix", (), Severity.ERROR, "shared infrastructure"),
        ("fastly.net", "exact", (), None, ""),
        ("aliyuncs.com", "suffix", (), Severity.ERROR, "shared infrastructure"),
        ("kunlunsl.com", "suffix", (), Severity.ERROR, "shared infrastructure"),
        ("tiktok.bytedance.map.fastly.net", "suffix", (), None, ""),
        ("bytecdn.cn", "suffix", (), None, ""),  # ByteDance's own CDN, not shared infrastructure
        ("intranet", "suffix", (), Severity.WARNING, "single label"),
        ("qq.com", "suffix", (), None, ""),
        ("demo.example", "suffix", (), None, ""),
    ],
)
def test_name_checks(
    checker: NameChecker,
    name: str,
    match: str,
    tags: tuple[str, ...],
    severity: Severity | None,
    message: str,
) -> None:
    got = checker.check(name, match, tags)
    if severity is None:
        assert got == []
    else:
        assert len(got) == 1
        assert got[0][0] is severity and message in got[0][1]


def test_broad_list_is_normalised_data() -> None:
    from egresswatch.hostnames import normalise_host

    assert all(normalise_host(n) == n and "." in n for n in BROAD_INFRASTRUCTURE)


# --- whole catalogues ----------------------------------------------------------------------------


def test_sample_catalogue_is_clean(sample_catalogue: Path) -> None:
    got = findings(sample_catalogue)
    assert [f for f in got if f.severity is not Severity.NOTE] == []
    assert exit_status(got) == 0 and exit_status(got, strict=True) == 0


@pytest.mark.parametrize(
    ("domain", "match", "message"),
    [
        ("co.uk", "suffix", "'co.uk' is a bare public suffix"),
        ("10.0.0.1", "exact", "'10.0.0.1' is an IP literal in a domain field"),
        ("cloudflare.com", "suffix", "'cloudflare.com' is shared infrastructure"),
        ("volces.com", "suffix", "'volces.com' is shared infrastructure"),
        ("byteplus.com", "suffix", "'byteplus.com' is shared infrastructure"),
    ],
)
def test_bad_name_in_app_file(
    catalogue_dir: CatalogueDirFactory, domain: str, match: str, message: str
) -> None:
    d = catalogue_dir(one_app([{"domain": "demo.example"}, {"domain": domain, "match": match}]))
    errors = findings(d, Severity.ERROR)
    assert [(f.file, f.line) for f in errors] == [
        (str(d / "demo.yaml"), line_of(d / "demo.yaml", f"domain: {domain}"))
    ]
    assert message in errors[0].message
    assert str(errors[0]).startswith(f"{d / 'demo.yaml'}:{errors[0].line}: error: ")


def test_invalid_hostname_comes_from_the_loader(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(one_app([{"domain": "bad_name!.example"}, {"domain": "-edge.example"}]))
    errors = findings(d, Severity.ERROR)
    f = d / "demo.yaml"
    assert [(e.file, e.line) for e in errors] == [
        (str(f), line_of(f, "bad_name!")),
        (str(f), line_of(f, "-edge.example")),
    ]
    assert all("not a valid hostname" in e.message for e in errors)


def test_normalisation_is_a_note(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(one_app([{"domain": "Demo.Example."}, {"domain": "bücher.example"}]))
    got = findings(d)
    f = d / "demo.yaml"
    assert [(x.severity, x.line, x.message) for x in got] == [
        (
            Severity.NOTE,
            line_of(f, "Demo.Example."),
            "normalised 'Demo.Example.' to 'demo.example'",
        ),
        (
            Severity.NOTE,
            line_of(f, "bücher"),
            "normalised 'bücher.example' to 'xn--bcher-kva.example'",
        ),
    ]
    assert exit_status(got, strict=True) == 0


def test_duplicate_within_app(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(
        one_app(
            [
                {"domain": "demo.example"},
                {"domain": "a.example"},
                {"domain": "DEMO.example", "match": "exact"},
            ]
        )
    )
    f = d / "demo.yaml"
    errors = findings(d, Severity.ERROR)
    first, second = line_of(f, "domain: demo.example"), line_of(f, "DEMO.example")
    assert [(e.line, e.message) for e in errors] == [
        (
            second,
            f"duplicate: 'demo.example' is already listed for app demo at {f}:{first} (suffix there, exact here)",
        )
    ]


def test_duplicate_across_extends_and_bulk_list(catalogue_dir: CatalogueDirFactory) -> None:
    base = catalogue_dir(
        one_app(
            [{"domain": "demo.example"}],
            lists=[{"file": "demo-extra.txt", "source": "tests", "confidence": "low"}],
        ),
        files={"demo-extra.txt": "# extra names\nextra.example\ndemo.example\n"},
    )
    user = catalogue_dir(
        {"mine": {"extends": "demo", "domains": [{"domain": "extra.example"}]}}, [], name="user"
    )
    errors = findings([base, user], Severity.ERROR)
    listed = (base / "demo-extra.txt").resolve()
    # rules come first (the base file, then the extends file), bulk lists after them
    assert [(e.file, e.line) for e in errors] == [(str(listed), 2), (str(listed), 3)]
    assert errors[0].message == (
        f"duplicate: 'extra.example' is already listed for app demo at "
        f"{user / 'mine.yaml'}:{line_of(user / 'mine.yaml', 'extra.example')}"
    )
    assert errors[1].message.startswith(
        "duplicate: 'demo.example' is already listed for app demo at"
    )


def test_bulk_list_names_are_checked(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(
        one_app([], lists=[{"file": "names.txt", "source": "tests", "confidence": "low"}]),
        files={"names.txt": "ok.example\nnet\nakamaiedge.net\n"},
    )
    errors = findings(d, Severity.ERROR)
    path = str((d / "names.txt").resolve())
    assert [(e.file, e.line) for e in errors] == [(path, 2), (path, 3)]
    assert "is a TLD" in errors[0].message and "shared infrastructure" in errors[1].message


@pytest.mark.parametrize(
    ("alpha_shared", "beta_shared", "failing"),
    [
        (None, None, {"alpha", "beta"}),
        (["beta"], None, {"beta"}),
        (None, ["alpha"], {"alpha"}),
        (["beta"], ["alpha"], set()),
    ],
)
def test_name_claimed_by_two_apps(
    catalogue_dir: CatalogueDirFactory,
    alpha_shared: list[str] | None,
    beta_shared: list[str] | None,
    failing: set[str],
) -> None:
    def entry(shared: list[str] | None) -> dict[str, Any]:
        e: dict[str, Any] = {"domain": "shared.example"}
        if shared:
            e["shared_with"] = shared
        return e

    d = catalogue_dir(
        {
            "alpha": {"domains": [{"domain": "alpha.example"}, entry(alpha_shared)]},
            "beta": {"domains": [entry(beta_shared), {"domain": "beta.example"}]},
        }
    )
    errors = findings(d, Severity.ERROR)
    assert {Path(e.file).stem for e in errors} == failing
    for e in errors:
        assert e.line == line_of(Path(e.file), "shared.example")
        assert "without being declared shared" in e.message


def test_shared_claim_from_bulk_list_has_a_hint(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(
        {
            "alpha": {"domains": [{"domain": "x.example", "shared_with": ["beta"]}]},
            "beta": {
                "lists": [{"file": "beta.txt", "source": "t", "confidence": "low"}],
                "domains": [],
            },
        },
        files={"beta.txt": "x.example\n"},
    )
    errors = findings(d, Severity.ERROR)
    assert [(Path(e.file).name, e.line) for e in errors] == [("beta.txt", 1)]
    assert "move it from the list file" in errors[0].message


def test_one_sided_shared_with_is_a_warning(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(
        {
            "alpha": {"domains": [{"domain": "x.example", "shared_with": ["beta"]}]},
            "beta": {"domains": [{"domain": "beta.example", "shared_with": ["beta"]}]},
        }
    )
    got = findings(d)
    assert [(Path(f.file).stem, f.severity, f.message) for f in got] == [
        (
            "alpha",
            Severity.WARNING,
            "'x.example' declares shared_with beta, but app beta does not list it",
        ),
        ("beta", Severity.WARNING, "'beta.example': shared_with names its own app"),
    ]
    assert exit_status(got) == 0 and exit_status(got, strict=True) == 1


def test_primary_tag_one_app_per_shared_name(catalogue_dir: CatalogueDirFactory) -> None:
    shared = {"domain": "x.example", "tags": ["primary"]}
    d = catalogue_dir(
        {
            "alpha": {"domains": [{**shared, "shared_with": ["beta"]}]},
            "beta": {"domains": [{**shared, "shared_with": ["alpha"]}]},
            "gamma": {"domains": [{"domain": "gamma.example", "tags": ["primary"]}]},
        }
    )
    got = [(Path(f.file).stem, f.severity, f.message) for f in findings(d)]
    assert got == [
        (
            "beta",
            Severity.ERROR,
            "'x.example' is tagged primary by apps alpha, beta: at most one may be",
        ),
        (
            "gamma",
            Severity.WARNING,
            "'gamma.example' is tagged primary but no other app claims it: it has no effect",
        ),
    ]


def test_pattern_parents_and_labels(catalogue_dir: CatalogueDirFactory) -> None:
    def pat(parent: str, label: str) -> dict[str, str]:
        return {"parent": parent, "label": label, "source": "t", "confidence": "low"}

    d = catalogue_dir(
        one_app(
            [{"domain": "demo.example"}],
            patterns=[pat("qq.com", "wx#"), pat("co.uk", "a*"), pat("demo.example", "*")],
        )
    )
    got = [(f.severity, f.message) for f in findings(d) if f.severity is not Severity.NOTE]
    assert got == [
        (
            Severity.ERROR,
            "pattern parent: 'co.uk' is a bare public suffix: it would match every name under it",
        ),
        (
            Severity.WARNING,
            "pattern '*' under 'demo.example' has no fixed character: it matches every label "
            "there (a suffix rule on the parent says so more plainly)",
        ),
    ]


def test_carve_out_without_effect(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(
        one_app(
            [{"domain": "demo.example"}],
            carve_outs=[
                {"domain": "news.demo.example", "source": "t", "reason": "news"},
                {"domain": "elsewhere.example", "source": "t", "reason": "not under any rule"},
            ],
        )
    )
    got = findings(d)
    assert [(f.severity, f.line) for f in got] == [
        (Severity.WARNING, line_of(d / "demo.yaml", "elsewhere.example"))
    ]
    assert "has no effect" in got[0].message


def test_covered_entry_is_a_note(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(one_app([{"domain": "demo.example"}, {"domain": "api.demo.example"}]))
    got = findings(d)
    assert [(f.severity, f.line) for f in got] == [
        (Severity.NOTE, line_of(d / "demo.yaml", "api.demo.example"))
    ]
    assert "already covered by the suffix rule 'demo.example'" in got[0].message


def test_undefined_regime(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(
        one_app([{"domain": "demo.example"}], regimes=["test-order", "no-such-order"])
    )
    errors = findings(d, Severity.ERROR)
    assert len(errors) == 1 and errors[0].file == str(d / "demo.yaml")
    assert "'no-such-order' is not defined" in errors[0].message


def test_regime_and_app_disagree(catalogue_dir: CatalogueDirFactory) -> None:
    regimes = [
        {"id": "order-a", "title": "A", "signed": "2024-01-01", "apps": ["demo"]},
        {"id": "order-b", "title": "B", "signed": "2024-01-01", "apps": []},
    ]
    d = catalogue_dir(one_app([{"domain": "demo.example"}], regimes=["order-b"]), regimes)
    errors = findings(d, Severity.ERROR)
    app_file, reg_file = d / "demo.yaml", d / "regimes.yaml"
    assert [(e.file, e.line) for e in errors] == [
        (str(app_file), line_of(app_file, "regimes:")),
        (str(reg_file), line_of(reg_file, "id: order-a")),
    ]
    assert "names regime order-b, but" in errors[0].message
    assert "regime order-a lists app demo, but" in errors[1].message


def test_regime_dates_against_today(catalogue_dir: CatalogueDirFactory) -> None:
    regimes = [
        {
            "id": "order-a",
            "title": "A",
            "signed": "2027-01-01",
            "effective": "2027-02-01",
            "apps": ["demo"],
            "revoked_by": "order-z",
        },
    ]
    d = catalogue_dir(one_app([{"domain": "demo.example"}], regimes=["order-a"]), regimes)
    got = findings(d)
    line = line_of(d / "regimes.yaml", "id: order-a")
    assert [(f.severity, f.line) for f in got] == [
        (Severity.NOTE, line),
        (Severity.WARNING, line),
        (Severity.WARNING, line),
    ]
    messages = " | ".join(f.message for f in got)
    assert (
        "not yet effective" in messages
        and "in the future" in messages
        and "'order-z' is not a defined regime" in messages
    )
    # checked later, the dates are in the past: only the dangling revoked_by remains
    later = check_dirs([d], today=date(2027, 3, 1))
    assert [f.message for f in later] == [
        "regime order-a: revoked_by 'order-z' is not a defined regime"
    ]


def test_app_without_regime_is_a_note(catalogue_dir: CatalogueDirFactory) -> None:
    d = catalogue_dir(one_app([{"domain": "demo.example"}], regimes=[]))
    got = findings(d)
    assert [(f.severity, f.message) for f in got] == [
        (Severity.NOTE, "app demo is designated by no regime")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "id: demo\nname: Demo\ncategory: other\ndomains:\n  - domain: demo.example\n    source: t\n",
            "confidence is required",
        ),
        ("id: demo\nname: Demo\ncategory: other\ndomains: [\n", "YAML syntax error"),
        ("id: demo\nname: Demo\ncategory: weird\n", "category 'weird'"),
    ],
)
def test_schema_errors(catalogue_dir: CatalogueDirFactory, text: str, message: str) -> None:
    d = catalogue_dir({}, [], files={"demo.yaml": text})
    errors = findings(d, Severity.ERROR)
    assert errors and all(e.file == str(d / "demo.yaml") and e.line >= 1 for e in errors)
    assert any(message in e.message for e in errors)
    assert exit_status(errors) == 1


def test_missing_directory(tmp_path: Path) -> None:
    got = findings(tmp_path / "nope")
    assert [(f.severity, f.line, f.message) for f in got] == [
        (Severity.ERROR, 0, "catalogue directory not found")
    ]


def test_finding_is_a_problem() -> None:
    f = Finding("a.yaml", 3, "boom", Severity.WARNING)
    assert isinstance(f, Problem)
    assert str(f) == "a.yaml:3: warning: boom"
    assert str(Finding("a.yaml", 3, "boom")) == "a.yaml:3: error: boom"


def test_exit_status() -> None:
    note = Finding("f", 1, "n", Severity.NOTE)
    warning = Finding("f", 1, "w", Severity.WARNING)
    error = Finding("f", 1, "e", Severity.ERROR)
    assert [exit_status(x) for x in ([], [note], [warning], [error])] == [0, 0, 0, 1]
    assert [exit_status(x, strict=True) for x in ([], [note], [warning], [error])] == [0, 0, 1, 1]


def test_shipped_catalogue_has_no_errors() -> None:
    got = check_dirs([bundled_dir()])
    assert [str(f) for f in got if f.severity is Severity.ERROR] == []
