"""Unit tests of the mitmproxy addon: every hook and policy path, with taddons/tflow.

The catalogue and policy are real (written to ``tmp_path``); the ClientHellos are real (built by
Python's ssl module); the event writer is the real one over a ``MemoryStore``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
from egresswatch import addon as addon_mod
from egresswatch.addon import EgressWatch
from egresswatch.addon import block_page
from egresswatch.addon import parse_listen
from egresswatch.addon import prefers_json
from egresswatch.addon import refusal_reason
from egresswatch.addon import verifiable_sni
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store.memory import MemoryStore
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mitmproxy import dns
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addons.errorcheck import ErrorCheck
from mitmproxy.connection import Client
from mitmproxy.connection import Server
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.events import DataReceived
from mitmproxy.proxy.events import Start
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers import TCPLayer
from mitmproxy.proxy.layers import UDPLayer
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils
from mitmproxy.tls import ClientHelloData
from prometheus_client import CollectorRegistry

from tests.support.quic import padding_alpn

NOW = 1_790_000_000.0  # 2026-09-21, before the exception below expires

APPS: dict[str, dict[str, Any]] = {
    "blocky": {
        "name": "Blocky <Video>",
        "domains": [{"domain": "blocked.test"}, {"domain": "xn--bcher-kva.test"}],
        "cidrs": [{"cidr": "192.0.2.0/24", "source": "tests", "confidence": "high"}],
    },
    "watchy": {"name": "Watchy", "domains": [{"domain": "watched.test"}]},
    "offy": {"name": "Offy", "domains": [{"domain": "off.test"}]},
}

POLICY = """\
default: monitor
contact: "Security <sec@example.org> & co"
apps:
  blocky: block
  offy: "off"
exceptions:
  - id: EXC-1
    apps: [blocky]
    clients: [10.9.9.9/32]
    reason: Supplier contact
    approver: CISO
    ticket: SEC-1
    expires: 2026-12-31
