"""``EventWriter``: the only way events reach the store from the proxy's hooks.

Hooks call :meth:`EventWriter.put`, which never blocks: the event goes into a bounded queue, or,
when the queue is full, is dropped and counted (``on_dropped(1)``). One daemon thread owns the
store (it opens it, in that thread) and commits a batch when ``batch_size`` events are waiting or
``flush_interval`` seconds have passed since the last commit, so a hard kill loses at most about
one flush interval of events.

A failing store never stalls traffic:

- the batch that failed is kept (at most ``batch_size`` events) and retried with exponential
  backoff (``retry_min`` .. ``retry_max`` seconds); meanwhile new events wait in the queue, and
  once it is full, ``put`` drops and counts them;
- each failure is reported through ``on_failure(exc)`` and logged (rate-limited);
- after a few consecutive failures the store is closed and reopened; a store that cannot even be
  opened is retried the same way (the thread never dies silently);
- an event the store refuses as such (:class:`~egresswatch.store.InvalidEvent`) is dropped
  (counted) and the rest of its batch is retried at once;
- :meth:`close` drains everything it can within ``timeout``; what is still unwritten then is
  counted dropped.

With a ``signer`` and a ``checkpoint_log`` the writer thread also signs a checkpoint of each
instance it wrote (:mod:`egresswatch.checkpoint`) every ``checkpoint_interval`` seconds when the
chain moved, and once more at :meth:`close` after the last flush; each is appended (fsynced) to
the log and logged as one line (the note included) so a SIEM keeps a copy.

The writer never imports ``metrics``: the addon wires ``on_written``/``on_dropped``/``on_failure``
and ``queue_depth`` to its metrics, and ``on_open`` (called in the writer thread each time the
store was opened) to its readiness.

    >>> from egresswatch.store.memory import MemoryStore
    >>> from egresswatch.events import Event, EventKind
    >>> store = MemoryStore()
    >>> w = EventWriter(lambda: store, flush_interval=0.05)
    >>> w.start()
    >>> w.put(Event(ts=0.0, kind=EventKind.START, instance="p1", event_id="e1"))
    True
    >>> w.close()
    >>> len(store.rows)
    1
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from .checkpoint import Checkpoint
from .checkpoint import CheckpointLog
from .checkpoint import Signer
from .events import Event
from .store import EventStore
from .store import InvalidEvent
from .witness import make_checkpoint

__all__ = ["EventWriter", "backlog_batch"]

logger = logging.getLogger(__name__)


def backlog_batch(backend: str) -> int:
    """The batch the proxy's writer commits when events queue up faster than one flush interval
    (below that rate the flush interval decides). Measured side by side (``bench/store.py
    --write-only`` and A/B rounds): SQLite writes 1.2-1.5x as many events/s in batches of 5,000
    as of 1,000 (a commit's cost and the index pages it rewrites are shared by more events);
    PostgreSQL 0.65-0.75x in two A/B rounds and 1.1x in one run, so it keeps 1,000.

    >>> backlog_batch("sqlite"), backlog_batch("postgresql")
    (5000, 1000)
    """
    return 5000 if backend == "sqlite" else 1000


_REOPEN_AFTER = 3  # consecutive failures before the store is closed and reopened
_LOG_EVERY = 30.0  # seconds between repeated failure log lines


class EventWriter:
    """A bounded queue in front of one writer thread that owns the event store."""

    def __init__(
        self,
        open_store: Callable[[], EventStore],
        *,
        queue_size: int = 10000,
        flush_interval: float = 1.0,
        batch_size: int = 1000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_min: float = 0.05,
        retry_max: float = 5.0,
        signer: Signer | None = None,
        checkpoint_log: CheckpointLog | None = None,
        checkpoint_interval: float = 60.0,
        on_checkpoint: Callable[[Checkpoint, str], None] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError("queue_size and batch_size must be >= 1, flush_interval > 0")
        if (signer is None) != (checkpoint_log is None) or checkpoint_interval <= 0:
            raise ValueError("signer and checkpoint_log go together; checkpoint_interval > 0")
        self._signer = signer
        self._checkpoint_log = checkpoint_log
        self.checkpoint_interval = checkpoint_interval
        self._on_checkpoint = on_checkpoint
        self._written_instances: set[str] = set()
        self._signed: dict[str, Checkpoint] = {}  # the last checkpoint signed per instance
        self.checkpoints = 0
        self._open_store = open_store
        # A deque under a condition rather than queue.Queue: the writer takes a whole batch per
        # lock round-trip, and put() costs one short lock (it never waits).
        self._buf: deque[Event] = deque()
        self._cond = threading.Condition(threading.Lock())
        self.capacity = queue_size
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._on_failure = on_failure
        self._on_open = on_open
        self._clock = clock
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._deadline: float | None = None  # clock() time by which close() gives up
        self._pending: list[Event] = []
        self._tasks: queue.SimpleQueue[Callable[[EventStore], object]] = queue.SimpleQueue()
        self._store: EventStore | None = None
        self._last_log = float("-inf")
        self._suppressed = 0
        self.written = 0
        self.dropped = 0
        self.failures = 0

    # -- hot path -------------------------------------------------------------------------

    def put(self, event: Event) -> bool:
        """Queue ``event`` for writing; never blocks. False (and counted dropped) when full."""
        with self._cond:
            # Checked under the lock the final drain takes: an event is either queued before
            # that drain (then written or counted dropped) or refused here, never lost unseen.
            n = len(self._buf)
            if n < self.capacity and not self._closing.is_set():
                self._buf.append(event)
                if n + 1 == self.batch_size:
                    self._cond.notify()
                return True
        self._count_dropped(1)
        return False

    def queue_depth(self) -> int:
        """Events accepted but not yet committed (the queue plus a batch being retried)."""
        return len(self._buf) + len(self._pending)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("EventWriter already started")
        self._thread = threading.Thread(target=self._run, name="egresswatch-writer", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[EventStore], object]) -> None:
        """Run ``fn(store)`` on the writer thread after the current batch (e.g. a daily prune).

        Errors are logged and reported through ``on_failure``; nothing is returned.
        """
        self._tasks.put(fn)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting events, write everything queued (within ``timeout``), close the store."""
        if self._closing.is_set():
            return
        self._deadline = self._clock() + timeout
        self._closing.set()
        if self._thread is None:
            left = self._drain_queue()
            if left:
                self._count_dropped(left)
            return
        with self._cond:
            self._cond.notify()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            logger.error("event writer did not stop within %.1f s", timeout)

    # -- writer thread --------------------------------------------------------------------

    def _count_dropped(self, n: int) -> None:
        self.dropped += n
        if self._on_dropped is not None:
            try:
                self._on_dropped(n)
            except Exception:
                logger.exception("on_dropped callback failed")

    def _failed(self, exc: BaseException, what: str) -> None:
        self.failures += 1
        if self._on_failure is not None:
            try:
                self._on_failure(exc)
            except Exception:
                logger.exception("on_failure callback failed")
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY:
            extra = f" ({self._suppressed} similar failures not logged)" if self._suppressed else ""
            logger.error("event store %s failed: %s%s", what, exc, extra)
            self._last_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    def _drain_queue(self) -> int:
        with self._cond:
            n = len(self._buf)
            self._buf.clear()
        return n

    def _gather(self, wait: float) -> None:
        """Move queued events into ``_pending`` (up to a batch), waiting up to ``wait`` s."""
        with self._cond:
            room = self.batch_size - len(self._pending)
            if len(self._buf) < room and wait > 0 and not self._closing.is_set():
                self._cond.wait(wait)
            buf = self._buf
            take = min(room, len(buf))
            if take == len(buf):
                self._pending.extend(buf)
                buf.clear()
            else:
                self._pending.extend(buf.popleft() for _ in range(take))

    def _run(self) -> None:
        consecutive = 0
        backoff = self._retry_min
        retry_at = float("-inf")
        next_flush = self._clock() + self.flush_interval
        next_checkpoint = self._clock() + self.checkpoint_interval
        try:
            while True:
                closing = self._closing.is_set()
                now = self._clock()
                if closing and self._deadline is not None and now >= self._deadline:
                    break
                if len(self._pending) < self.batch_size:
                    wait = 0.0 if closing else min(next_flush - now, self.flush_interval)
                    self._gather(wait)
                    now = self._clock()
                finishing = closing
                if self._signer is not None and now >= next_checkpoint and now >= retry_at:
                    next_checkpoint = now + self.checkpoint_interval
                    self._sign_checkpoints()
                if not self._pending:
                    if not self._tasks.empty() and now >= retry_at:
                        if self._ensure_store():
                            self._run_tasks()
                        else:
                            retry_at = self._clock() + backoff
                            backoff = min(backoff * 2, self._retry_max)
                    if finishing and not self._buf:
                        break
                    if now >= next_flush:
                        next_flush = now + self.flush_interval
                    continue
                due = len(self._pending) >= self.batch_size or now >= next_flush or finishing
                if not due:
                    continue
                if now < retry_at:
                    time.sleep(min(retry_at - now, 0.05))
                    continue
                ok = self._ensure_store()
                if ok:
                    assert self._store is not None
                    batch = self._pending[: self.batch_size]
                    try:
                        self._store.write(batch)
                    except InvalidEvent as e:
                        self._failed(e, "write")
                        del self._pending[e.index]
                        self._count_dropped(1)
                        continue
                    except Exception as e:
                        self._failed(e, "write")
                        ok = False
                        consecutive += 1
                        if consecutive >= _REOPEN_AFTER:
                            _close_quietly(self._store)
                            self._store = None
                            consecutive = 0
                    else:
                        del self._pending[: len(batch)]
                        self.written += len(batch)
                        if self._signer is not None:
                            self._written_instances.update(e.instance for e in batch)
                        if self._on_written is not None:
                            try:
                                self._on_written(len(batch))
                            except Exception:
                                logger.exception("on_written callback failed")
                if ok:
                    consecutive = 0
                    backoff = self._retry_min
                    retry_at = float("-inf")
                    self._run_tasks()
                    next_flush = self._clock() + self.flush_interval
                else:
                    retry_at = self._clock() + backoff
                    backoff = min(backoff * 2, self._retry_max)
                    next_flush = retry_at
        except BaseException as e:  # pragma: no cover - a bug; do not die silently
            logger.exception("event writer thread crashed")
            self._failed(e, "thread")
        finally:
            lost = len(self._pending) + self._drain_queue()
            self._pending.clear()
            if lost:
                logger.error(
                    "event writer stopped with %d events unwritten (counted dropped)", lost
                )
                self._count_dropped(lost)
            if self._signer is not None and self._store is not None:
                # The final checkpoint, after the last flush: the chain as this writer left it
                # (not when the store is down: close() must not wait for a reconnect).
                self._sign_checkpoints()
            if self._store is not None:
                _close_quietly(self._store)
                self._store = None

    def _sign_checkpoints(self) -> None:
        """Sign and log a checkpoint of each instance written whose chain (or verification
        record) moved since its last checkpoint. Failures are reported, retried next time."""
        if self._signer is None or self._checkpoint_log is None or not self._written_instances:
            return
        if not self._ensure_store():
            return
        assert self._store is not None
        for instance in sorted(self._written_instances):
            try:
                cp = make_checkpoint(self._store, instance, time.time())
                last = self._signed.get(instance)
                if cp is None or (last is not None and _same_state(cp, last)):
                    continue
                note = self._signer.sign(cp)
                self._checkpoint_log.append(note)
            except Exception as e:
                self._failed(e, "checkpoint")
                continue
            self._signed[instance] = cp
            self.checkpoints += 1
            logger.info(
                "signed checkpoint: %s #%d head %s by %s; note %s",
                instance,
                cp.size,
                cp.head,
                self._signer.name,
                json.dumps(note),
            )
            if self._on_checkpoint is not None:
                try:
                    self._on_checkpoint(cp, note)
                except Exception:
                    logger.exception("on_checkpoint callback failed")

    def _ensure_store(self) -> bool:
        if self._store is not None:
            return True
        try:
            self._store = self._open_store()
        except Exception as e:
            self._failed(e, "open")
            return False
        if self._on_open is not None:
            try:
                self._on_open()
            except Exception:
                logger.exception("on_open callback failed")
        return True

    def _run_tasks(self) -> None:
        store = self._store
        if store is None:
            return
        while True:
            try:
                fn = self._tasks.get_nowait()
            except queue.Empty:
                return
            try:
                fn(store)
            except Exception as e:
                self._failed(e, "task")


def _same_state(a: Checkpoint, b: Checkpoint) -> bool:
    return (a.size, a.head, a.runs, a.runs_last_id, a.runs_digest) == (
        b.size,
        b.head,
        b.runs,
        b.runs_last_id,
        b.runs_digest,
    )


def _close_quietly(store: EventStore) -> None:
    try:
        store.close()
    except Exception:
        logger.debug("closing the event store failed", exc_info=True)
