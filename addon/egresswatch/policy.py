"""What to do with a hit: actions per regime and per app, dry-run, exceptions and departments.

A policy is a small YAML file (``--policy FILE``; every key is optional) checked against the
catalogue when it is loaded. :func:`load_policy` returns an immutable :class:`Policy` or raises
:class:`PolicyError` listing every problem as ``file:line: reason``. The hot path is
:meth:`Policy.decide`, which reads only tables built at load time.

Precedence, for each app of a match:

1. an ``apps:`` rule for the app decides (regime label ``"app"``);
2. otherwise the strictest ``regimes:`` rule among the app's regimes (``block`` > ``monitor`` >
   ``off``; ties go to the regime id that sorts first), skipping regimes that are not in force
   when ``only_in_force`` is set (the regime id is the label);
3. otherwise ``default`` (label ``"default"``).

A name shared by several apps takes the strictest of their results (ties: the first app of the
match). ``off`` means no event at all: :meth:`Policy.decide` returns ``None``. Otherwise a
matching, unexpired exception turns the hit into ``exempted`` (traffic passes, whatever the
action); a ``block`` becomes ``would_block`` under ``dry_run``.

>>> from types import SimpleNamespace as NS
>>> from datetime import UTC, datetime
>>> cat = NS(apps={"tiktok": NS(regimes=("r1",))}, regimes={"r1": NS(status=lambda on: "in_force")})
>>> policy = Policy(cat, regime_rules={"r1": Mode.BLOCK}, dry_run=True)
>>> m = NS(app="tiktok", apps=("tiktok",), regimes=("r1",))
>>> policy.decide(m, "10.0.0.1", None, datetime(2026, 1, 1, tzinfo=UTC))
Decision(action=<Action.WOULD_BLOCK: 'would_block'>, regime='r1', exception_id=None, department='other')

Exceptions (``PolicyError`` is a ``ValueError``)::

    ValueError
     └── PolicyError        .problems: list[catalogue.Problem]; str() == "file:line: reason"
                            (line 0: the file as a whole, e.g. unreadable)
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import yaml

from egresswatch.catalogue import Problem
from egresswatch.config_events import DepartmentDetail
from egresswatch.config_events import ExceptionDetail
from egresswatch.config_events import PolicyLoaded
from egresswatch.events import Action
from egresswatch.timeutil import as_utc

__all__ = [
    "BUILTIN_VERSION",
    "MAX_DEPARTMENTS",
    "Decision",
    "Department",
    "ExceptionRule",
    "Mode",
    "Policy",
    "PolicyError",
    "Problem",
    "load_policy",
]

logger = logging.getLogger(__name__)

BUILTIN_VERSION = "builtin"
"""``Policy.version`` of the built-in default policy (no file)."""

MAX_DEPARTMENTS = 50
"""Above this many departments a warning is logged: each name is a metric label value."""

OTHER = "other"
UNKNOWN = "unknown"
_RESERVED_DEPARTMENTS = frozenset({OTHER, UNKNOWN})
_DEPARTMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

type _IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type _IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Mode(StrEnum):
    """A configured action (``monitor`` counts only, ``block`` blocks, ``off`` ignores)."""

    MONITOR = "monitor"
    BLOCK = "block"
    OFF = "off"


_STRICTNESS = {Mode.OFF: 0, Mode.MONITOR: 1, Mode.BLOCK: 2}


# The catalogue and matcher types as the policy sees them: structural, so that any object with
# these attributes (the real ``catalogue.Catalogue``/``matcher.Match`` or a test stand-in) works.
class _AppLike(Protocol):
    @property
    def regimes(self) -> Sequence[str]: ...


class _RegimeLike(Protocol):
    def status(self, on: date) -> str: ...


class CatalogueLike(Protocol):
    @property
    def apps(self) -> Mapping[str, _AppLike]: ...

    @property
    def regimes(self) -> Mapping[str, _RegimeLike]: ...


class MatchLike(Protocol):
    @property
    def app(self) -> str: ...

    @property
    def apps(self) -> Sequence[str]: ...

    @property
    def regimes(self) -> Sequence[str]: ...


#: Distinct client addresses whose parse and department are remembered between decisions.
_CLIENT_CACHE = 4096


class PolicyError(ValueError):
    """A policy file that cannot be used; ``problems`` lists every reason with its line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Decision:
    """What the addon does with a hit.

    ``regime`` is the regime id that set the action, ``"app"`` for an app rule, ``"default"``
    otherwise: a bounded metric label. ``department`` is a configured department name,
    ``"other"`` (no CIDR contains the client) or ``"unknown"`` (no usable client address).
    """

    action: Action
    regime: str
    exception_id: str | None
    department: str

    @property
    def lets_through(self) -> bool:
        """False only for ``blocked``: monitor, would_block and exempted traffic passes."""
        return self.action is not Action.BLOCKED


