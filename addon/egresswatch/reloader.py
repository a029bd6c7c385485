"""Notice when catalogue or policy files change: a pure, polling file-set watcher.

The addon polls every ``egresswatch_reload_interval`` seconds. A poll stats the watched files and
every catalogue-looking file under the watched directories (so a new app file is noticed) and
compares ``(mtime_ns, size)`` pairs with the previous poll. No threads, no asyncio, no inotify:
the caller decides when to poll and what to do about a change.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> w = FileWatcher(dirs=[d])
>>> w.changed()
False
>>> _ = (d / "tiktok.yaml").write_text("id: tiktok")
>>> w.changed(), w.changed()
(True, False)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path

__all__ = ["WATCHED_SUFFIXES", "FileWatcher", "Snapshot", "changed_paths", "snapshot"]

logger = logging.getLogger(__name__)

#: File kinds a catalogue directory is made of (app files, regimes.yaml, plain lists).
WATCHED_SUFFIXES = frozenset({".yaml", ".yml", ".txt"})

#: path -> (mtime_ns, size); (-1, -1) for a watched file that does not exist.
Snapshot = Mapping[str, tuple[int, int]]

_MISSING = (-1, -1)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return _MISSING
    return (st.st_mtime_ns, st.st_size)


def _dir_files(d: Path) -> Iterable[Path]:
    try:
        for root, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for name in sorted(filenames):
                if Path(name).suffix in WATCHED_SUFFIXES and not name.startswith("."):
                    yield Path(root) / name
    except OSError:  # pragma: no cover - os.walk swallows most errors itself
        return


def snapshot(files: Iterable[Path] = (), dirs: Iterable[Path] = ()) -> dict[str, tuple[int, int]]:
    """Stat ``files`` (missing ones recorded as ``(-1, -1)``) and the catalogue files in ``dirs``."""
    snap: dict[str, tuple[int, int]] = {}
    for f in files:
        snap[str(f)] = _stat(f)
    for d in dirs:
        snap[str(d)] = _MISSING if not d.is_dir() else (0, 0)
        for f in _dir_files(d):
            snap[str(f)] = _stat(f)
    return snap


def changed_paths(old: Snapshot, new: Snapshot) -> list[str]:
    """Paths added, removed or modified between two snapshots, sorted."""
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


class FileWatcher:
    """Remembers the last snapshot of a file set; :meth:`changed` polls and compares.

    ``files`` are watched individually (e.g. the policy file); ``dirs`` are scanned for
    ``*.yaml``, ``*.yml`` and ``*.txt`` files on each poll.
    """

    def __init__(self, files: Iterable[Path] = (), dirs: Iterable[Path] = ()) -> None:
        self.files = tuple(files)
        self.dirs = tuple(dirs)
        self._last: Snapshot = snapshot(self.files, self.dirs)

    def poll(self) -> list[str]:
        """Paths changed since the previous poll (or construction); empty if none."""
        new = snapshot(self.files, self.dirs)
        diff = changed_paths(self._last, new)
        self._last = new
        return diff

    def changed(self) -> bool:
        return bool(self.poll())

    def reset(self) -> None:
        """Take the current state as the baseline (after a reload on command)."""
        self._last = snapshot(self.files, self.dirs)
