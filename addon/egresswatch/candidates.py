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
holds only the app and the time, and is itself bounded. Nothing here changes the catalogue:
``egresswatch lists suggest`` writes a file a person reviews, and the monthly report lists the
candidates for review.

>>> c = Candidates(clock=lambda: 10.0)
>>> c.note_cname("cdn.example.net", "tiktok", ("cdn.example.net", "v16.tiktokcdn.com"))
>>> [(x.name, x.app, x.evidence) for x in c.snapshot()]
[('cdn.example.net', 'tiktok', {'cname': 1})]
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

__all__ = [
    "DETAIL_KIND",
    "DETAIL_LIMIT",
    "EVIDENCE_KINDS",
    "Candidate",
    "Candidates",
    "from_details",
    "to_detail",
]

#: The kinds of evidence, strongest first.
EVIDENCE_KINDS = ("cname", "certificate", "follows_hit")


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
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.dropped = 0
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

    def note_hit(self, client_key: str, app: str) -> None:
        """A client (opaque key, never stored beyond this bounded memory) hit ``app``."""
        recent = self._recent
        recent[client_key] = (app, self._clock())
        recent.move_to_end(client_key)
        while len(recent) > self._max_clients:
            recent.popitem(last=False)

    def note_unmatched(self, client_key: str, name: str) -> None:
        """A client asked for ``name``, which matches nothing: a candidate if it follows a hit."""
        last = self._recent.get(client_key)
        if last is None:
            return
        app, at = last
        gap = self._clock() - at
        if 0 <= gap <= self._window:
            self._add(name, app, "follows_hit", f"{gap:.1f}s after a hit on {app}")

    def snapshot(self) -> list[Candidate]:
        """The candidates, most evidence first (then by name)."""
        return sorted(self._items.values(), key=lambda c: (-c.weight, c.name, c.app))


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
