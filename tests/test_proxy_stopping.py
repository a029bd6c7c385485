"""Zero loss on a graceful stop (issue 12, item 5), in-process: once the proxy stops deciding,
a designated app's flow is killed or refused with no answer and no event; other traffic and
answers already given are untouched; a full queue still answers (dropped and counted)."""

from __future__ import annotations

from egresswatch.events import EventKind
from egresswatch.writer import EventWriter

from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import connect_flow
from tests.plugins.addon import dns_flow
from tests.plugins.addon import hello_data
from tests.plugins.addon import request_flow
from tests.plugins.addon import server_data

KILLED = "Connection killed."


def refused(env: Env, signal: str) -> float:
    v = env.registry.get_sample_value("egresswatch_hits_refused_stopping_total", {"signal": signal})
    return v or 0.0


def test_a_stopping_proxy_answers_no_designated_request(env: Env) -> None:
    env.observer.stopping = True
    f = request_flow("api.blocked.test")
    env.observe.requestheaders(f)
    assert f.response is None
    assert f.error is not None and f.error.msg == KILLED
    assert env.events() == []
    assert env.hits("blocky", "blocked", "http_host") == 0
    assert refused(env, "http_host") == 1


def test_a_stopping_proxy_kills_connect_dns_and_refuses_socks(env: Env) -> None:
    env.observer.stopping = True
    f = connect_flow("api.blocked.test")
    env.observe.http_connect(f)
    assert f.response is None and f.error is not None and f.error.msg == KILLED
    d = dns_flow("api.blocked.test")
    env.observe.dns_request(d)
    assert d.response is None and d.error is not None
    sd = server_data(client("socks5"), "watched.test")
    env.observe.server_connect(sd)
    assert sd.server.error == "egresswatch: proxy stopping"
    hd = hello_data(env, "blocked.test")
    env.layers.tls_clienthello(hd)
    assert hd.ignore_connection
    assert env.events() == []
    assert refused(env, "connect") == refused(env, "dns") == refused(env, "socks5") == 1


def test_a_stopping_proxy_passes_other_traffic_and_keeps_earlier_answers(env: Env) -> None:
    c = client()
    first = connect_flow("api.blocked.test", c)
    env.observe.http_connect(first)
    assert first.response is not None and first.response.status_code == 403
    env.observer.stopping = True
    other = request_flow("www.undesignated.test")
    env.observe.requestheaders(other)
    assert other.response is None and other.error is None
    # The same connection's app was decided (and its event accepted) before the stop: its
    # answer stands.
    again = request_flow("api.blocked.test", c)
    env.observe.requestheaders(again)
    assert again.error is None
    assert len(env.events()) == 1


def test_a_full_queue_still_answers_and_counts_the_drop(env: Env) -> None:
    writer = EventWriter(lambda: env.store, queue_size=1, flush_interval=60)
    env.addon.journal.start(writer)  # not started: nothing drains the queue
    try:
        answered = []
        for i in range(3):
            f = request_flow("api.blocked.test", client(ip=f"10.0.0.{i + 1}"))
            env.observe.requestheaders(f)
            answered.append(f.response is not None and f.response.status_code == 403)
        assert answered == [True, True, True]
        assert writer.dropped >= 2
        assert [e.kind for e in writer._buf] == [EventKind.CONFIG]  # noqa: SLF001 - the queue
    finally:
        env.addon.journal.writer = None
