"""The addon's record of itself: lifecycle and configuration events, and the housekeeping a
heartbeat does (heartbeat events, pruning old events, policy-exception expiry, and whatever
``on_heartbeat`` adds: the discovery candidates' snapshot).

Events go to the :class:`~egresswatch.writer.EventWriter` once it runs, and wait in a list
until then (the configuration events of the start-up load come before the ``start`` event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.events import new_event_id
from egresswatch.metrics import Metrics
from egresswatch.proxy.observe import Settings
from egresswatch.proxy.state import State
from egresswatch.timeutil import from_unix
from egresswatch.writer import EventWriter

__all__ = ["Journal"]

logger = logging.getLogger("egresswatch")

_DAY = 86400.0


class Journal:
    """Events of the proxy itself, and the periodic housekeeping."""

    def __init__(
        self,
        clock: Callable[[], float],
        settings: Settings,
        current: Callable[[], State | None],
        metrics: Callable[[], Metrics | None],
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._current = current
        self._metrics = metrics
        self.writer: EventWriter | None = None
        self._pending: list[Event] = []  # events produced before the writer starts
        self._last_exc_check: datetime | None = None
        self._last_prune = 0.0
        #: More housekeeping for each heartbeat (the addon's: saving the discovery candidates).
        self.on_heartbeat: Callable[[float], object] | None = None

    # -- events -------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if self.writer is None:
            self._pending.append(event)
        else:
            self.writer.put(event)

    def pending(self) -> list[Event]:
        """Events produced before the writer started (handed to it by :meth:`start`)."""
        return list(self._pending)

    def start(self, writer: EventWriter) -> None:
        """Write through ``writer`` from now on, beginning with the events that waited."""
        self.writer = writer
        pending, self._pending = self._pending, []
        for ev in pending:  # config events of the start-up load come first
            writer.put(ev)

    async def close(self, timeout: float) -> None:
        """Write the ``stop`` event and close the writer (off the event loop)."""
        writer = self.writer
        if writer is None:
            return
        writer.put(self.event(EventKind.STOP, self._clock()))
        await asyncio.to_thread(writer.close, timeout)
        self.writer = None

    def event(self, kind: EventKind, now: float, detail: dict[str, object] | None = None) -> Event:
        """A lifecycle event (start, stop, heartbeat, config) under the state in force."""
        st = self._current()
        return Event(
            ts=now,
            kind=kind,
            instance=self._settings.instance,
            event_id=new_event_id(),
            catalogue_version=st.catalogue.version if st else "",
            policy_version=st.policy.version if st else "",
            detail=detail,
        )

    def config_event(self, kind: str, state: State, now: float) -> Event:
        """The ``config`` event recording a newly loaded catalogue or policy."""
        detail: dict[str, object]
        if kind == "catalogue":
            detail = {
                "kind": "catalogue",
                "version": state.catalogue.version,
                "files": [str(f) for f in state.catalogue.files],
                "entries": state.catalogue.entries_per_app(),
            }
        else:
            detail = {"kind": "policy", **state.policy.snapshot(from_unix(now))}
        return self.event(EventKind.CONFIG, now, detail)

    # -- housekeeping ---------------------------------------------------------------------------

    async def heartbeat(self, interval: float, retention_days: Callable[[], int]) -> None:
        """Every ``interval`` seconds: exception expiry, a heartbeat event, daily pruning."""
        while True:
            await asyncio.sleep(interval)
            try:
                now = self._clock()
                self.check_exceptions(now)
                self.emit(self.event(EventKind.HEARTBEAT, now))
                self.prune(now, retention_days())
                if self.on_heartbeat is not None:
                    self.on_heartbeat(now)
            except Exception:
                logger.exception("egresswatch: heartbeat failed")

    def prune(self, now: float, days: int) -> None:
        """Drop raw events older than ``days`` (at most once a day; 0 keeps everything)."""
        if days <= 0 or self.writer is None or now - self._last_prune < _DAY:
            return
        self._last_prune = now
        cutoff = now - days * _DAY
        self.writer.call(
            lambda store: logger.info(
                "egresswatch: pruned %d events older than %d days", store.prune(cutoff), days
            )
        )

    def check_exceptions(self, now: float) -> None:
        """Log each policy exception that expired since the last check (once), update the
        gauges; every heartbeat and every swap runs it."""
        st = self._current()
        if st is None:
            return
        when = from_unix(now)
        prev, self._last_exc_check = self._last_exc_check, when
        if prev is not None:
            for exc in st.policy.expired_since(prev, when):
                logger.warning(
                    "egresswatch: exception %s expired at %s",
                    exc.id,
                    exc.expires.isoformat(timespec="seconds"),
                )
        metrics = self._metrics()
        if metrics is not None:
            nxt = st.policy.next_expiry(when)
            metrics.exceptions(
                len(st.policy.exceptions_in_force(when)),
                nxt.timestamp() if nxt is not None else None,
            )
