"""``egresswatch policy check FILE [--lists DIR ...]``: validate a policy file before deploying it.

The file is checked exactly as the proxy loads it (:func:`egresswatch.policy.load_policy`), against
the catalogue the proxy would use (the bundled one, then the ``--lists`` directories). Every
problem is printed on stdout as ``file:line: error: reason`` (line 0: the file as a whole), then
a count on stderr.

Exit status: 0 when the policy loads, 1 when it has errors or the catalogue does not load, 2 for
usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ..policy import PolicyError
from ..policy import load_policy
from . import command_group
from .lists import add_catalogue_args
from .lists import load_from_args

__all__ = ["register", "run_check"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = command_group(
        subparsers,
        "policy",
        help="check policy files",
        description="Check policy files against the catalogue.",
    )
    check = sub.add_parser(
        "check",
        help="validate a policy file against the catalogue",
        description=(
            "Validate a policy file as the proxy loads it, against the bundled catalogue and "
            "the --lists directories. Prints 'file:line: error: reason' per problem; exits 1 on "
            "errors (or when the catalogue does not load), 0 when the policy is valid."
        ),
    )
    check.add_argument("file", type=Path, metavar="FILE", help="the policy YAML file")
    add_catalogue_args(check)
    check.set_defaults(func=run_check)


def run_check(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    catalogue = load_from_args(args, err)
    if catalogue is None:
        return 1
    try:
        policy = load_policy(args.file, catalogue)
    except PolicyError as e:
        for p in e.problems:
            print(f"{p.file}:{p.line}: error: {p.message}", file=out)
        print(f"egresswatch: {args.file}: {len(e.problems)} error(s)", file=err)
        return 1
    print(
        f"egresswatch: {args.file}: ok (version {policy.version[:12]}, "
        f"{len(policy.exceptions)} exception(s), {len(policy.department_rules)} department(s))",
        file=err,
    )
    return 0
