"""``egresswatch run``: mitmdump with the egresswatch addon and safe defaults.

Everything here is argument plumbing: the flags become ``--set egresswatch_*`` options for the
addon and a few mitmdump flags; ``egresswatch.proxy.run`` then runs mitmdump in this process. It
(and so mitmproxy) is imported only when the command runs, so ``egresswatch report`` and friends
never pay for it.

>>> build_mitmdump_args(build_parser().parse_args(["--policy", "p.yaml", "--", "-q"]),
...                     shim=Path("/x/shim.py"))  # doctest: +NORMALIZE_WHITESPACE
['-s', '/x/shim.py', '--listen-host', '127.0.0.1', '--listen-port', '8080',
 '--set', 'egresswatch_policy=p.yaml', '-q']
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_mitmdump_args", "build_parser", "register", "run"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen-host",
        default="127.0.0.1",
        help="address the proxy listens on (default: 127.0.0.1, loopback only)",
    )
    p.add_argument("--listen-port", type=int, default=8080, help="proxy port (default: 8080)")
    p.add_argument(
        "--mode",
        action="append",
        default=[],
        metavar="MODE",
        help="mitmproxy mode: regular (default), socks5, transparent, dns, "
        "upstream:URL, wireguard ... (repeatable)",
    )
    p.add_argument(
        "--lists",
        action="append",
        default=[],
        metavar="DIR",
        help="extra catalogue directory, merged after the bundled one (repeatable)",
    )
    p.add_argument(
        "--no-bundled",
        action="store_true",
        help="do not load the bundled catalogue (then --lists is required)",
    )
    p.add_argument("--policy", metavar="FILE", help="policy YAML (default: monitor everything)")
    p.add_argument("--data-dir", metavar="DIR", help="directory of the default SQLite event store")
    p.add_argument(
        "--store",
        metavar="URL",
        help="event store URL (sqlite:///..., postgresql://..., memory://)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Prometheus endpoint (default 127.0.0.1:9464; 'off' disables)",
    )
    p.add_argument(
        "--decrypt",
        choices=("off", "blocked", "all"),
        help="TLS interception: off (default), blocked (block pages), all",
    )
    p.add_argument(
        "--confdir",
        metavar="DIR",
        help="mitmproxy configuration directory (CA, config.yaml); default ~/.mitmproxy",
    )
    p.add_argument(
        "mitmdump_args",
        nargs=argparse.REMAINDER,
        help="after --: any mitmdump arguments, passed through unchanged",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="egresswatch run", description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return p


def build_mitmdump_args(args: argparse.Namespace, shim: Path) -> list[str]:
    """The mitmdump command line for parsed ``egresswatch run`` arguments."""
    argv = [
        "-s",
        str(shim),
        "--listen-host",
        args.listen_host,
        "--listen-port",
        str(args.listen_port),
    ]
    for mode in args.mode:
        argv += ["--mode", mode]

    def opt(name: str, value: object) -> None:
        argv.extend(["--set", f"{name}={value}"])

    if args.confdir:
        opt("confdir", args.confdir)
    if args.no_bundled:
        opt("egresswatch_bundled", "false")
    for d in args.lists:
        opt("egresswatch_lists", d)
    if args.policy:
        opt("egresswatch_policy", args.policy)
    if args.data_dir:
        opt("egresswatch_data_dir", args.data_dir)
    if args.store:
        opt("egresswatch_store", args.store)
    if args.metrics_listen is not None:
        opt("egresswatch_metrics_listen", args.metrics_listen)
    if args.decrypt:
        opt("egresswatch_decrypt", args.decrypt)
    extra = list(args.mitmdump_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    return argv + extra


def run(args: argparse.Namespace) -> int:
    """Run mitmdump with the addon in this process; returns its exit status."""
    # Imported only here: "run" is the one command that starts mitmproxy.
    from egresswatch.proxy.run import run_mitmdump

    return run_mitmdump(lambda shim: build_mitmdump_args(args, shim))


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run the proxy (mitmdump with the egresswatch addon)",
        description="Run mitmdump with the egresswatch addon, the bundled catalogue and safe "
        "defaults (loopback only). Arguments after -- go to mitmdump unchanged.",
    )
    _add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
