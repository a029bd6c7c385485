"""WeChat, WeChat Pay, Tencent QQ and QQ Wallet in the shipped catalogue.

Every positive row is a hostname seen in the source named in the comment above its group (the same
sources the YAML rows cite; see /work/handoff/tencent-SOURCES.md). The negatives are Tencent's
shared infrastructure (Tencent Cloud customer zones, the shared picture and static CDNs), Tencent's
other products under qq.com, WeCom (not designated), and look-alike names. The split between WeChat
and QQ under Tencent's shared parents (qq.com, qpic.cn, qlogo.cn, gtimg.cn, tc.qq.com, video.qq.com)
is the point of most rows.
"""

from __future__ import annotations

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.matcher import Matcher

from tests.plugins.catalogue import AppsOf

TENCENT_APPS = ("wechat", "wechat-pay", "tencent-qq", "qq-wallet")


POSITIVES: list[tuple[str, str]] = [
    # WeChat -- Tencent/mars stn/test_cases (hostorder_test.cc, shortlink_ipswitch_test.cc)@6aa5b567afad
    ("long.weixin.qq.com", "wechat"),
    ("short.weixin.qq.com", "wechat"),
    ("szshort.weixin.qq.com", "wechat"),
    ("sh2tjlong.weixin.qq.com", "wechat"),
    ("sz2tjextshort.weixin.qq.com", "wechat"),
    ("support.weixin.qq.com", "wechat"),
    # WeChat -- WeChat's own domain table (citizenlab/wechat-security-report autoauth-response.json)
    ("dns.weixin.qq.com", "wechat"),
    ("extshort.weixin.qq.com", "wechat"),
    ("minorshort.weixin.qq.com", "wechat"),
    ("quic.weixin.qq.com", "wechat"),
    ("findershort.weixin.qq.com", "wechat"),
    ("sgshort.wechat.com", "wechat"),
    ("sglong.wechat.com", "wechat"),
    ("usdns.wechat.com", "wechat"),
    ("wximg.qq.com", "wechat"),
    ("wxtest.qq.com", "wechat"),
    ("wx.mail.qq.com", "wechat"),
    ("game.weinxin.qq.com", "wechat"),
    ("weixin110.qq.com", "wechat"),
    ("wxa.wxs.qq.com", "wechat"),
    ("wxsnsdythumb.wxs.qq.com", "wechat"),
    ("vweixinf.tc.qq.com", "wechat"),
    ("wwcdn.weixin.qq.com", "wechat"),
    # WeChat -- capture of WeChat for macOS 3.8.0 (mincong-h/mincong-h.github.io, 2023-05-29 post)
    ("mmbiz.qpic.cn", "wechat"),
    ("mmbiz.qlogo.cn", "wechat"),
    ("szmmsns.qpic.cn", "wechat"),
    ("shmmsns.qpic.cn", "wechat"),
    ("cmmsns.qpic.cn", "wechat"),
    ("mmsns.qpic.wechatos.net", "wechat"),
    ("wxapp.tc.qq.com", "wechat"),
    ("vweixinthumb.tc.qq.com", "wechat"),
    ("socwxsns.video.qq.com", "wechat"),
    ("mmhead.c2c.wechat.com", "wechat"),
    ("mmsns.c2c.wechat.com", "wechat"),
    ("res.wx.qq.com", "wechat"),
    ("channels.weixin.qq.com", "wechat"),
    ("soup.v.qq.com", "wechat"),
    ("findermp.video.qq.com", "wechat"),
    ("finder.video.qq.com", "wechat"),
    ("mp.weixin.qq.com", "wechat"),
    ("wx.qlogo.cn", "wechat"),
    ("badjs.weixinbridge.com", "wechat"),
    # WeChat -- web WeChat clients (littlecodersh/ItChat login.py, goorockey/node-wechat-terminal)
    ("login.weixin.qq.com", "wechat"),
    ("wx2.qq.com", "wechat"),
    ("file.wx2.qq.com", "wechat"),
    ("webpush.wx2.qq.com", "wechat"),
    ("wx8.qq.com", "wechat"),
    ("webpush.wx8.qq.com", "wechat"),
    ("file.wx.qq.com", "wechat"),
    ("webpush.wx.qq.com", "wechat"),
    ("login.wx.qq.com", "wechat"),
    ("webpush2.weixin.qq.com", "wechat"),
    ("file.web2.wechat.com", "wechat"),
    ("login.wechat.com", "wechat"),
    # WeChat -- Channels downloader (ltaoo/wx_channels_download) and WxJava API docs/tests
    ("mpvideo.qpic.cn", "wechat"),
    ("stodownload.wxapp.tc.qq.com", "wechat"),
    ("szfilehelper.weixin.qq.com", "wechat"),
    ("vweixinp.tc.qq.com", "wechat"),
    ("api.weixin.qq.com", "wechat"),
    ("open.weixin.qq.com", "wechat"),
    ("developers.weixin.qq.com", "wechat"),
    ("servicewechat.com", "wechat"),
    # WeChat Pay -- wechatpay-go consts, IJPay WxDomain, WxJava pay beans
    ("api.mch.weixin.qq.com", "wechat-pay"),
    ("api2.mch.weixin.qq.com", "wechat-pay"),
    ("apihk.mch.weixin.qq.com", "wechat-pay"),
    ("apius.mch.weixin.qq.com", "wechat-pay"),
    ("fraud.mch.weixin.qq.com", "wechat-pay"),
    ("payapp.weixin.qq.com", "wechat-pay"),
    ("pay.weixin.qq.com", "wechat-pay"),
    ("wx.tenpay.com", "wechat-pay"),
    ("pay.wechatpay.cn", "wechat-pay"),
    # WeChat Pay -- in-app payment connections in WeChat's own domain table (Citizen Lab)
    ("short.pay.weixin.qq.com", "wechat-pay"),
    ("sgshort.pay.wechat.com", "wechat-pay"),
    ("short.snspay.wechatpay.cn", "wechat-pay"),
    ("szshort.mixpay.wechatpay.cn", "wechat-pay"),
    ("hkshort.snspay.wechatpay.cn", "wechat-pay"),
    ("sgshort.snspay.wechat.com", "wechat-pay"),
    ("sgshort.mixpay.wechat.com", "wechat-pay"),
    ("payapp.wechat.com", "wechat-pay"),
    ("uspay.wechat.com", "wechat-pay"),
    # Tencent QQ -- MiraiGo / mirai / Lagrange.Core / NapCatQQ protocol and web hosts
    ("msfwifi.3g.qq.com", "tencent-qq"),
    ("msfwifiv6.3g.qq.com", "tencent-qq"),
    ("configsvr.msf.3g.qq.com", "tencent-qq"),
    ("multimedia.nt.qq.com.cn", "tencent-qq"),
    ("multimedia.qfile.qq.com", "tencent-qq"),
    ("oidb.tim.qq.com", "tencent-qq"),
    ("ntlogin.qq.com", "tencent-qq"),
    ("grouptalk.c2c.qq.com", "tencent-qq"),
    ("htdata2.qq.com", "tencent-qq"),
    ("htdata3.qq.com", "tencent-qq"),
    ("ssl.htdata.qq.com", "tencent-qq"),
    ("qinfo.clt.qq.com", "tencent-qq"),
    ("qun.qq.com", "tencent-qq"),
    ("web.qun.qq.com", "tencent-qq"),
    ("ti.qq.com", "tencent-qq"),
    ("gxh.vip.qq.com", "tencent-qq"),
    ("user.qzone.qq.com", "tencent-qq"),
    ("h5.qzone.qq.com", "tencent-qq"),
    ("taotao.qzone.qq.com", "tencent-qq"),
    ("u.photo.qzone.qq.com", "tencent-qq"),
    ("ssl.ptlogin2.qq.com", "tencent-qq"),
    ("accounts.qq.com", "tencent-qq"),
    ("qm.qq.com", "tencent-qq"),
    ("bot.q.qq.com", "tencent-qq"),
    ("im.qq.com", "tencent-qq"),
    ("huifu.qq.com", "tencent-qq"),
    ("keyrotate.qq.com", "tencent-qq"),
    ("snowflake.qq.com", "tencent-qq"),
    # Tencent QQ -- under the shared CDNs (mirai, NapCatQQ, MiraiGo)
    ("gchat.qpic.cn", "tencent-qq"),
    ("c2cpicdw.qpic.cn", "tencent-qq"),
    ("gdynamic.qpic.cn", "tencent-qq"),
    ("q.qlogo.cn", "tencent-qq"),
    ("q1.qlogo.cn", "tencent-qq"),
    ("q2.qlogo.cn", "tencent-qq"),
    ("p.qlogo.cn", "tencent-qq"),
    ("thirdqq.qlogo.cn", "tencent-qq"),  # BingChunMoLi/MoLiAPI QQ avatar API document
    ("qqdl.gtimg.cn", "tencent-qq"),
    ("miniapp.gtimg.cn", "tencent-qq"),
    # QQ Wallet -- QPay SDKs, decompiled QQ client, Tenpay CGIs
    ("qpay.qq.com", "qq-wallet"),
    ("api.qpay.qq.com", "qq-wallet"),
    ("h5.qianbao.qq.com", "qq-wallet"),
    ("i.qianbao.qq.com", "qq-wallet"),
    ("mp.qpay.tenpay.cn", "qq-wallet"),
    ("mp.qpay.tenpay.com", "qq-wallet"),
    ("myun.tenpay.com", "qq-wallet"),
    ("mqq.tenpay.com", "qq-wallet"),
]


