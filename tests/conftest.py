"""Shared fixtures. Each area keeps its fixtures in ``tests/plugins/<area>.py``."""

from __future__ import annotations

pytest_plugins = [
    "tests.plugins.addon",
    "tests.plugins.catalogue",
    "tests.plugins.proxy",
    "tests.plugins.store",
    "tests.plugins.postgres",
    "tests.plugins.prometheus",
    "tests.plugins.report",
]
