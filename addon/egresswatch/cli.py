"""The ``egresswatch`` console script: one sub-command group per module in ``commands/``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

# Each module in egresswatch.commands defines ``register(subparsers) -> None``; the parsers it adds
# set ``func=<callable(args) -> int>``. Imported lazily so that ``egresswatch report`` never pays
# for mitmproxy.
COMMAND_MODULES = ("run", "lists", "policy", "match", "db", "events", "report", "pac")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egresswatch",
        description="Watch, count and block outbound traffic to designated apps.",
    )
    parser.add_argument("--version", action="version", version=f"egresswatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"egresswatch.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
