"""The one immutable object every hook reads: catalogue, matcher and policy, loaded together.

``load_state`` builds it (or fails with :class:`LoadError`, which names file and line); the addon
swaps it in as one attribute, on start-up, on an option change and on a reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from egresswatch.catalogue import Catalogue
from egresswatch.catalogue import CatalogueError
from egresswatch.catalogue import load_catalogue
from egresswatch.categories import Categories
from egresswatch.categories import category_dirs
from egresswatch.categories import load_categories
from egresswatch.matcher import Matcher
from egresswatch.policy import Policy
from egresswatch.policy import PolicyError
from egresswatch.policy import load_policy
from egresswatch.yamlpos import Problem

__all__ = ["Failure", "LoadError", "State", "load_state"]


@dataclass(frozen=True, slots=True)
class State:
    """Everything a hook reads, swapped as one object on reload."""

    catalogue: Catalogue
    matcher: Matcher
    policy: Policy
    dirs: tuple[Path, ...]
    policy_path: Path | None
    #: Encrypted-DNS resolvers and ECH front ends (``egresswatch.categories``), never apps.
    categories: Categories = Categories()

    def files(self) -> list[Path]:
        """The files this state was loaded from (catalogue and category files, then the
        policy file)."""
        files = [*self.catalogue.files, *self.categories.files]
        if self.policy_path is not None:
            files.append(self.policy_path)
        return files


@dataclass(frozen=True, slots=True)
class Failure:
    """One file set that cannot be loaded: ``kind`` (catalogue/policy), ``reason`` (``parse``:
    YAML syntax, ``validation``: the content, ``io``: unreadable; the metric label) and one
    ``file:line: reason`` line per problem."""

    kind: str
    reason: str
    problems: list[str]


class LoadError(Exception):
    """A catalogue and/or policy that cannot be loaded: one :class:`Failure` per kind, each file
    set validated on its own (a broken policy is still named while the catalogue is broken).
    ``kind``, ``reason`` and ``problems`` are the first failure's."""

    def __init__(self, failures: list[Failure]) -> None:
        assert failures
        super().__init__("\n".join(p for f in failures for p in f.problems))
        self.failures = failures
        self.kind = failures[0].kind
        self.reason = failures[0].reason
        self.problems = failures[0].problems


def _reason(problems: list[Problem]) -> str:
    """``parse`` when a file is not YAML at all, else ``validation``."""
    return "parse" if any(p.message.startswith("YAML") for p in problems) else "validation"


def load_state(dirs: tuple[Path, ...], policy_path: Path | None, old: State | None = None) -> State:
    """Load (catalogue, matcher, policy); reuse ``old``'s catalogue if its files are unchanged.

    Both are validated even when one fails: a policy is checked against the new catalogue, or,
    when that is broken, against ``old``'s (at start-up, with no old state, it waits for a
    catalogue that loads)."""
    failures: list[Failure] = []
    cat: Catalogue | None = None
    matcher: Matcher | None = None
    try:
        cat = load_catalogue(list(dirs))
    except CatalogueError as e:
        failures.append(Failure("catalogue", _reason(e.problems), [str(p) for p in e.problems]))
    except OSError as e:
        failures.append(Failure("catalogue", "io", [f"{e.filename or dirs}: {e.strerror or e}"]))
    if cat is not None:
        if old is not None and old.catalogue.version == cat.version and old.dirs == dirs:
            cat, matcher = old.catalogue, old.matcher
        else:
            # The proxy never explains a bulk name's line: once the names are in the (native)
            # matcher, neither it nor the catalogue keeps its own copy (70 bytes a name at 1M).
            full = Matcher.from_catalogue(cat)
            matcher = full.slim()
            if matcher is not full:  # the names now live in the native table only
                cat = cat.slim()
    cats: Categories | None = None
    try:
        cats = load_categories(category_dirs(dirs), old.categories if old is not None else None)
    except CatalogueError as e:
        failures.append(Failure("catalogue", _reason(e.problems), [str(p) for p in e.problems]))
    except OSError as e:
        failures.append(Failure("catalogue", "io", [f"{e.filename or dirs}: {e.strerror or e}"]))
    against = cat if cat is not None else (old.catalogue if old is not None else None)
    pol: Policy | None = None
    if against is not None:
        try:
            pol = load_policy(policy_path, against)
        except PolicyError as e:
            failures.append(Failure("policy", _reason(e.problems), [str(p) for p in e.problems]))
        except OSError as e:
            failures.append(Failure("policy", "io", [f"{policy_path}: {e.strerror or e}"]))
    if failures:
        raise LoadError(failures)
    assert cat is not None and matcher is not None and pol is not None and cats is not None
    return State(cat, matcher, pol, dirs, policy_path, cats)
