"""The shipped catalogue against real hostnames of Alipay, VMate, CamScanner, SHAREit, WPS Office and
DeepSeek, and against the shared infrastructure, sibling services and look-alikes that must stay out.

Every positive is a hostname seen in a public source (named in the comment above its group), not a
name made up to fit a rule; the negatives are the neighbours a careless rule would swallow. These
tests read ``domains/`` itself, so removing or widening an entry there makes one of them fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from egresswatch.catalogue import DomainRule
from egresswatch.catalogue import load_catalogue
from egresswatch.matcher import Matcher

DOMAINS = Path(__file__).resolve().parent.parent / "domains"

# The smali of an mPaaS app (cn.ledongli.ldl) that carries the Alipay client network library:
# EJkenway/Computer-Architecture-Coursework@e16d5eaedca4 (see domains/alipay.yaml for the files).
_ALIPAY_CLIENT = [
    # AlipayHttpDnsInitRunnable: the hosts the Alipay client pre-resolves through AMDC
    "mobilegw.alipay.com",
    "mygw.alipay.com",
    "mygwrc.alipay.com",
    "mygwshort.alipay.com",
    "mobilepmgw.alipay.com",
    "mcgw.alipay.com",
    "mdgw.alipay.com",
    "mugw.alipay.com",
    "amdc.alipay.com",
    "render.alipay.com",
    "mdap.alipaylog.com",
    "t.alipayobjects.com",
    "tfs.alipayobjects.com",
    "i.alipayobjects.com",
    "pic.alipayobjects.com",
    "os.alipayobjects.com",
    "zos.alipayobjects.com",
    "gw.alipayobjects.com",
    "oalipay-dl-django.alicdn.com",
    "alipay.up.django.t.taobao.com",
    "alipay.dl.django.t.taobao.com",
    "api-mayi.django.t.taobao.com",
    "up-mayi.django.t.taobao.com",
    "bkmobilegw.mybank.cn",
    # LogContext, AlipayHttpDnsClient, the payment SDK and H5 containers of the same library
    "mdap.alipay.com",
    "loggw-extiny.alipay.com",
    "loggw-exsdk.alipay.com",
    "mobilegwspdy.alipay.com",
    "mclient.alipay.com",
    "wappaygw.alipay.com",
    "openauth.alipay.com",
    "qr.alipay.com",
    "mdn.alipayobjects.com",
    "a.alipayobjects.com",
    "2018090761255717.hybrid.alipay-eco.com",
]

POSITIVES: dict[str, list[str]] = {
    "alipay": [
        *_ALIPAY_CLIENT,
        # (amdc.alipay.com is also the payment SDK's resolver: mxk0921/tb DnsValue.java)
        # Ehco1996/django-sspanel pull request 892: the Open Platform gateways
        "openapi.alipay.com",
        "openapi-sandbox.dl.alipaydev.com",
        "globalopenapi.alipay.com",
        # docs.antom.com (Alipay APIs): regional gateways, the web gateway, the developer site
        "open-na.alipay.com",
        "open-sea.alipay.com",
        "open-eu.alipay.com",
        "intlmapi.alipay.com",
        "mapi.alipaydev.com",
        "docs.antom.com",
    ],
    "vmate": [
        # the only public trace of VMate's own hosts (activity page assets)
        "publicdata.vmate.in",
    ],
    "camscanner": [
        # donglovexiao/Rewrite:CamScannerPro.js (iOS app's purchase API; MITM on both domains)
        "api.intsig.net",
        "api-cs.intsig.net",
        # camscanner-ai/camscanner-skills:README.md
        "ai-tools.camscanner.com",
        # the vendor's site
        "www.camscanner.com",
    ],
    "shareit": [
        # meltingscales/com.lenovo.anyshare.gps (jadx of the 2024 Android APK)
        "api.wshareit.com",
        "api2.wshareit.com",
        "pay.wshareit.com",
        "cdn.ushareit.com",
        "relay.ushareit.com",
        "w.ushareit.com",
        "sentry.ushareit.org",
        "api-v2.shareitgames.com",
        "gshare.cdn.shareitgames.com",
        "web.shareitlite.com",
        "zj-s.usicdn.com",
        "video-g.usicdn.com",
        "api.dalyfeds.com",
        "ladon.dalyfeds.com",
        "adcs.rqmob.com",
        "midas-api.hellay.net",
        "dt.beyla.site",
        "gamecenter-beyla.magicpig.info",
        "2118c602-ads-access-f681-1832569655.ap-southeast-1.elb.amazonaws.com",
        # Trend Micro, 2021: game-centre APK downloads
        "cdn2.gamecenter.run",
    ],
    "wps-office": [
        # PrimarchDatNT/wps_lite_core (smali of WPS Office for Android, cn.wps.moffice_i18n)
        "drive.wps.com",
        "account.wps.com",
        "msg.wps.com",
        "params.wps.com",
        "novel.wps.com",
        "moapi.wps.cn",
        "qing.wps.cn",
        "yun-api.wps.cn",
        "open-search.docer.wps.cn",
        "abroadad.cache.wpscdn.com",
        "cloud.wpscdn.com",
        "abroad-ad.kingsoft-office-service.com",
        "moupdate1.kingsoft-office-service.com",
        "api-ai-us-test.4wps.net",
        "novel-test.4wps.net",
        "meeting.kdocs.cn",
        "gateway.wpsgo.com",
        "d19a1mtic3m6gl.cloudfront.net",
        "d270073ctm6rok.cloudfront.net",
        "d3f5b94opbf105.cloudfront.net",
    ],
    "deepseek": [
        # api-docs.deepseek.com (Your First API Call)
        "api.deepseek.com",
        "platform.deepseek.com",
        "api-docs.deepseek.com",
        "deepseek-harness.github.io",
        # the web chat and DeepSeek's dsh harness code (see domains/deepseek.yaml)
        "chat.deepseek.com",
        "files.deepseeksvc.com",
        "harness-telemetry.deepseeksvc.com",
        "dsh-otel-collector.deepseeksvc.com",
    ],
}

# (host, the app it must NOT be attributed to)
NEGATIVES: list[tuple[str, str]] = [
    # Taobao's own AMDC dispatcher and the generic Django media hosts beside Alipay's tenants
    ("amdc.m.taobao.com", "alipay"),
    ("dl.django.t.taobao.com", "alipay"),
    ("api.django.t.taobao.com", "alipay"),
    ("dl-sh.django.t.taobao.com", "alipay"),
    # Alibaba's shared CDN and Taobao, in the same host list as Alipay's names
    ("gw.alicdn.com", "alipay"),
    ("img.alicdn.com", "alipay"),
    ("img01.taobaocdn.com", "alipay"),
    ("www.taobao.com", "alipay"),
    ("login.m.taobao.com", "alipay"),
    # Ant Cloud: mPaaS customers' tenant endpoints and SDK repository (carved out)
    ("cn-hangzhou-mgs-gw.cloud.alipay.com", "alipay"),
    ("cn-hangzhou-mps-api.cloud.alipay.com", "alipay"),
    ("cn-hangzhou-mrtc.cloud.alipay.com", "alipay"),
    ("mvn.cloud.alipay.com", "alipay"),
    # mPaaS on Alibaba Cloud, a customer's object storage, Alibaba Cloud HTTPDNS
    ("mgw.mpaas.cn-hangzhou.aliyuncs.com", "alipay"),
    ("mdap.mpaas.cn-hangzhou.aliyuncs.com", "alipay"),
    ("hz-ldlpic.oss-cn-hangzhou.aliyuncs.com", "alipay"),
    ("httpdns-api.aliyuncs.com", "alipay"),
    ("203.107.1.1", "alipay"),
    # Alibaba and Ant siblings
    ("restapi.amap.com", "alipay"),
    ("www.mybank.cn", "alipay"),
    ("www.dingtalk.com", "alipay"),
    ("www.aliexpress.com", "alipay"),
    ("www.antfortune.com", "alipay"),
    # look-alikes
    ("notalipay.com", "alipay"),
    ("alipay.com.evil.example", "alipay"),
    ("myalipayobjects.com", "alipay"),
    # VidMate (another app), VMate AI (another product), UC's browser
    ("api.v-mate.mobi", "vmate"),
    ("api.vmate.ai", "vmate"),
    ("vmate.app", "vmate"),  # a music player of the same name
    ("www.ucweb.com", "vmate"),
    ("vmate.in.evil.example", "vmate"),
    # INTSIG's OCR API platform, look-alikes
    ("api.textin.com", "camscanner"),
    ("scamscanner.com", "camscanner"),
    ("camscanner.com.evil.example", "camscanner"),
    # partner game sites and third-party SDKs inside SHAREit, other tenants of AWS
    ("www.viyfun.com", "shareit"),
    ("www.h5safe.com", "shareit"),
    ("api.kickoffo.site", "shareit"),
    ("aa.birdgesdk.com", "shareit"),
    ("dtcy0bqpv6jys.cloudfront.net", "shareit"),
    ("s3-us-west-2.amazonaws.com", "shareit"),
    ("other-lb-1.ap-southeast-1.elb.amazonaws.com", "shareit"),
    ("notushareit.com", "shareit"),
    # Kingsoft Cloud (one-click login, HTTPDNS, CDN), the consent SDK, other CloudFront tenants
    ("onelogin-api.ksyun.com", "wps-office"),
    ("onelogin.api.sdns.ksyun.com", "wps-office"),
    ("hdns.ksyun.com", "wps-office"),
    ("www.ksyuncdn.com", "wps-office"),
    ("wrapper-api.sp-prod.net", "wps-office"),
    ("d4z1onkegyrs5.cloudfront.net", "wps-office"),
    ("www.cheetahmobile.com", "wps-office"),
    ("wps.com.evil.example", "wps-office"),
    ("www.wpsio.com", "wps-office"),  # an unofficial download site
    # third-party domains, Volcano Engine (the iOS app's analytics cloud), other GitHub Pages
    ("deepseek.ai", "deepseek"),
    ("www.deepseek.cn", "deepseek"),
    ("notdeepseek.com", "deepseek"),
    ("deepseek.com.evil.example", "deepseek"),
    ("ark.cn-beijing.volces.com", "deepseek"),
    ("example.github.io", "deepseek"),
]


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.from_catalogue(load_catalogue([DOMAINS]))


def _apps(matcher: Matcher, host: str) -> tuple[str, ...]:
    match = matcher.match(host)
    return match.apps if match else ()


def _rule(matcher: Matcher, host: str) -> DomainRule:
    match = matcher.match(host)
    assert match is not None, host
    assert isinstance(match.rule, DomainRule)
    return match.rule


@pytest.mark.parametrize(
    ("app", "host"), [(app, host) for app, hosts in POSITIVES.items() for host in hosts]
)
def test_real_hostname_is_attributed_to_its_app(matcher: Matcher, app: str, host: str) -> None:
    assert _apps(matcher, host) == (app,)


@pytest.mark.parametrize(("host", "app"), NEGATIVES)
def test_neighbour_is_not_attributed_to_the_app(matcher: Matcher, host: str, app: str) -> None:
    assert app not in _apps(matcher, host)


@pytest.mark.parametrize(
    ("host", "tag"),
    [
        ("amdc.alipay.com", "httpdns"),
        ("mdap.alipay.com", "telemetry"),
        ("mdap.alipaylog.com", "telemetry"),
        ("harness-telemetry.deepseeksvc.com", "telemetry"),
        ("oalipay-dl-django.alicdn.com", "shared-parent"),
        ("d19a1mtic3m6gl.cloudfront.net", "shared-parent"),
    ],
)
def test_deciding_rule_carries_the_tag(matcher: Matcher, host: str, tag: str) -> None:
    assert tag in _rule(matcher, host).tags


def test_names_under_shared_parents_are_exact_rules(matcher: Matcher) -> None:
    # A name under a shared (or a sibling service's) parent must never come from a suffix rule:
    # the next tenant under the same parent would be swallowed with it.
    for host in (
        "oalipay-dl-django.alicdn.com",
        "alipay.up.django.t.taobao.com",
        "api-mayi.django.t.taobao.com",
        "bkmobilegw.mybank.cn",
        "2118c602-ads-access-f681-1832569655.ap-southeast-1.elb.amazonaws.com",
        "d3f5b94opbf105.cloudfront.net",
        "deepseek-harness.github.io",
    ):
        rule = _rule(matcher, host)
        assert (rule.domain, rule.match) == (host, "exact")
        assert matcher.match("x." + host) is None


def test_ant_cloud_is_carved_out_of_alipay_but_alipay_com_is_not(matcher: Matcher) -> None:
    assert _apps(matcher, "cloud.alipay.com") == ()
    assert _apps(matcher, "a.b.cloud.alipay.com") == ()
    assert _apps(matcher, "cloudx.alipay.com") == ("alipay",)
    assert _apps(matcher, "alipay.com") == ("alipay",)


def test_guessed_vmate_name_is_marked_as_a_guess(matcher: Matcher) -> None:
    rule = _rule(matcher, "www.vmate.com")
    assert rule.confidence == "low"
    assert "inferred" in rule.tags