@pytest.mark.parametrize(("host", "app"), POSITIVES)
def test_real_hostnames_are_attributed_to_their_app(
    shipped_apps: AppsOf, host: str, app: str
) -> None:
    assert shipped_apps(host) == (app,), (host, shipped_apps(host))


# Names that two apps really share: attributed to both, never to a third.
SHARED: list[tuple[str, set[str]]] = [
    ("dldir1.qq.com", {"wechat", "tencent-qq"}),  # /weixin/... and /qqfile/... installers
    ("dldir1v6.qq.com", {"wechat", "tencent-qq"}),
    ("p.qpic.cn", {"wechat", "tencent-qq"}),  # WeChat capture; QQ custom faces
    ("q3.qlogo.cn", {"tencent-qq"}),  # unlisted QQ avatar host: the q# pattern, not the shared row
    ("x3.qlogo.cn", {"wechat", "tencent-qq"}),  # any other unlisted host: the shared qlogo.cn row
    ("www.tenpay.com", {"wechat", "wechat-pay", "qq-wallet"}),
    ("wechatpay.cn", {"wechat", "wechat-pay"}),
]


@pytest.mark.parametrize(("host", "apps"), SHARED)
def test_shared_names_go_to_exactly_their_claimants(
    shipped_apps: AppsOf, host: str, apps: set[str]
) -> None:
    assert set(shipped_apps(host)) == apps, host


