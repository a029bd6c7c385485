"""The mitmproxy addon: see every way a client names a destination, count it, enforce policy.

This is the only module that imports mitmproxy. It composes the catalogue, matcher, policy,
client identity, metrics and the event writer; hooks only read one immutable :class:`State`
prepared in ``configure`` or by a reload, and never block on I/O (events go to a bounded queue
drained by the writer thread).

Where each signal is read, and why there:

===================  ==============  ========================================================
hook                 signal          block
===================  ==============  ========================================================
``http_connect``     ``connect``     403 + ``X-Egresswatch-Block`` header, no upstream
``server_connect``   ``socks5``/     ``data.server.error``: SOCKS reply 04 / TCP close, no
                     ``ip``          upstream; also refuses names asyncio cannot encode
``tls_clienthello``  ``sni``/        pass-through: connection closed before any byte reaches
                     ``quic``        the server; QUIC dropped (clients fall back to TCP)
``requestheaders``   ``http_host``/  403 block page (HTML or JSON), no upstream request
                     ``websocket``
``dns_request``      ``dns``         NXDOMAIN, REFUSED or 0.0.0.0 / ::
===================  ==============  ========================================================
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import logging
import re
import socket
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from ipaddress import IPv4Address
from ipaddress import IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import NamedTuple

from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import dns
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy import tls
from mitmproxy import version as mitmproxy_version
from mitmproxy.connection import Client
from mitmproxy.net.dns import response_codes
from mitmproxy.net.dns import types as dns_types
from mitmproxy.proxy import commands as proxy_commands
from mitmproxy.proxy import events as proxy_events
from mitmproxy.proxy import layer as proxy_layer
from mitmproxy.proxy import layers as proxy_layers
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.quic import quic_parse_client_hello_from_datagrams
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.utils import asyncio_utils

import egresswatch
from egresswatch import hostnames
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import CatalogueError
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.events import Action
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.events import Signal
from egresswatch.events import new_event_id
from egresswatch.identity import ClientIdentity
from egresswatch.identity import identity_from_options
from egresswatch.matcher import Match
from egresswatch.matcher import Matcher
from egresswatch.metrics import Metrics
from egresswatch.metrics import new_registry
from egresswatch.policy import Decision
from egresswatch.policy import Policy
from egresswatch.policy import PolicyError
from egresswatch.policy import load_policy
from egresswatch.reloader import FileWatcher
from egresswatch.store import EventStore
from egresswatch.store import default_store_url
from egresswatch.store import open_store
from egresswatch.writer import EventWriter

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "DECRYPT_CHOICES",
    "DNS_BLOCK_CHOICES",
    "IDENTITY_CHOICES",
    "EgressWatch",
    "State",
    "block_page",
    "connect_block_header",
    "parse_listen",
    "prefers_json",
    "refusal_reason",
    "verifiable_sni",
]

logger = logging.getLogger("egresswatch")

DECRYPT_CHOICES = ("off", "blocked", "all")
DNS_BLOCK_CHOICES = ("nxdomain", "refused", "null")
IDENTITY_CHOICES = ("address", "hash", "none")
#: Modes where ``server_connect`` carries the client's own destination (an IP literal).
_TRANSPARENT_MODES = frozenset({"transparent", "wireguard", "local", "tun", "osproxy"})
#: Modes that take plain-HTTP proxy requests (absolute-form), each counted on its own.
_PROXY_MODES = frozenset({"regular", "upstream"})
_DAY = 86400.0


def _options_error(message: str) -> exceptions.OptionsError:
    """``OptionsError`` (its constructor is untyped in mitmproxy)."""
    return exceptions.OptionsError(message)  # type: ignore[no-untyped-call]


# -- pure helpers -------------------------------------------------------------------------------


def parse_listen(spec: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9464"`` / ``"[::1]:9464"`` -> (host, port); ``""``/``"off"`` -> None.

    >>> parse_listen("[::1]:9464"), parse_listen("off")
    (('::1', 9464), None)
    """
    spec = spec.strip()
    if spec in ("", "off"):
        return None
    if spec.startswith("["):
        host, sep, port = spec[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid listen address {spec!r} (use [v6addr]:port)")
    else:
        host, sep, port = spec.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"invalid listen address {spec!r} (use host:port)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid port in listen address {spec!r}")
    if not host:
        raise ValueError(f"missing host in listen address {spec!r}")
    return host, int(port)


# Names the stdlib ``idna`` codec (which asyncio applies) accepts without further checks: ASCII
# labels of 1-63 characters, one optional trailing dot. For ASCII input the codec checks nothing
# but label lengths, so such a name needs no codec call and no IP parsing (IPv4 literals match too).
_PLAIN_NAME_RE = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")
# A name mitmproxy can mint a certificate for and verify: LDH labels, no edge hyphens, no trailing
# dot (an ASCII-only character class, so non-ASCII names fail too).
_VERIFIABLE_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def refusal_reason(name: str) -> str | None:
    """Why mitmproxy must not try to connect to ``name`` (None: let it try).

    mitmproxy 12.3.1 catches only ``OSError`` around ``asyncio.open_connection``; a name that the
    ``idna`` codec rejects or that holds NUL raises ``UnicodeError``/``ValueError`` there, and the
    client is never answered (MITMPROXY.md section 13 #1). Overlong names are refused too.
    ``server_connect`` runs this for every connection: a plain ASCII name costs one regex match.
    """
    if len(name) <= hostnames.MAX_NAME_LENGTH and _PLAIN_NAME_RE.fullmatch(name) is not None:
        return None
    return _careful_refusal_reason(name)


def _careful_refusal_reason(name: str) -> str | None:
    """:func:`refusal_reason` for every name, through the stdlib codec itself."""
    if "\x00" in name:
        return "name holds a NUL byte"
    if len(name) > hostnames.MAX_NAME_LENGTH + 1:
        return f"name is longer than {hostnames.MAX_NAME_LENGTH} bytes"
    if name.count(".") + 1 > hostnames.MAX_LABELS + 1:
        return f"name has more than {hostnames.MAX_LABELS} labels"
    if hostnames.parse_ip(name) is not None:
        return None
    try:
        encoded = name.encode("idna")
    except (UnicodeError, ValueError):
        return "name fails IDNA encoding"
    if len(encoded.rstrip(b".")) > hostnames.MAX_NAME_LENGTH:
        return f"name is longer than {hostnames.MAX_NAME_LENGTH} bytes"
    return None


