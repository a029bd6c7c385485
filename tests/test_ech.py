"""egresswatch.ech: GREASE is never an alarm; hidden names need evidence; malformed never raises."""

from __future__ import annotations

import pytest
from egresswatch.ech import classify
from egresswatch.ech import outer_extension
from egresswatch.ech import parse_extension
from hypothesis import given
from hypothesis import strategies as st

PUBLIC = {"cloudflare-ech.com"}


def test_parse_outer_fields() -> None:
    o = parse_extension(outer_extension(config_id=42, enc=b"k" * 32, payload=b"p" * 200))
    assert o is not None
    assert (o.kdf_id, o.aead_id, o.config_id, o.enc, o.payload_length) == (1, 1, 42, b"k" * 32, 200)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x01",  # inner marker: not an outer hello
        outer_extension()[:5],  # truncated header
        outer_extension()[:-1],  # payload shorter than its length
        outer_extension() + b"x",  # trailing bytes
        outer_extension(payload=b""),  # empty payload
    ],
)
def test_malformed_bodies_do_not_parse(body: bytes) -> None:
    assert parse_extension(body) is None
    assert classify("a.example", body).verdict == "malformed"


def test_grease_or_unknown_is_only_capable() -> None:
    seen = classify("www.example.org", outer_extension(), public_names=PUBLIC)
    assert (seen.verdict, seen.public_name) == ("capable", None)
    # the same name asked for and sent: nothing hidden
    assert classify("a.example", outer_extension(), asked_name="a.example").verdict == "capable"


def test_hidden_needs_evidence() -> None:
    ext = outer_extension()
    by_list = classify("cloudflare-ech.com", ext, public_names=PUBLIC)
    assert (by_list.verdict, by_list.public_name) == ("hidden", "cloudflare-ech.com")
    assert "client-facing" in by_list.reason
    by_dns = classify("ech.example.net", ext, advertised=lambda n: n == "ech.example.net")
    assert by_dns.verdict == "hidden" and "DNS advertised" in by_dns.reason
    by_target = classify("public.example.net", ext, asked_name="www.tiktok.com")
    assert by_target.verdict == "hidden" and by_target.reason == "client asked for www.tiktok.com"
    # without the extension nothing is hidden, whatever the names
    assert classify("cloudflare-ech.com", None, public_names=PUBLIC).verdict == "none"


@given(st.binary(max_size=600), st.one_of(st.none(), st.text(max_size=30)))
def test_any_bytes_classify_without_raising(body: bytes, sni: str | None) -> None:
    assert classify(sni, body, public_names=PUBLIC).verdict in {
        "capable",
        "hidden",
        "malformed",
    }
