"""What a blocked client is told: pure functions from a decision to mitmproxy's answer objects.

Nothing here reads options, state or the clock; the hooks in ``observe`` pass every value in.

==============  ==================================================================
answer          to
==============  ==================================================================
``connect_refusal``  a blocked CONNECT (403 + ``X-Egresswatch-Block``, connection closed)
``tunnel_opened``    a blocked CONNECT that gets a block page inside its tunnel (200)
``block_response``   a blocked HTTP request (403 block page, HTML or JSON)
``dns_answer``       a blocked DNS query (NXDOMAIN, REFUSED or 0.0.0.0 / ::)
==============  ==================================================================
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from dataclasses import dataclass
from ipaddress import IPv4Address
from ipaddress import IPv6Address

from mitmproxy import dns
from mitmproxy import http
from mitmproxy.net.dns import response_codes
from mitmproxy.net.dns import types as dns_types

__all__ = [
    "DNS_BLOCK_CHOICES",
    "BlockNotice",
    "block_page",
    "block_response",
    "connect_block_header",
    "connect_refusal",
    "dns_answer",
    "prefers_json",
    "tunnel_opened",
]

#: Answers to a blocked DNS query (the ``egresswatch_dns_block`` option's choices).
DNS_BLOCK_CHOICES = ("nxdomain", "refused", "null")


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
    """The ``X-Egresswatch-Block`` value on every block answer.

    >>> connect_block_header("tiktok", "de-gov", "ev1")
    'app=tiktok; regime=de-gov; event=ev1'
    """
    return f"app={app}; regime={regime}; event={event_id}"


@dataclass(frozen=True, slots=True)
class BlockNotice:
    """What a block page tells the client: the name, its app and the rule that blocked it, the
    event that recorded the block, and whom to ask (may be empty)."""

    host: str
    app: str
    app_name: str
    regime: str
    event_id: str
    contact: str = ""


def block_page(notice: BlockNotice, *, as_json: bool) -> tuple[bytes, str]:
    """Body and content type of the 403 answer; every value HTML-escaped in the HTML variant."""
    if as_json:
        doc = {"blocked": True, **asdict(notice)}
        return json.dumps(doc, sort_keys=True).encode(), "application/json"
    e = html.escape
    n = notice
    contact_line = f"<p>Questions: {e(n.contact)}</p>" if n.contact else ""
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Blocked</title></head><body>\n'
        f"<h1>Access to {e(n.app_name)} is blocked</h1>\n"
        f"<p>{e(n.host)} belongs to <b>{e(n.app_name)}</b> ({e(n.app)}), which the organisation's "
        f"policy blocks under <b>{e(n.regime)}</b>.</p>\n"
        f"{contact_line}\n"
        f"<p>Reference: <code>{e(n.event_id)}</code></p>\n</body></html>\n"
    )
    return page.encode(), "text/html; charset=utf-8"


def block_response(notice: BlockNotice, *, accept: str) -> http.Response:
    """The 403 answer to a blocked HTTP request: a block page in the format ``accept`` prefers."""
    body, ctype = block_page(notice, as_json=prefers_json(accept))
    return http.Response.make(
        403,
        body,
        {
            "Content-Type": ctype,
            "Cache-Control": "no-store",
            "X-Egresswatch-Block": connect_block_header(notice.app, notice.regime, notice.event_id),
        },
    )


def connect_refusal(
    *, host: str, app: str, app_name: str, regime: str, event_id: str
) -> http.Response:
    """The 403 answer to a blocked CONNECT: a one-line reason, no tunnel, connection closed."""
    body = f"egresswatch: {host} ({app_name}) is blocked by policy ({regime}); event {event_id}\n"
    return http.Response.make(
        403,
        body.encode(),
        {
            "Content-Type": "text/plain; charset=utf-8",
            "X-Egresswatch-Block": connect_block_header(app, regime, event_id),
            "Connection": "close",
        },
    )


def tunnel_opened() -> http.Response:
    """The 200 that opens a blocked CONNECT's tunnel without an upstream connection (a response
    set in ``http_connect`` skips the eager connect), so that a block page can be served in it."""
    response = http.Response.make(200, b"")
    response.reason = "Connection established"
    return response


def dns_answer(request: dns.DNSMessage, how: str) -> dns.DNSMessage:
    """The answer to a blocked query: ``how`` is one of :data:`DNS_BLOCK_CHOICES`.

    ``null`` answers A with 0.0.0.0, AAAA with ::, and every other type with no records.
    """
    if how == "refused":
        return request.fail(response_codes.REFUSED)
    if how != "null":
        return request.fail(response_codes.NXDOMAIN)
    answers: list[dns.ResourceRecord] = []
    q = request.questions[0]
    if q.type == dns_types.A:
        answers.append(dns.ResourceRecord.A(q.name, IPv4Address("0.0.0.0")))
    elif q.type == dns_types.AAAA:
        answers.append(dns.ResourceRecord.AAAA(q.name, IPv6Address("::")))
    return request.succeed(answers)
