"""The report as data: a tree of frozen dataclasses (:class:`MonthlyReport`) and the fixed text
every rendering carries (blind spots, legal caveats).

Times are Unix seconds (UTC). :mod:`.build` fills the tree from a store; the ``render_*``
modules turn it into text and never query anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..catalogue_model import AppLike
from ..catalogue_model import CatalogueLike
from ..catalogue_model import RegimeLike
from ..config_events import ExceptionTerms
from ..store import ChainHead
from .text import iso

if TYPE_CHECKING:
    from ..candidates import Candidate
    from .evasion import EvasionRow

__all__ = [
    "BLIND_SPOTS",
    "GAP_THRESHOLD_SECONDS",
    "LEGAL_CAVEATS",
    "AppLike",
    "CatalogueLike",
    "CatalogueVersion",
    "ConfigVersion",
    "Coverage",
    "DailyRow",
    "DepartmentRow",
    "ExceptionRecord",
    "Findings",
    "Gap",
    "Integrity",
    "MonthlyReport",
    "PolicyVersion",
    "RegimeInfo",
    "RegimeLike",
    "RegimeRow",
    "TopRow",
    "Total",
    "VerifiedRange",
]

#: Heartbeat silence longer than this is a coverage gap (the addon beats once a minute).
GAP_THRESHOLD_SECONDS = 150.0

BLIND_SPOTS: tuple[tuple[str, str], ...] = (
    (
        "DNS over HTTPS / DNS over TLS",
        "Clients that resolve names through an encrypted resolver are not seen in dns mode; their "
        "connections are still seen by name (CONNECT, SNI) when they go through the proxy.",
    ),
    (
        "Encrypted Client Hello (ECH)",
        "With ECH the real server name is encrypted; only the outer (public) name is visible, so "
        "the app may go unattributed unless the connection also names it another way.",
    ),
    (
        "Certificate pinning",
        "Apps that pin certificates fail when traffic is decrypted; in the default metadata-only "
        "mode they are still counted, but a block page cannot be shown to them.",
    ),
    (
        "QUIC / HTTP/3 not proxied",
        "UDP traffic that bypasses the proxy (no transparent or WireGuard mode) is invisible; "
        "blocking QUIC where it is proxied makes clients fall back to TCP, where they are seen.",
    ),
    (
        "Apps installed but not used",
        "A proxy sees use on the network, never presence on a device. Evidence of absence needs "
        "an MDM or software inventory.",
    ),
    (
        "Off-network and unproxied devices",
        "Devices on mobile data, home networks or any egress path that does not pass a proxy "
        "instance are not covered; see the coverage section for proxy downtime.",
    ),
    (
        "Tail truncation of the event log",
        "The per-instance hash chain detects edited, deleted, inserted and reordered rows, but "
        "not the removal of the newest rows (or a full rewrite) by someone who controls the "
        "database, unless the chain head was recorded elsewhere: keep this report's chain heads "
        "(and its SHA-256) outside the database.",
    ),
)

LEGAL_CAVEATS: tuple[str, ...] = (
    "Executive Order 13971 (5 January 2021; Alipay, CamScanner, QQ Wallet, SHAREit, Tencent QQ, "
    "VMate, WeChat Pay, WPS Office) was revoked by Executive Order 14034 on 9 June 2021 "
    "(86 FR 31423). Apps listed under it are an organisation-designated list originally named "
    "in EO 13971, not a current legal ban.",
    "FAR 52.204-27 (Prohibition on a ByteDance Covered Application) is in force for federal "
    "contractors; proxy evidence shows use on managed networks, not absence on devices.",
    "Counts in this report are exact counts of recorded events; Prometheus figures for the same "
    "period are monitoring estimates only.",
)


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch of the period an instance did not cover; ``reason`` says why we think so."""

    start: float
    end: float
    reason: str  # "heartbeat-silence" | "stopped" | "not-running"

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Coverage:
    instance: str
    first_seen: float | None
    last_seen: float | None
    covered_seconds: float
    period_seconds: float
    starts: int
    stops: int
    heartbeats: int
    gaps: tuple[Gap, ...]
    versions: tuple[str, ...]  # egresswatch versions from start events

    @property
    def percent(self) -> float:
        if self.period_seconds <= 0:
            return 0.0
        return 100.0 * self.covered_seconds / self.period_seconds


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """A catalogue or policy version in force during the period, and where."""

    version: str
    first_seen: float
    last_seen: float
    loads: int  # config events in the period (0: loaded before the month, still in force)
    instances: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CatalogueVersion(ConfigVersion):
    files: tuple[str, ...]
    entries: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class PolicyVersion(ConfigVersion):
    file: str
    default: str
    dry_run: bool | None
    modes: tuple[tuple[str, str], ...]
    evasion: tuple[tuple[str, str], ...] = ()  # the evasion keys (empty: recorded before them)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExceptionRecord(ExceptionTerms):
    """An exception of the register over the period: its terms, then how it stood."""

    ticket: str
    expires: str  # as written in the policy
    expires_at: float | None  # end of the expiry date (UTC) or the exact datetime
    first_seen: float  # first config event listing it
    in_force: bool  # in force at some time during the period
    granted: bool  # first listed during the period
    expired: bool  # expired during the period


