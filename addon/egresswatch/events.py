"""Leaf value types shared by every module: what happened, and how it is labelled.

An :class:`Event` is one row of the event store: a hit on a designated app, or a lifecycle record
(start, stop, heartbeat, configuration change) that lets a report prove coverage.

:data:`EVENT_FIELDS` is the one event schema: the stored columns in order, with their SQL type,
their ECS name and whether the leaf hash covers them. The store's codec and DDL and the ECS
export derive from it (``tests/test_events.py`` holds them to it).

>>> e = Event(ts=0.0, kind=EventKind.HIT, instance="proxy-1", event_id="e1", app="tiktok",
...           action=Action.BLOCKED, signal=Signal.SNI)
>>> e.action == "blocked", e.signal == "sni"
(True, True)
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = [
    "EVASION_SIGNALS",
    "EVENT_FIELDS",
    "Action",
    "Event",
    "EventField",
    "EventKind",
    "Signal",
    "new_event_id",
]


class Action(StrEnum):
    """What the proxy did with a hit (the bounded ``action`` label)."""

    MONITOR = "monitor"
    BLOCKED = "blocked"
    WOULD_BLOCK = "would_block"
    EXEMPTED = "exempted"


class Signal(StrEnum):
    """How the client named the destination (the bounded ``signal`` label)."""

    CONNECT = "connect"
    SOCKS5 = "socks5"
    SNI = "sni"
    QUIC = "quic"
    HTTP_HOST = "http_host"
    WEBSOCKET = "websocket"
    DNS = "dns"
    IP = "ip"
    #: A DNS query whose answer's CNAME chain reaches a designated name (or whose bare answer
    #: addresses fall in a designated range): attributed like a direct hit.
    CNAME = "cname"
    #: A connection that carries no usable name, to an address a designated name resolved to.
    DNS_CORRELATED = "dns_correlated"
    #: A connection to a public encrypted-DNS resolver (not an app: ``detail.resolver``).
    ENCRYPTED_DNS = "encrypted_dns"
    #: An Encrypted ClientHello that hides the real name (``detail.public_name``).
    ECH = "ech"
    #: An ``Alt-Svc`` response header advertising HTTP/3 for a designated name (``detail.app``,
    #: ``detail.advertised``, ``detail.stripped``): once per connection and host.
    ALT_SVC = "alt_svc"


#: Signals that are not hits on a designated app: counted by their own metrics, not in
#: ``egresswatch_hits_total``.
EVASION_SIGNALS: frozenset[Signal] = frozenset({Signal.ENCRYPTED_DNS, Signal.ECH, Signal.ALT_SVC})


class EventKind(StrEnum):
    HIT = "hit"
    START = "start"
    STOP = "stop"
    HEARTBEAT = "heartbeat"
    CONFIG = "config"


def new_event_id() -> str:
    """A short random id, unique enough to quote on a block page and find in the store."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Event:
    """One event-store row. ``ts`` is Unix time in seconds (UTC)."""

    ts: float
    kind: EventKind
    instance: str
    event_id: str
    signal: str | None = None
    host: str | None = None
    app: str | None = None
    regimes: tuple[str, ...] = ()
    action: str | None = None
    rule: str | None = None
    exception_id: str | None = None
    client: str | None = None
    user: str | None = None
    department: str | None = None
    catalogue_version: str = ""
    policy_version: str = ""
    detail: Mapping[str, object] | None = None
    #: The kind of policy rule that decided a hit: ``app``, ``regime``, ``default`` or
    #: ``exception`` (None: a lifecycle event, or a hit written before the field existed).
    decided_by: str | None = None
    #: That rule's id: the app id, the regime id or the exception id (None for ``default``).
    decided_id: str | None = None


#: How a column's value is stored and hashed:
#: ``text`` as is (str or NULL); ``enum`` ``str()`` of the value (NULL stays NULL); ``seq`` the
#: position in the instance's chain (not an :class:`Event` attribute); ``time`` Unix seconds stored
#: as a float, hashed as integer microseconds; ``list`` a JSON list of strings; ``json`` a JSON
#: object or NULL; ``hash`` hex SHA-256 of the chain (not an :class:`Event` attribute, not hashed).
FieldKind = Literal["text", "enum", "seq", "time", "list", "json", "hash"]


@dataclass(frozen=True, slots=True)
class EventField:
    """One column of the event store (and, but for ``seq`` and the hashes, one :class:`Event`
    attribute)."""

    name: str
    kind: FieldKind
    #: Column type and constraints in the DDL; ``{int_type}``/``{real_type}`` per backend.
    sql: str
    #: Where ``egresswatch events export`` puts the value (ECS 8.x, or ``egresswatch.*``);
    #: ``None`` when it is not exported as a field of its own.
    ecs: str | None
    #: Whether the value is part of the canonical JSON that the leaf hash covers.
    hashed: bool = True
    #: Whether the lifecycle archive keeps the column (it keeps everything but the leaf hash).
    archived: bool = True
    #: A field added after events were chained: the canonical JSON holds it only when it is
    #: set, so rows written before it existed (NULL) keep the leaf hash they were written with.
    optional: bool = False

    @property
    def attribute(self) -> bool:
        """Whether :class:`Event` has an attribute of this name."""
        return self.kind not in ("seq", "hash")


_NOT_NULL = "TEXT NOT NULL"
_NULL = "TEXT"

#: The event schema, in stored column order.
EVENT_FIELDS: tuple[EventField, ...] = (
    EventField("instance", "text", _NOT_NULL, "observer.name"),
    EventField("seq", "seq", "{int_type} NOT NULL", None),
    EventField("event_id", "text", _NOT_NULL, "event.id"),
    EventField("ts", "time", "{real_type} NOT NULL", "@timestamp"),
    EventField("kind", "enum", _NOT_NULL, "egresswatch.kind"),
    EventField("signal", "text", _NULL, "egresswatch.signal"),
    EventField("host", "text", _NULL, "destination.domain"),
    EventField("app", "text", _NULL, "egresswatch.app"),
    EventField("regimes", "list", "TEXT NOT NULL DEFAULT '[]'", "egresswatch.regimes"),
    EventField("action", "enum", _NULL, "egresswatch.action"),
    EventField("rule", "text", _NULL, "rule.name"),
    EventField("exception_id", "text", _NULL, "egresswatch.exception_id"),
    EventField("client", "text", _NULL, "source.address"),
    EventField("user", "text", _NULL, "user.name"),
    EventField("department", "text", _NULL, "egresswatch.department"),
    EventField(
        "catalogue_version", "text", "TEXT NOT NULL DEFAULT ''", "egresswatch.catalogue_version"
    ),
    EventField("policy_version", "text", "TEXT NOT NULL DEFAULT ''", "egresswatch.policy_version"),
    EventField("detail", "json", _NULL, "egresswatch.detail"),
    # Added by migration 5 (after the released tables; see store/migrations.py).
    EventField("decided_by", "text", _NULL, "rule.ruleset", optional=True),
    EventField("decided_id", "text", _NULL, "rule.id", optional=True),
    EventField("leaf_hash", "hash", _NOT_NULL, None, hashed=False, archived=False),
    EventField("chain_hash", "hash", _NOT_NULL, None, hashed=False),
)
