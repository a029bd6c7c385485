"""``responseheaders``: Alt-Svc advertising HTTP/3 for a designated name (proxy/altsvc.py)."""

from __future__ import annotations

from egresswatch.events import Signal
from mitmproxy import http
from mitmproxy.connection import Client

from tests.plugins.addon import POLICY
from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import request_flow

H3 = 'h3=":443"; ma=86400, h2=":443"'


def _policy(env: Env, extra: str) -> None:
    env.policy.write_text(POLICY + extra)
    env.addon.reload()


def _exchange(env: Env, host: str, c: Client, *alt_svc: str) -> http.HTTPFlow:
    """One request through ``requestheaders`` and its response through ``responseheaders``."""
    f = request_flow(host, c)
    env.observe.requestheaders(f)
    f.response = http.Response.make(200, b"ok", {"content-type": "text/plain"})
    for value in alt_svc:
        f.response.headers.add("alt-svc", value)
    env.addon.responseheaders(f)
    return f


def _count(env: Env, app: str, action: str) -> float:
    v = env.registry.get_sample_value("egresswatch_alt_svc_total", {"app": app, "action": action})
    assert v is not None, "series not pre-initialised"
    return v


def _alt_events(env: Env) -> list[object]:
    return [e for e in env.events() if e.signal == Signal.ALT_SVC]


def test_series_are_pre_initialised_per_app(env: Env) -> None:
    for app in ("blocky", "watchy", "offy"):
        for action in ("monitor", "blocked", "would_block", "exempted"):
            assert _count(env, app, action) == 0


def test_count_mode_keeps_the_header_and_counts_once_per_connection_and_host(env: Env) -> None:
    c = client("transparent")
    for _ in range(5):  # a chatty app: one event for the connection and host
        f = _exchange(env, "www.watched.test", c, H3)
        assert f.response is not None and f.response.headers.get_all("alt-svc") == [H3]
    assert _count(env, "watchy", "monitor") == 1
    (ev,) = [e for e in env.events() if e.signal == "alt_svc"]
    assert ev.app is None and ev.host == "www.watched.test" and ev.action == "monitor"
    assert ev.decided_by == "policy" and ev.decided_id == "alt_svc"
    assert ev.detail is not None and ev.detail["app"] == "watchy"
    assert ev.detail["advertised"] == ["h3"] and ev.detail["stripped"] is False
    # the app's own hit is still counted once (the advertisement is not a second hit)
    assert env.hits("watchy", "monitor", "http_host", "default") == 1
    # another host of the same app on the connection is recorded on its own
    _exchange(env, "cdn.watched.test", c, 'h3-29=":443"')
    assert _count(env, "watchy", "monitor") == 2
    # a new connection records again
    _exchange(env, "www.watched.test", client("transparent"), H3)
    assert _count(env, "watchy", "monitor") == 3


def test_strip_mode_removes_h3_keeps_h2(env: Env) -> None:
    _policy(env, "alt_svc: strip\n")
    c = client("transparent")
    f = _exchange(env, "www.watched.test", c, H3, 'quic=":443"; v="46"')
    assert f.response is not None and f.response.headers.get_all("alt-svc") == ['h2=":443"']
    f2 = _exchange(env, "www.watched.test", c, 'h3=":443"')  # stripped again, not recounted
    assert f2.response is not None and "alt-svc" not in f2.response.headers
    assert _count(env, "watchy", "blocked") == 1 and _count(env, "watchy", "monitor") == 0
    (ev,) = _alt_events(env)
    assert ev.action == "blocked"  # type: ignore[attr-defined]
    assert ev.detail["stripped"] is True  # type: ignore[attr-defined]
    assert ev.detail["advertised"] == ["h3", "quic"]  # type: ignore[attr-defined]


def test_dry_run_records_would_block_and_keeps_the_header(env: Env) -> None:
    _policy(env, "alt_svc: strip\ndry_run: true\n")
    f = _exchange(env, "www.watched.test", client("transparent"), H3)
    assert f.response is not None and f.response.headers.get_all("alt-svc") == [H3]
    assert _count(env, "watchy", "would_block") == 1


def test_off_ignores_it(env: Env) -> None:
    _policy(env, "alt_svc: 'off'\n")
    f = _exchange(env, "www.watched.test", client("transparent"), H3)
    assert f.response is not None and f.response.headers.get_all("alt-svc") == [H3]
    assert _alt_events(env) == [] and _count(env, "watchy", "monitor") == 0


def test_not_a_designated_hit_is_left_alone(env: Env) -> None:
    _policy(env, "alt_svc: strip\n")
    c = client("transparent")
    f = _exchange(env, "www.example.org", c, H3)
    assert f.response is not None and f.response.headers.get_all("alt-svc") == [H3]
    assert env.conn(c) is None  # nothing was kept for this connection
    # an app the policy switches off has no verdict either
    f = _exchange(env, "www.off.test", client("transparent"), H3)
    assert f.response is not None and f.response.headers.get_all("alt-svc") == [H3]
    # a neutral host on a connection that has a designated verdict
    _exchange(env, "www.watched.test", c, 'h2=":443"')  # no h3: nothing recorded
    f = _exchange(env, "neutral.example.org", c, H3)
    assert f.response is not None and f.response.headers.get_all("alt-svc") == [H3]
    assert _alt_events(env) == []


def test_no_quic_and_clear_are_not_advertisements(env: Env) -> None:
    _policy(env, "alt_svc: strip\n")
    c = client("transparent")
    f = _exchange(env, "www.watched.test", c, 'h2=":443"; ma=60', "clear")
    assert f.response is not None
    assert f.response.headers.get_all("alt-svc") == ['h2=":443"; ma=60', "clear"]
    assert _alt_events(env) == []


def test_hostile_headers_raise_nothing(env: Env) -> None:
    _policy(env, "alt_svc: strip\n")
    c = client("transparent")
    hostile = [
        'h3=":443' + "x" * 100_000,
        ", ".join(f'h3-{i}=":443"' for i in range(5000)),
        '\x00h3=":443"\xff',
        'h3="\\',
    ]
    for value in hostile:  # each names h3: dropped whole, the h2 field kept
        f = _exchange(env, "www.watched.test", c, value, 'h2=":443"')
        assert f.response is not None
        assert f.response.headers.get_all("alt-svc") == ['h2=":443"'], value[:20]
    for value in ('"""', ",,,", "h2"):  # malformed, names no QUIC protocol: left as it is
        f = _exchange(env, "www.watched.test", c, value)
        assert f.response is not None and f.response.headers.get_all("alt-svc") == [value]
    errors = env.registry.get_sample_value(
        "egresswatch_hook_errors_total", {"hook": "responseheaders"}
    )
    assert errors == 0
    (ev,) = _alt_events(env)
    assert ev.detail["malformed"] is True  # type: ignore[attr-defined]


def test_stopping_strips_without_an_event(env: Env) -> None:
    _policy(env, "alt_svc: strip\n")
    c = client("transparent")
    _exchange(env, "www.watched.test", c, 'h2=":443"')  # the app's verdict, before stopping
    env.observer.stopping = True
    try:
        f = _exchange(env, "www.watched.test", c, H3)
    finally:
        env.observer.stopping = False
    assert f.response is not None and f.response.headers.get_all("alt-svc") == ['h2=":443"']
    assert _alt_events(env) == []