"""


# -- fixtures -------------------------------------------------------------------------------


@dataclass
class Env:
    addon: EgressWatch
    tctx: Any
    registry: CollectorRegistry
    cat_dir: Path
    policy: Path
    store: MemoryStore
    clock: list[float] = field(default_factory=lambda: [NOW])

    def hits(self, app: str, action: str, signal: str, regime: str = "app") -> float:
        v = self.registry.get_sample_value(
            "egresswatch_hits_total",
            {"app": app, "regime": regime, "action": action, "signal": signal},
        )
        return v or 0.0

    def events(self, kind: EventKind = EventKind.HIT) -> list[Event]:
        pending = [e for e in self.addon._pending if e.kind == kind]
        stored = [e for e in self.store.iter_events(0, 1e12) if e.kind == kind]
        return pending + stored


@pytest.fixture
def env(tmp_path: Path, catalogue_dir: Callable[..., Path]) -> Iterator[Env]:
    d = catalogue_dir(APPS, name="cat")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    registry = CollectorRegistry()
    store = MemoryStore("memory://")
    clock = [NOW]
    a = EgressWatch(registry=registry, clock=lambda: clock[0], store_opener=lambda url: store)
    with taddons.context(a) as tctx:
        tctx.configure(
            a,
            egresswatch_bundled=False,
            egresswatch_lists=[str(d)],
            egresswatch_policy=str(policy),
            egresswatch_metrics_listen="off",
            egresswatch_store="memory://",
            egresswatch_instance="test-proxy",
            egresswatch_reload_interval=0,
        )
        e = Env(a, tctx, registry, d, policy, store, clock)
        yield e
        if a.metrics is not None:
            a.metrics.close()


def client(mode: str = "regular", ip: str = "10.0.0.1") -> Client:
    c = tflow.tclient_conn()
    c.peername = (ip, 50000)
    c.proxy_mode = ProxyMode.parse(mode)
    return c


def connect_flow(host: str, c: Client | None = None) -> http.HTTPFlow:
    f = tflow.tflow(client_conn=c or client())
    f.request.method = "CONNECT"
    f.request.host = host
    f.request.port = 443
    f.request.path = ""
    f.request.authority = f"{host}:443"
    return f


def request_flow(host: str, c: Client | None = None, **headers: str) -> http.HTTPFlow:
    f = tflow.tflow(client_conn=c or client())
    f.request.host = host
    f.request.headers["host"] = host
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    return f


def raw_client_hello(sni: str | None) -> bytes:
    ctx = ssl.create_default_context()
    if sni is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()  # one TLS record holding the ClientHello


def hello_data(
    env: Env, sni: str | None, c: Client | None = None, server: Server | None = None
) -> ClientHelloData:
    ch = parse_client_hello(raw_client_hello(sni))
    assert ch is not None
    ctx = Context(c or client(), env.tctx.options)
    if server is not None:
        ctx.server = server
    return ClientHelloData(ctx, ch)


def server_data(c: Client, host: str, port: int = 443) -> ServerConnectionHookData:
    return ServerConnectionHookData(server=Server(address=(host, port)), client=c)


# -- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
        ("", None),
        ("off", None),
    ],
)
def test_parse_listen(spec: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(spec) == expected


@pytest.mark.parametrize(
    "spec", ["9464", "::1:9464", "[::1]9464", "host:http", "host:70000", ":80"]
)
def test_parse_listen_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(spec)


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("example.com", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("bücher.example", False),
        ("a\x00b.test", True),
        ("x" * 300, True),
        ("a." * 200 + "test", True),
        ("a" * 64 + ".test", True),  # label too long: the idna codec raises
        ("a..b.test", True),
        ("\udcff.test", True),
    ],
)
def test_refusal_reason(name: str, refused: bool) -> None:
    assert (refusal_reason(name) is not None) == refused


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, False),  # 253 bytes
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ".", False),  # + dot
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62, True),  # 254 bytes
        ("a." * 127, False),
        ("a.test..", True),
        (".a.test", True),
        ("a" * 63 + ".test.", False),
    ],
)
def test_refusal_reason_at_the_limits(name: str, refused: bool) -> None:
    assert (refusal_reason(name) is not None) == refused


def test_refusal_reason_plain_names_skip_codec_and_ip_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def careful(name: str) -> str | None:
        raise AssertionError(f"careful path taken for {name!r}")

    monkeypatch.setattr(addon_mod, "_careful_refusal_reason", careful)
    for name in ("www.Example.COM", "192.0.2.1", "a_b-c.test.", "x" * 63):
        assert refusal_reason(name) is None


_NAME_CHARS = st.sampled_from(list("aZ09-_.") + ["\x00", "ü", "\udcff", ":", " ", "\u200d"])


@given(st.lists(_NAME_CHARS, max_size=80).map("".join) | st.text(max_size=40))
def test_refusal_reason_fast_path_agrees_with_the_codec(name: str) -> None:
    assert refusal_reason(name) == addon_mod._careful_refusal_reason(name)


@given(
    st.lists(
        st.sampled_from(["a", "b-c", "-", "x-", "9", "A" * 63, "b" * 64, "", "ü", "_", "a.b"]),
        max_size=6,
    ).map(".".join)
)
def test_refusal_reason_fast_path_on_label_mixes(name: str) -> None:
    assert refusal_reason(name) == addon_mod._careful_refusal_reason(name)


@pytest.mark.parametrize(
    ("sni", "ok"),
    [
        (None, True),
        ("blocked.test", True),
        ("blocked.test.", False),
        ("cdn-.x", False),
        ("a_b.test", False),
        ("xn--bcher-kva.test", True),
    ],
)
def test_verifiable_sni(sni: str | None, ok: bool) -> None:
    assert verifiable_sni(sni) is ok


def _verifiable_reference(sni: str) -> bool:
    """The rule spelled out label by label (what the compiled pattern must agree with)."""
    if sni.endswith(".") or not sni.isascii():
        return False
    for label in sni.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c.isalnum() or c == "-" for c in label):
            return False
    return True


@given(
    st.lists(
        st.sampled_from(
            ["a", "Z9", "b-c", "-", "x-", "-y", "a" * 63, "b" * 64, "", "ü", "_", "\n"]
        ),
        max_size=6,
    ).map(".".join)
    | st.text(max_size=30)
)
def test_verifiable_sni_agrees_with_the_label_rule(sni: str) -> None:
    assert verifiable_sni(sni) is _verifiable_reference(sni)


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


def _request(version: str, headers: list[tuple[bytes, bytes]], authority: str = "") -> http.Request:
    return http.Request(
        "example.org", 80, b"GET", b"http", authority.encode(), b"/", version.encode(),
        http.Headers(headers), b"", None, 0.0, 0.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("version", "headers", "authority", "expected"),
    [
        ("HTTP/1.1", [(b"Host", b"WWW.TikTok.com:8080")], "", ("WWW.TikTok.com:8080", False)),
        ("HTTP/1.1", [(b"hOsT", b"a.test"), (b"Upgrade", b" WebSocket ")], "", ("a.test", True)),
        (
            "HTTP/1.1",
            [(b"Host", b"first.test"), (b"Host", b"second.test")],
            "",
            ("first.test", False),
        ),
        ("HTTP/1.0", [(b"Upgrade", b"h2c")], "", (None, False)),
        ("HTTP/1.1", [(b"Host", b"caf\xc3\xa9.test")], "", ("caf\u00e9.test", False)),
        ("HTTP/2.0", [(b"host", b"h.test")], "api.deepseek.com", ("api.deepseek.com", False)),
        ("HTTP/2.0", [(b"host", b"h.test")], "", ("h.test", False)),
        ("HTTP/3", [], "pay.weixin.qq.com:443", ("pay.weixin.qq.com:443", False)),
    ],
)
def test_host_and_upgrade_read_in_one_pass(
    version: str,
    headers: list[tuple[bytes, bytes]],
    authority: str,
    expected: tuple[str | None, bool],
) -> None:
    req = _request(version, headers, authority)
    assert addon_mod._host_and_upgrade(req) == expected
    hosts = [k for k, _ in headers if k.lower() == b"host"]
    if authority or len(hosts) == 1:  # agrees with mitmproxy's own accessor where it has one name
        assert req.host_header == expected[0]


def test_block_page_escapes_every_value() -> None:
    body, ctype = block_page(
        app="a<b",
        app_name="<script>x</script>",
        regime="r&d",
        contact='"c" <c@x>',
        event_id="<id>",
        host="h<o>st",
        as_json=False,
    )
    text = body.decode()
    assert ctype.startswith("text/html")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "r&amp;d" in text and "&lt;id&gt;" in text and "&lt;c@x&gt;" in text
    body, ctype = block_page(
        app="a", app_name="A", regime="r", contact="", event_id="e1", host="h", as_json=True
    )
    assert ctype == "application/json"
    assert json.loads(body)["event_id"] == "e1"


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opt", "value", "message"),
    [
        ("egresswatch_decrypt", "sometimes", "invalid value 'sometimes'"),
        ("egresswatch_dns_block", "drop", "invalid value 'drop'"),
        ("egresswatch_client_identity", "mac", "invalid value 'mac'"),
        ("egresswatch_client_identity", "hash", "needs egresswatch_client_key_file"),
        ("egresswatch_metrics_listen", "nope", "invalid listen address"),
        ("egresswatch_store", "mysql://x", "unknown scheme"),
        ("egresswatch_heartbeat", 0, "at least 1"),
        ("egresswatch_flush_ms", 0, "at least 1"),
        ("egresswatch_queue_size", -1, "must not be negative"),
        ("egresswatch_metrics_certfile", "/x.pem", "go together"),
    ],
)
def test_bad_options_are_refused(env: Env, opt: str, value: object, message: str) -> None:
    with pytest.raises(exceptions.OptionsError, match=message):
        env.tctx.configure(env.addon, **{opt: value})
    assert getattr(env.tctx.options, opt) != value  # rolled back


def test_fixed_options_accept_their_current_value(env: Env) -> None:
    # mitmproxy reports every key of an update as changed, even when its value is the same
    env.tctx.configure(env.addon, egresswatch_department_label=False)
    with pytest.raises(exceptions.OptionsError, match="cannot change at runtime"):
        env.tctx.configure(env.addon, egresswatch_department_label=True)
    assert env.tctx.options.egresswatch_department_label is False


def test_startup_catalogue_error_names_file_and_line(
    tmp_path: Path, catalogue_dir: Callable[..., Path]
) -> None:
    d = catalogue_dir(APPS, name="broken")
    (d / "watchy.yaml").write_text("id: watchy\nname: Watchy\ndomains:\n  - domain: [\n")
    a = EgressWatch(registry=CollectorRegistry())
    with taddons.context(a) as tctx:
        with pytest.raises(exceptions.OptionsError) as ei:
            tctx.configure(
                a,
                egresswatch_bundled=False,
                egresswatch_lists=[str(d)],
                egresswatch_metrics_listen="off",
            )
        assert f"{d / 'watchy.yaml'}:" in str(ei.value)
        assert ei.value.__cause__ is None and ei.value.__suppress_context__  # no chained traces
        # the addon keeps what it had (here the defaults it was registered with)
        assert a.state is not None and str(d) not in map(str, a.state.dirs)
        assert a.metrics is not None
        a.metrics.close()


def test_startup_policy_error_names_file_and_line(
    tmp_path: Path, catalogue_dir: Callable[..., Path]
) -> None:
    d = catalogue_dir(APPS, name="cat")
    p = tmp_path / "policy.yaml"
    p.write_text("default: monitor\napps:\n  nosuchapp: block\n")
    a = EgressWatch(registry=CollectorRegistry())
    with taddons.context(a) as tctx:
        with pytest.raises(exceptions.OptionsError, match=rf"{p}:3: .*nosuchapp"):
            tctx.configure(
                a,
                egresswatch_bundled=False,
                egresswatch_lists=[str(d)],
                egresswatch_policy=str(p),
                egresswatch_metrics_listen="off",
            )
        assert a.metrics is not None
        a.metrics.close()


def test_startup_error_under_mitmdump_is_one_clear_log_record(
    catalogue_dir: Callable[..., Path],
) -> None:
    """With mitmproxy's start-up check loaded (mitmdump, mitmweb), a broken catalogue is logged
    as its message only (that check then exits non-zero), not raised into mitmproxy's script
    loader, which would print it with a traceback."""
    d = catalogue_dir(APPS, name="broken")
    (d / "watchy.yaml").write_text("id: watchy\nname: Watchy\ndomains:\n  - domain: [\n")
    check = ErrorCheck()
    try:
        a = EgressWatch(registry=CollectorRegistry())
        with taddons.context(check, a) as tctx:
            tctx.configure(
                a,
                egresswatch_bundled=False,
                egresswatch_lists=[str(d)],
                egresswatch_metrics_listen="off",
            )
            assert a.state is None
            (record,) = check.logger.has_errored
            assert record.exc_info is None
            assert record.getMessage().startswith("egresswatch: invalid catalogue:\n")
            assert f"{d / 'watchy.yaml'}:5: YAML syntax error" in record.getMessage()
            a.running()  # should mitmproxy still get there: nothing starts, nothing raises
            assert a.writer is None and a._tasks == {}
            # once something is loaded, a bad change is refused (and rolled back) as usual
            tctx.configure(a, egresswatch_bundled=True, egresswatch_lists=[])
            assert a.state is not None
            with pytest.raises(exceptions.OptionsError, match="invalid value 'x'"):
                tctx.configure(a, egresswatch_decrypt="x")
            assert a.metrics is not None
            a.metrics.close()
    finally:
        check.finish()


def test_proxy_state_keeps_bulk_names_only_in_the_native_matcher(env: Env) -> None:
    (env.cat_dir / "listy.yaml").write_text(
        "id: listy\nname: Listy\ncategory: other\nregimes: []\n"
        "lists:\n  - file: listy.txt\n    source: test\n    confidence: low\n"
    )
    (env.cat_dir / "listy.txt").write_text("one.listy.test\ntwo.listy.test\n")
    env.addon.reload()
    st = env.addon.state
    assert st is not None and st.matcher.backend == "native"
    (bulk,) = st.catalogue.apps["listy"].lists
    assert (len(bulk), bulk.names) == (2, [])
    assert st.catalogue.apps["listy"].entries == 2
    env.addon.http_connect(connect_flow("www.two.listy.test"))
    assert [e.app for e in env.events() if e.app == "listy"] == ["listy"]


def test_bundled_catalogue_loads(tmp_path: Path) -> None:
    a = EgressWatch(registry=CollectorRegistry())
    with taddons.context(a) as tctx:
        tctx.configure(a, egresswatch_metrics_listen="off")
        assert a.state is not None
        assert "tiktok" in a.state.catalogue.apps
        assert a.metrics is not None
        a.metrics.close()


# -- CONNECT ----------------------------------------------------------------------------------


def test_connect_monitor_counts_and_passes(env: Env) -> None:
    f = connect_flow("WWW.Watched.Test.")
    env.addon.http_connect(f)
    assert f.response is None
    assert env.hits("watchy", "monitor", "connect", "default") == 1
    (ev,) = env.events()
    assert ev.host == "www.watched.test" and ev.app == "watchy" and ev.signal == "connect"
    assert ev.client == "10.0.0.1" and ev.instance == "test-proxy"
    assert ev.policy_version == env.addon.state.policy.version  # type: ignore[union-attr]


def test_connect_block_is_403_with_header_and_no_upstream(env: Env) -> None:
    c = client()
    f = connect_flow("api.blocked.test", c)
    env.addon.http_connect(f)
    assert f.response is not None and f.response.status_code == 403
    hdr = f.response.headers["X-Egresswatch-Block"]
    (ev,) = env.events()
    assert hdr == f"app=blocky; regime=app; event={ev.event_id}"
    assert ev.action == "blocked"
    # mitmproxy skips the eager connect when a response is set; and should anything still try,
    # server_connect refuses it for this client.
    sd = server_data(c, "api.blocked.test")
    env.addon.server_connect(sd)
    assert sd.server.error is None  # regular mode: the CONNECT response already answered
    assert env.hits("blocky", "blocked", "connect") == 1


def test_unmatched_and_invalid_names_pass_uncounted(env: Env) -> None:
    for host in ("example.org", "notblocked.test", "a..b", "x" * 300):
        f = connect_flow(host)
        env.addon.http_connect(f)
        assert f.response is None
    assert env.events() == []
    sample = env.registry.get_sample_value
    assert sample("egresswatch_inspected_total", {"signal": "connect"}) == 4
    assert sample("egresswatch_invalid_names_total", {"signal": "connect"}) == 2


def test_off_apps_record_nothing(env: Env) -> None:
    f = connect_flow("off.test")
    env.addon.http_connect(f)
    assert f.response is None and env.events() == []


def test_exception_lets_traffic_through_as_exempted(env: Env) -> None:
    f = connect_flow("blocked.test", client(ip="10.9.9.9"))
    env.addon.http_connect(f)
    assert f.response is None
    (ev,) = env.events()
    assert ev.action == "exempted" and ev.exception_id == "EXC-1"
    assert env.hits("blocky", "exempted", "connect") == 1


def test_dry_run_records_would_block(env: Env) -> None:
    env.policy.write_text(POLICY.replace("default: monitor", "default: monitor\ndry_run: true"))
    env.addon.reload()
    f = connect_flow("blocked.test")
    env.addon.http_connect(f)
    assert f.response is None
    assert [e.action for e in env.events()] == ["would_block"]


def test_proxyauth_user_recorded_never_password(env: Env) -> None:
    f = connect_flow("watched.test")
    f.metadata["proxyauth"] = ("alice", "s3cret")
    env.addon.http_connect(f)
    (ev,) = env.events()
    assert ev.user == "alice"
    assert "s3cret" not in repr(env.events())


# -- dedupe -------------------------------------------------------------------------------------


def test_connect_then_sni_same_app_counts_once(env: Env) -> None:
    c = client()
    env.addon.http_connect(connect_flow("watched.test", c))
    data = hello_data(env, "www.watched.test", c)
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is True
    assert len(env.events()) == 1
    # a different app on the same connection is a new hit
    env.addon.tls_clienthello(hello_data(env, "blocked.test", c))
    assert [e.app for e in env.events()] == ["watchy", "blocky"]
    # a new connection counts again; a closed one forgets
    env.addon.client_disconnected(c)
    env.addon.http_connect(connect_flow("watched.test", c))
    assert len(env.events()) == 3


def test_socks_then_sni_counts_once(env: Env) -> None:
    c = client("socks5")
    sd = server_data(c, "watched.test")
    env.addon.server_connect(sd)
    assert sd.server.error is None
    env.addon.tls_clienthello(hello_data(env, "watched.test", c))
    assert [e.signal for e in env.events()] == ["socks5"]


def test_plain_http_proxy_requests_count_each(env: Env) -> None:
    c = client()
    for _ in range(3):
        f = request_flow("watched.test", c)
        env.addon.requestheaders(f)
        assert f.response is None
    assert env.hits("watchy", "monitor", "http_host", "default") == 3


def test_decrypted_requests_on_an_unmatched_tunnel_count_once(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="all")
    c = client()
    env.addon.http_connect(connect_flow("example.org", c))
    env.addon.tls_clienthello(hello_data(env, "example.org", c))
    c.tls = True  # mitmproxy intercepts the client's TLS
    for _ in range(3):  # a coalesced origin: Host differs from the CONNECT host and the SNI
        env.addon.requestheaders(request_flow("watched.test", c))
    assert env.hits("watchy", "monitor", "http_host", "default") == 1


def test_transparent_plain_http_counts_once_per_connection(env: Env) -> None:
    c = client("transparent")
    env.addon.server_connect(server_data(c, "198.51.100.1", 80))  # no CIDR matches
    for _ in range(3):
        env.addon.requestheaders(request_flow("watched.test", c))
    assert env.hits("watchy", "monitor", "http_host", "default") == 1
    env.addon.client_disconnected(c)
    assert c.id not in env.addon._conn_apps


def test_decrypted_requests_count_only_new_apps(env: Env) -> None:
    c = client()
    env.addon.http_connect(connect_flow("watched.test", c))
    for host in ("watched.test", "cdn.watched.test", "example.org"):
        env.addon.requestheaders(request_flow(host, c))
    assert len(env.events()) == 1


# -- SOCKS5 / transparent / server_connect robustness -----------------------------------------


def test_socks5_block_refused_in_server_connect(env: Env) -> None:
    c = client("socks5")
    sd = server_data(c, "Blocked.Test")
    env.addon.server_connect(sd)
    assert sd.server.error is not None and "blocky" in sd.server.error
    assert env.hits("blocky", "blocked", "socks5") == 1


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("bad\udcffname.test", "IDNA"),
        ("a\x00.blocked.test", "NUL"),
        ("a" * 300, "longer than 253"),
        ("a" * 64 + ".test", "IDNA"),
    ],
)
def test_server_connect_refuses_names_asyncio_cannot_encode(env: Env, name: str, why: str) -> None:
    for mode in ("socks5", "regular"):
        sd = server_data(client(mode), name)
        env.addon.server_connect(sd)
        assert sd.server.error is not None and why in sd.server.error
    assert env.events() == []


def test_transparent_ip_literal_against_cidr(env: Env) -> None:
    c = client("transparent")
    sd = server_data(c, "192.0.2.55")
    env.addon.server_connect(sd)
    assert sd.server.error is not None
    (ev,) = env.events()
    assert ev.signal == "ip" and ev.app == "blocky" and ev.rule == "192.0.2.0/24"
    other = server_data(client("transparent"), "198.51.100.1")
    env.addon.server_connect(other)
    assert other.server.error is None


def test_upstream_mode_server_connect_is_the_upstream_proxy(env: Env) -> None:
    sd = server_data(client("upstream:http://blocked.test:3128"), "blocked.test", 3128)
    env.addon.server_connect(sd)
    assert sd.server.error is None and env.events() == []


def test_huge_host_header_is_rejected_without_matching_work(env: Env) -> None:
    host = "a." * 32768 + "blocked.test"
    f = request_flow("placeholder", client())
    f.request.headers["host"] = host
    t0 = time.perf_counter()
    env.addon.requestheaders(f)
    assert time.perf_counter() - t0 < 0.5
    assert f.response is None and env.events() == []


# -- TLS ClientHello ------------------------------------------------------------------------------


class FakeHandler:
    def __init__(self, c: Client, s: Server) -> None:
        self.transports: dict[Any, Any] = {c: object(), s: _IO()}
        self.closed: list[Any] = []

    def close_connection(self, conn: Any, half_close: bool = False) -> None:
        self.closed.append(conn)


class _IO:
    def __init__(self) -> None:
        self.writer = _Writer()


class _Writer:
    closing = False

    def close(self) -> None:
        self.closing = True


class FakeProxyserver:
    name = "proxyserver"

    def __init__(self) -> None:
        self.connections: dict[str, FakeHandler] = {}


def test_sni_monitor_passes_through(env: Env) -> None:
    data = hello_data(env, "WATCHED.test")
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is True
    assert env.hits("watchy", "monitor", "sni", "default") == 1


def test_no_sni_passes_through_uncounted(env: Env) -> None:
    data = hello_data(env, None)
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is True and env.events() == []


def test_sni_block_closes_before_server_bytes_eager(env: Env) -> None:
    c = client("socks5")
    server = Server(address=("198.51.100.7", 443))
    ps = FakeProxyserver()
    h = FakeHandler(c, server)
    ps.connections[c.id] = h
    env.tctx.master.addons.add(ps)
    data = hello_data(env, "video.blocked.test", c, server)
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is True
    assert h.transports[server].writer.closing  # nothing can be written to the server
    assert h.closed == [server, c]
    assert env.hits("blocky", "blocked", "sni") == 1


def test_sni_block_lazy_refuses_server_connect(env: Env) -> None:
    c = client("transparent")
    data = hello_data(env, "blocked.test", c)
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is True
    sd = server_data(c, "203.0.113.9")
    env.addon.server_connect(sd)
    assert sd.server.error == "egresswatch: blocked by policy"


def test_quic_block_is_dropped(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    env.tctx.configure(env.addon, egresswatch_decrypt="blocked")
    data = hello_data(env, "blocked.test", c)
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is True
    assert c.id in env.addon._refuse
    assert env.hits("blocky", "blocked", "quic") == 1


# -- next_layer: pass-through decided before mitmproxy's TLS / QUIC layers ------------------------


def next_layer_of(
    env: Env, c: Client, reads: list[bytes], depth: int = 3, server: str = "198.51.100.7"
) -> NextLayer:
    """A NextLayer as mitmproxy asks about it: ``depth`` layers above it (1: the proxy's own
    connection in regular mode; more: a CONNECT tunnel or a transparent-type mode)."""
    ctx = Context(c, env.tctx.options)
    ctx.server = Server(address=(server, 443))
    nl = NextLayer(ctx)
    ctx.layers.extend([nl] * depth)  # only their number matters to the addon
    nl.events = [DataReceived(c, r) for r in reads]
    return nl


def quic_initials(sni: str, padding: int = 0) -> list[bytes]:
    """The Initial datagrams of a real aioquic client (``padding`` bytes of ALPN names make the
    ClientHello span several)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    alpn = ["h3", *padding_alpn(padding)]
    conn = QuicConnection(
        configuration=QuicConfiguration(is_client=True, server_name=sni, alpn_protocols=alpn)
    )
    conn.connect(("198.51.100.7", 443), now=0.0)
    return [d for d, _ in conn.datagrams_to_send(now=0.0)]


