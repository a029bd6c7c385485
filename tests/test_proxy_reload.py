"""``egresswatch.proxy.reload`` (and ``state``): the validated swap, on command and on file
changes (notifications, polling as the fallback), and the polling file-set watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from egresswatch.events import EventKind
from egresswatch.proxy import state as state_mod
from egresswatch.proxy.reload import Poller
from egresswatch.proxy.reload import changed_paths
from egresswatch.proxy.reload import snapshot

from tests.plugins.addon import POLICY
from tests.plugins.addon import Env
from tests.plugins.addon import connect_flow

NEW_APP = (
    "id: newapp\nname: New\nvendor: V\ncategory: other\nregimes: []\n"
    "domains:\n  - {domain: new.test, match: suffix, source: t, confidence: high}\n"
)
POLICY_MONITOR = POLICY.replace("blocky: block", "blocky: monitor")


def rejected(env: Env, kind: str) -> float | None:
    """Loads of ``kind`` (catalogue, policy) rejected as invalid, by the metric."""
    return env.registry.get_sample_value(
        "egresswatch_reload_failures_total", {"kind": kind, "reason": "validation"}
    )


def test_proxy_state_keeps_bulk_names_only_in_the_native_matcher(env: Env) -> None:
    (env.cat_dir / "listy.yaml").write_text(
        "id: listy\nname: Listy\ncategory: other\nregimes: []\n"
        "lists:\n  - file: listy.txt\n    source: test\n    confidence: low\n"
    )
    (env.cat_dir / "listy.txt").write_text("one.listy.test\ntwo.listy.test\n")
    env.addon.reload()
    st = env.addon.state
    assert st is not None and st.matcher.backend == "native"
    (bulk,) = st.catalogue.apps["listy"].lists
    assert (len(bulk), bulk.names) == (2, [])
    assert st.catalogue.apps["listy"].entries == 2
    env.observe.http_connect(connect_flow("www.two.listy.test"))
    assert [e.app for e in env.events() if e.app == "listy"] == ["listy"]


def test_reload_valid_swaps_and_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    assert old is not None
    (env.cat_dir / "newapp.yaml").write_text(NEW_APP)
    with caplog.at_level(logging.INFO, logger="egresswatch"):
        env.addon.reload()
    new = env.addon.state
    assert new is not None and new is not old
    assert f"egresswatch: catalogue reloaded version={new.catalogue.version[:12]} (" in caplog.text
    assert f"entries, {new.matcher.backend} matcher)" in caplog.text
    env.observe.http_connect(connect_flow("new.test"))
    assert [e.app for e in env.events()] == ["newapp"]
    configs = [e.detail for e in env.events(EventKind.CONFIG)]
    assert [d["kind"] for d in configs if d] == ["catalogue", "policy", "catalogue"]


def test_reload_invalid_keeps_old(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    bad = env.cat_dir / "watchy.yaml"
    bad.write_text("id: watchy\nname: Watchy\ndomains: nope\n")
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon.reload()
    assert env.addon.state is old
    assert f"egresswatch: catalogue reload rejected: {bad}:" in caplog.text
    assert rejected(env, "catalogue") == 1
    env.observe.http_connect(connect_flow("watched.test"))  # the old catalogue still matches
    assert len(env.events()) == 1


def test_reload_invalid_policy_keeps_old(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    env.policy.write_text("default: sometimes\n")
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon.reload()
    assert env.addon.state is old
    assert f"egresswatch: policy reload rejected: {env.policy}:1:" in caplog.text
    assert rejected(env, "policy") == 1


async def test_reload_on_file_change(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    old = env.addon.state
    assert old is not None
    poller = Poller(old.files(), old.dirs)  # what the polling fallback compares
    assert not poller.changed()
    env.policy.write_text(POLICY_MONITOR)
    assert poller.changed()
    with caplog.at_level(logging.INFO, logger="egresswatch"):
        assert await env.addon.reloader.reload_async()
    assert env.addon.state is not old
    assert "egresswatch: policy reloaded version=" in caplog.text
    f = connect_flow("blocked.test")
    env.observe.http_connect(f)
    assert f.response is None


async def test_reload_command_in_the_proxy_loads_off_the_event_loop(
    env: Env, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader_threads: list[str] = []
    real = state_mod.load_state

    def spy(*args: Any, **kwargs: Any) -> Any:
        loader_threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(state_mod, "load_state", spy)
    old = env.addon.state
    (env.cat_dir / "newapp.yaml").write_text(NEW_APP)
    with caplog.at_level(logging.INFO, logger="egresswatch"):
        env.addon.reload()  # on the running loop: returns at once, the load runs in a thread
        for _ in range(200):
            if env.addon.state is not old:
                break
            await asyncio.sleep(0.01)
    assert env.addon.state is not old
    assert loader_threads and loader_threads[0] != threading.main_thread().name
    assert "egresswatch: catalogue reloaded version=" in caplog.text


# -- watching: file notifications, polling as the fallback --------------------------------------


async def policy_edit_reloads(env: Env) -> bool:
    """Whether a new state replaces the current one after an edit of the policy file."""
    old = env.addon.state
    env.policy.write_text(POLICY_MONITOR)
    return await _wait_for(lambda: env.addon.state is not old)


@contextlib.asynccontextmanager
async def watching(env: Env, method: str) -> AsyncIterator[None]:
    """The addon running, its reloader watching by ``method`` (notify, poll); stopped after."""
    env.addon.running()
    try:
        assert await _wait_for(lambda: env.addon.reloader.method == method)
        yield
    finally:
        await env.addon.done()


async def _wait_for(cond: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_file_notification_reloads_without_polling(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """With an hour between polls, only a file notification can make this reload happen."""
    env.tctx.configure(env.addon, egresswatch_reload_interval=3600)
    async with watching(env, "notify"):
        old = env.addon.state
        with caplog.at_level(logging.INFO, logger="egresswatch"):
            env.policy.write_text(POLICY_MONITOR)
            assert await _wait_for(lambda: env.addon.state is not old)
        assert "egresswatch: policy reloaded version=" in caplog.text
        # a new app file in a catalogue directory is noticed too
        cat_before = env.addon.state
        (env.cat_dir / "newapp.yaml").write_text(NEW_APP)
        assert await _wait_for(
            lambda: (
                env.addon.state is not cat_before
                and env.addon.state is not None
                and "newapp" in env.addon.state.catalogue.apps
            )
        )
        # a broken save: the old state stays, the failure is counted and logged
        good = env.addon.state
        with caplog.at_level(logging.WARNING, logger="egresswatch"):
            env.policy.write_text("default: sometimes\n")
            assert await _wait_for(lambda: rejected(env, "policy") == 1)
        assert env.addon.state is good
        assert f"egresswatch: policy reload rejected: {env.policy}:1:" in caplog.text
    assert env.addon.reloader.method == ""


async def test_unrelated_files_do_not_reload(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_reload_interval=3600)
    swaps: list[object] = []
    real = env.addon.reloader.reload_async

    async def counting(**kw: Any) -> bool:
        swaps.append(kw)
        return await real(**kw)

    env.addon.reloader.reload_async = counting  # type: ignore[method-assign]
    async with watching(env, "notify"):
        (env.cat_dir / "README.md").write_text("notes\n")
        (env.cat_dir / ".watchy.yaml.swp").write_text("editor junk")
        (env.policy.parent / "other.yaml").write_text("x: 1\n")
        await asyncio.sleep(1.0)  # several watch steps: nothing relevant arrives
        assert swaps == []
        (env.cat_dir / "watchy.yaml").write_text(
            (env.cat_dir / "watchy.yaml").read_text() + "\n# touched\n"
        )
        assert await _wait_for(lambda: swaps != [])


async def test_change_before_the_watch_starts_is_not_lost(env: Env) -> None:
    old = env.addon.state
    env.tctx.configure(env.addon, egresswatch_reload_interval=3600)
    env.policy.write_text(POLICY_MONITOR)
    env.addon.running()  # the watch starts after the change: its first check catches it
    try:
        assert await _wait_for(lambda: env.addon.state is not old)
    finally:
        await env.addon.done()


async def test_polling_fallback_on_request(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_reload_interval=1, egresswatch_reload_polling=True)
    async with watching(env, "poll"):
        assert await policy_edit_reloads(env)


async def test_polling_fallback_when_notifications_fail(
    env: Env, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watchfiles

    def no_inotify(*paths: Any, **kw: Any) -> Any:
        raise OSError(28, "OS file watch limit reached")

    monkeypatch.setattr(watchfiles, "awatch", no_inotify)
    env.tctx.configure(env.addon, egresswatch_reload_interval=1)
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        async with watching(env, "poll"):
            assert await policy_edit_reloads(env)
    assert "file notifications unavailable" in caplog.text and "polling every 1 s" in caplog.text


# -- the polling watcher ------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "cat"
    d.mkdir()
    (d / "a.yaml").write_text("id: a\n")
    (d / "regimes.yaml").write_text("regimes: []\n")
    (d / "a-list.txt").write_text("a.test\n")
    (d / "README.md").write_text("not watched\n")
    return d


def bump(path: Path, text: str | None = None) -> None:
    """Change a file so that mtime_ns and/or size differ even on coarse-timestamp filesystems."""
    st = path.stat()
    if text is not None:
        path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_snapshot_covers_catalogue_files_only(tree: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    snap = snapshot(files=[policy], dirs=[tree])
    assert snap[str(policy)] == (-1, -1)  # missing files are watched too
    names = {Path(p).name for p in snap if p != str(tree)}
    assert names == {"policy.yaml", "a.yaml", "regimes.yaml", "a-list.txt"}


def test_no_change_no_reload(tree: Path) -> None:
    w = Poller(dirs=[tree])
    assert w.poll() == []
    assert not w.changed()


@pytest.mark.parametrize(
    "change",
    ["modify", "touch", "add", "remove", "add_nested"],
)
def test_changes_are_noticed_once(tree: Path, change: str) -> None:
    w = Poller(dirs=[tree])
    target = tree / "a.yaml"
    if change == "modify":
        bump(target, "id: a\nname: A\n")
    elif change == "touch":
        bump(target)
    elif change == "add":
        target = tree / "b.yaml"
        target.write_text("id: b\n")
    elif change == "remove":
        target.unlink()
    else:
        (tree / "sub").mkdir()
        target = tree / "sub" / "c.txt"
        target.write_text("c.test\n")
    assert w.poll() == [str(target)]
    assert w.poll() == []


def test_unwatched_suffixes_and_hidden_files_are_ignored(tree: Path) -> None:
    w = Poller(dirs=[tree])
    bump(tree / "README.md", "changed\n")
    (tree / ".a.yaml.swp").write_text("editor junk")
    assert not w.changed()


def test_policy_file_created_later(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    w = Poller(files=[policy])
    policy.write_text("default: block\n")
    assert w.changed()


def test_directory_disappearing_is_a_change(tree: Path) -> None:
    w = Poller(dirs=[tree])
    for f in tree.iterdir():
        f.unlink()
    tree.rmdir()
    assert str(tree) in w.poll()


def test_reset_takes_the_current_state(tree: Path) -> None:
    w = Poller(dirs=[tree])
    bump(tree / "a.yaml", "broken: [\n")
    w.reset()
    assert not w.changed()


def test_changed_paths_is_symmetric_and_sorted() -> None:
    old = {"b": (1, 1), "a": (1, 1), "c": (1, 1)}
    new = {"a": (1, 1), "b": (2, 1), "d": (1, 1)}
    assert changed_paths(old, new) == ["b", "c", "d"]
    assert changed_paths(new, old) == ["b", "c", "d"]


async def test_restarting_the_watch_keeps_one_running(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_reload_interval=3600)
    async with watching(env, "notify"):
        env.tctx.configure(env.addon, egresswatch_reload_polling=True)  # restarts the watch
        assert await _wait_for(lambda: env.addon.reloader.method == "poll")
        await asyncio.sleep(0.5)  # the replaced watch's thread returns meanwhile
        assert env.addon.reloader.method == "poll"
        assert env.addon.background_tasks() == [
            "egresswatch_heartbeat",
            "egresswatch_reload_interval",
        ]
        env.tctx.configure(env.addon, egresswatch_reload_polling=False)
        assert await _wait_for(lambda: env.addon.reloader.method == "notify")
        assert await policy_edit_reloads(env)
    assert env.addon.reloader.method == ""


def _configmap_volume(root: Path, files: dict[str, str], generation: int) -> None:
    """Lay out or update ``root`` the way Kubernetes' atomic writer does: the files live in a
    hidden timestamped folder, ``..data`` points at it, each name is a symlink through
    ``..data``; an update writes a new folder and swaps ``..data`` in one rename."""
    folder = root / f"..2026_{generation:02d}"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(folder.name)
    os.replace(tmp, root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")


async def test_kubernetes_configmap_update_reloads(env: Env, tmp_path: Path) -> None:
    volume = tmp_path / "policy-volume"
    volume.mkdir()
    _configmap_volume(volume, {"policy.yaml": POLICY}, 1)
    env.tctx.configure(
        env.addon, egresswatch_policy=str(volume / "policy.yaml"), egresswatch_reload_interval=3600
    )
    async with watching(env, "notify"):
        old = env.addon.state
        _configmap_volume(
            volume, {"policy.yaml": POLICY.replace("blocky: block", "blocky: off")}, 2
        )
        assert await _wait_for(lambda: env.addon.state is not old)
        f = connect_flow("blocked.test")
        env.observe.http_connect(f)
        assert f.response is None and env.events() == []  # "off" now: not even recorded


async def test_relative_paths_are_watched(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Options may name the catalogue and policy relative to the working directory; the
    notifications carry absolute paths."""
    monkeypatch.chdir(tmp_path)
    env.tctx.configure(
        env.addon,
        egresswatch_lists=[os.path.relpath(env.cat_dir, tmp_path)],
        egresswatch_policy=os.path.relpath(env.policy, tmp_path),
        egresswatch_reload_interval=3600,
    )
    async with watching(env, "notify"):
        assert await policy_edit_reloads(env)
        old = env.addon.state
        (env.cat_dir / "watchy.yaml").write_text(
            (env.cat_dir / "watchy.yaml").read_text() + "\n# touched\n"
        )
        assert await _wait_for(
            lambda: (
                env.addon.state is not None
                and old is not None
                and env.addon.state.catalogue.version != old.catalogue.version
            )
        )
