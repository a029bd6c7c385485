"""``egresswatch run``: argument plumbing, the entry script, and one real start/stop."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from egresswatch.commands import run as run_cmd
from egresswatch.events import EventKind
from egresswatch.store import default_store_url

from tests.plugins.store import stored_events

EGRESSWATCH = Path(sys.executable).with_name("egresswatch")
LISTENING = re.compile(r"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)\.")


def parse(*argv: str) -> list[str]:
    args = run_cmd.build_parser().parse_args(list(argv))
    return run_cmd.build_mitmdump_args(args)


def test_defaults_listen_on_loopback() -> None:
    assert parse() == ["--listen-host", "127.0.0.1", "--listen-port", "8080"]


def test_flags_become_egresswatch_options() -> None:
    argv = parse(
        "--listen-host", "0.0.0.0", "--listen-port", "3128",
        "--mode", "socks5@1080", "--mode", "regular",
        "--lists", "/a", "--lists", "/b", "--no-bundled",
        "--policy", "/p.yaml", "--data-dir", "/d", "--store", "memory://",
        "--metrics-listen", "[::1]:9464", "--decrypt", "blocked", "--confdir", "/c",
    )  # fmt: skip
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets == [
        "confdir=/c",
        "egresswatch_bundled=false",
        "egresswatch_lists=/a",
        "egresswatch_lists=/b",
        "egresswatch_policy=/p.yaml",
        "egresswatch_data_dir=/d",
        "egresswatch_store=memory://",
        "egresswatch_metrics_listen=[::1]:9464",
        "egresswatch_decrypt=blocked",
    ]
    assert argv[argv.index("--listen-host") + 1] == "0.0.0.0"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--mode"] == ["socks5@1080", "regular"]


def test_arguments_after_double_dash_pass_through() -> None:
    argv = parse("--policy", "p", "--", "-q", "--set", "block_global=false")
    assert argv[-3:] == ["-q", "--set", "block_global=false"]


def test_bad_decrypt_value_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cmd.build_parser().parse_args(["--decrypt", "maybe"])
    assert "invalid choice" in capsys.readouterr().err


def test_packaged_shim_is_outside_the_package_alone_in_its_directory() -> None:
    pkg = Path(run_cmd.__file__).resolve().parents[1]
    packaged = pkg / "_shim" / "egresswatch_entry.py"  # for `mitmdump -s` from an installed copy
    assert packaged.is_file()
    assert packaged.parent != pkg  # never a file inside egresswatch/ (sys.path pitfall)
    assert packaged.read_text().strip().endswith("addons = [EgressWatch()]")
    assert not list(packaged.parent.glob("*.py"))[1:]  # alone in its directory


def test_module_import_does_not_import_mitmproxy() -> None:
    code = "import sys, egresswatch.commands.run; print(any(m.startswith('mitmproxy') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_worker_gets_its_instance_and_metrics_port() -> None:
    args = run_cmd.build_parser().parse_args(["--instance", "gw", "--workers", "3"])
    argvs = [run_cmd.build_mitmdump_args(run_cmd.worker_args(args, i)) for i in range(3)]
    for i, argv in enumerate(argvs):
        assert f"egresswatch_instance=gw-w{i}" in argv
        assert f"egresswatch_metrics_listen=127.0.0.1:{9464 + i}" in argv
    zero = run_cmd.build_parser().parse_args(["--metrics-listen", "127.0.0.1:0"])
    assert run_cmd.worker_args(zero, 5).metrics_listen == "127.0.0.1:0"  # each picks a free one
    off = run_cmd.build_parser().parse_args(["--metrics-listen", "off"])
    assert run_cmd.worker_args(off, 1).metrics_listen == "off"
    high = run_cmd.build_parser().parse_args(["--metrics-listen", "127.0.0.1:65535"])
    with pytest.raises(ValueError, match="exceeds 65535"):
        run_cmd.worker_args(high, 1)
    unnamed = run_cmd.build_parser().parse_args([])
    assert run_cmd.worker_args(unnamed, 0).instance == f"{socket.gethostname()}-w0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2", "--mode", "dns"], "--workers: mode 'dns' uses UDP"),
        (["--workers", "2", "--mode", "wireguard"], "--workers: mode 'wireguard' uses UDP"),
        (
            ["--workers", "2", "--listen-port", "0"],
            "workers need a fixed --listen-port to share (not 0)",
        ),
        (["--workers", "0"], "--workers: expected a positive number or 'auto', got '0'"),
        (["--workers", "2", "--worker", "1"], "--workers and --worker exclude each other"),
        (["--worker", "-1"], "--worker: expected a number >= 0, got -1"),
    ],
)
def test_workers_refuse_what_cannot_share_a_port(argv: list[str], message: str) -> None:
    out = subprocess.run(
        [str(EGRESSWATCH), "run", *argv], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert f"egresswatch run: {message}" in out.stderr


# -- a real mitmdump ------------------------------------------------------------------------------


@pytest.fixture
def tiny_catalogue(catalogue_dir: Callable[..., Path]) -> Path:
    return catalogue_dir({"blocky": {"domains": [{"domain": "blocked.test"}]}}, name="tiny")


def start(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        str(EGRESSWATCH), "run", "--listen-port", "0", "--confdir", str(tmp_path / "conf"),
        "--data-dir", str(tmp_path / "data"), "--metrics-listen", "127.0.0.1:0", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )


@pytest.fixture
def proxy(tmp_path: Path, tiny_catalogue: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("apps:\n  blocky: block\n")
    p = start(tmp_path, "--no-bundled", "--lists", str(tiny_catalogue), "--policy", str(policy))
    port = None
    deadline = time.monotonic() + 30
    assert p.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := LISTENING.search(line):
            port = int(m.group(1))
        if port and "egresswatch: running" in line:
            break
    if port is None:
        p.kill()
        pytest.fail("egresswatch run did not start:\n" + "".join(lines))
    try:
        yield p, port
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_run_blocks_connect_and_stops_cleanly(
    proxy: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    p, port = proxy
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"CONNECT www.blocked.test:443 HTTP/1.1\r\nHost: www.blocked.test:443\r\n\r\n")
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 403")
    assert "X-Egresswatch-Block: app=blocky; regime=app; event=" in head
    # mitmproxy 12.3.1 logs a CancelledError traceback for client connections still open at
    # shutdown (plain mitmdump too): wait until it has seen this one go.
    assert p.stdout is not None
    seen = []
    while "client disconnect" not in (line := p.stdout.readline()) and line:
        seen.append(line)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    out = "".join(seen) + out
    assert p.returncode == 0
    assert "Traceback" not in out and "Addon error" not in out
    # the default store: SQLite in --data-dir, holding the lifecycle and the hit
    events = stored_events(default_store_url(str(tmp_path / "data")))
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.START) == 1 and kinds[-1] == EventKind.STOP
    (hit,) = [e for e in events if e.kind == EventKind.HIT]
    assert hit.app == "blocky" and hit.action == "blocked" and hit.host == "www.blocked.test"
    assert f"event={hit.event_id}" in head


def test_run_exits_non_zero_on_a_broken_policy(tmp_path: Path, tiny_catalogue: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("default: monitor\napps:\n  nosuchapp: block\n")
    p = start(tmp_path, "--no-bundled", "--lists", str(tiny_catalogue), "--policy", str(policy))
    out, _ = p.communicate(timeout=60)
    assert p.returncode != 0
    assert f"egresswatch: invalid policy:\n{policy}:3:" in out
    # just the message: no traceback from mitmproxy's script loader, no chained exceptions
    assert "Traceback" not in out and "direct cause" not in out
    assert "listening" not in out  # refused before mitmproxy sets up its servers
