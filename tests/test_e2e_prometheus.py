"""End to end: a real Prometheus scrapes a real mitmdump running egresswatch, with the shipped
alert rules; designated traffic shows up per app and action and fires DesignatedAppTrafficSeen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.plugins.prometheus import RunningPrometheus
from tests.plugins.proxy import ProxyFactory

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

POLICY = """\
default: monitor
apps:
  deepseek: block
"""
OPTIONS = {"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"}


def by_app_action(prom: RunningPrometheus) -> dict[tuple[str, str], float]:
    rows = prom.query('sum by (app, action) (egresswatch_hits_total{job="egresswatch"})')
    return {(r["metric"]["app"], r["metric"]["action"]): float(r["value"][1]) for r in rows}


def test_prometheus_counts_hits_and_fires_alert(
    start_proxy: ProxyFactory,
    start_prometheus: Callable[..., RunningPrometheus],
    e2e_catalogue: Path,
) -> None:
    proxy = start_proxy(options=OPTIONS, policy=POLICY, lists=[e2e_catalogue])
    assert proxy.metrics_url
    target = urlsplit(proxy.metrics_url).netloc
    prom = start_prometheus([target])

    # Wait until Prometheus has scraped the pre-initialised zero series: only then is the
    # first hit an increase that the alert can see.
    zeros = prom.wait_until(
        lambda: (v := by_app_action(prom)) and v.get(("tiktok", "monitor")) == 0 and v,
        what="pre-initialised hit series scraped",
    )
    assert zeros[("deepseek", "blocked")] == 0
    assert prom.query('up{job="egresswatch"}')[0]["value"][1] == "1"
    assert prom.alerts() == [] or all(
        a["labels"]["alertname"] != "DesignatedAppTrafficSeen" for a in prom.alerts()
    )

    with httpx.Client(proxy=proxy.proxy_url, trust_env=False, timeout=10) as c:
        for path in ("/a", "/b", "/c"):
            assert c.get(f"http://www.tiktok.com{path}").status_code == 200
        assert c.get("http://api.deepseek.com/v1/chat").status_code == 403

    counts = prom.wait_until(
        lambda: (
            (v := by_app_action(prom)).get(("tiktok", "monitor")) == 3
            and v.get(("deepseek", "blocked")) == 1
            and v
        ),
        what="hits scraped",
    )
    assert counts[("tiktok", "blocked")] == 0
    assert counts[("deepseek", "monitor")] == 0
    assert sum(counts.values()) == 4

    def firing() -> set[tuple[str, str]]:
        return {
            (a["labels"]["app"], a["labels"]["action"])
            for a in prom.alerts()
            if a["labels"]["alertname"] == "DesignatedAppTrafficSeen" and a["state"] == "firing"
        }

    fired = prom.wait_until(
        lambda: (f := firing()) >= {("tiktok", "monitor"), ("deepseek", "blocked")} and f,
        what="DesignatedAppTrafficSeen firing",
    )
    assert ("tiktok", "blocked") not in fired
    alert = next(
        a for a in prom.alerts() if a["labels"].get("app") == "deepseek" and a["state"] == "firing"
    )
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith("#designatedapptrafficseen")
