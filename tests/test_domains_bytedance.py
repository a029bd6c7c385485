"""The ByteDance family in the shipped catalogue: real hostnames per app, and what must never match.

Every positive row is a hostname seen in a source named in the comment above its group (the same
sources the YAML rows cite; see /work/handoff/bytedance-SOURCES.md). The negatives are shared
infrastructure (Volcano Engine / BytePlus customer zones, generic CDNs), companies that are not
ByteDance, and look-alike names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.matcher import Matcher

from tests.plugins.catalogue import AppsOf

DOMAINS = Path(__file__).resolve().parent.parent / "domains"

FAMILY = ("bytedance", "capcut", "doubao", "lark", "lemon8", "pangle", "pico", "tiktok")
COVERED_BY_FAR = "us-far-52.204-27"


POSITIVES: list[tuple[str, str]] = [
    # TikTok -- hagezi/dns-blocklists wildcard/native.tiktok.extended-onlydomains.txt@1adbb47a2403
    ("log16-normal-c-useast1a.tiktokv.com", "tiktok"),
    ("mssdk.tiktokw.us", "tiktok"),
    ("frontier.tiktokv-eu.com", "tiktok"),
    ("analytics.us.tiktok.com", "tiktok"),
    ("sf16-telemetry-proxy-oci.tiktokcdn-us.com", "tiktok"),
    ("log-tiktok.byteoversea.net", "tiktok"),
    ("mon-va.byteoversea.com", "tiktok"),
    ("frontier16-normal-no1a.tiktokv.eu.edgesuite.net", "tiktok"),
    ("rtc-logger-ie.tiktokv.eu", "tiktok"),
    # TikTok -- mrxehmad/pi-hole-adlist tiktok-pihole@015569c778a4
    ("api16-normal-c-useast1a.tiktokv.com", "tiktok"),
    ("p16-sign.tiktokcdn-us.com", "tiktok"),
    ("pull-flv-f1-va01.tiktokcdn.com", "tiktok"),
    ("pull-f5-gcp01.ttlivecdn.com", "tiktok"),
    ("sf16-ies-music-va.tiktokcdn.com", "tiktok"),
    ("v16-tiktokcdn-com.akamaized.net", "tiktok"),
    ("v16m-default.akamaized.net", "tiktok"),  # TikTok video URLs in several code files
    ("musical.ly", "tiktok"),
    # TikTok -- developers.tiktok.com OAuth docs; ipfans/tiktok client.go (TikTok Shop Open API)
    ("open.tiktokapis.com", "tiktok"),
    ("open-api.tiktokglobalshop.com", "tiktok"),
    ("auth.tiktok-shops.com", "tiktok"),
    # TikTok -- decompiled TikTok app's US network config (code search): names and zones it lists
    ("us.tiktokapis.com", "tiktok"),
    ("affiliate-us.tiktok.com", "tiktok"),
    ("www.tiktoklinksafety.us", "tiktok"),
    ("cashier.pipopayment.us", "tiktok"),
    ("adsintegrity.us", "tiktok"),
    ("tiktokshops.us", "tiktok"),
    ("tiktokglobalshop.us", "tiktok"),
    # TikTok -- decompiled TikTok app's 'pns_inner_domains' first-party list (code search)
    ("m.tiktok.shop", "tiktok"),
    ("ttlstatic.com", "tiktok"),
    ("oecstatic.com", "tiktok"),
    ("sgsnssdk.com", "tiktok"),
    ("tiktokimgcdn.com", "tiktok"),
    ("capcut.net", "capcut"),
    # TikTok -- bytedance/tiktok-business-android-sdk TTRequest.java (the Business SDK's config host)
    ("business-api.tiktok.com", "tiktok"),
    # Douyin / Toutiao / Xigua ... -- Douyin's web CSP (filesite-io/machete_hero bypass/douyin.md),
    # mrxehmad tiktok-pihole (Douyin live hosts), v2fly data/bytedance, douyin, fqnovel, juejin
    ("www.douyin.com", "bytedance"),
    ("pull-flv-l1.douyincdn.com", "bytedance"),
    ("pull-tsl-spe-l6.douyinliving.com", "bytedance"),
    ("douyinpic.com", "bytedance"),  # CSP zone
    ("api.amemv.com", "bytedance"),
    ("toutiao.com", "bytedance"),  # CSP zone
    ("ixigua.com", "bytedance"),  # CSP zone
    ("log3-applog.fqnovel.com", "bytedance"),
    ("p1-juejin.byteimg.com", "bytedance"),
    ("bytednsdoc.com", "bytedance"),  # CSP zone
    ("zjurl.cn", "bytedance"),  # CSP zone
    ("activity-ag.awemeughun.com", "bytedance"),
    ("hypstarcdn.com", "bytedance"),  # CSP zone (Hypstar / Vigo)
    ("dig.bdurl.net", "bytedance"),
    ("dongchedi.com", "bytedance"),
    ("trae.ai", "bytedance"),
    ("bytedance.com", "bytedance"),
    # Lark / Feishu -- v2fly data/feishu, lark, lark-global (ICP-annotated); open.* are the open-API
    # hosts that Lark/Feishu bot and SDK code calls (code search, many projects)
    ("open.feishu.cn", "lark"),
    ("www.larksuite.com", "lark"),
    ("open.larksuite.com", "lark"),
    ("feishucdn.com", "lark"),
    ("frontier-lark-lb-v3.lf.bytelb.net", "lark"),
    ("larkoffice.com", "lark"),
    # CapCut -- hagezi issues 5554, 7856, 8438; 1Hosts issue 3059; mrxehmad pi-hole-adlist pull 4
    ("mon-boot.capcutapi.com", "capcut"),
    ("log16-normal-us-ttp.capcutapi.us", "capcut"),
    ("frontier.capcutw.us", "capcut"),
    ("sf16-web-tos-buz.capcutstatic.com", "capcut"),
    ("i18n-api.faceueditor.com", "capcut"),
    ("frontier-sg.capcut.com", "capcut"),
    ("capcut.cn", "capcut"),
    # Pangle -- bytedance/AdsGlobalPackage Package.swift; Prebid.js pangleBidAdapter;
    # decompiled Pangle SDK (api-access.pangolin-sdk-toutiao.com, ssdk-va.pangle.io)
    ("sf16-fe-tos-sg.i18n-pglstatp.com", "pangle"),
    ("pangle.pangleglobal.com", "pangle"),
    ("api-access.pangolin-sdk-toutiao.com", "pangle"),
    ("api-access.pangolin-sdk-toutiao-b.com", "pangle"),
    ("pglstatp-toutiao.com", "pangle"),
    ("ssdk-va.pangle.io", "pangle"),
    ("pangolin.snssdk.com", "pangle"),
    # Lemon8 -- hagezi issues 4308 and 5080
    ("www.lemon8-app.com", "lemon8"),
    ("log22-normal-useast1a.lemon8-app.com", "lemon8"),
    ("mcs-ttp.lemon8-app.us", "lemon8"),
    # Lemon8 -- image URLs in several code files (search index)
    ("p16-va.lemon8cdn.com", "lemon8"),
    ("p16-sign-sg.lemon8cdn.com", "lemon8"),
    ("p16-lemon8-sign-sg.tiktokcdn.com", "lemon8"),
    # PICO -- ALVR build script (sdk.picovr.com); hagezi issue 11422; code hits for store/OTA hosts
    ("sdk.picovr.com", "pico"),
    ("matrix-us.picovr.com", "pico"),
    ("appstore-us.picoxr.com", "pico"),
    ("store-global.picoxr.com", "pico"),
    ("lf-stone-iot-va.dlpicovr.com", "pico"),
    # Doubao / Cici / Coze -- v2fly data/doubao and data/dola; AdGuard services/dola.yml
    ("doubao.com", "doubao"),
    ("cici.com", "doubao"),
    ("dola.com", "doubao"),
    ("coze.com", "doubao"),
]


@pytest.mark.parametrize(("host", "app"), POSITIVES)
def test_real_hostnames_are_attributed_to_their_app(
    shipped_apps: AppsOf, host: str, app: str
) -> None:
    assert app in shipped_apps(host), (host, shipped_apps(host))


@pytest.mark.parametrize(
    "host",
    # Names under ByteDance infrastructure that TikTok and the other ByteDance apps both use:
    # tiktok-pihole and hagezi (snssdk, pstatp), bytedance/AdsGlobalPackage (ibytedtos, Pangle),
    # hagezi issue 2584 (ibyteimg, Pangle ads in a third-party app).
    [
        "p16-sign.byteimg.com",
        "ib.snssdk.com",
        "pull-f5-hs.flive.pstatp.com",
        "log.snssdk.com",
        "sf-tb-sg.ibytedtos.com",
        "p16-ttam-va.ibyteimg.com",
    ],
)
def test_shared_bytedance_infrastructure_is_attributed_to_both(
    shipped_apps: AppsOf, host: str
) -> None:
    assert set(shipped_apps(host)) == {"bytedance", "tiktok"}


NEGATIVES = [
    # Volcano Engine / BytePlus: cloud platforms whose customers get names under these zones.
    "tos-cn-beijing.volces.com",
    "ark.cn-beijing.volces.com",
    "customer-bucket.tos-ap-southeast-1.bytepluses.com",
    "open.volcengineapi.com",
    "cdn.customer.volccdn.com",
    "mylive.volclivedvs.com",
    "img.example.volcimagex.com",
    "mcs.volceapplog.com",  # Volcano's analytics SDK, embedded in third-party apps
    "app1.douyincloud.run",  # mini-program cloud hosting for third-party developers
    "myfunc.qingfuwu.cn",
    "www.byteplus.com",
    "www.volcengine.com",
    # Generic CDNs and DNS providers.
    "a248.e.akamai.net",
    "example.akamaized.net",
    "www.example.com.edgesuite.net",
    "example.map.fastly.net",
    "cdn.jsdelivr.net",
    # Not ByteDance.
    "www.kuaishou.com",
    "js.gifshow.com",
    "static.kspkg.com",
    "www.smartisan.com",
    "www.lark.com",  # Lark Health, unrelated to ByteDance's Lark (larksuite.com)
    "www.pico.com",
    # Look-alikes.
    "tiktok.com.evil.example",
    "nottiktok.com",
    "tiktokcdn.com.attacker.net",
    "mytiktokv.com",
    "capcut.com.example.org",
    "notpangle.io",
    "larksuite.co",
    "douyin.com.cn.example",
    "fakebytedance.com",
]


@pytest.mark.parametrize("host", NEGATIVES)
def test_shared_infrastructure_and_look_alikes_never_match_the_family(
    shipped_apps: AppsOf, host: str
) -> None:
    assert not set(shipped_apps(host)) & set(FAMILY), (host, shipped_apps(host))


def test_every_family_app_is_a_far_covered_application(shipped_catalogue: Catalogue) -> None:
    for app_id in FAMILY:
        assert COVERED_BY_FAR in shipped_catalogue.apps[app_id].regimes, app_id
        assert app_id in shipped_catalogue.regimes[COVERED_BY_FAR].apps, app_id


def test_no_family_suffix_rule_sits_on_a_cloud_platform_zone(shipped_catalogue: Catalogue) -> None:
    platform_zones = (
        "volces.com",
        "volcengineapi.com",
        "volcengine.com",
        "byteplus.com",
        "bytepluses.com",
        "volccdn.com",
        "volcimagex.com",
        "volceapplog.com",
    )
    for app_id in FAMILY:
        for rule in shipped_catalogue.apps[app_id].rules:
            if rule.match != "suffix":
                continue
            for zone in platform_zones:
                assert rule.domain != zone and not rule.domain.endswith("." + zone), (
                    f"{rule.file}:{rule.line} {rule.domain}"
                )


def test_httpdns_resolver_is_tagged(shipped_matcher: Matcher) -> None:
    match = shipped_matcher.match("dig.bdurl.net")
    assert match is not None
    assert "httpdns" in match.rule.tags


def test_pangle_is_its_own_app_not_tiktok(shipped_matcher: Matcher) -> None:
    # Pangle runs inside third-party apps: its traffic must not read as TikTok use.
    for host in ("tiktokpangle.us", "sf16-fe-tos-sg.i18n-pglstatp.com"):
        match = shipped_matcher.match(host)
        assert match is not None and match.apps == ("pangle",), (host, match)
