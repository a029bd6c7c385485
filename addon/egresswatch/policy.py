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
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import date
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from egresswatch.catalogue_model import CatalogueLike
from egresswatch.config_events import DepartmentDetail
from egresswatch.config_events import PolicyLoaded
from egresswatch.events import Action
from egresswatch.policy_clients import Department
from egresswatch.policy_clients import ExceptionRule
from egresswatch.policy_clients import IPAddress
from egresswatch.policy_clients import IPNetwork
from egresswatch.policy_clients import PrefixTable
from egresswatch.policy_clients import parse_client
from egresswatch.policy_schema import DRY_RUN
from egresswatch.policy_schema import MODE_LABELS
from egresswatch.policy_schema import OTHER
from egresswatch.policy_schema import RULE_APP
from egresswatch.policy_schema import RULE_DEFAULT
from egresswatch.policy_schema import RULE_LABELS
from egresswatch.policy_schema import UNKNOWN
from egresswatch.policy_schema import AltSvcMode
from egresswatch.policy_schema import EchScope
from egresswatch.policy_schema import Mode
from egresswatch.policy_schema import PolicyFile
from egresswatch.policy_schema import describe
from egresswatch.policy_schema import expiry
from egresswatch.timeutil import as_utc
from egresswatch.yamlpos import Problem
from egresswatch.yamlpos import problems_from
from egresswatch.yamlpos import read_yaml

#: The decision label of an evasion signal: set by the policy's own key, not a regime or app rule.
EVASION_LABEL = "policy"

