"""``responseheaders``: an ``Alt-Svc`` advertising HTTP/3 for a designated name (signal 6).

Where the proxy decrypts, a server's ``Alt-Svc: h3=":443"`` invites the client to come back
over QUIC, a path the proxy does not decrypt. On a connection that already carries a designated
app's verdict (``ConnState.apps``, set by ``observe`` for the request's name), a response whose
``Alt-Svc`` fields advertise HTTP/3 (``egresswatch.altsvc.examine``) is recorded once per
connection and host: an evasion event (signal ``alt_svc``, no app: ``detail.app``), counted in
``egresswatch_alt_svc_total{app, action}``, decided by the policy's ``alt_svc`` key. Under
``strip`` (action ``blocked``) every such response on the connection loses its HTTP/3
alternatives (the others are kept; a field left empty is dropped); ``dry_run`` records
``would_block`` and leaves the header alone.

Cost: a response on a connection without a designated verdict costs one dictionary lookup (no
header is read); the header is read only on a designated app's connection.
"""

from __future__ import annotations

import dataclasses
import logging

from mitmproxy import http

from egresswatch.altsvc import examine
from egresswatch.events import Signal
from egresswatch.events import new_event_id
from egresswatch.metrics import Hook
from egresswatch.policy import AltSvcMode
from egresswatch.proxy.evasion import evasion_event
from egresswatch.proxy.observe import Observer
from egresswatch.proxy.observe import Verdict
from egresswatch.proxy.observe import host_and_upgrade

__all__ = ["ALT_SVC_KEY", "AltSvcWatch"]

logger = logging.getLogger("egresswatch")

#: Prefix of a connection's ``ConnState.apps`` key for the Alt-Svc verdict of one host.
ALT_SVC_KEY = "alt-svc:"

_EXPLANATION = (
    "HTTP/3 advertisement: {host} invited the client to reconnect over QUIC ({ids}), a path "
    "the proxy does not decrypt"
)


class AltSvcWatch:
    """The addon holding ``responseheaders`` (the Alt-Svc signal)."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        obs = self.observer
        conn = obs.connection(flow.client_conn)
        if conn is None or not conn.apps:
            return  # no designated hit on this connection: nothing to read
        with obs.guard(Hook.RESPONSEHEADERS):
            response, st, m = flow.response, obs.state, obs.metrics
            if response is None or st is None or m is None or st.policy.alt_svc is AltSvcMode.OFF:
                return
            fields = response.headers.get_all("alt-svc")
            if not fields:
                return
            host, _ = host_and_upgrade(flow.request)
            match = st.matcher.match(host or flow.request.host)
            if match is None or match.app not in conn.apps:
                return  # this response's name is not the connection's designated hit
            found = examine(fields)
            if not found.quic:
                return
            key = ALT_SVC_KEY + match.host
            v = conn.apps.get(key)
            if v is None:
                peer = flow.client_conn.peername
                client_ip = str(peer[0]) if peer else None
                decision = st.policy.decide_alt_svc(client_ip)
                if decision is None:
                    return
                v = Verdict(match, decision, new_event_id())
                conn.apps[key] = v
                if not obs.stopping:  # the writer takes no more events: strip, record nothing
                    m.alt_svc(match.app, decision.action)
                    detail: dict[str, object] = {
                        "app": match.app,
                        "advertised": list(found.quic),
                        "stripped": v.blocked,
                        "explanation": _EXPLANATION.format(
                            host=match.host, ids=", ".join(found.quic)
                        ),
                    }
                    if found.malformed:
                        detail["malformed"] = True
                    event = evasion_event(obs, v, Signal.ALT_SVC, client_ip, conn.user, detail)
                    obs.emit(dataclasses.replace(event, decided_by="policy", decided_id="alt_svc"))
            if v.blocked:
                if found.kept:
                    response.headers.set_all("alt-svc", list(found.kept))
                else:
                    del response.headers["alt-svc"]
