"""The proxy's answers to orchestrators: liveness, readiness and systemd's notifications.

:class:`Vitals` holds one :class:`~egresswatch.endpoints.Health` with the three components the
proxy needs before it may take traffic (``catalogue``, ``policy``, ``store``) and one
:class:`~egresswatch.sdnotify.Notifier`. The addon reports each component as it opens (the
catalogue and policy after a successful load, the store when the writer thread opened it), and
:meth:`Vitals.loop`, a background task on mitmproxy's event loop, does the periodic part:

* ``Health.beat()`` every ``beat_interval`` seconds, so ``/healthz`` turns 503 when the loop is
  wedged (a blocked loop cannot beat);
* ``READY=1`` to systemd once, as soon as every component is open (the writer opens the store in
  its own thread, so readiness is noticed here, on the loop, never in that thread);
* ``WATCHDOG=1`` every ``WatchdogSec/2`` when the unit configures a watchdog: as with the beat,
  only a running loop sends it.

A store that fails *after* it opened does not make the proxy unready: traffic goes on, the events
wait in the writer's queue (and are counted when dropped), and the metrics and alerts report the
failure. An unready fleet would stop every client at once for a database outage.

>>> v = Vitals(env={})
>>> v.loaded()
>>> v.health.ready()
(False, ['catalogue: ok', 'policy: ok', 'store: not yet open'])
>>> v.store_opened()
>>> v.health.ready()[0]
True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping

from egresswatch.endpoints import Health
from egresswatch.sdnotify import Notifier

__all__ = ["COMPONENTS", "Vitals"]

logger = logging.getLogger("egresswatch")

#: What must be open before the proxy is ready.
COMPONENTS = ("catalogue", "policy", "store")


class Vitals:
    """Health and systemd notifications of one proxy process."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        beat_interval: float = 1.0,
        stale_after: float = 30.0,
    ) -> None:
        self.health = Health(COMPONENTS, clock=clock, stale_after=stale_after)
        self.notifier = Notifier(env)
        self._clock = clock
        self._beat_interval = beat_interval
        self.notified_ready = False

    def loaded(self) -> None:
        """The catalogue and the policy loaded (they load together; a failed reload keeps the
        previous ones in force, so it never clears this)."""
        self.health.set("catalogue", True)
        self.health.set("policy", True)

    def store_opened(self) -> None:
        """The writer opened the event store (called from the writer thread)."""
        self.health.set("store", True)

    def tick(self) -> None:
        """One step of :meth:`loop`: beat, and tell systemd once everything is open."""
        self.health.beat()
        if not self.notified_ready and self.health.ready()[0]:
            self.notified_ready = True
            self.notifier.ready("catalogue, policy and store open")

    async def loop(self) -> None:
        """Beat every ``beat_interval`` seconds; ping systemd's watchdog when it has one."""
        interval = self.notifier.watchdog_interval
        next_ping = self._clock()
        while True:
            try:
                self.tick()
                if interval is not None and self._clock() >= next_ping:
                    self.notifier.watchdog()
                    next_ping = self._clock() + interval
            except Exception:
                logger.exception("egresswatch: health beat failed")
            step = self._beat_interval if interval is None else min(self._beat_interval, interval)
            await asyncio.sleep(step)

    def stopping(self) -> None:
        """Tell systemd the proxy is stopping (before the drain, which may take seconds)."""
        self.notifier.stopping()
