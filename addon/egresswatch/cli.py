"""The ``egresswatch`` console script: one sub-command group per module in ``commands/``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module in egresswatch.commands defines ``register(subparsers) -> None``; the parsers it adds
# set ``func=<callable(args) -> int>``. Imported lazily so that ``egresswatch report`` never pays
# for mitmproxy.
COMMAND_MODULES = ("run", "lists", "match", "db", "events", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egresswatch",
        description="Watch, count and block outbound traffic to designated apps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"egresswatch.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"egresswatch.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