@dataclass(frozen=True, slots=True)
class Department:
    """A department name and the client networks that belong to it."""

    name: str
    cidrs: tuple[str, ...]


@dataclass(frozen=True)
class ExceptionRule:
    """One entry of the exceptions register.

    It applies to a hit on any of ``apps`` (or any app of ``regimes``) when every criterion it
    lists holds: the client address is in one of ``clients`` (if any are listed) and the proxy
    user is one of ``users`` (if any are listed), and ``now < expires``. ``expires`` is the
    instant the exception stops applying (a date in the file means the end of that day, UTC).
    """

    id: str
    reason: str
    approver: str
    expires: datetime
    apps: tuple[str, ...] = ()
    regimes: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    ticket: str | None = None
    line: int | None = None
    expires_text: str = ""  # as written in the file (a date means the end of that day, UTC)
    _networks: tuple[tuple[int, int, int], ...] = field(default=(), repr=False, compare=False)
    _users: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.clients and not self.users:
            raise ValueError(f"exception {self.id}: a blanket exception (no clients, no users)")
        if not self.apps and not self.regimes:
            raise ValueError(f"exception {self.id}: lists neither apps nor regimes")
        if self.expires.tzinfo is None:
            object.__setattr__(self, "expires", self.expires.replace(tzinfo=UTC))
        # (version, mask, network) integers: membership is one AND and one compare
        nets = tuple(
            (n.version, int(n.netmask), int(n.network_address))
            for n in (ipaddress.ip_network(c) for c in self.clients)
        )
        object.__setattr__(self, "_networks", nets)
        object.__setattr__(self, "_users", frozenset(self.users))

    def in_force(self, now: datetime) -> bool:
        """Whether the exception still applies at ``now`` (it stops at ``expires``)."""
        return as_utc(now) < self.expires

    def covers(self, address: _IPAddress | None, user: str | None) -> bool:
        """Whether the client (address and proxy user) is within the exception's scope."""
        if self._networks:
            if address is None:
                return False
            version, value = address.version, int(address)
            if not any(v == version and value & m == n for v, m, n in self._networks):
                return False
        return not self._users or (user is not None and user in self._users)

    def detail(self) -> ExceptionDetail:
        """As stored in the event store's CONFIG rows.

        ``expires`` is the expiry as written (``2026-12-31``); ``expires_at`` the instant it
        stops applying, in ISO form with its UTC offset (``2027-01-01T00:00:00+00:00``).
        """
        return ExceptionDetail(
            id=self.id,
            apps=tuple(self.apps),
            regimes=tuple(self.regimes),
            clients=tuple(self.clients),
            users=tuple(self.users),
            reason=self.reason,
            approver=self.approver,
            ticket=self.ticket,
            expires=self.expires_text or self.expires.isoformat(),
            expires_at=self.expires.isoformat(),
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-able form of :meth:`detail`."""
        return self.detail().to_detail()


def parse_client(raw: str | None) -> _IPAddress | None:
    """A client address as mitmproxy reports it, unwrapped from IPv4-mapped IPv6; None if unusable.

    >>> parse_client("::ffff:10.1.2.3"), parse_client("[fd00::1]"), parse_client("nope")
    (IPv4Address('10.1.2.3'), IPv6Address('fd00::1'), None)
    """
    if not raw:
        return None
    if ":" not in raw:  # fast path: most clients are IPv4
        try:
            return ipaddress.IPv4Address(raw)
        except ValueError:
            return None
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            addr = ipaddress.IPv6Address(int(addr))
    return addr


class _PrefixTable:
    """Longest-prefix lookup over integer networks, one dict per distinct prefix length.

    A lookup costs one mask and one dict probe per distinct prefix length in use, whatever the
    number of networks.
    """

    def __init__(self, bits: int, entries: Iterable[tuple[_IPNetwork, str]]) -> None:
        by_len: dict[int, dict[int, str]] = {}
        for net, name in entries:
            by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = name
        full = (1 << bits) - 1
        self._buckets = tuple(
            (full ^ ((1 << (bits - plen)) - 1), by_len[plen])
            for plen in sorted(by_len, reverse=True)
        )

    def lookup(self, value: int) -> str | None:
        for mask, nets in self._buckets:
            name = nets.get(value & mask)
            if name is not None:
                return name
        return None


class Policy:
    """An immutable, validated policy. Build it with :func:`load_policy` (or directly in tests).

    The constructor trusts its ids (``load_policy`` checks them against the catalogue) but
    computes every table :meth:`decide` needs, so the hot path does dict lookups only.
    """

    def __init__(
        self,
        catalogue: CatalogueLike,
        *,
        default: Mode = Mode.MONITOR,
        dry_run: bool = False,
        only_in_force: bool = False,
        regime_rules: Mapping[str, Mode] | None = None,
        app_rules: Mapping[str, Mode] | None = None,
        contact: str | None = None,
        departments: Sequence[Department] = (),
        exceptions: Sequence[ExceptionRule] = (),
        version: str = BUILTIN_VERSION,
        file: str | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.default = Mode(default)
        self.dry_run = dry_run
        self.only_in_force = only_in_force
        self.regime_rules: Mapping[str, Mode] = dict(regime_rules or {})
        self.app_rules: Mapping[str, Mode] = dict(app_rules or {})
        self.contact = contact
        self.version = version
        self.file = file
        self.exceptions: tuple[ExceptionRule, ...] = tuple(exceptions)
        self.department_rules: tuple[Department, ...] = tuple(departments)

        v4: list[tuple[_IPNetwork, str]] = []
        v6: list[tuple[_IPNetwork, str]] = []
        for dept in self.department_rules:
            for cidr in dept.cidrs:
                net = ipaddress.ip_network(cidr)
                (v4 if net.version == 4 else v6).append((net, dept.name))
        self._v4 = _PrefixTable(32, v4)
        self._v6 = _PrefixTable(128, v6)
        # client address text -> (parsed address, department); bounded, cleared when full.
        self._clients: dict[str | None, tuple[_IPAddress | None, str]] = {}
        names = sorted({d.name for d in self.department_rules})
        if len(names) > MAX_DEPARTMENTS:
            logger.warning(
                "policy %s: %d departments; each is a metric label value, keep it under %d",
                file or BUILTIN_VERSION,
                len(names),
                MAX_DEPARTMENTS,
            )
        self.departments: tuple[str, ...] = (*names, OTHER, UNKNOWN)

        # Exceptions indexed by app: a regime-scoped exception applies to every app of the regime.
        by_app: dict[str, list[ExceptionRule]] = {}
        for exc in self.exceptions:
            targets = set(exc.apps)
            for app_id, app in catalogue.apps.items():
                if set(app.regimes) & set(exc.regimes):
                    targets.add(app_id)
            for app_id in sorted(targets):
                by_app.setdefault(app_id, []).append(exc)
        self._exceptions_by_app = {k: tuple(v) for k, v in by_app.items()}

        # Per-app effective (mode, label). Without only_in_force it does not depend on the date;
        # with it, regimes change status only at day boundaries, so it is cached per UTC day.
        self._table_cache: tuple[date | None, dict[str, tuple[Mode, str]]] = (
            None,
            self._build_table(None),
        )

    # --- decisions -------------------------------------------------------------------------

    def _app_effective(
        self, regimes: Iterable[str], app_id: str, on: date | None
    ) -> tuple[Mode, str]:
        rule = self.app_rules.get(app_id)
        if rule is not None:
            return rule, "app"
        best: tuple[Mode, str] | None = None
        for regime_id in sorted(set(regimes)):
            mode = self.regime_rules.get(regime_id)
            if mode is None:
                continue
            if self.only_in_force:
                regime = self.catalogue.regimes.get(regime_id)
                if on is None or regime is None or regime.status(on) != "in_force":
                    continue
            if best is None or _STRICTNESS[mode] > _STRICTNESS[best[0]]:
                best = (mode, regime_id)
        return best if best is not None else (self.default, "default")

    def _build_table(self, on: date | None) -> dict[str, tuple[Mode, str]]:
        return {
            app_id: self._app_effective(app.regimes, app_id, on)
            for app_id, app in self.catalogue.apps.items()
        }

    def _table(self, now: datetime) -> tuple[date | None, dict[str, tuple[Mode, str]]]:
        if not self.only_in_force:
            return self._table_cache
        day = as_utc(now).astimezone(UTC).date()
        cached = self._table_cache
        if cached[0] != day:
            cached = (day, self._build_table(day))
            self._table_cache = cached  # one atomic rebinding: safe for concurrent readers
        return cached

    def effective(self, app_id: str, now: datetime) -> tuple[Mode, str]:
        """The (mode, regime label) the policy gives ``app_id`` at ``now``, exceptions aside."""
        day, table = self._table(now)
        found = table.get(app_id)
        if found is None:
            app = self.catalogue.apps.get(app_id)
            found = self._app_effective(app.regimes if app else (), app_id, day)
        return found

    def decide(
        self, match: MatchLike, client_ip: str | None, user: str | None, now: datetime
    ) -> Decision | None:
        """The decision for one hit, or ``None`` when the policy is ``off`` for it (no event)."""
        day, table = self._table(now)
        apps = tuple(match.apps) or (match.app,)
        best: tuple[Mode, str] | None = None
        for app_id in apps:
            eff = table.get(app_id)
            if eff is None:  # not in the catalogue the policy was built for: use the match
                eff = self._app_effective(match.regimes, app_id, day)
            if best is None or _STRICTNESS[eff[0]] > _STRICTNESS[best[0]]:
                best = eff
        assert best is not None
        mode, label = best
        if mode is Mode.OFF:
            return None
        client = self._clients.get(client_ip)
        if client is None:
            # Parsing an address costs more than the rest of the decision; clients repeat.
            address = parse_client(client_ip)
            client = (address, self._department_of(address))
            if len(self._clients) >= _CLIENT_CACHE:
                self._clients.clear()
            self._clients[client_ip] = client
        address, department = client
        if self._exceptions_by_app:
            exc = self._exception_for(apps, address, user, now)
            if exc is not None:
                return Decision(Action.EXEMPTED, label, exc.id, department)
        if mode is Mode.BLOCK:
            action = Action.WOULD_BLOCK if self.dry_run else Action.BLOCKED
        else:
            action = Action.MONITOR
        return Decision(action, label, None, department)

    def _exception_for(
        self, apps: Iterable[str], address: _IPAddress | None, user: str | None, now: datetime
    ) -> ExceptionRule | None:
        for app_id in apps:
            for exc in self._exceptions_by_app.get(app_id, ()):
                if exc.in_force(now) and exc.covers(address, user):
                    return exc
        return None

    # --- departments -----------------------------------------------------------------------

    def _department_of(self, address: _IPAddress | None) -> str:
        if address is None:
            return UNKNOWN
        table = self._v4 if address.version == 4 else self._v6
        return table.lookup(int(address)) or OTHER

    def department(self, client_ip: str | None) -> str:
        """The most specific department whose CIDR holds the client; ``other``/``unknown``."""
        return self._department_of(parse_client(client_ip))

    # --- exceptions register ---------------------------------------------------------------

    def exceptions_in_force(self, now: datetime) -> list[ExceptionRule]:
        """Exceptions that still apply at ``now``, in file order."""
        return [e for e in self.exceptions if e.in_force(now)]

    def expired_since(self, prev: datetime, now: datetime) -> list[ExceptionRule]:
        """Exceptions whose expiry falls in ``(prev, now]``: log each one once per window."""
        prev, now = as_utc(prev), as_utc(now)
        found = [e for e in self.exceptions if prev < e.expires <= now]
        return sorted(found, key=lambda e: (e.expires, e.id))

    def next_expiry(self, now: datetime) -> datetime | None:
        """The next instant after ``now`` at which an exception stops applying, if any."""
        now = as_utc(now)
        later = [e.expires for e in self.exceptions if e.expires > now]
        return min(later) if later else None

    # --- reporting -------------------------------------------------------------------------

    def modes(self, now: datetime | None = None) -> dict[str, str]:
        """Per-app effective mode: ``monitor``, ``block``, ``off`` or ``dry_run`` (block staged).

        ``now`` matters only with ``only_in_force``; it defaults to the current time.
        """
        _, table = self._table(now or datetime.now(UTC))
        out: dict[str, str] = {}
        for app_id in sorted(table):
            mode = table[app_id][0]
            out[app_id] = "dry_run" if mode is Mode.BLOCK and self.dry_run else mode.value
        return out

    def regime_labels(self) -> tuple[str, ...]:
        """Every ``Decision.regime`` value this policy can produce (bounded metric label)."""
        return tuple(sorted({"app", "default", *self.regime_rules}))

    def loaded(self, now: datetime | None = None) -> PolicyLoaded:
        """The policy as its CONFIG row records it on load (modes as in force at ``now``)."""
        return PolicyLoaded(
            version=self.version,
            file=self.file,
            default=self.default.value,
            dry_run=self.dry_run,
            only_in_force=self.only_in_force,
            contact=self.contact,
            regimes=tuple((k, v.value) for k, v in sorted(self.regime_rules.items())),
            apps=tuple((k, v.value) for k, v in sorted(self.app_rules.items())),
            modes=tuple(self.modes(now).items()),
            departments=tuple(
                DepartmentDetail(d.name, tuple(d.cidrs)) for d in self.department_rules
            ),
            exceptions=tuple(e.detail() for e in self.exceptions),
        )

    def snapshot(self, now: datetime | None = None) -> dict[str, object]:
        """JSON-able description of the policy, stored in the event store on load: the CONFIG
        row's detail without its ``kind`` (which the writer adds)."""
        detail = self.loaded(now).to_detail()
        del detail["kind"]
        return detail

    def __repr__(self) -> str:
        return f"Policy(version={self.version!r}, file={self.file!r})"


# --- loading ---------------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {
        "version",
        "default",
        "dry_run",
        "only_in_force",
        "regimes",
        "apps",
        "contact",
        "departments",
        "exceptions",
    }
)
_DEPARTMENT_KEYS = frozenset({"name", "cidrs"})
_EXCEPTION_KEYS = frozenset(
    {"id", "apps", "regimes", "clients", "users", "reason", "approver", "ticket", "expires"}
)
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"


