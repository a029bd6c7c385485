from __future__ import annotations

import subprocess
import sys

import pytest
from egresswatch import __version__
from egresswatch.cli import COMMAND_MODULES
from egresswatch.cli import build_parser
from egresswatch.cli import main


def test_every_command_group_registers() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= set(COMMAND_MODULES)  # type: ignore[arg-type]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"egresswatch {__version__}"


def test_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_runs_as_a_module_without_importing_mitmproxy() -> None:
    # `python -m egresswatch match` must not pay for (or need) mitmproxy.
    code = (
        "import sys, runpy; sys.argv = ['egresswatch', 'match', 'www.tiktok.com'];\n"
        "try:\n    runpy.run_module('egresswatch', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'mitmproxy' not in sys.modules, 'mitmproxy was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "tiktok" in r.stdout
