from __future__ import annotations

import ipaddress
import logging
import re
import sys
import threading
from array import array
from pathlib import Path

import pytest
from egresswatch.catalogue import BulkList
from egresswatch.catalogue import CarveOut
from egresswatch.catalogue import CidrRule
from egresswatch.catalogue import DomainRule
from egresswatch.catalogue import PatternRule
from egresswatch.catalogue import load_catalogue
from egresswatch.hostnames import normalise_host
from egresswatch.matcher import NATIVE_AVAILABLE
from egresswatch.matcher import Backend
from egresswatch.matcher import Matcher
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st


def rule(
    domain: str, app: str, match: str = "suffix", line: int = 1, tags: tuple[str, ...] = ()
) -> DomainRule:
    return DomainRule(domain, match, app, "test", "high", tags, "", (), "t.yaml", line)  # type: ignore[arg-type]


def carve(domain: str, app: str) -> CarveOut:
    return CarveOut(domain, app, "test", "not this app", "t.yaml", 1)


def bulk(names: list[str], app: str, match: str = "suffix") -> BulkList:
    lines = array("I", range(1, len(names) + 1))
    return BulkList(f"{app}.txt", app, match, "test", "low", (), "t.yaml", 1, names, lines)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["native", "python"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every matcher test runs against both backends."""
    if request.param == "native" and not NATIVE_AVAILABLE:
        pytest.skip("egresswatch._suffixtable is not built (no C compiler at install time)")
    return request.param  # type: ignore[no-any-return]


def sample_matcher(backend: Backend) -> Matcher:
    m = Matcher.from_entries(
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
        backend=backend,
    )
    assert m.backend == backend
    return m


@pytest.fixture(scope="module")  # immutable: one per module and backend
def matcher(backend: Backend) -> Matcher:
    return sample_matcher(backend)


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


def test_bulk_list(tmp_path: Path, backend: Backend) -> None:
    (tmp_path / "regimes.yaml").write_text("regimes: []\n")
    (tmp_path / "big.yaml").write_text(
        "id: big\nname: Big\ncategory: other\nlists:\n  - file: big.txt\n    source: synthetic\n    confidence: low\n"
    )
    (tmp_path / "big.txt").write_text("".join(f"d{i}.example\n" for i in range(1000)))
    m = Matcher.from_catalogue(load_catalogue([tmp_path]), backend)
    assert m.backend == backend and len(m) == 1000
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


def test_slim_matcher_and_catalogue_keep_lookups_and_counts(
    tmp_path: Path, backend: Backend
) -> None:
    (tmp_path / "regimes.yaml").write_text("regimes: []\n")
    (tmp_path / "big.yaml").write_text(
        "id: big\nname: Big\ncategory: other\nlists:\n  - file: big.txt\n    source: synthetic\n    confidence: low\n"
    )
    (tmp_path / "big.txt").write_text("".join(f"d{i}.example\n" for i in range(1000)))
    cat = load_catalogue([tmp_path])
    full = Matcher.from_catalogue(cat, backend)
    slim, slim_cat = full.slim(), cat.slim()
    hosts = ["www.d777.example", "d0.example", "d1000.example", "x.example", "D5.Example."]
    assert [slim.match(h) for h in hosts] == [full.match(h) for h in hosts]
    assert len(slim) == len(full) == 1000
    assert slim_cat.entries == cat.entries == 1000 and slim_cat.version == cat.version
    (slim_list,) = slim_cat.apps["big"].lists
    assert (len(slim_list), slim_list.names, slim_list.slim()) == (1000, [], slim_list)
    assert cat.apps["big"].lists[0].names[:1] == ["d0.example"]  # the original is untouched
    hit = slim.match("www.d777.example")
    assert hit is not None
    if backend == "native":  # the names now live only in the native table
        assert slim is not full and slim.explain(hit.rule).line == 0
    else:  # the Python backend's dictionary is keyed by the names: nothing to free
        assert slim is full and slim.explain(hit.rule).line == 778


# --- property: the matcher agrees with a naive reference on generated catalogues -------------

# "x" * 30 makes keys longer than the native table keeps inline in a slot.
LABELS = st.sampled_from(["a", "b", "c", "ab", "x2", "xn--p1ai", "x" * 30])
APPS = st.sampled_from(["x", "y", "z"])
names = st.lists(LABELS, min_size=1, max_size=3).map(".".join)
hosts = st.lists(LABELS, min_size=1, max_size=5).map(".".join)


def covers(domain: str, host: str) -> bool:
    return host == domain or host.endswith("." + domain)


def pattern(parent: str, label: str, app: str, scope: str = "subtree") -> PatternRule:
    return PatternRule(parent, label, scope, app, "test", "high", (), "", "t.yaml", 1)  # type: ignore[arg-type]


def label_regex(label: str) -> str:
    """The pattern language written out again, independently of PatternRule.regex()."""
    out = ""
    for ch in label:
        out += {"*": "[a-z0-9-]*", "#": "[0-9]*"}.get(ch, re.escape(ch))
    return out


def pattern_candidates(
    patterns: list[PatternRule], carves: list[CarveOut], host: str
) -> list[tuple[str, PatternRule]]:
    out = []
    for p in patterns:
        if not host.endswith("." + p.parent):
            continue
        left = host[: -len(p.parent) - 1].split(".")
        concrete = f"{left[-1]}.{p.parent}"
        if p.scope == "name" and host != concrete:
            continue
        if not re.fullmatch(label_regex(p.label), left[-1]):
            continue
        if any(
            c.app == p.app and covers(c.domain, host) and len(c.domain) >= len(concrete)
            for c in carves
        ):
            continue
        out.append((concrete, p))
    return out


def reference(
    rules: list[DomainRule],
    carves: list[CarveOut],
    host: str,
    patterns: list[PatternRule] = (),  # type: ignore[assignment]
) -> tuple[str, tuple[str, ...], str] | None:
    exact = [r for r in rules if r.match == "exact" and r.domain == host]
    if exact:
        apps = tuple(sorted({r.app for r in exact}))
        primary = [r.app for r in exact if "primary" in r.tags]
        return (primary or apps)[0], apps, host
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
    by_pattern = pattern_candidates(list(patterns), carves, host)
    if not candidates and not by_pattern:
        return None
    longest = max([len(r.domain) for r in candidates] + [len(d) for d, _ in by_pattern])
    if not any(len(r.domain) == longest for r in candidates):
        # A pattern's name beats every shorter rule; an explicit rule of the same length wins.
        concrete, first = next((d, p) for d, p in by_pattern if len(d) == longest)
        return first.app, (first.app,), concrete
    best = [r for r in candidates if len(r.domain) == longest]
    apps = tuple(sorted({r.app for r in best}))
    primary = [r.app for r in best if "primary" in r.tags]
    return (primary or apps)[0], apps, best[0].domain


KINDS = st.sampled_from(["suffix", "exact"])
SCOPES = st.sampled_from(["name", "subtree"])


@settings(max_examples=1000, deadline=None)
@given(
    specs=st.lists(st.tuples(names, APPS, KINDS, st.booleans()), max_size=12),
    pattern_specs=st.lists(
        st.tuples(names, st.sampled_from(["a*", "#", "x#", "*b", "ab", "*"]), APPS, SCOPES),
        max_size=3,
    ),
    carve_specs=st.lists(st.tuples(names, APPS), max_size=3),
    list_specs=st.lists(st.tuples(st.lists(names, max_size=6), APPS, KINDS), max_size=2),
    probe=st.lists(hosts, min_size=1, max_size=10),
)
def test_agrees_with_naive_reference(
    backend: Backend,
    specs: list[tuple[str, str, str, bool]],
    pattern_specs: list[tuple[str, str, str, str]],
    carve_specs: list[tuple[str, str]],
    list_specs: list[tuple[list[str], str, str]],
    probe: list[str],
) -> None:
    # Only app "y" may tag a name primary (lint allows one primary app per shared name).
    rules = [rule(d, a, k, tags=("primary",) if p and a == "y" else ()) for d, a, k, p in specs]
    carves = [carve(d, a) for d, a in carve_specs]
    lists = [bulk(ns, a, k) for ns, a, k in list_specs]
    patterns = [pattern(parent, label, a, scope) for parent, label, a, scope in pattern_specs]
    m = Matcher.from_entries([*rules, *carves, *patterns], lists, backend=backend)
    assert m.backend == backend
    # A bulk-list name decides like a rule of the list's app (its line is left to explain()).
    as_rules = rules + [rule(n, a, k) for ns, a, k in list_specs for n in ns]
    under = [f"{x}.{p.parent}" for p in patterns for x in ("ab", "x2", "12", "c.ab", "b")]
    for host in probe + under + [d for d, *_ in specs] + [n for ns, _, _ in list_specs for n in ns]:
        got = m.match(host)
        assert (None if got is None else (got.app, got.apps, got.rule.domain)) == reference(
            as_rules, carves, host, patterns
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
@given(raw=st.lists(RAW_ALPHABET, max_size=12).map("".join))
def test_fast_path_agrees_with_the_careful_path(matcher: Matcher, raw: str) -> None:
    # match() takes a shortcut for plain ASCII names; it must decide exactly as normalising first.
    name = normalise_host(raw)
    expected = None if name is None else matcher.match_normalised(name)
    got = matcher.match(raw)
    assert (got and (got.host, got.app, got.rule.domain)) == (
        expected and (expected.host, expected.app, expected.rule.domain)
    )


# --- the backends ------------------------------------------------------------------------------


def test_native_backend_is_built_and_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI installs the package with its C extension: a build that silently broke fails here.
    monkeypatch.delenv("EGRESSWATCH_PURE_PYTHON", raising=False)
    assert NATIVE_AVAILABLE, "egresswatch._suffixtable did not build: pip install -e . needs gcc"
    assert Matcher.from_entries([rule("qq.com", "qq")]).backend == "native"


def test_pure_python_env_forces_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESSWATCH_PURE_PYTHON", "1")
    m = Matcher.from_entries([rule("qq.com", "qq")])
    assert m.backend == "python"
    hit = m.match("a.qq.com")
    assert hit is not None and hit.app == "qq"


@pytest.mark.skipif(not NATIVE_AVAILABLE, reason="egresswatch._suffixtable is not built")
def test_a_key_the_native_table_refuses_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    long_key = ".".join(["a" * 63] * 4) + ".qq.com"  # 262 characters: not a hostname
    with caplog.at_level(logging.WARNING, logger="egresswatch.matcher"):
        m = Matcher.from_entries([rule(long_key, "x"), rule("qq.com", "qq")], backend="native")
    assert m.backend == "python" and "native matcher unavailable" in caplog.text
    hit = m.match_normalised(long_key)
    assert hit is not None and hit.app == "x"


def test_results_share_no_state_between_threads(matcher: Matcher) -> None:
    hosts = [f"h{i}.{d}" for i in range(200) for d in ("qq.com", "tenpay.com", "x.org", "alipay")]
    expected = [matcher.match(h) for h in hosts]
    results: list[list[object]] = [[] for _ in range(4)]

    def work(out: list[object]) -> None:
        for _ in range(20):
            out[:] = [matcher.match(h) for h in hosts]

    threads = [threading.Thread(target=work, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)


# --- hostile input: the native path must agree with the Python path and never crash -----------


@pytest.fixture(scope="module")
def both() -> tuple[Matcher, Matcher]:
    """The sample catalogue on the native backend and on the Python backend."""
    if not NATIVE_AVAILABLE:
        pytest.skip("egresswatch._suffixtable is not built")
    return sample_matcher("native"), sample_matcher("python")


def outcome(fn: object, arg: object) -> object:
    try:
        return fn(arg)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the exception type is the outcome compared
        return type(exc)


def assert_agree(pair: tuple[Matcher, Matcher], host: object) -> None:
    native, python = pair
    assert outcome(native.match, host) == outcome(python.match, host), repr(host)
    if isinstance(host, str):
        got = outcome(native.match_normalised, host)
        assert got == outcome(python.match_normalised, host), repr(host)


SUFFIXES = st.sampled_from(["", ".qq.com", ".weixin.qq.com", ".tenpay.com", ".alipay", "."])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(st.characters(exclude_categories=()), max_size=40),  # surrogates included
    suffix=SUFFIXES,
    upper=st.booleans(),
)
def test_arbitrary_text_agrees(
    both: tuple[Matcher, Matcher], text: str, suffix: str, upper: bool
) -> None:
    host = text + suffix
    assert_agree(both, host.upper() if upper else host)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40), suffix=SUFFIXES)
def test_arbitrary_bytes_agree(both: tuple[Matcher, Matcher], data: bytes, suffix: str) -> None:
    assert_agree(both, data + suffix.encode())


@pytest.mark.parametrize(
    "host",
    [
        None,
        42,
        3.5,
        b"qq.com",
        bytearray(b"qq.com"),
        ["qq.com"],
        "",
        ".",
        "..",
        "\x00",
        "qq.com\x00",
        "\x00qq.com",
        "a\x00b.qq.com",
        "x" * 63 + ".qq.com",
        "x" * 64 + ".qq.com",
        ("a" * 61 + ".") * 4 + "qq.com",  # 254 characters
        ("a" * 61 + ".") * 4 + "qq.com.",  # 255 with the trailing dot
        ("a" * 60 + ".") * 4 + "qq.com",  # 250
        ("a" * 60 + ".") * 4 + "qq.com.",
        "a" * 100_000 + ".qq.com",
        ".".join(["a"] * 32768) + ".qq.com",
        "." * 300 + "qq.com",
        "qq.com" + "." * 300,
        "ü.qq.com",
        "\udcff.qq.com",
        "\U0001f600.qq.com",
        "ÀB.qq.com",  # Latin-1: one byte per character, not ASCII
        "VAC.QQ.COM.",
        "vac.qq.com:443",
        "[vac.qq.com]",
        "vac.qq.com\x00",
        "alipay",
        "ALIPAY.",
        "a.b.c.d.e.f.g.h.news.qq.com",
        "sports.news.qq.com" * 14,
    ],
)
def test_hostile_input_agrees(both: tuple[Matcher, Matcher], host: object) -> None:
    assert_agree(both, host)


def test_str_subclass_takes_the_careful_path(both: tuple[Matcher, Matcher]) -> None:
    class Name(str):
        __slots__ = ()

    assert_agree(both, Name("Pay.Weixin.QQ.com"))
    m = both[0].match(Name("Pay.Weixin.QQ.com"))
    assert m is not None and m.app == "wechat-pay"


def test_hits_leak_no_references(both: tuple[Matcher, Matcher]) -> None:
    native, _ = both
    first = native.match("a.qq.com")
    assert first is not None
    rule, app = first.rule, first.app
    lists = [bulk([f"d{i}.example" for i in range(100)], "big")]
    m = Matcher.from_entries([], lists, backend="native")
    file = lists[0].file

    def refs_after(n: int) -> tuple[int, int, int]:
        for _ in range(n):
            native.match("a.qq.com")
            native.match("a.qq.com.")
            native.match_normalised("b.qq.com")
            m.match("www.d7.example")
        return sys.getrefcount(rule), sys.getrefcount(app), sys.getrefcount(file)

    assert refs_after(10) == refs_after(2000)
    hit = m.match("www.d7.example")
    assert hit is not None and hit.rule.domain == "d7.example" and hit.rule.file == "big.txt"


# --- the native table's own guards ------------------------------------------------------------


@pytest.mark.skipif(not NATIVE_AVAILABLE, reason="egresswatch._suffixtable is not built")
def test_suffix_table_guards() -> None:
    from egresswatch._suffixtable import SuffixTable
    from egresswatch.matcher import Match

    defer = object()
    t = SuffixTable(defer)
    with pytest.raises(RuntimeError, match="not finished"):
        t.match("qq.com")
    with pytest.raises(RuntimeError, match="not finished"):
        t.walk("qq.com")
    with pytest.raises(TypeError):
        t.insert(False, b"qq.com", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ASCII"):
        t.insert(False, "ü.com", 0)
    with pytest.raises(ValueError, match="ASCII"):
        t.insert(False, "a" * 256, 0)
    with pytest.raises(ValueError, match="out of range"):
        t.insert(False, "qq.com", -1)
    with pytest.raises(ValueError, match="out of range"):
        t.insert(False, "qq.com", 1 << 40)
    with pytest.raises(TypeError):
        t.insert_many(False, ("qq.com",), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        t.insert_many(False, ["a.com", None], 0)  # type: ignore[list-item]
    assert t.insert(False, "qq.com", 0) == -1
    assert t.insert(False, "qq.com", 1) == 0  # already there: the stored value comes back
    assert t.insert_many(False, ["x.qq.com", "qq.com", "y.qq.com", "x.qq.com"], 1) == [1, 3]
    # (a.com went in before the TypeError above: a failed build is thrown away whole.)
    with pytest.raises(KeyError):
        t.replace(False, "absent.com", 0)
    with pytest.raises(ValueError, match="no template"):
        t.finish([(1, "qq", ("qq",), (), rule("qq.com", "qq"))], Match)
    two = [(1, "qq", ("qq",), (), rule("qq.com", "qq"))] * 2
    with pytest.raises(TypeError):
        t.finish(two, dict)
    with pytest.raises(TypeError):
        t.finish([(1, "qq"), (0, None, None, None, None)], Match)
    with pytest.raises(TypeError, match="bulk"):
        t.finish([(2, "qq", ("qq",), (), "not a tuple")] * 2, Match)
    assert not t.frozen
    t.finish(two, Match)
    assert t.frozen and t.rules == 4 and not t.tld_rules and t.nbytes > 0
    with pytest.raises(RuntimeError, match="frozen"):
        t.insert(False, "new.com", 0)
    assert t.get(False, "qq.com") == 0 and t.get(False, "com") == -2 and t.get(False, "x") == -1
    assert t.get(False, "ü") == -1 and t.get(True, "qq.com") == -1
    assert t.walk("a.x.qq.com") == [(4, 0), (2, 1)]  # qq.com has rules under it
    with pytest.raises(ValueError, match="ASCII"):
        t.walk("ü.qq.com")
    assert t.lookup(b"qq.com") is defer and t.match(None) is defer
    assert t.match("Z.X.QQ.COM.") is defer  # two rules on the way: Python decides
    hit = t.match("Z.Other.QQ.COM.")
    assert hit == Match("z.other.qq.com", "qq", ("qq",), rule("qq.com", "qq"), ())
