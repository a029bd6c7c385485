"""``egresswatch pac --proxy HOST:PORT ...``: write a proxy auto-config file for the fleet.

Clients (browsers, operating systems, WPAD) read the PAC file to find their proxies. The file
lists every proxy given, spreads destinations across them by a hash of the host name and fails
over to the others in turn; see :mod:`egresswatch.pac` for the rules. Exit status: 0 written,
2 for a malformed argument (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..pac import build_pac

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pac",
        help="write a proxy auto-config (PAC) file listing the fleet's proxies",
        description="Write a proxy auto-config (PAC) file that sends clients to the given "
        "proxies: each destination host starts at the proxy its name hashes to and fails over "
        "to the others in turn. Plain host names, localhost and the bypasses go direct.",
    )
    p.add_argument(
        "--proxy",
        metavar="HOST:PORT",
        action="append",
        required=True,
        help="a proxy of the fleet (repeat for each; [v6]:PORT for IPv6 addresses)",
    )
    p.add_argument(
        "--bypass",
        metavar="NAME",
        action="append",
        default=[],
        help="a host name that goes direct, with every name under it (repeatable)",
    )
    p.add_argument(
        "--bypass-network",
        metavar="CIDR",
        action="append",
        default=[],
        help="an IPv4 range whose literal addresses go direct (repeatable)",
    )
    p.add_argument(
        "--fallback-direct",
        action="store_true",
        help="end the list with DIRECT: clients bypass the proxies when all are down "
        "(default: they fail, so nothing leaves unseen)",
    )
    p.add_argument("-o", "--output", type=Path, metavar="PATH", help="default: standard output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        text = build_pac(
            args.proxy,
            bypass_hosts=args.bypass,
            bypass_networks=args.bypass_network,
            fallback_direct=args.fallback_direct,
        )
    except ValueError as exc:
        print(f"egresswatch pac: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
