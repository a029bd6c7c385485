"""Discovery: names the catalogue does not have yet, tied to a designated app by evidence.

The catalogue is research; traffic shows what research missed. :class:`Candidates` collects
names that match no rule but point at a designated app, each with the evidence that ties it:

* ``cname``: the name resolved through a CNAME chain to a designated name;
* ``certificate``: an upstream certificate for the name (where the proxy sees one: decryption,
  or TLS 1.2) names a designated app's domain in its SANs or its vendor in the subject's
  organisation;
* ``follows_hit``: the name was first asked for by a client within ``window`` seconds after
  that client's designated hit (weak alone; strong when many clients repeat it).

It is bounded (``max_names``, least-evidenced names out first) and keeps **no client
identity**: the per-client memory of the last hit is keyed by an opaque key the caller derives,
holds only the app, the time and the names already credited to that hit (at most
:data:`MAX_PER_HIT`), and is itself bounded (``max_clients``).

:func:`certificate_names` reads the SANs and subject organisations of an upstream certificate
(``cryptography`` x509) and :func:`certificate_apps` says which designated apps they name: a SAN
(a wildcard stripped to its base) that the catalogue matches, or an organisation an app lists
(``organisations:`` in its catalogue file). Nothing here changes the catalogue:
``egresswatch lists suggest`` writes a file a person reviews, and the monthly report lists the
candidates for review.

>>> c = Candidates(clock=lambda: 10.0)
>>> c.note_cname("cdn.example.net", "tiktok", ("cdn.example.net", "v16.tiktokcdn.com"))
>>> [(x.name, x.app, x.evidence) for x in c.snapshot()]
[('cdn.example.net', 'tiktok', {'cname': 1})]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from cryptography import x509
from cryptography.x509.oid import NameOID

from .hostnames import parse_ip

__all__ = [
    "DETAIL_KIND",
    "DETAIL_LIMIT",
    "EVIDENCE_KINDS",
    "MAX_PER_HIT",
    "MAX_SANS",
    "Candidate",
    "Candidates",
    "certificate_apps",
    "certificate_names",
    "from_details",
    "to_detail",
]

#: The kinds of evidence, strongest first.
EVIDENCE_KINDS = ("cname", "certificate", "follows_hit")
#: Names credited to one hit of one client (a client that asks for hundreds of names right after
#: a hit is not evidence for each of them).
MAX_PER_HIT = 32
#: SANs read from one certificate (shared CDN certificates carry hundreds; the first ones do).
MAX_SANS = 100


def _never(_name: str) -> bool:
    return False


@dataclass
class Candidate:
    """One name and the evidence collected for it (counts per kind, an example of each)."""

    name: str
    app: str
    first_seen: float
    last_seen: float
    evidence: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def weight(self) -> int:
        """How much evidence: strong kinds count ten times a co-occurrence."""
        return sum(n * (1 if kind == "follows_hit" else 10) for kind, n in self.evidence.items())


class Candidates:
    """Bounded, aggregated per (name, app), without client identity."""

    def __init__(
        self,
        *,
        max_names: int = 5000,
        max_clients: int = 10_000,
        window: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_names = max_names
        self._max_clients = max_clients
        self._window = window
        self._clock = clock
        self._items: dict[tuple[str, str], Candidate] = {}
        #: Per client key (least recent first): the app, the time of its last hit, the names
        #: credited to that hit so far.
        self.recent: dict[Hashable, tuple[str, float, set[str]]] = {}
        self.dropped = 0
        #: Evidence noted so far (a saver compares it to the count it last saved).
        self.noted = 0
        #: Names never credited as following a hit, besides IP literals: the caller sets it
        #: (the proxy: the public encrypted-DNS resolvers of the catalogue in force).
        self.ignore: Callable[[str], bool] = _never
        # Set once a full table holds strong candidates only: they never weaken and never
        # leave, so no later scan can find room (a flood of new names costs O(1) each, not a
        # scan of max_names).
        self._all_strong = False

    def __len__(self) -> int:
        return len(self._items)

    def _add(self, name: str, app: str, kind: str, example: str) -> None:
        now = self._clock()
        key = (name, app)
        item = self._items.get(key)
        if item is None:
            if len(self._items) >= self.max_names and not self._make_room():
                self.dropped += 1
                return
            item = self._items[key] = Candidate(name, app, now, now)
        item.last_seen = now
        item.evidence[kind] = item.evidence.get(kind, 0) + 1
        item.examples.setdefault(kind, example)
        self.noted += 1

    def _make_room(self) -> bool:
        """Drop the weakest candidate (co-occurrence only, seen least); False if all are strong."""
        if self._all_strong:
            return False
        weakest = min(self._items.values(), key=lambda c: (c.weight, c.last_seen))
        if weakest.weight >= 10:
            self._all_strong = True
            return False
        del self._items[(weakest.name, weakest.app)]
        self.dropped += 1
        return True

    def note_cname(self, name: str, app: str, chain: tuple[str, ...]) -> None:
        """``name`` resolved through ``chain`` to a name of ``app``."""
        self._add(name, app, "cname", " -> ".join(chain))

    def note_certificate(self, name: str, app: str, why: str) -> None:
        """An upstream certificate for ``name`` names ``app`` (``why``: the SAN or organisation)."""
        self._add(name, app, "certificate", why)

    def note_hit(self, client_key: Hashable, app: str) -> None:
        """A client (opaque key, never stored beyond this bounded memory) hit ``app``."""
        recent = self.recent
        recent.pop(client_key, None)  # re-inserted last: the dict's order is least recent first
        recent[client_key] = (app, self._clock(), set())
        if len(recent) > self._max_clients:
            del recent[next(iter(recent))]

    def note_unmatched(self, client_key: Hashable, name: str) -> None:
        """A client asked for ``name``, which matches nothing: a candidate if it follows a hit.

        O(1): one dictionary lookup when the client has no hit in memory (every name the
        catalogue does not match comes through here), a set lookup for a name already credited
        to the client's last hit."""
        last = self.recent.get(client_key)
        if last is None:
            return
        app, at, credited = last
        if name in credited or len(credited) >= MAX_PER_HIT:
            return
        gap = self._clock() - at
        if gap > self._window or gap < 0:
            return
        name = name.rstrip(".").lower()
        if name in credited or parse_ip(name) is not None or self.ignore(name):
            return
        credited.add(name)
        self._add(name, app, "follows_hit", f"{gap:.1f}s after a hit on {app}")

    def snapshot(self) -> list[Candidate]:
        """The candidates, most evidence first (then by name)."""
        return sorted(self._items.values(), key=lambda c: (-c.weight, c.name, c.app))


