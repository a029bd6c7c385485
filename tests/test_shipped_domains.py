"""The shipped catalogue (``domains/``): it loads, it is lint-clean, and it attributes as documented.

These tests read the real data files, so a bad edit to ``domains/*.yaml`` fails here with the
file:line the loader or the linter reports.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.lint import Severity
from egresswatch.lint import check_dirs
from egresswatch.matcher import Matcher

DOMAINS = Path(__file__).resolve().parent.parent / "domains"

# The apps the orders and rules name, with the regimes that designate each one.
EXPECTED_APPS: dict[str, set[str]] = {
    "alipay": {"us-eo-13971"},
    "wechat-pay": {"us-eo-13971", "us-eo-13943"},
    "qq-wallet": {"us-eo-13971"},
    "camscanner": {"us-eo-13971"},
    "shareit": {"us-eo-13971"},
    "tencent-qq": {"us-eo-13971"},
    "vmate": {"us-eo-13971"},
    "wps-office": {"us-eo-13971"},
    "tiktok": {
        "us-eo-13942",
        "us-nttgda-2022",
        "us-far-52.204-27",
        "us-pafaca-2024",
        "au-pspf-direction-001-2023",
    },
    "wechat": {"us-eo-13943"},
    "bytedance": {"us-nttgda-2022", "us-far-52.204-27", "us-pafaca-2024"},
    # ByteDance's portfolio apps with files of their own (FAR 52.204-27 "covered application").
    "capcut": {"us-nttgda-2022", "us-far-52.204-27", "us-pafaca-2024"},
    "doubao": {"us-nttgda-2022", "us-far-52.204-27", "us-pafaca-2024"},
    "lark": {"us-nttgda-2022", "us-far-52.204-27", "us-pafaca-2024"},
    "lemon8": {"us-nttgda-2022", "us-far-52.204-27", "us-pafaca-2024", "us-tx-gov-2025-01-31"},
    "pangle": {"us-nttgda-2022", "us-far-52.204-27", "us-pafaca-2024"},
    "pico": {"us-nttgda-2022", "us-far-52.204-27", "us-pafaca-2024"},
    "deepseek": {
        "au-nsw-deepseek-2025",
        "au-pspf-direction-001-2025",
        "au-sa-sacsf-ruling-4",
        "tw-deepseek-2025",
        "us-ny-deepseek-2025",
        "us-tx-gov-2025-01-31",
        "us-va-eo-46-2025",
    },
}

EXPECTED_REGIMES = {
    "us-eo-13942",
    "us-eo-13943",
    "us-eo-13971",
    "us-eo-14034",
    "us-nttgda-2022",
    "us-far-52.204-27",
    "us-pafaca-2024",
    "au-pspf-direction-001-2023",
    "au-pspf-direction-001-2025",
    "au-sa-sacsf-ruling-4",
    "au-nsw-deepseek-2025",
    "tw-deepseek-2025",
    "us-tx-gov-2025-01-31",
    "us-ny-deepseek-2025",
    "us-va-eo-46-2025",
}


@pytest.fixture
def shipped(shipped_catalogue: Catalogue) -> Catalogue:
    return shipped_catalogue


@pytest.fixture
def matcher(shipped_matcher: Matcher) -> Matcher:
    return shipped_matcher


def test_every_designated_app_is_shipped_with_its_regimes(shipped: Catalogue) -> None:
    assert set(shipped.apps) == set(EXPECTED_APPS)
    for app_id, regimes in EXPECTED_APPS.items():
        assert set(shipped.apps[app_id].regimes) == regimes, app_id
        assert shipped.entries_per_app()[app_id] >= 1, app_id


def test_regimes_and_apps_agree_both_ways(shipped: Catalogue) -> None:
    assert set(shipped.regimes) == EXPECTED_REGIMES
    for regime in shipped.regimes.values():
        for app_id in regime.apps:
            assert regime.id in shipped.apps[app_id].regimes, (regime.id, app_id)
    for app in shipped.apps.values():
        for regime_id in app.regimes:
            assert app.id in shipped.regimes[regime_id].apps, (app.id, regime_id)
    # EO 14034 names no app: it revokes the three earlier orders.
    assert shipped.regimes["us-eo-14034"].apps == ()
    for revoked in ("us-eo-13942", "us-eo-13943", "us-eo-13971"):
        assert shipped.regimes[revoked].revoked_by == "us-eo-14034"


@pytest.mark.parametrize(
    ("regime", "on", "status"),
    [
        ("us-eo-13971", date(2021, 3, 1), "in_force"),
        ("us-eo-13971", date(2021, 6, 9), "revoked"),
        ("us-eo-13942", date(2020, 9, 1), "not_yet_effective"),
        ("us-far-52.204-27", date(2026, 1, 1), "in_force"),
        ("us-pafaca-2024", date(2024, 6, 1), "not_yet_effective"),
    ],
)
def test_regime_dates(shipped: Catalogue, regime: str, on: date, status: str) -> None:
    assert shipped.regimes[regime].status(on) == status


def test_every_entry_has_provenance(shipped: Catalogue) -> None:
    for app in shipped.apps.values():
        for rule in app.rules:
            where = f"{rule.file}:{rule.line}"
            assert rule.source.strip(), where
            assert rule.confidence in {"high", "medium", "low"}, where
        for carve in app.carve_outs:
            assert carve.source.strip() and carve.reason.strip(), f"{carve.file}:{carve.line}"


def test_weak_evidence_is_marked_low(shipped: Catalogue) -> None:
    """Rows whose only evidence is unattributed code, or that are doubtful, never claim more."""
    for app in shipped.apps.values():
        for rule in app.rules:
            where = f"{rule.file}:{rule.line}"
            if "not identified" in rule.source:
                assert "weak-source" in rule.tags, where
            if {"weak-source", "doubtful", "broad-parent"} & set(rule.tags):
                assert rule.confidence == "low", where


def test_bytedance_repeats_tiktok_only_where_declared_shared(shipped: Catalogue) -> None:
    tiktok = {r.domain for r in shipped.apps["tiktok"].rules}
    bytedance = {r.domain for r in shipped.apps["bytedance"].rules}
    assert len(tiktok) > 100 and len(bytedance) > 500
    declared = {r.domain for r in shipped.apps["tiktok"].rules if "bytedance" in r.shared_with}
    assert tiktok & bytedance == declared


def test_shared_names_are_declared_on_every_side(shipped: Catalogue) -> None:
    claims: dict[str, set[str]] = {}
    for app in shipped.apps.values():
        for rule in app.rules:
            claims.setdefault(rule.domain, set()).add(app.id)
    shared = {name: apps for name, apps in claims.items() if len(apps) > 1}
    assert {"tenpay.com", "wechatpay.cn", "qlogo.cn", "p.qpic.cn"} <= set(shared)
    for app in shipped.apps.values():
        for rule in app.rules:
            assert set(rule.shared_with) == claims[rule.domain] - {app.id}, rule.domain


@pytest.mark.parametrize(
    ("host", "app"),
    [
        ("pay.weixin.qq.com", "wechat-pay"),
        ("api.mch.weixin.qq.com", "wechat-pay"),
        ("qpay.qq.com", "qq-wallet"),
        ("myun.tenpay.com", "qq-wallet"),
        ("h5.qianbao.qq.com", "qq-wallet"),  # not tencent-qq's broad qq.com
        ("i.qianbao.qq.com", "qq-wallet"),
        ("weixin.qq.com", "wechat"),
        ("mp.weixin.qq.com", "wechat"),
        ("im.qq.com", "tencent-qq"),
        ("gchat.qpic.cn", "tencent-qq"),
        ("news.qq.com", None),  # carve-out from tencent-qq's broad qq.com
        ("y.qq.com", None),
        ("www.v.qq.com", None),
        ("soup.v.qq.com", "wechat"),  # the carve-out only excludes tencent-qq
        ("www.tiktok.com", "tiktok"),
        ("WWW.TikTok.com.", "tiktok"),
        ("www.douyin.com", "bytedance"),
        ("p1-juejin.byteimg.com", "bytedance"),
        ("p16-sign.byteimg.com", "bytedance"),  # byteimg.com is shared: primary is the first id
        ("notalipay.com", None),
        ("render.alipay.com", "alipay"),
        ("chat.deepseek.com", "deepseek"),
        ("harness-telemetry.deepseeksvc.com", "deepseek"),
        ("files.deepseeksvc.com", "deepseek"),
        ("deepseek.ai", None),  # third-party site, deliberately not listed
        ("publicdata.vmate.in", "vmate"),
        ("www.ushareit.com", "shareit"),
        ("www.kdocs.cn", "wps-office"),
        ("ai-tools.camscanner.com", "camscanner"),
        ("volccdn.com", "bytedance"),
        ("customer.volccdn.com", None),  # CDN zone: exact only
    ],
)
def test_attribution(matcher: Matcher, host: str, app: str | None) -> None:
    match = matcher.match(host)
    assert (match.app if match else None) == app


def test_shared_name_is_attributed_to_all_claimants(matcher: Matcher) -> None:
    match = matcher.match("tenpay.com")
    assert match is not None
    assert set(match.apps) == {"wechat-pay", "qq-wallet", "wechat"}
    assert match.app == sorted(match.apps)[0]


def test_lint_is_clean() -> None:
    findings = check_dirs([DOMAINS])
    failing = [str(f) for f in findings if f.severity in (Severity.ERROR, Severity.WARNING)]
    assert failing == []
