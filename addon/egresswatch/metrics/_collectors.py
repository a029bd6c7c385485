"""Collector helpers of :mod:`egresswatch.metrics` (the package is the only prometheus_client
user): the injected registry, counters re-exposed without ``*_created``, a gauge that can be
unset, and a scrape-time reader that never raises."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["OptionalGauge", "WithoutCreated", "new_registry", "safe"]

logger = logging.getLogger("egresswatch.metrics")


def new_registry() -> CollectorRegistry:
    """A fresh registry for one proxy process (never the process-global ``REGISTRY``)."""
    return CollectorRegistry(auto_describe=True)


class WithoutCreated:
    """Re-expose a registry's metrics without the ``*_created`` samples of counters."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            if family.type in ("counter", "histogram", "summary"):
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family

    def describe(self) -> Iterable[Metric]:
        # Lets a registry with auto_describe detect duplicate names without calling collect().
        return self.collect()


class OptionalGauge:
    """An unlabelled gauge whose sample is absent while its value is ``None``.

    Used for the next exception expiry: with no expiring exception there is no timestamp, and an
    absent series (unlike 0) cannot make ``ExceptionExpiringSoon`` fire.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self._value: float | None = None
        self._lock = threading.Lock()

    def set(self, value: float | None) -> None:
        with self._lock:
            self._value = value

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation)
        with self._lock:
            value = self._value
        if value is not None:
            family.add_metric([], value)
        yield family

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation)


def safe(fn: Callable[[], int]) -> Callable[[], float]:
    """Wrap a scrape-time callback so that a failing callback never breaks the whole scrape."""

    def read() -> float:
        try:
            return float(fn())
        except Exception:
            logger.warning("queue depth callback failed", exc_info=True)
            return math.nan

    return read
