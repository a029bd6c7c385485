"""``egresswatch db verify|migrate|prune|stats``: look after the event store.

``--store URL`` or ``--data-dir DIR`` pick the store (default: ``sqlite:///<data-dir>/events.db``
with the data dir from ``$EGRESSWATCH_DATA_DIR``, ``$XDG_DATA_HOME/egresswatch`` or
``~/.local/share/egresswatch``). Other command groups reuse :func:`add_store_arguments` and
:func:`store_url_from_args`.

``db verify`` also checks the store against the signed checkpoint log (``checkpoints.log`` and
the public key ``signing.key.pub`` beside the store in the data directory, or ``--checkpoints
FILE ...`` and ``--public-key FILE``) and recounts the daily rollups from the chained hit rows.

Exit codes: 0 fine, 1 verification found problems, 2 the store (or the checkpoint log, or the key)
could not be used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..checkpoint import CHECKPOINT_LOG_NAME
from ..checkpoint import SIGNING_KEY_NAME
from ..checkpoint import CheckpointError
from ..checkpoint import load_or_create_signer
from ..checkpoint import load_verifier
from ..checkpoint import public_key_path
from ..checkpoint import read_entries
from ..store import EventStore
from ..store import StoreError
from ..store import default_data_dir
from ..store import default_store_url
from ..store import open_store
from ..store import redact_url
from ..store.sqlite import sqlite_path
from ..witness import verify_checkpoints
from ..witness import verify_rollups
from . import command_group

__all__ = ["add_store_arguments", "open_from_args", "register", "store_url_from_args"]


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--store",
        metavar="URL",
        help="event store URL: sqlite:///path/events.db or postgresql://user@host/db",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help="use DIR/events.db (default: $EGRESSWATCH_DATA_DIR, $XDG_DATA_HOME/egresswatch "
        "or ~/.local/share/egresswatch)",
    )


def store_url_from_args(args: argparse.Namespace) -> str:
    url: str | None = getattr(args, "store", None)
    return url if url else default_store_url(getattr(args, "data_dir", None))


def data_dir_from_args(args: argparse.Namespace) -> Path:
    """Where the checkpoint log and the signing key live: ``--data-dir``, else the directory of
    a SQLite ``--store``, else the default data directory."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    url: str | None = getattr(args, "store", None)
    if url and url.lower().startswith("sqlite:"):
        return Path(sqlite_path(url)).expanduser().absolute().parent
    return default_data_dir()


def open_from_args(
    args: argparse.Namespace, prefix: str, *, create: bool = False
) -> EventStore | None:
    """The store named by ``--store``/``--data-dir``; ``None`` when it cannot be opened, after
    printing ``<prefix>: <why>`` to stderr. Only ``create=True`` (``db migrate``) makes a new
    store: a read command on a mistyped path says there is no store there."""
    try:
        return open_store(store_url_from_args(args), create=create)
    except (StoreError, ValueError) as e:
        print(f"{prefix}: {e}", file=sys.stderr)
        return None


def _open(args: argparse.Namespace, *, create: bool = False) -> EventStore | None:
    return open_from_args(args, "egresswatch db", create=create)


def register(subparsers: Any) -> None:
    sub = command_group(
        subparsers, "db", help="verify, migrate, prune and size the event store", metavar="COMMAND"
    )

    verify = sub.add_parser("verify", help="recompute every hash chain; exit 1 naming each problem")
    add_store_arguments(verify)
    verify.add_argument("--instance", metavar="ID", help="verify one proxy instance only")
    how = verify.add_mutually_exclusive_group()
    how.add_argument(
        "--full-verify",
        dest="full",
        action="store_true",
        default=True,
        help="recompute every row from the start or the prune checkpoint (the default)",
    )
    how.add_argument(
        "--incremental",
        dest="full",
        action="store_false",
        help="only rows after the last successful verification run's head (continuity checked "
        "from its chain hash); edits to rows verified earlier wait for the next full run",
    )
    verify.add_argument(
        "--checkpoints",
        nargs="+",
        metavar="FILE",
        help="signed checkpoint logs to check the store against (a copy a SIEM kept, or an ECS "
        "export of checkpoints); default: checkpoints.log in the data directory, if present",
    )
    verify.add_argument(
        "--public-key",
        metavar="FILE",
        help="the trusted verifier key (default: signing.key.pub in the data directory; pin a "
        "copy kept away from the proxy host)",
    )
    verify.set_defaults(func=cmd_verify)

    migrate = sub.add_parser("migrate", help="apply pending schema migrations")
    add_store_arguments(migrate)
    migrate.set_defaults(func=cmd_migrate)

    prune = sub.add_parser(
        "prune", help="delete raw events older than N days (daily rollups are kept)"
    )
    add_store_arguments(prune)
    prune.add_argument("--days", type=int, default=90, metavar="N", help="keep N days (90)")
    prune.set_defaults(func=cmd_prune)

    key = sub.add_parser(
        "key",
        help="create the checkpoint signing key if missing (0600) and print its public half",
    )
    add_store_arguments(key)
    key.add_argument(
        "--key", metavar="FILE", help="the key file (default: signing.key in the data directory)"
    )
    key.set_defaults(func=cmd_key)

    stats = sub.add_parser("stats", help="row counts and size of the event store")
    add_store_arguments(stats)
    stats.set_defaults(func=cmd_stats)


