"""``egresswatch run``: mitmdump with the egresswatch addon and safe defaults.

Everything here is argument plumbing: the flags become ``--set egresswatch_*`` options for the
addon and a few mitmdump flags; ``egresswatch.proxy.run`` then runs mitmdump in this process, with
the addon built into its master (configured before the proxy listens, so a refused start-up never
binds the port). It (and so mitmproxy) is imported only when the command runs, so
``egresswatch report`` and friends never pay for it.

>>> build_mitmdump_args(build_parser().parse_args(["--policy", "p.yaml", "--", "-q"]))
... # doctest: +NORMALIZE_WHITESPACE
['--listen-host', '127.0.0.1', '--listen-port', '8080', '--set', 'egresswatch_policy=p.yaml', '-q']
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from egresswatch.workers import Supervisor
from egresswatch.workers import worker_count

__all__ = ["build_mitmdump_args", "build_parser", "register", "run", "supervise", "worker_args"]

_DEFAULT_METRICS = "127.0.0.1:9464"  # the addon's default egresswatch_metrics_listen


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
        "--instance",
        metavar="NAME",
        help="instance name in events (default: the host name); workers add -w<i>",
    )
    p.add_argument(
        "--workers",
        metavar="N|auto",
        help="run N proxy processes (auto: one per available core) on the same address with "
        "SO_REUSEPORT, supervised: each is instance <instance>-w<i> with metrics on the base "
        "port + i; TCP modes only",
    )
    p.add_argument(
        "--worker",
        type=int,
        metavar="I",
        help="run as worker I of a set sharing the address (SO_REUSEPORT): instance "
        "<instance>-wI, metrics on the base port + I (what --workers starts; for "
        "egresswatch@.service)",
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


def build_mitmdump_args(args: argparse.Namespace) -> list[str]:
    """The mitmdump command line for parsed ``egresswatch run`` arguments (no ``-s``: the addon
    is built into the master)."""
    argv = [
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
    if args.instance:
        opt("egresswatch_instance", args.instance)
    extra = list(args.mitmdump_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    return argv + extra


def worker_args(args: argparse.Namespace, index: int) -> argparse.Namespace:
    """The arguments of worker ``index``: its own instance name and metrics port.

    The metrics port is the base port (``--metrics-listen``, default 9464) plus ``index``; with
    port 0 each worker picks a free port of its own (logged at start); ``off`` stays off.

    >>> a = build_parser().parse_args(["--instance", "gw", "--metrics-listen", "[::1]:9500"])
    >>> w = worker_args(a, 2)
    >>> w.instance, w.metrics_listen, w.workers, w.worker
    ('gw-w2', '[::1]:9502', None, None)
    """
    if index < 0:
        raise ValueError(f"--worker: expected a number >= 0, got {index}")
    listen = _DEFAULT_METRICS if args.metrics_listen is None else args.metrics_listen
    if listen.strip().lower() not in ("", "off"):
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--metrics-listen: expected HOST:PORT, got {listen!r}")
        base = int(port)
        if base and base + index > 65535:
            raise ValueError(f"--metrics-listen: port {base} + worker {index} exceeds 65535")
        listen = f"{host}:{base + index if base else 0}"
    return argparse.Namespace(
        **{
            **vars(args),
            "instance": f"{args.instance or socket.gethostname()}-w{index}",
            "metrics_listen": listen,
            "workers": None,
            "worker": None,
        }
    )


def run(args: argparse.Namespace) -> int:
    """Run mitmdump with the addon in this process (or supervise workers); the exit status."""
    # Imported only here: "run" is the one command that starts mitmproxy.
    from egresswatch.proxy import run as proxy_run

    if args.workers is None and args.worker is None:
        return proxy_run.run_mitmdump(build_mitmdump_args(args))
    try:
        if args.workers is not None and args.worker is not None:
            raise ValueError("--workers and --worker exclude each other")
        proxy_run.check_tcp_modes(args.mode)
        if args.listen_port == 0:
            raise ValueError("workers need a fixed --listen-port to share (not 0)")
        if args.worker is not None:
            one = worker_args(args, args.worker)
            return proxy_run.run_worker(build_mitmdump_args(one))
        count = worker_count(args.workers)
        worker = [sys.executable, "-m", "egresswatch.proxy.run"]
        argvs = [[*worker, *build_mitmdump_args(worker_args(args, i))] for i in range(count)]
    except ValueError as e:
        print(f"egresswatch run: {e}", file=sys.stderr)
        return 2
    # A start-up the workers would refuse (catalogue, policy, an option) is refused once, here,
    # before any of them binds the port; not restarted for ever.
    check = subprocess.run([*worker, "--check", *argvs[0][len(worker) :]], check=False)
    if check.returncode != 0:
        return check.returncode
    return supervise(argvs)


def supervise(argvs: list[list[str]]) -> int:
    """Run the workers under a :class:`~egresswatch.workers.Supervisor` until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="egresswatch supervisor: %(message)s")
    sup = Supervisor(argvs)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: sup.stop())
    return sup.run()


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
