"""Discovery evidence in the proxy, through the addon's hooks: follows-a-hit (noted by the
observer under an opaque per-client key) and upstream certificates (``tls_established_server``)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from egresswatch.candidates import MAX_PER_HIT
from egresswatch.candidates import Candidate
from egresswatch.candidates import certificate_names
from egresswatch.events import EventKind
from egresswatch.proxy import discovery as discovery_mod
from mitmproxy import certs
from mitmproxy import tls
from mitmproxy.connection import Client
from mitmproxy.connection import Server
from mitmproxy.dns import DNSFlow
from mitmproxy.proxy.context import Context

from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import connect_flow
from tests.plugins.addon import dns_flow
from tests.plugins.addon import request_flow


def dns_query(name: str, c: Client) -> DNSFlow:
    f = dns_flow(name)
    f.client_conn = c
    return f


def snapshot(env: Env) -> dict[tuple[str, str], Candidate]:
    return {(c.name, c.app): c for c in env.addon.discovery.candidates.snapshot()}


# -- follows a hit ------------------------------------------------------------------------------


def test_a_name_right_after_a_hit_from_the_same_client_is_a_candidate(env: Env) -> None:
    a, b = client(ip="10.0.0.1"), client(ip="10.0.0.2")
    env.observe.requestheaders(request_flow("www.watched.test", a))  # a designated hit
    env.clock[0] += 2
    env.observe.requestheaders(request_flow("api.unlisted.test", a))
    env.observe.http_connect(connect_flow("api.unlisted.test", a))  # the same name again
    env.observe.dns_request(dns_query("Other.Unlisted.test.", a))  # normalised
    env.observe.requestheaders(request_flow("b-only.unlisted.test", b))  # b had no hit
    env.observe.requestheaders(request_flow("203.0.113.9", a))  # an address is no candidate
    env.clock[0] += 4  # 6 s after the hit: outside the 5 s window
    env.observe.requestheaders(request_flow("late.unlisted.test", a))
    got = snapshot(env)
    assert set(got) == {("api.unlisted.test", "watchy"), ("other.unlisted.test", "watchy")}
    # one hit credits a name once, however many signals carry it
    assert got[("api.unlisted.test", "watchy")].evidence == {"follows_hit": 1}
    assert got[("api.unlisted.test", "watchy")].examples == {
        "follows_hit": "2.0s after a hit on watchy"
    }


def test_a_new_hit_credits_again_and_a_flood_after_one_hit_is_capped(env: Env) -> None:
    a = client(ip="10.0.0.7")
    env.observe.requestheaders(request_flow("watched.test", a))
    for i in range(MAX_PER_HIT + 20):
        env.observe.dns_request(dns_query(f"n{i}.flood.test", a))
    assert len(snapshot(env)) == MAX_PER_HIT
    env.clock[0] += 1
    env.observe.requestheaders(request_flow("watched.test", client(ip="10.0.0.7")))
    env.observe.dns_request(dns_query("n0.flood.test", a))
    assert snapshot(env)[("n0.flood.test", "watchy")].evidence == {"follows_hit": 2}


def test_names_the_catalogue_matches_are_never_candidates(env: Env) -> None:
    a = client(ip="10.0.0.3")
    env.observe.requestheaders(request_flow("watched.test", a))
    env.observe.requestheaders(request_flow("blocked.test", a))  # a hit itself (blocked)
    env.observe.requestheaders(request_flow("off.test", a))  # listed, policy off
    assert snapshot(env) == {}


def test_no_client_address_is_kept(env: Env) -> None:
    a = client(ip="10.77.66.55")
    env.observe.requestheaders(request_flow("watched.test", a))
    env.observe.requestheaders(request_flow("x.unlisted.test", a))
    cands = env.addon.discovery.candidates
    assert "10.77.66.55" not in repr(vars(cands)) + repr(cands.snapshot())


# -- certificates -------------------------------------------------------------------------------


def make_cert(sans: Sequence[str], org: str | None = None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, sans[0] if sans else "no-san")]
    if org is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attrs)
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    return b.sign(key, hashes.SHA256())


def established(
    env: Env, sni: str | None, cert: x509.Certificate | None, address: str | None = None
) -> None:
    server = Server(address=(address or sni or "", 443), sni=sni)
    if cert is not None:
        server.certificate_list = [certs.Cert(cert)]
    env.addon.tls_established_server(tls.TlsData(server, Context(client(), env.tctx.options)))


def test_a_certificate_naming_a_designated_name_makes_a_candidate(env: Env) -> None:
    established(env, "img.unlisted.test", make_cert(["img.unlisted.test", "*.watched.test"]))
    established(
        env, "cdn.unlisted.test", make_cert(["cdn.unlisted.test"], "Watchy Example Co., LTD.")
    )
    established(env, "plain.unlisted.test", make_cert(["plain.unlisted.test"], "Other Corp"))
    established(env, "www.watched.test", make_cert(["*.watched.test"]))  # matched: not read
    established(env, "bare.unlisted.test", None)  # no certificate (never decrypted)
    established(env, None, make_cert(["*.watched.test"]), "198.51.100.7")  # no name: no candidate
    got = snapshot(env)
    assert set(got) == {("img.unlisted.test", "watchy"), ("cdn.unlisted.test", "watchy")}
    assert got[("img.unlisted.test", "watchy")].examples == {"certificate": "SAN *.watched.test"}
    assert got[("cdn.unlisted.test", "watchy")].examples == {
        "certificate": "subject O=Watchy Example Co., LTD."
    }
    assert (
        env.registry.get_sample_value(
            "egresswatch_hook_errors_total", {"hook": "tls_established_server"}
        )
        == 0
    )


def test_each_name_is_read_once_and_the_memory_is_bounded(env: Env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(discovery_mod, "MAX_CERT_NAMES", 3)
    cert = make_cert(["*.watched.test"])
    for _ in range(3):
        established(env, "again.unlisted.test", cert)
    assert snapshot(env)[("again.unlisted.test", "watchy")].evidence == {"certificate": 1}
    for i in range(5):
        established(env, f"n{i}.unlisted.test", cert)
    assert len(env.addon.discovery._cert_seen) == 3
    established(env, "again.unlisted.test", cert)  # forgotten, so read again
    assert snapshot(env)[("again.unlisted.test", "watchy")].evidence == {"certificate": 2}


def test_certificate_names_reads_sans_and_organisations_and_survives_odd_ones() -> None:
    sans, orgs = certificate_names(make_cert(["a.test", "*.b.test"], "Org Ltd"))
    assert (sans, orgs) == (["a.test", "*.b.test"], ["Org Ltd"])
    assert certificate_names(make_cert([])) == ([], [])
    many = make_cert([f"n{i}.test" for i in range(500)])
    assert len(certificate_names(many)[0]) == 100


# -- persistence --------------------------------------------------------------------------------


def candidate_events(env: Env) -> list[dict[str, object]]:
    return [
        e.detail
        for e in env.events(EventKind.CONFIG)
        if e.detail is not None and e.detail.get("kind") == "candidates"
    ]


async def test_the_heartbeat_saves_new_evidence_and_the_stop_saves_the_rest(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_heartbeat=1, egresswatch_flush_ms=20)
    env.addon.running()
    try:
        a = client(ip="10.0.0.9")
        env.observe.requestheaders(request_flow("watched.test", a))
        env.observe.requestheaders(request_flow("first.unlisted.test", a))
        deadline = time.monotonic() + 10
        while not candidate_events(env) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        (saved,) = candidate_events(env)  # written by the heartbeat loop
        assert [c["name"] for c in saved["candidates"]] == ["first.unlisted.test"]  # type: ignore[attr-defined]
        env.observe.requestheaders(request_flow("second.unlisted.test", a))
    finally:
        await env.addon.done()
    last = candidate_events(env)[-1]  # the stop saved what came after (within 10 minutes)
    assert len(candidate_events(env)) == 2
    assert {c["name"] for c in last["candidates"]} == {  # type: ignore[attr-defined]
        "first.unlisted.test",
        "second.unlisted.test",
    }