def verifiable_sni(sni: str | None) -> bool:
    """Whether mitmproxy can mint and verify a certificate for ``sni`` when intercepting.

    ``X509_VERIFY_PARAM_set1_host`` fails on a trailing dot and on labels that are not LDH
    (``cdn-.x``), and the client handshake then stalls (MITMPROXY.md section 13 #5): such names are
    passed through (or refused) instead of intercepted. No SNI is fine (the address is used).
    """
    return sni is None or _VERIFIABLE_RE.fullmatch(sni) is not None


def prefers_json(accept: str) -> bool:
    """True when an Accept header ranks application/json above text/html.

    >>> prefers_json("application/json"), prefers_json("text/html,*/*;q=0.8"), prefers_json("")
    (True, False, False)
    """
    best = {"json": -1.0, "html": -1.0}
    for part in accept.split(",")[:50]:
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("application/json", "application/*") or media.endswith("+json"):
            best["json"] = max(best["json"], q)
        elif media in ("text/html", "text/*", "application/xhtml+xml"):
            best["html"] = max(best["html"], q)
    return best["json"] > 0 and best["json"] > best["html"]


def connect_block_header(app: str, regime: str, event_id: str) -> str:
    """The ``X-Egresswatch-Block`` value on a refused CONNECT."""
    return f"app={app}; regime={regime}; event={event_id}"


def block_page(
    *, app: str, app_name: str, regime: str, contact: str, event_id: str, host: str, as_json: bool
) -> tuple[bytes, str]:
    """Body and content type of the 403 answer; every value HTML-escaped in the HTML variant."""
    if as_json:
        doc = {
            "blocked": True,
            "app": app,
            "app_name": app_name,
            "regime": regime,
            "host": host,
            "contact": contact,
            "event_id": event_id,
        }
        return json.dumps(doc, sort_keys=True).encode(), "application/json"
    e = html.escape
    contact_line = f"<p>Questions: {e(contact)}</p>" if contact else ""
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Blocked</title></head><body>\n'
        f"<h1>Access to {e(app_name)} is blocked</h1>\n"
        f"<p>{e(host)} belongs to <b>{e(app_name)}</b> ({e(app)}), which the organisation's "
        f"policy blocks under <b>{e(regime)}</b>.</p>\n"
        f"{contact_line}\n"
        f"<p>Reference: <code>{e(event_id)}</code></p>\n</body></html>\n"
    )
    return page.encode(), "text/html; charset=utf-8"


# -- state --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    """Everything a hook reads, swapped as one object on reload."""

    catalogue: Catalogue
    matcher: Matcher
    policy: Policy
    dirs: tuple[Path, ...]
    policy_path: Path | None


class Verdict(NamedTuple):
    match: Match
    decision: Decision
    event_id: str

    @property
    def blocked(self) -> bool:
        return self.decision.action == Action.BLOCKED


