"""The file-set watcher behind catalogue/policy reloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from egresswatch.reloader import FileWatcher
from egresswatch.reloader import changed_paths
from egresswatch.reloader import snapshot


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
    w = FileWatcher(dirs=[tree])
    assert w.poll() == []
    assert not w.changed()


@pytest.mark.parametrize(
    "change",
    ["modify", "touch", "add", "remove", "add_nested"],
)
def test_changes_are_noticed_once(tree: Path, change: str) -> None:
    w = FileWatcher(dirs=[tree])
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
    w = FileWatcher(dirs=[tree])
    bump(tree / "README.md", "changed\n")
    (tree / ".a.yaml.swp").write_text("editor junk")
    assert not w.changed()


def test_policy_file_created_later(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    w = FileWatcher(files=[policy])
    policy.write_text("default: block\n")
    assert w.changed()


def test_directory_disappearing_is_a_change(tree: Path) -> None:
    w = FileWatcher(dirs=[tree])
    for f in tree.iterdir():
        f.unlink()
    tree.rmdir()
    assert str(tree) in w.poll()


def test_reset_takes_the_current_state(tree: Path) -> None:
    w = FileWatcher(dirs=[tree])
    bump(tree / "a.yaml", "broken: [\n")
    w.reset()
    assert not w.changed()


def test_changed_paths_is_symmetric_and_sorted() -> None:
    old = {"b": (1, 1), "a": (1, 1), "c": (1, 1)}
    new = {"a": (1, 1), "b": (2, 1), "d": (1, 1)}
    assert changed_paths(old, new) == ["b", "c", "d"]
    assert changed_paths(new, old) == ["b", "c", "d"]
