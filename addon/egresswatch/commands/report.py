"""``egresswatch report``: the monthly compliance report from the event store.

::

    egresswatch report --month 2026-07 --data-dir /var/lib/egresswatch --format html -o july.html

writes ``july.html`` and ``july.html.sha256`` (``sha256sum -c`` format). Without ``-o`` the report
goes to standard output. The default month is the previous calendar month (UTC), the default store
the SQLite file of the default data directory.

``--format json`` seals the report: it embeds the signed checkpoints it was built from and its
own digest; ``egresswatch report verify REPORT.json`` checks it later (``report_verify.py``).

Exit status: 0 when the report was written (a failed chain verification is in the report and on
stderr, not in the exit status), 1 when the store or the catalogue cannot be read, 2 on usage
errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC
from datetime import datetime
from pathlib import Path

from ..catalogue_model import CatalogueLike
from ..checkpoint import CheckpointError
from ..report import FORMATS
from ..report import build_report
from ..report import month_bounds
from ..report import previous_month
from ..report import render
from ..report import write_report
from ..store import StoreError
from .db import add_store_arguments
from .db import open_from_args
from .report_verify import add_witness_arguments
from .report_verify import run_verify
from .report_verify import witnesses

__all__ = ["register"]


def _month(value: str) -> str:
    try:
        month_bounds(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return value


def _top(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--top must be a positive integer, not {value!r}")
    return n


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write the monthly compliance report",
        description="Write the monthly compliance report for one calendar month (UTC) from the "
        "event store: coverage, configuration in force, exceptions, findings per app, regime and "
        "department, top clients and hostnames, daily trend, integrity and method.",
    )
    p.add_argument(
        "verify",
        nargs="*",
        metavar="verify REPORT.json",
        help="check a JSON report written by this command against the store: its digest, the "
        "signed checkpoints it embeds, and every figure rebuilt from the store (exit 1 naming "
        "the first disagreement)",
    )
    p.add_argument(
        "--month",
        type=_month,
        default=None,
        help="the month to report, YYYY-MM (default: the previous calendar month, UTC)",
    )
    add_store_arguments(p)
    p.add_argument("--format", choices=FORMATS, default="html", help="output format (default html)")
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        type=Path,
        help="write here and a SHA-256 beside it (PATH.sha256); default: standard output",
    )
    p.add_argument(
        "--top", type=_top, default=10, metavar="N", help="rows in the top lists (default 10)"
    )
    p.add_argument("--organisation", metavar="NAME", help="organisation named in the report")
    p.add_argument(
        "--lists",
        metavar="DIR",
        nargs="+",
        action="extend",
        default=[],
        help="operator catalogue directories (after the bundled one) for app names and the "
        "status of each regime",
    )
    add_witness_arguments(p)
    check = p.add_mutually_exclusive_group()
    check.add_argument(
        "--no-verify",
        action="store_true",
        help="skip recomputing the hash chains (the report then says integrity was not checked)",
    )
    check.add_argument(
        "--full-verify",
        action="store_true",
        help="recompute every hash chain from the start (default: incremental, from the last "
        "successful verification run's head; the report says which rows were verified when)",
    )
    p.set_defaults(func=run)


def _load_catalogue(dirs: list[str]) -> CatalogueLike:
    from ..catalogue import bundled_dir
    from ..catalogue import load_catalogue

    return load_catalogue([bundled_dir(), *(Path(d) for d in dirs)])


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    month: str = args.month or previous_month(now)
    if args.verify and (len(args.verify) != 2 or args.verify[0] != "verify"):
        print("egresswatch report: usage: egresswatch report verify REPORT.json", file=sys.stderr)
        return 2
    try:
        catalogue = _load_catalogue(args.lists)
    except (ValueError, OSError) as e:
        problems = getattr(e, "problems", None)
        for problem in problems or [e]:
            print(f"egresswatch report: catalogue: {problem}", file=sys.stderr)
        return 1
    if args.verify:
        return run_verify(args, Path(args.verify[1]), catalogue)
    try:
        start, end = (t.timestamp() for t in month_bounds(month))
        covering, verifier = witnesses(args, start, end)
    except CheckpointError as e:
        print(f"egresswatch report: {e}", file=sys.stderr)
        return 1
    store = open_from_args(args, "egresswatch report: cannot open the event store")
    if store is None:
        return 1
    try:
        report = build_report(
            store,
            month,
            now=now,
            top_n=args.top,
            organisation=args.organisation,
            catalogue=catalogue,
            verify=not args.no_verify,
            full_verify=args.full_verify,
        )
    except StoreError as e:
        print(f"egresswatch report: cannot read the event store: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.format == "json":
        from ..report.seal import seal

        doc = seal(report, covering, verifier, top=args.top)
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    else:
        text = render(report, args.format)
    if report.integrity.verified and not report.integrity.ok:
        print(
            f"egresswatch report: WARNING: chain verification failed "
            f"({len(report.integrity.problems)} problem(s)); see the integrity section",
            file=sys.stderr,
        )
    if args.output is None:
        sys.stdout.write(text)
        return 0
    digest = write_report(text, args.output)
    print(f"{args.output}: sha256 {digest}", file=sys.stderr)
    return 0
