"""The Alt-Svc parser and the HTTP/3 stripping (egresswatch.altsvc): RFC 7838 cases and hostile
fields."""

from __future__ import annotations

import time

import pytest
from egresswatch.altsvc import MAX_ALTERNATIVES
from egresswatch.altsvc import MAX_FIELD
from egresswatch.altsvc import examine
from egresswatch.altsvc import is_quic
from egresswatch.altsvc import parse
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st


def test_parse_alternatives_authorities_and_parameters() -> None:
    got = parse('h3=":443"; ma=86400, h2="alt.example.com:8443"; ma="60"; persist=1')
    assert got.malformed is None and not got.clear
    first, second = got.alternatives
    assert (first.protocol, first.authority, first.params) == ("h3", ":443", (("ma", "86400"),))
    assert second.protocol == "h2" and second.authority == "alt.example.com:8443"
    assert second.params == (("ma", "60"), ("persist", "1"))


def test_quoted_authority_may_hold_commas_semicolons_and_escapes() -> None:
    # a comma or semicolon inside the quotes does not split; \" is an escaped quote
    got = parse('h2="[2001:db8::1]:443", h3="a\\"b:443"; ma=1')
    assert [a.authority for a in got.alternatives] == ["[2001:db8::1]:443", 'a"b:443']
    assert parse('h3=";,:443"').alternatives[0].authority == ";,:443"


def test_percent_encoded_protocol_id_is_decoded() -> None:
    # RFC 7838 section 3: "h3" percent-encoded is still h3 (and is stripped)
    got = parse('%68%33=":443"')
    assert got.alternatives[0].protocol == "h3" and got.alternatives[0].quic
    assert parse('h%3=":443"').malformed is not None


def test_clear_and_empty_list_elements() -> None:
    assert parse("clear").clear
    assert parse(" clear ").clear
    assert [a.protocol for a in parse(', ,h2=":443",,').alternatives] == ["h2"]
    assert parse(" , ").malformed == "empty"


@pytest.mark.parametrize(
    "field",
    [
        "h3",  # no authority
        "h3=:443",  # unquoted authority
        'h3=":443',  # unterminated quote
        'h3="example.com"',  # no port
        'h3=":0"',  # port out of range
        'h3=":65536"',
        'h3=":443"; ma',  # parameter without a value
        'h3=":443"; ma="1',  # unterminated quoted parameter
        'h3=":443"; m a=1',
        'h 3=":443"',
        'h3=":443" junk',
        'clear, h2=":443"',  # clear must stand alone
        '"h3"=":443"',
    ],
)
def test_malformed_fields(field: str) -> None:
    assert parse(field).malformed is not None


@pytest.mark.parametrize(
    ("protocol", "quic"),
    [("h3", True), ("H3", True), ("h3-29", True), ("h3-Q050", True), ("quic", True),
     ("h2", False), ("http/1.1", False), ("h3x", False), ("h", False), ("", False)],
)  # fmt: skip
def test_is_quic(protocol: str, quic: bool) -> None:
    assert is_quic(protocol) is quic


def test_strip_keeps_others_verbatim() -> None:
    got = examine(['h3=":443"; ma=86400, h2=":443"; ma=86400, h3-29=":443"'])
    assert got.quic == ("h3", "h3-29")
    assert got.kept == ('h2=":443"; ma=86400',)
    assert got.changed and not got.malformed


def test_strip_drops_a_field_left_empty_and_keeps_other_fields() -> None:
    got = examine(['h3=":443"; ma=60', 'h2="alt.example:443"', "clear"])
    assert got.quic == ("h3",)
    assert got.kept == ('h2="alt.example:443"', "clear")
    only = examine(['h3=":443", quic=":443"; v="46,43"'])
    assert only.kept == () and only.quic == ("h3", "quic") and only.changed


def test_no_quic_means_unchanged() -> None:
    fields = ['h2=":443"; ma=3600', "clear"]
    got = examine(fields)
    assert got.kept == tuple(fields) and not got.changed and got.quic == ()


def test_malformed_field_naming_h3_is_dropped_and_counted() -> None:
    got = examine(['h3=:443, h2=":443"', 'h2=":8443"'])
    assert got.malformed and got.changed
    assert got.quic == ("malformed",)
    assert got.kept == ('h2=":8443"',)
    # a malformed field that names no QUIC protocol is left alone
    plain = examine(["h2=:443"])
    assert plain.malformed and not plain.changed and plain.kept == ("h2=:443",)


def test_huge_field_is_malformed_and_cheap() -> None:
    huge = 'h2=":443", ' * 100_000 + 'h3=":443"'
    assert len(huge) > MAX_FIELD
    t0 = time.perf_counter()
    got = examine([huge])
    assert time.perf_counter() - t0 < 0.5
    assert parse(huge).malformed == f"longer than {MAX_FIELD} characters"
    assert got.kept == () and got.quic == ("malformed",)


def test_too_many_alternatives() -> None:
    many = ", ".join(f'h2=":{1000 + i}"' for i in range(MAX_ALTERNATIVES + 1))
    assert len(many) <= MAX_FIELD
    assert parse(many).malformed == f"more than {MAX_ALTERNATIVES} alternatives"
    ok = ", ".join(f'h2=":{1000 + i}"' for i in range(MAX_ALTERNATIVES))
    assert len(parse(ok).alternatives) == MAX_ALTERNATIVES


def test_reported_quic_ids_are_bounded() -> None:
    many = ", ".join(f'h3-{i}=":443"' for i in range(40))
    got = examine([many, "h3-" + "x" * 200 + '=":443"'])
    assert len(got.quic) == 8 and got.kept == ()
    long_id = examine(["h3-" + "x" * 200 + '=":443"']).quic[0]
    assert len(long_id) == 32


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet='h23q=":;, \\%6aeclr-mx0\t', max_size=60), max_size=4))
def test_examine_never_raises_and_never_keeps_quic(fields: list[str]) -> None:
    got = examine(fields)
    for kept in got.kept:
        parsed = parse(kept)
        # what is sent on never advertises QUIC to a client that parses it
        assert not any(a.quic for a in parsed.alternatives)
    if not got.changed:
        assert got.kept == tuple(fields)
