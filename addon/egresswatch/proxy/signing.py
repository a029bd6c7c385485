"""The proxy's checkpoint signing: which key, which log, how often (issue 12, item 1).

Loaded in ``configure`` so that a key the proxy cannot use (readable by the group, not a key)
refuses start-up before any server listens; handed to the
:class:`~egresswatch.writer.EventWriter` in ``running``. A ``memory://`` store, or an interval
of 0, signs nothing (there is nothing durable to witness, or the operator said so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from egresswatch.checkpoint import CHECKPOINT_LOG_NAME
from egresswatch.checkpoint import SIGNING_KEY_NAME
from egresswatch.checkpoint import CheckpointLog
from egresswatch.checkpoint import KeyError_
from egresswatch.checkpoint import Signer
from egresswatch.checkpoint import load_or_create_signer
from egresswatch.checkpoint import public_key_path
from egresswatch.store import backend_of
from egresswatch.store import default_data_dir

__all__ = ["Signing", "load_signing"]


@dataclass(frozen=True, slots=True)
class Signing:
    """A loaded signing key, the checkpoint log it appends to, and the interval (seconds)."""

    signer: Signer
    key_path: Path
    created: bool
    log: CheckpointLog
    interval: float

    def describe(self) -> str:
        """The start-up log line: the key, its public half and where that half is kept."""
        verb = "created" if self.created else "using"
        return (
            f"egresswatch: {verb} signing key {self.key_path}; public key "
            f"{self.signer.verifier.text()} (in {public_key_path(self.key_path)}): keep a copy "
            f"away from this host; checkpoints every {self.interval:g} s to {self.log.path}"
        )


def load_signing(store_url: str, data_dir: str, key: str, interval: float) -> Signing | None:
    """The signing set-up for these option values (None: no signing). ``ValueError`` names a
    key that cannot be used and the fix."""
    if interval <= 0 or backend_of(store_url) == "memory":
        return None
    base = Path(data_dir).expanduser() if data_dir else default_data_dir()
    key_path = Path(key).expanduser() if key else base / SIGNING_KEY_NAME
    try:
        signer, created = load_or_create_signer(key_path)
    except KeyError_ as e:
        raise ValueError(f"egresswatch_signing_key: {e}") from None
    except OSError as e:  # e.g. the data directory cannot be created
        raise ValueError(f"egresswatch_signing_key {key_path}: {e.strerror or e}") from None
    log = CheckpointLog(base / CHECKPOINT_LOG_NAME)
    return Signing(signer, key_path, created, log, interval)