class _LoadError(Exception):
    def __init__(self, kind: str, reason: str, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.kind = kind
        self.reason = reason
        self.problems = problems


def _load_state(
    dirs: tuple[Path, ...], policy_path: Path | None, old: State | None = None
) -> State:
    """Load (catalogue, matcher, policy); reuse ``old``'s catalogue if its files are unchanged."""
    try:
        cat = load_catalogue(list(dirs))
    except CatalogueError as e:
        raise _LoadError("catalogue", "validation", [str(p) for p in e.problems]) from e
    except OSError as e:
        raise _LoadError("catalogue", "io", [f"{e.filename or dirs}: {e.strerror or e}"]) from e
    if old is not None and old.catalogue.version == cat.version and old.dirs == dirs:
        cat, matcher = old.catalogue, old.matcher
    else:
        # The proxy never explains a bulk name's line: once the names are in the (native)
        # matcher, neither it nor the catalogue keeps its own copy (70 bytes a name at 1M).
        full = Matcher.from_catalogue(cat)
        matcher = full.slim()
        if matcher is not full:  # the names now live in the native table only
            cat = cat.slim()
    try:
        pol = load_policy(policy_path, cat)
    except PolicyError as e:
        raise _LoadError("policy", "validation", [str(p) for p in e.problems]) from e
    except OSError as e:
        raise _LoadError("policy", "io", [f"{policy_path}: {e.strerror or e}"]) from e
    return State(cat, matcher, pol, dirs, policy_path)


def _startup_check_active() -> bool:
    """Whether mitmproxy's start-up error check (mitmdump, mitmweb, mitmproxy) is loaded: it
    exits non-zero once an ERROR record is logged before the proxy runs."""
    try:
        return ctx.master.addons.get("errorcheck") is not None  # type: ignore[no-untyped-call]
    except Exception:  # no master (not inside mitmproxy)
        return False


def _catalogue_entries(cat: Catalogue) -> int:
    return cat.entries


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# -- the addon ----------------------------------------------------------------------------------


def _host_and_upgrade(req: http.Request) -> tuple[str | None, bool]:
    """The name a request gives for its origin, and whether it asks for a WebSocket upgrade.

    The name is ``:authority`` (HTTP/2 and 3) or the first ``Host`` header, as sent: what
    ``Request.host_header`` gives, read in one pass over the raw header fields instead of two
    case-insensitive lookups (``normalise_host`` strips the port, as ``pretty_host`` would).
    Of several ``Host`` headers (which RFC 9112 says a server must reject) the first counts;
    ``host_header`` would join them into one name that matches nothing. None when the request
    names no host (HTTP/1.0 without ``Host``): use ``req.host``.
    """
    host: str | None = None
    upgrade = False
    for name, value in req.data.headers.fields:
        n = len(name)
        if n == 4 and host is None and name.lower() == b"host":
            host = value.decode("utf-8", "surrogateescape")
        elif n == 7 and name.lower() == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
    if req.data.http_version in (b"HTTP/2.0", b"HTTP/3") and req.data.authority:
        host = req.data.authority.decode("utf-8", "surrogateescape")
    return host, upgrade


def _client_datagrams(context: Context, events: Sequence[proxy_events.Event]) -> list[bytes]:
    """The data the client sent so far, one item per read (per datagram on UDP)."""
    client = context.client
    return [
        e.data
        for e in events
        if isinstance(e, proxy_events.DataReceived) and e.connection is client
    ]


def _mitmproxy_quic(context: Context) -> proxy_layer.Layer:
    """The layer stack mitmproxy's own next-layer addon builds for QUIC."""
    server = proxy_layers.ServerQuicLayer(context)
    server.child_layer = proxy_layers.ClientQuicLayer(context)
    return server


class _QuicHello(proxy_layer.Layer):
    """Holds a QUIC flow's events until its ClientHello (several datagrams) is complete, then
    hands them, and every later event, to the layer ``decide`` picks for it."""

    #: A ClientHello spanning more datagrams than this is not waited for: mitmproxy decides.
    MAX_DATAGRAMS = 16

    def __init__(
        self,
        context: Context,
        decide: Callable[[Context, tls.ClientHello | None], proxy_layer.Layer],
    ) -> None:
        super().__init__(context)
        self._decide = decide
        self._events: list[proxy_events.Event] = []
        self.child: proxy_layer.Layer | None = None

    def _handle_event(self, event: proxy_events.Event) -> proxy_layer.CommandGenerator[None]:
        if self.child is not None:
            yield from self.child.handle_event(event)
            return
        self._events.append(event)
        client = self.context.client
        if isinstance(event, proxy_events.ConnectionClosed) and event.connection is client:
            yield proxy_commands.CloseConnection(client)
            return
        if not isinstance(event, proxy_events.DataReceived) or event.connection is not client:
            return
        datagrams = _client_datagrams(self.context, self._events)
        try:
            hello = quic_parse_client_hello_from_datagrams(datagrams)
        except Exception:
            hello = None
        else:
            if hello is None and len(datagrams) < self.MAX_DATAGRAMS:
                return  # wait for the rest of the ClientHello
        self.child = self._decide(self.context, hello)
        events, self._events = self._events, []
        for e in events:
            yield from self.child.handle_event(e)


class _Guard:
    __slots__ = ("addon", "hook")

    def __init__(self, addon: EgressWatch, hook: str) -> None:
        self.addon = addon
        self.hook = hook

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            return False
        logger.error("egresswatch: unexpected error in %s", self.hook, exc_info=(exc_type, exc, tb))  # type: ignore[arg-type]
        metrics = self.addon.metrics
        if metrics is not None:
            try:
                metrics.hook_error(self.hook)
            except Exception:  # pragma: no cover - never let the counter itself raise
                pass
        return True


class EgressWatch:
    """mitmproxy addon; see ``docs/operating.md`` for options and behaviour."""

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
        self.state: State | None = None
        self.metrics: Metrics | None = None
        self.writer: EventWriter | None = None
        self._pending: list[Event] = []  # events produced before the writer starts
        self._tasks: dict[str, asyncio.Task[None]] = {}  # background loops by name
        self._watcher: FileWatcher | None = None
        self._identity = ClientIdentity("address", None)
        self._instance = socket.gethostname()
        self._decrypt = "off"
        self._dns_block = "nxdomain"
        self._store_url = ""
        self._metrics_listen: tuple[str, int] | None = None
        self._metrics_tls: tuple[str, str] = ("", "")
        self._writer_options: tuple[int, int] | None = None  # (queue size, flush ms) in use
        self._department_label = False  # fixed when the metrics are built
        self.metrics_address: tuple[str, int] | None = None
        # Per client connection (client.id): apps already counted, and connections to cut off.
        self._conn_apps: dict[str, dict[str, Verdict]] = {}
        self._refuse: set[str] = set()
        self._block_page: dict[str, Verdict] = {}
        # Connections whose SNI next_layer already counted as inspected (blocked ones, which it
        # leaves to tls_clienthello): the name is counted once.
        self._sni_inspected: set[str] = set()
        self._users: dict[str, str] = {}
        self._identities: dict[str, str | None] = {}
        self._guards: dict[str, _Guard] = {}
        self._last_exc_check: datetime | None = None
        self._last_prune = 0.0
        self._running = False

    # -- options ----------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        add = loader.add_option
        add(
            "egresswatch_lists",
            Sequence[str],
            [],
            "Extra catalogue directories, merged after the bundled one (repeatable).",
        )
        add("egresswatch_bundled", bool, True, "Load the catalogue shipped with egresswatch.")
        add(
            "egresswatch_policy",
            str,
            "",
            "Policy YAML file (actions per regime and app, exceptions, departments). "
            "Empty: built-in policy that monitors every app.",
        )
        add(
            "egresswatch_data_dir",
            str,
            "",
            "Directory for the default SQLite event store. Empty: the platform default.",
        )
        add(
            "egresswatch_store",
            str,
            "",
            "Event store URL: sqlite:///path/events.db, postgresql://... or memory://. "
            "Empty: sqlite:///<data dir>/events.db.",
        )
        add(
            "egresswatch_metrics_listen",
            str,
            "127.0.0.1:9464",
            "host:port (or [v6]:port) for the Prometheus /metrics endpoint; empty or off disables.",
        )
        add("egresswatch_metrics_certfile", str, "", "TLS certificate for the metrics endpoint.")
        add("egresswatch_metrics_keyfile", str, "", "TLS key for the metrics endpoint.")
        add(
            "egresswatch_decrypt",
            str,
            "off",
            "off: pass every TLS connection through untouched (no CA needed); blocked: intercept "
            "only connections to blocked apps, to show a block page; all: intercept everything "
            "mitmproxy can verify.",
            choices=DECRYPT_CHOICES,
        )
        add(
            "egresswatch_dns_block",
            str,
            "nxdomain",
            "Answer to a blocked DNS query in dns mode.",
            choices=DNS_BLOCK_CHOICES,
        )
        add(
            "egresswatch_client_identity",
            str,
            "address",
            "How clients are recorded in the event store: address, hash (keyed HMAC) or none.",
            choices=IDENTITY_CHOICES,
        )
        add(
            "egresswatch_client_key_file",
            str,
            "",
            "Secret key file for egresswatch_client_identity=hash.",
        )
        add(
            "egresswatch_department_label",
            bool,
            False,
            "Add the policy's department as a label on the hit counter.",
        )
        add("egresswatch_instance", str, "", "Instance name in events. Empty: the host name.")
        add("egresswatch_heartbeat", int, 60, "Seconds between heartbeat events.")
        add("egresswatch_flush_ms", int, 1000, "Milliseconds between event-store flushes.")
        add("egresswatch_queue_size", int, 10000, "Events queued for the store before dropping.")
        add(
            "egresswatch_retention_days",
            int,
            90,
            "Days of raw events kept in the store (daily rollups stay); 0 keeps everything.",
        )
        add(
            "egresswatch_reload_interval",
            int,
            2,
            "Seconds between checks for changed catalogue/policy files; 0: reload on command only.",
        )

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        except exceptions.OptionsError as e:
            if self.state is None and not self._running and _startup_check_active():
                # mitmproxy logs an exception raised by a script's first configure with its
                # traceback ("error in script"); its start-up check stops the proxy (exit 1) on
                # any ERROR record, so the operator needs only the message, e.g. `file:line: …`.
                logger.error("%s", e)
                return
            raise

    def _configure(self, updated: set[str]) -> None:
        o = ctx.options
        if "egresswatch_decrypt" in updated:
            self._decrypt = self._choice(
                "egresswatch_decrypt", o.egresswatch_decrypt, DECRYPT_CHOICES
            )
        if "egresswatch_dns_block" in updated:
            self._dns_block = self._choice(
                "egresswatch_dns_block", o.egresswatch_dns_block, DNS_BLOCK_CHOICES
            )
        for name in (
            "egresswatch_heartbeat",
            "egresswatch_flush_ms",
            "egresswatch_queue_size",
            "egresswatch_retention_days",
            "egresswatch_reload_interval",
        ):
            if name in updated and getattr(o, name) < 0:
                raise _options_error(f"{name} must not be negative, got {getattr(o, name)}")
        if "egresswatch_heartbeat" in updated and o.egresswatch_heartbeat == 0:
            raise _options_error("egresswatch_heartbeat must be at least 1 second")
        if "egresswatch_queue_size" in updated and o.egresswatch_queue_size == 0:
            raise _options_error("egresswatch_queue_size must be at least 1")
        if "egresswatch_flush_ms" in updated and o.egresswatch_flush_ms == 0:
            raise _options_error("egresswatch_flush_ms must be at least 1")
        writer_options = (o.egresswatch_queue_size, o.egresswatch_flush_ms)
        if self._writer_options is not None and writer_options != self._writer_options:
            raise _options_error(
                "egresswatch_queue_size and egresswatch_flush_ms cannot change while running"
            )
        if updated & {"egresswatch_client_identity", "egresswatch_client_key_file"}:
            mode = self._choice(
                "egresswatch_client_identity", o.egresswatch_client_identity, IDENTITY_CHOICES
            )
            if mode == "hash" and not o.egresswatch_client_key_file:
                raise _options_error(
                    "egresswatch_client_identity=hash needs egresswatch_client_key_file"
                )
            try:
                self._identity = identity_from_options(mode, o.egresswatch_client_key_file or None)
                self._identities.clear()  # computed under the old setting
            except ValueError as e:
                raise _options_error(f"egresswatch_client_key_file: {e}") from e
        if "egresswatch_instance" in updated:
            self._instance = o.egresswatch_instance or socket.gethostname()
        if updated & {
            "egresswatch_metrics_listen",
            "egresswatch_metrics_certfile",
            "egresswatch_metrics_keyfile",
        }:
            try:
                listen = parse_listen(o.egresswatch_metrics_listen)
            except ValueError as e:
                raise _options_error(f"egresswatch_metrics_listen: {e}") from e
            if bool(o.egresswatch_metrics_certfile) != bool(o.egresswatch_metrics_keyfile):
                raise _options_error(
                    "egresswatch_metrics_certfile and egresswatch_metrics_keyfile go together"
                )
            tls = (o.egresswatch_metrics_certfile, o.egresswatch_metrics_keyfile)
            if self._running and (listen, tls) != (self._metrics_listen, self._metrics_tls):
                raise _options_error(
                    "egresswatch_metrics_listen, _certfile and _keyfile cannot change while running"
                )
            self._metrics_listen, self._metrics_tls = listen, tls
        if updated & {"egresswatch_store", "egresswatch_data_dir"}:
            url = o.egresswatch_store or default_store_url(o.egresswatch_data_dir or None)
            scheme = url.split(":", 1)[0].lower()
            if scheme not in ("sqlite", "postgresql", "postgres", "memory"):
                raise _options_error(
                    f"egresswatch_store {url!r}: unknown scheme (use sqlite://, postgresql:// "
                    "or memory://)"
                )
            if self._running and url != self._store_url:
                raise _options_error("egresswatch_store cannot change while running")
            self._store_url = url
        if self.metrics is None:
            self._department_label = bool(o.egresswatch_department_label)
            self.metrics = self._make_metrics(self._department_label)
            self.metrics.build_info(
                egresswatch.__version__, mitmproxy_version.VERSION, sys.version.split()[0]
            )
        elif bool(o.egresswatch_department_label) != self._department_label:
            raise _options_error("egresswatch_department_label cannot change at runtime")
        if self.state is None or updated & {
            "egresswatch_lists",
            "egresswatch_bundled",
            "egresswatch_policy",
        }:
            dirs, policy_path = self._paths()
            try:
                new = _load_state(dirs, policy_path, self.state)
            except _LoadError as e:
                self.metrics.reload_failed(e.kind, e.reason)
                raise _options_error(
                    f"egresswatch: invalid {e.kind}:\n" + "\n".join(e.problems)
                ) from None
            self._install(new, self.state, "load")
            self._watcher = self._make_watcher(new)
        if self._running:
            loops = {"egresswatch_heartbeat", "egresswatch_reload_interval"} & updated
            if loops:
                self._start_loops(loops)

    @staticmethod
    def _choice(name: str, value: str, choices: Sequence[str]) -> str:
        if value not in choices:
            raise _options_error(
                f"{name}: invalid value {value!r} (choose from {', '.join(choices)})"
            )
        return value

    def _make_metrics(self, department_label: bool) -> Metrics:
        if self._registry is None:
            self._registry = new_registry()
        return Metrics(self._registry, department_label=department_label)

    def _paths(self) -> tuple[tuple[Path, ...], Path | None]:
        o = ctx.options
        dirs: list[Path] = [bundled_dir()] if o.egresswatch_bundled else []
        dirs += [Path(d) for d in o.egresswatch_lists]
        if not dirs:
            raise _options_error(
                "egresswatch: no catalogue (egresswatch_bundled is false and egresswatch_lists "
                "is empty)"
            )
        return tuple(dirs), Path(o.egresswatch_policy) if o.egresswatch_policy else None

    @staticmethod
    def _make_watcher(state: State) -> FileWatcher:
        files = list(state.catalogue.files)
        if state.policy_path is not None:
            files.append(state.policy_path)
        return FileWatcher(files=files, dirs=state.dirs)

    def _install(self, new: State, old: State | None, why: str, *, force_log: bool = False) -> None:
        """Swap in ``new`` (atomic: one attribute), update metrics, log and record config events."""
        self.state = new
        m = self.metrics
        now = self._clock()
        cat_changed = old is None or old.catalogue.version != new.catalogue.version
        pol_changed = old is None or old.policy.version != new.policy.version
        if m is not None:
            m.prepare(new.catalogue.app_regimes(), new.policy.departments)
            if cat_changed:
                m.catalogue_loaded(
                    new.catalogue.version,
                    new.catalogue.entries_per_app(),
                    len(new.catalogue.files),
                    now,
                )
            if pol_changed:
                m.policy_loaded(new.policy.version, new.policy.modes(_utc(now)), now)
        verb = "loaded" if why == "load" and old is None else "reloaded"
        if cat_changed or force_log:
            logger.info(
                "egresswatch: catalogue %s version=%s (%d entries, %s matcher)",
                verb,
                new.catalogue.version[:12],
                _catalogue_entries(new.catalogue),
                new.matcher.backend,
            )
        if cat_changed:
            self._emit(self._config_event("catalogue", new, now))
        if pol_changed or force_log:
            logger.info("egresswatch: policy %s version=%s", verb, new.policy.version[:12])
        if pol_changed:
            self._emit(self._config_event("policy", new, now))
        # An exception that expired since the last check is logged here (with the policy now in
        # force), or the heartbeat after this swap would start its window too late to see it.
        self._check_exceptions(now)

    def _config_event(self, kind: str, state: State, now: float) -> Event:
        detail: dict[str, object]
        if kind == "catalogue":
            detail = {
                "kind": "catalogue",
                "version": state.catalogue.version,
                "files": [str(f) for f in state.catalogue.files],
                "entries": state.catalogue.entries_per_app(),
            }
        else:
            detail = {"kind": "policy", **state.policy.snapshot(_utc(now))}
        return self._lifecycle_event(EventKind.CONFIG, now, detail)

    def _lifecycle_event(
        self, kind: EventKind, now: float, detail: dict[str, object] | None = None
    ) -> Event:
        st = self.state
        return Event(
            ts=now,
            kind=kind,
            instance=self._instance,
            event_id=new_event_id(),
            catalogue_version=st.catalogue.version if st else "",
            policy_version=st.policy.version if st else "",
            detail=detail,
        )

    def _emit(self, event: Event) -> None:
        if self.writer is None:
            self._pending.append(event)
        else:
            self.writer.put(event)

    # -- reload -----------------------------------------------------------------------------

    @command.command("egresswatch.reload")  # type: ignore[untyped-decorator]
    def reload(self) -> None:
        """Reload the catalogue and the policy now (the old ones stay if the new are invalid)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # called outside mitmproxy's event loop (embedding, tests)
            self._reload_sync()
            return
        # In the proxy, commands run on the event loop: load in a thread (a large catalogue
        # takes seconds) and swap on the loop, as the periodic check does.
        asyncio_utils.create_task(
            self.reload_async(force_log=True), name="egresswatch.reload", keep_ref=True
        )

    @command.command("egresswatch.status")  # type: ignore[untyped-decorator]
    def status(self) -> str:
        """One line: catalogue and policy versions, entries, queue depth."""
        st = self.state
        if st is None:
            return "egresswatch: not configured"
        depth = self.writer.queue_depth() if self.writer else len(self._pending)
        return (
            f"egresswatch: catalogue {st.catalogue.version[:12]} "
            f"({_catalogue_entries(st.catalogue)} entries, {len(st.catalogue.apps)} apps), "
            f"policy {st.policy.version[:12]}, decrypt={self._decrypt}, queue={depth}"
        )

    def _reload_sync(self) -> bool:
        old = self.state
        if old is None:
            return False
        try:
            new = _load_state(old.dirs, old.policy_path, old)
        except _LoadError as e:
            self._reject(e)
            return False
        self._finish_reload(new, old, force_log=True)
        return True

    async def reload_async(self, *, force_log: bool = False) -> bool:
        """Load off the event loop, then swap on it (the periodic check and the command)."""
        old = self.state
        if old is None:
            return False
        try:
            new = await asyncio.to_thread(_load_state, old.dirs, old.policy_path, old)
        except _LoadError as e:
            self._reject(e)
            return False
        if self.state is not old:  # a concurrent reload won; keep its result
            return False
        self._finish_reload(new, old, force_log=force_log)
        return True

    def _finish_reload(self, new: State, old: State, *, force_log: bool = False) -> None:
        self._install(new, old, "reload", force_log=force_log)
        self._watcher = self._make_watcher(new)

    def _reject(self, e: _LoadError) -> None:
        for p in e.problems:
            logger.warning("egresswatch: %s reload rejected: %s", e.kind, p)
        if self.metrics is not None:
            self.metrics.reload_failed(e.kind, e.reason)
        if self._watcher is not None:
            self._watcher.reset()  # do not retry the same broken file every poll

    async def _reload_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                w = self._watcher
                if w is not None and await asyncio.to_thread(w.changed):
                    await self.reload_async()
            except Exception:
                logger.exception("egresswatch: reload check failed")

    # -- lifecycle --------------------------------------------------------------------------

    def running(self) -> None:
        o = ctx.options
        m, st = self.metrics, self.state
        if m is None or st is None:
            return  # start-up refused in configure (already logged); mitmproxy is exiting
        self._running = True
        scheme = self._store_url.split(":", 1)[0].lower()
        backend = {"postgres": "postgresql"}.get(scheme, scheme)
        url = self._store_url

        def on_failure(exc: BaseException) -> None:
            logger.error("egresswatch: event store %s write failed: %s", backend, exc)
            m.store_failure(backend)

        self.writer = EventWriter(
            functools.partial(self._store_opener, url),
            queue_size=o.egresswatch_queue_size,
            flush_interval=o.egresswatch_flush_ms / 1000,
            on_written=m.store_written,
            on_dropped=m.store_dropped,
            on_failure=on_failure,
        )
        self._writer_options = (o.egresswatch_queue_size, o.egresswatch_flush_ms)
        m.store_queue(self.writer.queue_depth, o.egresswatch_queue_size)
        self.writer.start()
        if self._metrics_listen is not None:
            host, port = self._metrics_listen
            try:
                self.metrics_address = m.serve(
                    host,
                    port,
                    o.egresswatch_metrics_certfile or None,
                    o.egresswatch_metrics_keyfile or None,
                )
                h, p = self.metrics_address
                shown = f"[{h}]" if ":" in h else h
                logger.info(
                    "egresswatch: metrics listening at http%s://%s:%d/metrics",
                    "s" if o.egresswatch_metrics_certfile else "",
                    shown,
                    p,
                )
            except OSError as e:
                logger.error("egresswatch: cannot serve metrics on %s:%d: %s", host, port, e)
        pending, self._pending = self._pending, []
        for ev in pending:  # config events of the start-up load come first
            self.writer.put(ev)
        now = self._clock()
        self._emit(
            self._lifecycle_event(
                EventKind.START,
                now,
                {
                    "egresswatch": egresswatch.__version__,
                    "mitmproxy": mitmproxy_version.VERSION,
                    "catalogue_version": st.catalogue.version,
                    "policy_version": st.policy.version,
                    "client_identity": self._identity.mode,
                },
            )
        )
        self._prune(now)
        self._start_loops({"egresswatch_heartbeat", "egresswatch_reload_interval"})
        logger.info("egresswatch: running (decrypt=%s, store=%s)", self._decrypt, backend)

    def _start_loops(self, options: set[str]) -> None:
        """(Re)start the background loop driven by each named option, with its current value."""
        o = ctx.options
        for option in options:
            old = self._tasks.pop(option, None)
            if old is not None:
                old.cancel()
        if "egresswatch_heartbeat" in options:
            self._tasks["egresswatch_heartbeat"] = asyncio_utils.create_task(
                self._heartbeat_loop(float(o.egresswatch_heartbeat)),
                name="egresswatch heartbeat",
                keep_ref=True,
            )
        if "egresswatch_reload_interval" in options and o.egresswatch_reload_interval > 0:
            self._tasks["egresswatch_reload_interval"] = asyncio_utils.create_task(
                self._reload_loop(float(o.egresswatch_reload_interval)),
                name="egresswatch reload",
                keep_ref=True,
            )

    async def _heartbeat_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                now = self._clock()
                self._check_exceptions(now)
                self._emit(self._lifecycle_event(EventKind.HEARTBEAT, now))
                self._prune(now)
            except Exception:
                logger.exception("egresswatch: heartbeat failed")

    def _prune(self, now: float) -> None:
        days = ctx.options.egresswatch_retention_days
        if days <= 0 or self.writer is None or now - self._last_prune < _DAY:
            return
        self._last_prune = now
        cutoff = now - days * _DAY
        self.writer.call(
            lambda store: logger.info(
                "egresswatch: pruned %d events older than %d days", store.prune(cutoff), days
            )
        )

    def _check_exceptions(self, now: float) -> None:
        """Log each exception that expired since the last check (once), update the gauges."""
        st = self.state
        if st is None:
            return
        when = _utc(now)
        prev, self._last_exc_check = self._last_exc_check, when
        if prev is not None:
            for exc in st.policy.expired_since(prev, when):
                logger.warning(
                    "egresswatch: exception %s expired at %s",
                    exc.id,
                    exc.expires.isoformat(timespec="seconds"),
                )
        if self.metrics is not None:
            nxt = st.policy.next_expiry(when)
            self.metrics.exceptions(
                len(st.policy.exceptions_in_force(when)),
                nxt.timestamp() if nxt is not None else None,
            )

    async def done(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        self._tasks.clear()
        if self.writer is not None:
            self.writer.put(self._lifecycle_event(EventKind.STOP, self._clock()))
            writer = self.writer
            await asyncio.to_thread(writer.close, 10.0)
            self.writer = None
        self._writer_options = None
        if self.metrics is not None:
            self.metrics.close()
        self._running = False

    # -- matching ---------------------------------------------------------------------------

    def _guard(self, hook: str) -> _Guard:
        """No input may raise out of a hook: log and count instead (a reused context manager:
        hooks run for every connection, so this must cost next to nothing)."""
        guard = self._guards.get(hook)
        if guard is None:
            guard = self._guards[hook] = _Guard(self, hook)
        return guard

    def _observe(
        self,
        raw: str | None,
        signal: Signal,
        client: Client,
        user: str | None = None,
        *,
        dedupe: bool = True,
        inspected: bool = True,
    ) -> Verdict | None:
        """Match one destination name, decide, count and record. None: not a designated app.

        ``inspected=False``: the name was already counted in ``egresswatch_inspected_total``."""
        st = self.state
        m = self.metrics
        if st is None or m is None or not raw:
            return None
        if inspected:
            m.inspected(signal)
        name = hostnames.normalise_host(raw)
        if name is None:
            m.invalid_name(signal)
            return None
        match = st.matcher.match_normalised(name)
        if match is None:
            return None
        cid = client.id
        user = user or self._users.get(cid)
        seen = self._conn_apps.get(cid) if dedupe else None
        if seen is not None and match.app in seen:
            return seen[match.app]
        peer = client.peername[0] if client.peername else None
        client_ip = str(peer) if peer is not None else None
        now = self._clock()
        decision = st.policy.decide(match, client_ip, user, _utc(now))
        if decision is None:
            return None
        verdict = Verdict(match, decision, new_event_id())
        if dedupe:
            self._conn_apps.setdefault(cid, {})[match.app] = verdict
        m.hit(
            match.app,
            decision.regime,
            decision.action,
            signal,
            decision.department,
            verdict.event_id,
            now,
        )
        self._emit(
            Event(
                ts=now,
                kind=EventKind.HIT,
                instance=self._instance,
                event_id=verdict.event_id,
                signal=signal,
                host=match.host,
                app=match.app,
                regimes=tuple(match.regimes),
                action=decision.action,
                rule=match.rule.domain,
                exception_id=decision.exception_id,
                client=self._client_identity(cid, client_ip),
                user=user,
                department=decision.department,
                catalogue_version=st.catalogue.version,
                policy_version=st.policy.version,
            )
        )
        # Blocks are logged; monitored hits are not (mitmdump enables DEBUG on the root logger,
        # so even a filtered-out record would cost a record and a dispatch per hit): the event
        # store and the metrics hold them.
        if verdict.blocked:
            logger.info(
                "egresswatch: %s %s app=%s regime=%s signal=%s event=%s",
                decision.action,
                match.host,
                match.app,
                decision.regime,
                signal,
                verdict.event_id,
            )
        return verdict

    def _client_identity(self, cid: str, client_ip: str | None) -> str | None:
        """The stored identity of a connection's client, computed once per connection."""
        if cid in self._identities:
            return self._identities[cid]
        ident = self._identity.of(client_ip) if client_ip else None
        self._identities[cid] = ident
        return ident

    def _app_name(self, app: str) -> str:
        st = self.state
        a = st.catalogue.apps.get(app) if st else None
        return a.name if a is not None else app

    def _close_passthrough(self, client: Client, server: Any) -> None:
        """Cut a pass-through connection before the buffered ClientHello reaches the server.

        Lazy strategy: ``server_connect`` refuses the connection (``_refuse``). Eager: the server
        is already connected, so close its writer first (nothing can be written after that) and
        then both connections, through mitmproxy's own connection handler.
        """
        self._refuse.add(client.id)
        try:
            ps = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
            handler = ps.connections.get(client.id) if ps is not None else None
        except Exception:
            handler = None
        if handler is None:
            return
        io = handler.transports.get(server)
        if io is not None and io.writer is not None:
            io.writer.close()
            handler.close_connection(server)
        if client in handler.transports:
            handler.close_connection(client)

    # -- hooks ------------------------------------------------------------------------------

    def client_disconnected(self, client: Client) -> None:
        cid = client.id
        self._conn_apps.pop(cid, None)
        self._refuse.discard(cid)
        self._block_page.pop(cid, None)
        self._users.pop(cid, None)
        self._identities.pop(cid, None)
        self._sni_inspected.discard(cid)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        with self._guard("http_connect"):
            if flow.response is not None or flow.error is not None:
                return
            user = self._user_of(flow)
            if user:
                self._users[flow.client_conn.id] = user
            v = self._observe(flow.request.host, Signal.CONNECT, flow.client_conn, user)
            if v is None or not v.blocked:
                return
            if self._decrypt != "off":
                # Let the tunnel open without an upstream connection (a response set here skips
                # the eager connect) so that the block page can be served inside it.
                self._block_page[flow.client_conn.id] = v
                self._refuse.add(flow.client_conn.id)
                flow.response = http.Response.make(200, b"")
                flow.response.reason = "Connection established"
                return
            body = (
                f"egresswatch: {flow.request.host} ({self._app_name(v.match.app)}) is blocked "
                f"by policy ({v.decision.regime}); event {v.event_id}\n"
            )
            flow.response = http.Response.make(
                403,
                body.encode(),
                {
                    "Content-Type": "text/plain; charset=utf-8",
                    "X-Egresswatch-Block": connect_block_header(
                        v.match.app, v.decision.regime, v.event_id
                    ),
                    "Connection": "close",
                },
            )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        with self._guard("server_connect"):
            server, client = data.server, data.client
            if server.address is None:
                return
            name = server.address[0]
            if isinstance(name, str):
                why = refusal_reason(name)
                if why is not None:
                    server.error = f"egresswatch: refused destination name: {why}"
                    if self.metrics is not None:
                        self.metrics.invalid_name(self._mode_signal(client) or Signal.CONNECT)
                    return
            if client.id in self._refuse:
                server.error = "egresswatch: blocked by policy"
                return
            signal = self._mode_signal(client)
            if signal is None:
                return
            if signal is Signal.IP and hostnames.parse_ip(str(name)) is None:
                return
            v = self._observe(str(name), signal, client)
            if v is not None and v.blocked:
                self._refuse.add(client.id)
                server.error = (
                    f"egresswatch: {v.match.app} blocked by policy ({v.decision.regime}); "
                    f"event {v.event_id}"
                )

    @staticmethod
    def _mode_signal(client: Client) -> Signal | None:
        mode = client.proxy_mode.type_name
        if mode == "socks5":
            return Signal.SOCKS5
        if mode in _TRANSPARENT_MODES:
            return Signal.IP
        return None  # regular: counted in http_connect / requestheaders; upstream: the proxy

    def next_layer(self, nextlayer: proxy_layer.NextLayer) -> None:
        """Pass-through decided before mitmproxy builds TLS or QUIC layers.

        Script addons see ``next_layer`` before mitmproxy's own next-layer addon, so a
        connection that egresswatch would pass through anyway can get its raw relay here, the
        way ``--ignore-hosts`` does it, instead of after ``tls_clienthello``:

        - TLS over TCP (``egresswatch_decrypt=off``, or ``blocked`` for names not blocked): the
          SNI is read from the ClientHello already buffered, counted, and the connection goes
          to a raw TCP relay. mitmproxy then builds no TLS layers and runs no ``tls_clienthello``
          for it, which is most of the cost of reading SNI (``bench/proxy.py``: the ``hook``
          config). Blocked names, block pages, decryption and a ClientHello that is not complete
          yet take the ``tls_clienthello`` path as before.
        - QUIC (transparent-type modes): mitmproxy 12.3.1 cannot pass a QUIC connection through
          once its QUIC layers run: ``ignore_connection`` in ``tls_clienthello`` stalls it for
          good (mitmproxy #8338). So the SNI is read from the Initial datagrams here (collected
          by :class:`_QuicHello` when the ClientHello spans several), counted, and the flow goes
          to a raw UDP relay: untouched when monitored, refused at ``server_connect`` (nothing
          reaches the server) when blocked. With ``egresswatch_decrypt=all`` a flow that is not
          blocked goes to mitmproxy's QUIC interception.

        The proxy's own connections in regular, upstream and reverse modes (the explicit proxy
        protocol, an HTTPS proxy's TLS, a reverse proxy's TLS) are left to mitmproxy.
        """
        if nextlayer.layer is not None:
            return
        context = nextlayer.context
        client = context.client
        mode = client.proxy_mode.type_name
        if mode == "reverse" or (len(context.layers) <= 1 and mode in _PROXY_MODES):
            return
        with self._guard("next_layer"):
            if client.transport_protocol == "tcp":
                self._tls_passthrough(nextlayer, context)
                return
            if mode not in _TRANSPARENT_MODES:
                return
            datagrams = _client_datagrams(context, nextlayer.events)
            if not datagrams or not datagrams[0] or not datagrams[0][0] & 0x80:
                return  # no QUIC long header: not a QUIC Initial
            try:
                hello = quic_parse_client_hello_from_datagrams(datagrams)
            except Exception:  # not QUIC after all, or a broken Initial: mitmproxy decides
                return
            if hello is None:
                nextlayer.layer = _QuicHello(context, self._quic_layer)
            else:
                nextlayer.layer = self._quic_layer(context, hello)

    def _tls_passthrough(self, nextlayer: proxy_layer.NextLayer, context: Context) -> None:
        if self._decrypt == "all" or context.client.id in self._block_page:
            return
        data = b"".join(_client_datagrams(context, nextlayer.events))
        if not data or data[0] != 0x16:  # not a TLS handshake record
            return
        try:
            hello = parse_client_hello(data)
        except Exception:  # not a ClientHello: mitmproxy decides
            return
        if hello is None:
            return  # incomplete: tls_clienthello will see the whole of it
        v = self._observe(hello.sni, Signal.SNI, context.client)
        if v is not None and v.blocked:
            # tls_clienthello blocks it; it finds this verdict (one hit) and counts no second
            # inspection of the same name.
            self._sni_inspected.add(context.client.id)
            return
        nextlayer.layer = proxy_layers.TCPLayer(context, ignore=True)

    def _quic_layer(self, context: Context, hello: tls.ClientHello | None) -> proxy_layer.Layer:
        """The layer for a QUIC flow once its ClientHello is known (None: it never parsed)."""
        if hello is None:
            return _mitmproxy_quic(context)
        v = self._observe(hello.sni, Signal.QUIC, context.client)
        if v is not None and v.blocked:
            self._refuse.add(context.client.id)
        elif self._decrypt == "all" and verifiable_sni(hello.sni):
            return _mitmproxy_quic(context)
        return proxy_layers.UDPLayer(context, ignore=True)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        with self._guard("tls_clienthello"):
            client = data.context.client
            sni = data.client_hello.sni
            quic = client.transport_protocol == "udp"
            seen = client.id in self._sni_inspected
            self._sni_inspected.discard(client.id)
            v = self._observe(sni, Signal.QUIC if quic else Signal.SNI, client, inspected=not seen)
            page = self._block_page.get(client.id)
            blocked = v if v is not None and v.blocked else page
            verifiable = verifiable_sni(sni)
            if blocked is not None:
                if quic or self._decrypt == "off" or not verifiable:
                    data.ignore_connection = True
                    self._close_passthrough(client, data.context.server)
                    return
                # Intercept to serve the block page; never open the upstream connection.
                self._block_page[client.id] = blocked
                self._refuse.add(client.id)
                return
            if self._decrypt != "all" or not verifiable:
                data.ignore_connection = True

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        with self._guard("requestheaders"):
            if flow.response is not None or flow.error is not None:
                return
            req = flow.request
            if req.method == "CONNECT":
                return
            host, websocket = _host_and_upgrade(req)
            signal = Signal.WEBSOCKET if websocket else Signal.HTTP_HOST
            c = flow.client_conn
            cid = c.id
            # Plain-HTTP proxy requests (regular/upstream mode, no TLS, no tunnel attributed at
            # connection level) count one by one; on any other connection (decrypted TLS,
            # transparent and SOCKS modes, an attributed tunnel) an app counts once.
            dedupe = (
                c.tls
                or cid in self._conn_apps
                or cid in self._block_page
                or c.proxy_mode.type_name not in _PROXY_MODES
            )
            v = self._observe(host or req.host, signal, c, self._user_of(flow), dedupe=dedupe)
            if v is None or not v.blocked:
                v = self._block_page.get(cid)
                if v is None:
                    return
            body, ctype = block_page(
                app=v.match.app,
                app_name=self._app_name(v.match.app),
                regime=v.decision.regime,
                contact=(self.state.policy.contact or "") if self.state else "",
                event_id=v.event_id,
                host=req.pretty_host,
                as_json=prefers_json(req.headers.get("accept", "")),
            )
            flow.response = http.Response.make(
                403,
                body,
                {
                    "Content-Type": ctype,
                    "Cache-Control": "no-store",
                    "X-Egresswatch-Block": connect_block_header(
                        v.match.app, v.decision.regime, v.event_id
                    ),
                },
            )

    def dns_request(self, flow: dns.DNSFlow) -> None:
        with self._guard("dns_request"):
            if flow.response is not None or not flow.request.questions:
                return
            q = flow.request.questions[0]
            v = self._observe(q.name, Signal.DNS, flow.client_conn, dedupe=False)
            if v is None or not v.blocked:
                return
            if self._dns_block == "refused":
                flow.response = flow.request.fail(response_codes.REFUSED)
            elif self._dns_block == "null":
                answers: list[dns.ResourceRecord] = []
                if q.type == dns_types.A:
                    answers.append(dns.ResourceRecord.A(q.name, IPv4Address("0.0.0.0")))
                elif q.type == dns_types.AAAA:
                    answers.append(dns.ResourceRecord.AAAA(q.name, IPv6Address("::")))
                flow.response = flow.request.succeed(answers)
            else:
                flow.response = flow.request.fail(response_codes.NXDOMAIN)

    @staticmethod
    def _user_of(flow: http.HTTPFlow) -> str | None:
        auth = flow.metadata.get("proxyauth")
        if isinstance(auth, tuple | list) and auth and isinstance(auth[0], str):
            return auth[0]  # never the password (auth[1])
        return None
