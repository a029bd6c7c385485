"""``egresswatch events export``: stream raw events as JSON lines for SIEM pipelines.

Field names follow the Elastic Common Schema (ECS 8.x) where one exists; the rest lives under
``egresswatch.*``, as the event schema (``egresswatch.events.EVENT_FIELDS``, its ``ecs`` names)
says. One line per event, oldest first; PostgreSQL streams through a server-side
cursor, so memory stays flat however long the period.

>>> line = ecs_document(Event(ts=0.5, kind=EventKind.HIT, instance="p1", event_id="e1",
...     host="www.tiktok.com", app="tiktok", action="blocked", signal="sni", client="10.0.0.7"))
>>> line["@timestamp"], line["event"]["outcome"], line["destination"]["domain"]
('1970-01-01T00:00:00.500000Z', 'failure', 'www.tiktok.com')
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from collections.abc import Iterable
from collections.abc import Sequence
from datetime import UTC
from datetime import date
from datetime import datetime
from pathlib import Path
from typing import IO
from typing import Any

from ..checkpoint import CHECKPOINT_LOG_NAME
from ..checkpoint import ECS_DATASET
from ..checkpoint import CheckpointError
from ..checkpoint import LoggedCheckpoint
from ..checkpoint import read_entries
from ..events import EVENT_FIELDS
from ..events import Event
from ..events import EventKind
from ..store import StoreError
from . import command_group
from .db import add_store_arguments
from .db import data_dir_from_args
from .db import open_from_args

__all__ = ["checkpoint_document", "ecs_document", "parse_when", "register"]

ECS_VERSION = "8.11.0"
#: ``events export | head``: the reader closed the pipe; the export stops without a word and
#: exits 141 (128 + SIGPIPE), the status a shell shows for a filter killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141
_PROTOCOL = {
    "dns": "dns",
    "http_host": "http",
    "websocket": "websocket",
    "sni": "tls",
    "quic": "quic",
    "cname": "dns",
    "ech": "tls",
}
_OUTCOME = {
    "blocked": "failure",
    "would_block": "success",
    "monitor": "success",
    "exempted": "success",
}
_TYPE = {"blocked": "denied", "would_block": "allowed", "monitor": "allowed", "exempted": "allowed"}
# event.type of the lifecycle kinds, from ECS's expected types of the "process" and
# "configuration" categories.
_LIFECYCLE_TYPE = {"start": "start", "stop": "end", "heartbeat": "info", "config": "change"}


def parse_when(text: str) -> float:
    """ISO date (midnight UTC) or datetime (naive = UTC) -> Unix time.

    >>> parse_when("2026-07-01"), parse_when("2026-07-01T00:00:01Z"), parse_when("2026-07-01T02:00:00+02:00")
    (1782864000.0, 1782864001.0, 1782864000.0)
    """
    text = text.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO date or datetime: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


def ecs_document(e: Event) -> dict[str, Any]:
    """One event as an ECS-shaped JSON object (absent values are left out)."""
    hit = e.kind == EventKind.HIT
    event: dict[str, Any] = {
        "id": e.event_id,
        "kind": "alert" if hit else ("state" if e.kind == EventKind.HEARTBEAT else "event"),
        "category": ["network"]
        if hit
        else ["configuration" if e.kind == EventKind.CONFIG else "process"],
        "action": str(e.action) if hit and e.action else f"egresswatch-{e.kind}",
        "module": "egresswatch",
        "dataset": "egresswatch.events",
    }
    if hit:
        event["type"] = ["connection", _TYPE.get(str(e.action), "info")]
        event["outcome"] = _OUTCOME.get(str(e.action), "unknown")
    else:
        event["type"] = [_LIFECYCLE_TYPE.get(str(e.kind), "info")]
    doc: dict[str, Any] = {
        "@timestamp": _iso(e.ts),
        "ecs": {"version": ECS_VERSION},
        "event": event,
        "observer": {
            "name": e.instance,
            "type": "proxy",
            "vendor": "egresswatch",
            "product": "egresswatch",
        },
    }
    if e.host:
        ip = _ip(e.host)
        doc["destination"] = {"ip": ip} if ip else {"domain": e.host}
    if e.client:
        ip = _ip(e.client)
        # A keyed-hash pseudonym is not an address: keep it out of the *.ip fields.
        doc["source"] = {"ip": ip, "address": e.client} if ip else {"address": e.client}
        if ip:
            doc["client"] = {"ip": ip}
    if e.user:
        doc["user"] = {"name": e.user}
    if e.rule or e.decided_by:
        # rule.name: the catalogue rule that matched (with the catalogue's version); ruleset and
        # id: the policy rule that decided (app, regime, default or exception, and its id).
        rule: dict[str, Any] = {}
        if e.rule:
            rule["name"] = e.rule
            if e.catalogue_version:
                rule["version"] = e.catalogue_version
        if e.decided_by:
            rule["ruleset"] = e.decided_by
            if e.decided_id:
                rule["id"] = e.decided_id
        doc["rule"] = rule
    if e.signal and e.signal in _PROTOCOL:
        doc["network"] = {"protocol": _PROTOCOL[e.signal]}
    doc["egresswatch"] = _ours(e)
    return doc


# The schema's fields that ECS has no name for, exported under ``egresswatch.*``.
_OURS = tuple(
    (f.name, f.ecs.removeprefix("egresswatch."), f.kind)
    for f in EVENT_FIELDS
    if f.ecs is not None and f.ecs.startswith("egresswatch.")
)


def _ours(e: Event) -> dict[str, Any]:
    """The ``egresswatch.*`` object: every such field that has a value (a list as a list, the
    detail as the object it is, the rest as text; an empty ``detail`` object is kept)."""
    out: dict[str, Any] = {}
    for name, key, kind in _OURS:
        value = getattr(e, name)
        if kind == "json":
            if value is not None:
                out[key] = value
        elif value:
            out[key] = list(value) if kind == "list" else str(value)
    return out


def checkpoint_document(entry: LoggedCheckpoint) -> tuple[float, dict[str, Any]]:
    """One signed checkpoint as an ECS document (dataset ``egresswatch.checkpoints``), with its
    time. The whole signed note travels in ``egresswatch.checkpoint.note``: a SIEM's copy of the
    export is a copy of the checkpoint log (``db verify --checkpoints EXPORT.jsonl``)."""
    cp = entry.unverified()
    doc = {
        "@timestamp": _iso(cp.time),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "state",
            "category": ["database"],
            "type": ["info"],
            "action": "egresswatch-checkpoint",
            "module": "egresswatch",
            "dataset": ECS_DATASET,
        },
        "observer": {
            "name": cp.instance,
            "type": "proxy",
            "vendor": "egresswatch",
            "product": "egresswatch",
        },
        "egresswatch": {
            "kind": "checkpoint",
            "checkpoint": {
                "origin": cp.origin,
                "size": cp.size,
                "chain_hash": cp.head,
                "key": entry.signer_name(),
                "note": entry.note,
            },
        },
    }
    return cp.time, doc


def _line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(
    events: Iterable[Event],
    out: IO[str],
    checkpoints: Sequence[tuple[float, dict[str, Any]]] = (),
) -> int:
    """Events (oldest first) as ECS lines, with ``checkpoints`` (time-sorted) interleaved by
    time; returns the number of events written."""
    n = 0
    i = 0
    for e in events:
        while i < len(checkpoints) and checkpoints[i][0] <= e.ts:
            out.write(_line(checkpoints[i][1]))
            i += 1
        out.write(_line(ecs_document(e)))
        n += 1
    for _, doc in checkpoints[i:]:
        out.write(_line(doc))
    return n


def register(subparsers: Any) -> None:
    sub = command_group(
        subparsers, "events", help="raw events: export for SIEM pipelines", metavar="COMMAND"
    )
    export = sub.add_parser(
        "export", help="stream events in [--since, --until) as ECS-shaped JSON lines"
    )
    add_store_arguments(export)
    export.add_argument("--since", required=True, help="ISO date or datetime (UTC unless offset)")
    export.add_argument("--until", help="ISO date or datetime, exclusive (default: now)")
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("-o", "--output", metavar="PATH", help="write here instead of stdout")
    export.add_argument(
        "--checkpoints",
        metavar="FILE",
        help="include the signed checkpoints of FILE signed in the period (default: "
        "checkpoints.log in the data directory, if present)",
    )
    export.add_argument("--no-checkpoints", action="store_true", help="export the events only")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        since = parse_when(args.since)
        until = parse_when(args.until) if args.until else time.time()
    except ValueError as e:
        print(f"egresswatch events export: {e}", file=sys.stderr)
        return 2
    try:
        cps = [] if args.no_checkpoints else _checkpoints(args, since, until)
    except CheckpointError as e:
        print(f"egresswatch events export: {e}", file=sys.stderr)
        return 2
    store = open_from_args(args, "egresswatch events export")
    if store is None:
        return 2
    try:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as out:
                n = write_jsonl(store.iter_events(since, until), out, cps)
        else:
            n = write_jsonl(store.iter_events(since, until), sys.stdout, cps)
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as a Unix filter killed by SIGPIPE
        # would; stdout goes to /dev/null so that the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except StoreError as e:
        print(f"egresswatch events export: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    extra = f" and {len(cps)} signed checkpoints" if cps else ""
    print(f"exported {n} events{extra}", file=sys.stderr)
    return 0


def _checkpoints(
    args: argparse.Namespace, since: float, until: float
) -> list[tuple[float, dict[str, Any]]]:
    """The checkpoint documents of the period, time-sorted (none when there is no log)."""
    if args.checkpoints:
        path = Path(args.checkpoints)
    else:
        path = data_dir_from_args(args) / CHECKPOINT_LOG_NAME
        if not path.exists():
            return []
    docs = [checkpoint_document(e) for e in read_entries([path])]
    return sorted((d for d in docs if since <= d[0] < until), key=lambda d: d[0])