NEGATIVES: list[str] = [
    # Tencent Cloud customer zones and Tencent Cloud services
    "examplebucket-1250000000.cos.ap-guangzhou.myqcloud.com",
    "customer.file.myqcloud.com",
    "cvm.tencentcloudapi.com",
    "www.tencentcloud.com",
    "cloud.tencent.com",
    "console.qcloud.com",
    "img.example.tencentcs.com",
    "customer.cdn-go.cn",
    "aegis.qq.com",  # Tencent Cloud RUM, loaded by any customer's site
    # Tencent's shared picture and static CDNs (other products' hosts)
    "qpic.cn",
    "puui.qpic.cn",  # Tencent Video posters
    "shp.qpic.cn",
    "gtimg.cn",
    "i.gtimg.cn",
    "mat1.gtimg.com",
    "y.gtimg.cn",
    "lbs.gtimg.com",  # Tencent Maps static assets
    "captcha.gtimg.com",
    "tc.qq.com",
    "apd-vlive.apdcdn.tc.qq.com",
    # Tencent's other products under qq.com
    "news.qq.com",
    "new.qq.com",
    "www.qq.com",
    "v.qq.com",
    "film.video.qq.com",
    "vd.video.qq.com",
    "y.qq.com",
    "u.y.qq.com",
    "music.qq.com",
    "stream20.qqmusic.qq.com",
    "kg.qq.com",
    "map.qq.com",
    "apis.map.qq.com",
    "lbs.qq.com",
    "mail.qq.com",
    "exmail.qq.com",
    "docs.qq.com",
    "meeting.qq.com",
    "isee.weishi.qq.com",
    "ssr.view.inews.qq.com",
    "api.unipay.qq.com",
    "tech.qq.com",
    "ugcbsy.qq.com",
    "jiazhang.qq.com",
    "appicsh.qq.com",
    "kf.qq.com",
    # SDK services that third-party apps and sites embed
    "wup.imtt.qq.com",
    "log.tbs.qq.com",
    "android.bugly.qq.com",
    "otheve.beacon.qq.com",
    "mi.gdt.qq.com",
    "e.qq.com",
    "pingjs.qq.com",
    "tajs.qq.com",
    "h.trace.qq.com",
    "ssl.captcha.qq.com",
    # Public resolver (DNSPod public DNS), not an app
    "doh.pub",
    "dot.pub",
    # WeCom (企业微信): not designated
    "work.weixin.qq.com",
    "open.work.weixin.qq.com",
    "developer.work.weixin.qq.com",
    "qyapi.weixin.qq.com",
    "qydev.weixin.qq.com",
    "work.wechat.com",
    "uswork.wechat.com",
    "wwlocal.qq.com",
    # Look-alikes
    "weixin.qq.com.evil.example",
    "notqq.com",
    "qq.com.evil.example",
    "notweixin.qq.com.example",
    "fakewechat.com",
    "wechat.com.attacker.example",
    "mytenpay.com",
    "xqpic.cn",
    "qlogo.cn.evil.example",
]


