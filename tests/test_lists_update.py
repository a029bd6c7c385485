"""``egresswatch lists update`` against fixture lists served on loopback (never the internet)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.cli import main
from egresswatch.fetch import FetchError
from egresswatch.fetch import fetch
from egresswatch.proxy.reload import Poller
from egresswatch.sources import parse_sources

from tests.support.listserver import ListServer
from tests.support.listserver import Reply

DATA = Path(__file__).parent / "data" / "import"

HOSTS = "# demo hosts\n0.0.0.0 ads.demo-hosts.example t.demo-hosts.example\n0.0.0.0 com\n"
V2FLY = """# demo v2fly data file
domain:demo-v2.example @ads
full:login.demo-v2.example
include:elsewhere
regexp:^x[0-9]+\\.demo-v2\\.example$
"""
ADGUARD = """id: demo
name: Demo Service
rules:
  - '||demo-ag.example^'
  - '|exact.demo-ag.example^'
  - '||demo-ag.example/path^'
"""
PLAIN = "one.demo-plain.example\ntwo.demo-plain.example\nthree.demo-plain.example\n"
RANGES = """{
  "syncToken": "1",
  "prefixes": [
    {"ip_prefix": "198.51.100.0/24", "service": "DEMO"},
    {"ip_prefix": "203.0.113.0/25", "service": "OTHER"},
    {"ip_prefix": "192.0.2.7/24", "service": "DEMO"}
  ],
  "ipv6_prefixes": [{"ipv6_prefix": "2001:db8:10::/48", "service": "DEMO"}]
}"""


@pytest.fixture
def server() -> Iterator[ListServer]:
    s = ListServer().start()
    yield s
    s.stop()


def write_sources(path: Path, *sources: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"sources": list(sources)}, sort_keys=False))
    return path


def src(url: str, fmt: str, app: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "format": fmt, "app": app, "sha256": "review", **extra}


def update(sources: Path, into: Path, *extra: str) -> int:
    return main(
        ["lists", "update", "--sources", str(sources), "--into", str(into), "--accept", *extra]
    )


def plain_source(server: ListServer, tmp_path: Path) -> Path:
    """A sources file with one review source: PLAIN served at /p, feeding app demo-plain."""
    return write_sources(tmp_path / "s.yaml", src(server.serve("/p", PLAIN), "plain", "demo-plain"))


def first_update(server: ListServer, tmp_path: Path) -> tuple[Path, Path]:
    """:func:`plain_source` updated once into ``tmp_path/lists``: the sources file and the
    generated file (demo-plain.yaml)."""
    sources = plain_source(server, tmp_path)
    assert update(sources, tmp_path / "lists") == 0
    return sources, tmp_path / "lists" / "demo-plain.yaml"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- every format -------------------------------------------------------------------------------


def test_every_format_writes_a_loadable_catalogue(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = write_sources(
        tmp_path / "sources.yaml",
        src(server.serve("/hosts", HOSTS), "hosts", "demo-hosts"),
        src(server.serve("/adblock", (DATA / "adblock.txt").read_bytes()), "adblock", "demo-ab"),
        src(server.serve("/plain", PLAIN), "plain", "demo-plain", confidence="low", tags=["t1"]),
        src(server.serve("/v2fly", V2FLY), "v2fly", "demo-v2"),
        src(server.serve("/adguard", ADGUARD), "adguard", "demo-ag"),
        src(
            server.serve("/ranges.json", RANGES),
            "ranges-json",
            "tiktok",
            id="tiktok-ranges",
            json_path=["prefixes[service=DEMO].ip_prefix", "ipv6_prefixes[].ipv6_prefix"],
        ),
    )
    into = tmp_path / "lists"
    assert update(sources, into) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in into.iterdir()) == [
        "demo-ab.yaml",
        "demo-ag.yaml",
        "demo-hosts.yaml",
        "demo-plain.yaml",
        "demo-v2.yaml",
        "tiktok-ranges.yaml",
    ]
    cat = load_catalogue([bundled_dir(), into])
    names = {a: sorted(r.domain for r in cat.apps[a].rules) for a in cat.apps if a[:5] == "demo-"}
    assert names == {
        "demo-hosts": ["ads.demo-hosts.example", "t.demo-hosts.example"],  # 'com' screened out
        "demo-ab": [
            "cdn.demo-static.example",
            "demo.example",
            "exact.demo.example",
            "tracker.demo.example",
        ],
        "demo-plain": [
            "one.demo-plain.example",
            "three.demo-plain.example",
            "two.demo-plain.example",
        ],
        "demo-v2": ["demo-v2.example", "login.demo-v2.example"],
        "demo-ag": ["demo-ag.example", "exact.demo-ag.example"],
    }
    assert cat.apps["demo-ag"].name == "Demo Service"  # the AdGuard file's own name
    v2 = {r.domain: (r.match, r.tags) for r in cat.apps["demo-v2"].rules}
    assert v2 == {"demo-v2.example": ("suffix", ("ads",)), "login.demo-v2.example": ("exact", ())}
    assert "skipped 'include:elsewhere': include: needs a file path" in out
    plain = cat.apps["demo-plain"].rules[0]
    assert (plain.confidence, plain.tags, plain.match) == ("low", ("t1",), "suffix")
    # the ranges extend the bundled app; the host-bits and filtered-out prefixes are not there
    mine = [c for c in cat.apps["tiktok"].cidrs if c.file == str(into / "tiktok-ranges.yaml")]
    assert sorted(str(c.network) for c in mine) == ["198.51.100.0/24", "2001:db8:10::/48"]
    body = (server.url("/ranges.json"), hashlib.sha256(RANGES.encode()).hexdigest())
    assert mine[0].source.startswith(f"{body[0]} (retrieved ") and body[1] in mine[0].source
    assert "host bits set (did you mean 192.0.2.0/24?)" in out
    assert "'akamaized.net' is shared infrastructure" in out  # screened like lists import
    # the written directory passes the check the proxy's reload applies
    assert main(["lists", "check", "--with-bundled", str(into)]) == 0


def test_diff_output_names_added_removed_and_their_source(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/plain", PLAIN)
    sources = write_sources(tmp_path / "s.yaml", src(url, "plain", "demo-plain"))
    into = tmp_path / "lists"
    assert update(sources, into) == 0
    first = capsys.readouterr().out
    sha1 = hashlib.sha256(PLAIN.encode()).hexdigest()
    assert "  + suffix one.demo-plain.example" in first.splitlines()
    assert f"sha256 {sha1}" in first and "3 added, 0 removed" in first

    new = "one.demo-plain.example\ntwo.demo-plain.example\nfour.demo-plain.example\n"
    server.serve("/plain", new)
    assert update(sources, into, "--max-removed-share", "0.5") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  + suffix four.demo-plain.example" in lines
    sha2 = hashlib.sha256(new.encode()).hexdigest()
    assert any(
        line.startswith(f"   source of the + and ~ entries: {url} (retrieved ")
        and line.endswith(f", sha256 {sha2})")
        for line in lines
    )
    removed = next(line for line in lines if line.startswith("  - "))
    assert removed.startswith("  - suffix three.demo-plain.example    (from ")
    assert f"{url} (retrieved " in removed and sha1 in removed  # the old provenance
    assert any("1 added, 1 removed, 0 changed, 2 unchanged" in line for line in lines)
    assert any(line.startswith("== demo-plain (new app) <- source 'demo-plain'") for line in lines)

    # same entries again: nothing to do, the file is not rewritten
    before = (into / "demo-plain.yaml").stat().st_mtime_ns
    assert update(sources, into) == 0
    assert "unchanged: no change" in capsys.readouterr().out
    assert (into / "demo-plain.yaml").stat().st_mtime_ns == before


# --- checksums and review ------------------------------------------------------------------------


def test_pinned_checksum_ok_and_mismatch(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/plain", PLAIN)
    pinned = hashlib.sha256(PLAIN.encode()).hexdigest()
    sources = write_sources(tmp_path / "s.yaml", src(url, "plain", "demo-plain", sha256=pinned))
    into = tmp_path / "lists"
    # a pinned source needs no --accept
    assert main(["lists", "update", "--sources", str(sources), "--into", str(into)]) == 0
    old = (into / "demo-plain.yaml").read_bytes()
    capsys.readouterr()

    server.serve("/plain", PLAIN + "evil.demo-plain.example\n")
    assert main(["lists", "update", "--sources", str(sources), "--into", str(into)]) == 1
    out = capsys.readouterr().out
    assert f"REFUSED: checksum mismatch: {url} has sha256 " in out
    assert f"the sources file pins {pinned}" in out and "(the old file is unchanged)" in out
    assert (into / "demo-plain.yaml").read_bytes() == old


def test_review_source_is_written_only_with_accept(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = plain_source(server, tmp_path)
    into = tmp_path / "lists"
    assert main(["lists", "update", "--sources", str(sources), "--into", str(into)]) == 0
    out = capsys.readouterr().out
    assert "  + suffix two.demo-plain.example" in out.splitlines()
    assert f"pin sha256: {hashlib.sha256(PLAIN.encode()).hexdigest()}" in out
    assert "REVIEW: review source: not written" in out
    assert not (into / "demo-plain.yaml").exists()
    assert update(sources, into) == 0
    assert (into / "demo-plain.yaml").is_file()


# --- fetch failures -------------------------------------------------------------------------------


def test_unreachable_source_is_refused_after_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/list.txt"
    sources = write_sources(tmp_path / "s.yaml", src(url, "plain", "demo-plain"))
    into = tmp_path / "lists"
    into.mkdir()
    old = "# Written by egresswatch lists update from source 'demo-plain' (earlier).\nid: x\n"
    (into / "demo-plain.yaml").write_text(old)
    assert update(sources, into, "--retries", "0") == 1
    out = capsys.readouterr().out
    assert f"REFUSED: cannot fetch {url}: cannot connect" in out
    assert (into / "demo-plain.yaml").read_text() == old


def test_fetch_retries_with_backoff(server: ListServer) -> None:
    url = server.route("/flaky", Reply(503), Reply(502), Reply(200, b"ok.example\n"))
    waits: list[float] = []
    got = fetch(url, retries=2, backoff=0.5, sleep=waits.append)
    assert (got.body, got.attempts, waits) == (b"ok.example\n", 3, [0.5, 1.0])
    server.route("/down", Reply(503))
    with pytest.raises(FetchError, match="HTTP 503") as e:
        fetch(server.url("/down"), retries=1, backoff=0, sleep=waits.append)
    assert e.value.attempts == 2 and server.hits["/down"] == 2
    server.route("/gone", Reply(404))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(server.url("/gone"), retries=3, backoff=0)
    assert server.hits["/gone"] == 1  # a 404 is not transient


def test_retry_after_transient_503_through_the_cli(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.route("/p", Reply(503), Reply(200, PLAIN.encode()))
    sources = write_sources(tmp_path / "s.yaml", src(url, "plain", "demo-plain"))
    assert update(sources, tmp_path / "lists", "--retries", "1") == 0
    assert "2 attempt(s)" in capsys.readouterr().out
    assert server.hits["/p"] == 2


def test_slow_server_times_out(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.route("/slow", Reply(200, PLAIN.encode(), delay=2.0))
    sources = write_sources(tmp_path / "s.yaml", src(url, "plain", "demo-plain"))
    assert update(sources, tmp_path / "lists", "--timeout", "0.3", "--retries", "0") == 1
    assert "timed out after 0.3 s" in capsys.readouterr().out
    assert not (tmp_path / "lists" / "demo-plain.yaml").exists()


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "streamed"])
def test_oversized_body_is_refused(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], length: bool
) -> None:
    body = b"x.demo-plain.example\n" * 20_000  # 420 kB
    url = server.route("/big", Reply(200, body, length=length))
    sources = write_sources(tmp_path / "s.yaml", src(url, "plain", "demo-plain"))
    assert update(sources, tmp_path / "lists", "--max-bytes", "100000") == 1
    out = capsys.readouterr().out
    assert ("over the limit of 100000" if length else "exceeds the limit of 100000 bytes") in out


def test_redirect_to_a_non_http_scheme_is_refused(server: ListServer) -> None:
    url = server.route("/r", Reply(302, headers={"Location": "ftp://127.0.0.1/list"}))
    with pytest.raises(FetchError, match="redirect to a ftp: URL refused"):
        fetch(url, retries=0)
    url = server.route("/f", Reply(302, headers={"Location": "file:///etc/passwd"}))
    with pytest.raises(FetchError, match="is not allowed"):  # urllib's own refusal
        fetch(url, retries=0)
    server.serve("/target", "ok.example\n")
    ok = server.route("/r2", Reply(301, headers={"Location": server.url("/target")}))
    assert fetch(ok, retries=0).final_url == server.url("/target")


# --- refusals on content --------------------------------------------------------------------------


def test_removal_share_refusal_keeps_the_old_file(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources, generated = first_update(server, tmp_path)
    old = generated.read_bytes()
    capsys.readouterr()
    server.serve("/p", "one.demo-plain.example\n")  # removes 2 of 3
    assert update(sources, generated.parent) == 1
    out = capsys.readouterr().out
    assert "REFUSED: the update would remove 2 of 3 entries (67%), more than the allowed 20%" in out
    assert generated.read_bytes() == old
    # a per-source share in the sources file overrides the command line
    write_sources(sources, src(server.url("/p"), "plain", "demo-plain", max_removed_share=0.7))
    assert update(sources, generated.parent) == 0
    assert "one.demo-plain.example" in generated.read_text()


@pytest.mark.parametrize(
    ("body", "fmt", "message"),
    [
        ("# nothing here\n", "plain", "yields no usable name or range"),
        ("com\nnet\n", "plain", "yields no usable name or range (2 item(s) skipped)"),
        ("{not json", "ranges-json", "does not parse as ranges-json: not valid JSON"),
        ("rules: 3\n", "adguard", "does not parse as adguard"),
    ],
)
def test_unparsable_or_empty_list_is_refused(
    server: ListServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: str,
    fmt: str,
    message: str,
) -> None:
    sources = write_sources(tmp_path / "s.yaml", src(server.serve("/x", body), fmt, "demo-x"))
    assert update(sources, tmp_path / "lists") == 1
    assert message in capsys.readouterr().out
    assert not (tmp_path / "lists" / "demo-x.yaml").exists()


def test_output_failing_lists_check_is_refused(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an extends file for an app that exists nowhere would not load
    url = server.serve("/p", PLAIN)
    sources = write_sources(
        tmp_path / "s.yaml",
        {"url": url, "format": "plain", "extends": "no-such-app", "sha256": "review"},
    )
    assert update(sources, tmp_path / "lists") == 1
    out = capsys.readouterr().out
    assert "would not pass 'egresswatch lists check'" in out
    assert f"{tmp_path / 'lists' / 'no-such-app.yaml'}:" in out and "no such app" in out
    assert not (tmp_path / "lists" / "no-such-app.yaml").exists()


# --- dry run, bundled directory, sources file --------------------------------------------------------


def test_dry_run_writes_nothing(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = plain_source(server, tmp_path)
    into = tmp_path / "lists"
    assert update(sources, into, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would write: dry run: nothing written" in out and "3 added" in out
    assert not into.exists()


def test_bundled_directory_is_refused(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = plain_source(server, tmp_path)
    before = sorted(p.name for p in bundled_dir().iterdir())
    link = tmp_path / "link"
    link.symlink_to(bundled_dir())
    for into in (bundled_dir(), link, bundled_dir() / "sub"):
        assert update(sources, into) == 2
        assert "is the bundled catalogue" in capsys.readouterr().err
    assert sorted(p.name for p in bundled_dir().iterdir()) == before
    assert server.hits["/p"] == 0


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("sources: []\n", 1, "'sources' must be a non-empty list"),
        ("sources:\n  - url: ftp://x.example/l\n", 2, "only http:// and https:// URLs"),
        (
            "sources:\n  - url: http://x.example/l\n    format: csv\n    app: a\n    sha256: review\n",
            3,
            "format 'csv' is not one of hosts, adblock, plain, v2fly, adguard, ranges-json",
        ),
        (
            "sources:\n  - url: http://x.example/l\n    format: plain\n    app: a\n    sha256: abc\n",
            5,
            "sha256 must be 64 hex digits or 'review'",
        ),
        (
            "sources:\n  - url: http://x.example/l\n    format: plain\n    app: a\n",
            2,
            "sha256 is required",
        ),
        (
            "sources:\n  - url: http://x.example/l\n    format: plain\n    app: a\n"
            "    sha256: review\n    json_path: a[]\n",
            6,
            "json_path applies to the ranges-json format only",
        ),
        (
            "sources:\n  - url: http://x.example/l\n    format: ranges-json\n    app: a\n"
            "    sha256: review\n    json_path: 'a[x'\n",
            6,
            "'[' at offset 1 is not closed",
        ),
        (
            "sources:\n  - {url: 'http://x.example/l', format: plain, app: a, sha256: review}\n"
            "  - {url: 'http://x.example/m', format: plain, app: a, sha256: review}\n",
            3,
            "source id 'a' already used at line 2",
        ),
        (
            "sources:\n  - url: http://x.example/l\n    format: plain\n    app: a\n"
            "    sha256: review\n    max_removed_share: 2\n",
            6,
            "max_removed_share '2' must be a number from 0 to 1",
        ),
        (
            "sources:\n  - url: http://x.example/l\n    format: plain\n    app: a\n"
            "    sha256: review\n    colour: red\n",
            6,
            "unknown key 'colour'",
        ),
    ],
)
def test_bad_sources_file_is_a_usage_error_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, message: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert update(path, tmp_path / "lists") == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}: " in err and message in err, err


# --- reload ----------------------------------------------------------------------------------------


def test_written_directory_reloads(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the proxy's validated reload does, without the proxy: the watcher sees the change,
    and the directory loads merged after the bundled catalogue with the new names."""
    sources = write_sources(
        tmp_path / "s.yaml",
        src(server.serve("/p", PLAIN), "plain", "demo-plain"),
        src(server.serve("/t", "extra.demo-tiktok.example\n"), "plain", "tiktok", id="tt-extra"),
    )
    into = tmp_path / "lists"
    into.mkdir()
    watcher = Poller(dirs=[into])
    assert not watcher.changed()
    assert update(sources, into) == 0
    assert watcher.changed()
    cat = load_catalogue([bundled_dir(), into])
    assert "extra.demo-tiktok.example" in {r.domain for r in cat.apps["tiktok"].rules}
    assert len(cat.apps["demo-plain"].rules) == 3
    assert (into / "tt-extra.yaml").read_text().count("extends: tiktok") == 1
    assert not [p for p in into.iterdir() if p.name.startswith(".")]  # no temp file left
    assert oct((into / "tt-extra.yaml").stat().st_mode & 0o044) == oct(0o044)  # proxy can read