def cmd_verify(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return 2
    data_dir = data_dir_from_args(args)
    logs = [Path(p) for p in args.checkpoints] if args.checkpoints else []
    if not logs and (data_dir / CHECKPOINT_LOG_NAME).exists():
        logs = [data_dir / CHECKPOINT_LOG_NAME]
    key = Path(args.public_key) if args.public_key else public_key_path(data_dir / SIGNING_KEY_NAME)
    try:
        result = store.verify(args.instance, full=args.full)
        broken = {p.instance for p in result.problems}
        rollup_problems, notes = (
            verify_rollups(store, args.instance, broken) if args.full else ([], ["rollups not "
            "recounted (incremental run; a full run recounts them)"])
        )  # fmt: skip
        witness = verifier = None
        if logs:
            verifier = load_verifier(key)
            witness = verify_checkpoints(store, read_entries(logs), verifier, args.instance)
    except StoreError as e:
        print(f"egresswatch db verify: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"egresswatch db verify: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.instance and not result.heads:
        print(
            f"egresswatch db verify: no instance {args.instance!r} in this store", file=sys.stderr
        )
        return 1
    for head in result.heads:
        checked = result.per_instance.get(head.instance, 0)
        print(f"{head.instance}: {checked} events checked, head #{head.seq} {head.chain_hash}")
    for run in result.runs:
        rid = f"run #{run.id}" if run.id is not None else "run not recorded (read-only store?)"
        base = f", continuing run #{run.base_id}" if run.base_id is not None else ""
        print(
            f"{run.instance}: rows {run.from_seq}..{run.to_seq} verified {run.mode}{base} ({rid})"
        )
    problems = [*result.problems, *rollup_problems]
    if witness is None:
        print(
            f"NOTE: no checkpoint log ({data_dir / CHECKPOINT_LOG_NAME} absent): the chains are "
            "checked against the database only; a rewrite with recomputed hashes would pass"
        )
    else:
        problems.extend(witness.problems)
        notes.extend(witness.notes)
        names = ", ".join(str(p) for p in logs)
        assert verifier is not None
        print(
            f"witnessed: {witness.checked} signed checkpoint(s) from {names} checked with the "
            f"key {key} ({verifier.text()}): compare it with a copy kept away from this host"
        )
        for name, w in sorted(witness.latest.items()):
            print(f"{name}: latest checkpoint #{w.checkpoint.size} ({w.source})")
    for note in notes:
        print(f"NOTE: {note}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    if not problems:
        print(f"OK: {result.checked} events checked in {len(result.heads)} chain(s)")
        return 0
    print(
        f"FAILED: {len(problems)} problem(s) in {result.checked} events checked",
        file=sys.stderr,
    )
    return 1


def cmd_migrate(args: argparse.Namespace) -> int:
    store = _open(args, create=True)  # migrations are applied at open
    if store is None:
        return 2
    try:
        version = store.stats().schema_version
    finally:
        store.close()
    print(f"{redact_url(store.url)}: schema version {version} (up to date)")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    if args.days < 1:
        print("egresswatch db prune: --days must be at least 1", file=sys.stderr)
        return 2
    store = _open(args)
    if store is None:
        return 2
    before = time.time() - args.days * 86400
    try:
        n = store.prune(before)
    except StoreError as e:
        print(f"egresswatch db prune: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"pruned {n} events older than {args.days} days (rollups kept)")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    path = Path(args.key) if args.key else data_dir_from_args(args) / SIGNING_KEY_NAME
    try:
        signer, created = load_or_create_signer(path)
    except CheckpointError as e:
        print(f"egresswatch db key: {e}", file=sys.stderr)
        return 2
    print(f"{'created' if created else 'existing'} signing key {path} (mode 0600)")
    print(f"public key ({public_key_path(path)}); keep a copy away from this host:")
    print(signer.verifier.text())
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return 2
    try:
        st = store.stats()
        heads = store.chain_heads()
    finally:
        store.close()
    print(f"store: {redact_url(store.url)}")
    print(f"schema version: {st.schema_version}")
    for table, n in st.rows.items():
        print(f"{table}: {n} rows")
    if st.bytes >= 0:
        print(f"size: {st.bytes} bytes ({st.bytes / 1e6:.1f} MB)")
    for h in heads:
        print(f"instance {h.instance}: head #{h.seq}")
    return 0
