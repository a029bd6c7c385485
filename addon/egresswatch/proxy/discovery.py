"""Discovery evidence seen by the proxy, and the one place the candidates are persisted.

:class:`Discovery` holds the :class:`~egresswatch.candidates.Candidates` of the proxy process:

* ``follows_hit``: :meth:`Observer.observe <egresswatch.proxy.observe.Observer.observe>` notes
  each designated hit and each name that matches nothing under an opaque per-client key (the
  process-salted ``hash`` of the client's address, held in memory only);
* ``cname``: ``DnsWatch`` notes the neutral names of a CNAME chain to a designated name;
* ``certificate``: the ``tls_established_server`` hook (mitmproxy decrypting, so it made its own
  TLS connection to the server and holds ``server.certificate_list``) reads the leaf
  certificate of a name (the SNI mitmproxy sent upstream) that matches no catalogue rule, once per name (a bounded memory of the
  names already read): its DNS SANs go through the catalogue's matcher (``*.x`` as ``x``), its
  subject organisation through the apps' ``organisations:`` lists.

A connection passed through (not decrypted) gives no certificate: mitmproxy 12 relays its bytes
without parsing them and calls no hook with the server's handshake, and under TLS 1.3 the
Certificate message is encrypted anyway (docs/attribution.md).

:meth:`Discovery.save` persists a snapshot as a CONFIG event (``detail.kind = "candidates"``)
through the event writer's queue (never blocking): from the heartbeat when evidence arrived since
the last save (the first save at once, then at most every :data:`SAVE_INTERVAL` seconds), and
once more when the proxy stops.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from cryptography import x509
from mitmproxy import tls
from mitmproxy.connection import Server

from egresswatch.candidates import Candidates
from egresswatch.candidates import certificate_apps
from egresswatch.candidates import certificate_names
from egresswatch.candidates import to_detail
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.events import new_event_id
from egresswatch.hostnames import normalise_host
from egresswatch.metrics import Hook
from egresswatch.proxy.observe import Observer
from egresswatch.proxy.state import State

__all__ = ["MAX_CERT_NAMES", "SAVE_INTERVAL", "Discovery"]

#: Seconds between two persisted snapshots of the candidates (the first is saved at once).
SAVE_INTERVAL = 600.0
#: Names whose upstream certificate was already read (each is read once per process).
MAX_CERT_NAMES = 10_000


class Discovery:
    """The proxy's candidates: certificate evidence, the follows-a-hit exclusions, the saves."""

    def __init__(self, observer: Observer, candidates: Candidates) -> None:
        self.observer = observer
        self.candidates = candidates
        candidates.ignore = self._not_a_candidate
        observer.candidates = candidates
        self._cert_seen: OrderedDict[str, None] = OrderedDict()
        self._vendors: tuple[State | None, dict[str, tuple[str, ...]]] = (None, {})
        self._saved_at = -math.inf
        self._saved_noted = 0

    # -- certificate evidence -------------------------------------------------------------------

    def tls_established_server(self, data: tls.TlsData) -> None:
        obs = self.observer
        with obs.guard(Hook.TLS_ESTABLISHED_SERVER):
            st = obs.state
            server = data.conn
            if st is None or not isinstance(server, Server) or not server.certificate_list:
                return
            name = normalise_host(server.sni) if server.sni else None
            if name is None or name in self._cert_seen or st.matcher.match(name) is not None:
                return  # no name asked for (an address is no candidate), seen, or listed
            seen = self._cert_seen
            seen[name] = None
            if len(seen) > MAX_CERT_NAMES:
                seen.popitem(last=False)
            self.note_certificate(st, name, server.certificate_list[0].to_cryptography())

    def note_certificate(self, st: State, name: str, cert: x509.Certificate) -> None:
        """The upstream certificate of ``name`` (unmatched): a candidate for each app it names."""
        sans, orgs = certificate_names(cert)

        def app_of(san: str) -> str | None:
            m = st.matcher.match(san)
            return m.app if m is not None else None

        for app, why in certificate_apps(sans, orgs, app_of, self._organisations(st)).items():
            self.candidates.note_certificate(name, app, why)

    def _organisations(self, st: State) -> dict[str, tuple[str, ...]]:
        """Case-folded organisation -> the apps listing it, for the catalogue in force."""
        cached_for, table = self._vendors
        if cached_for is not st:
            acc: dict[str, list[str]] = {}
            for app in st.catalogue.apps.values():
                for org in app.organisations:
                    acc.setdefault(org.casefold(), []).append(app.id)
            table = {k: tuple(v) for k, v in acc.items()}
            self._vendors = (st, table)
        return table

    def _not_a_candidate(self, name: str) -> bool:
        """A public encrypted-DNS resolver is never a candidate of the app hit before it."""
        st = self.observer.state
        cats = st.categories if st is not None else None
        if cats is None or cats.matcher is None:
            return False
        m = cats.matcher.match(name)
        return m is not None and m.app in cats.resolvers

    # -- persistence ----------------------------------------------------------------------------

    def save(self, now: float, *, final: bool = False) -> bool:
        """Queue a snapshot if evidence arrived since the last one (and, unless ``final``, the
        last is :data:`SAVE_INTERVAL` seconds old). True: a snapshot was queued."""
        cands = self.candidates
        if cands.noted == self._saved_noted:
            return False
        if not final and now - self._saved_at < SAVE_INTERVAL:
            return False
        self._saved_at, self._saved_noted = now, cands.noted
        obs = self.observer
        st = obs.state
        obs.emit(
            Event(
                ts=now,
                kind=EventKind.CONFIG,
                instance=obs.settings.instance,
                event_id=new_event_id(),
                catalogue_version=st.catalogue.version if st else "",
                policy_version=st.policy.version if st else "",
                detail=to_detail(cands.snapshot()),
            )
        )
        return True
