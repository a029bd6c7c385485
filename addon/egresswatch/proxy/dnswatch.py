"""DNS answers: CNAME chains to designated names, and the addresses a later connection uses.

:class:`DnsWatch` is the piece holding ``dns_response`` (dns mode, and transparent/WireGuard
where DNS passes through the proxy). For each answer:

* its CNAME chain (:func:`egresswatch.resolutions.follow_chain`, loop- and length-safe) is
  matched name by name: a neutral question whose chain reaches a designated name is a hit of its
  own signal (``cname``, the chain in the event), decided like a direct hit; a block answers
  NXDOMAIN (``egresswatch_dns_block``) instead of the upstream's answer. So is a question whose
  answer addresses fall in a designated range (``detail.via = "range"``);
* the final addresses of a designated name (asked directly or through a chain) are remembered in
  a bounded :class:`~egresswatch.resolutions.ResolutionTable` (``egresswatch_dns_resolutions``
  entries, TTL-aware, least recently used out first). :meth:`DnsWatch.correlate` attributes a
  later connection that carries no usable name (an IP-literal CONNECT or SOCKS5 target, TLS or
  QUIC without SNI, a hidden ECH name) to the app, signal ``dns_correlated``, the resolved name
  and the chain in the event;
* names with an HTTPS record carrying an ``ech`` parameter are remembered (bounded) as
  advertising ECH, one of the evidences ``ech.classify`` takes;
* neutral names of a chain that reaches a designated name are discovery candidates
  (:class:`egresswatch.candidates.Candidates`, evidence ``cname``; persisted by
  ``proxy/discovery.py``).

Hostile answers (forged records off the chain, loops, long chains, huge answer sets, records
that do not parse) cost at most :data:`MAX_RECORDS` records each and never raise out of the hook.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Callable

from mitmproxy import dns
from mitmproxy.connection import Client
from mitmproxy.net.dns import response_codes
from mitmproxy.net.dns import types as dns_types

from egresswatch.candidates import Candidates
from egresswatch.events import Signal
from egresswatch.metrics import Hook
from egresswatch.proxy import answers as dns_answers
from egresswatch.proxy.observe import Observer
from egresswatch.proxy.observe import Stopping
from egresswatch.proxy.observe import Verdict
from egresswatch.resolutions import Answer
from egresswatch.resolutions import Resolution
from egresswatch.resolutions import ResolutionTable
from egresswatch.resolutions import follow_chain

__all__ = ["MAX_ECH_NAMES", "MAX_RECORDS", "DnsWatch", "records"]

#: Answer records read per response (a larger set is cut: no real answer comes near it).
MAX_RECORDS = 64
#: Names remembered as advertising ECH in an HTTPS record.
MAX_ECH_NAMES = 10_000
_TYPES = {dns_types.A: "A", dns_types.AAAA: "AAAA", dns_types.CNAME: "CNAME"}
_HTTPS = dns_types.HTTPS
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})


def records(msg: dns.DNSMessage) -> tuple[list[Answer], list[str]]:
    """The A/AAAA/CNAME answers of ``msg`` (at most :data:`MAX_RECORDS`), and the owners of
    HTTPS records with an ``ech`` parameter. Records whose data do not parse are skipped."""
    out: list[Answer] = []
    ech: list[str] = []
    for rr in msg.answers[:MAX_RECORDS]:
        kind = _TYPES.get(rr.type)
        try:
            if kind == "A":
                value = socket.inet_ntop(socket.AF_INET, rr.data)
            elif kind == "AAAA":
                value = str(rr.ipv6_address)
            elif kind == "CNAME":
                value = rr.domain_name
            elif rr.type == _HTTPS:
                if rr.https_ech is not None:
                    ech.append(rr.name.rstrip(".").lower())
                continue
            else:
                continue
        except Exception:  # forged or truncated record data
            continue
        out.append(Answer(rr.name, kind, value, rr.ttl))
    return out, ech


class DnsWatch:
    """The ``dns_response`` hook, the correlation table and the ECH-advertised names."""

    def __init__(
        self,
        observer: Observer,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        candidates: Candidates | None = None,
    ) -> None:
        self.observer = observer
        self.table = ResolutionTable(max_entries, clock=clock)
        self.candidates = candidates
        self._ech: OrderedDict[str, None] = OrderedDict()
        self._evictions_reported = 0

    def resize(self, max_entries: int) -> None:
        """A new table size (the option changed): entries are dropped, not migrated."""
        if max_entries != self.table.max_entries:
            self.table = ResolutionTable(max_entries, clock=self.table._clock)
            self._evictions_reported = 0

    def advertised(self, name: str) -> bool:
        """Whether DNS answers seen by the proxy advertised an ECH configuration for ``name``."""
        return name.rstrip(".").lower() in self._ech

    # -- the hook -----------------------------------------------------------------------------

    def dns_response(self, flow: dns.DNSFlow) -> None:
        obs = self.observer
        with obs.guard(Hook.DNS_RESPONSE):
            try:
                self._response(flow)
            except Stopping:
                # The proxy is stopping: a designated answer is not passed on unrecorded.
                flow.kill()  # type: ignore[no-untyped-call]

    def _response(self, flow: dns.DNSFlow) -> None:
        obs = self.observer
        resp = flow.response
        st = obs.state
        if (
            st is None
            or resp is None
            or resp.response_code != response_codes.NOERROR
            or not flow.request.questions
        ):
            return
        question = flow.request.questions[0].name
        answers, ech = records(resp)
        for name in ech:
            self._remember_ech(name)
        if not answers:
            return
        chain = follow_chain(question, answers)
        names = chain.names
        # The question itself was matched (and counted) in dns_request.
        found = st.matcher.match(names[0])
        designated = names[0] if found is not None else None
        verdict: Verdict | None = None
        if found is None:
            for name in names[1:]:
                if st.matcher.match(name) is not None:
                    designated = name
                    detail: dict[str, object] = {
                        "asked": names[0],
                        "chain": list(names),
                        "via": "cname",
                    }
                    if chain.broken:
                        detail["broken"] = chain.broken
                    verdict = obs.observe(
                        name, Signal.CNAME, flow.client_conn, dedupe=False, detail=detail
                    )
                    if self.candidates is not None and verdict is not None:
                        for neutral in names[: names.index(name)]:
                            self.candidates.note_cname(neutral, verdict.match.app, names)
                    break
        if designated is None:
            for address, _ttl in chain.addresses:
                if st.matcher.match(address) is not None:
                    designated = address
                    detail = {"asked": names[0], "address": address, "via": "range"}
                    verdict = obs.observe(
                        address, Signal.CNAME, flow.client_conn, dedupe=False, detail=detail
                    )
                    break
        if verdict is not None and verdict.blocked:
            flow.response = dns_answers.dns_answer(flow.request, obs.settings.dns_block)
            return
        if designated is None:
            return
        app = verdict.match.app if verdict is not None else found.app if found else None
        if app is None:
            return  # the policy is off for it: nothing recorded, nothing remembered
        resolution = Resolution(app, designated, names)
        for address, ttl in chain.addresses:
            if address not in _UNSPECIFIED:  # a block answer's null address
                self.table.remember(address, resolution, ttl)
        self._report()

    def _remember_ech(self, name: str) -> None:
        seen = self._ech
        seen[name] = None
        seen.move_to_end(name)
        while len(seen) > MAX_ECH_NAMES:
            seen.popitem(last=False)

    def _report(self) -> None:
        m = self.observer.metrics
        if m is None:
            return
        evictions = self.table.evictions
        m.resolutions(len(self.table), evictions - self._evictions_reported)
        self._evictions_reported = evictions

    # -- correlation --------------------------------------------------------------------------

    def correlate(self, address: object, client: Client, why: str) -> Verdict | None:
        """Attribute a connection without a usable name to ``address``'s resolved name (None:
        the address was not resolved from a designated name lately)."""
        try:
            ip = ipaddress.ip_address(str(address)).compressed
        except ValueError:
            return None
        res = self.table.lookup(ip)
        if res is None:
            return None
        detail: dict[str, object] = {
            "address": ip,
            "resolved_name": res.name,
            "chain": list(res.chain),
            "why": why,
        }
        return self.observer.observe(
            res.name, Signal.DNS_CORRELATED, client, detail=detail, inspected=False
        )