def certificate_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """The DNS SANs (at most :data:`MAX_SANS`) and the subject organisation names of ``cert``.
    A certificate whose extensions do not parse gives what could be read."""
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = [str(n) for n in ext.value.get_values_for_type(x509.DNSName)[:MAX_SANS]]
    except (x509.ExtensionNotFound, ValueError):
        pass
    try:
        orgs = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ]
    except ValueError:
        orgs = []
    return sans, orgs


def certificate_apps(
    sans: Iterable[str],
    organisations: Iterable[str],
    match: Callable[[str], str | None],
    vendors: Mapping[str, tuple[str, ...]],
) -> dict[str, str]:
    """``{app: why}`` for the apps a certificate names: a SAN the catalogue matches (``match``
    gives the app; a wildcard ``*.x`` is matched as ``x``), or a subject organisation an app
    lists (``vendors``: case-folded organisation -> apps). The first reason per app is kept.

    >>> certificate_apps(["*.cdn.example", "*.tiktokv.com"], ["Example Inc."],
    ...                  lambda n: "tiktok" if n.endswith("tiktokv.com") else None, {})
    {'tiktok': 'SAN *.tiktokv.com'}
    """
    out: dict[str, str] = {}
    for san in sans:
        base = san[2:] if san.startswith("*.") else san
        app = match(base)
        if app is not None and app not in out:
            out[app] = f"SAN {san}"
    for org in organisations:
        for app in vendors.get(org.casefold(), ()):
            out.setdefault(app, f"subject O={org}")
    return out


#: The ``kind`` of the CONFIG event detail that persists a snapshot of the candidates.
DETAIL_KIND = "candidates"
#: Candidates kept in one persisted snapshot (the strongest first).
DETAIL_LIMIT = 200


def to_detail(candidates: list[Candidate], limit: int = DETAIL_LIMIT) -> dict[str, object]:
    """A snapshot as a CONFIG event's detail (no client identity: there is none to give)."""
    return {
        "kind": DETAIL_KIND,
        "candidates": [
            {
                "name": c.name,
                "app": c.app,
                "first_seen": c.first_seen,
                "last_seen": c.last_seen,
                "evidence": dict(c.evidence),
                "examples": dict(c.examples),
            }
            for c in candidates[:limit]
        ],
    }


def from_details(details: list[object]) -> list[Candidate]:
    """Merge persisted snapshots (CONFIG details, oldest first) into one list, strongest first.

    A snapshot is cumulative for the proxy process that wrote it, so per (name, app) the
    largest count of each kind is kept, not the sum. Entries of the wrong shape are skipped."""
    merged: dict[tuple[str, str], Candidate] = {}
    for d in details:
        if not isinstance(d, dict) or d.get("kind") != DETAIL_KIND:
            continue
        items = d.get("candidates")
        for item in items if isinstance(items, list) else ():
            try:
                name, app = str(item["name"]), str(item["app"])
                first, last = float(item["first_seen"]), float(item["last_seen"])
                evidence = {str(k): int(v) for k, v in dict(item["evidence"]).items()}
                examples = {str(k): str(v) for k, v in dict(item.get("examples", {})).items()}
            except (KeyError, TypeError, ValueError):
                continue
            c = merged.get((name, app))
            if c is None:
                merged[(name, app)] = Candidate(name, app, first, last, evidence, examples)
                continue
            c.first_seen, c.last_seen = min(c.first_seen, first), max(c.last_seen, last)
            for kind, n in evidence.items():
                c.evidence[kind] = max(c.evidence.get(kind, 0), n)
            for kind, ex in examples.items():
                c.examples.setdefault(kind, ex)
    return sorted(merged.values(), key=lambda c: (-c.weight, c.name, c.app))