class _Reader:
    """Walks a composed YAML node tree, collecting problems with their lines."""

    def __init__(self, file: str, catalogue: CatalogueLike) -> None:
        self.file = file
        self.catalogue = catalogue
        self.problems: list[Problem] = []

    def error(self, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.problems.append(Problem(self.file, line, message))

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG

    def mapping(
        self, node: yaml.Node, what: str, allowed: frozenset[str] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Keys (raw text) to (key node, value node); reports non-mappings, dupes, unknown keys."""
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        if self.is_null(node):
            return out
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return out
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                self.error(knode, f"{what}: keys must be plain names")
                continue
            key = str(knode.value)
            if key in out:
                first = out[key][0].start_mark.line + 1
                self.error(knode, f"{what}: duplicate key {key!r} (first on line {first})")
                continue
            if allowed is not None and key not in allowed:
                self.error(
                    knode, f"{what}: unknown key {key!r} (known: {', '.join(sorted(allowed))})"
                )
                continue
            out[key] = (knode, vnode)
        return out

    def text(self, node: yaml.Node, what: str) -> str | None:
        """A scalar's raw text (so that ``off``/``no``/``1`` stay strings); None if not text."""
        if not isinstance(node, yaml.ScalarNode) or self.is_null(node):
            self.error(node, f"{what} must be a value")
            return None
        value = str(node.value).strip()
        if not value:
            self.error(node, f"{what} must not be empty")
            return None
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG:
            return str(node.value).lower() in ("true", "yes", "on", "y")
        self.error(node, f"{what} must be true or false")
        return False

    def mode(self, node: yaml.Node, what: str) -> Mode | None:
        # The raw text: PyYAML (YAML 1.1) would read an unquoted `off` as the boolean false.
        value = node.value if isinstance(node, yaml.ScalarNode) else None
        try:
            return Mode(str(value))
        except ValueError:
            shown = value if value is not None else "a non-scalar"
            self.error(node, f"{what}: {shown!r} is not an action (monitor, block or off)")
            return None

    def texts(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        if self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        out: list[tuple[str, yaml.Node]] = []
        for item in node.value:
            value = self.text(item, f"{what} entry")
            if value is not None:
                out.append((value, item))
        return out

    def cidr(self, text: str, node: yaml.Node, what: str) -> _IPNetwork | None:
        try:
            return ipaddress.ip_network(text)
        except ValueError as e:
            self.error(node, f"{what}: bad CIDR {text!r} ({e})")
            return None

    def app_id(self, text: str, node: yaml.Node, what: str) -> bool:
        if text not in self.catalogue.apps:
            self.error(node, f"{what}: unknown app {text!r} (not in the catalogue)")
            return False
        return True

    def regime_id(self, text: str, node: yaml.Node, what: str) -> bool:
        if text not in self.catalogue.regimes:
            self.error(node, f"{what}: unknown regime {text!r} (not in the catalogue)")
            return False
        return True

    def expiry(self, node: yaml.Node, what: str) -> datetime | None:
        text = self.text(node, what)
        if text is None:
            return None
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                return datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=1)
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.error(node, f"{what}: {text!r} is not a date (YYYY-MM-DD) or ISO datetime")
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    # --- sections --------------------------------------------------------------------------

    def rules(self, node: yaml.Node, what: str, check: str) -> dict[str, Mode]:
        out: dict[str, Mode] = {}
        for key, (knode, vnode) in self.mapping(node, what, None).items():
            known = (
                self.app_id(key, knode, what)
                if check == "app"
                else self.regime_id(key, knode, what)
            )
            mode = self.mode(vnode, f"{what}.{key}")
            if known and mode is not None:
                out[key] = mode
        return out

    def departments(self, node: yaml.Node) -> list[Department]:
        if self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "departments must be a list")
            return []
        out: list[Department] = []
        names: dict[str, int] = {}
        seen: dict[_IPNetwork, str] = {}
        for item in node.value:
            entry = self.mapping(item, "department", _DEPARTMENT_KEYS)
            if "name" not in entry or "cidrs" not in entry:
                if isinstance(item, yaml.MappingNode):
                    self.error(item, "department needs a name and cidrs")
                continue
            name = self.text(entry["name"][1], "department name")
            if name is None:
                continue
            name_node = entry["name"][1]
            ok = True
            if name in _RESERVED_DEPARTMENTS:
                self.error(name_node, f"department name {name!r} is reserved")
                ok = False
            elif not _DEPARTMENT_RE.fullmatch(name):
                self.error(
                    name_node,
                    f"department name {name!r}: use letters, digits, '_', '.', '-' (max 64)",
                )
                ok = False
            elif name in names:
                self.error(
                    name_node, f"duplicate department {name!r} (first on line {names[name]})"
                )
                ok = False
            names.setdefault(name, name_node.start_mark.line + 1)
            cidrs: list[str] = []
            before = len(self.problems)
            items = self.texts(entry["cidrs"][1], f"department {name} cidrs")
            if not items:
                if len(self.problems) == before:
                    self.error(entry["cidrs"][1], f"department {name} has no cidrs")
                ok = False
            for text, cnode in items:
                net = self.cidr(text, cnode, f"department {name}")
                if net is None:
                    ok = False
                    continue
                if net in seen:
                    self.error(
                        cnode, f"department {name}: {net} is already in department {seen[net]}"
                    )
                    ok = False
                    continue
                seen[net] = name
                cidrs.append(str(net))
            if ok:
                out.append(Department(name, tuple(cidrs)))
        return out

    def exceptions(self, node: yaml.Node) -> list[ExceptionRule]:
        if self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "exceptions must be a list")
            return []
        out: list[ExceptionRule] = []
        ids: dict[str, int] = {}
        for item in node.value:
            rule = self.exception(item, ids)
            if rule is not None:
                out.append(rule)
        return out

    def exception(self, item: yaml.Node, ids: dict[str, int]) -> ExceptionRule | None:
        if not isinstance(item, yaml.MappingNode):
            self.error(item, "exception must be a mapping")
            return None
        before = len(self.problems)
        entry = self.mapping(item, "exception", _EXCEPTION_KEYS)
        line = item.start_mark.line + 1

        def required(key: str) -> str | None:
            if key not in entry:
                self.error(item, f"exception {exc_id or '?'}: missing {key}")
                return None
            return self.text(entry[key][1], f"exception {exc_id or '?'} {key}")

        exc_id: str | None = None
        exc_id = required("id")
        if exc_id is not None:
            if exc_id in ids:
                self.error(
                    entry["id"][1],
                    f"duplicate exception id {exc_id!r} (first on line {ids[exc_id]})",
                )
            else:
                ids[exc_id] = entry["id"][1].start_mark.line + 1
        label = f"exception {exc_id or '?'}"
        apps = (
            [
                t
                for t, n in self.texts(entry["apps"][1], f"{label} apps")
                if self.app_id(t, n, label)
            ]
            if "apps" in entry
            else []
        )
        regimes = (
            [
                t
                for t, n in self.texts(entry["regimes"][1], f"{label} regimes")
                if self.regime_id(t, n, label)
            ]
            if "regimes" in entry
            else []
        )
        if "apps" not in entry and "regimes" not in entry:
            self.error(item, f"{label}: list the apps or regimes it covers")
        elif not apps and not regimes and len(self.problems) == before:
            self.error(item, f"{label}: apps and regimes are empty")
        clients: list[str] = []
        if "clients" in entry:
            for text, cnode in self.texts(entry["clients"][1], f"{label} clients"):
                net = self.cidr(text, cnode, label)
                if net is None:
                    continue
                if net.prefixlen == 0:
                    self.error(cnode, f"{label}: {net} is every address (a blanket exception)")
                    continue
                clients.append(str(net))
        users: list[str] = []
        if "users" in entry:
            for text, unode in self.texts(entry["users"][1], f"{label} users"):
                if text == "*":
                    self.error(unode, f"{label}: '*' is not a user (a blanket exception)")
                    continue
                users.append(text)
        has_scope = any(k in entry for k in ("clients", "users"))
        if not has_scope or (not clients and not users and len(self.problems) == before):
            self.error(
                item,
                f"{label}: no clients and no users: blanket exceptions are not allowed "
                "(OMB M-23-13); list client CIDRs and/or proxy users",
            )
        reason = required("reason")
        approver = required("approver")
        ticket = self.text(entry["ticket"][1], f"{label} ticket") if "ticket" in entry else None
        expires = (
            self.expiry(entry["expires"][1], f"{label} expires") if "expires" in entry else None
        )
        if "expires" not in entry:
            self.error(item, f"{label}: missing expires (every exception must expire)")
        if len(self.problems) != before:
            return None
        assert exc_id is not None and reason is not None and approver is not None
        assert expires is not None
        return ExceptionRule(
            id=exc_id,
            reason=reason,
            approver=approver,
            expires=expires,
            apps=tuple(apps),
            regimes=tuple(regimes),
            clients=tuple(clients),
            users=tuple(users),
            ticket=ticket,
            line=line,
            expires_text=str(entry["expires"][1].value).strip(),
        )


