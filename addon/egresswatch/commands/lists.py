"""``egresswatch lists check | import | show | update``: validate, import, summarise, refresh.

Exit status: ``check`` 0 when there is no error (no warning either with ``--strict``), 1
otherwise; ``import`` 0 when at least one name was written, 1 when nothing could be imported or
the input is unreadable; ``show`` 0, or 1 when the catalogue does not load; ``update``: see
:mod:`egresswatch.commands.lists_update`. Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any
from typing import TextIO

from ..catalogue import App
from ..catalogue import Catalogue
from ..catalogue import CatalogueError
from ..catalogue import bundled_dir
from ..catalogue import load_catalogue
from ..importers import FORMATS
from ..importers import ListImportError
from ..importers import parse
from ..importers import parse_file
from ..importers import render_yaml
from ..lint import Severity
from ..lint import check_dirs
from ..lint import exit_status
from ..provenance import app_evidence
from ..updates import screen
from . import command_group
from .lists_suggest import register_suggest
from .lists_update import register_update

__all__ = ["register"]

# Skipped input lines quoted in the generated file's header (all are printed on stderr).
_MAX_SKIPPED_IN_HEADER = 100


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from e


def add_catalogue_args(p: argparse.ArgumentParser) -> None:
    """``--lists DIR`` (repeatable), ``--no-bundled`` and ``--today`` (shared with ``match``)."""
    p.add_argument(
        "--lists",
        metavar="DIR",
        action="append",
        type=Path,
        default=[],
        help="an operator catalogue directory, merged after the bundled one (repeatable)",
    )
    p.add_argument(
        "--no-bundled",
        action="store_true",
        help="use only the --lists directories, not the catalogue shipped with egresswatch",
    )
    _add_today(p, "evaluate regime status on this date instead of today")


def _add_today(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--today", metavar="YYYY-MM-DD", type=_iso_date, default=None, help=help)


def load_from_args(args: argparse.Namespace, err: TextIO) -> Catalogue | None:
    """The catalogue named by the ``add_catalogue_args`` options (bundled first), or ``None``
    after printing on ``err`` why it does not load."""
    try:
        dirs = [] if args.no_bundled else [bundled_dir()]
        return load_catalogue([*dirs, *args.lists])
    except CatalogueError as e:
        for p in e.problems:
            print(p, file=err)
        print(f"egresswatch: the catalogue has {len(e.problems)} problem(s)", file=err)
        return None
    except FileNotFoundError as e:
        print(f"egresswatch: {e}", file=err)
        return None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = command_group(
        subparsers,
        "lists",
        help="check, import and show designated-app catalogues",
        description="Check, import and show designated-app catalogues.",
    )

    check = sub.add_parser(
        "check",
        help="validate catalogue directories",
        description=(
            "Validate catalogue directories (merged in order; default: the bundled catalogue). "
            "Prints one line per finding as 'file:line: severity: message'. Errors exit 1; "
            "warnings exit 1 only with --strict; notes (e.g. names normalised) never fail."
        ),
    )
    check.add_argument("dirs", nargs="*", type=Path, metavar="DIR")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.add_argument(
        "--with-bundled",
        action="store_true",
        help="merge the bundled catalogue first (for directories that extend bundled apps)",
    )
    check.add_argument(
        "-q", "--quiet", action="store_true", help="print errors and warnings, not notes"
    )
    _add_today(check, "date for the regime-date checks (default: today)")
    check.set_defaults(func=run_check)

    imp = sub.add_parser(
        "import",
        help="convert an external domain list into a catalogue file",
        description=(
            "Convert a hosts file, AdBlock ||domain^ rules, a plain list, a v2fly "
            "domain-list-community file or an AdGuard HostlistsRegistry service YAML into a "
            "catalogue app file with provenance. SOURCE is a local file or '-' for stdin: "
            "URLs are never fetched (download the list yourself and record where from with "
            "--source). Lines that cannot be expressed (regexes, keywords, paths, options, "
            "invalid names, public suffixes, CDN apexes as suffixes) are skipped and reported "
            "on stderr with their line numbers."
        ),
    )
    imp.add_argument("source", metavar="SOURCE", help="input file, or - for stdin (never a URL)")
    imp.add_argument("--format", required=True, choices=FORMATS, help="input format")
    imp.add_argument("--app", required=True, metavar="ID", help="app id ([a-z0-9-]+)")
    imp.add_argument("--name", help="app display name (default: from the input, else the id)")
    imp.add_argument(
        "--source",
        dest="provenance",
        metavar="TEXT",
        help="provenance recorded for every entry, e.g. repo:path@commit or the URL it was "
        "downloaded from (default: SOURCE path:line of each entry)",
    )
    imp.add_argument(
        "--confidence",
        choices=("high", "medium", "low"),
        default="medium",
        help="(default: medium)",
    )
    imp.add_argument(
        "--match",
        choices=("suffix", "exact"),
        default=None,
        help="force this match kind for every entry (default: the format's own: hosts exact, "
        "plain suffix, ||x^ suffix, |x^ exact, v2fly domain:/full:)",
    )
    imp.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="add a tag to every entry"
    )
    imp.add_argument(
        "--extends",
        action="store_true",
        help="write an 'extends: ID' file adding these names to an existing app",
    )
    imp.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here (default: stdout)"
    )
    imp.set_defaults(func=run_import)

    show = sub.add_parser(
        "show",
        help="list apps, their names, ranges, sources and evidence age, and regimes",
        description=(
            "List the apps with their counts of names (domains and bulk-list names) and ranges "
            "(CIDRs), the number of distinct sources in their provenance, the newest date found "
            "in that provenance and its age in days ('unknown' when no date is written), and "
            "the regimes with their status today."
        ),
    )
    add_catalogue_args(show)
    show.add_argument("--json", action="store_true", help="one JSON document")
    show.set_defaults(func=run_show)

    register_update(sub)
    register_suggest(sub)


# --- check ---------------------------------------------------------------------------------------


def run_check(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    dirs: list[Path] = list(args.dirs)
    try:
        bundled = bundled_dir()
        if not dirs or (args.with_bundled and bundled.resolve() not in {d.resolve() for d in dirs}):
            dirs = [bundled, *dirs]
    except FileNotFoundError as e:
        print(f"egresswatch: {e}", file=err)
        return 1
    findings = check_dirs(dirs, today=args.today)
    counts = {s: 0 for s in Severity}
    for f in findings:
        counts[f.severity] += 1
        if args.quiet and f.severity is Severity.NOTE:
            continue
        print(f, file=out)
    print(
        f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s), "
        f"{counts[Severity.NOTE]} note(s) in {', '.join(str(d) for d in dirs)}",
        file=err,
    )
    if not args.with_bundled and any(
        "no such app" in f.message or "is not defined in any regimes.yaml" in f.message
        for f in findings
    ):
        print(
            "hint: a directory that builds on the bundled apps or regimes is checked with "
            "--with-bundled",
            file=err,
        )
    return exit_status(findings, strict=args.strict)


# --- import --------------------------------------------------------------------------------------


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except UnicodeDecodeError as e:  # parse_file says the same for a file
        raise ListImportError(f"<stdin>: not UTF-8 text: {e}") from e


def run_import(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    src: str = args.source
    if "://" in src:
        print(
            f"egresswatch: {src!r} looks like a URL; lists import never fetches: download it "
            "and pass the file, with --source recording the URL",
            file=err,
        )
        return 1
    try:
        if src == "-":
            result = parse(args.format, _read_stdin(), origin="<stdin>")
        else:
            result = parse_file(args.format, Path(src))
    except ListImportError as e:
        print(f"egresswatch: {e}", file=err)
        return 1
    kept, dropped, warnings = screen(result.entries, args.match, args.tag)
    skipped = sorted([*result.skipped, *dropped], key=lambda s: (s.origin, s.line))
    for s in skipped:
        print(s, file=err)
    for w in warnings:
        print(w, file=err)
    print(f"egresswatch: {len(kept)} name(s) imported, {len(skipped)} line(s) skipped", file=err)
    if not kept:
        print("egresswatch: nothing to import", file=err)
        return 1
    header = [
        f"Generated by egresswatch lists import --format {args.format} --app {args.app} "
        f"on {date.today().isoformat()}",
        f"from {src if src != '-' else '<stdin>'}"
        + (f" (source: {args.provenance})" if args.provenance else ""),
        f"{len(kept)} name(s) imported, {len(skipped)} input line(s) skipped.",
    ]
    if skipped:
        header.append("Skipped:")
        header.extend(f"  {s}" for s in skipped[:_MAX_SKIPPED_IN_HEADER])
        if len(skipped) > _MAX_SKIPPED_IN_HEADER:
            header.append(f"  ... and {len(skipped) - _MAX_SKIPPED_IN_HEADER} more")
    try:
        text = render_yaml(
            kept,
            app=args.app,
            name=args.name or result.name,
            source=args.provenance,
            confidence=args.confidence,
            match=args.match,
            tags=args.tag,
            extends=args.extends,
            header="\n".join(header),
            description=(
                f"Imported from {src if src != '-' else 'stdin'} ({args.format} format) with "
                "egresswatch lists import; review names, confidence and regimes before use."
            ),
        )
    except ListImportError as e:
        print(f"egresswatch: {e}", file=err)
        return 1
    if args.output is None:
        out.write(text)
        return 0
    if not args.extends and args.output.name not in (f"{args.app}.yaml", f"{args.app}.yml"):
        print(
            f"egresswatch: note: an app file must be named {args.app}.yaml to load "
            f"(writing {args.output})",
            file=err,
        )
    args.output.write_text(text, encoding="utf-8")
    return 0


# --- show ----------------------------------------------------------------------------------------


def _counts(app: App) -> dict[str, int]:
    counts = {"suffix": 0, "exact": 0, "cidr": len(app.cidrs), "carve_outs": len(app.carve_outs)}
    for r in app.rules:
        counts[r.match] += 1
    for b in app.lists:
        counts[b.match] += len(b)
    return counts


def _evidence(app: App, today: date) -> dict[str, Any]:
    e = app_evidence(app, today)
    return {
        "names": e.names,
        "ranges": e.ranges,
        "sources": list(e.sources),
        "newest_evidence": e.newest.isoformat() if e.newest else None,
        "evidence_age_days": e.age_days,
    }


def show_data(cat: Catalogue, today: date) -> dict[str, Any]:
    """The JSON document printed by ``lists show --json``."""
    return {
        "today": today.isoformat(),
        "version": cat.version,
        "apps": [
            {
                "id": app.id,
                "name": app.name,
                "vendor": app.vendor,
                "parent": app.parent,
                "category": app.category,
                "file": app.file,
                "counts": _counts(app),
                **_evidence(app, today),
                "regimes": [
                    {
                        "id": rid,
                        "status": cat.regimes[rid].status(today) if rid in cat.regimes else None,
                    }
                    for rid in app.regimes
                ],
            }
            for app in cat.apps.values()
        ],
        "regimes": [
            {
                "id": r.id,
                "title": r.title,
                "jurisdiction": r.jurisdiction,
                "signed": r.signed.isoformat() if r.signed else None,
                "effective": r.effective.isoformat() if r.effective else None,
                "revoked": r.revoked.isoformat() if r.revoked else None,
                "status": r.status(today),
                "apps": list(r.apps),
            }
            for r in cat.regimes.values()
        ],
    }


# Regime status as printed by ``lists show`` and ``match``.
STATUS_TEXT = {
    "in_force": "in force",
    "revoked": "revoked",
    "not_yet_effective": "not yet effective",
}


def _table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def run_show(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    cat = load_from_args(args, err)
    if cat is None:
        return 1
    today: date = args.today or date.today()
    data = show_data(cat, today)
    if args.json:
        print(json.dumps(data, indent=2), file=out)
        return 0
    rows: list[list[str]] = [
        ["APP", "NAME", "CATEGORY", "NAMES", "RANGES", "SOURCES", "NEWEST EVIDENCE", "REGIMES"]
    ]
    for a in data["apps"]:
        age = "unknown"
        if a["newest_evidence"] is not None:
            age = f"{a['newest_evidence']} ({a['evidence_age_days']} d)"
        regimes = ", ".join(
            f"{r['id']} ({STATUS_TEXT.get(r['status'], 'undefined')})" for r in a["regimes"]
        )
        rows.append(
            [
                a["id"],
                a["name"],
                a["category"],
                str(a["names"]),
                str(a["ranges"]),
                str(len(a["sources"])),
                age,
                regimes or "-",
            ]
        )
    print(
        f"Catalogue {cat.version[:12]} on {today}: {len(cat.apps)} app(s), {cat.entries} entries",
        file=out,
    )
    print(file=out)
    for line in _table(rows, right=(3, 4, 5)):
        print(line, file=out)
    print(file=out)
    rrows: list[list[str]] = [["REGIME", "STATUS", "EFFECTIVE", "REVOKED", "APPS", "TITLE"]]
    for r in data["regimes"]:
        rrows.append(
            [
                r["id"],
                STATUS_TEXT[r["status"]],
                r["effective"] or "-",
                r["revoked"] or "-",
                str(len(r["apps"])),
                r["title"],
            ]
        )
    for line in _table(rrows, right=(4,)):
        print(line, file=out)
    return 0
