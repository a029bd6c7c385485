from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from egresswatch.catalogue import CarveOut
from egresswatch.catalogue import CidrRule
from egresswatch.catalogue import DomainRule
from egresswatch.catalogue import load_catalogue
from egresswatch.hostnames import normalise_host
from egresswatch.matcher import Matcher
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st


def rule(domain: str, app: str, match: str = "suffix", line: int = 1) -> DomainRule:
    return DomainRule(domain, match, app, "test", "high", (), "", (), "t.yaml", line)  # type: ignore[arg-type]


def carve(domain: str, app: str) -> CarveOut:
    return CarveOut(domain, app, "test", "not this app", "t.yaml", 1)


@pytest.fixture(scope="module")  # immutable: one per module
def matcher() -> Matcher:
    return Matcher.from_entries(
        [
            rule("qq.com", "qq"),
            rule("weixin.qq.com", "wechat"),
            rule("pay.weixin.qq.com", "wechat-pay"),
            rule("tenpay.com", "wechat-pay"),
            rule("tenpay.com", "qq-wallet"),
            rule("vac.qq.com", "qq-wallet", "exact"),
            rule("alipay.com", "alipay"),
            rule("alipay", "alipay"),  # a brand TLD
            carve("news.qq.com", "qq"),
            rule("sports.news.qq.com", "qq"),
        ],
        cidrs=[
            CidrRule(ipaddress.ip_network("203.0.113.0/24"), "alipay", "t", "low", (), "t.yaml", 9),
            CidrRule(ipaddress.ip_network("203.0.113.128/25"), "qq", "t", "low", (), "t.yaml", 10),
            CidrRule(ipaddress.ip_network("2001:db8::/32"), "wechat", "t", "low", (), "t.yaml", 11),
        ],
        regimes={"qq": ("r1",), "wechat-pay": ("r1", "r2"), "qq-wallet": ("r1", "r3")},
    )


@pytest.mark.parametrize(
    ("host", "app"),
    [
        ("qq.com", "qq"),
        ("im.qq.com", "qq"),
        ("weixin.qq.com", "wechat"),
        ("long.weixin.qq.com", "wechat"),
        ("PAY.weixin.QQ.com.", "wechat-pay"),
        ("x.pay.weixin.qq.com:443", "wechat-pay"),
        ("vac.qq.com", "qq-wallet"),
        ("a.vac.qq.com", "qq"),  # exact rule: only the name itself
        ("news.qq.com", None),  # carve-out
        ("x.news.qq.com", None),
        ("sports.news.qq.com", "qq"),  # more specific than the carve-out
        ("notalipay.com", None),
        ("alipay.com.evil.net", None),
        ("www.alipay", "alipay"),
        ("alipay.comx", None),
        ("203.0.113.7", "alipay"),
        ("203.0.113.200", "qq"),  # longest prefix
        ("[2001:db8::5]:443", "wechat"),
        ("198.51.100.1", None),
        ("", None),
        ("a..qq.com", None),
        (".qq.com", None),
        ("..qq.com", None),
        ("a b.qq.com", None),
        ("a\x00.qq.com", None),
        ("-.qq.com", "qq"),  # edge hyphens are matched (seen in the wild), like normalise_host
        ("x" * 64 + ".qq.com", None),  # an over-long label
        ("QQ.COM", "qq"),
        ("x" * 300 + ".qq.com", None),
    ],
)
def test_attribution(matcher: Matcher, host: str, app: str | None) -> None:
    m = matcher.match(host)
    assert (m.app if m else None) == app


def test_shared_name_names_all_apps_and_their_regimes(matcher: Matcher) -> None:
    m = matcher.match("www.tenpay.com")
    assert m is not None
    assert (m.app, m.apps, m.host) == ("qq-wallet", ("qq-wallet", "wechat-pay"), "www.tenpay.com")
    assert m.regimes == ("r1", "r3", "r2")
    assert m.rule.app == "qq-wallet"


def test_match_explains_rule(matcher: Matcher) -> None:
    m = matcher.match("Pay.Weixin.QQ.com.")
    assert m is not None
    assert (m.host, m.rule.domain, m.rule.match, m.regimes) == (
        "pay.weixin.qq.com",
        "pay.weixin.qq.com",
        "suffix",
        ("r1", "r2"),
    )
    ip = matcher.match("203.0.113.7")
    assert ip is not None and ip.rule.domain == "203.0.113.0/24" and ip.rule.match == "cidr"


