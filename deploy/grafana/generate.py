"""Generate the egresswatch Grafana dashboard and Grafana-managed alert rules.

    .venv/bin/python deploy/grafana/generate.py          # rewrite the committed files
    .venv/bin/python deploy/grafana/generate.py --check  # exit 1 if they are out of date

Needs the ``dashboards`` extra (grafana-foundation-sdk, pinned to the Grafana 11.6 build).
The output is committed; tests/test_deploy_grafana.py regenerates it and fails on any diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef
from grafana_foundation_sdk.models.dashboard import VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
DASHBOARD_JSON = HERE / "dashboards" / "egresswatch.json"
ALERTING_YAML = HERE / "provisioning" / "alerting" / "egresswatch.yaml"

DASHBOARD_UID = "egresswatch"
DATASOURCE_UID = "egresswatch-prometheus"  # matches provisioning/datasources/prometheus.yaml
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job="egresswatch", instance=~"$instance"'
RUNBOOK = "https://egresswatch.example/docs/runbook.md#"


def q(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DS).ref_id("A")
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query.range()


def ts_panel(title: str, description: str, unit: str, *targets: prometheus.Dataquery) -> Any:
    panel = (
        timeseries.Panel().title(title).description(description).datasource(DS).unit(unit).height(8)
    )
    for i, t in enumerate(targets):
        panel = panel.with_target(t.ref_id(chr(ord("A") + i)))
    return panel


def stat_panel(
    title: str, description: str, target: prometheus.Dataquery, unit: str = "short"
) -> Any:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .height(4)
        .with_target(target.ref_id("A"))
    )


def build_dashboard() -> dict[str, Any]:
    rate = f"egresswatch_hits_total{{{SEL}}}"
    d = (
        dashboard.Dashboard("egresswatch: designated-app traffic")
        .uid(DASHBOARD_UID)
        .tags(["egresswatch", "compliance", "mitmproxy"])
        .editable()
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Instance")
            .datasource(DS)
            .query('label_values(up{job="egresswatch"}, instance)')
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .with_row(dashboard.Row("Designated-app traffic"))
        .with_panel(
            stat_panel(
                "Hits in range",
                "Hits on designated apps in the selected range (Prometheus estimate; the monthly "
                "report counts exact events from the event store).",
                q(f"sum(increase({rate}[$__range]))", instant=True),
            ).span(6)
        )
        .with_panel(
            stat_panel(
                "Blocked in range",
                "Connections blocked by policy in the selected range.",
                q(
                    f'sum(increase(egresswatch_hits_total{{{SEL}, action="blocked"}}[$__range]))',
                    instant=True,
                ),
            ).span(6)
        )
        .with_panel(
            stat_panel(
                "Designated share of inspected names",
                "Hits divided by all destination names examined (the inspected denominator).",
                q(
                    f"sum(rate({rate}[$__rate_interval])) / "
                    f"clamp_min(sum(rate(egresswatch_inspected_total{{{SEL}}}[$__rate_interval])), 1e-9)"
                ),
                unit="percentunit",
            ).span(6)
        )
        .with_panel(
            stat_panel(
                "Exceptions in force",
                "Exceptions in the policy register in force now (max over instances).",
                q(f"max(egresswatch_exceptions_in_force{{{SEL}}})", instant=True),
            ).span(6)
        )
        .with_panel(
            ts_panel(
                "Hits per app",
                "Rate of hits per designated app, all actions and signals.",
                "reqps",
                q(f"sum by (app) (rate({rate}[$__rate_interval]))", "{{app}}"),
            ).span(12)
        )
        .with_panel(
            ts_panel(
                "Blocked vs monitored vs exempted vs would_block",
                "What the policy did with the hits: blocked, monitored, exempted by an "
                "exception, or would have been blocked (dry run).",
                "reqps",
                q(f"sum by (action) (rate({rate}[$__rate_interval]))", "{{action}}"),
            ).span(12)
        )
        .with_panel(
            table.Panel()
            .title("Top apps in range")
            .description("Hits per app and action over the selected range, largest first.")
            .datasource(DS)
            .height(8)
            .span(12)
            .with_target(
                q(
                    f"sort_desc(sum by (app, action) (increase({rate}[$__range])))",
                    instant=True,
                ).format(PromQueryFormat.TABLE)
            )
        )
        .with_panel(
            ts_panel(
                "Hits by signal",
                "How clients named the destinations (CONNECT, SNI, HTTP Host, DNS, QUIC, ...).",
                "reqps",
                q(f"sum by (signal) (rate({rate}[$__rate_interval]))", "{{signal}}"),
            ).span(12)
        )
        .with_row(dashboard.Row("Evasion: encrypted DNS, ECH, Alt-Svc, HTTPDNS, DNS attribution"))
        .with_panel(
            ts_panel(
                "Encrypted-DNS bypass by resolver",
                "Connections to public DoH/DoT/DoQ resolvers (domains/encrypted-dns), by resolver "
                "and action: names resolved there never reach the organisation's DNS.",
                "short",
                q(
                    f"sum by (resolver, action) (increase(egresswatch_encrypted_dns_total{{{SEL}}}[$__interval]))",
                    "{{resolver}} {{action}}",
                ),
            ).span(12)
        )
        .with_panel(
            ts_panel(
                "ECH ClientHellos by verdict",
                "capable: GREASE or undetectable ECH (browsers send it on most connections; "
                "never an alarm). hidden: the real name is encrypted behind a public name. "
                "malformed: an extension that does not parse.",
                "short",
                q(
                    f"sum by (verdict, action) (increase(egresswatch_ech_total{{{SEL}}}[$__interval]))",
                    "{{verdict}} {{action}}",
                ),
            ).span(12)
        )
        .with_panel(
            ts_panel(
                "HTTP/3 advertised (Alt-Svc) by app",
                "Decrypted responses for a designated app whose Alt-Svc header invited the client "
                "to QUIC, once per connection and host. blocked: the HTTP/3 alternatives were "
                "stripped (policy alt_svc: strip); monitor: left in place.",
                "short",
                q(
                    f"sum by (app, action) (increase(egresswatch_alt_svc_total{{{SEL}}}[$__interval]))",
                    "{{app}} {{action}}",
                ),
            ).span(12)
        )
        .with_panel(
            ts_panel(
                "Hits attributed through DNS",
                "cname: a query whose CNAME chain (or answer range) reaches a designated app. "
                "dns_correlated: a connection without a usable name, to an address a designated "
                "name resolved to.",
                "short",
                q(
                    f'sum by (app, signal) (increase(egresswatch_hits_total{{{SEL},signal=~"cname|dns_correlated"}}[$__interval]))',
                    "{{app}} {{signal}}",
                ),
            ).span(8)
        )
        .with_panel(
            ts_panel(
                "App HTTPDNS",
                "Hits on designated apps' built-in DNS-over-HTTP services (catalogue entries "
                "tagged httpdns): the app resolves names behind the organisation's back.",
                "short",
                q(
                    f"sum by (app, action) (increase(egresswatch_httpdns_total{{{SEL}}}[$__interval]))",
                    "{{app}} {{action}}",
                ),
            ).span(8)
        )
        .with_panel(
            ts_panel(
                "DNS correlation table",
                "Addresses of designated names remembered from DNS answers, and evictions "
                "(least recently used out first: raise egresswatch_dns_resolutions if steady).",
                "short",
                q(
                    f"sum by (instance) (egresswatch_dns_resolutions{{{SEL}}})",
                    "entries {{instance}}",
                ),
                q(
                    f"sum by (instance) (increase(egresswatch_dns_resolution_evictions_total{{{SEL}}}[$__interval]))",
                    "evictions {{instance}}",
                ),
            ).span(8)
        )
        .with_row(dashboard.Row("Catalogue and policy"))
        .with_panel(
            table.Panel()
            .title("Catalogue version per instance")
            .description(
                "Every instance should run the same catalogue version (see CatalogueVersionDrift)."
            )
            .datasource(DS)
            .height(6)
            .span(12)
            .with_target(
                q(f"egresswatch_catalogue_info{{{SEL}}}", instant=True).format(
                    PromQueryFormat.TABLE
                )
            )
        )
        .with_panel(
            ts_panel(
                "Last reload succeeded",
                "1 when the last load of the catalogue or the policy succeeded, 0 when it failed.",
                "short",
                q(f"egresswatch_reload_last_successful{{{SEL}}}", "{{instance}} {{kind}}"),
            ).span(6)
        )
        .with_panel(
            ts_panel(
                "Age of last successful load",
                "Time since the catalogue and policy were last loaded successfully.",
                "s",
                q(
                    f"time() - egresswatch_reload_last_success_timestamp_seconds{{{SEL}}}",
                    "{{instance}} {{kind}}",
                ),
            ).span(6)
        )
        .with_panel(
            ts_panel(
                "Reload failures",
                "Failed catalogue and policy loads by reason.",
                "short",
                q(
                    f"sum by (kind, reason) (increase(egresswatch_reload_failures_total{{{SEL}}}[$__interval]))",
                    "{{kind}} {{reason}}",
                ),
            ).span(12)
        )
        .with_panel(
            ts_panel(
                "Exceptions: time to next expiry",
                "Time until the next exception in force expires (ExceptionExpiringSoon below 7 days).",
                "s",
                q(
                    f"min(egresswatch_exception_next_expiry_timestamp_seconds{{{SEL}}}) - time()",
                    "next expiry",
                ),
            ).span(12)
        )
        .with_row(dashboard.Row("Event store health"))
        .with_panel(
            ts_panel(
                "Writer queue fill",
                "Events waiting in the writer queue as a share of its capacity.",
                "percentunit",
                q(
                    f"egresswatch_event_store_queue_depth{{{SEL}}} / "
                    f"clamp_min(egresswatch_event_store_queue_capacity{{{SEL}}}, 1)",
                    "{{instance}}",
                ),
            ).span(8)
        )
        .with_panel(
            ts_panel(
                "Events written",
                "Events committed to the event store per second.",
                "ops",
                q(
                    f"sum by (instance) (rate(egresswatch_event_store_written_total{{{SEL}}}[$__rate_interval]))",
                    "{{instance}}",
                ),
            ).span(8)
        )
        .with_panel(
            ts_panel(
                "Dropped events and write failures",
                "Any value above zero means missing compliance evidence.",
                "short",
                q(
                    f"sum by (instance) (increase(egresswatch_event_store_dropped_total{{{SEL}}}[$__interval]))",
                    "dropped {{instance}}",
                ),
                q(
                    f"sum by (instance, backend) (increase(egresswatch_event_store_write_failures_total{{{SEL}}}[$__interval]))",
                    "failures {{instance}} {{backend}}",
                ),
            ).span(8)
        )
        .with_panel(
            table.Panel()
            .title("Build info")
            .description("egresswatch, mitmproxy and Python versions per instance.")
            .datasource(DS)
            .height(5)
            .span(24)
            .with_target(
                q(f"egresswatch_build_info{{{SEL}}}", instant=True).format(PromQueryFormat.TABLE)
            )
        )
    )
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


# Grafana-managed copies of the main alerts (file provisioning format, apiVersion 1).
# noDataState OK: no data must not page; EgressWatchAbsent covers a vanished target.
GRAFANA_ALERTS: list[dict[str, Any]] = [
    {
        "uid": "egresswatch-traffic-seen",
        "title": "DesignatedAppTrafficSeen",
        "expr": "sum by (app, action) (increase(egresswatch_hits_total[5m]))",
        "threshold": 0,
        "for": "0s",
        "severity": "warning",
        "category": "compliance",
        "summary": "Traffic to designated app {{ $labels.app }} ({{ $labels.action }})",
    },
    {
        "uid": "egresswatch-down",
        "title": "EgressWatchDown",
        "expr": 'max by (instance) (1 - up{job="egresswatch"})',
        "threshold": 0,
        "for": "5m",
        "severity": "critical",
        "category": "operations",
        "summary": "egresswatch {{ $labels.instance }} cannot be scraped",
    },
    {
        "uid": "egresswatch-absent",
        "title": "EgressWatchAbsent",
        "expr": 'absent(up{job="egresswatch"})',
        "threshold": 0,
        "for": "10m",
        "severity": "critical",
        "category": "operations",
        "summary": "No egresswatch target is known to Prometheus",
    },
    {
        "uid": "egresswatch-catalogue-reload-failed",
        "title": "CatalogueReloadFailed",
        "expr": 'max by (instance) (1 - egresswatch_reload_last_successful{kind="catalogue"})',
        "threshold": 0,
        "for": "0s",
        "severity": "warning",
        "category": "operations",
        "summary": "Catalogue reload failed on {{ $labels.instance }}",
    },
    {
        "uid": "egresswatch-policy-reload-failed",
        "title": "PolicyReloadFailed",
        "expr": 'max by (instance) (1 - egresswatch_reload_last_successful{kind="policy"})',
        "threshold": 0,
        "for": "0s",
        "severity": "warning",
        "category": "operations",
        "summary": "Policy reload failed on {{ $labels.instance }}",
    },
    {
        "uid": "egresswatch-store-failing",
        "title": "EventStoreFailing",
        "expr": "sum by (instance, backend) (increase(egresswatch_event_store_write_failures_total[10m]))",
        "threshold": 0,
        "for": "0s",
        "severity": "critical",
        "category": "operations",
        "summary": "Event store writes failing on {{ $labels.instance }}",
    },
    {
        "uid": "egresswatch-store-dropping",
        "title": "EventStoreDropping",
        "expr": "sum by (instance) (increase(egresswatch_event_store_dropped_total[10m]))",
        "threshold": 0,
        "for": "0s",
        "severity": "critical",
        "category": "operations",
        "summary": "Events dropped on {{ $labels.instance }}",
    },
]


def grafana_rule(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": a["uid"],
        "title": a["title"],
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {"refId": "A", "expr": a["expr"], "instant": True, "range": False},
            },
            {
                "refId": "B",
                "datasourceUid": "__expr__",
                "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"},
            },
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": "gt", "params": [a["threshold"]]}}],
                },
            },
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": a["for"],
        "labels": {"severity": a["severity"], "category": a["category"]},
        "annotations": {
            "summary": a["summary"],
            "runbook_url": RUNBOOK + a["title"].lower(),
            "__dashboardUid__": DASHBOARD_UID,
        },
        "isPaused": False,
    }


def build_alerting() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "egresswatch",
                "folder": "egresswatch",
                "interval": "1m",
                "rules": [grafana_rule(a) for a in GRAFANA_ALERTS],
            }
        ],
    }


def render() -> dict[Path, str]:
    header = "# Generated by deploy/grafana/generate.py: edit that file, not this one.\n"
    return {
        DASHBOARD_JSON: json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n",
        ALERTING_YAML: header + yaml.safe_dump(build_alerting(), sort_keys=False, width=100),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path} is out of date: run deploy/grafana/generate.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
