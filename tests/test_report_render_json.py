"""Tests of ``egresswatch.report.render_json``: the JSON rendering."""

from __future__ import annotations


def test_json_has_every_section(json_of_july: dict) -> None:  # type: ignore[type-arg]
    assert set(json_of_july) >= {
        "totals",
        "coverage",
        "catalogues",
        "policies",
        "exceptions",
        "by_regime",
        "by_department",
        "top_clients",
        "top_hosts",
        "daily",
        "regimes",
        "integrity",
        "method",
    }
    assert {
        "DNS over HTTPS / DNS over TLS",
        "Certificate pinning",
        "Apps installed but not used",
    } <= {b["name"] for b in json_of_july["method"]["blind_spots"]}
    assert any("14034" in t for t in json_of_july["method"]["legal"])
