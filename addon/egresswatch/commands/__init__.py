"""Sub-commands of the ``egresswatch`` console script, one module per group."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["command_group"]


def command_group(
    subparsers: Any,
    name: str,
    *,
    help: str,
    description: str | None = None,
    metavar: str = "ACTION",
) -> Any:
    """``egresswatch NAME <action>``: the group's parser, whose actions are required; returns the
    sub-parsers to add the actions to (the chosen one is ``args.<name>_command``)."""
    group: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=description)
    actions = group.add_subparsers(dest=f"{name}_command", metavar=metavar)
    actions.required = True
    return actions