@dataclass(frozen=True, slots=True)
class Total:
    app: str
    action: str
    events: int
    distinct_clients: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class RegimeRow:
    app: str
    regime: str
    action: str
    events: int
    distinct_clients: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class DepartmentRow:
    app: str
    department: str
    action: str
    events: int
    distinct_clients: int


@dataclass(frozen=True, slots=True)
class TopRow:
    key: str  # a client identity or a hostname
    events: int
    apps: tuple[str, ...]
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class DailyRow:
    day: str
    app: str
    events: int


@dataclass(frozen=True, slots=True)
class VerifiedRange:
    """Rows ``from_seq..to_seq`` of ``instance`` were verified by run ``run_id`` at ``at``:
    ``mode`` ``"full"`` (from the first row or the prune checkpoint) or ``"incremental"``
    (continuing from the run before); ``now`` when by the run this report made."""

    instance: str
    from_seq: int
    to_seq: int
    mode: str
    run_id: int | None
    at: float
    now: bool

    def describe(self) -> str:
        how = "in full" if self.mode == "full" else "incrementally"
        run = f"run #{self.run_id}" if self.run_id is not None else "run not recorded"
        when = "now" if self.now else f"at {iso(self.at)}"
        if self.to_seq < self.from_seq:
            return f"no rows after #{self.to_seq} (checked {how} {when}, {run})"
        return f"rows {self.from_seq}..{self.to_seq} verified {how} {when} ({run})"


@dataclass(frozen=True, slots=True)
class Integrity:
    verified: bool  # False when verification was skipped
    ok: bool
    # Rows read by this verification and the earlier runs it builds on (all of the chain's rows
    # since the first row or the prune checkpoint, when nothing was tampered with).
    checked: int
    heads: tuple[ChainHead, ...]  # the store's own records, by instance
    problems: tuple[str, ...]
    mode: str = ""  # "full" | "incremental" ("" when not verified)
    checked_now: int = 0  # rows recomputed while building this report
    provenance: tuple[VerifiedRange, ...] = ()  # per instance, oldest first

    def provenance_lines(self) -> tuple[str, ...]:
        """One line per instance: which rows were verified when, and the chain head."""
        out = []
        for h in self.heads:
            parts = [r.describe() for r in self.provenance if r.instance == h.instance]
            out.append(
                f"{h.instance}: {'; '.join(parts) or 'no rows'}; chain head #{h.seq} {h.chain_hash}"
            )
        return tuple(out)


@dataclass(frozen=True, slots=True)
class RegimeInfo:
    id: str
    title: str
    status: str  # at the end of the period: in_force | revoked | not_yet_effective | unknown
    revoked: str | None
    citation: str


@dataclass(frozen=True, slots=True)
class Findings:
    """The figure tables, each grouped in the store (:mod:`.build`)."""

    totals: tuple[Total, ...]
    by_regime: tuple[RegimeRow, ...]
    by_department: tuple[DepartmentRow, ...]
    top_clients: tuple[TopRow, ...]
    top_hosts: tuple[TopRow, ...]
    daily: tuple[DailyRow, ...]


@dataclass(frozen=True, slots=True)
class MonthlyReport(Findings):
    """The whole report: the figure tables (:class:`Findings`) and everything around them."""

    month: str
    period_start: float
    period_end: float
    generated_at: float
    partial: bool  # generated before the period ended
    organisation: str | None
    egresswatch_version: str
    store: str
    instances: tuple[str, ...]
    client_identity: str  # address | hash | none | mixed | unknown
    coverage: tuple[Coverage, ...]
    catalogues: tuple[CatalogueVersion, ...]
    policies: tuple[PolicyVersion, ...]
    exceptions: tuple[ExceptionRecord, ...]
    days: tuple[str, ...]
    apps: tuple[tuple[str, str], ...]  # (id, display name) of every app with hits
    regimes: tuple[RegimeInfo, ...]
    integrity: Integrity
    top_n: int
    # start/stop/heartbeat/config rows in the period (0: pruned or never written)
    lifecycle_rows: int
    # encrypted-DNS bypass and hidden ECH (report/evasion.py)
    evasion: tuple[EvasionRow, ...] = ()
    # discovery candidates persisted by the proxies (report/evasion.py), for review
    candidates: tuple[Candidate, ...] = ()
    # (app name, what is known to be missing) for apps whose catalogue entry says it is thin
    catalogue_limits: tuple[tuple[str, str], ...] = ()

    @property
    def blind_spots(self) -> tuple[tuple[str, str], ...]:
        """What the proxy cannot see (:data:`BLIND_SPOTS`), then the catalogue's known limits."""
        return BLIND_SPOTS + tuple(
            (f"Thin catalogue: {name}", text) for name, text in self.catalogue_limits
        )

    @property
    def lifecycle_note(self) -> str:
        """Why coverage and configuration may be empty although there are findings."""
        if self.lifecycle_rows or not self.totals:
            return ""
        return (
            "No start, stop, heartbeat or config rows were found for this period (raw events "
            "pruned by a version without the lifecycle archive, or never written): coverage and "
            "configuration cannot be reported; the findings come from the daily rollups and are "
            "complete."
        )
