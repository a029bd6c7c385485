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

__all__ = ["LoadError", "State", "load_state"]


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


class LoadError(Exception):
    """A catalogue or policy that cannot be loaded: ``kind`` (catalogue/policy), ``reason``
    (validation/io, the metric label) and one ``file:line: reason`` line per problem."""

    def __init__(self, kind: str, reason: str, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.kind = kind
        self.reason = reason
        self.problems = problems


def load_state(dirs: tuple[Path, ...], policy_path: Path | None, old: State | None = None) -> State:
    """Load (catalogue, matcher, policy); reuse ``old``'s catalogue if its files are unchanged."""
    try:
        cat = load_catalogue(list(dirs))
    except CatalogueError as e:
        raise LoadError("catalogue", "validation", [str(p) for p in e.problems]) from e
    except OSError as e:
        raise LoadError("catalogue", "io", [f"{e.filename or dirs}: {e.strerror or e}"]) from e
    if old is not None and old.catalogue.version == cat.version and old.dirs == dirs:
        cat, matcher = old.catalogue, old.matcher
    else:
        # The proxy never explains a bulk name's line: once the names are in the (native)
        # matcher, neither it nor the catalogue keeps its own copy (70 bytes a name at 1M).
        full = Matcher.from_catalogue(cat)
        matcher = full.slim()
        if matcher is not full:  # the names now live in the native table only
            cat = cat.slim()
    try:
        cats = load_categories(category_dirs(dirs), old.categories if old is not None else None)
    except CatalogueError as e:
        raise LoadError("catalogue", "validation", [str(p) for p in e.problems]) from e
    except OSError as e:
        raise LoadError("catalogue", "io", [f"{e.filename or dirs}: {e.strerror or e}"]) from e
    try:
        pol = load_policy(policy_path, cat)
    except PolicyError as e:
        raise LoadError("policy", "validation", [str(p) for p in e.problems]) from e
    except OSError as e:
        raise LoadError("policy", "io", [f"{policy_path}: {e.strerror or e}"]) from e
    return State(cat, matcher, pol, dirs, policy_path, cats)
