"""Discovery end to end: real mitmdump decrypting, real clients, loopback upstreams.

- certificate: the upstream of a name the catalogue does not list presents a certificate (made
  here with ``cryptography``) whose SANs hold a designated name (TikTok's) and whose subject
  organisation is one another app (DeepSeek) lists; mitmdump decrypts and egresswatch reads it
  in ``tls_established_server``;
- follows a hit: a client asks for a designated name, then at once for a name nobody lists.

After a graceful stop (the proxy saves its candidates on the way out), ``egresswatch lists
suggest`` writes both names with their evidence, and the monthly report lists them under
"Candidates for review" with the evidence kinds.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from egresswatch.cli import main

from tests.plugins.proxy import E2E_APPS
from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import _app
from tests.plugins.proxy import write_catalogue
from tests.support.upstreams import Upstreams
from tests.support.upstreams import write_pem

pytestmark = pytest.mark.e2e

CERT_NAME = "img.unlisted-cdn.test"  # listed nowhere; its certificate names two apps
AFTER_NAME = "api.unlisted-after.test"  # listed nowhere; asked for right after a tiktok hit
ORG = "Example Video Technology Co., Ltd."


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _leaf(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for CERT_NAME that also names www.tiktok.com, subject O=ORG."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(CERT_NAME), x509.DNSName("*.tiktok.com")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return write_pem(cert, key, directory / "leaf.pem", directory / "leaf-key.pem")


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cert, key = _leaf(tmp_path_factory.mktemp("leaf"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_certificate_and_follows_hit_candidates_reach_suggest_and_the_report(
    start_proxy_module: ProxyFactory,
    upstreams: Upstreams,
    tls_upstream: int,
    tmp_path: Path,
) -> None:
    apps = dict(E2E_APPS)
    apps["deepseek"] = _app(
        "deepseek",
        "DeepSeek",
        [("deepseek.com", "suffix")],
        f"organisations:\n  - name: {ORG}\n    source: tests/test_e2e_discovery.py\n",
    )
    catalogue = write_catalogue(tmp_path / "catalogue", apps)
    routes = {**upstreams.route_map(), "443": ["127.0.0.1", tls_upstream]}
    proxy = start_proxy_module(
        options={
            "egresswatch_bundled": "false",
            "egresswatch_reload_interval": "0",
            "egresswatch_decrypt": "all",
            "ssl_insecure": "true",  # the leaf above is self-signed
        },
        policy="default: monitor\n",
        lists=[catalogue],
        routes=routes,
    )
    verify = ssl.create_default_context(cafile=str(proxy.mitmproxy_ca))
    with httpx.Client(proxy=proxy.proxy_url, trust_env=False, timeout=15, verify=verify) as c:
        assert c.get(f"https://{CERT_NAME}/").text == "hello\n"  # decrypted: mitmdump's cert
        assert c.get("http://www.tiktok.com/").status_code == 200  # a designated hit ...
        assert c.get(f"http://{AFTER_NAME}/").status_code == 200  # ... and a name right after
    assert proxy.stop() == 0

    out = tmp_path / "suggested"
    assert main(["lists", "suggest", "--store", proxy.store_url, "-o", str(out)]) == 0
    doc = yaml.safe_load((out / "tiktok-candidates.yaml").read_text())
    sources = {d["domain"]: d["source"] for d in doc["domains"]}
    assert set(sources) == {CERT_NAME, AFTER_NAME}
    assert "certificate x1" in sources[CERT_NAME] and "SAN *.tiktok.com" in sources[CERT_NAME]
    assert "follows_hit x1" in sources[AFTER_NAME]
    # the subject organisation names the app that lists it (no SAN of the leaf is DeepSeek's)
    doc = yaml.safe_load((out / "deepseek-candidates.yaml").read_text())
    (only,) = doc["domains"]
    assert only["domain"] == CERT_NAME and f"subject O={ORG}" in only["source"]

    month = datetime.datetime.now(datetime.UTC).strftime("%Y-%m")
    report = tmp_path / "report.md"
    args = ["report", "--month", month, "--store", proxy.store_url, "--format", "md"]
    assert main([*args, "--no-verify", "-o", str(report)]) == 0
    text = report.read_text()
    section = text.split("### Candidates for review", 1)[1].split("\n## ", 1)[0]
    rows = {line for line in section.splitlines() if line.startswith(f"| {CERT_NAME}")}
    assert rows == {
        f"| {CERT_NAME} | tiktok | certificate x1 | SAN \\*.tiktok.com |",
        f"| {CERT_NAME} | deepseek | certificate x1 | subject O={ORG} |",
    }
    assert f"| {AFTER_NAME} | tiktok | follows\\_hit x1 |" in section  # Markdown-escaped "_"