def test_next_layer_passes_tls_through_before_the_tls_layers(env: Env) -> None:
    c = client("regular")
    nl = next_layer_of(env, c, [raw_client_hello("watched.test")])
    env.addon.next_layer(nl)
    assert isinstance(nl.layer, TCPLayer) and nl.layer.flow is None  # ignored: raw relay
    assert env.hits("watchy", "monitor", "sni", "default") == 1
    # tls_clienthello, should mitmproxy still ask, finds the same verdict: counted once.
    env.addon.tls_clienthello(hello_data(env, "watched.test", c))
    assert env.hits("watchy", "monitor", "sni", "default") == 1


def test_next_layer_leaves_blocks_and_special_cases_to_tls_clienthello(env: Env) -> None:
    blocked = next_layer_of(env, c := client("transparent"), [raw_client_hello("blocked.test")])
    env.addon.next_layer(blocked)
    assert blocked.layer is None  # mitmproxy builds the TLS layers; tls_clienthello blocks
    assert env.hits("blocky", "blocked", "sni") == 1
    data = hello_data(env, "blocked.test", c)
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is True and c.id in env.addon._refuse
    assert env.hits("blocky", "blocked", "sni") == 1
    inspected = env.registry.get_sample_value("egresswatch_inspected_total", {"signal": "sni"})
    assert inspected == 1  # one name, examined once, though both hooks looked at it
    hello = raw_client_hello("watched.test")
    cases = {
        "proxy's own connection": next_layer_of(env, client("regular"), [hello], depth=1),
        "reverse proxy": next_layer_of(env, client("reverse:https://example.test"), [hello]),
        "incomplete ClientHello": next_layer_of(env, client(), [hello[:40]]),
        "not TLS": next_layer_of(env, client(), [b"GET / HTTP/1.1\r\n\r\n"]),
        "no data yet": next_layer_of(env, client(), []),
    }
    for why, nl in cases.items():
        env.addon.next_layer(nl)
        assert nl.layer is None, why
    env.tctx.configure(env.addon, egresswatch_decrypt="all")
    nl = next_layer_of(env, client(), [hello])
    env.addon.next_layer(nl)
    assert nl.layer is None  # decrypting everything: mitmproxy's TLS layers
    assert env.hits("watchy", "monitor", "sni", "default") == 0  # not counted here then


