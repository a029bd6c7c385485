"""The report's evasion section: encrypted-DNS bypass, hidden ECH and HTTP/3 advertisements
(Alt-Svc), seen and blocked (stripped).

Evasion events (signals ``encrypted_dns``, ``ech``, ``alt_svc``; ``proxy/evasion.py``,
``proxy/altsvc.py``) are HIT rows with no app, so the daily rollups hold them under app ``""``
with their host: the resolver's name or address, the ECH outer public name, or the designated
name whose response advertised HTTP/3. :func:`evasion_rows` reads them from one grouped query
(``store.summarise`` by app, regime, host, action: a few rows). An Alt-Svc event records the
policy key that decided it (``decided_by`` ``policy``, ``decided_id`` ``alt_svc``), which the
rollups keep as its ``regime``; the others are sorted into their kind with the bundled
categories (a resolver's name or address is encrypted DNS; any other host is the public name of
a hidden ECH connection). The app-attributed signals (``cname``, ``dns_correlated``, app
HTTPDNS) are the apps' own hits, in the totals; the rollups do not keep the signal, so the
section names them and points to the metrics and the event store.

>>> from egresswatch.categories import Categories
>>> rows = evasion_rows([("", "", "dns.google", "blocked", 3, 1, 0.0, 1.0)],
...                     Categories(), resolver_of=lambda h: "google-dns")
>>> rows[0].kind, rows[0].name, rows[0].blocked
('encrypted_dns', 'google-dns', True)
>>> evasion_table(evasion_rows([("", "alt_svc", "www.app.test", "blocked", 2, 1, 0.0, 1.0)],
...                            Categories()))
[('HTTP/3 advertised (Alt-Svc)', 'www.app.test', 'stripped', 2, 1)]
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass

from egresswatch.candidates import Candidate
from egresswatch.candidates import from_details
from egresswatch.categories import Categories
from egresswatch.events import Event
from egresswatch.events import EventKind

__all__ = [
    "CANDIDATE_HEAD",
    "EVASION_BLIND_SPOTS",
    "candidate_table",
    "candidates_of",
    "EVASION_HEAD",
    "EVASION_NOTES",
    "EvasionRow",
    "evasion_rows",
    "evasion_summary",
    "evasion_table",
]

#: The section's table columns.
EVASION_HEAD = (
    "kind",
    "resolver / public name / host",
    "action",
    "events",
    "distinct clients (at least)",
)
#: The rollup ``regime`` of an Alt-Svc event (the policy key that decided it).
ALT_SVC = "alt_svc"
_KIND = {
    "encrypted_dns": "encrypted DNS",
    "ech": "hidden ECH",
    ALT_SVC: "HTTP/3 advertised (Alt-Svc)",
}
#: How an Alt-Svc row's action reads: the header was seen, stripped, or would be stripped.
_ALT_SVC_ACTION = {"monitor": "seen", "blocked": "stripped", "would_block": "would strip"}

#: What the section says is seen through the apps' own hits (no row of its own here).
EVASION_NOTES: tuple[tuple[str, str], ...] = (
    (
        "CNAME chains and answer ranges (signal cname)",
        "DNS queries whose answer led to a designated name or range count as the app's hits "
        "above (blocked ones were answered NXDOMAIN).",
    ),
    (
        "DNS correlation (signal dns_correlated)",
        "Connections without a usable name (IP literals, no SNI, hidden ECH) to an address a "
        "designated name had resolved to count as the app's hits above.",
    ),
    (
        "App HTTPDNS",
        "Hits on the apps' built-in DNS services (catalogue entries tagged httpdns) are the "
        "apps' hits above; egresswatch_httpdns_total counts them apart.",
    ),
)

#: What stays invisible even with the evasion signals (docs/attribution.md).
EVASION_BLIND_SPOTS: tuple[str, ...] = (
    "Encrypted resolvers not in the bundled list, or resolver addresses on ports other than "
    "443/853.",
    "Real ECH to a front end not in the bundled list, with no ECH advertisement seen in DNS and "
    "no name asked of the proxy: counted as an ECH-capable client only.",
    "Addresses resolved outside the proxy's sight (app HTTPDNS, encrypted DNS) and used with "
    "an SNI the catalogue does not know.",
    "HTTP/3 advertised where the proxy does not decrypt (Alt-Svc is read in decrypted "
    "responses only) or in DNS HTTPS records (alpn=h3): QUIC connections that follow are seen "
    "by their SNI only in transparent-type modes.",
)


@dataclass(frozen=True, slots=True)
class EvasionRow:
    """One kind (``encrypted_dns``, ``ech`` or ``alt_svc``), name (resolver id, the ECH public
    name, or the host that advertised HTTP/3) and action, with its events and distinct clients in the period."""

    kind: str
    name: str
    action: str
    events: int
    distinct_clients: int
    first_seen: float
    last_seen: float

    @property
    def blocked(self) -> bool:
        return self.action == "blocked"


#: (app, regime, host, action, events, distinct clients, first seen, last seen)
Summary = tuple[str, str, str, str, int, int, float, float]


def evasion_rows(
    summaries: Iterable[Summary],
    categories: Categories,
    *,
    resolver_of: Callable[[str], str | None] | None = None,
) -> tuple[EvasionRow, ...]:
    """Rows of (app, regime, host, action, events, distinct clients, first, last) -> the
    section's rows (only those with no app), merged per (kind, name, action)."""
    find = resolver_of or categories.resolver
    merged: dict[tuple[str, str, str], list[float]] = {}
    for app, regime, host, action, events, clients, first, last in summaries:
        if app:
            continue
        resolver = find(host) if regime != ALT_SVC else None
        if regime == ALT_SVC:
            key = (ALT_SVC, host, action)
        elif resolver:
            key = ("encrypted_dns", resolver, action)
        else:
            key = ("ech", host, action)
        agg = merged.get(key)
        if agg is None:
            merged[key] = [events, clients, first, last]
        else:
            # a resolver reached by several names: clients may overlap, so keep the largest
            # (a lower bound; the column says so)
            agg[0] += events
            agg[1] = max(agg[1], clients)
            agg[2], agg[3] = min(agg[2], first), max(agg[3], last)
    return tuple(
        EvasionRow(k, n, a, int(v[0]), int(v[1]), v[2], v[3])
        for (k, n, a), v in sorted(merged.items())
    )


