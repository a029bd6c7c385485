"""Signed checkpoints of the hash chains, kept outside the database.

A *checkpoint* commits to one instance's chain as it stood at a moment: the number of chained
events (= the head's ``seq``; seq is gap-free from 1), the chain hash of that head, the time, and
a digest of the instance's recorded verification runs. It is a signed note in the C2SP
``tlog-checkpoint`` / ``signed-note`` formats (the formats of Go's checksum database and Sigstore)::

    egresswatch/edge-a                               origin: one log per instance
    1234                                             size: events chained so far (head seq)
    q3v7...base64 of the 32-byte head chain hash...=
    time 2026-12-08T01:23:58.123456Z                 extension lines
    verifications 3 17 base64(sha256 of runs)=       runs of this instance up to run id 17
                                                     (blank line)
    — egresswatch-host1 base64(key hash || Ed25519 signature)

The signature covers the note text (every line above the blank line, each ending in ``\\n``);
the key hash is the first 4 bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``, the
verifier key is written as ``name+hex(key hash)+base64(0x01 || public key)``.

The signing key lives in a file of its own (0600; a group- or world-readable key is refused),
created on first use; its public half is written beside it (``.pub``). The checkpoint log is an
append-only text file, one signed note per entry, entries separated by a blank line, each append
fsynced. ``docs/store.md`` says what the checkpoints prove and what they do not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import socket
import stat
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.serialization import PublicFormat

from .store import VerificationRun

__all__ = [
    "CHECKPOINT_LOG_NAME",
    "SIGNING_KEY_NAME",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLog",
    "KeyError_",
    "LoggedCheckpoint",
    "Signer",
    "Verifier",
    "load_or_create_signer",
    "load_verifier",
    "parse_entries",
    "public_key_path",
    "read_entries",
    "runs_digest",
]

#: File names in the data directory (beside ``events.db``).
CHECKPOINT_LOG_NAME = "checkpoints.log"
SIGNING_KEY_NAME = "signing.key"
ORIGIN_PREFIX = "egresswatch/"
#: ``event.dataset`` of the checkpoint documents in the ECS export.
ECS_DATASET = "egresswatch.checkpoints"
_ALG_ED25519 = b"\x01"
_DASH = "\u2014"  # the em dash that starts a signed-note signature line
_PRIVATE_PREFIX = "PRIVATE+KEY+"
ZERO_RUNS = base64.b64encode(hashlib.sha256(b"").digest()).decode()


class CheckpointError(ValueError):
    """A checkpoint, a note or a log entry is malformed or does not verify."""


class KeyError_(CheckpointError):  # noqa: N801 - ``KeyError`` is a builtin
    """The signing or verifier key cannot be used (permissions, format)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One instance's chain at ``time``: ``size`` events, head chain hash ``head`` (hex).

    ``runs``/``runs_last_id``/``runs_digest``: how many verification runs of this instance the
    store held, up to which run id, and the digest of those runs (:func:`runs_digest`).
    """

    instance: str
    size: int
    head: str
    time: float
    runs: int = 0
    runs_last_id: int = 0
    runs_digest: str = ZERO_RUNS

    @property
    def origin(self) -> str:
        return ORIGIN_PREFIX + self.instance

    def body(self) -> str:
        """The note text the signature covers."""
        if not self.instance or any(ord(c) < 0x21 or c == "\x7f" for c in self.instance):
            raise CheckpointError(f"instance {self.instance!r} cannot name a checkpoint origin")
        root = base64.b64encode(bytes.fromhex(self.head)).decode()
        when = datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return (
            f"{self.origin}\n{self.size}\n{root}\ntime {when}\n"
            f"verifications {self.runs} {self.runs_last_id} {self.runs_digest}\n"
        )

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 6 or lines[-1] != "":
            raise CheckpointError("a checkpoint has 5 lines: origin, size, root, time, runs")
        origin, size, root, when, runs = lines[:5]
        if not origin.startswith(ORIGIN_PREFIX) or len(origin) == len(ORIGIN_PREFIX):
            raise CheckpointError(f"origin {origin!r} is not {ORIGIN_PREFIX}<instance>")
        if not size.isdigit():
            raise CheckpointError(f"size {size!r} is not a decimal number")
        try:
            head = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise CheckpointError(f"root hash {root!r} is not base64") from None
        if len(head) != 32:
            raise CheckpointError(f"root hash is {len(head)} bytes, not 32")
        if not when.startswith("time "):
            raise CheckpointError(f"line 4 {when!r} is not 'time <ISO datetime>'")
        try:
            ts = datetime.strptime(when[5:], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            raise CheckpointError(f"time {when[5:]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
        parts = runs.split(" ")
        if (
            len(parts) != 4
            or parts[0] != "verifications"
            or not all(p.isdigit() for p in parts[1:3])
        ):
            raise CheckpointError(f"line 5 {runs!r} is not 'verifications <n> <last id> <digest>'")
        return cls(
            origin[len(ORIGIN_PREFIX) :],
            int(size),
            head.hex(),
            ts.timestamp(),
            int(parts[1]),
            int(parts[2]),
            parts[3],
        )


def runs_digest(runs: Iterable[VerificationRun]) -> str:
    """SHA-256 (base64) over the verification runs, one canonical JSON line each, in id order."""
    h = hashlib.sha256()
    for r in sorted(runs, key=lambda r: r.id or 0):
        line = [
            r.id, r.instance, r.mode, r.from_seq, r.to_seq, r.chain_hash, r.ok, r.problems,
            r.checked, r.base_id, repr(float(r.started_at)), repr(float(r.finished_at)),
        ]  # fmt: skip
        h.update(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return base64.b64encode(h.digest()).decode()


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ALG_ED25519 + public).digest()[:4]


def _check_name(name: str) -> str:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise KeyError_(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


class Verifier:
    """An Ed25519 verifier key in the signed-note form ``name+hash+base64(0x01||key)``."""

    def __init__(self, name: str, public: bytes) -> None:
        self.name = _check_name(name)
        self.public = public
        self.key_hash = _key_hash(name, public)
        self._key = Ed25519PublicKey.from_public_bytes(public)

    def text(self) -> str:
        raw = base64.b64encode(_ALG_ED25519 + self.public).decode()
        return f"{self.name}+{self.key_hash.hex()}+{raw}"

    @classmethod
    def parse(cls, text: str, where: str = "verifier key") -> Verifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise KeyError_(f"{where}: not a verifier key 'name+hash+base64'")
        try:
            raw = base64.b64decode(parts[2], validate=True)
            want = bytes.fromhex(parts[1])
        except (binascii.Error, ValueError):
            raise KeyError_(f"{where}: bad base64 or hex in the verifier key") from None
        if len(raw) != 33 or raw[:1] != _ALG_ED25519:
            raise KeyError_(f"{where}: not an Ed25519 verifier key")
        v = cls(parts[0], raw[1:])
        if v.key_hash != want:
            raise KeyError_(f"{where}: key hash {parts[1]} does not match the key")
        return v

    def verify(self, note: str) -> Checkpoint:
        """The checkpoint of a signed ``note`` if one of its signatures is by this key."""
        body, sep, sigs = note.partition("\n\n")
        if not sep:
            raise CheckpointError("no blank line between the note text and its signatures")
        body += "\n"
        found_name = False
        for line in sigs.rstrip("\n").split("\n"):
            head, _, rest = line.partition(" ")
            name, _, sig64 = rest.partition(" ")
            if head != _DASH or not name or not sig64:
                raise CheckpointError(f"signature line {line!r} is not '— <name> <base64>'")
            if name != self.name:
                continue
            found_name = True
            try:
                sig = base64.b64decode(sig64, validate=True)
            except binascii.Error:
                raise CheckpointError("signature is not base64") from None
            if len(sig) != 68 or sig[:4] != self.key_hash:
                continue
            try:
                self._key.verify(sig[4:], body.encode())
            except InvalidSignature:
                raise CheckpointError(f"signature by {name!r} does not verify") from None
            return Checkpoint.parse_body(body)
        if found_name:
            raise CheckpointError(f"signed by another key named {self.name!r} (key hash differs)")
        raise CheckpointError(f"not signed by the trusted key {self.name!r}")


class Signer:
    """An Ed25519 signing key with its signed-note name."""

    def __init__(self, name: str, seed: bytes) -> None:
        self.name = _check_name(name)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(name, public)

    def sign(self, cp: Checkpoint) -> str:
        """The signed note of ``cp``."""
        body = cp.body()
        sig = self._key.sign(body.encode())
        sig64 = base64.b64encode(self.verifier.key_hash + sig).decode()
        return f"{body}\n{_DASH} {self.name} {sig64}\n"


def default_key_name() -> str:
    return "egresswatch-" + (socket.gethostname().split(".")[0] or "proxy")


def load_or_create_signer(path: str | Path, name: str | None = None) -> tuple[Signer, bool]:
    """The signing key in ``path``, created (0600) with its ``.pub`` beside it when missing.

    Returns ``(signer, created)``. Refuses a key file that the group or others can read or
    write, or that is not ours (:class:`KeyError_` with the path and the fix).
    """
    p = Path(path)
    created = False
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        key_name = _check_name(name or default_key_name())
        text = f"{_PRIVATE_PREFIX}{key_name}+{base64.b64encode(_ALG_ED25519 + seed).decode()}\n"
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            created = True
    try:
        st = os.stat(p)
    except OSError as e:
        raise KeyError_(f"signing key {p}: {e.strerror}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(
            f"signing key {p} is readable or writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): run chmod 600 {p}"
        )
    text = p.read_text(encoding="utf-8").strip()
    if not text.startswith(_PRIVATE_PREFIX):
        raise KeyError_(f"{p}:1: not an egresswatch signing key ({_PRIVATE_PREFIX}name+base64)")
    key_name, _, raw64 = text[len(_PRIVATE_PREFIX) :].partition("+")  # names have no "+"
    try:
        raw = base64.b64decode(raw64, validate=True)
    except binascii.Error:
        raise KeyError_(f"{p}:1: the key is not base64") from None
    if len(raw) != 33 or raw[:1] != _ALG_ED25519:
        raise KeyError_(f"{p}:1: not an Ed25519 key")
    signer = Signer(key_name, raw[1:])
    pub = public_key_path(p)
    if created or not pub.exists():
        pub.write_text(signer.verifier.text() + "\n", encoding="utf-8")
    return signer, created


def public_key_path(key: str | Path) -> Path:
    p = Path(key)
    return p.with_name(p.name + ".pub")


def load_verifier(path: str | Path) -> Verifier:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise KeyError_(f"public key {p}: {e.strerror}") from e
    return Verifier.parse(text, f"{p}:1")


@dataclass(frozen=True, slots=True)
class LoggedCheckpoint:
    """One entry of a checkpoint log: the signed note and where it was."""

    source: str  # "file:line"
    note: str

    def unverified(self) -> Checkpoint:
        """What the note says, its signature NOT checked (for exports; verify with a
        :class:`Verifier` before trusting it)."""
        return Checkpoint.parse_body(self.note.partition("\n\n")[0] + "\n")

    def signer_name(self) -> str:
        """The key name of the note's first signature line."""
        sigs = self.note.partition("\n\n")[2]
        return sigs.split(" ", 2)[1] if sigs.count(" ") >= 2 else ""


