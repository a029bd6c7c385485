"""The ``ranges-json`` reader: JSON paths to address prefixes in vendor range files."""

from __future__ import annotations

import json

import pytest
from egresswatch.importers import ListImportError
from egresswatch.ranges import PathStep
from egresswatch.ranges import parse_path
from egresswatch.ranges import parse_ranges_json


def test_path_syntax() -> None:
    assert parse_path("[]") == [PathStep(None, True)]
    assert parse_path("prefixes[].ip_prefix") == [
        PathStep("prefixes", True),
        PathStep("ip_prefix", False),
    ]
    assert parse_path("values[name=AzureFrontDoor.Frontend].properties.addressPrefixes[]") == [
        PathStep("values", True, ("name", "AzureFrontDoor.Frontend")),
        PathStep("properties", False),
        PathStep("addressPrefixes", True),
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "empty path"),
        ("a..b", "empty step"),
        ("a.", "ends with '.'"),
        ("a[", "not closed"),
        ("a[x]", "must be [field=value]"),
        ("a]b", "unexpected ']'"),
        ("a[]b", "expected '.'"),
    ],
)
def test_bad_paths(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_path(path)


def test_shapes_of_published_range_files() -> None:
    # a bare list of prefixes (the default path)
    r = parse_ranges_json('["192.0.2.0/24", "2001:db8::/32", "192.0.2.0/24"]')
    assert [str(n) for n in r.networks] == ["192.0.2.0/24", "2001:db8::/32"]  # first kept
    # objects with a prefix field, one service selected, IPv4 and IPv6 in separate lists
    doc = {
        "prefixes": [
            {"ip_prefix": "198.51.100.0/24", "service": "DEMO"},
            {"ip_prefix": "203.0.113.0/24", "service": "OTHER"},
        ],
        "ipv6_prefixes": [{"ipv6_prefix": "2001:db8:1::/48", "service": "DEMO"}],
    }
    r = parse_ranges_json(
        json.dumps(doc),
        ["prefixes[service=DEMO].ip_prefix", "ipv6_prefixes[service=DEMO].ipv6_prefix"],
    )
    assert [str(n) for n in r.networks] == ["198.51.100.0/24", "2001:db8:1::/48"]
    # nested groups holding lists of prefixes
    doc2 = {
        "values": [
            {
                "name": "Demo.Front",
                "properties": {"addressPrefixes": ["192.0.2.0/25", "2001:db8:2::/48"]},
            },
            {"name": "Other", "properties": {"addressPrefixes": ["192.0.2.128/25"]}},
        ]
    }
    r = parse_ranges_json(
        json.dumps(doc2), ["values[name=Demo.Front].properties.addressPrefixes[]"]
    )
    assert [str(n) for n in r.networks] == ["192.0.2.0/25", "2001:db8:2::/48"]


def test_values_that_are_not_ranges_are_skipped_with_their_place() -> None:
    doc = {
        "p": [
            {"c": "192.0.2.1"},
            {"c": "10.0.0.0/7"},
            {"c": 5},
            {"c": "not an ip"},
            {"c": "2001:db8::1/32"},
            {},
        ]
    }
    r = parse_ranges_json(json.dumps(doc), ["p[].c"])
    assert [str(n) for n in r.networks] == ["192.0.2.1/32"]  # a single address is a /32
    assert [(s.where, s.reason.split(" (")[0].split(":")[0]) for s in r.skipped] == [
        ("p[1].c", "too broad to attribute to one app"),
        ("p[2].c", "not a string"),
        ("p[3].c", "not an address range"),
        ("p[4].c", "host bits set"),
    ]


def test_path_that_matches_nothing_and_bad_json() -> None:
    assert parse_ranges_json('{"a": 1}', ["b[].c"]).networks == []
    with pytest.raises(ListImportError, match="not valid JSON"):
        parse_ranges_json("{", ["a"])
    with pytest.raises(ListImportError, match="bad JSON path 'a\\['"):
        parse_ranges_json("{}", ["a["])
