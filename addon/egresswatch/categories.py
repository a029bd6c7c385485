"""Categories beside the designated apps: public encrypted-DNS resolvers and ECH front ends.

The bundled catalogue directory holds two sub-directories in the app-file format that are
**not** designated apps and are never merged into them:

* ``encrypted-dns/``: public DNS-over-HTTPS / TLS / QUIC and DNSCrypt resolvers, one file per
  operator (``category: encrypted-dns``); the file's id is the bounded ``resolver`` label.
* ``ech/``: client-facing Encrypted ClientHello servers' public names (``category:
  ech-frontend``), the outer SNI that stands in for a hidden name.

:func:`load_categories` reads them with the catalogue loader (so a bad file fails with
``file:line``) into one :class:`Categories`: its own matcher, the resolver ids, the ECH public
names. The addon builds it off the event loop with the catalogue and swaps it in with it.

Also here: :func:`httpdns_apps`, the designated apps whose catalogue entries are tagged
``httpdns`` (the vendors' built-in DNS-over-HTTP services).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from egresswatch.catalogue import load_catalogue
from egresswatch.catalogue_model import Catalogue
from egresswatch.catalogue_model import DomainRule
from egresswatch.matcher import Matcher

__all__ = [
    "CATEGORY_DIRS",
    "ECH_FRONTEND",
    "ENCRYPTED_DNS",
    "HTTPDNS_TAG",
    "TLS_PORTS",
    "Categories",
    "category_dirs",
    "designated_frontend",
    "httpdns_apps",
    "is_httpdns",
    "load_categories",
]

ENCRYPTED_DNS = "encrypted-dns"
ECH_FRONTEND = "ech-frontend"
#: Sub-directories of a catalogue directory read as categories (never as designated apps).
CATEGORY_DIRS = ("encrypted-dns", "ech")
#: The tag of a designated app's built-in DNS-over-HTTP service.
HTTPDNS_TAG = "httpdns"
#: Ports on which a connection to a resolver's *address* is encrypted DNS (DoH/DoQ, DoT).
#: Port 53 is plain DNS: visible, not a bypass.
TLS_PORTS = frozenset({443, 853})


@dataclass(frozen=True, slots=True)
class Categories:
    """The loaded categories: their catalogue, one matcher over them, and what each id means."""

    catalogue: Catalogue | None = None
    matcher: Matcher | None = None
    #: Resolver ids (``category: encrypted-dns``), sorted: the metric's label values.
    resolvers: tuple[str, ...] = ()
    #: ECH client-facing public names (exact names of ``category: ech-frontend`` entries).
    public_names: frozenset[str] = field(default_factory=frozenset)
    #: Ids of the ECH front-end entries.
    frontends: frozenset[str] = field(default_factory=frozenset)

    @property
    def version(self) -> str:
        return self.catalogue.version if self.catalogue is not None else ""

    @property
    def files(self) -> tuple[Path, ...]:
        return self.catalogue.files if self.catalogue is not None else ()

    def resolver(self, name: str | None) -> str | None:
        """The resolver id ``name`` (a host name or an IP literal) belongs to, if any."""
        if self.matcher is None or not name:
            return None
        m = self.matcher.match(name)
        if m is None or m.app not in self.resolvers:
            return None
        return m.app

    def name(self, resolver: str) -> str:
        app = self.catalogue.apps.get(resolver) if self.catalogue is not None else None
        return app.name if app is not None else resolver


def category_dirs(dirs: Iterable[Path]) -> tuple[Path, ...]:
    """The category sub-directories present under the catalogue directories ``dirs``."""
    return tuple(d / sub for d in dirs for sub in CATEGORY_DIRS if (d / sub).is_dir())


def load_categories(dirs: Sequence[Path], old: Categories | None = None) -> Categories:
    """Load the category directories ``dirs`` (from :func:`category_dirs`); none: empty.

    Raises :class:`~egresswatch.catalogue_model.CatalogueError` (``file:line`` problems) like the
    catalogue. ``old`` is returned as it is when its files are unchanged."""
    if not dirs:
        return Categories()
    cat = load_catalogue(list(dirs))
    if old is not None and old.version == cat.version:
        return old
    resolvers = tuple(sorted(a.id for a in cat.apps.values() if a.category == ENCRYPTED_DNS))
    fronts = [a for a in cat.apps.values() if a.category == ECH_FRONTEND]
    public = frozenset(r.domain for a in fronts for r in a.rules)
    return Categories(
        cat, Matcher.from_catalogue(cat), resolvers, public, frozenset(a.id for a in fronts)
    )


def designated_frontend(categories: Categories, catalogue: Catalogue, frontend: str) -> bool:
    """Whether the ECH front end ``frontend`` (an ``ech-frontend`` id) is a designated app's
    vendor's: its file names the same ``vendor`` as a designated app (compared ignoring case
    and surrounding space). The bundled front ends (Cloudflare) belong to no designated vendor;
    an operator lists a vendor's own client-facing names in such a file."""
    cats = categories.catalogue
    app = cats.apps.get(frontend) if cats is not None else None
    if app is None or frontend not in categories.frontends:
        return False
    vendor = app.vendor.strip().casefold()
    return bool(vendor) and any(
        a.vendor.strip().casefold() == vendor for a in catalogue.apps.values()
    )


def is_httpdns(rule: object) -> bool:
    """Whether a match's rule is a designated app's built-in DNS service (tagged ``httpdns``)."""
    return isinstance(rule, DomainRule) and HTTPDNS_TAG in rule.tags


def httpdns_apps(catalogue: Catalogue) -> tuple[str, ...]:
    """The designated apps with at least one ``httpdns`` entry (the metric's label values)."""
    return tuple(
        sorted(
            app_id
            for app_id, app in catalogue.apps.items()
            if any(HTTPDNS_TAG in r.tags for r in app.rules)
        )
    )
