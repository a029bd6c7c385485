"""Headless Chromium for the browser tests: where it is, the marks that skip without it, and one
way to run it (a fresh profile per run, nothing phoned home)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

#: ``pytestmark`` of a module that needs the browser.
NEEDS_CHROMIUM = [
    pytest.mark.chromium,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="headless Chromium not installed: apt-get install chromium",
    ),
]


def chromium(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with ``args`` in a new profile under ``tmp_path`` (2 minutes)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )
