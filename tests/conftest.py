"""Shared fixtures. Each area keeps its fixtures in ``tests/plugins/<area>.py``."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest_plugins = [
    "tests.plugins.store",  # first: other plugins import its helpers
    "tests.plugins.addon",
    "tests.plugins.catalogue",
    "tests.plugins.proxy",
    "tests.plugins.policy",
    "tests.plugins.postgres",
    "tests.plugins.prometheus",
    "tests.plugins.report",
]

_DATA = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Point the default data directory (``$EGRESSWATCH_DATA_DIR``, ``$XDG_DATA_HOME``) of this
    process and every process it starts at an empty directory of the run's own: no test reads or
    writes the user's ``~/.local/share/egresswatch`` (a proxy run there leaves a checkpoint log
    that ``db verify`` would rightly check every store against)."""
    data = tempfile.mkdtemp(prefix="egresswatch-test-data-")
    config.stash[_DATA] = data
    os.environ["EGRESSWATCH_DATA_DIR"] = os.path.join(data, "egresswatch")
    os.environ["XDG_DATA_HOME"] = data


def pytest_unconfigure(config: pytest.Config) -> None:
    if data := config.stash.get(_DATA, None):
        shutil.rmtree(data, ignore_errors=True)
