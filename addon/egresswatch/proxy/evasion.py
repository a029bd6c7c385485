"""Evasion signals that are not hits on a designated app: encrypted-DNS bypass and hidden ECH.

``Observer.observe`` calls :func:`encrypted_dns` for a name (or an address) that matched no
designated app: a connection to a public DoH/DoT/DoQ resolver (``State.categories``) is a
bypass of the organisation's DNS, counted per resolver (``egresswatch_encrypted_dns_total``),
recorded as an event (signal ``encrypted_dns``, no app, the resolver in ``detail``) and decided
by the policy's ``encrypted_dns`` key. Its verdict is returned like an app's, so the hook that
saw it refuses it the same way (CONNECT 403, SOCKS/transparent refusal, TLS/QUIC cut).

Addresses count only on the TLS ports (443 DoH/DoQ, 853 DoT): port 53 is plain DNS, which the
proxy sees. Names count on any port. The DNS signal itself (a query for ``dns.google``) is not a
bypass: the query is visible.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mitmproxy.connection import Client

from egresswatch import hostnames
from egresswatch.catalogue_model import DomainRule
from egresswatch.categories import ENCRYPTED_DNS
from egresswatch.categories import TLS_PORTS
from egresswatch.categories import designated_frontend
from egresswatch.ech import ECH_EXTENSION
from egresswatch.ech import classify
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.events import Signal
from egresswatch.events import new_event_id
from egresswatch.matcher import Match
from egresswatch.policy import Decision

if TYPE_CHECKING:
    from mitmproxy.proxy.context import Context
    from mitmproxy.tls import ClientHello

    from egresswatch.proxy.observe import Observer
    from egresswatch.proxy.observe import Verdict
    from egresswatch.proxy.state import State

__all__ = ["ECH_KEY", "HTTPDNS_DETAIL", "ech", "ech_extension", "encrypted_dns", "evasion_event"]

_ECH_CODE = ECH_EXTENSION.to_bytes(2, "big")

#: The ``ConnState.apps`` key of a connection's hidden-ECH verdict.
ECH_KEY = "ech"

logger = logging.getLogger("egresswatch")

#: The detail of a hit on an app's built-in DNS service (a catalogue entry tagged ``httpdns``).
HTTPDNS_DETAIL = {
    "httpdns": True,
    "explanation": "app resolving names behind the organisation's back: a request to the "
    "vendor's built-in DNS-over-HTTP service, whose answers the organisation's DNS never sees",
}

_BYPASS = (
    "DNS bypass: a connection to the public encrypted-DNS resolver {name}; names resolved "
    "through it never reach the organisation's DNS (nor the proxy's DNS correlation)"
)


def encrypted_dns(
    obs: Observer,
    st: State,
    raw: str,
    signal: Signal,
    client: Client,
    port: int | None,
    user: str | None,
) -> Verdict | None:
    """Count, record and decide a connection to a public encrypted-DNS resolver (None: not one,
    or the policy's ``encrypted_dns`` is off). Once per resolver per client connection."""
    from egresswatch.proxy.observe import Verdict

    cats = st.categories
    if cats.matcher is None or signal is Signal.DNS:
        return None
    match = cats.matcher.match(raw)
    if match is None or match.app not in cats.resolvers:
        return None
    if hostnames.parse_ip(raw) is not None and port not in TLS_PORTS:
        return None  # plain DNS to the resolver's address: visible, not a bypass
    key = f"{ENCRYPTED_DNS}:{match.app}"
    conn = obs.connection(client)
    if conn is not None:
        seen = conn.apps.get(key)
        if seen is not None:
            return seen
        user = user or conn.user
    peer = client.peername[0] if client.peername else None
    client_ip = str(peer) if peer is not None else None
    decision = st.policy.decide_evasion(st.policy.encrypted_dns, client_ip)
    if decision is None:
        return None
    verdict = Verdict(match, decision, new_event_id())
    conn = obs.conn_state(client)
    conn.apps[key] = verdict
    assert obs.metrics is not None
    obs.metrics.encrypted_dns(match.app, decision.action)
    obs.emit(
        evasion_event(
            obs,
            verdict,
            Signal.ENCRYPTED_DNS,
            client_ip,
            user,
            {
                "category": ENCRYPTED_DNS,
                "resolver": match.app,
                "resolver_name": cats.name(match.app),
                "via": str(signal),
                "explanation": _BYPASS.format(name=cats.name(match.app)),
            },
        )
    )
    if verdict.blocked:
        logger.info(
            "egresswatch: blocked encrypted DNS %s resolver=%s signal=%s event=%s",
            match.host,
            match.app,
            signal,
            verdict.event_id,
        )
    return verdict


def evasion_event(
    obs: Observer,
    verdict: Verdict,
    signal: Signal,
    client_ip: str | None,
    user: str | None,
    detail: dict[str, object],
) -> Event:
    """The HIT event of an evasion signal: no app (``detail`` says what was seen)."""
    st = obs.state
    decision: Decision = verdict.decision
    now = obs.clock()
    return Event(
        ts=now,
        kind=EventKind.HIT,
        instance=obs.settings.instance,
        event_id=verdict.event_id,
        signal=signal,
        host=verdict.match.host,
        action=decision.action,
        rule=verdict.match.rule.domain,
        client=obs.settings.identity.of(client_ip) if client_ip else None,
        user=user,
        department=decision.department,
        catalogue_version=st.catalogue.version if st is not None else "",
        policy_version=st.policy.version if st is not None else "",
        detail=detail,
    )


def ech_extension(hello: ClientHello) -> bytes | None:
    """The body of the ClientHello's ``encrypted_client_hello`` extension (None: absent).

    Most ClientHellos of non-browser clients carry none: the raw bytes are searched for the
    code point first (one ``in`` over about 500 bytes) before the extensions are listed."""
    raw = getattr(hello, "_raw_bytes", None)
    if isinstance(raw, bytes) and _ECH_CODE not in raw:
        return None
    for kind, body in hello.extensions:
        if kind == ECH_EXTENSION:
            return body
    return None


def _asked(context: Context) -> str | None:
    """The name the client asked the proxy for (CONNECT or SOCKS5 target), if a name."""
    server = context.server.address
    if server is None or not isinstance(server[0], str) or hostnames.parse_ip(server[0]):
        return None
    return server[0].rstrip(".").lower()


def _designated_outer(st: State, outer: str, frontend: str | None) -> bool:
    """Whether an ECH public name is a designated vendor's client-facing name (the policy's
    ``ech: {scope: designated}``): a name the catalogue designates, or a name of an ECH front
    end whose vendor is a designated app's (``categories.designated_frontend``)."""
    if st.matcher.match(outer) is not None:
        return True
    return frontend is not None and designated_frontend(st.categories, st.catalogue, frontend)


def ech(
    obs: Observer, st: State, hello: ClientHello, context: Context, *, count: bool = True
) -> Verdict | None:
    """Classify the ClientHello's ECH (``egresswatch.ech.classify``): ``capable`` and
    ``malformed`` are counted (``count``) and nothing else (GREASE is never an alarm); ``hidden``
    is an event of its own (signal ``ech``, the outer public name as its host), decided by the
    policy's ``ech`` key, once per connection. Returns the hidden verdict (None otherwise)."""
    from egresswatch.proxy.observe import Verdict

    client = context.client
    conn = obs.connection(client)
    if conn is not None:
        seen = conn.apps.get(ECH_KEY)
        if seen is not None:
            return seen
    body = ech_extension(hello)
    if body is None:
        return None
    m = obs.metrics
    assert m is not None
    outer = (hello.sni or "").rstrip(".").lower() or None
    asked = _asked(context)
    verdict_of = classify(
        outer,
        body,
        public_names=st.categories.public_names,
        advertised=obs.ech_advertised,
        asked_name=asked,
    )
    if verdict_of.verdict != "hidden" or outer is None:
        if count:
            m.ech(verdict_of.verdict)
        return None
    peer = client.peername[0] if client.peername else None
    client_ip = str(peer) if peer is not None else None
    found = st.categories.matcher.match(outer) if st.categories.matcher is not None else None
    designated = _designated_outer(st, outer, found.app if found is not None else None)
    decision = st.policy.decide_evasion(st.policy.ech_mode(designated), client_ip)
    if decision is None:
        return None
    frontend = found.app if found is not None else ECH_KEY
    rule = DomainRule(outer, "exact", frontend, "ech.classify", "high", ("ech",), "", (), "", 0)
    match = Match(outer, frontend, (frontend,), rule, ())
    verdict = Verdict(match, decision, new_event_id())
    conn = obs.conn_state(client)
    conn.apps[ECH_KEY] = verdict
    m.ech("hidden", decision.action)
    detail: dict[str, object] = {
        "public_name": outer,
        "reason": verdict_of.reason,
        "explanation": "Encrypted ClientHello: the real name is encrypted; "
        f"{outer} is the client-facing server's public name, not the destination",
    }
    if found is not None:
        detail["frontend"] = found.app
    if designated:
        detail["designated_vendor"] = True
    if asked:
        detail["asked"] = asked
    obs.emit(evasion_event(obs, verdict, Signal.ECH, client_ip, conn.user, detail))
    if verdict.blocked:
        logger.info("egresswatch: blocked ECH to %s event=%s", outer, verdict.event_id)
    return verdict
