"""Start mitmdump in this process with the egresswatch entry script (``egresswatch run``).

``egresswatch.commands.run`` turns the command line into mitmdump arguments and imports this
module only when the command runs, so the other commands never load mitmproxy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mitmproxy.tools.main import mitmdump

import egresswatch

__all__ = ["find_shim", "run_mitmdump"]

#: The entry script, relative to the package: a copy shipped as package data in a directory of
#: its own (mitmproxy leaves a script's directory on ``sys.path``; MITMPROXY.md section 9).
_PACKAGED_SHIM = Path("_shim") / "egresswatch_entry.py"


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
