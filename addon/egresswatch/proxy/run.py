"""Start mitmdump in this process with the egresswatch entry script (``egresswatch run``).

``egresswatch.commands.run`` turns the command line into mitmdump arguments and imports this
module only when the command runs, so the other commands never load mitmproxy.

Workers (``egresswatch run --workers N`` and ``--worker I``) share one listening address through
``SO_REUSEPORT``: the kernel hashes each new TCP connection's addresses to one of the sockets
bound to the port. mitmproxy has no option for it; its TCP servers are started with
``asyncio.start_server(handler, host, port)`` (``mitmproxy.proxy.mode_servers``), looked up on
the ``asyncio`` module at each call. :func:`listen_with_reuse_port` wraps that function in the
worker process, before mitmdump starts, so every TCP listener gets ``reuse_port=True``. UDP
listeners (``dns``, ``wireguard``, UDP reverse modes) are bound by mitmproxy_rs, which the wrapper
cannot reach: :func:`check_tcp_modes` refuses them for workers. The workaround is tested in
``tests/test_proxy_run.py`` (two servers on one port) and end to end in ``tests/test_e2e_workers.py``.

``egresswatch run`` does not load the addon as a ``-s`` script: mitmproxy loads scripts in a task
that runs while the servers are being set up, so a refused start-up (broken catalogue or policy,
bad ``egresswatch_*`` value) would be reported only after "proxy listening at ...", with the port
bound. :class:`EgressWatchMaster` is mitmdump's master with the addon built in: its options are
declared when the master is made (so ``--set egresswatch_*`` values are typed at once, never
deferred), it is configured once with every option (what the script loader does for a script)
before any server starts, and it joins the addon chain right after ``ScriptLoader``, where a
``-s`` script sits (before ``NextLayer`` and ``TlsConfig``, whose ``next_layer`` and TLS hooks
must see its decisions). A refused configure logs its ``file:line`` reasons and exits 1
(``EgressWatch.configure`` raises ``SystemExit`` while mitmproxy is starting), before
``Master.run`` sets up a server.

Run as a module (``python -m egresswatch.proxy.run MITMDUMP-ARGS``) it is one worker process: the
supervisor started by ``egresswatch run --workers`` starts one per core this way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmproxy import hooks
from mitmproxy import options as mitmproxy_options
from mitmproxy.proxy import mode_specs
from mitmproxy.tools import cmdline
from mitmproxy.tools import main as mitmproxy_main
from mitmproxy.tools.dump import DumpMaster

from egresswatch.proxy.addon import EgressWatch
from egresswatch.workers import die_with_supervisor

__all__ = [
    "EgressWatchMaster",
    "check_tcp_modes",
    "listen_with_reuse_port",
    "run_mitmdump",
    "run_worker",
]

_MARK = "_egresswatch_reuse_port"


class EgressWatchMaster(DumpMaster):
    """mitmdump's master with :class:`~egresswatch.proxy.addon.EgressWatch` built in, configured
    before any server starts (see the module docstring)."""

    #: False: configure the addon, run mitmproxy's start-up check and return, serving nothing.
    serve = True

    def __init__(
        self,
        opts: mitmproxy_options.Options,
        loop: asyncio.AbstractEventLoop | None = None,
        with_termlog: bool = True,
        with_dumper: bool = True,
    ) -> None:
        super().__init__(opts, loop, with_termlog=with_termlog, with_dumper=with_dumper)
        self.egresswatch = EgressWatch()
        # Declares the options; the addon joins the chain (and so hears option changes) only in
        # run(), once the command line and config.yaml are applied: one configure, not one per
        # step of mitmproxy's option parsing.
        self.addons.register(self.egresswatch)  # type: ignore[no-untyped-call]

    async def run(self) -> None:
        ew = self.egresswatch
        chain = self.addons.chain
        if ew not in chain:
            after = self.addons.get("scriptloader")  # type: ignore[no-untyped-call]
            chain.insert(chain.index(after) + 1 if after in chain else len(chain), ew)
            every = set(self.options.keys())  # type: ignore[no-untyped-call]
            self.addons.invoke_addon_sync(ew, hooks.ConfigureHook(every))
        if not self.serve:
            if check := self.addons.get("errorcheck"):  # type: ignore[no-untyped-call]
                await check.shutdown_if_errored()
            return
        await super().run()


class _CheckMaster(EgressWatchMaster):
    serve = False


def _filter_options(args: argparse.Namespace) -> dict[str, str]:
    """mitmdump's positional filter expression, as mitmdump applies it."""
    if not args.filter_args:
        return {}
    expr = " ".join(args.filter_args)
    return {"save_stream_filter": expr, "readfile_filter": expr, "dumper_filter": expr}


def run_mitmdump(argv: list[str], *, serve: bool = True) -> int:
    """Run mitmdump with :class:`EgressWatchMaster` and the arguments ``argv``; its exit status.

    ``serve=False`` only checks that the proxy would start: options, catalogue, policy, store
    URL and signing key exactly as a real start-up configures them (exit 1 with the reasons
    otherwise), then returns 0 without listening (what ``egresswatch run --workers`` does once
    before it starts its workers)."""
    master = EgressWatchMaster if serve else _CheckMaster
    mitmproxy_main.run(master, cmdline.mitmdump, argv, _filter_options)
    return 0


def check_tcp_modes(modes: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every mode listens on TCP only (workers need it).

    >>> check_tcp_modes(["regular", "socks5@1080", "upstream:http://u.example:3128"])
    >>> check_tcp_modes(["dns@5353"])
    Traceback (most recent call last):
    ...
    ValueError: --workers: mode 'dns@5353' uses UDP; only TCP modes can share a port between workers (run one process for it)
    """
    for spec in modes or ["regular"]:
        try:
            proto = mode_specs.ProxyMode.parse(spec).transport_protocol
        except ValueError as e:
            raise ValueError(f"--mode {spec!r}: {e}") from None
        if proto != "tcp":
            raise ValueError(
                f"--workers: mode {spec!r} uses UDP; only TCP modes can share a port "
                "between workers (run one process for it)"
            )


def listen_with_reuse_port() -> Callable[[], None]:
    """Make ``asyncio.start_server`` bind with ``SO_REUSEPORT`` in this process; returns a
    function that undoes it. Calling it twice wraps once."""
    original = asyncio.start_server
    if getattr(original, _MARK, False):
        return lambda: None

    @functools.wraps(original)
    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("reuse_port", True)
        return await original(*args, **kwargs)

    setattr(start_server, _MARK, True)
    asyncio.start_server = start_server

    def restore() -> None:
        asyncio.start_server = original

    return restore


def run_worker(argv: list[str]) -> int:
    """:func:`run_mitmdump` with its TCP listeners sharing their port (``SO_REUSEPORT``)."""
    listen_with_reuse_port()
    return run_mitmdump(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """One supervised worker: ``python -m egresswatch.proxy.run MITMDUMP-ARGS``; with
    ``--check`` first, only the start-up check (``run_mitmdump(serve=False)``).

    A worker stops (SIGTERM, the graceful path) when its supervisor dies, even by SIGKILL."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--check"]:
        return run_mitmdump(args[1:], serve=False)
    if not die_with_supervisor():
        print("egresswatch worker: the supervisor is gone; not starting", file=sys.stderr)
        return 1
    return run_worker(args)


if __name__ == "__main__":
    sys.exit(main())
