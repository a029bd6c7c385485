from __future__ import annotations

import pytest
from egresswatch.hostnames import is_ip_literal
from egresswatch.hostnames import is_strict_hostname
from egresswatch.hostnames import normalise_host
from egresswatch.hostnames import parse_ip
from egresswatch.hostnames import why_invalid


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("WWW.Example.COM", "www.example.com"),
        ("www.example.com.", "www.example.com"),
        ("www.example.com:443", "www.example.com"),
        ("www.example.com.:8443", "www.example.com"),
        (b"API.deepseek.com", "api.deepseek.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("Bücher.Example.", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("qq.中国", "qq.xn--fiqs8s"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("2001:db8:0:0::1", "2001:db8::1"),
        ("localhost", "localhost"),
    ],
)
def test_normalise(raw: str | bytes, expected: str) -> None:
    assert normalise_host(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        ".",
        "a..b",
        ".example.com",
        "exa mple.com",
        "example.com:http",
        "example.com:443:1",
        "[::1",
        "[::1]x",
        "a" * 64 + ".example",
        "x" * 300,
        ".".join(["a"] * 200),
        "a\x00b.example",
        "1.2.3.999",
        "999.1",
        b"\xff\xfe.example",
        "☃\udcff.example",
    ],
)
def test_invalid_names_are_none_never_exceptions(raw: str | bytes | None) -> None:
    assert normalise_host(raw) is None


class Tripwire(str):
    """A name that records every string method called on it (only its length is free)."""

    calls: list[str]

    def __new__(cls, value: str) -> Tripwire:
        self = super().__new__(cls, value)
        self.calls = []
        return self


for _method in (
    "__contains__",
    "__getitem__",
    "__iter__",
    "count",
    "encode",
    "find",
    "lower",
    "partition",
    "rpartition",
    "rstrip",
    "split",
    "startswith",
    "strip",
):

    def _record(self: Tripwire, *args: object, _name: str = _method, **kwargs: object) -> object:
        self.calls.append(_name)
        return getattr(str, _name)(self, *args, **kwargs)

    setattr(Tripwire, _method, _record)


def test_hostile_length_is_rejected_before_any_label_work() -> None:
    """A 64k-character name is refused on its length alone: no string work at all."""
    huge = Tripwire(".".join(["a"] * 32768))
    assert normalise_host(huge) is None
    assert huge.calls == []
    assert normalise_host(huge.encode()) is None
    ok = Tripwire("www.example.com")  # the tripwire itself records work on a normal name
    assert normalise_host(ok) == "www.example.com" and ok.calls != []


def test_longest_valid_name() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 octets
    assert len(name) == 253
    assert normalise_host(name) == name
    assert normalise_host(name + "b") is None


@pytest.mark.parametrize(
    ("raw", "ip"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("[fe80::1%eth0]:80", "fe80::1"),
        ("x.example", None),
        ("1.2.3", None),
    ],
)
def test_parse_ip(raw: str, ip: str | None) -> None:
    parsed = parse_ip(raw)
    assert (parsed.compressed if parsed else None) == ip


@pytest.mark.parametrize("raw", ["-bad.example", "bad-.example", "cdn-.x"])
def test_edge_hyphens_match_but_are_not_strict(raw: str) -> None:
    # Such names occur in the wild and are matched; catalogue entries must be strict LDH.
    assert normalise_host(raw) == raw
    assert not is_strict_hostname(raw)
    assert is_strict_hostname("ok-name.example")


def test_is_ip_literal() -> None:
    assert is_ip_literal("10.0.0.1") and is_ip_literal("::1")
    assert not is_ip_literal("a1.example") and not is_ip_literal("example.com")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("a..b", "empty label"),
        ("x" * 300, "300 characters"),
        ("a\x00b", "NUL"),
        ("bad_label!.com", "not allowed"),
        ("-x.com", "hyphen"),
    ],
)
def test_why_invalid(raw: str, reason: str) -> None:
    assert reason in (why_invalid(raw) or "")
    assert why_invalid("ok.example") is None
