"""egresswatch.pac and ``egresswatch pac``: the PAC file, evaluated by a real JavaScript engine.

Node.js runs the generated ``FindProxyForURL`` with the PAC helper functions written here after
the Netscape definitions (``isPlainHostName``, ``dnsDomainIs``, ``isInNet`` on literals only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from egresswatch.pac import build_pac
from egresswatch.pac import parse_proxy

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js (node) is not installed")

HELPERS = r"""
function isPlainHostName(h) { return h.indexOf(".") < 0; }
function dnsDomainIs(h, d) { return h.length >= d.length && h.substring(h.length - d.length) === d; }
function ip4(a) { return a.split(".").reduce(function (n, o) { return n * 256 + Number(o); }, 0); }
function isInNet(h, net, mask) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(h)) throw new Error("isInNet resolved a name: " + h);
    var m = ip4(mask);
    return (ip4(h) & m) >>> 0 === (ip4(net) & m) >>> 0;
}
"""


def evaluate(pac: str, hosts: list[str]) -> list[str]:
    assert NODE is not None
    script = (
        HELPERS
        + pac
        + "\nvar hosts = JSON.parse(process.argv[1]);\n"
        + "console.log(JSON.stringify(hosts.map(function (h) {"
        + " return FindProxyForURL('https://' + h + '/', h); })));\n"
    )
    out = subprocess.run(
        [NODE, "-e", script, json.dumps(hosts)], capture_output=True, text=True, check=True
    )
    result: list[str] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Proxy.Example:8080", "proxy.example:8080"),
        ("10.0.0.5:3128", "10.0.0.5:3128"),
        ("[2001:DB8::1]:8080", "[2001:db8::1]:8080"),
    ],
)
def test_parse_proxy(text: str, expected: str) -> None:
    assert parse_proxy(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("proxy.example", "expected HOST:PORT"),
        ("proxy.example:0", "expected HOST:PORT"),
        ("proxy.example:70000", "expected HOST:PORT"),
        (":8080", "expected HOST:PORT"),
        ("[zz::1]:80", "not an IPv6 address"),
        ("bad_host!:80", "not a host name"),
    ],
)
def test_parse_proxy_rejects(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_proxy(text)


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one proxy"):
        build_pac([])
    with pytest.raises(ValueError, match="listed twice"):
        build_pac(["a.example:1", "A.example:1"])
    with pytest.raises(ValueError, match="not a CIDR"):
        build_pac(["a.example:1"], bypass_networks=["10.0.0.0/33"])
    with pytest.raises(ValueError, match="IPv6"):
        build_pac(["a.example:1"], bypass_networks=["2001:db8::/32"])
    with pytest.raises(ValueError, match="not a host name"):
        build_pac(["a.example:1"], bypass_hosts=["bad name"])


@needs_node
def test_every_host_gets_every_proxy_once_starting_at_its_hash() -> None:
    proxies = ["p1.example:8080", "p2.example:8080", "p3.example:8080"]
    pac = build_pac(proxies)
    hosts = [f"host{i}.designated.example" for i in range(600)]
    answers = evaluate(pac, hosts)
    firsts: Counter[str] = Counter()
    for answer in answers:
        entries = answer.split("; ")
        # fail-over: every proxy once, in rotation order, and no DIRECT by default
        assert sorted(entries) == sorted(f"PROXY {p}" for p in proxies)
        i = proxies.index(entries[0].removeprefix("PROXY "))
        assert entries == [f"PROXY {proxies[(i + k) % 3]}" for k in range(3)]
        firsts[entries[0]] += 1
    # spread: each proxy is first for a fair share of 600 hosts (expected 200 each)
    assert len(firsts) == 3 and min(firsts.values()) > 120, firsts
    # sticky: the same host (any case, trailing dot) always gets the same answer
    again = evaluate(pac, ["HOST7.designated.example.", "host7.designated.example"])
    assert again == [answers[7], answers[7]]


@needs_node
def test_bypasses_and_fallback() -> None:
    pac = build_pac(
        ["p1.example:8080"],
        bypass_hosts=["corp.example", "*.intra.example"],
        bypass_networks=["10.0.0.0/8"],
        fallback_direct=True,
    )
    hosts = [
        "intranet",
        "localhost",
        "corp.example",
        "wiki.corp.example",
        "notcorp.example",
        "x.intra.example",
        "10.1.2.3",
        "11.1.2.3",
        "127.0.0.1",
        "www.tiktok.com",
    ]
    assert evaluate(pac, hosts) == [
        "DIRECT",
        "DIRECT",
        "DIRECT",
        "DIRECT",
        "PROXY p1.example:8080; DIRECT",
        "DIRECT",
        "DIRECT",
        "PROXY p1.example:8080; DIRECT",
        "DIRECT",
        "PROXY p1.example:8080; DIRECT",
    ]


@needs_node
def test_cli_writes_a_pac_file(tmp_path: Path) -> None:
    out = tmp_path / "proxy.pac"
    cmd = [sys.executable, "-m", "egresswatch", "pac", "--proxy", "a.example:8080"]
    done = subprocess.run([*cmd, "--proxy", "b.example:8080", "-o", str(out)], check=False)
    assert done.returncode == 0
    answer = evaluate(out.read_text(), ["www.example.org"])[0]
    assert sorted(answer.split("; ")) == ["PROXY a.example:8080", "PROXY b.example:8080"]
    bad = subprocess.run([*cmd, "--proxy", "nope"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "'nope': expected HOST:PORT" in bad.stderr
