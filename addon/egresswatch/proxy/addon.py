"""The ``EgressWatch`` addon: options, ``configure``, lifecycle; a composition of the pieces.

Like mitmproxy's ``default_addons()``, the work is done by small addons, each with its own
hooks: ``observe.Observe`` (HTTP, CONNECT, connects, DNS) and ``layers.PassThrough`` (TLS/QUIC),
which share one :class:`~egresswatch.proxy.observe.Observer`. Their hook methods are bound to
this addon's attributes of the same names rather than listed as child addons (``addons``):
mitmproxy walks every addon's children for every hook it fires (a ``hasattr`` and a ``getattr``
per child, handled or not), and bound methods cost nothing extra. This class owns what lives as
long as the proxy: the state (swapped as one object), the metrics, the event writer (through
``journal.Journal``, which also does the heartbeat's housekeeping), the background loops
(heartbeat, file watch) and the ``egresswatch.reload`` / ``egresswatch.status`` commands. Hooks
never block on I/O: events go to a bounded queue drained by the writer thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import version as mitmproxy_version
from mitmproxy.utils import asyncio_utils

import egresswatch
from egresswatch.candidates import Candidates
from egresswatch.categories import httpdns_apps
from egresswatch.checkpoint import Checkpoint
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.metrics import Metrics
from egresswatch.metrics import new_registry
from egresswatch.proxy import options
from egresswatch.proxy import state as state_mod
from egresswatch.proxy.altsvc import AltSvcWatch
from egresswatch.proxy.discovery import Discovery
from egresswatch.proxy.dnswatch import DnsWatch
from egresswatch.proxy.journal import Journal
from egresswatch.proxy.layers import PassThrough
from egresswatch.proxy.observe import Observe
from egresswatch.proxy.observe import Observer
from egresswatch.proxy.reload import Reloader
from egresswatch.proxy.signing import Signing
from egresswatch.proxy.signing import load_signing
from egresswatch.proxy.state import LoadError
from egresswatch.proxy.state import State
from egresswatch.proxy.vitals import Vitals
from egresswatch.store import EventStore
from egresswatch.store import backend_of
from egresswatch.store import open_store
from egresswatch.timeutil import from_unix
from egresswatch.workers import restarts_from_env
from egresswatch.writer import EventWriter
from egresswatch.writer import backlog_batch

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["EgressWatch"]

logger = logging.getLogger("egresswatch")

_HEARTBEAT = "egresswatch_heartbeat"
_RELOAD = "egresswatch_reload_interval"
_CATALOGUE_OPTIONS = frozenset({"egresswatch_lists", "egresswatch_bundled", "egresswatch_policy"})
_SIGNING_OPTIONS = frozenset(
    {
        "egresswatch_signing_key",
        "egresswatch_checkpoint_interval",
        "egresswatch_store",
        "egresswatch_data_dir",
    }
)
_METRICS_OPTIONS = frozenset(
    {"egresswatch_metrics_listen", "egresswatch_metrics_certfile", "egresswatch_metrics_keyfile"}
)


def _starting_up() -> bool:
    """Whether this is a mitmproxy tool (mitmdump, mitmweb, mitmproxy: the ones with the start-up
    error check) that has not started running yet (its script loader is not running)."""
    try:
        addons = ctx.master.addons
        check = addons.get("errorcheck")  # type: ignore[no-untyped-call]
        scripts = addons.get("scriptloader")  # type: ignore[no-untyped-call]
    except Exception:  # no master (not inside mitmproxy)
        return False
    return check is not None and not getattr(scripts, "is_running", False)


class EgressWatch:
    """mitmproxy addon; see ``docs/operating.md`` for options and behaviour.

    ``registry``, ``clock`` and ``store_opener`` are injected (tests pass their own)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        store_opener: Callable[[str], EventStore] = open_store,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._store_opener = store_opener
        self.observer = Observer(clock, self._emit)
        self.journal = Journal(
            clock, self.observer.settings, lambda: self.observer.state, lambda: self.metrics
        )
        self.observe = Observe(self.observer)
        self.layers = PassThrough(self.observer)
        self.altsvc = AltSvcWatch(self.observer)
        self.discovery = Discovery(self.observer, Candidates(clock=clock))
        self.journal.on_heartbeat = self.discovery.save
        self.dnswatch = DnsWatch(self.observer, candidates=self.discovery.candidates)
        self.observer.correlator = self.dnswatch.correlate
        self.observer.ech_advertised = self.dnswatch.advertised
        self.reloader = Reloader(lambda: self.observer.state, self._swap, lambda: self.metrics)
        self.vitals = Vitals()  # /healthz, /readyz and systemd's sd_notify
        self._pac: str | None = None  # served at /proxy.pac (egresswatch_pac_proxies)
        # The pieces' hooks, as this addon's own (see the module docstring).
        self.client_disconnected = self.observe.client_disconnected
        self.http_connect = self.observe.http_connect
        self.server_connect = self.observe.server_connect
        self.requestheaders = self.observe.requestheaders
        self.responseheaders = self.altsvc.responseheaders
        self.dns_request = self.observe.dns_request
        self.dns_response = self.dnswatch.dns_response
        self.next_layer = self.layers.next_layer
        self.tls_clienthello = self.layers.tls_clienthello
        self.tls_established_server = self.discovery.tls_established_server
        self.metrics_address: tuple[str, int] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}  # background loops by option
        self._vitals_task: asyncio.Task[None] | None = None  # liveness beat, systemd watchdog
        self._store_url = ""
        self._signing: Signing | None = None  # None: checkpoints not signed (or memory://)
        self._metrics_listen: tuple[str, int] | None = None
        self._metrics_tls: tuple[str, str] = ("", "")
        self._writer_options: tuple[int, int] | None = None  # (queue size, flush ms) in use
        self._department_label = False  # fixed when the metrics are built
        self._running = False
        self.observer.stopping = False

    # -- public view --------------------------------------------------------------------------

    @property
    def state(self) -> State | None:
        """The catalogue, matcher and policy in force (None before the first load)."""
        return self.observer.state

    @state.setter
    def state(self, new: State | None) -> None:
        self.observer.state = new

    @property
    def metrics(self) -> Metrics | None:
        return self.observer.metrics

    @property
    def writer(self) -> EventWriter | None:
        """The event writer (None until ``running``, and after ``done``)."""
        return self.journal.writer

    def background_tasks(self) -> list[str]:
        """The background loops running, by the option that drives each."""
        return list(self._tasks)

    # -- options ------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        options.declare(loader)

    def configure(self, updated: set[str]) -> None:
        try:
            try:
                self._configure(updated)
            except ValueError as e:
                raise exceptions.OptionsError(str(e)) from None  # type: ignore[no-untyped-call]
        except exceptions.OptionsError as e:
            if self.state is None and not self._running and _starting_up():
                # A refused start-up: the operator needs only the message (`file:line: …`), not
                # the traceback mitmproxy's script loader would print, and the proxy must stop
                # now. mitmproxy's own start-up check would exit only after its servers are set
                # up (a script loads while they are), so the port would be bound and "listening"
                # logged first. SystemExit is not caught by mitmproxy's hook or script wrappers.
                logger.error("%s", e)
                raise SystemExit(1) from None
            raise

    def _configure(self, updated: set[str]) -> None:
        o = ctx.options
        s = self.observer.settings
        if "egresswatch_decrypt" in updated:
            s.decrypt = options.choice(
                "egresswatch_decrypt", o.egresswatch_decrypt, options.DECRYPT_CHOICES
            )
        if "egresswatch_dns_block" in updated:
            s.dns_block = options.choice(
                "egresswatch_dns_block", o.egresswatch_dns_block, options.DNS_BLOCK_CHOICES
            )
        options.validate_counts(
            {name: getattr(o, name) for name in updated & options.COUNT_OPTIONS}
        )
        writer_options = (o.egresswatch_queue_size, o.egresswatch_flush_ms)
        if self._writer_options is not None and writer_options != self._writer_options:
            raise ValueError(
                "egresswatch_queue_size and egresswatch_flush_ms cannot change while running"
            )
        if updated & {"egresswatch_client_identity", "egresswatch_client_key_file"}:
            s.identity = options.client_identity(
                o.egresswatch_client_identity, o.egresswatch_client_key_file
            )
            self.observer.forget_identities()  # computed under the old setting
        if "egresswatch_dns_resolutions" in updated:
            self.dnswatch.resize(o.egresswatch_dns_resolutions)
        if "egresswatch_instance" in updated:
            s.instance = options.instance_name(o.egresswatch_instance) or socket.gethostname()
        if updated & _METRICS_OPTIONS:
            endpoint = options.metrics_endpoint(
                o.egresswatch_metrics_listen,
                o.egresswatch_metrics_certfile,
                o.egresswatch_metrics_keyfile,
            )
            if self._running and endpoint != (self._metrics_listen, self._metrics_tls):
                raise ValueError(
                    "egresswatch_metrics_listen, _certfile and _keyfile cannot change while running"
                )
            self._metrics_listen, self._metrics_tls = endpoint
        if updated & {"egresswatch_store", "egresswatch_data_dir"}:
            url = options.store_url(o.egresswatch_store, o.egresswatch_data_dir)
            if self._running and url != self._store_url:
                raise ValueError("egresswatch_store cannot change while running")
            self._store_url = url
        if "egresswatch_pac_proxies" in updated:
            pac = options.pac_file(o.egresswatch_pac_proxies)
            if self._running and pac != self._pac:
                raise ValueError("egresswatch_pac_proxies cannot change while running")
            self._pac = pac
        if updated & _SIGNING_OPTIONS:
            if self._running:
                raise ValueError(
                    "egresswatch_signing_key and egresswatch_checkpoint_interval cannot change "
                    "while running"
                )
            self._signing = load_signing(
                self._store_url,
                o.egresswatch_data_dir,
                o.egresswatch_signing_key,
                options.checkpoint_interval(o.egresswatch_checkpoint_interval),
            )
        self._configure_metrics(bool(o.egresswatch_department_label))
        loops = {_HEARTBEAT, _RELOAD} & updated
        if "egresswatch_reload_polling" in updated:
            loops.add(_RELOAD)
        if self.state is None or updated & _CATALOGUE_OPTIONS:
            self._load(
                *options.catalogue_paths(
                    o.egresswatch_bundled, o.egresswatch_lists, o.egresswatch_policy
                )
            )
            loops.add(_RELOAD)  # the watch follows the new files
        if self._running and loops:
            self._start_loops(loops)

    def _configure_metrics(self, department_label: bool) -> None:
        if self.observer.metrics is None:
            self._department_label = department_label
            if self._registry is None:
                self._registry = new_registry()
            m = self.observer.metrics = Metrics(self._registry, department_label=department_label)
            m.build_info(egresswatch.__version__, mitmproxy_version.VERSION, sys.version.split()[0])
        elif department_label != self._department_label:
            raise ValueError("egresswatch_department_label cannot change at runtime")

    def _load(self, dirs: tuple[Path, ...], policy_path: Path | None) -> None:
        try:
            new = state_mod.load_state(dirs, policy_path, self.state)
        except LoadError as e:
            assert self.metrics is not None
            for f in e.failures:
                self.metrics.reload_failed(f.kind, f.reason)
            raise ValueError(
                "\n".join(
                    f"egresswatch: invalid {f.kind}:\n" + "\n".join(f.problems) for f in e.failures
                )
            ) from None
        self._install(new, self.state, "load")

    # -- the swap -----------------------------------------------------------------------------

    def _swap(self, new: State, old: State, force_log: bool) -> None:
        self._install(new, old, "reload", force_log=force_log)

    def _install(self, new: State, old: State | None, why: str, *, force_log: bool = False) -> None:
        """Swap in ``new`` (atomic: one attribute), update metrics, log and record config events."""
        self.state = new
        self.reloader.track(new)
        self.vitals.loaded()
        m = self.metrics
        now = self._clock()
        cat_changed = old is None or old.catalogue.version != new.catalogue.version
        pol_changed = old is None or old.policy.version != new.policy.version
        if m is not None:
            m.prepare(new.catalogue.app_regimes(), new.policy.departments)
            m.prepare_evasion(
                new.categories.resolvers, httpdns_apps(new.catalogue), tuple(new.catalogue.apps)
            )
            # Any successful load clears a failure, even one back to identical content.
            m.reload_succeeded(now)
            if cat_changed:
                m.catalogue_loaded(
                    new.catalogue.version,
                    new.catalogue.entries_per_app(),
                    len(new.catalogue.files),
                    now,
                )
            if pol_changed:
                m.policy_loaded(new.policy.version, new.policy.modes(from_unix(now)), now)
        verb = "loaded" if why == "load" and old is None else "reloaded"
        if cat_changed or force_log:
            logger.info(
                "egresswatch: catalogue %s version=%s (%d entries, %s matcher)",
                verb,
                new.catalogue.version[:12],
                new.catalogue.entries,
                new.matcher.backend,
            )
        if cat_changed:
            self._emit(self.journal.config_event("catalogue", new, now))
        if pol_changed or force_log:
            logger.info("egresswatch: policy %s version=%s", verb, new.policy.version[:12])
        if pol_changed:
            self._emit(self.journal.config_event("policy", new, now))
        # An exception that expired since the last check is logged here (with the policy now in
        # force), or the heartbeat after this swap would start its window too late to see it.
        self.journal.check_exceptions(now)

    def _emit(self, event: Event) -> None:
        self.journal.emit(event)

    # -- commands -----------------------------------------------------------------------------

    @command.command("egresswatch.reload")  # type: ignore[untyped-decorator]
    def reload(self) -> None:
        """Reload the catalogue and the policy now (the old ones stay if the new are invalid)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # called outside mitmproxy's event loop (embedding, tests)
            self.reloader.reload_sync()
            return
        # In the proxy, commands run on the event loop: load in a thread (a large catalogue
        # takes seconds) and swap on the loop, as a file change does.
        asyncio_utils.create_task(
            self.reloader.reload_async(force_log=True), name="egresswatch.reload", keep_ref=True
        )

    @command.command("egresswatch.status")  # type: ignore[untyped-decorator]
    def status(self) -> str:
        """One line: catalogue and policy versions, entries, queue depth."""
        st = self.state
        if st is None:
            return "egresswatch: not configured"
        writer = self.writer
        depth = writer.queue_depth() if writer else len(self.journal.pending())
        return (
            f"egresswatch: catalogue {st.catalogue.version[:12]} "
            f"({st.catalogue.entries} entries, {len(st.catalogue.apps)} apps), "
            f"policy {st.policy.version[:12]}, decrypt={self.observer.settings.decrypt}, "
            f"queue={depth}"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def running(self) -> None:
        o = ctx.options
        m, st = self.metrics, self.state
        if m is None or st is None:
            return  # start-up refused in configure (already logged); mitmproxy is exiting
        self._running = True
        backend = backend_of(self._store_url)

        def on_failure(exc: BaseException) -> None:
            logger.error("egresswatch: event store %s write failed: %s", backend, exc)
            m.store_failure(backend)

        def on_checkpoint(cp: Checkpoint, _note: str) -> None:
            m.checkpoint_signed(cp.time)

        signing = self._signing
        writer = EventWriter(
            functools.partial(self._store_opener, self._store_url),
            queue_size=o.egresswatch_queue_size,
            flush_interval=o.egresswatch_flush_ms / 1000,
            batch_size=backlog_batch(backend),
            on_written=m.store_written,
            on_dropped=m.store_dropped,
            on_failure=on_failure,
            on_open=self.vitals.store_opened,
            signer=signing.signer if signing else None,
            checkpoint_log=signing.log if signing else None,
            checkpoint_interval=signing.interval if signing else 60.0,
            on_checkpoint=on_checkpoint if signing else None,
        )
        if signing is not None:
            logger.warning("%s", signing.describe())
        self._writer_options = (o.egresswatch_queue_size, o.egresswatch_flush_ms)
        m.store_queue(writer.queue_depth, o.egresswatch_queue_size)
        writer.start()
        self._serve_metrics(m)
        self.journal.start(writer)
        now = self._clock()
        detail: dict[str, object] = {
            "egresswatch": egresswatch.__version__,
            "mitmproxy": mitmproxy_version.VERSION,
            "catalogue_version": st.catalogue.version,
            "policy_version": st.policy.version,
            "client_identity": self.observer.settings.identity.mode,
        }
        restarts = restarts_from_env()  # set when a supervisor runs this worker
        if restarts is not None:
            m.worker_restarts(restarts)
            detail["worker_restarts"] = restarts
        self._emit(self.journal.event(EventKind.START, now, detail))
        self.journal.prune(now, o.egresswatch_retention_days)
        self._start_loops({_HEARTBEAT, _RELOAD})
        self._vitals_task = asyncio_utils.create_task(
            self.vitals.loop(), name="egresswatch health", keep_ref=True
        )
        logger.info(
            "egresswatch: running (decrypt=%s, store=%s)", self.observer.settings.decrypt, backend
        )

    def _serve_metrics(self, m: Metrics) -> None:
        if self._metrics_listen is None:
            return
        host, port = self._metrics_listen
        certfile, keyfile = self._metrics_tls
        try:
            self.metrics_address = m.serve(
                host,
                port,
                certfile or None,
                keyfile or None,
                health=self.vitals.health,
                pac=self._pac,
            )
        except OSError as e:
            logger.error("egresswatch: cannot serve metrics on %s:%d: %s", host, port, e)
            return
        h, p = self.metrics_address
        shown = f"[{h}]" if ":" in h else h
        logger.info(
            "egresswatch: metrics listening at http%s://%s:%d/metrics",
            "s" if certfile else "",
            shown,
            p,
        )

    def _start_loops(self, which: set[str]) -> None:
        """(Re)start the background loop driven by each named option, with its current value."""
        o = ctx.options
        for option in which:
            old = self._tasks.pop(option, None)
            if old is not None:
                if option == _RELOAD:
                    self.reloader.stop()
                old.cancel()
        if _HEARTBEAT in which:
            self._tasks[_HEARTBEAT] = asyncio_utils.create_task(
                self.journal.heartbeat(
                    float(o.egresswatch_heartbeat), lambda: ctx.options.egresswatch_retention_days
                ),
                name="egresswatch heartbeat",
                keep_ref=True,
            )
        if _RELOAD in which and o.egresswatch_reload_interval > 0:
            self._tasks[_RELOAD] = asyncio_utils.create_task(
                self.reloader.watch(
                    float(o.egresswatch_reload_interval), polling=o.egresswatch_reload_polling
                ),
                name="egresswatch reload",
                keep_ref=True,
            )

    async def done(self) -> None:
        if self._running:
            self.vitals.stopping()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        if self._vitals_task is not None:
            tasks.append(self._vitals_task)
            self._vitals_task = None
        self.reloader.stop()
        for t in tasks:
            t.cancel()
        if tasks:  # let them finish (the file watch stops its thread within one step)
            await asyncio.wait(tasks, timeout=5.0)
        # Stop deciding before the writer closes (on this loop, so no hook runs in between):
        # a hit seen from now on is refused without an answer, and every answer already given
        # carries an event queued before the drain below. The stop event goes in before the
        # final checkpoint, which the writer signs after its last flush.
        self.observer.stopping = True
        self.discovery.save(self._clock(), final=True)
        await self.journal.close(10.0)
        self._writer_options = None
        if self.metrics is not None:
            self.metrics.close()
        self._running = False
        self.observer.stopping = False
