"""Hooks -> observation: a name is seen, matched, decided, counted and recorded.

:class:`Observer` is the one path every signal takes (``observe``), with the per-connection state
(one :class:`ConnState` per client connection, dropped when the client disconnects).
:class:`Observe` is the addon holding the hooks that read a name from a request, a CONNECT, a
SOCKS/transparent connect or a DNS query; ``layers.PassThrough`` holds the TLS/QUIC ones.

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

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import NamedTuple

from mitmproxy import dns
from mitmproxy import http
from mitmproxy.connection import Client
from mitmproxy.proxy import server_hooks

from egresswatch import hostnames
from egresswatch.candidates import Candidates
from egresswatch.catalogue_model import DomainRule
from egresswatch.categories import HTTPDNS_TAG
from egresswatch.events import Action
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.events import Signal
from egresswatch.events import new_event_id
from egresswatch.identity import ClientIdentity
from egresswatch.matcher import Match
from egresswatch.metrics import Hook
from egresswatch.metrics import Metrics
from egresswatch.policy import Decision
from egresswatch.proxy import answers
from egresswatch.proxy import evasion
from egresswatch.proxy.names import refusal_reason
from egresswatch.proxy.state import State
from egresswatch.timeutil import from_unix

__all__ = [
    "Stopping",
    "PROXY_MODES",
    "TRANSPARENT_MODES",
    "ConnState",
    "Observe",
    "Observer",
    "Settings",
    "Verdict",
    "host_and_upgrade",
]

logger = logging.getLogger("egresswatch")

#: Modes where ``server_connect`` carries the client's own destination (an IP literal).
TRANSPARENT_MODES = frozenset({"transparent", "wireguard", "local", "tun", "osproxy"})
#: Modes that take plain-HTTP proxy requests (absolute-form), each counted on its own.
PROXY_MODES = frozenset({"regular", "upstream"})


class Verdict(NamedTuple):
    match: Match
    decision: Decision
    event_id: str

    @property
    def blocked(self) -> bool:
        return self.decision.action == Action.BLOCKED


@dataclass(slots=True)
class ConnState:
    """What egresswatch remembers about one client connection, until it disconnects."""

    #: Apps already counted on this connection (deduplicated signals), with their verdicts.
    apps: dict[str, Verdict] = field(default_factory=dict)
    #: The proxy-auth user of the connection's CONNECT, for later signals on it.
    user: str | None = None
    #: Refuse the upstream connection in ``server_connect`` (a block already decided).
    refuse: bool = False
    #: The verdict whose block page is served inside this (intercepted) connection.
    block_page: Verdict | None = None
    #: ``next_layer`` already counted this connection's SNI as inspected.
    sni_counted: bool = False
    #: The client's stored identity, computed once (``identity_known``).
    identity: str | None = None
    identity_known: bool = False


@dataclass(slots=True)
class Settings:
    """Option values the hooks read (set by ``EgressWatch.configure``)."""

    decrypt: str = "off"
    dns_block: str = "nxdomain"
    instance: str = field(default_factory=socket.gethostname)
    identity: ClientIdentity = field(default_factory=lambda: ClientIdentity("address", None))


class Stopping(Exception):
    """The proxy is stopping: the event writer no longer accepts events, so a designated app's
    connection gets no answer (no decision is made that the store would not hold); the hook
    kills the flow or refuses the connection instead."""


class _Guard:
    """No input may raise out of a hook: log and count instead."""

    __slots__ = ("hook", "observer")

    def __init__(self, observer: Observer, hook: str) -> None:
        self.observer = observer
        self.hook = hook

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            return False
        logger.error("egresswatch: unexpected error in %s", self.hook, exc_info=(exc_type, exc, tb))  # type: ignore[arg-type]
        metrics = self.observer.metrics
        if metrics is not None:
            try:
                metrics.hook_error(self.hook)
            except Exception:  # pragma: no cover - never let the counter itself raise
                pass
        return True


class Observer:
    """Match, decide, count and record one name; the per-connection state of every client."""

    def __init__(self, clock: Callable[[], float], emit: Callable[[Event], None]) -> None:
        self.clock = clock
        self.emit = emit
        self.settings = Settings()
        #: Set on the event loop just before the writer closes (``EgressWatch.done``): from then
        #: on a designated app is refused without an answer (:class:`Stopping`), so every answer
        #: given carries an event the writer accepted.
        self.stopping = False
        self.state: State | None = None
        self.metrics: Metrics | None = None
        self._conns: dict[str, ConnState] = {}
        self._guards: dict[str, _Guard] = {}
        #: Attributes a connection without a usable name to an address a designated name
        #: resolved to (``DnsWatch.correlate``: address, client, why); None: no DNS watch.
        self.correlator: Callable[[object, Client, str], Verdict | None] | None = None
        #: Whether DNS answers advertised an ECH configuration for a name (``DnsWatch``).
        self.ech_advertised: Callable[[str], bool] = _never
        #: Discovery candidates (``proxy/discovery.py``): each hit and each name that matches
        #: nothing is noted under an opaque per-client key (follows-a-hit evidence).
        self.candidates: Candidates | None = None

    # -- per-connection state ---------------------------------------------------------------

    def connection(self, client: Client) -> ConnState | None:
        """The state kept for ``client``'s connection (None: nothing kept, or disconnected)."""
        return self._conns.get(client.id)

    def conn_state(self, client: Client) -> ConnState:
        """The state of ``client``'s connection, created on first use."""
        conn = self._conns.get(client.id)
        if conn is None:
            conn = self._conns[client.id] = ConnState()
        return conn

    def forget(self, client: Client) -> None:
        self._conns.pop(client.id, None)

    def forget_identities(self) -> None:
        """The identity setting changed: identities computed under the old one are recomputed."""
        for conn in self._conns.values():
            conn.identity, conn.identity_known = None, False

    # -- helpers the hooks share ------------------------------------------------------------

    def guard(self, hook: str) -> _Guard:
        """The context manager around a hook's body (reused: hooks run for every connection,
        so this must cost next to nothing)."""
        guard = self._guards.get(hook)
        if guard is None:
            guard = self._guards[hook] = _Guard(self, hook)
        return guard

    def app_name(self, app: str) -> str:
        st = self.state
        a = st.catalogue.apps.get(app) if st else None
        return a.name if a is not None else app

    def contact(self) -> str:
        return (self.state.policy.contact or "") if self.state else ""

    # -- the observation --------------------------------------------------------------------

    def observe(
        self,
        raw: str | None,
        signal: Signal,
        client: Client,
        user: str | None = None,
        *,
        dedupe: bool = True,
        inspected: bool = True,
        port: int | None = None,
        detail: dict[str, object] | None = None,
    ) -> Verdict | None:
        """Match one destination name, decide, count and record. None: not a designated app.

        ``dedupe``: an app counts once per connection (the first verdict is returned again).
        ``inspected=False``: the name was already counted in ``egresswatch_inspected_total``.
        A name no app matches may still be a public encrypted-DNS resolver (``port``: the
        destination port, which decides for an address; ``proxy/evasion.py``). ``detail``
        goes into the event (a CNAME chain, a correlated name)."""
        st = self.state
        m = self.metrics
        if st is None or m is None or not raw:
            return None
        if inspected:
            m.inspected(signal)
        # The raw name goes to Matcher.match, the path bench/matcher.py measures: one call into
        # the native table for a plain ASCII name. It returns None for a name normalise_host
        # rejects, so only a miss is normalised again, to count the invalid ones.
        match = st.matcher.match(raw)
        if match is None:
            if hostnames.normalise_host(raw) is None:
                m.invalid_name(signal)
                return None
            cands = self.candidates
            if cands is not None:
                addr = client.peername
                # One dict lookup unless this client hit a designated app lately.
                if addr and (key := hash(addr[0])) in cands.recent:
                    cands.note_unmatched(key, raw)
            if st.categories.resolvers:
                return evasion.encrypted_dns(self, st, raw, signal, client, port, user)
            return None
        conn = self._conns.get(client.id)
        if conn is not None:
            user = user or conn.user
            if dedupe:
                seen = conn.apps.get(match.app)
                if seen is not None:
                    return seen
        if self.stopping:
            m.refused_stopping(signal)
            raise Stopping(match.app)
        peer = client.peername[0] if client.peername else None
        client_ip = str(peer) if peer is not None else None
        now = self.clock()
        decision = st.policy.decide(match, client_ip, user, from_unix(now))
        if decision is None:
            return None
        verdict = Verdict(match, decision, new_event_id())
        if conn is None:
            conn = self.conn_state(client)
        if dedupe:
            conn.apps[match.app] = verdict
        m.hit(
            match.app,
            decision.regime,
            decision.action,
            signal,
            decision.department,
            verdict.event_id,
            now,
        )
        rule = match.rule
        if rule.__class__ is DomainRule and HTTPDNS_TAG in rule.tags:
            m.httpdns(match.app, decision.action)
            detail = {**evasion.HTTPDNS_DETAIL, **(detail or {})}
        if not conn.identity_known:
            conn.identity = self.settings.identity.of(client_ip) if client_ip else None
            conn.identity_known = True
        cands = self.candidates
        if cands is not None and peer is not None:
            cands.note_hit(hash(peer), match.app)  # the process-salted hash: an opaque key
        self.emit(
            Event(
                ts=now,
                kind=EventKind.HIT,
                instance=self.settings.instance,
                event_id=verdict.event_id,
                signal=signal,
                host=match.host,
                app=match.app,
                regimes=tuple(match.regimes),
                action=decision.action,
                rule=match.rule.domain,
                exception_id=decision.exception_id,
                client=conn.identity,
                user=user,
                department=decision.department,
                catalogue_version=st.catalogue.version,
                policy_version=st.policy.version,
                detail=detail,
                decided_by=decision.decided_by,
                decided_id=decision.decided_id,
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


def _never(_name: str) -> bool:
    return False


def host_and_upgrade(req: http.Request) -> tuple[str | None, bool]:
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


def mode_signal(client: Client) -> Signal | None:
    """The signal ``server_connect`` reads in ``client``'s proxy mode (None: none there)."""
    mode = client.proxy_mode.type_name
    if mode == "socks5":
        return Signal.SOCKS5
    if mode in TRANSPARENT_MODES:
        return Signal.IP
    return None  # regular: counted in http_connect / requestheaders; upstream: the proxy


def user_of(flow: http.HTTPFlow) -> str | None:
    """The proxy-auth user name of a flow (never the password)."""
    auth = flow.metadata.get("proxyauth")
    if isinstance(auth, tuple | list) and auth and isinstance(auth[0], str):
        return auth[0]  # never the password (auth[1])
    return None


class Observe:
    """The addon holding the hooks that read a name from HTTP, CONNECT, connects and DNS."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def client_disconnected(self, client: Client) -> None:
        self.observer.forget(client)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        obs = self.observer
        with obs.guard(Hook.HTTP_CONNECT):
            if flow.response is not None or flow.error is not None:
                return
            user = user_of(flow)
            if user:
                obs.conn_state(flow.client_conn).user = user
            host = flow.request.host
            try:
                v = obs.observe(
                    host, Signal.CONNECT, flow.client_conn, user, port=flow.request.port
                )
                if (
                    v is None
                    and obs.correlator is not None
                    and hostnames.parse_ip(host) is not None
                ):
                    v = obs.correlator(host, flow.client_conn, "IP-literal CONNECT")
            except Stopping:
                flow.kill()  # type: ignore[no-untyped-call]
                return
            if v is None or not v.blocked:
                return
            if obs.settings.decrypt != "off":
                # Open the tunnel without an upstream connection: the block page is served in it.
                conn = obs.conn_state(flow.client_conn)
                conn.block_page, conn.refuse = v, True
                flow.response = answers.tunnel_opened()
                return
            flow.response = answers.connect_refusal(
                host=flow.request.host,
                app=v.match.app,
                app_name=obs.app_name(v.match.app),
                regime=v.decision.regime,
                event_id=v.event_id,
            )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        obs = self.observer
        with obs.guard(Hook.SERVER_CONNECT):
            server, client = data.server, data.client
            if server.address is None:
                return
            name = server.address[0]
            if isinstance(name, str):
                why = refusal_reason(name)
                if why is not None:
                    server.error = f"egresswatch: refused destination name: {why}"
                    if obs.metrics is not None:
                        obs.metrics.invalid_name(mode_signal(client) or Signal.CONNECT)
                    return
            conn = obs.connection(client)
            if conn is not None and conn.refuse:
                server.error = "egresswatch: blocked by policy"
                return
            signal = mode_signal(client)
            if signal is None:
                return
            if signal is Signal.IP and hostnames.parse_ip(str(name)) is None:
                return
            try:
                v = obs.observe(str(name), signal, client, port=server.address[1])
                if v is None and signal is Signal.SOCKS5 and obs.correlator is not None:
                    if hostnames.parse_ip(str(name)) is not None:
                        v = obs.correlator(name, client, "IP-literal SOCKS5 target")
            except Stopping:
                server.error = "egresswatch: proxy stopping"
                return
            if v is not None and v.blocked:
                obs.conn_state(client).refuse = True
                server.error = (
                    f"egresswatch: {v.match.app} blocked by policy ({v.decision.regime}); "
                    f"event {v.event_id}"
                )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        obs = self.observer
        with obs.guard(Hook.REQUESTHEADERS):
            if flow.response is not None or flow.error is not None:
                return
            req = flow.request
            if req.method == "CONNECT":
                return
            host, websocket = host_and_upgrade(req)
            signal = Signal.WEBSOCKET if websocket else Signal.HTTP_HOST
            c = flow.client_conn
            conn = obs.connection(c)
            # Plain-HTTP proxy requests (regular/upstream mode, no TLS, no tunnel attributed at
            # connection level) count one by one; on any other connection (decrypted TLS,
            # transparent and SOCKS modes, an attributed tunnel) an app counts once.
            dedupe = (
                c.tls
                or (conn is not None and (bool(conn.apps) or conn.block_page is not None))
                or c.proxy_mode.type_name not in PROXY_MODES
            )
            try:
                v = obs.observe(host or req.host, signal, c, user_of(flow), dedupe=dedupe)
            except Stopping:
                flow.kill()  # type: ignore[no-untyped-call]
                return
            if v is None or not v.blocked:
                conn = obs.connection(c)
                v = conn.block_page if conn is not None else None
                if v is None:
                    return
            notice = answers.BlockNotice(
                host=req.pretty_host,
                app=v.match.app,
                app_name=obs.app_name(v.match.app),
                regime=v.decision.regime,
                event_id=v.event_id,
                contact=obs.contact(),
            )
            flow.response = answers.block_response(notice, accept=req.headers.get("accept", ""))

    def dns_request(self, flow: dns.DNSFlow) -> None:
        obs = self.observer
        with obs.guard(Hook.DNS_REQUEST):
            if flow.response is not None or not flow.request.questions:
                return
            q = flow.request.questions[0]
            try:
                v = obs.observe(q.name, Signal.DNS, flow.client_conn, dedupe=False)
            except Stopping:
                flow.kill()  # type: ignore[no-untyped-call]
                return
            if v is None or not v.blocked:
                return
            flow.response = answers.dns_answer(flow.request, obs.settings.dns_block)