# --- the installed console script --------------------------------------------------------------------


def test_console_script_end_to_end(server: ListServer, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "egresswatch"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    pinned = hashlib.sha256(PLAIN.encode()).hexdigest()
    sources = write_sources(
        tmp_path / "s.yaml",
        src(server.serve("/p", PLAIN), "plain", "demo-plain", sha256=pinned),
    )
    into = tmp_path / "lists"
    cmd = [str(script), "lists", "update", "--sources", str(sources), "--into", str(into)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "written: wrote" in proc.stdout and "1 written" in proc.stderr
    check = subprocess.run(
        [str(script), "lists", "check", "-q", "--with-bundled", str(into)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    usage = subprocess.run(
        [*cmd, "--max-removed-share", "1.5"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "not a share from 0 to 1" in usage.stderr


def test_names_already_in_the_catalogue_are_skipped_not_duplicated(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundled = load_catalogue([bundled_dir()])
    # already listed for tiktok (and for tiktok alone): a duplicate is an error
    own = next(r for r in bundled.apps["tiktok"].rules if not r.shared_with)
    # another app's name: not silently re-attributed
    other = next(r for r in bundled.apps["wechat"].rules if not r.shared_with)
    body = f"{own.domain}\n{other.domain}\nnew.demo-tiktok.example\n"
    sources = write_sources(
        tmp_path / "s.yaml",
        src(server.serve("/t", body), "plain", "tiktok", id="tiktok-extra", match="exact"),
    )
    into = tmp_path / "lists"
    assert update(sources, into) == 0
    out = capsys.readouterr().out
    assert f"skipped {own.domain!r}: already listed for app tiktok at {own.where}" in out
    assert f"skipped {other.domain!r}: listed for app wechat at {other.where}" in out
    assert "1 added, 0 removed" in out
    mine = [
        r
        for r in load_catalogue([bundled_dir(), into]).apps["tiktok"].rules
        if r.file == str(into / "tiktok-extra.yaml")
    ]
    assert [r.domain for r in mine] == ["new.demo-tiktok.example"]
    assert main(["lists", "check", "--with-bundled", str(into)]) == 0


def test_the_documented_sources_example_is_valid() -> None:
    readme = (Path(__file__).parent.parent / "domains" / "README.md").read_text()
    section = readme.split("## Updating: `egresswatch lists update`", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    first, second = parse_sources(example, "README")
    assert (first.app, first.extends, first.sha256) == ("demo", False, None)
    assert (second.id, second.extends, second.max_removed_share) == ("tiktok-ranges", True, 0.05)
    assert second.json_paths == ("prefixes[service=DEMO].ip_prefix", "ipv6_prefixes[].ipv6_prefix")


@pytest.fixture
def into_empty(server: ListServer, tmp_path: Path) -> tuple[Path, Path]:
    """:func:`plain_source`, and an existing, empty directory to update into."""
    into = tmp_path / "lists"
    into.mkdir()
    return plain_source(server, tmp_path), into


def test_a_second_concurrent_run_is_refused(
    into_empty: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sources, into = into_empty
    fd = os.open(into, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running update holds it
        assert update(sources, into) == 1
        assert "another 'lists update' is writing" in capsys.readouterr().err
        assert update(sources, into, "--dry-run") == 0  # a dry run writes nothing: no lock
    finally:
        os.close(fd)
    assert update(sources, into) == 0


def test_a_hand_written_file_is_never_replaced(
    server: ListServer, into_empty: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sources, into = into_empty
    mine = "id: demo-plain\nname: Mine\ncategory: other\ndomains: []\n"
    (into / "demo-plain.yaml").write_text(mine)
    assert update(sources, into) == 1
    assert "exists and was not written by 'lists update'" in capsys.readouterr().out
    assert (into / "demo-plain.yaml").read_text() == mine
    assert server.hits["/p"] == 0  # refused before fetching


def test_an_unreadable_previous_file_is_refused_not_ignored(
    server: ListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the previous entries the removal share could not be enforced."""
    sources, generated = first_update(server, tmp_path)
    broken = generated.read_text().replace("domains:", "domains: [", 1)
    generated.write_text(broken)
    capsys.readouterr()
    assert update(sources, generated.parent) == 1
    assert "cannot read the previous" in capsys.readouterr().out
    assert generated.read_text() == broken
