"""Tests of ``egresswatch.store`` itself: store URLs (the one list of schemes), redaction and
``open_store``. The backends' behaviour is in ``test_store_backends.py``."""

from __future__ import annotations

import pytest
from egresswatch.store import BACKENDS
from egresswatch.store import SCHEMES
from egresswatch.store import backend_of
from egresswatch.store import open_store
from egresswatch.store import redact_url
from egresswatch.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:///var/lib/egresswatch/events.db", "sqlite"),
        ("sqlite:relative/events.db", "sqlite"),
        ("postgresql://egw@db/events", "postgresql"),
        ("postgres://egw@db/events", "postgresql"),
        ("PostgreSQL://egw@db/events", "postgresql"),
        ("memory://", "memory"),
    ],
)
def test_backend_of(url: str, backend: str) -> None:
    assert backend_of(url) == backend


@pytest.mark.parametrize("url", ["mysql://db/x", "/var/lib/events.db", "", "file:///x.db"])
def test_an_unknown_scheme_names_the_known_ones(url: str) -> None:
    with pytest.raises(ValueError, match=r"use sqlite://, postgresql:// or memory://"):
        backend_of(url)
    with pytest.raises(ValueError, match=r"unknown event store URL scheme"):
        open_store(url)


def test_every_scheme_names_a_backend_and_every_backend_has_its_scheme() -> None:
    assert set(SCHEMES.values()) == set(BACKENDS) == {"sqlite", "postgresql", "memory"}
    assert all(SCHEMES[b] == b for b in BACKENDS)


def test_open_store_opens_the_named_backend() -> None:
    store = open_store("memory://")
    try:
        assert isinstance(store, MemoryStore)
    finally:
        store.close()


def test_redact_url_hides_both_kinds_of_password() -> None:
    assert redact_url("postgresql://egw:s3cret@db/events?password=x&sslmode=require") == (
        "postgresql://egw:***@db/events?password=***&sslmode=require"
    )
    assert redact_url("sqlite:///var/lib/egresswatch/events.db") == (
        "sqlite:///var/lib/egresswatch/events.db"
    )
