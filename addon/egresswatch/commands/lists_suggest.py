"""``egresswatch lists suggest``: candidates the proxy collected, as catalogue files to review.

The proxy persists its discovery candidates (``egresswatch.candidates``: names tied to a
designated app by a CNAME chain, an upstream certificate, or a request right after a hit) as
CONFIG events with ``detail.kind = "candidates"``. This
command reads those of ``[--since, --until)``, merges them, and writes one ``extends: APP`` file
per app (``-o DIR``; stdout otherwise): each name ``exact``, ``confidence: low``, its
``source`` the observed evidence and its ``note`` what a reviewer should check. Nothing is
applied: a person copies the names they accept into a catalogue directory.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from ..candidates import Candidate
from ..candidates import from_details
from ..events import EventKind
from ..store import StoreError
from ..timeutil import from_unix
from .db import add_store_arguments
from .db import open_from_args
from .events import parse_when

__all__ = ["register_suggest", "run_suggest", "suggestion_files"]

_HEADER = (
    "# Candidates for review, written by `egresswatch lists suggest` from the proxy's observed\n"
    "# evidence ({period}). Nothing here is applied: check each name, then copy the ones you\n"
    "# accept into a catalogue directory (and raise their confidence).\n"
)


def register_suggest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "suggest",
        help="write the proxy's discovery candidates as catalogue files to review",
        description=(
            "Read the discovery candidates the proxy recorded (names tied to a designated app "
            "by a CNAME chain, an upstream certificate, or a request right after a hit) and write one reviewable 'extends: APP' file per "
            "app. Nothing is applied."
        ),
    )
    add_store_arguments(p)
    p.add_argument("--since", default="1970-01-01", help="ISO date or datetime (default: all)")
    p.add_argument("--until", help="ISO date or datetime, exclusive (default: now)")
    p.add_argument(
        "-o", "--output", metavar="DIR", type=Path, help="write APP-candidates.yaml files here"
    )
    p.set_defaults(func=run_suggest)


def _iso(ts: float) -> str:
    return from_unix(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(c: Candidate) -> dict[str, Any]:
    evidence = ", ".join(f"{kind} x{n}" for kind, n in sorted(c.evidence.items()))
    examples = "; ".join(f"{kind}: {ex}" for kind, ex in sorted(c.examples.items()))
    return {
        "domain": c.name,
        "match": "exact",
        "source": f"observed by egresswatch {_iso(c.first_seen)} to {_iso(c.last_seen)} "
        f"({evidence}): {examples}",
        "confidence": "low",
        "tags": ["candidate"],
        "note": "candidate for review: confirm the name belongs to the app before adding it",
    }


def suggestion_files(candidates: list[Candidate], period: str) -> dict[str, str]:
    """``{APP-candidates.yaml: text}`` for the candidates, per app."""
    per_app: defaultdict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        per_app[c.app].append(c)
    out: dict[str, str] = {}
    for app, items in sorted(per_app.items()):
        doc = {"extends": app, "domains": [_entry(c) for c in sorted(items, key=lambda c: c.name)]}
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
        out[f"{app}-candidates.yaml"] = _HEADER.format(period=period) + text
    return out


def run_suggest(args: argparse.Namespace) -> int:
    try:
        since = parse_when(args.since)
        until = parse_when(args.until) if args.until else time.time() + 86400
    except ValueError as e:
        print(f"egresswatch lists suggest: {e}", file=sys.stderr)
        return 2
    store = open_from_args(args, "egresswatch lists suggest")
    if store is None:
        return 1
    try:
        details = [
            e.detail
            for e in store.lifecycle(since, until)
            if e.kind == EventKind.CONFIG and e.detail is not None
        ]
    except StoreError as e:
        print(f"egresswatch lists suggest: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    candidates = from_details([dict(d) for d in details])
    period = f"{args.since} to {args.until or 'now'}"
    files = suggestion_files(candidates, period)
    if not files:
        print("egresswatch lists suggest: no candidates recorded in the period", file=sys.stderr)
        return 0
    if args.output is None:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.output / name).write_text(text, encoding="utf-8")
        print(args.output / name)
    return 0
