"""ECH in ``next_layer``/``tls_clienthello``: built ClientHellos with GREASE-like, hidden and
malformed ``encrypted_client_hello`` extensions (curl cannot send them)."""

from __future__ import annotations

import os
import struct

import pytest
from egresswatch.ech import ECH_EXTENSION
from egresswatch.ech import outer_extension
from mitmproxy.connection import Server
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.tls import ClientHelloData

from tests.plugins.addon import ECH_FRONT
from tests.plugins.addon import POLICY
from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import next_layer_of
from tests.plugins.addon import write_yaml


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(sni: str | None, ech: bytes | None) -> bytes:
    """One TLS record holding a TLS 1.3-style ClientHello with ``sni`` and, when given, an
    ``encrypted_client_hello`` extension whose body is ``ech``."""
    exts = b""
    if sni is not None:
        name = sni.encode()
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        exts += _ext(0x0000, struct.pack("!H", len(entry)) + entry)
    exts += _ext(0x002B, b"\x02\x03\x04")  # supported_versions: TLS 1.3
    exts += _ext(0x000A, b"\x00\x02\x00\x1d")  # supported_groups: x25519
    exts += _ext(0x0033, b"\x00\x24\x00\x1d\x00\x20" + os.urandom(32))  # key_share
    exts += _ext(0x000D, b"\x00\x02\x08\x04")  # signature_algorithms
    if ech is not None:
        exts += _ext(ECH_EXTENSION, ech)
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + b"\x20"
        + os.urandom(32)
        + b"\x00\x02\x13\x01"  # TLS_AES_128_GCM_SHA256
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


@pytest.fixture
def front(env: Env) -> Env:
    write_yaml(env.cat_dir / "ech" / "example-ech.yaml", ECH_FRONT)
    env.addon.reload()
    st = env.addon.state
    assert st is not None and "ech-front.test" in st.categories.public_names
    return env


def ech_count(env: Env, verdict: str, action: str = "monitor") -> float:
    v = env.registry.get_sample_value(
        "egresswatch_ech_total", {"verdict": verdict, "action": action}
    )
    assert v is not None, "series not pre-initialised"
    return v


def passthrough(
    env: Env, hello: bytes, mode: str = "transparent", server: str = "198.51.100.7"
) -> None:
    c = client(mode)
    env.layers.next_layer(next_layer_of(env, c, [hello], server=server))


def test_grease_ech_is_capable_never_an_event(front: Env) -> None:
    passthrough(front, client_hello("www.example.org", outer_extension()))
    assert ech_count(front, "capable") == 1 and ech_count(front, "hidden") == 0
    assert front.events() == []


def test_no_extension_counts_nothing(front: Env) -> None:
    passthrough(front, client_hello("www.example.org", None))
    assert ech_count(front, "capable") == 0 and front.events() == []


def test_malformed_extension_is_counted_and_harmless(front: Env) -> None:
    for bad in (b"", b"\x00", b"\x00\x00\x01\x00\x01\x07\xff\xff", os.urandom(300)):
        passthrough(front, client_hello("www.example.org", bad))
    assert ech_count(front, "malformed") >= 3  # random bytes may start with the inner marker
    assert (
        front.registry.get_sample_value("egresswatch_hook_errors_total", {"hook": "next_layer"})
        == 0
    )
    assert front.events() == []


def test_public_name_outer_sni_is_hidden_with_its_own_event(front: Env) -> None:
    passthrough(front, client_hello("ech-front.test", outer_extension()))
    assert ech_count(front, "hidden") == 1 and ech_count(front, "capable") == 0
    (ev,) = front.events()
    assert ev.signal == "ech" and ev.host == "ech-front.test" and ev.app is None
    assert ev.detail is not None and ev.detail["public_name"] == "ech-front.test"
    assert ev.detail["frontend"] == "example-ech"
    assert "client-facing" in str(ev.detail["reason"])


def test_outer_name_other_than_the_asked_name_is_hidden(front: Env) -> None:
    """SOCKS5 to a name, outer SNI another name: the asked name stands behind a public one."""
    passthrough(
        front, client_hello("public.example.net", outer_extension()), "socks5", "www.watched.test"
    )
    (ev,) = [e for e in front.events() if e.signal == "ech"]
    assert ev.detail is not None and ev.detail["asked"] == "www.watched.test"
    # same name asked and sent: GREASE, nothing hidden
    passthrough(
        front, client_hello("www.example.org", outer_extension()), "socks5", "www.example.org"
    )
    assert ech_count(front, "hidden") == 1 and ech_count(front, "capable") == 1


def test_dns_advertised_ech_makes_it_hidden(front: Env) -> None:
    from mitmproxy import dns
    from mitmproxy.net.dns import https_records

    from tests.plugins.addon import dns_flow

    f = dns_flow("site.example")
    rec = https_records.HTTPSRecord(1, "", {5: b"\x00\x01cfg"})
    f.response = f.request.succeed([dns.ResourceRecord.HTTPS("site.example", rec)])
    front.addon.dns_response(f)
    passthrough(front, client_hello("site.example", outer_extension()))
    assert ech_count(front, "hidden") == 1


