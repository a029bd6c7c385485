"""Every Prometheus metric egresswatch exports, defined once, on an injected registry.

This is the only module that imports ``prometheus_client``. Nothing here touches the global
``REGISTRY`` or flips process-wide switches: the caller passes a ``CollectorRegistry`` and may
serve it with :meth:`Metrics.serve`.

Label values are bounded by construction: app ids and regime ids from the catalogue, the four
actions, the app signals, department names from the policy, resolver ids from the bundled
encrypted-DNS category, the ECH verdicts. Hostnames, client addresses and
users never become labels; the exemplar ``event_id`` on a hit links a counter to the event-store
row that holds them.

Counters are collected through a private registry and re-exposed without their ``*_created``
samples (one extra series per child that nobody queries), so the injected registry stays small
without calling ``disable_created_metrics()``, which would change every registry in the process.

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = Metrics(reg)
>>> m.prepare({"tiktok": ["far-52-204-27"]})
>>> reg.get_sample_value("egresswatch_hits_total",
...     {"app": "tiktok", "regime": "far-52-204-27", "action": "blocked", "signal": "sni"})
0.0
>>> m.hit("tiktok", "far-52-204-27", "blocked", "sni", event_id="a1b2")
>>> reg.get_sample_value("egresswatch_hits_total",
...     {"app": "tiktok", "regime": "far-52-204-27", "action": "blocked", "signal": "sni"})
1.0
>>> m.close()
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from enum import StrEnum
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Info
from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector

from egresswatch import endpoints
from egresswatch.endpoints import Health
from egresswatch.events import EVASION_SIGNALS
from egresswatch.events import Action
from egresswatch.events import Signal
from egresswatch.metrics._collectors import OptionalGauge
from egresswatch.metrics._collectors import WithoutCreated
from egresswatch.metrics._collectors import new_registry
from egresswatch.metrics._collectors import safe
from egresswatch.policy import MODE_LABELS
from egresswatch.policy import OTHER
from egresswatch.policy import RULE_LABELS
from egresswatch.store import BACKENDS as STORE_BACKENDS

__all__ = [
    "ACTIONS",
    "BACKENDS",
    "ECH_VERDICTS",
    "HOOKS",
    "Hook",
    "new_registry",
    "KINDS",
    "MODES",
    "REASONS",
    "SIGNALS",
    "Metrics",
]

logger = logging.getLogger(__name__)

NAMESPACE = "egresswatch"
ACTIONS: tuple[str, ...] = tuple(a.value for a in Action)
#: Signals of a hit on a designated app (the ``signal`` label of the hit and inspection counters).
SIGNALS: tuple[str, ...] = tuple(s.value for s in Signal if s not in EVASION_SIGNALS)
#: Verdicts of the ECH classification counted by ``egresswatch_ech_total`` (``ech.classify``).
ECH_VERDICTS: tuple[str, ...] = ("capable", "hidden", "malformed")
KINDS: tuple[str, ...] = ("catalogue", "policy")
REASONS: tuple[str, ...] = ("parse", "validation", "io", "other")
#: Values of the per-app mode label (the policy's actions, and ``dry_run``).
MODES: tuple[str, ...] = MODE_LABELS
BACKENDS: tuple[str, ...] = STORE_BACKENDS  # the store defines its backends once


class Hook(StrEnum):
    """The addon's guarded mitmproxy hooks: the ``hook`` label of ``egresswatch_hook_errors_total``
    (each series is pre-initialised). Each is a hook method of ``EgressWatch`` whose guard
    counts under this name (tests/test_vocabularies.py)."""

    REQUESTHEADERS = "requestheaders"
    HTTP_CONNECT = "http_connect"
    SERVER_CONNECT = "server_connect"
    TLS_CLIENTHELLO = "tls_clienthello"
    NEXT_LAYER = "next_layer"
    DNS_REQUEST = "dns_request"
    DNS_RESPONSE = "dns_response"
    TLS_ESTABLISHED_SERVER = "tls_established_server"
    RESPONSEHEADERS = "responseheaders"


HOOKS: tuple[str, ...] = tuple(h.value for h in Hook)
#: Label value for a hit whose client maps to no policy department (department label on).
OTHER_DEPARTMENT = OTHER
#: Regime label values every app gets besides its own regimes (see ``Policy.decide``).
EXTRA_REGIMES: tuple[str, ...] = RULE_LABELS
#: Above this many department values the department label is a cardinality risk.
DEPARTMENT_WARN = 50
#: Minimum seconds between two exemplars on one hit series (see :meth:`Metrics.hit`).
EXEMPLAR_INTERVAL = 1.0


class Metrics:
    """All egresswatch metrics on one injected registry (see ``docs/metrics.md``).

    Update methods are thread-safe (prometheus_client locks each child), so they may be called
    from the event loop, the writer thread or a reload task.
    """

    def __init__(self, registry: CollectorRegistry, *, department_label: bool = False) -> None:
        self._registry = registry
        self._department_label = department_label
        self._inner = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        # Every hit series: label tuple -> [child, time of its last exemplar]. Looking a child up
        # through labels() validates and locks on every call; a hit costs one dict probe instead.
        self._hit_children: dict[tuple[str, ...], list[Any]] = {}
        self._entry_apps: set[str] = set()
        self._mode_apps: set[str] = set()
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

        hit_labels = ["app", "regime", "action", "signal"]
        if department_label:
            hit_labels.append("department")
        self._hits = self._new(
            Counter,
            "hits",
            "Hits on designated apps, by app, the regime that set the action, action and signal.",
            *hit_labels,
        )
        self._inspected = self._new(
            Counter,
            "inspected",
            "Destination names examined, whether or not they matched (the ratio denominator).",
            "signal",
        )
        # Children bound once per signal: inspected() runs for every name the proxy sees.
        self._inspected_children: dict[str, Counter] = {}
        self._invalid_names = self._new(
            Counter,
            "invalid_names",
            "Destination names rejected by normalisation (too long, bad IDNA, ...).",
            "signal",
        )
        self._hook_errors = self._new(
            Counter,
            "hook_errors",
            "Unexpected exceptions caught in a mitmproxy hook (traffic was let through).",
            "hook",
        )
        self._catalogue_info = self._new(
            Info, "catalogue", "The loaded catalogue; version is the sha256 of all its files."
        )
        self._catalogue_entries = self._new(
            Gauge,
            "catalogue_entries",
            "Domain, list and CIDR entries per app in the loaded catalogue.",
            "app",
        )
        self._catalogue_files = self._new(
            Gauge, "catalogue_files", "Files read to build the loaded catalogue."
        )
        self._reload_ts = self._new(
            Gauge,
            "reload_last_success_timestamp_seconds",
            "Unix time of the last successful load of the catalogue or the policy.",
            "kind",
        )
        self._reload_failures = self._new(
            Counter,
            "reload_failures",
            "Failed loads of the catalogue or the policy, by bounded reason.",
            "kind",
            "reason",
        )
        self._reload_ok = self._new(
            Gauge,
            "reload_last_successful",
            "1 if the last load attempt of the catalogue or the policy succeeded, else 0.",
            "kind",
        )
        self._policy_info = self._new(
            Info, "policy", "The loaded policy; version is the sha256 of the policy file."
        )
        self._policy_mode = self._new(
            Gauge,
            "policy_mode",
            "Policy mode per app: 1 for the mode in force, 0 for the others (a state set).",
            "app",
            "mode",
        )
        self._exceptions_in_force = self._new(
            Gauge, "exceptions_in_force", "Exceptions in the register that are in force now."
        )
        self._next_expiry = OptionalGauge(
            f"{NAMESPACE}_exception_next_expiry_timestamp_seconds",
            "Unix time at which the next exception in force expires (absent when none expires).",
        )
        self._inner.register(self._next_expiry)
        self._queue_depth = self._new(
            Gauge,
            "event_store_queue_depth",
            "Events waiting in the writer queue, read at scrape time.",
        )
        self._queue_capacity = self._new(
            Gauge,
            "event_store_queue_capacity",
            "Capacity of the writer queue; events beyond it are dropped and counted.",
        )
        self._written = self._new(
            Counter, "event_store_written", "Events committed to the event store."
        )
        self._dropped = self._new(
            Counter,
            "event_store_dropped",
            "Events dropped because the writer queue was full or the writer had stopped.",
        )
        self._write_failures = self._new(
            Counter,
            "event_store_write_failures",
            "Failed event-store write transactions, by backend.",
            "backend",
        )
        self._encrypted_dns = self._new(
            Counter,
            "encrypted_dns",
            "Connections to public encrypted-DNS resolvers (a bypass of the organisation's DNS), "
            "by resolver (a bundled category file) and action.",
            "resolver",
            "action",
        )
        self._httpdns = self._new(
            Counter,
            "httpdns",
            "Hits on designated apps' built-in DNS-over-HTTP services (catalogue entries tagged "
            "httpdns), by app and action.",
            "app",
            "action",
        )
        self._ech = self._new(
            Counter,
            "ech",
            "ClientHellos with an encrypted_client_hello extension, by verdict: capable (GREASE "
            "or undetectable, never an alarm), hidden (the real name is encrypted), malformed; "
            "and action (hidden only; the others are monitor).",
            "verdict",
            "action",
        )
        self._alt_svc = self._new(
            Counter,
            "alt_svc",
            "Alt-Svc response headers advertising HTTP/3 for a designated name, once per "
            "connection and host, by app and action (blocked: the HTTP/3 alternatives stripped).",
            "app",
            "action",
        )
        self._alt_svc_apps: set[str] = set()
        self._resolutions = self._new(
            Gauge,
            "dns_resolutions",
            "Addresses of designated names remembered from DNS answers (the correlation table).",
        )
        self._resolution_evictions = self._new(
            Counter,
            "dns_resolution_evictions",
            "Entries the correlation table dropped, least recently used first, to stay bounded.",
        )
        self._evasion_resolvers: set[str] = set()
        self._evasion_apps: set[str] = set()
        self._worker_restarts = self._new(
            Gauge,
            "worker_restarts",
            "Times the supervisor (egresswatch run --workers) restarted this worker's slot.",
        )
        self._checkpoint_ts = self._new(
            Gauge,
            "checkpoint_last_timestamp_seconds",
            "Unix time of the last signed event-store checkpoint (0: none signed yet).",
        )
        self._refused_stopping = self._new(
            Counter,
            "hits_refused_stopping",
            "Hits refused without an answer because the proxy was stopping (the event writer "
            "no longer accepted events), by signal.",
            "signal",
        )
        self._build_info = self._new(
            Info, "build", "Versions of egresswatch, mitmproxy and Python in this process."
        )

        # Pre-initialise every bounded child so that a first event is an increase from 0.
        for signal in SIGNALS:
            self._inspected.labels(signal)
            self._invalid_names.labels(signal)
            self._refused_stopping.labels(signal)
        for hook in HOOKS:
            self._hook_errors.labels(hook)
        for kind in KINDS:
            for reason in REASONS:
                self._reload_failures.labels(kind, reason)
        for backend in BACKENDS:
            self._write_failures.labels(backend)
        for verdict in ECH_VERDICTS:
            for action in ACTIONS:
                self._ech.labels(verdict, action)

        self._collector: Collector = WithoutCreated(self._inner)
        registry.register(self._collector)

    def _new[M: (Counter, Gauge, Info)](
        self, kind: type[M], name: str, doc: str, *labels: str
    ) -> M:
        """A metric of ``kind`` in the egresswatch namespace on the private registry."""
        return kind(name, doc, labels, namespace=NAMESPACE, registry=self._inner)

    # -- traffic -----------------------------------------------------------------------------

    def prepare(
        self, app_regimes: Mapping[str, Sequence[str]], departments: Sequence[str] = ()
    ) -> None:
        """Create every hit series at 0 and drop those of apps/departments no longer present.

        For each app: its regimes plus ``app`` and ``default`` x every action x every signal
        (x each department and ``other`` when the department label is on). Call again after each
        catalogue or policy reload. Series of apps that remain keep their values.
        """
        depts: tuple[str, ...] = ()
        if self._department_label:
            depts = tuple(dict.fromkeys([*departments, OTHER_DEPARTMENT]))
            if len(depts) > DEPARTMENT_WARN:
                logger.warning(
                    "%d departments on the hit counter: every one multiplies the series count",
                    len(depts),
                )
        wanted: set[tuple[str, ...]] = set()
        for app, regimes in app_regimes.items():
            for regime in dict.fromkeys([*regimes, *EXTRA_REGIMES]):
                for action in ACTIONS:
                    for signal in SIGNALS:
                        if self._department_label:
                            wanted.update((app, regime, action, signal, d) for d in depts)
                        else:
                            wanted.add((app, regime, action, signal))
        with self._lock:
            for key in self._hit_children.keys() - wanted:
                app_gone = key[0] not in app_regimes
                dept_gone = self._department_label and key[4] not in depts
                if app_gone or dept_gone:
                    self._hits.remove(*key)
                    del self._hit_children[key]
            for key in wanted - self._hit_children.keys():
                self._hit_children[key] = [self._hits.labels(*key), -math.inf]

    def hit(
        self,
        app: str,
        regime: str,
        action: str,
        signal: str,
        department: str | None = None,
        event_id: str | None = None,
        now: float | None = None,
    ) -> None:
        """Count one hit; ``event_id`` becomes the exemplar linking to the event-store row.

        With ``now`` (seconds, any monotonic-enough clock) a series takes a new exemplar at most
        every :data:`EXEMPLAR_INTERVAL` seconds: a scrape sees one exemplar per series anyway,
        and attaching one costs more than the count. Without ``now`` every hit sets it.
        """
        key: tuple[str, ...] = (app, regime, str(action), str(signal))
        if self._department_label:
            key = (*key, department or OTHER_DEPARTMENT)
        slot = self._hit_children.get(key)
        if slot is None:
            with self._lock:
                slot = self._hit_children.setdefault(key, [self._hits.labels(*key), -math.inf])
        child = slot[0]
        if event_id and (now is None or now - slot[1] >= EXEMPLAR_INTERVAL):
            if now is not None:
                slot[1] = now
            child.inc(exemplar={"event_id": event_id})
        else:
            child.inc()

    def inspected(self, signal: str) -> None:
        """Count one destination name examined (matched or not)."""
        child = self._inspected_children.get(signal)
        if child is None:
            child = self._inspected_children[signal] = self._inspected.labels(str(signal))
        child.inc()

    def invalid_name(self, signal: str) -> None:
        """Count one destination name that normalisation rejected."""
        self._invalid_names.labels(str(signal)).inc()

    def hook_error(self, hook: str) -> None:
        """Count one unexpected exception caught in a mitmproxy hook."""
        self._hook_errors.labels(hook).inc()

    # -- evasion -----------------------------------------------------------------------------

    def prepare_evasion(
        self, resolvers: Sequence[str], httpdns_apps: Sequence[str], apps: Sequence[str] = ()
    ) -> None:
        """Create the encrypted-DNS series of every resolver, the HTTPDNS series of every app
        with an ``httpdns`` entry and the Alt-Svc series of every app at 0; drop those no
        longer present (call on each load)."""
        with self._lock:
            for counter, known, wanted in (
                (self._encrypted_dns, self._evasion_resolvers, set(resolvers)),
                (self._httpdns, self._evasion_apps, set(httpdns_apps)),
                (self._alt_svc, self._alt_svc_apps, set(apps)),
            ):
                for gone in known - wanted:
                    for action in ACTIONS:
                        counter.remove(gone, action)
                for new in wanted - known:
                    for action in ACTIONS:
                        counter.labels(new, action)
                known.clear()
                known.update(wanted)

    def encrypted_dns(self, resolver: str, action: str) -> None:
        """Count one connection to a public encrypted-DNS resolver."""
        self._encrypted_dns.labels(resolver, str(action)).inc()

    def httpdns(self, app: str, action: str) -> None:
        """Count one hit on an app's built-in DNS-over-HTTP service."""
        self._httpdns.labels(app, str(action)).inc()

    def alt_svc(self, app: str, action: str) -> None:
        """Count one HTTP/3 advertisement (Alt-Svc) for a designated app's name."""
        self._alt_svc.labels(app, str(action)).inc()

    def ech(self, verdict: str, action: str = Action.MONITOR) -> None:
        """Count one ClientHello with an ECH extension (``verdict`` from ``ech.classify``)."""
        if verdict in ECH_VERDICTS:
            self._ech.labels(verdict, str(action)).inc()

    def resolutions(self, size: int, evictions: int) -> None:
        """The correlation table's size now, and evictions since the last call."""
        self._resolutions.set(size)
        if evictions:
            self._resolution_evictions.inc(evictions)

    # -- configuration -----------------------------------------------------------------------

    def catalogue_loaded(
        self, version: str, entries_per_app: Mapping[str, int], files: int, ts: float
    ) -> None:
        """Record a successful catalogue load (also resets ``reload_last_successful``)."""
        self._catalogue_info.info({"version": version})
        with self._lock:
            for app in self._entry_apps - set(entries_per_app):
                self._catalogue_entries.remove(app)
            for app, n in entries_per_app.items():
                self._catalogue_entries.labels(app).set(n)
            self._entry_apps = set(entries_per_app)
        self._catalogue_files.set(files)
        self._reload_ts.labels("catalogue").set(ts)
        self._reload_ok.labels("catalogue").set(1)

    def policy_loaded(self, version: str, modes: Mapping[str, str], ts: float) -> None:
        """Record a successful policy load; ``modes`` maps app -> monitor|block|off|dry_run."""
        self._policy_info.info({"version": version})
        with self._lock:
            for app in self._mode_apps - set(modes):
                for mode in MODES:
                    self._policy_mode.remove(app, mode)
            for app, current in modes.items():
                if current not in MODES:
                    raise ValueError(f"unknown policy mode {current!r} for app {app!r}")
                for mode in MODES:
                    self._policy_mode.labels(app, mode).set(1 if mode == current else 0)
            self._mode_apps = set(modes)
        self._reload_ts.labels("policy").set(ts)
        self._reload_ok.labels("policy").set(1)

    def reload_succeeded(self, ts: float) -> None:
        """A catalogue and policy were loaded and swapped in (changed or not): both are good."""
        for kind in KINDS:
            self._reload_ts.labels(kind).set(ts)
            self._reload_ok.labels(kind).set(1)

    def reload_failed(self, kind: str, reason: str) -> None:
        """Count a failed load; ``reason`` outside parse|validation|io is counted as ``other``."""
        if kind not in KINDS:
            raise ValueError(f"unknown reload kind {kind!r}")
        if reason not in REASONS:
            reason = "other"
        self._reload_failures.labels(kind, reason).inc()
        self._reload_ok.labels(kind).set(0)

    def exceptions(self, in_force: int, next_expiry_ts: float | None) -> None:
        """Exceptions in force now and the Unix time of the next expiry (None: none expires)."""
        self._exceptions_in_force.set(in_force)
        self._next_expiry.set(next_expiry_ts)

    # -- event store -------------------------------------------------------------------------

    def store_written(self, n: int) -> None:
        self._written.inc(n)

    def store_dropped(self, n: int) -> None:
        self._dropped.inc(n)

    def store_failure(self, backend: str) -> None:
        self._write_failures.labels(backend).inc()

    def checkpoint_signed(self, ts: float) -> None:
        """A checkpoint was signed at Unix time ``ts``."""
        self._checkpoint_ts.set(ts)

    def refused_stopping(self, signal: str) -> None:
        """A hit was refused (no answer) because the writer had closed."""
        self._refused_stopping.labels(signal).inc()

    def store_queue(self, depth_fn: Callable[[], int], capacity: int) -> None:
        """Read the queue depth from ``depth_fn`` at scrape time (NaN if it raises)."""
        self._queue_depth.set_function(safe(depth_fn))
        self._queue_capacity.set(capacity)

    # -- process -----------------------------------------------------------------------------

    def worker_restarts(self, n: int) -> None:
        self._worker_restarts.set(n)

    def build_info(self, version: str, mitmproxy_version: str, python_version: str) -> None:
        self._build_info.info(
            {"version": version, "mitmproxy": mitmproxy_version, "python": python_version}
        )

    def serve(
        self,
        host: str,
        port: int,
        certfile: str | None = None,
        keyfile: str | None = None,
        *,
        health: Health | None = None,
        pac: str | None = None,
    ) -> tuple[str, int]:
        """Serve ``/metrics`` over HTTP (HTTPS when both cert and key are given) in a thread,
        with ``/healthz`` and ``/readyz`` when ``health`` is given and ``/proxy.pac`` when a PAC
        file is (:mod:`egresswatch.endpoints`).

        Returns the bound ``(host, port)``; ``port`` 0 picks a free port.
        """
        if self._httpd is not None:
            raise RuntimeError("metrics server already running")
        app = endpoints.routes(make_wsgi_app(self._registry), health=health, pac=pac)
        httpd, thread = endpoints.serve(host, port, app, certfile=certfile, keyfile=keyfile)
        self._httpd, self._thread = httpd, thread
        bound = httpd.server_address
        # DEBUG: the proxy logs the URL once, in its own words (issue 12, item 7).
        logger.debug(
            "metrics on %s://%s:%d/metrics", "https" if certfile else "http", host, bound[1]
        )
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        """Stop the HTTP server (if any) and unregister from the registry. Idempotent."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self._registry.unregister(self._collector)
        except KeyError:
            pass