__all__ = [
    "BUILTIN_VERSION",
    "EVASION_LABEL",
    "MODE_LABELS",
    "OTHER",
    "RULE_LABELS",
    "UNKNOWN",
    "AltSvcMode",
    "CatalogueLike",
    "EchScope",
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


_STRICTNESS = {Mode.OFF: 0, Mode.MONITOR: 1, Mode.BLOCK: 2}


# The matcher type as the policy sees it: structural (``matcher.Match`` or a test stand-in).
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
    #: The app whose ``apps:`` rule decided (when ``regime`` is ``"app"``); a detail of the
    #: rule, left out of equality (a decision is its action, label, exception and department).
    rule_app: str | None = field(default=None, compare=False, repr=False)

    @property
    def decided_by(self) -> str:
        """The kind of rule that decided: ``exception``, ``app``, ``regime`` or ``default``."""
        if self.exception_id is not None:
            return "exception"
        if self.regime == RULE_APP:
            return "app"
        if self.regime == RULE_DEFAULT:
            return "default"
        return "regime"

    @property
    def decided_id(self) -> str | None:
        """That rule's id: the exception id, the app id, the regime id (None for ``default``)."""
        if self.exception_id is not None:
            return self.exception_id
        if self.regime == RULE_APP:
            return self.rule_app
        if self.regime == RULE_DEFAULT:
            return None
        return self.regime

    @property
    def lets_through(self) -> bool:
        """False only for ``blocked``: monitor, would_block and exempted traffic passes."""
        return self.action is not Action.BLOCKED


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
        encrypted_dns: Mode = Mode.MONITOR,
        ech: Mode = Mode.MONITOR,
        ech_scope: EchScope = EchScope.EVERYWHERE,
        alt_svc: AltSvcMode = AltSvcMode.COUNT,
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
        #: What to do with an encrypted-DNS bypass and with a hidden (real) ECH name.
        self.encrypted_dns = Mode(encrypted_dns)
        self.ech = Mode(ech)
        #: Where ``ech`` applies: everywhere, or designated vendors' client-facing names only.
        self.ech_scope = EchScope(ech_scope)
        #: What to do with an ``Alt-Svc`` advertising HTTP/3 for a designated name.
        self.alt_svc = AltSvcMode(alt_svc)
        self.version = version
        self.file = file
        self.exceptions: tuple[ExceptionRule, ...] = tuple(exceptions)
        self.department_rules: tuple[Department, ...] = tuple(departments)

        v4: list[tuple[IPNetwork, str]] = []
        v6: list[tuple[IPNetwork, str]] = []
        for dept in self.department_rules:
            for cidr in dept.cidrs:
                net = ipaddress.ip_network(cidr)
                (v4 if net.version == 4 else v6).append((net, dept.name))
        self._v4 = PrefixTable(32, v4)
        self._v6 = PrefixTable(128, v6)
        # client address text -> (parsed address, department); bounded, cleared when full.
        self._clients: dict[str | None, tuple[IPAddress | None, str]] = {}
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
            return rule, RULE_APP
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
        return best if best is not None else (self.default, RULE_DEFAULT)

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
        best_app = apps[0]
        for app_id in apps:
            eff = table.get(app_id)
            if eff is None:  # not in the catalogue the policy was built for: use the match
                eff = self._app_effective(match.regimes, app_id, day)
            if best is None or _STRICTNESS[eff[0]] > _STRICTNESS[best[0]]:
                best, best_app = eff, app_id
        assert best is not None
        mode, label = best
        if mode is Mode.OFF:
            return None
        rule_app = best_app if label == RULE_APP else None
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
                return Decision(Action.EXEMPTED, label, exc.id, department, rule_app)
        if mode is Mode.BLOCK:
            action = Action.WOULD_BLOCK if self.dry_run else Action.BLOCKED
        else:
            action = Action.MONITOR
        return Decision(action, label, None, department, rule_app)

    def decide_evasion(self, mode: Mode, client_ip: str | None) -> Decision | None:
        """The decision for an evasion signal (encrypted DNS, hidden ECH) under ``mode``
        (``self.encrypted_dns`` or ``self.ech``): None when off; exceptions do not apply (they
        name apps); ``dry_run`` stages a block as ``would_block``. The regime label is
        ``policy``."""
        if mode is Mode.OFF:
            return None
        department = self._department_of(parse_client(client_ip))
        if mode is Mode.BLOCK:
            action = Action.WOULD_BLOCK if self.dry_run else Action.BLOCKED
        else:
            action = Action.MONITOR
        return Decision(action, EVASION_LABEL, None, department)

    def ech_mode(self, designated: bool) -> Mode:
        """The ``ech`` action for a hidden name behind a public name that is (``designated``) or
        is not a designated vendor's client-facing name: with ``scope: designated`` a block
        applies only to the former; the others are monitored."""
        if self.ech is Mode.BLOCK and self.ech_scope is EchScope.DESIGNATED and not designated:
            return Mode.MONITOR
        return self.ech

    def decide_alt_svc(self, client_ip: str | None) -> Decision | None:
        """The decision for an ``Alt-Svc`` advertising HTTP/3 for a designated name: None when
        ``off``; ``count`` is monitor, ``strip`` is blocked (the alternatives are removed), or
        ``would_block`` under ``dry_run`` (the header is left as it is)."""
        if self.alt_svc is AltSvcMode.OFF:
            return None
        mode = Mode.BLOCK if self.alt_svc is AltSvcMode.STRIP else Mode.MONITOR
        return self.decide_evasion(mode, client_ip)

    def _exception_for(
        self, apps: Iterable[str], address: IPAddress | None, user: str | None, now: datetime
    ) -> ExceptionRule | None:
        for app_id in apps:
            for exc in self._exceptions_by_app.get(app_id, ()):
                if exc.in_force(now) and exc.covers(address, user):
                    return exc
        return None

    # --- departments -----------------------------------------------------------------------

    def _department_of(self, address: IPAddress | None) -> str:
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
            out[app_id] = DRY_RUN if mode is Mode.BLOCK and self.dry_run else mode.value
        return out

    def regime_labels(self) -> tuple[str, ...]:
        """Every ``Decision.regime`` value this policy can produce (bounded metric label)."""
        return tuple(sorted({*RULE_LABELS, *self.regime_rules}))

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
            evasion=(
                ("encrypted_dns", self.encrypted_dns.value),
                ("ech", self.ech.value),
                ("ech_scope", self.ech_scope.value),
                ("alt_svc", self.alt_svc.value),
            ),
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


def load_policy(path: str | Path | None, catalogue: CatalogueLike) -> Policy:
    """Read and validate a policy file against ``catalogue``; ``None`` gives the built-in one.

    The built-in policy monitors everything, blocks nothing and has version ``"builtin"``. A
    file's version is the sha256 hex of its bytes. Raises :class:`PolicyError` listing every
    problem found (``file:line: reason``, in line order); nothing is partially applied. The
    format is :class:`egresswatch.policy_schema.PolicyFile`.
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
    doc = read_yaml(text, file)
    if doc.problems:
        raise PolicyError(sorted(doc.problems, key=lambda p: p.line))
    try:
        parsed = PolicyFile.model_validate(doc.data or {}, context={"catalogue": catalogue})
    except ValidationError as e:
        problems = problems_from(e, doc, describe)
        raise PolicyError(sorted(problems, key=lambda p: p.line)) from None
    return Policy(
        catalogue,
        default=parsed.default,
        dry_run=parsed.dry_run,
        only_in_force=parsed.only_in_force,
        regime_rules=parsed.regimes,
        app_rules=parsed.apps,
        contact=parsed.contact,
        encrypted_dns=parsed.encrypted_dns,
        ech=parsed.ech.action,
        ech_scope=parsed.ech.scope,
        alt_svc=parsed.alt_svc,
        departments=[Department(d.name, tuple(d.cidrs)) for d in parsed.departments or ()],
        exceptions=[
            ExceptionRule(
                id=x.id,
                reason=x.reason,
                approver=x.approver,
                expires=expiry(x.expires),
                apps=tuple(x.apps or ()),
                regimes=tuple(x.regimes or ()),
                clients=tuple(str(ipaddress.ip_network(c)) for c in x.clients or ()),
                users=tuple(x.users or ()),
                ticket=x.ticket,
                line=doc.positions.line(("exceptions", i)),
                expires_text=x.expires.strip(),
            )
            for i, x in enumerate(parsed.exceptions or ())
        ],
        version=version,
        file=file,
    )