def parse_entries(text: str, name: str) -> Iterator[LoggedCheckpoint]:
    """The signed notes of a checkpoint log (entries separated by blank lines), or of an ECS
    JSON-lines export (``egresswatch events export``: the documents of dataset
    ``egresswatch.checkpoints`` carry the note; the event documents beside them are skipped).
    Bad framing raises with ``file:line``."""
    if text.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                dataset = doc.get("event", {}).get("dataset")
            except (ValueError, AttributeError):
                raise CheckpointError(f"{name}:{n}: not a JSON object") from None
            if dataset != ECS_DATASET:
                continue
            try:
                note = doc["egresswatch"]["checkpoint"]["note"]
            except (KeyError, TypeError):
                note = None
            if not isinstance(note, str):
                raise CheckpointError(f"{name}:{n}: no egresswatch.checkpoint.note (a string)")
            yield LoggedCheckpoint(f"{name}:{n}", note)
        return
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i]:
            i += 1
        body = lines[start:i]
        i += 1  # the blank line between text and signatures
        sigs = []
        while i < len(lines) and lines[i].startswith(_DASH + " "):
            sigs.append(lines[i])
            i += 1
        if not sigs:
            raise CheckpointError(
                f"{name}:{start + 1}: entry has no signature line (a torn or edited entry)"
            )
        yield LoggedCheckpoint(
            f"{name}:{start + 1}", "\n".join(body) + "\n\n" + "\n".join(sigs) + "\n"
        )


class CheckpointLog:
    """The append-only checkpoint file (one signed note per entry, blank line between)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, note: str) -> None:
        """Append one signed note in a single write and fsync it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            data = (note if note.endswith("\n") else note + "\n") + "\n"
            os.write(fd, data.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[LoggedCheckpoint]:
        return read_entries([self.path])


def read_entries(paths: Sequence[str | Path]) -> list[LoggedCheckpoint]:
    out: list[LoggedCheckpoint] = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{p}: {e}") from e
        out.extend(parse_entries(text, str(p)))
    return out
