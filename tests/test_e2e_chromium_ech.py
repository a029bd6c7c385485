"""A real headless Chromium ClientHello through the proxy: Chromium sends a GREASE
``encrypted_client_hello`` extension on connections without an ECH configuration. egresswatch
must count it as an ECH-capable client, never as a hidden name (docs/attribution.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support.chromium import NEEDS_CHROMIUM
from tests.support.chromium import chromium

pytestmark = [pytest.mark.e2e, *NEEDS_CHROMIUM]

ECH = "egresswatch_ech_total"


@pytest.fixture(scope="module")
def proxy(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return start_proxy_module(
        options={"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"},
        lists=[e2e_catalogue],
    )


def test_chromium_grease_ech_is_capable_not_hidden(proxy: RunningProxy, tmp_path: Path) -> None:
    before = proxy.metric_sum(ECH, verdict="capable")
    chromium(
        tmp_path,
        f"--proxy-server={proxy.proxy_url}",
        "--ignore-certificate-errors",
        "--dump-dom",
        "https://www.tiktok.com/",
        check=False,
    )
    assert proxy.metric_sum(ECH, verdict="capable") >= before + 1
    assert proxy.metric_sum(ECH, verdict="hidden") == 0
    assert proxy.metric_sum(ECH, verdict="malformed") == 0
    assert proxy.metric_sum("egresswatch_hits_total", app="tiktok") >= 1