def test_hostile_names_cost_nothing(matcher: Matcher) -> None:
    assert matcher.match(".".join(["a"] * 32768)) is None
    assert matcher.match("\x00.qq.com") is None
    assert matcher.match(b"\xff.qq.com") is None


def test_bulk_list(tmp_path: Path) -> None:
    (tmp_path / "regimes.yaml").write_text("regimes: []\n")
    (tmp_path / "big.yaml").write_text(
        "id: big\nname: Big\ncategory: other\nlists:\n  - file: big.txt\n    source: synthetic\n    confidence: low\n"
    )
    (tmp_path / "big.txt").write_text("".join(f"d{i}.example\n" for i in range(1000)))
    m = Matcher.from_catalogue(load_catalogue([tmp_path]))
    hit = m.match("www.d777.example")
    assert hit is not None
    # The lookup leaves the line of a bulk-list name to explain(): no per-name line storage.
    assert (hit.app, hit.rule.domain, hit.rule.line, hit.rule.file) == (
        "big",
        "d777.example",
        0,
        str(tmp_path / "big.txt"),
    )
    assert m.explain(hit.rule).line == 778
    assert m.explain(hit.rule)._replace(line=0) == hit.rule
    assert m.match("d1000.example") is None
    inline = m.match("x.inline.example")
    assert inline is None or m.explain(inline.rule) is inline.rule


# --- property: the matcher agrees with a naive reference on generated catalogues -------------

LABELS = st.sampled_from(["a", "b", "c", "ab", "xn--p1ai"])
APPS = st.sampled_from(["x", "y", "z"])
names = st.lists(LABELS, min_size=1, max_size=3).map(".".join)
hosts = st.lists(LABELS, min_size=1, max_size=5).map(".".join)


def covers(domain: str, host: str) -> bool:
    return host == domain or host.endswith("." + domain)


def reference(
    rules: list[DomainRule], carves: list[CarveOut], host: str
) -> tuple[str, tuple[str, ...], str] | None:
    exact = [r for r in rules if r.match == "exact" and r.domain == host]
    if exact:
        apps = tuple(sorted({r.app for r in exact}))
        return apps[0], apps, host
    candidates = [
        r
        for r in rules
        if r.match == "suffix"
        and covers(r.domain, host)
        and not any(
            c.app == r.app and covers(c.domain, host) and len(c.domain) >= len(r.domain)
            for c in carves
        )
    ]
    if not candidates:
        return None
    longest = max(len(r.domain) for r in candidates)
    best = [r for r in candidates if len(r.domain) == longest]
    apps = tuple(sorted({r.app for r in best}))
    return apps[0], apps, best[0].domain


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.tuples(names, APPS, st.sampled_from(["suffix", "exact"])), max_size=12),
    st.lists(st.tuples(names, APPS), max_size=3),
    st.lists(hosts, min_size=1, max_size=10),
)
def test_agrees_with_naive_reference(
    specs: list[tuple[str, str, str]], carve_specs: list[tuple[str, str]], probe: list[str]
) -> None:
    rules = [rule(d, a, k) for d, a, k in specs]
    carves = [carve(d, a) for d, a in carve_specs]
    m = Matcher.from_entries([*rules, *carves])
    for host in probe + [d for d, _, _ in specs]:
        got = m.match(host)
        assert (None if got is None else (got.app, got.apps, got.rule.domain)) == reference(
            rules, carves, host
        ), host


RAW_ALPHABET = st.sampled_from(
    [
        "a",
        "b",
        "qq",
        "com",
        "tenpay",
        "weixin",
        "pay",
        ".",
        "-",
        "_",
        " ",
        "Q",
        "\x00",
        ":",
        "[",
        "]",
        "1",
        "ü",
        "xn--",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(RAW_ALPHABET, max_size=12).map("".join))
def test_fast_path_agrees_with_the_careful_path(matcher: Matcher, raw: str) -> None:
    # match() takes a shortcut for plain ASCII names; it must decide exactly as normalising first.
    name = normalise_host(raw)
    expected = None if name is None else matcher.match_normalised(name)
    got = matcher.match(raw)
    assert (got and (got.host, got.app, got.rule.domain)) == (
        expected and (expected.host, expected.app, expected.rule.domain)
    )
