"""pytest fixtures: catalogue (owned by one area; loaded from conftest.py).

``catalogue_dir`` is a factory that writes a small catalogue directory into ``tmp_path``::

    def test_x(catalogue_dir):
        d = catalogue_dir({"demo": {"domains": [{"domain": "demo.example"}]}})
        cat = load_catalogue([d])

Each app is given as a mapping that is completed with defaults (``id``, ``name``, ``category``,
``regimes``; each domain entry gets ``match: suffix``, a ``source`` and ``confidence: high``), so a
test only writes what it is about. Pass ``raw=True`` to write the mappings exactly as given, and
``files={"name": "text"}`` for extra files written verbatim (bulk lists, broken YAML).
``sample_catalogue`` is a ready directory with three apps, a shared name, a carve-out, an exact
rule, a CIDR and three regimes (in force, revoked, not yet effective on ``SAMPLE_TODAY``).
``shipped_catalogue`` and ``shipped_matcher`` are the catalogue shipped in ``domains/``, loaded once
per session, for the tests that check real hostnames against it; ``shipped_apps`` gives the apps
it attributes a name to (empty when none).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import load_catalogue
from egresswatch.matcher import Matcher

SAMPLE_TODAY = date(2026, 11, 1)

SHIPPED_DOMAINS = Path(__file__).resolve().parents[2] / "domains"

DEFAULT_REGIMES: list[dict[str, Any]] = [
    {
        "id": "test-order",
        "title": "Test order designating the demo apps",
        "jurisdiction": "Testland",
        "signed": "2025-01-01",
        "effective": "2025-02-01",
        "citation": "TO 1",
        "apps": [],
    }
]

SAMPLE_APPS: dict[str, dict[str, Any]] = {
    "alpha": {
        "name": "Alpha Chat",
        "regimes": ["test-order", "old-order"],
        "domains": [
            {"domain": "alpha.example", "tags": ["vendor"]},
            {"domain": "api.alpha.example", "match": "exact", "confidence": "medium"},
            {"domain": "shared.example", "shared_with": ["beta"]},
        ],
        "carve_outs": [
            {"domain": "news.alpha.example", "source": "test", "reason": "Alpha News, not the app"}
        ],
        "cidrs": [{"cidr": "192.0.2.0/24", "source": "test", "confidence": "medium"}],
    },
    "beta": {
        "name": "Beta Pay",
        "category": "payments",
        "regimes": ["test-order", "future-order"],
        "domains": [
            {"domain": "beta.example"},
            {"domain": "pay.alpha.example"},
            {"domain": "shared.example", "shared_with": ["alpha"]},
        ],
    },
    "gamma": {"name": "Gamma", "regimes": [], "domains": [{"domain": "gamma.test"}]},
}

SAMPLE_REGIMES: list[dict[str, Any]] = [
    {
        "id": "test-order",
        "title": "Test order",
        "jurisdiction": "Testland",
        "signed": "2025-01-01",
        "effective": "2025-02-01",
        "citation": "TO 1",
        "apps": ["alpha", "beta"],
    },
    {
        "id": "old-order",
        "title": "Old order",
        "jurisdiction": "Testland",
        "signed": "2020-01-01",
        "effective": "2020-02-01",
        "revoked": "2021-06-09",
        "citation": "TO 0",
        "apps": ["alpha"],
    },
    {
        "id": "future-order",
        "title": "Future order",
        "jurisdiction": "Testland",
        "signed": "2026-10-01",
        "effective": "2027-01-01",
        "citation": "TO 2",
        "apps": ["beta"],
    },
]


def complete_app(app_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with the required app fields and per-entry defaults filled in."""
    app = copy.deepcopy(dict(spec))
    if "extends" not in app:
        app.setdefault("id", app_id)
        app.setdefault("name", app_id.title())
        app.setdefault("vendor", "Test Vendor")
        app.setdefault("category", "other")
        app.setdefault("regimes", ["test-order"])
    for entry in app.get("domains", []):
        if isinstance(entry, dict):
            entry.setdefault("match", "suffix")
            entry.setdefault("source", "tests")
            entry.setdefault("confidence", "high")
    return app


CatalogueDirFactory = Callable[..., Path]


@pytest.fixture
def catalogue_dir(tmp_path: Path) -> CatalogueDirFactory:
    """Factory: ``(apps, regimes=None, *, name="catalogue", files=None, raw=False) -> Path``.

    ``apps`` maps a file stem to an app mapping; ``regimes`` defaults to one in-force regime
    ``test-order`` listing every non-extends app that names it (pass ``[]`` for no regimes.yaml).
    """
    counter = 0

    def make(
        apps: Mapping[str, Mapping[str, Any]] | None = None,
        regimes: Sequence[Mapping[str, Any]] | None = None,
        *,
        name: str | None = None,
        files: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Path:
        nonlocal counter
        counter += 1
        d = tmp_path / (name or f"catalogue{counter}")
        d.mkdir(parents=True, exist_ok=True)
        docs = {
            stem: (dict(spec) if raw else complete_app(stem, spec))
            for stem, spec in (apps or {}).items()
        }
        if regimes is None:
            regs = copy.deepcopy(DEFAULT_REGIMES)
            regs[0]["apps"] = sorted(
                doc["id"]
                for doc in docs.values()
                if "extends" not in doc and "test-order" in doc.get("regimes", [])
            )
        else:
            regs = [dict(r) for r in regimes]
        for stem, doc in docs.items():
            (d / f"{stem}.yaml").write_text(
                yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
        if regs:
            (d / "regimes.yaml").write_text(
                yaml.safe_dump({"regimes": regs}, sort_keys=False), encoding="utf-8"
            )
        for fname, text in (files or {}).items():
            (d / fname).write_text(text, encoding="utf-8")
        return d

    return make


@pytest.fixture
def sample_catalogue(catalogue_dir: CatalogueDirFactory) -> Path:
    """A clean three-app catalogue directory (see the module docstring)."""
    return catalogue_dir(SAMPLE_APPS, SAMPLE_REGIMES, name="sample")


@pytest.fixture(scope="session")
def shipped_catalogue() -> Catalogue:
    """The catalogue shipped in ``domains/`` (read-only: do not mutate it)."""
    return load_catalogue([SHIPPED_DOMAINS])


@pytest.fixture(scope="session")
def shipped_matcher(shipped_catalogue: Catalogue) -> Matcher:
    """A matcher over :func:`shipped_catalogue`."""
    return Matcher.from_catalogue(shipped_catalogue)


AppsOf = Callable[[str], tuple[str, ...]]


@pytest.fixture(scope="session")
def shipped_apps(shipped_matcher: Matcher) -> AppsOf:
    """The apps :func:`shipped_matcher` attributes a name to; ``()`` when it matches none."""

    def apps(host: str) -> tuple[str, ...]:
        match = shipped_matcher.match(host)
        return match.apps if match is not None else ()

    return apps
