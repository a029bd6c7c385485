"""Every benchmark runs from the venv ``./dev.sh run`` creates: what ``bench/*.py`` (and the test
support modules they load) import comes with the package or its ``bench`` extra."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The support modules the benchmarks load (as modules or as mitmdump scripts).
SUPPORT = ("clients.py", "upstreams.py", "route_loopback.py", "portfile.py")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def requirement_names(reqs: list[str], extras: dict[str, list[str]]) -> set[str]:
    names: set[str] = set()
    for req in reqs:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)(\[([a-z,]+)\])?", req)
        assert m, req
        name = m.group(1).lower().replace("_", "-")
        if name == "egresswatch":
            for extra in (m.group(3) or "").split(","):
                names |= requirement_names(extras.get(extra, []), extras)
        else:
            names.add(name)
    return names


def with_dependencies(names: set[str]) -> set[str]:
    """``names`` and what they require when installed (without their extras)."""
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [r for r in requirement_names([r for r in reqs if "extra ==" not in r], {})]
    return out


def test_dev_sh_run_installs_the_bench_extra() -> None:
    assert re.search(r"^\s+run\)\n\s+venv bench\b", (ROOT / "dev.sh").read_text(), re.M)


def test_benchmark_imports_come_with_the_bench_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    allowed = with_dependencies(
        requirement_names(project["dependencies"] + extras["bench"], extras)
    )
    files = sorted((ROOT / "bench").glob("*.py")) + [
        ROOT / "tests" / "support" / f for f in SUPPORT
    ]
    local = {p.stem for p in (ROOT / "bench").glob("*.py")} | {"egresswatch", "tests"}
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for f in files:
        for mod in imported_modules(f) - local - set(sys.stdlib_module_names):
            names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
            if not names & allowed:
                missing[f"{f.relative_to(ROOT)}: {mod}"] = sorted(names)
    assert missing == {}
    assert "websockets" in allowed  # the loopback upstreams' WebSocket echo server
