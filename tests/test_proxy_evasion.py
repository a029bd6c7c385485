"""``egresswatch.proxy.evasion`` and its hooks: encrypted-DNS bypass, app HTTPDNS."""

from __future__ import annotations

from pathlib import Path

import pytest
from egresswatch.events import Signal
from egresswatch.proxy.addon import EgressWatch

from tests.plugins.addon import ECH_FRONT
from tests.plugins.addon import POLICY
from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import connect_flow
from tests.plugins.addon import dns_flow
from tests.plugins.addon import hello_data
from tests.plugins.addon import next_layer_of
from tests.plugins.addon import raw_client_hello
from tests.plugins.addon import server_data
from tests.plugins.addon import write_yaml

RESOLVER = {
    "id": "example-dns",
    "name": "Example DNS",
    "vendor": "Example",
    "category": "encrypted-dns",
    "regimes": [],
    "domains": [
        {
            "domain": "doh.example-dns.test",
            "match": "exact",
            "source": "tests",
            "confidence": "high",
            "tags": ["doh"],
        },
        {
            "domain": "dot.example-dns.test",
            "match": "exact",
            "source": "tests",
            "confidence": "high",
            "tags": ["dot"],
        },
    ],
    "cidrs": [{"cidr": "198.51.100.53/32", "source": "tests", "confidence": "high"}],
}
HTTPDNS_APP = {
    "id": "dnsy",
    "name": "DNSy",
    "vendor": "DNSy Inc",
    "category": "other",
    "regimes": [],
    "domains": [
        {
            "domain": "httpdns.dnsy.test",
            "source": "tests",
            "confidence": "high",
            "tags": ["httpdns"],
        },
        {"domain": "api.dnsy.test", "source": "tests", "confidence": "high"},
    ],
}


@pytest.fixture
def cats(env: Env) -> Env:
    """``env`` with a resolver, an ECH front end and an app with an HTTPDNS entry."""
    write_yaml(env.cat_dir / "encrypted-dns" / "example-dns.yaml", RESOLVER)
    write_yaml(env.cat_dir / "ech" / "example-ech.yaml", ECH_FRONT)
    write_yaml(env.cat_dir / "dnsy.yaml", HTTPDNS_APP)
    env.addon.reload()
    st = env.addon.state
    assert st is not None and st.categories.resolvers == ("example-dns",)
    return env


def _policy(env: Env, extra: str) -> None:
    env.policy.write_text(POLICY + extra)
    env.addon.reload()


def _bypass(env: Env, resolver: str = "example-dns", action: str = "monitor") -> float:
    v = env.registry.get_sample_value(
        "egresswatch_encrypted_dns_total", {"resolver": resolver, "action": action}
    )
    assert v is not None, "series not pre-initialised"
    return v


def test_resolver_series_are_pre_initialised_and_categories_are_not_apps(cats: Env) -> None:
    assert _bypass(cats) == 0 and _bypass(cats, action="blocked") == 0
    st = cats.addon.state
    assert st is not None
    assert "example-dns" not in st.catalogue.apps and "example-ech" not in st.catalogue.apps
    assert st.categories.public_names == frozenset({"ech-front.test"})
    assert any(p.parent.name == "encrypted-dns" for p in st.files())
    assert (
        cats.registry.get_sample_value(
            "egresswatch_httpdns_total", {"app": "dnsy", "action": "monitor"}
        )
        == 0
    )


def test_connect_to_a_resolver_name_is_a_bypass_counted_once(cats: Env) -> None:
    c = client()
    f = connect_flow("DoH.Example-DNS.test", c)
    cats.observe.http_connect(f)
    assert f.response is None
    cats.layers.tls_clienthello(hello_data(cats, "doh.example-dns.test", c))  # same connection
    assert _bypass(cats) == 1
    (ev,) = cats.events()
    assert ev.signal == Signal.ENCRYPTED_DNS and ev.app is None
    assert ev.host == "doh.example-dns.test" and ev.action == "monitor"
    assert ev.detail is not None and ev.detail["resolver"] == "example-dns"
    assert ev.detail["via"] == "connect" and "bypass" in str(ev.detail["explanation"])
    # no app hit: the resolver never shows up in the designated apps' counter
    assert (
        cats.registry.get_sample_value(
            "egresswatch_hits_total",
            {"app": "example-dns", "regime": "app", "action": "monitor", "signal": "connect"},
        )
        is None
    )


