"""``egresswatch lists update``: refresh operator catalogue files from upstream lists.

Exit status: 0 when every source was written, unchanged or (for ``review`` sources without
``--accept``) shown for review; 1 when any source was refused or could not be fetched; 2 for a
usage error (bad options, an invalid sources file, ``--into`` naming the bundled catalogue).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

from ..catalogue import CatalogueError
from ..catalogue import bundled_dir
from ..sources import SourcesError
from ..sources import load_sources
from ..sources import parse_share
from ..updates import FetchOptions
from ..updates import Item
from ..updates import LockedError
from ..updates import Outcome
from ..updates import bundled_app_ids
from ..updates import is_inside
from ..updates import locked
from ..updates import update_source

__all__ = ["register_update", "run_update"]

# Skipped input items printed per source (all of them are counted).
_MAX_SKIPPED_SHOWN = 20


def _share(value: str) -> float:
    share = parse_share(value)
    if share is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a share from 0 to 1")
    return share


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def convert(value: str) -> int | float:
        try:
            n = kind(value)
        except ValueError:
            n = -1
        if n <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
        return n

    return convert


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0, 1, 2, ...)")
    return int(value)


def register_update(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "update",
        help="fetch upstream lists named in a sources file into an operator catalogue",
        description=(
            "Fetch the upstream lists named in a sources file, print what changes per app "
            "(names and ranges added and removed, with their source), and write one file per "
            "source into the operator catalogue directory --into (atomically; a running proxy "
            "reloads it). A checksum mismatch, an unreachable source, a list that does not "
            "parse or is empty, one that would remove more than the allowed share of its "
            "entries, or one that would not pass 'lists check' is refused and the old file "
            "stays. Exit 0: updated or nothing to do; 1: something refused or failed; 2: usage."
        ),
    )
    up.add_argument("--sources", required=True, type=Path, metavar="FILE", help="sources YAML")
    up.add_argument(
        "--into",
        required=True,
        type=Path,
        metavar="DIR",
        help="the operator catalogue directory to write (never the bundled one)",
    )
    up.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    up.add_argument(
        "--accept",
        action="store_true",
        help="write 'sha256: review' sources too (after reviewing their diff)",
    )
    up.add_argument(
        "--max-removed-share",
        type=_share,
        default=0.2,
        metavar="SHARE",
        help="refuse a list that removes more than this share of the entries its file held, "
        "unless its source sets max_removed_share (default: 0.2)",
    )
    up.add_argument(
        "--timeout",
        type=_positive(float),
        default=30.0,
        metavar="S",
        help="seconds per fetch attempt (default: 30)",
    )
    up.add_argument(
        "--max-bytes",
        type=_positive(int),
        default=20 * 1024 * 1024,
        metavar="N",
        help="largest list accepted, in bytes (default: 20 MiB)",
    )
    up.add_argument(
        "--retries",
        type=_count,
        default=2,
        metavar="N",
        help="retries after a transient failure, with backoff 1 s, 2 s, ... (default: 2)",
    )
    up.set_defaults(func=run_update)


def _line(sign: str, item: Item, with_source: bool) -> str:
    text = f"  {sign} {item.kind:<6} {item.value}"
    return f"{text}    (from {item.source})" if with_source and item.source else text


def print_outcome(o: Outcome, out: TextIO) -> None:
    src = o.source
    kind = "extends" if o.extends else "new app"
    print(f"== {src.app} ({kind}) <- source {src.id!r} [{src.format}] {src.url}", file=out)
    if o.fetched is not None:
        f = o.fetched
        print(
            f"   fetched {f.fetched_at.strftime('%Y-%m-%dT%H:%M:%SZ')}, {len(f.body)} bytes, "
            f"sha256 {f.sha256}" + (f", {f.attempts} attempt(s)" if f.attempts > 1 else ""),
            file=out,
        )
    print(f"   file: {o.path}" + ("" if o.path.exists() else " (new)"), file=out)
    d = o.diff
    if d is not None:
        fresh = [*d.added, *(n for _, n in d.changed)]
        if fresh:
            print(f"   source of the + and ~ entries: {fresh[0].source}", file=out)
        for item in sorted(d.added, key=lambda i: (i.kind, i.value)):
            print(_line("+", item, False), file=out)
        for item in sorted(d.removed, key=lambda i: (i.kind, i.value)):
            print(_line("-", item, True), file=out)
        for old, new in sorted(d.changed, key=lambda p: p[1].value):
            print(
                f"  ~ {new.kind:<6} {new.value}    (was {old.kind}, {old.confidence or '-'}, "
                f"tags [{', '.join(old.tags)}]; now {new.kind}, {new.confidence}, "
                f"tags [{', '.join(new.tags)}])",
                file=out,
            )
        print(
            f"   {len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed, "
            f"{d.unchanged} unchanged",
            file=out,
        )
    if o.skipped:
        print(f"   {len(o.skipped)} input item(s) skipped:", file=out)
        for s in o.skipped[:_MAX_SKIPPED_SHOWN]:
            print(f"     {s}", file=out)
        if len(o.skipped) > _MAX_SKIPPED_SHOWN:
            print(f"     ... and {len(o.skipped) - _MAX_SKIPPED_SHOWN} more", file=out)
    for finding in o.findings:
        print(f"   {finding}", file=out)
    label = {
        "written": "written",
        "would-write": "would write",
        "unchanged": "unchanged",
        "needs-review": "REVIEW",
        "refused": "REFUSED",
    }[o.status]
    tail = " (the old file is unchanged)" if o.status == "refused" and o.path.exists() else ""
    print(f"   {label}: {o.message}{tail}", file=out)
    print(file=out)


def run_update(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    into: Path = args.into
    try:
        bundled = bundled_dir()
    except FileNotFoundError as e:
        print(f"egresswatch: {e}", file=err)
        return 1
    if is_inside(into, bundled):
        print(
            f"egresswatch: --into {into} is the bundled catalogue ({bundled}); updates go to "
            "the operator's own catalogue directory (the one passed to 'run --lists')",
            file=err,
        )
        return 2
    if into.exists() and not into.is_dir():
        print(f"egresswatch: --into {into} is not a directory", file=err)
        return 2
    try:
        sources = load_sources(args.sources)
    except SourcesError as e:
        for p in e.problems:
            print(p, file=err)
        print(f"egresswatch: the sources file has {len(e.problems)} problem(s)", file=err)
        return 2
    try:
        apps = bundled_app_ids(bundled)
    except CatalogueError as e:
        print(f"egresswatch: the bundled catalogue does not load: {e}", file=err)
        return 1
    options = FetchOptions(args.timeout, args.max_bytes, args.retries)
    outcomes: list[Outcome] = []
    try:
        with nullcontext() if args.dry_run else locked(into):
            for src in sorted(sources, key=lambda s: (s.app, s.id)):
                o = update_source(
                    src,
                    into,
                    bundled=bundled,
                    bundled_apps=apps,
                    max_removed_share=args.max_removed_share,
                    dry_run=args.dry_run,
                    accept=args.accept,
                    options=options,
                )
                print_outcome(o, out)
                outcomes.append(o)
    except LockedError as e:
        print(f"egresswatch: {e}; try again when it has finished", file=err)
        return 1
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"egresswatch: {len(outcomes)} source(s): {summary}", file=err)
    return 1 if any(o.failed for o in outcomes) else 0
