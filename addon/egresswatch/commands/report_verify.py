"""``egresswatch report verify REPORT.json``: check a sealed JSON report against the store.

::

    egresswatch report verify july.json --data-dir /var/lib/egresswatch --public-key pinned.pub

Exit status: 0 when the digest, every embedded checkpoint (signature, and the store still holds
its head), the hash chains, the rollups and every figure agree; 1 with the first disagreement
named on stderr; 2 when the report, the store or the key cannot be read.

Also where ``egresswatch report`` finds the checkpoints it embeds (:func:`witnesses`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..catalogue_model import CatalogueLike
from ..checkpoint import CHECKPOINT_LOG_NAME
from ..checkpoint import SIGNING_KEY_NAME
from ..checkpoint import CheckpointError
from ..checkpoint import Verifier
from ..checkpoint import load_verifier
from ..checkpoint import public_key_path
from ..checkpoint import read_entries
from ..store import StoreError
from ..witness import Witnessed
from ..witness import checkpoints_covering
from ..witness import verify_signatures
from .db import data_dir_from_args
from .db import open_from_args

__all__ = ["add_witness_arguments", "run_verify", "witnesses"]

_PREFIX = "egresswatch report verify"


def add_witness_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoints",
        nargs="+",
        metavar="FILE",
        help="signed checkpoint logs (default: checkpoints.log in the data directory, if present)",
    )
    p.add_argument(
        "--public-key",
        metavar="FILE",
        help="the trusted verifier key (default: signing.key.pub in the data directory)",
    )


def _key_path(args: argparse.Namespace) -> Path:
    if args.public_key:
        return Path(args.public_key)
    return public_key_path(data_dir_from_args(args) / SIGNING_KEY_NAME)


def witnesses(
    args: argparse.Namespace, start: float, end: float
) -> tuple[list[Witnessed], Verifier | None]:
    """The signed checkpoints a report of ``[start, end)`` embeds, and the key that checked
    them; ``([], None)`` when there is no checkpoint log. A log whose entries are not signed by
    the key raises :class:`CheckpointError` (a report must not embed them)."""
    logs = [Path(p) for p in args.checkpoints] if args.checkpoints else []
    default = data_dir_from_args(args) / CHECKPOINT_LOG_NAME
    if not logs and default.exists():
        logs = [default]
    if not logs:
        return [], None
    verifier = load_verifier(_key_path(args))
    good, forged = verify_signatures(read_entries(logs), verifier)
    if forged:
        raise CheckpointError(f"checkpoint log: {forged[0]}")
    return checkpoints_covering(good, start, end), verifier


def run_verify(args: argparse.Namespace, path: Path, catalogue: CatalogueLike) -> int:
    from ..report.seal import verify_report

    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"{_PREFIX}: {path}: {e}", file=sys.stderr)
        return 2
    if not isinstance(doc, dict):
        print(f"{_PREFIX}: {path}: not a JSON report", file=sys.stderr)
        return 2
    key = _key_path(args)
    try:
        verifier = load_verifier(key) if key.exists() or args.public_key else None
    except CheckpointError as e:
        print(f"{_PREFIX}: {e}", file=sys.stderr)
        return 2
    store = open_from_args(args, f"{_PREFIX}: cannot open the event store")
    if store is None:
        return 2
    try:
        found = verify_report(doc, store, verifier, catalogue=catalogue)
    except StoreError as e:
        print(f"{_PREFIX}: cannot read the event store: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if found is not None:
        print(f"{_PREFIX}: {path}: FAILED at {found}", file=sys.stderr)
        return 1
    n = len(doc["evidence"].get("checkpoints") or [])
    print(
        f"{path}: OK: digest {doc['digest']}; {n} signed checkpoint(s) held by the store; "
        "chains, rollups and every figure agree"
    )
    return 0
