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

Run as a module (``python -m egresswatch.proxy.run MITMDUMP-ARGS``) it is one worker process: the
supervisor started by ``egresswatch run --workers`` starts one per core this way.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy.proxy import mode_specs
from mitmproxy.tools.main import mitmdump

import egresswatch

__all__ = [
    "check_tcp_modes",
    "find_shim",
    "listen_with_reuse_port",
    "run_mitmdump",
    "run_worker",
]

#: The entry script, relative to the package: a copy shipped as package data in a directory of
#: its own (mitmproxy leaves a script's directory on ``sys.path``; MITMPROXY.md section 9).
_PACKAGED_SHIM = Path("_shim") / "egresswatch_entry.py"
_MARK = "_egresswatch_reuse_port"


def find_shim() -> Path:
    """The ``mitmdump -s`` entry script: the repository's, else the packaged copy."""
    pkg = Path(egresswatch.__file__).resolve().parent
    repo = pkg.parents[1] / "deploy" / "mitmproxy" / "egresswatch.py"
    if repo.is_file():
        return repo
    packaged = pkg / _PACKAGED_SHIM
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"egresswatch entry script not found ({repo} or {packaged})")


def run_mitmdump(argv_for: Callable[[Path], list[str]]) -> int:
    """Run mitmdump with the arguments ``argv_for(entry script)``; returns its exit status."""
    rc = mitmdump(argv_for(find_shim()))
    return int(rc or 0)


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


def run_worker(argv_for: Callable[[Path], list[str]]) -> int:
    """:func:`run_mitmdump` with its TCP listeners sharing their port (``SO_REUSEPORT``)."""
    listen_with_reuse_port()
    return run_mitmdump(argv_for)


def main(argv: Sequence[str] | None = None) -> int:
    """One worker: ``python -m egresswatch.proxy.run MITMDUMP-ARGS`` (``-s`` already included)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_worker(lambda _shim: args)


if __name__ == "__main__":
    sys.exit(main())
