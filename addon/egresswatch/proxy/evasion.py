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
from egresswatch.categories import ENCRYPTED_DNS
from egresswatch.categories import TLS_PORTS
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.events import Signal
from egresswatch.events import new_event_id
from egresswatch.policy import Decision

if TYPE_CHECKING:
    from egresswatch.proxy.observe import Observer
    from egresswatch.proxy.observe import Verdict
    from egresswatch.proxy.state import State

__all__ = ["HTTPDNS_DETAIL", "encrypted_dns", "evasion_event"]

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
