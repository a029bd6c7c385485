"""Leaf value types shared by every module: what happened, and how it is labelled.

An :class:`Event` is one row of the event store: a hit on a designated app, or a lifecycle record
(start, stop, heartbeat, configuration change) that lets a report prove coverage.

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

__all__ = ["Action", "Event", "EventKind", "Signal", "new_event_id"]


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
