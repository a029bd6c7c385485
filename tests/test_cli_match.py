"""Tests for ``egresswatch match``: the explanation of each decision, as text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from egresswatch.cli import main

from tests.plugins.catalogue import SAMPLE_TODAY
from tests.plugins.catalogue import CatalogueDirFactory

TODAY = SAMPLE_TODAY.isoformat()


def line_of(path: Path, text: str) -> int:
    return next(
        i for i, t in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in t
    )


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> list[dict[str, Any]]:
    assert main(["match", "--json", *argv]) == code
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def sample_args(d: Path) -> list[str]:
    return ["--no-bundled", "--lists", str(d), "--today", TODAY]


@pytest.mark.parametrize(
    ("host", "normalised", "app", "apps", "domain", "match", "needle"),
    [
        (
            "alpha.example",
            "alpha.example",
            "alpha",
            ["alpha"],
            "alpha.example",
            "suffix",
            "domain: alpha.example",
        ),
        (
            "WWW.Alpha.Example.:443",
            "www.alpha.example",
            "alpha",
            ["alpha"],
            "alpha.example",
            "suffix",
            "domain: alpha.example",
        ),
        (
            "api.alpha.example",
            "api.alpha.example",
            "alpha",
            ["alpha"],
            "api.alpha.example",
            "exact",
            "api.alpha.example",
        ),
        # the longest suffix decides: beta's pay.alpha.example beats alpha's alpha.example
        (
            "x.pay.alpha.example",
            "x.pay.alpha.example",
            "beta",
            ["beta"],
            "pay.alpha.example",
            "suffix",
            "pay.alpha.example",
        ),
        (
            "cdn.shared.example",
            "cdn.shared.example",
            "alpha",
            ["alpha", "beta"],
            "shared.example",
            "suffix",
            "shared.example",
        ),
        ("192.0.2.55", "192.0.2.55", "alpha", ["alpha"], "192.0.2.0/24", "cidr", "192.0.2.0/24"),
    ],
)
def test_json_match(
    sample_catalogue: Path,
    capsys: pytest.CaptureFixture[str],
    host: str,
    normalised: str,
    app: str,
    apps: list[str],
    domain: str,
    match: str,
    needle: str,
) -> None:
    [d] = run_json(capsys, *sample_args(sample_catalogue), host)
    assert (d["input"], d["host"], d["valid"], d["app"], d["apps"]) == (
        host,
        normalised,
        True,
        app,
        apps,
    )
    rule = d["rule"]
    app_file = sample_catalogue / f"{app}.yaml"
    assert rule["domain"] == domain and rule["match"] == match
    assert (rule["file"], rule["line"]) == (str(app_file), line_of(app_file, needle))
    assert rule["source"] and rule["confidence"] in ("high", "medium", "low")
    assert isinstance(rule["tags"], list)
    assert d["carved_out_by"] is None


def test_json_regimes_with_status(
    sample_catalogue: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [a, b, s] = run_json(
        capsys, *sample_args(sample_catalogue), "alpha.example", "beta.example", "shared.example"
    )
    assert a["regimes"] == [
        {"id": "test-order", "status": "in_force"},
        {"id": "old-order", "status": "revoked"},
    ]
    assert b["regimes"] == [
        {"id": "test-order", "status": "in_force"},
        {"id": "future-order", "status": "not_yet_effective"},
    ]
    # a shared name carries the regimes of every app that claims it
    assert {r["id"] for r in s["regimes"]} == {"test-order", "old-order", "future-order"}
    later = run_json(
        capsys,
        "--no-bundled",
        "--lists",
        str(sample_catalogue),
        "--today",
        "2027-06-01",
        "beta.example",
    )
    assert later[0]["regimes"][1] == {"id": "future-order", "status": "in_force"}


def test_json_no_match_and_invalid(
    sample_catalogue: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = ["notalpha.example", "news.alpha.example", "a..b", "x" * 300]
    # an invalid host: exit 3, every host still explained
    nomatch, carved, invalid, long = run_json(
        capsys, *sample_args(sample_catalogue), *hosts, code=3
    )
    assert nomatch == {
        "input": "notalpha.example",
        "host": "notalpha.example",
        "valid": True,
        "app": None,
        "apps": [],
        "rule": None,
        "regimes": [],
        "carved_out_by": None,
    }
    assert carved["app"] is None
    assert carved["carved_out_by"]["domain"] == "news.alpha.example"
    assert carved["carved_out_by"]["app"] == "alpha"
    assert carved["carved_out_by"]["line"] == line_of(
        sample_catalogue / "alpha.yaml", "news.alpha.example"
    )
    assert (invalid["host"], invalid["valid"], invalid["app"], invalid["rule"]) == (
        "a..b",
        False,
        None,
        None,
    )
    assert invalid["error"] == "name has an empty label"
    assert long["valid"] is False and "characters long" in long["error"]


def test_text_output(sample_catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "match",
                *sample_args(sample_catalogue),
                "Shared.Example.",
                "nothing.example",
                "news.alpha.example",
                "a..b",
            ]
        )
        == 3  # a..b is not a valid hostname
    )
    out = capsys.readouterr().out.splitlines()
    alpha_file = sample_catalogue / "alpha.yaml"
    assert out[0] == "Shared.Example. -> shared.example: alpha (Alpha Chat)"
    assert out[1] == "  shared by:  alpha, beta"
    assert (
        out[2]
        == f"  rule:       shared.example (suffix) at {alpha_file}:{line_of(alpha_file, 'shared.example')}"
    )
    assert out[3] == "  source:     tests"
    assert out[4] == "  confidence: high"
    assert (
        out[5]
        == "  regimes:    test-order (in force), old-order (revoked 2021-06-09), future-order (not yet effective, effective 2027-01-01)"
    )
    assert out[6] == "nothing.example: no match"
    assert out[7].startswith(
        "news.alpha.example: no match (carved out of alpha by news.alpha.example at "
    )
    assert out[8] == "a..b: invalid hostname (name has an empty label)"


def test_broken_catalogue_exits_1(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d = catalogue_dir({"demo": {"domains": [{"domain": "demo.example", "confidence": "certain"}]}})
    assert main(["match", "--no-bundled", "--lists", str(d), "demo.example"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{d / 'demo.yaml'}:" in err and "confidence 'certain'" in err


@pytest.mark.parametrize(
    ("host", "app"),
    [
        ("Pay.Weixin.QQ.com.", "wechat-pay"),
        ("www.tiktok.com", "tiktok"),
        ("chat.deepseek.com", "deepseek"),
        ("notalipay.com", None),
    ],
)
def test_bundled_catalogue(host: str, app: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    [d] = run_json(capsys, host)
    assert d["app"] == app
    if app is not None:
        assert Path(d["rule"]["file"]).is_file() and d["regimes"]


def test_user_dir_after_bundled(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    user = catalogue_dir(
        {"mine": {"extends": "tiktok", "domains": [{"domain": "mirror.example"}]}}, []
    )
    [d] = run_json(capsys, "--lists", str(user), "a.mirror.example")
    assert d["app"] == "tiktok" and d["rule"]["file"] == str(user / "mine.yaml")


def test_valid_names_exit_0_whether_matched_or_not(
    sample_catalogue: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["match", *sample_args(sample_catalogue)]
    assert main([*argv, "beta.example", "nothing.example"]) == 0
    assert main([*argv, "nothing.example", "a..b"]) == 3
    assert main([*argv, "--json", "bad host"]) == 3
    out = capsys.readouterr().out
    assert out.count("nothing.example: no match") == 2


def test_needs_a_host(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["match"])
    assert e.value.code == 2


def test_console_script(sample_catalogue: Path) -> None:
    script = Path(sys.executable).parent / "egresswatch"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run(
        [
            str(script),
            "match",
            "--json",
            *sample_args(sample_catalogue),
            "beta.example",
            "bad host",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr  # "bad host" is not a valid hostname
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["app"] == "beta" and second["valid"] is False