def evasion_table(rows: Iterable[EvasionRow]) -> list[tuple[str, str, str, int, int]]:
    """The section's table: one line per row, in :data:`EVASION_HEAD` order."""
    return [
        (
            _KIND.get(r.kind, r.kind),
            r.name,
            _ALT_SVC_ACTION.get(r.action, r.action) if r.kind == ALT_SVC else r.action,
            r.events,
            r.distinct_clients,
        )
        for r in rows
    ]


def evasion_summary(rows: Iterable[EvasionRow]) -> str:
    """One sentence: what was seen and what was blocked (Alt-Svc: stripped)."""
    seen = blocked = stripped = 0
    for r in rows:
        seen += r.events
        if r.blocked and r.kind == ALT_SVC:
            stripped += r.events
        elif r.blocked:
            blocked += r.events
    if not seen:
        return (
            "No connection to a listed encrypted-DNS resolver, no hidden ECH name and no HTTP/3 "
            "advertisement for a designated name was recorded in the period."
        )
    text = f"{seen} evasion events recorded in the period, {blocked} of them blocked"
    if stripped:
        text += f", {stripped} HTTP/3 advertisements (Alt-Svc) stripped"
    return text + "."


#: The "candidates for review" table's columns.
CANDIDATE_HEAD = ("name", "app", "evidence", "example")


def candidates_of(lifecycle: Iterable[Event], limit: int = 50) -> tuple[Candidate, ...]:
    """The discovery candidates persisted by the proxies in the period (CONFIG rows with
    ``detail.kind = "candidates"``), merged, strongest first, at most ``limit``."""
    details: list[object] = [
        dict(e.detail) for e in lifecycle if e.kind == EventKind.CONFIG and e.detail is not None
    ]
    return tuple(from_details(details)[:limit])


def candidate_table(candidates: Iterable[Candidate]) -> list[tuple[str, str, str, str]]:
    return [
        (
            c.name,
            c.app,
            ", ".join(f"{k} x{n}" for k, n in sorted(c.evidence.items())),
            next(iter(c.examples.values()), ""),
        )
        for c in candidates
    ]
