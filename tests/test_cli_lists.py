"""Tests for ``egresswatch lists check | import | show`` through egresswatch.cli.main."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.cli import main
from egresswatch.lint import Severity
from egresswatch.lint import check_dirs

from tests.plugins.catalogue import SAMPLE_TODAY
from tests.plugins.catalogue import CatalogueDirFactory

DATA = Path(__file__).parent / "data" / "import"
TODAY = SAMPLE_TODAY.isoformat()


# --- check ---------------------------------------------------------------------------------------


def test_check_clean(sample_catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lists", "check", "--today", TODAY, str(sample_catalogue)]) == 0
    out, err = capsys.readouterr()
    assert "error" not in out
    assert "0 error(s), 0 warning(s)" in err


def test_check_reports_file_line(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d = catalogue_dir({"demo": {"domains": [{"domain": "demo.example"}, {"domain": "co.uk"}]}})
    assert main(["lists", "check", str(d)]) == 1
    out, err = capsys.readouterr()
    line = next(
        i
        for i, t in enumerate((d / "demo.yaml").read_text().splitlines(), 1)
        if "domain: co.uk" in t
    )
    assert out.splitlines() == [
        f"{d / 'demo.yaml'}:{line}: error: 'co.uk' is a bare public suffix: it would match every name under it"
    ]
    assert "1 error(s)" in err


def test_check_strict_and_quiet(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d = catalogue_dir(
        {
            "demo": {
                "domains": [{"domain": "Demo.Example"}],
                "carve_outs": [{"domain": "x.other.example", "source": "t", "reason": "r"}],
            }
        }
    )
    assert main(["lists", "check", str(d)]) == 0
    out, _ = capsys.readouterr()
    assert [line.split(": ")[1] for line in out.splitlines()] == ["note", "warning"]
    assert main(["lists", "check", "--strict", "-q", str(d)]) == 1
    out, _ = capsys.readouterr()
    assert [line.split(": ")[1] for line in out.splitlines()] == ["warning"]


def test_check_several_dirs_and_with_bundled(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    user = catalogue_dir(
        {"extra": {"extends": "tiktok", "domains": [{"domain": "my-tiktok-mirror.example"}]}}, []
    )
    # alone, the extends target is missing; merged after the bundled catalogue it is fine
    assert main(["lists", "check", str(user)]) == 1
    out, err = capsys.readouterr()
    assert "extends 'tiktok': no such app" in out and "--with-bundled" in err
    assert main(["lists", "check", "-q", "--with-bundled", str(user)]) == 0
    assert main(["lists", "check", "-q", str(bundled_dir()), str(user)]) == 0
    # naming the bundled directory as well as --with-bundled does not load it twice
    assert main(["lists", "check", "-q", "--with-bundled", str(bundled_dir()), str(user)]) == 0


def test_check_defaults_to_bundled(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lists", "check", "-q"]) == 0
    _, err = capsys.readouterr()
    assert str(bundled_dir()) in err


def test_check_bad_date_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["lists", "check", "--today", "soon"])
    assert e.value.code == 2
    assert "is not a date" in capsys.readouterr().err


# --- import --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name", "domains", "dropped"),
    [
        (
            "hosts",
            "hosts.txt",
            [
                "ads.demo.example",
                "tracker.demo.example",
                "api.demo.example",
                "xn--bcher-kva.demo.example",
            ],
            [("hosts.txt", 12, "'com' is a TLD")],
        ),
        (
            "adblock",
            "adblock.txt",
            [
                "demo.example",
                "cdn.demo-static.example",
                "exact.demo.example",
                "tracker.demo.example",
            ],
            [("adblock.txt", 14, "'akamaized.net' is shared infrastructure")],
        ),
        (
            "plain",
            "plain.txt",
            ["demo.example", "wild.demo.example", "dot.demo.example", "mixed.demo.example"],
            [],
        ),
        (
            "v2fly",
            "v2fly/demo",
            [
                "demo-static.example",
                "img.demo-static.example",
                "ads.demo.example",
                "pixel.demo.example",
                "demo.example",
                "demo-app.example",
                "login.demo.example",
            ],
            [],
        ),
        (
            "adguard",
            "adguard.yml",
            ["demo.example", "demo-api.example", "exact.demo-api.example"],
            [],
        ),
    ],
)
def test_import_each_format_loads_and_checks(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    name: str,
    domains: list[str],
    dropped: list[tuple[str, int, str]],
) -> None:
    out_dir = tmp_path / "user"
    out_dir.mkdir()
    target = out_dir / "demo.yaml"
    src = DATA / name
    assert (
        main(["lists", "import", "--format", fmt, "--app", "demo", "-o", str(target), str(src)])
        == 0
    )
    err = capsys.readouterr().err
    for origin, line, reason in dropped:
        assert f"{DATA / origin}:{line}: skipped" in err and reason in err
    cat = load_catalogue([out_dir])
    rules = cat.apps["demo"].rules
    assert [r.domain for r in rules] == domains
    # provenance: every entry cites the input file and line it came from
    for r in rules:
        file, _, lineno = r.source.rpartition(":")
        assert Path(file).is_file() and lineno.isdigit()
    assert [f for f in check_dirs([out_dir]) if f.severity is not Severity.NOTE] == []
    assert main(["lists", "check", str(out_dir)]) == 0


def test_import_adguard_uses_its_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["lists", "import", "--format", "adguard", "--app", "demo", str(DATA / "adguard.yml")])
        == 0
    )
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["name"] == "Demo Service"


def test_import_options(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "lists", "import", "--format", "plain", "--app", "demo", "--name", "Demo App",
        "--source", "example-lists:plain.txt@abc123", "--confidence", "low", "--match", "exact",
        "--tag", "imported", str(DATA / "plain.txt"),
    ]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# Generated by egresswatch lists import --format plain --app demo")
    assert f"{DATA / 'plain.txt'}:7: skipped 'two fields.example'" in out  # quoted in the header
    doc = yaml.safe_load(out)
    assert doc["name"] == "Demo App"
    assert {
        (d["match"], d["source"], d["confidence"], tuple(d["tags"])) for d in doc["domains"]
    } == {("exact", "example-lists:plain.txt@abc123", "low", ("imported",))}
    assert "4 name(s) imported, 4 line(s) skipped" in err


def test_import_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("0.0.0.0 a.example\n0.0.0.0 b..example\n"))
    assert main(["lists", "import", "--format", "hosts", "--app", "demo", "-"]) == 0
    out, err = capsys.readouterr()
    assert [d["source"] for d in yaml.safe_load(out)["domains"]] == ["<stdin>:1"]
    assert "<stdin>:2: skipped 'b..example': name has an empty label" in err


def test_import_stdin_not_utf8(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"0.0.0.0 a.example\n\xff\xfe\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["lists", "import", "--format", "hosts", "--app", "x", "-"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "egresswatch: <stdin>: not UTF-8 text" in err


def test_import_extends(catalogue_dir: CatalogueDirFactory, tmp_path: Path) -> None:
    base = catalogue_dir({"demo": {"domains": [{"domain": "base.example"}]}})
    user = tmp_path / "user"
    user.mkdir()
    target = user / "demo-imported.yaml"
    assert (
        main(
            [
                "lists",
                "import",
                "--format",
                "v2fly",
                "--app",
                "demo",
                "--extends",
                "-o",
                str(target),
                str(DATA / "v2fly" / "loop-a"),
            ]
        )
        == 0
    )
    assert yaml.safe_load(target.read_text())["extends"] == "demo"
    cat = load_catalogue([base, user])
    assert [r.domain for r in cat.apps["demo"].rules] == [
        "base.example",
        "loop-a.example",
        "loop-b.example",
    ]
    assert main(["lists", "check", "-q", str(base), str(user)]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "plain", "--app", "demo", "https://example.com/list.txt"], "never fetches"),
        (["--format", "plain", "--app", "demo", "/nonexistent/list.txt"], "cannot read"),
        (["--format", "plain", "--app", "Bad Id", str(DATA / "plain.txt")], "app id"),
        (["--format", "adguard", "--app", "demo", str(DATA / "plain.txt")], "not valid YAML"),
        (["--format", "hosts", "--app", "demo", str(DATA / "adblock.txt")], "nothing to import"),
    ],
)
def test_import_failures(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lists", "import", *argv]) == 1
    assert message in capsys.readouterr().err


def test_import_warns_about_file_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "other.yaml"
    assert (
        main(
            [
                "lists",
                "import",
                "--format",
                "plain",
                "--app",
                "demo",
                "-o",
                str(target),
                str(DATA / "plain.txt"),
            ]
        )
        == 0
    )
    assert "must be named demo.yaml" in capsys.readouterr().err
    assert target.is_file()


def test_import_help_says_no_urls(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["lists", "import", "--help"])
    assert "never fetched" in capsys.readouterr().out.replace("\n", " ")


# --- show ----------------------------------------------------------------------------------------


def test_show_json(sample_catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "lists",
                "show",
                "--no-bundled",
                "--lists",
                str(sample_catalogue),
                "--today",
                TODAY,
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    apps = {a["id"]: a for a in data["apps"]}
    assert apps["alpha"]["counts"] == {"suffix": 2, "exact": 1, "cidr": 1, "carve_outs": 1}
    assert apps["alpha"]["regimes"] == [
        {"id": "test-order", "status": "in_force"},
        {"id": "old-order", "status": "revoked"},
    ]
    assert apps["beta"]["regimes"][1] == {"id": "future-order", "status": "not_yet_effective"}
    assert {r["id"]: r["status"] for r in data["regimes"]} == {
        "future-order": "not_yet_effective",
        "old-order": "revoked",
        "test-order": "in_force",
    }
    assert data["today"] == TODAY


def test_show_text(sample_catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["lists", "show", "--no-bundled", "--lists", str(sample_catalogue), "--today", TODAY])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    alpha = next(line for line in lines if line.startswith("alpha "))
    # names (2 suffix + 1 exact), ranges, sources ("tests" and "test"), no dated evidence
    assert alpha.split()[:8] == ["alpha", "Alpha", "Chat", "other", "3", "1", "2", "unknown"]
    assert "test-order (in force), old-order (revoked)" in alpha
    assert any(line.startswith("future-order") and "not yet effective" in line for line in lines)


def test_show_bundled_with_user_dir(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    user = catalogue_dir(
        {"mine": {"extends": "tiktok", "domains": [{"domain": "mirror.example"}]}}, []
    )
    assert main(["lists", "show", "--json"]) == 0
    before = {a["id"]: a["counts"]["suffix"] for a in json.loads(capsys.readouterr().out)["apps"]}
    assert main(["lists", "show", "--json", "--lists", str(user)]) == 0
    after = {a["id"]: a["counts"]["suffix"] for a in json.loads(capsys.readouterr().out)["apps"]}
    assert after["tiktok"] == before["tiktok"] + 1


def test_show_broken_catalogue(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d = catalogue_dir({}, [], files={"demo.yaml": "id: demo\nname: [\n"})
    assert main(["lists", "show", "--no-bundled", "--lists", str(d)]) == 1
    err = capsys.readouterr().err
    assert f"{d / 'demo.yaml'}:" in err and "problem(s)" in err


# --- the installed console script ------------------------------------------------------------------


def test_console_script(catalogue_dir: CatalogueDirFactory) -> None:
    script = Path(sys.executable).parent / "egresswatch"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    d = catalogue_dir({"demo": {"domains": [{"domain": "demo.example"}, {"domain": "com"}]}})
    proc = subprocess.run(
        [str(script), "lists", "check", str(d)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{d / 'demo.yaml'}:") and "'com' is a TLD" in proc.stdout
    ok = subprocess.run(
        [str(script), "lists", "check", "-q"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