@pytest.mark.parametrize("host", NEGATIVES)
def test_shared_infrastructure_and_look_alikes_are_no_tencent_app(
    shipped_apps: AppsOf, host: str
) -> None:
    assert not set(shipped_apps(host)) & set(TENCENT_APPS), (host, shipped_apps(host))


def test_no_tencent_app_claims_a_shared_cdn_parent_as_a_suffix(
    shipped_catalogue: Catalogue,
) -> None:
    """qpic.cn, gtimg.cn/com, tc.qq.com and video.qq.com carry every Tencent product's media."""
    shared_parents = {
        "qpic.cn",
        "gtimg.cn",
        "gtimg.com",
        "tc.qq.com",
        "video.qq.com",
        "myqcloud.com",
    }
    for app_id in TENCENT_APPS:
        for rule in shipped_catalogue.apps[app_id].rules:
            assert rule.domain not in shared_parents, (app_id, rule.domain)


def test_wechat_httpdns_endpoints_are_tagged(shipped_matcher: Matcher) -> None:
    """WeChat's own name service must be recognisable as DNS-over-HTTP, not just as WeChat."""
    for host in ("dns.weixin.qq.com", "dns.wechat.com", "usdns.wechat.com"):
        match = shipped_matcher.match(host)
        assert match is not None and match.app == "wechat", host
        assert "httpdns" in match.rule.tags, host


def test_wecom_is_carved_out_of_both_wechat_and_qq(shipped_catalogue: Catalogue) -> None:
    """Without the QQ carve-out, WeCom would fall through WeChat's carve-out to QQ's broad qq.com."""
    wechat = {c.domain for c in shipped_catalogue.apps["wechat"].carve_outs}
    qq = {c.domain for c in shipped_catalogue.apps["tencent-qq"].carve_outs}
    wecom = {"work.weixin.qq.com", "qyapi.weixin.qq.com", "qydev.weixin.qq.com"}
    assert wecom <= wechat
    assert wecom <= qq


# --- label patterns: numbered and regional siblings no source has listed yet -------------------
@pytest.mark.parametrize(
    ("host", "app"),
    [
        ("wx3.qq.com", "wechat"),  # wx# under qq.com, subtree
        ("login.wx5.qq.com", "wechat"),
        ("hkmmsns.qpic.cn", "wechat"),  # *mmsns under qpic.cn, name only
        ("findernew.video.qq.com", "wechat"),  # finder* under video.qq.com
        ("vweixinx.tc.qq.com", "wechat"),  # vweixin* under tc.qq.com
        ("q4.qlogo.cn", "tencent-qq"),  # q# under qlogo.cn
    ],
)
def test_label_patterns_attribute_unseen_siblings(
    shipped_matcher: Matcher, host: str, app: str
) -> None:
    found = shipped_matcher.match(host)
    assert found is not None and found.app == app, (host, found)
    assert found.rule.note.startswith("pattern "), found.rule


@pytest.mark.parametrize(
    ("host", "app"),
    [
        ("wxs2.qq.com", "tencent-qq"),  # not wx + digits: QQ's qq.com fallback, not WeChat
        ("a.hkmmsns.qpic.cn", None),  # *mmsns is scope name: nothing below it
        ("v.video.qq.com", None),  # Tencent Video stays carved out
        ("apd-vlive.apdcdn.tc.qq.com", None),  # Tencent-wide CDN host under tc.qq.com
        ("q4.qlogo.cn.evil.example", None),
    ],
)
def test_label_patterns_do_not_overreach(
    shipped_matcher: Matcher, host: str, app: str | None
) -> None:
    found = shipped_matcher.match(host)
    assert (found.app if found else None) == app, (host, found)