@pytest.mark.parametrize(("port", "counted"), [(443, 1), (853, 1), (53, 0), (80, 0)])
def test_resolver_address_counts_only_on_tls_ports(cats: Env, port: int, counted: int) -> None:
    c = client("transparent")
    cats.observe.server_connect(server_data(c, "198.51.100.53", port))
    assert _bypass(cats) == counted
    f = connect_flow("198.51.100.53", client())
    f.request.port = port
    cats.observe.http_connect(f)
    assert _bypass(cats) == 2 * counted


def test_sni_passthrough_and_dns_queries(cats: Env) -> None:
    c = client("transparent")
    nl = next_layer_of(cats, c, [raw_client_hello("dot.example-dns.test")])
    cats.layers.next_layer(nl)
    assert _bypass(cats) == 1
    cats.observe.dns_request(dns_flow("doh.example-dns.test"))  # a visible query: no bypass
    assert _bypass(cats) == 1 and len(cats.events()) == 1


def test_policy_blocks_encrypted_dns(cats: Env) -> None:
    _policy(cats, "encrypted_dns: block\n")
    f = connect_flow("doh.example-dns.test")
    cats.observe.http_connect(f)
    assert f.response is not None and f.response.status_code == 403
    assert _bypass(cats, action="blocked") == 1
    c = client("socks5")
    d = server_data(c, "dot.example-dns.test", 853)
    cats.observe.server_connect(d)
    assert d.server.error and "blocked" in d.server.error
    assert _bypass(cats, action="blocked") == 2


def test_policy_off_records_nothing_and_dry_run_would_block(cats: Env) -> None:
    _policy(cats, "encrypted_dns: 'off'\n")
    cats.observe.http_connect(connect_flow("doh.example-dns.test"))
    assert cats.events() == [] and _bypass(cats) == 0
    cats.policy.write_text(POLICY.replace("default: monitor", "default: monitor\ndry_run: true")
                           + "encrypted_dns: block\n")  # fmt: skip
    cats.addon.reload()
    f = connect_flow("doh.example-dns.test")
    cats.observe.http_connect(f)
    assert f.response is None and _bypass(cats, action="would_block") == 1


def test_bad_category_file_names_file_and_line(env: Env) -> None:
    bad = dict(RESOLVER, domains=[{"domain": "bad..name", "source": "t", "confidence": "high"}])
    write_yaml(env.cat_dir / "encrypted-dns" / "bad.yaml", bad)
    old = env.addon.state
    env.addon.reload()
    assert env.addon.state is old  # rejected: the old state stays
    assert (
        env.registry.get_sample_value(
            "egresswatch_reload_failures_total", {"kind": "catalogue", "reason": "validation"}
        )
        == 1
    )


def test_httpdns_entry_is_flagged_and_counted(cats: Env) -> None:
    cats.observe.http_connect(connect_flow("httpdns.dnsy.test"))
    cats.observe.http_connect(connect_flow("api.dnsy.test"))
    evs = cats.events()
    assert [e.app for e in evs] == ["dnsy", "dnsy"]
    assert evs[0].detail is not None and evs[0].detail["httpdns"] is True
    assert "behind the organisation's back" in str(evs[0].detail["explanation"])
    assert evs[1].detail is None
    assert (
        cats.registry.get_sample_value(
            "egresswatch_httpdns_total", {"app": "dnsy", "action": "monitor"}
        )
        == 1
    )


def test_bundled_categories_load_with_the_bundled_catalogue(tmp_path: Path) -> None:
    from mitmproxy.test import taddons
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    a = EgressWatch(registry=reg)
    with taddons.context(a) as tctx:
        tctx.configure(
            a, egresswatch_metrics_listen="off", egresswatch_store="memory://",
            egresswatch_reload_interval=0,
        )  # fmt: skip
        st = a.state
        assert st is not None
        assert "google-dns" in st.categories.resolvers and "google-dns" not in st.catalogue.apps
        assert "cloudflare-ech.com" in st.categories.public_names
        assert (
            reg.get_sample_value(
                "egresswatch_encrypted_dns_total", {"resolver": "google-dns", "action": "blocked"}
            )
            == 0
        )
        assert (
            reg.get_sample_value(
                "egresswatch_httpdns_total", {"app": "wechat", "action": "monitor"}
            )
            == 0
        )
        a.metrics.close()  # type: ignore[union-attr]
