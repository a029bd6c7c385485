"""Shared fixtures. Each area keeps its fixtures in ``tests/plugins/<area>.py``."""

from __future__ import annotations

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