def load_policy(path: str | Path | None, catalogue: CatalogueLike) -> Policy:
    """Read and validate a policy file against ``catalogue``; ``None`` gives the built-in one.

    The built-in policy monitors everything, blocks nothing and has version ``"builtin"``. A
    file's version is the sha256 hex of its bytes. Raises :class:`PolicyError` listing every
    problem found (``file:line: reason``); nothing is partially applied.
    """
    if path is None:
        return Policy(catalogue)
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PolicyError([Problem(file, 0, f"cannot read policy: {e.strerror or e}")]) from e
    version = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError([Problem(file, 0, f"not UTF-8 text ({e.reason})")]) from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise PolicyError([Problem(file, line, f"YAML: {e.problem or e.context}")]) from e
    except yaml.YAMLError as e:
        raise PolicyError([Problem(file, 0, f"YAML: {e}")]) from e

    reader = _Reader(file, catalogue)
    if root is None:  # an empty file: all defaults
        return Policy(catalogue, version=version, file=file)
    top = reader.mapping(root, "policy", _TOP_KEYS)
    if "version" in top:
        node = top["version"][1]
        if not (isinstance(node, yaml.ScalarNode) and node.value == "1"):
            reader.error(node, "version: only version 1 is supported")
    default = reader.mode(top["default"][1], "default") if "default" in top else Mode.MONITOR
    dry_run = reader.boolean(top["dry_run"][1], "dry_run") if "dry_run" in top else False
    only = (
        reader.boolean(top["only_in_force"][1], "only_in_force")
        if "only_in_force" in top
        else False
    )
    regime_rules = reader.rules(top["regimes"][1], "regimes", "regime") if "regimes" in top else {}
    app_rules = reader.rules(top["apps"][1], "apps", "app") if "apps" in top else {}
    contact = reader.text(top["contact"][1], "contact") if "contact" in top else None
    departments = reader.departments(top["departments"][1]) if "departments" in top else []
    exceptions = reader.exceptions(top["exceptions"][1]) if "exceptions" in top else []
    if reader.problems:
        raise PolicyError(sorted(reader.problems, key=lambda p: p.line))
    return Policy(
        catalogue,
        default=default or Mode.MONITOR,
        dry_run=dry_run,
        only_in_force=only,
        regime_rules=regime_rules,
        app_rules=app_rules,
        contact=contact,
        departments=departments,
        exceptions=exceptions,
        version=version,
        file=file,
    )
