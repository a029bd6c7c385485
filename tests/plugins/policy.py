"""pytest fixtures: policies over a small catalogue (owned by the policy area; loaded from
conftest.py).

- ``cat`` (module): five apps ``a1``..``a5`` under four regimes (:data:`REGIMES`: ``rb`` and
  ``rm`` in force, ``rold`` revoked, ``rnew`` not yet effective); ``a1`` and ``a3`` share
  ``shared.test``.
- ``matcher`` (module) and ``hit``: the matcher of ``cat``, and the match of a name (asserted).
- ``write_policy``: writes a (dedented) policy text to ``tmp_path/policy.yaml``.
- ``policy_from``: the policy a text loads to over ``cat``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import load_catalogue
from egresswatch.matcher import Match
from egresswatch.matcher import Matcher
from egresswatch.policy import Policy
from egresswatch.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# rb and rm are in force; rold was revoked on 2021-01-01; rnew takes effect in 2099.
REGIMES = """\
regimes:
  - id: rb
    title: Regime that we block
    signed: 2020-01-01
    effective: 2020-01-01
    apps: [a1, a2]
  - id: rm
    title: Regime that we monitor
    signed: 2020-01-01
    effective: 2020-01-01
    apps: [a2, a3]
  - id: rold
    title: Revoked regime
    signed: 2019-01-01
    effective: 2019-01-01
    revoked: 2021-01-01
    apps: [a4]
  - id: rnew
    title: Future regime
    signed: 2098-01-01
    effective: 2099-01-01
    apps: [a4]
"""


def app_file(app_id: str, regimes: list[str], extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        id: {app_id}
        name: App {app_id}
        category: other
        regimes: [{", ".join(regimes)}]
        domains:
          - domain: {app_id}.test
            source: unit test
            confidence: high
        """)
        + extra
    )


SHARED = """\
  - domain: shared.test
    source: unit test
    confidence: medium
    shared_with: [{other}]
"""


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    d = tmp_path_factory.mktemp("cat")
    (d / "regimes.yaml").write_text(REGIMES)
    files = {
        "a1": app_file("a1", ["rb"], SHARED.format(other="a3")),
        "a2": app_file("a2", ["rb", "rm"]),
        "a3": app_file("a3", ["rm"], SHARED.format(other="a1")),
        "a4": app_file("a4", ["rold", "rnew"]),
        "a5": app_file("a5", ["rm"]),
    }
    for app_id, text in files.items():
        (d / f"{app_id}.yaml").write_text(text)
    return load_catalogue([d])


@pytest.fixture(scope="module")
def matcher(cat: Catalogue) -> Matcher:
    return Matcher.from_catalogue(cat)


@pytest.fixture
def hit(matcher: Matcher) -> Callable[[str], Match]:
    def make(host: str) -> Match:
        m = matcher.match(host)
        assert m is not None, host
        return m

    return make


WritePolicy = Callable[[str], Path]


@pytest.fixture
def write_policy(tmp_path: Path) -> WritePolicy:
    def write(text: str) -> Path:
        p = tmp_path / "policy.yaml"
        p.write_text(textwrap.dedent(text), encoding="utf-8")
        return p

    return write


@pytest.fixture
def policy_from(write_policy: WritePolicy, cat: Catalogue) -> Callable[[str], Policy]:
    def make(text: str) -> Policy:
        return load_policy(write_policy(text), cat)

    return make


#: Four departments, one nested in another (``lab`` in ``engineering``), both families.
DEPARTMENTS = """\
departments:
  - name: engineering
    cidrs: [10.1.0.0/16, "fd00:1::/48"]
  - name: lab
    cidrs: [10.1.200.0/24, "fd00:1:0:42::/64"]
  - name: finance
    cidrs: [10.2.0.0/16, 192.0.2.7]
  - name: corp
    cidrs: [10.0.0.0/8]
"""
