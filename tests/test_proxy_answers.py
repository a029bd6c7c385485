"""``egresswatch.proxy.answers``: what a blocked client is told, as pure functions."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from egresswatch.proxy import answers
from egresswatch.proxy.answers import BlockNotice
from egresswatch.proxy.answers import block_page
from egresswatch.proxy.answers import prefers_json
from mitmproxy import dns
from mitmproxy.test import tutils


@pytest.mark.parametrize(
    ("accept", "json_"),
    [
        ("application/json", True),
        ("application/json, text/html;q=0.5", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("text/html;q=0.2, application/json;q=0.9", True),
        ("*/*", False),
        ("application/json;q=0", False),
        ("", False),
    ],
)
def test_prefers_json(accept: str, json_: bool) -> None:
    assert prefers_json(accept) is json_


def test_block_page_escapes_every_value() -> None:
    hostile = BlockNotice(
        host="h<o>st",
        app="a<b",
        app_name="<script>x</script>",
        regime="r&d",
        event_id="<id>",
        contact='"c" <c@x>',
    )
    body, ctype = block_page(hostile, as_json=False)
    text = body.decode()
    assert ctype.startswith("text/html")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "r&amp;d" in text and "&lt;id&gt;" in text and "&lt;c@x&gt;" in text
    body, ctype = block_page(BlockNotice("h", "a", "A", "r", "e1"), as_json=True)
    assert ctype == "application/json"
    assert json.loads(body)["event_id"] == "e1"


def test_block_response_is_a_403_in_the_preferred_format() -> None:
    blocky = BlockNotice(
        host="blocked.test:8080",
        app="blocky",
        app_name="Blocky <Video>",
        regime="app",
        event_id="ev-1",
        contact="sec@example.org",
    )
    r = answers.block_response(blocky, accept="text/html;q=0.2, application/json;q=0.9")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-egresswatch-block"] == "app=blocky; regime=app; event=ev-1"
    assert json.loads(r.content or b"") == {
        "blocked": True,
        "app": "blocky",
        "app_name": "Blocky <Video>",
        "regime": "app",
        "host": "blocked.test:8080",
        "contact": "sec@example.org",
        "event_id": "ev-1",
    }
    page = answers.block_response(replace(blocky, host="blocked.test", contact=""), accept="")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    text = (page.content or b"").decode()
    assert "Blocky &lt;Video&gt;" in text and "Questions" not in text  # no contact line


def test_connect_refusal_names_host_app_regime_and_event() -> None:
    r = answers.connect_refusal(
        host="blocked.test", app="blocky", app_name="Blocky", regime="app", event_id="ev-2"
    )
    assert r.status_code == 403
    assert r.content == (
        b"egresswatch: blocked.test (Blocky) is blocked by policy (app); event ev-2\n"
    )
    assert r.headers["connection"] == "close"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-egresswatch-block"] == "app=blocky; regime=app; event=ev-2"


def test_tunnel_opened_is_an_empty_200() -> None:
    r = answers.tunnel_opened()
    assert (r.status_code, r.reason, r.content) == (200, "Connection established", b"")


def _query(name: str, qtype: int) -> dns.DNSMessage:
    return tutils.tdnsreq(questions=[dns.Question(name, qtype, dns.classes.IN)])


@pytest.mark.parametrize(
    ("how", "qtype", "rcode", "answer"),
    [
        ("nxdomain", dns.types.A, dns.response_codes.NXDOMAIN, None),
        ("refused", dns.types.AAAA, dns.response_codes.REFUSED, None),
        ("null", dns.types.A, dns.response_codes.NOERROR, "0.0.0.0"),
        ("null", dns.types.AAAA, dns.response_codes.NOERROR, "::"),
        ("null", dns.types.HTTPS, dns.response_codes.NOERROR, None),
    ],
)
def test_dns_answer(how: str, qtype: int, rcode: int, answer: str | None) -> None:
    q = _query("Www.Blocked.Test", qtype)
    r = answers.dns_answer(q, how)
    assert r.response_code == rcode and r.id == q.id and r.query is False
    got = [str(a.ipv4_address) if a.type == dns.types.A else str(a.ipv6_address) for a in r.answers]
    assert got == ([answer] if answer else [])
    assert all(a.name == "Www.Blocked.Test" for a in r.answers)
    assert q.response_code == dns.response_codes.NOERROR and q.answers == []  # not modified
