"""``egresswatch.proxy.addon``: options and ``configure``, start-up errors, lifecycle, commands,
policy-exception expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from egresswatch.events import EventKind
from egresswatch.proxy import addon as addon_mod
from egresswatch.proxy.addon import EgressWatch
from mitmproxy import exceptions
from mitmproxy.addons.errorcheck import ErrorCheck
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry

from tests.plugins.addon import APPS
from tests.plugins.addon import POLICY
from tests.plugins.addon import Env
from tests.plugins.addon import connect_flow


@pytest.mark.parametrize(
    ("opt", "value", "message"),
    [
        ("egresswatch_decrypt", "sometimes", "invalid value 'sometimes'"),
        ("egresswatch_dns_block", "drop", "invalid value 'drop'"),
        ("egresswatch_client_identity", "mac", "invalid value 'mac'"),
        ("egresswatch_client_identity", "hash", "needs egresswatch_client_key_file"),
        ("egresswatch_metrics_listen", "nope", "invalid listen address"),
        ("egresswatch_store", "mysql://x", "unknown scheme"),
        ("egresswatch_heartbeat", 0, "at least 1"),
        ("egresswatch_flush_ms", 0, "at least 1"),
        ("egresswatch_queue_size", -1, "must not be negative"),
        ("egresswatch_metrics_certfile", "/x.pem", "go together"),
    ],
)
def test_bad_options_are_refused(env: Env, opt: str, value: object, message: str) -> None:
    with pytest.raises(exceptions.OptionsError, match=message):
        env.tctx.configure(env.addon, **{opt: value})
    assert getattr(env.tctx.options, opt) != value  # rolled back


def test_fixed_options_accept_their_current_value(env: Env) -> None:
    # mitmproxy reports every key of an update as changed, even when its value is the same
    env.tctx.configure(env.addon, egresswatch_department_label=False)
    with pytest.raises(exceptions.OptionsError, match="cannot change at runtime"):
        env.tctx.configure(env.addon, egresswatch_department_label=True)
    assert env.tctx.options.egresswatch_department_label is False


def test_startup_catalogue_error_names_file_and_line(
    tmp_path: Path, catalogue_dir: Callable[..., Path]
) -> None:
    d = catalogue_dir(APPS, name="broken")
    (d / "watchy.yaml").write_text("id: watchy\nname: Watchy\ndomains:\n  - domain: [\n")
    a = EgressWatch(registry=CollectorRegistry())
    with taddons.context(a) as tctx:
        with pytest.raises(exceptions.OptionsError) as ei:
            tctx.configure(
                a,
                egresswatch_bundled=False,
                egresswatch_lists=[str(d)],
                egresswatch_metrics_listen="off",
            )
        assert f"{d / 'watchy.yaml'}:" in str(ei.value)
        assert ei.value.__cause__ is None and ei.value.__suppress_context__  # no chained traces
        # the addon keeps what it had (here the defaults it was registered with)
        assert a.state is not None and str(d) not in map(str, a.state.dirs)
        assert a.metrics is not None
        a.metrics.close()


def test_startup_policy_error_names_file_and_line(
    tmp_path: Path, catalogue_dir: Callable[..., Path]
) -> None:
    d = catalogue_dir(APPS, name="cat")
    p = tmp_path / "policy.yaml"
    p.write_text("default: monitor\napps:\n  nosuchapp: block\n")
    a = EgressWatch(registry=CollectorRegistry())
    with taddons.context(a) as tctx:
        with pytest.raises(exceptions.OptionsError, match=rf"{p}:3: .*nosuchapp"):
            tctx.configure(
                a,
                egresswatch_bundled=False,
                egresswatch_lists=[str(d)],
                egresswatch_policy=str(p),
                egresswatch_metrics_listen="off",
            )
        assert a.metrics is not None
        a.metrics.close()


def test_startup_error_under_mitmdump_is_one_clear_log_record(
    catalogue_dir: Callable[..., Path],
) -> None:
    """With mitmproxy's start-up check loaded (mitmdump, mitmweb), a broken catalogue is logged
    as its message only, not raised into mitmproxy's script loader (which would print it with a
    traceback), and the process exits 1 at once (SystemExit, before any server is set up)."""
    d = catalogue_dir(APPS, name="broken")
    (d / "watchy.yaml").write_text("id: watchy\nname: Watchy\ndomains:\n  - domain: [\n")
    check = ErrorCheck()
    try:
        a = EgressWatch(registry=CollectorRegistry())
        with taddons.context(check, a) as tctx:
            with pytest.raises(SystemExit) as exited:
                tctx.configure(
                    a,
                    egresswatch_bundled=False,
                    egresswatch_lists=[str(d)],
                    egresswatch_metrics_listen="off",
                )
            assert exited.value.code == 1
            assert a.state is None
            (record,) = check.logger.has_errored
            assert record.exc_info is None
            assert record.getMessage().startswith("egresswatch: invalid catalogue:\n")
            assert f"{d / 'watchy.yaml'}:5: YAML syntax error" in record.getMessage()
            a.running()  # should mitmproxy still get there: nothing starts, nothing raises
            assert a.writer is None and a.background_tasks() == []
            # once something is loaded, a bad change is refused (and rolled back) as usual
            tctx.configure(a, egresswatch_bundled=True, egresswatch_lists=[])
            assert a.state is not None
            with pytest.raises(exceptions.OptionsError, match="invalid value 'x'"):
                tctx.configure(a, egresswatch_decrypt="x")
            assert a.metrics is not None
            a.metrics.close()
    finally:
        check.finish()


def test_bundled_catalogue_loads(tmp_path: Path) -> None:
    a = EgressWatch(registry=CollectorRegistry())
    with taddons.context(a) as tctx:
        tctx.configure(a, egresswatch_metrics_listen="off")
        assert a.state is not None
        assert "tiktok" in a.state.catalogue.apps
        assert a.metrics is not None
        a.metrics.close()


async def test_running_and_done_write_lifecycle_and_hits(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_metrics_listen="127.0.0.1:0", egresswatch_flush_ms=20)
    env.addon.running()
    try:
        assert env.addon.metrics_address is not None
        env.observe.http_connect(connect_flow("blocked.test"))
    finally:
        await env.addon.done()
    kinds = [e.kind for e in env.store.iter_events(0, 1e12)]
    assert kinds[0] == EventKind.CONFIG and EventKind.START in kinds
    assert kinds[-1] == EventKind.STOP and EventKind.HIT in kinds
    (start,) = [e for e in env.store.iter_events(0, 1e12) if e.kind == EventKind.START]
    assert start.detail is not None and start.detail["client_identity"] == "address"
    assert env.addon.journal.pending() == []


async def test_runtime_option_changes_take_effect_or_are_refused(env: Env) -> None:
    env.addon.running()
    try:
        # heartbeat: the loop restarts with the new interval
        env.tctx.configure(env.addon, egresswatch_heartbeat=1, egresswatch_flush_ms=1000)
        # reload interval: from "command only" to a 1 s file check
        env.tctx.configure(env.addon, egresswatch_reload_interval=1)
        old = env.addon.state
        env.policy.write_text(POLICY.replace("blocky: block", "blocky: monitor"))
        deadline = time.monotonic() + 5
        while env.addon.state is old and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert env.addon.state is not old
        while not env.events(EventKind.HEARTBEAT) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert env.events(EventKind.HEARTBEAT), "no heartbeat after egresswatch_heartbeat=1"
        # and back to "command only": no reload task left
        env.tctx.configure(env.addon, egresswatch_reload_interval=0)
        assert env.addon.background_tasks() == ["egresswatch_heartbeat"]
        # what the running writer and metrics endpoint were built with cannot change
        for opts in (
            {"egresswatch_queue_size": 5},
            {"egresswatch_flush_ms": 5},
            {"egresswatch_metrics_certfile": "/c.pem", "egresswatch_metrics_keyfile": "/k.pem"},
        ):
            with pytest.raises(exceptions.OptionsError, match="cannot change while running"):
                env.tctx.configure(env.addon, **opts)
    finally:
        await env.addon.done()
    assert env.addon.background_tasks() == []


def test_status_command(env: Env) -> None:
    out = env.tctx.command(env.addon.status)
    assert "egresswatch: catalogue" in out and "decrypt=off" in out


def test_entry_script_loads_the_addon() -> None:
    shim = (
        addon_mod.__file__.rsplit("/addon/egresswatch/", 1)[0] + "/deploy/mitmproxy/egresswatch.py"
    )
    with taddons.context() as tctx:
        sc = tctx.script(shim)
        (loaded,) = sc.addons
        assert type(loaded).__name__ == "EgressWatch"
        assert "egresswatch_decrypt" in tctx.options
        loaded.metrics.close()