def test_next_layer_quic_monitored_goes_to_a_raw_udp_relay(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    nl = next_layer_of(env, c, quic_initials("watched.test"))
    env.addon.next_layer(nl)
    assert isinstance(nl.layer, UDPLayer) and nl.layer.flow is None
    assert env.hits("watchy", "monitor", "quic", "default") == 1
    assert c.id not in env.addon._refuse


def test_next_layer_quic_blocked_is_refused_upstream(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    nl = next_layer_of(env, c, quic_initials("video.blocked.test"))
    env.addon.next_layer(nl)
    assert isinstance(nl.layer, UDPLayer)
    assert c.id in env.addon._refuse  # server_connect refuses: not one datagram upstream
    sd = server_data(c, "198.51.100.7")
    env.addon.server_connect(sd)
    assert sd.server.error == "egresswatch: blocked by policy"
    assert env.hits("blocky", "blocked", "quic") == 1


def test_next_layer_quic_hello_over_several_datagrams_is_collected(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    initials = quic_initials("watched.test", padding=4000)
    assert len(initials) >= 3
    nl = next_layer_of(env, c, initials[:1])
    env.addon.next_layer(nl)
    waiting = nl.layer
    assert isinstance(waiting, addon_mod._QuicHello)
    assert env.hits("watchy", "monitor", "quic", "default") == 0
    # mitmproxy replays what NextLayer saw into the new layer, then the rest arrives through it;
    # the decision comes with the last piece.
    for e in [Start(), *nl.events]:
        assert list(waiting.handle_event(e)) == []
    cmds = [list(waiting.handle_event(DataReceived(c, d))) for d in initials[1:]]
    assert isinstance(waiting.child, UDPLayer)
    assert env.hits("watchy", "monitor", "quic", "default") == 1
    assert any(cmds[-1])  # the relay started (it asks to open the server connection)


def test_next_layer_leaves_dns_and_other_udp_to_mitmproxy(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    # A DNS query for blocked.test (header, question), as a WireGuard client sends it.
    query = (
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07blocked\x04test\x00\x00\x01\x00\x01"
    )
    for reads in ([query], [b"\xc0garbage that is not QUIC"]):
        nl = next_layer_of(env, c, reads)
        env.addon.next_layer(nl)
        assert nl.layer is None
    assert env.events() == []


def _corrupt_hello(flips: list[tuple[int, int]]) -> bytes:
    hello = bytearray(raw_client_hello("a.test"))
    for pos, value in flips:
        hello[pos % len(hello) or 5] = value
    return bytes(hello)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    transport=st.sampled_from(["tcp", "udp"]),
    reads=st.lists(
        st.one_of(
            st.binary(max_size=300),
            # Starts that take the parsers furthest: a TLS handshake record, a QUIC long header.
            st.binary(max_size=300).map(lambda b: b"\x16\x03\x01" + b),
            st.binary(max_size=1300).map(lambda b: b"\xc0\x00\x00\x00\x01" + b),
            st.binary(min_size=5, max_size=200).map(lambda b: raw_client_hello("a.test")[:5] + b),
            # A whole ClientHello record with some bytes of its body overwritten.
            st.lists(st.tuples(st.integers(5, 250), st.integers(0, 255)), min_size=1).map(
                _corrupt_hello
            ),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_next_layer_survives_arbitrary_client_bytes(
    env: Env, transport: str, reads: list[bytes]
) -> None:
    """Whatever the client sends first, next_layer decides or defers without an error."""
    c = client("wireguard" if transport == "udp" else "transparent")
    c.transport_protocol = transport  # type: ignore[assignment]
    nl = next_layer_of(env, c, reads)
    env.addon.next_layer(nl)
    assert nl.layer is None or isinstance(nl.layer, (TCPLayer, UDPLayer, addon_mod._QuicHello))
    errors = env.registry.get_sample_value("egresswatch_hook_errors_total", {"hook": "next_layer"})
    assert errors == 0.0


def test_decrypt_blocked_intercepts_only_blocked(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="blocked")
    mon = hello_data(env, "watched.test")
    env.addon.tls_clienthello(mon)
    assert mon.ignore_connection is True
    c = client()
    blk = hello_data(env, "blocked.test", c)
    env.addon.tls_clienthello(blk)
    assert blk.ignore_connection is False  # intercepted, to show the block page
    sd = server_data(c, "blocked.test")
    env.addon.server_connect(sd)
    assert sd.server.error is not None  # and never connected upstream
    f = request_flow("blocked.test", c, accept="text/html")
    env.addon.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403
    assert b"Blocky &lt;Video&gt;" in f.response.content
    assert [e.app for e in env.events()] == ["watchy", "blocky"]  # SNI + Host: one blocky hit


def test_decrypt_blocked_connect_opens_tunnel_for_block_page(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="blocked")
    c = client()
    f = connect_flow("blocked.test", c)
    env.addon.http_connect(f)
    assert f.response is not None and f.response.status_code == 200
    data = hello_data(env, "blocked.test", c)
    env.addon.tls_clienthello(data)
    assert data.ignore_connection is False
    r = request_flow("blocked.test", c, accept="application/json")
    env.addon.requestheaders(r)
    assert r.response is not None and r.response.status_code == 403
    doc = json.loads(r.response.content or b"")
    assert doc["app"] == "blocky" and doc["event_id"] == env.events()[0].event_id


def test_decrypt_all_passes_through_unverifiable_names(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="all")
    ok = hello_data(env, "example.org")
    env.addon.tls_clienthello(ok)
    assert ok.ignore_connection is False
    odd = hello_data(env, "example.org.")
    env.addon.tls_clienthello(odd)
    assert odd.ignore_connection is True


# -- HTTP -------------------------------------------------------------------------------------------


def test_requestheaders_block_page_html(env: Env) -> None:
    f = request_flow("blocked.test:8080", client(), accept="text/html,*/*;q=0.8")
    env.addon.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403
    text = (f.response.content or b"").decode()
    assert "Blocky &lt;Video&gt;" in text and "<Video>" not in text
    assert "Security &lt;sec@example.org&gt; &amp; co" in text
    (ev,) = env.events()
    assert ev.event_id in text and ev.signal == "http_host"


def test_requestheaders_block_page_json(env: Env) -> None:
    f = request_flow("blocked.test", client(), accept="application/json")
    env.addon.requestheaders(f)
    assert f.response is not None
    assert f.response.headers["content-type"] == "application/json"
    doc = json.loads(f.response.content or b"")
    assert doc["contact"] == "Security <sec@example.org> & co" and doc["regime"] == "app"


def test_idn_host_matches_its_a_label(env: Env) -> None:
    f = request_flow("BÜCHER.test", client())
    env.addon.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403


def test_websocket_upgrade_signal(env: Env) -> None:
    f = request_flow("watched.test", client(), upgrade="websocket", connection="Upgrade")
    env.addon.requestheaders(f)
    assert env.hits("watchy", "monitor", "websocket", "default") == 1


def test_requestheaders_skips_answered_flows(env: Env) -> None:
    f = request_flow("blocked.test", client())
    f.response = http.Response.make(200)
    env.addon.requestheaders(f)
    assert f.response.status_code == 200 and env.events() == []


# -- DNS ----------------------------------------------------------------------------------------


def dns_flow(name: str, qtype: int = dns.types.A) -> dns.DNSFlow:
    req = tutils.tdnsreq(questions=[dns.Question(name, qtype, dns.classes.IN)])
    return tflow.tdnsflow(req=req)


@pytest.mark.parametrize(
    ("mode", "qtype", "rcode", "answer"),
    [
        ("nxdomain", dns.types.A, dns.response_codes.NXDOMAIN, None),
        ("refused", dns.types.A, dns.response_codes.REFUSED, None),
        ("null", dns.types.A, dns.response_codes.NOERROR, "0.0.0.0"),
        ("null", dns.types.AAAA, dns.response_codes.NOERROR, "::"),
        ("null", dns.types.MX, dns.response_codes.NOERROR, None),
    ],
)
def test_dns_block(env: Env, mode: str, qtype: int, rcode: int, answer: str | None) -> None:
    env.tctx.configure(env.addon, egresswatch_dns_block=mode)
    f = dns_flow("Www.Blocked.Test", qtype)
    env.addon.dns_request(f)
    assert f.response is not None and f.response.response_code == rcode
    got = [
        str(a.ipv4_address) if a.type == dns.types.A else str(a.ipv6_address)
        for a in f.response.answers
    ]
    assert got == ([answer] if answer else [])
    assert env.hits("blocky", "blocked", "dns") == 1


def test_dns_monitor_counts_each_query(env: Env) -> None:
    for _ in range(2):
        f = dns_flow("watched.test")
        env.addon.dns_request(f)
        assert f.response is None
    assert env.hits("watchy", "monitor", "dns", "default") == 2


# -- robustness -----------------------------------------------------------------------------------


def test_hook_errors_are_counted_not_raised(
    env: Env, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("matcher exploded")

    class Boom:
        match = staticmethod(boom)

    assert env.addon.state is not None
    env.addon.state = dataclasses.replace(env.addon.state, matcher=Boom())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="egresswatch"):
        env.addon.http_connect(connect_flow("blocked.test"))
    assert "unexpected error in http_connect" in caplog.text
    assert (
        env.registry.get_sample_value("egresswatch_hook_errors_total", {"hook": "http_connect"})
        == 1
    )


# -- reload -------------------------------------------------------------------------------------


def test_reload_valid_swaps_and_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    assert old is not None
    (env.cat_dir / "newapp.yaml").write_text(
        "id: newapp\nname: New\nvendor: V\ncategory: other\nregimes: []\n"
        "domains:\n  - {domain: new.test, match: suffix, source: t, confidence: high}\n"
    )
    with caplog.at_level(logging.INFO, logger="egresswatch"):
        env.addon.reload()
    new = env.addon.state
    assert new is not None and new is not old
    assert f"egresswatch: catalogue reloaded version={new.catalogue.version[:12]} (" in caplog.text
    assert f"entries, {new.matcher.backend} matcher)" in caplog.text
    env.addon.http_connect(connect_flow("new.test"))
    assert [e.app for e in env.events()] == ["newapp"]
    configs = [e.detail for e in env.events(EventKind.CONFIG)]
    assert [d["kind"] for d in configs if d] == ["catalogue", "policy", "catalogue"]


def test_reload_invalid_keeps_old(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    bad = env.cat_dir / "watchy.yaml"
    bad.write_text("id: watchy\nname: Watchy\ndomains: nope\n")
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon.reload()
    assert env.addon.state is old
    assert f"egresswatch: catalogue reload rejected: {bad}:" in caplog.text
    assert (
        env.registry.get_sample_value(
            "egresswatch_reload_failures_total", {"kind": "catalogue", "reason": "validation"}
        )
        == 1
    )
    env.addon.http_connect(connect_flow("watched.test"))  # the old catalogue still matches
    assert len(env.events()) == 1


def test_reload_invalid_policy_keeps_old(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    env.policy.write_text("default: sometimes\n")
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon.reload()
    assert env.addon.state is old
    assert f"egresswatch: policy reload rejected: {env.policy}:1:" in caplog.text
    assert (
        env.registry.get_sample_value(
            "egresswatch_reload_failures_total", {"kind": "policy", "reason": "validation"}
        )
        == 1
    )


async def test_reload_on_file_change(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    assert env.addon._watcher is not None
    assert not env.addon._watcher.changed()
    env.policy.write_text(POLICY.replace("blocky: block", "blocky: monitor"))
    assert env.addon._watcher.changed()
    with caplog.at_level(logging.INFO, logger="egresswatch"):
        assert await env.addon.reload_async()
    assert env.addon.state is not old
    assert "egresswatch: policy reloaded version=" in caplog.text
    f = connect_flow("blocked.test")
    env.addon.http_connect(f)
    assert f.response is None


def test_exception_expiry_before_a_reload_is_logged_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.addon._check_exceptions(NOW)  # a heartbeat
    later = 1_798_761_600.0 + 60  # EXC-1 expired a minute ago
    env.clock[0] = later
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon.reload()  # before the next heartbeat
        env.addon._check_exceptions(later + 60)  # the next heartbeat
    assert caplog.text.count("egresswatch: exception EXC-1 expired at") == 1


def test_exception_expiry_logged_once(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.addon._check_exceptions(NOW)
    later = 1_798_761_600.0 + 60  # 2027-01-01T00:01Z: EXC-1 (end of 2026-12-31) has expired
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon._check_exceptions(later)
        env.addon._check_exceptions(later + 60)
    assert (
        caplog.text.count("egresswatch: exception EXC-1 expired at 2027-01-01T00:00:00+00:00") == 1
    )
    env.clock[0] = later
    f = connect_flow("blocked.test", client(ip="10.9.9.9"))
    env.addon.http_connect(f)
    assert f.response is not None and f.response.status_code == 403


# -- lifecycle and events -----------------------------------------------------------------------


async def test_running_and_done_write_lifecycle_and_hits(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_metrics_listen="127.0.0.1:0", egresswatch_flush_ms=20)
    env.addon.running()
    try:
        assert env.addon.metrics_address is not None
        env.addon.http_connect(connect_flow("blocked.test"))
    finally:
        await env.addon.done()
    kinds = [e.kind for e in env.store.iter_events(0, 1e12)]
    assert kinds[0] == EventKind.CONFIG and EventKind.START in kinds
    assert kinds[-1] == EventKind.STOP and EventKind.HIT in kinds
    (start,) = [e for e in env.store.iter_events(0, 1e12) if e.kind == EventKind.START]
    assert start.detail is not None and start.detail["client_identity"] == "address"
    assert env.addon._pending == []


async def test_runtime_option_changes_take_effect_or_are_refused(env: Env) -> None:
    env.addon.running()
    try:
        # heartbeat: the loop restarts with the new interval
        env.tctx.configure(env.addon, egresswatch_heartbeat=1, egresswatch_flush_ms=1000)
        # reload interval: from "command only" to a 1 s file check
        env.tctx.configure(env.addon, egresswatch_reload_interval=1)
        old = env.addon.state
        env.policy.write_text(POLICY.replace("blocky: block", "blocky: monitor"))
        deadline = time.monotonic() + 5
        while env.addon.state is old and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert env.addon.state is not old
        while not env.events(EventKind.HEARTBEAT) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert env.events(EventKind.HEARTBEAT), "no heartbeat after egresswatch_heartbeat=1"
        # and back to "command only": no reload task left
        env.tctx.configure(env.addon, egresswatch_reload_interval=0)
        assert list(env.addon._tasks) == ["egresswatch_heartbeat"]
        # what the running writer and metrics endpoint were built with cannot change
        for opts in (
            {"egresswatch_queue_size": 5},
            {"egresswatch_flush_ms": 5},
            {"egresswatch_metrics_certfile": "/c.pem", "egresswatch_metrics_keyfile": "/k.pem"},
        ):
            with pytest.raises(exceptions.OptionsError, match="cannot change while running"):
                env.tctx.configure(env.addon, **opts)
    finally:
        await env.addon.done()
    assert env.addon._tasks == {}


def test_status_command(env: Env) -> None:
    out = env.tctx.command(env.addon.status)
    assert "egresswatch: catalogue" in out and "decrypt=off" in out


def test_entry_script_loads_the_addon() -> None:
    shim = (
        addon_mod.__file__.rsplit("/addon/egresswatch/", 1)[0] + "/deploy/mitmproxy/egresswatch.py"
    )
    with taddons.context() as tctx:
        sc = tctx.script(shim)
        (loaded,) = sc.addons
        assert type(loaded).__name__ == "EgressWatch"
        assert "egresswatch_decrypt" in tctx.options
        loaded.metrics.close()


def test_per_connection_state_is_dropped_on_disconnect(env: Env) -> None:
    c = client(ip="10.1.2.3")
    env.addon.http_connect(connect_flow("watched.test", c))
    env.addon.http_connect(connect_flow("blocked.test", c))
    assert [e.client for e in env.events()] == ["10.1.2.3", "10.1.2.3"]
    env.addon.client_disconnected(c)
    per_connection = (env.addon._conn_apps, env.addon._refuse, env.addon._block_page)
    assert all(c.id not in d for d in per_connection)
    assert c.id not in env.addon._users and c.id not in env.addon._identities


async def test_reload_command_in_the_proxy_loads_off_the_event_loop(
    env: Env, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import egresswatch.addon as addon_module

    loader_threads: list[str] = []
    real = addon_module._load_state

    def spy(*args: Any, **kwargs: Any) -> Any:
        loader_threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(addon_module, "_load_state", spy)
    old = env.addon.state
    (env.cat_dir / "newapp.yaml").write_text(
        "id: newapp\nname: New\nvendor: V\ncategory: other\nregimes: []\n"
        "domains:\n  - {domain: new.test, match: suffix, source: t, confidence: high}\n"
    )
    with caplog.at_level(logging.INFO, logger="egresswatch"):
        env.addon.reload()  # on the running loop: returns at once, the load runs in a thread
        for _ in range(200):
            if env.addon.state is not old:
                break
            await asyncio.sleep(0.01)
    assert env.addon.state is not old
    assert loader_threads and loader_threads[0] != threading.main_thread().name
    assert "egresswatch: catalogue reloaded version=" in caplog.text
