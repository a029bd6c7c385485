"""Reload the catalogue and the policy: on command, or as soon as their files change.

File changes are noticed through the operating system's notifications (``watchfiles``, inotify
on Linux): an idle proxy does no work for it, and a saved file is picked up within a fraction of
a second. Where notifications are unavailable (no inotify, the watch limit reached) or not
trusted (``egresswatch_reload_polling``: network filesystems), :class:`Poller` compares
``(mtime_ns, size)`` of every watched file every ``egresswatch_reload_interval`` seconds.

Every reload is a validated swap: the new catalogue and policy are loaded off the event loop and
swapped in as one object only if both are valid; otherwise the old state stays, each problem is
logged (``file:line: reason``) and ``egresswatch_reload_failures_total`` counts the failure.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> p = Poller(dirs=[d])
>>> p.changed()
False
>>> _ = (d / "tiktok.yaml").write_text("id: tiktok")
>>> p.changed(), p.changed()
(True, False)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path

import watchfiles

from egresswatch.metrics import Metrics
from egresswatch.proxy import state as state_mod
from egresswatch.proxy.state import LoadError
from egresswatch.proxy.state import State

__all__ = [
    "WATCHED_SUFFIXES",
    "Poller",
    "Reloader",
    "Snapshot",
    "changed_paths",
    "is_watched",
    "snapshot",
]

logger = logging.getLogger("egresswatch")

#: File kinds a catalogue directory is made of (app files, regimes.yaml, plain lists).
WATCHED_SUFFIXES = frozenset({".yaml", ".yml", ".txt"})

#: path -> (mtime_ns, size); (-1, -1) for a watched file that does not exist.
Snapshot = Mapping[str, tuple[int, int]]

_MISSING = (-1, -1)
#: watchfiles: milliseconds without a further change before a batch of changes is reported (and
#: how often its watch thread looks up from waiting); a save is picked up this much later.
_STEP_MS = 200
#: watchfiles: milliseconds its watch thread waits before handing back to the event loop with
#: nothing found. Each hand-back costs a trip through anyio's thread machinery (at the library's
#: default of 5 s this was most of an idle proxy's instructions); the watch is stopped through
#: its stop event instead, so this is only a safety net.
_THREAD_TIMEOUT_MS = 60_000


# -- polling (the fallback) ---------------------------------------------------------------------


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return _MISSING
    return (st.st_mtime_ns, st.st_size)


def _catalogue_file(name: str) -> bool:
    return Path(name).suffix in WATCHED_SUFFIXES and not name.startswith(".")


def _dir_files(d: Path) -> Iterable[Path]:
    try:
        for root, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for name in sorted(filenames):
                if _catalogue_file(name):
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


class Poller:
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
        """Take the current state as the baseline (after a rejected reload)."""
        self._last = snapshot(self.files, self.dirs)


# -- notifications ------------------------------------------------------------------------------


#: The symlink Kubernetes swaps to update a mounted ConfigMap or Secret at once: the files are
#: symlinks through it, so their own paths see no event.
_ATOMIC_SWAP = "..data"


def is_watched(path: str, dirs: Iterable[Path], files: Iterable[Path]) -> bool:
    """Whether a changed ``path`` concerns the catalogue (a catalogue file under one of ``dirs``,
    no hidden component) or is one of ``files`` (the policy file); or is the ``..data`` symlink
    of a Kubernetes volume holding either.

    >>> is_watched("/c/sub/a.yaml", [Path("/c")], []), is_watched("/c/.a.yaml.swp", [Path("/c")], [])
    (True, False)
    >>> is_watched("/etc/p/..data", [], [Path("/etc/p/policy.yaml")])
    True
    """
    p = Path(path)
    if any(p == f for f in files):
        return True
    if p.name == _ATOMIC_SWAP and (
        any(p.parent == f.parent for f in files) or any(p.parent.is_relative_to(d) for d in dirs)
    ):
        return True
    for d in dirs:
        try:
            rel = p.relative_to(d)
        except ValueError:
            continue
        parts = rel.parts
        if not parts:  # the directory itself (removed, renamed)
            return True
        if not any(part.startswith(".") for part in parts) and _catalogue_file(parts[-1]):
            return True
    return False


class Reloader:
    """Loads a new state off the event loop and hands it to ``swap`` if it is valid.

    ``current`` gives the state in force; ``swap(new, old, force_log)`` installs a new one;
    ``metrics`` gives the metrics a rejected reload is counted in.
    """

    def __init__(
        self,
        current: Callable[[], State | None],
        swap: Callable[[State, State, bool], None],
        metrics: Callable[[], Metrics | None],
    ) -> None:
        self._current = current
        self._swap = swap
        self._metrics = metrics
        self._poller: Poller | None = None
        self._stop: asyncio.Event | None = None  # the running watch's stop event
        #: How the running watch learns of changes: "notify", "poll" or "" (none running).
        self.method = ""

    def reload_sync(self) -> bool:
        """Load and swap in this thread (outside an event loop: embedding, tests)."""
        old = self._current()
        if old is None:
            return False
        try:
            new = state_mod.load_state(old.dirs, old.policy_path, old)
        except LoadError as e:
            self._reject(e)
            return False
        self._swap(new, old, True)
        return True

    async def reload_async(self, *, force_log: bool = False) -> bool:
        """Load off the event loop, then swap on it (a file change and the reload command)."""
        old = self._current()
        if old is None:
            return False
        try:
            new = await asyncio.to_thread(state_mod.load_state, old.dirs, old.policy_path, old)
        except LoadError as e:
            self._reject(e)
            return False
        if self._current() is not old:  # a concurrent reload won; keep its result
            return False
        self._swap(new, old, force_log)
        return True

    def _reject(self, e: LoadError) -> None:
        metrics = self._metrics()
        for f in e.failures:  # each file set on its own: logged, counted, flagged
            for p in f.problems:
                logger.warning("egresswatch: %s reload rejected: %s [%s]", f.kind, p, f.reason)
            if metrics is not None:
                metrics.reload_failed(f.kind, f.reason)
        if self._poller is not None:
            self._poller.reset()  # do not retry the same broken file every poll

    def track(self, st: State) -> None:
        """Take ``st``'s files as they are now as the baseline (called on every swap): a change
        made before a watch is in place is still noticed when it starts."""
        self._poller = Poller(st.files(), st.dirs)

    def stop(self) -> None:
        """Stop the running watch (its notification thread returns within one step); call it
        before cancelling the task that runs :meth:`watch`."""
        if self._stop is not None:
            self._stop.set()

    async def watch(self, interval: float, *, polling: bool = False) -> None:
        """Reload whenever a watched file changes; runs until stopped or cancelled.

        File notifications unless ``polling`` is set or they cannot be had; then a poll every
        ``interval`` seconds."""
        stop = self._stop = asyncio.Event()
        try:
            st = self._current()
            if st is not None and not polling:
                try:
                    await self._notified(st, stop)
                except* OSError as group:  # no inotify, the watch limit, an unwatchable path
                    logger.warning(
                        "egresswatch: file notifications unavailable (%s); polling every %g s",
                        group.exceptions[0],
                        interval,
                    )
                except* Exception:
                    logger.exception("egresswatch: file notifications failed; polling instead")
                if stop.is_set():
                    return
            await self._polled(interval, stop)
        finally:
            if self._stop is stop:  # not a watch that a newer one replaced
                self.method = ""

    async def _notified(self, st: State, stop: asyncio.Event) -> None:
        """Reload on each batch of notified changes until ``stop`` is set."""
        # watchfiles reports absolute paths (symlinks in them kept): compare like with like.
        dirs = tuple(Path(os.path.abspath(d)) for d in st.dirs)
        files = tuple(Path(os.path.abspath(f)) for f in (st.policy_path,) if f is not None)
        # The policy file's folder, not the file: editors replace a file by renaming a new one
        # over it, and a watch on the old file would see nothing after the first save.
        roots = [(list(dirs), True)]
        roots += [([f.parent], False) for f in files]

        def relevant(_change: watchfiles.Change, path: str) -> bool:
            return is_watched(path, dirs, files)

        async def one(paths: list[Path], recursive: bool) -> None:
            async for _changes in watchfiles.awatch(
                *paths,
                watch_filter=relevant,
                recursive=recursive,
                step=_STEP_MS,
                rust_timeout=_THREAD_TIMEOUT_MS,
                stop_event=stop,
            ):
                await self._reload_logged()

        async with asyncio.TaskGroup() as group:
            for paths, recursive in roots:
                group.create_task(one(paths, recursive))
            # Each task's first step sets its inotify watches up (synchronously, before its
            # first await); after that, a change made since the last swap is caught here.
            await asyncio.sleep(0)
            self.method = "notify"
            await self._poll_once()

    async def _polled(self, interval: float, stop: asyncio.Event) -> None:
        self.method = "poll"
        while not stop.is_set():
            await asyncio.sleep(interval)
            await self._poll_once()

    async def _poll_once(self) -> None:
        poller = self._poller
        if poller is None:
            st = self._current()
            if st is not None:
                self.track(st)
            return
        try:
            changed = await asyncio.to_thread(poller.changed)
        except Exception:
            logger.exception("egresswatch: reload check failed")
            return
        if changed:
            await self._reload_logged()

    async def _reload_logged(self) -> None:
        try:
            await self.reload_async()
        except Exception:
            logger.exception("egresswatch: reload failed")