def test_hidden_ech_is_correlated_to_the_resolved_app(front: Env) -> None:
    from tests.test_proxy_dnswatch import A
    from tests.test_proxy_dnswatch import answered

    front.addon.dns_response(answered("www.watched.test", A("www.watched.test", "203.0.113.50")))
    passthrough(front, client_hello("ech-front.test", outer_extension()), server="203.0.113.50")
    assert front.hits("watchy", "monitor", "dns_correlated", "default") == 1
    corr = [e for e in front.events() if e.signal == "dns_correlated"]
    assert corr and corr[0].detail is not None and corr[0].detail["why"] == "ECH hides the name"


def test_policy_refuses_hidden_ech_but_not_grease(front: Env) -> None:
    front.policy.write_text(POLICY + "ech: block\n")
    front.addon.reload()
    c = client("transparent")
    nl = next_layer_of(front, c, [client_hello("ech-front.test", outer_extension())])
    front.layers.next_layer(nl)
    assert nl.layer is None  # not passed through: tls_clienthello refuses it
    ch = parse_client_hello(client_hello("ech-front.test", outer_extension()))
    assert ch is not None
    ctx = Context(c, front.tctx.options)
    ctx.server = Server(address=("198.51.100.7", 443))
    data = ClientHelloData(ctx, ch)
    front.layers.tls_clienthello(data)
    assert data.ignore_connection and front.refused(c)
    assert ech_count(front, "hidden", "blocked") == 1  # counted once over both hooks
    c2 = client("transparent")
    nl2 = next_layer_of(front, c2, [client_hello("www.example.org", outer_extension())])
    front.layers.next_layer(nl2)
    assert nl2.layer is not None and not front.refused(c2)  # GREASE passes


# -- the ech scope: designated vendors' client-facing names -------------------------------------

SCOPED = "ech:\n  action: block\n  scope: designated\n"


def _refused_via_clienthello(
    env: Env, sni: str, mode: str = "transparent", server: str = "198.51.100.7"
) -> bool:
    """Send a ClientHello with an ECH extension through both hooks (``server``: the
    destination, a name the client asked for in socks5 mode); whether it was refused."""
    c = client(mode)
    hello = client_hello(sni, outer_extension())
    env.layers.next_layer(next_layer_of(env, c, [hello], server=server))
    ch = parse_client_hello(hello)
    assert ch is not None
    ctx = Context(c, env.tctx.options)
    ctx.server = Server(address=(server, 443))
    data = ClientHelloData(ctx, ch)
    env.layers.tls_clienthello(data)
    return env.refused(c)


def test_scope_designated_monitors_a_neutral_front_end(front: Env) -> None:
    """Cloudflare-like shared front end of no designated vendor: recorded, not refused."""
    front.policy.write_text(POLICY + SCOPED)
    front.addon.reload()
    assert not _refused_via_clienthello(front, "ech-front.test")
    assert ech_count(front, "hidden", "monitor") == 1 and ech_count(front, "hidden", "blocked") == 0
    (ev,) = [e for e in front.events() if e.signal == "ech"]
    assert ev.action == "monitor" and ev.detail is not None
    assert "designated_vendor" not in ev.detail


def test_scope_everywhere_still_refuses_the_neutral_front_end(front: Env) -> None:
    front.policy.write_text(POLICY + "ech:\n  action: block\n  scope: everywhere\n")
    front.addon.reload()
    assert _refused_via_clienthello(front, "ech-front.test")
    assert ech_count(front, "hidden", "blocked") == 1


def test_scope_designated_refuses_a_designated_vendors_front_end(front: Env) -> None:
    """An ECH front-end file naming a designated app's vendor: its public name is in scope."""
    vendor_front = {
        **ECH_FRONT,
        "id": "testvendor-ech",
        "name": "Test Vendor ECH",
        "vendor": "  test vendor ",  # compared without case and surrounding space
        "domains": [
            {"domain": "ech.tv-front.test", "match": "exact", "source": "t", "confidence": "high"}
        ],
    }
    write_yaml(front.cat_dir / "ech" / "testvendor-ech.yaml", vendor_front)
    front.policy.write_text(POLICY + SCOPED)
    front.addon.reload()
    assert _refused_via_clienthello(front, "ech.tv-front.test")
    (ev,) = [e for e in front.events() if e.signal == "ech"]
    assert ev.action == "blocked" and ev.detail is not None
    assert ev.detail["designated_vendor"] is True and ev.detail["frontend"] == "testvendor-ech"
    # the neutral front end next to it is still only monitored
    assert not _refused_via_clienthello(front, "ech-front.test")


def test_scope_designated_refuses_an_outer_name_the_catalogue_designates(front: Env) -> None:
    """Hidden because the client asked for another name; the outer name is watchy's."""
    front.policy.write_text(POLICY + SCOPED)
    front.addon.reload()
    assert _refused_via_clienthello(front, "edge.watched.test", "socks5", "inner.example.net")
    (ev,) = [e for e in front.events() if e.signal == "ech"]
    assert ev.action == "blocked" and ev.detail is not None
    assert ev.detail["designated_vendor"] is True
