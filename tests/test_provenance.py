"""Sources and newest evidence read from provenance strings, and ``lists show`` reporting them."""

from __future__ import annotations

import json
from datetime import date

import pytest
from egresswatch.catalogue import load_catalogue
from egresswatch.cli import main
from egresswatch.provenance import app_evidence
from egresswatch.provenance import evidence_dates
from egresswatch.provenance import source_keys

from tests.plugins.catalogue import CatalogueDirFactory

TODAY = date(2026, 12, 8)


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        (
            "v2fly/domain-list-community:data/tiktok@c975ccef9c19",
            ["v2fly/domain-list-community:data/tiktok@c975ccef9c19"],
        ),
        ("a/b:x@1; c/d:y@2;", ["a/b:x@1", "c/d:y@2"]),
        (
            "https://e.example/l.txt (retrieved 2026-12-01, sha256 ab12)",
            ["https://e.example/l.txt"],
        ),
        ("lists/demo.txt:12", ["lists/demo.txt"]),
        ("https://e.example:8443/l.txt", ["https://e.example:8443/l.txt"]),
        ("vendor allow-list page (2024)", ["vendor allow-list page"]),
        (" ; ", []),
    ],
)
def test_source_keys(text: str, keys: list[str]) -> None:
    assert source_keys(text) == keys


@pytest.mark.parametrize(
    ("text", "dates"),
    [
        ("https://e.example/l (retrieved 2026-12-01)", [date(2026, 12, 1)]),
        (
            "date: 2025-03-04; https://e.example/2024-01-02/ips.json",
            [date(2024, 1, 2), date(2025, 3, 4)],
        ),
        ("https://blog.example/2023/07/15/firewall.html", [date(2023, 7, 15)]),
        ("https://blog.example/2023/07/15", [date(2023, 7, 15)]),
        ("retrieved 2025-02-30", []),  # not a calendar date
        ("retrieved 2027-01-01", []),  # after the reference day
        ("v2fly/dlc:data/x@c975ccef9c19", []),  # a commit carries no date offline
        ("id 12026-01-011", []),  # digits around it: not a date
        ("sha256 2026-12-01x", [date(2026, 12, 1)]),
        ("https://e.example/2023/13/01/x", []),
    ],
)
def test_evidence_dates(text: str, dates: list[date]) -> None:
    assert evidence_dates(text, TODAY) == dates


def test_app_evidence_counts_names_lists_ranges_and_newest_date(
    catalogue_dir: CatalogueDirFactory,
) -> None:
    d = catalogue_dir(
        {
            "demo": {
                "domains": [
                    {
                        "domain": "a.demo.example",
                        "source": "https://e.example/a (retrieved 2026-11-30)",
                    },
                    {
                        "domain": "b.demo.example",
                        "source": "https://e.example/a (retrieved 2026-12-02)",
                    },
                    {"domain": "c.demo.example", "source": "o/r:p@abc; https://e.example/b"},
                ],
                "lists": [
                    {
                        "file": "bulk.txt",
                        "source": "bulk vendor list 2026-10-01",
                        "confidence": "low",
                        "match": "exact",
                    }
                ],
                "cidrs": [
                    {
                        "cidr": "198.51.100.0/24",
                        "source": "https://ranges.example/2026/12/09/r.json",
                        "confidence": "high",
                    }
                ],
            },
            "bare": {"domains": [{"domain": "bare.example", "source": "o/r:p@abc"}]},
        },
        files={"bulk.txt": "x1.demo.example\nx2.demo.example\n"},
    )
    cat = load_catalogue([d])
    e = app_evidence(cat.apps["demo"], TODAY)
    assert (e.names, e.ranges) == (5, 1)
    assert e.sources == (
        "bulk vendor list 2026-10-01",
        "https://e.example/a",
        "https://e.example/b",
        "https://ranges.example/2026/12/09/r.json",
        "o/r:p@abc",
    )
    # 2026-12-09 (the range's URL) is after the reference day and does not count
    assert (e.newest, e.age_days) == (date(2026, 12, 2), 6)
    bare = app_evidence(cat.apps["bare"], TODAY)
    assert (bare.names, bare.ranges, bare.sources, bare.newest, bare.age_days) == (
        1,
        0,
        ("o/r:p@abc",),
        None,
        None,
    )


def test_show_reports_evidence_in_text_and_json(
    catalogue_dir: CatalogueDirFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d = catalogue_dir(
        {
            "demo": {
                "domains": [
                    {
                        "domain": "a.demo.example",
                        "source": "https://e.example/a (retrieved 2026-11-28)",
                    },
                    {"domain": "b.demo.example", "source": "o/r:p@abc"},
                ],
                "cidrs": [
                    {
                        "cidr": "198.51.100.0/24",
                        "source": "https://e.example/a (retrieved 2026-11-28)",
                        "confidence": "high",
                    }
                ],
            },
            "bare": {"domains": [{"domain": "bare.example", "source": "o/r:p@abc"}]},
        }
    )
    base = ["lists", "show", "--no-bundled", "--lists", str(d), "--today", TODAY.isoformat()]
    assert main(base) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[3:8] == ["NAMES", "RANGES", "SOURCES", "NEWEST", "EVIDENCE"]
    demo = next(line for line in lines if line.startswith("demo "))
    assert demo.split()[3:8] == ["2", "1", "2", "2026-11-28", "(10"]
    bare = next(line for line in lines if line.startswith("bare "))
    assert bare.split()[3:7] == ["1", "0", "1", "unknown"]
    assert main([*base, "--json"]) == 0
    apps = {a["id"]: a for a in json.loads(capsys.readouterr().out)["apps"]}
    assert {
        k: apps["demo"][k]
        for k in ("names", "ranges", "sources", "newest_evidence", "evidence_age_days")
    } == {
        "names": 2,
        "ranges": 1,
        "sources": ["https://e.example/a", "o/r:p@abc"],
        "newest_evidence": "2026-11-28",
        "evidence_age_days": 10,
    }
    assert (apps["bare"]["newest_evidence"], apps["bare"]["evidence_age_days"]) == (None, None)
