"""Tests of ``egresswatch.store.migrations``: released migrations never change.

The events and archive tables' columns are written out from the event schema; a change to the
schema must come as a new migration, never as an edit of a released one (existing databases ran
the old text). The digests below are of the texts as released.
"""

from __future__ import annotations

import hashlib

from egresswatch.store import migrations

RELEASED = [
    (
        "63c6a542876dbd094cd5d6871915cf015ea53b27f54d9145162dc05b284d9690",
        "fecc37d3808c20f6cb55f24dd2db0da0115460e681e49250c63f7ce34cfc7221",
    ),
    (
        "f13b529222a6aadf3726ef6b865596849f2381d49e014446e32692b8f742ba5c",
        "625f5845d3305d1466c03287cac377817b215331f26b4d737c7a9e12ea0c84dd",
    ),
    (
        "df41107c89f212c872ffa1b7d1d83f7ac85fe1463b1f4cd9d3ce6534816cc62e",
        "dcee37c1a822b03af13f403aa6f6d6d9930935414b540c0b4db40a3316ec33b7",
    ),
]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_released_migrations_are_unchanged() -> None:
    released = list(zip(migrations.SQLITE, migrations.POSTGRES, strict=True))[: len(RELEASED)]
    assert [(_digest(s), _digest(p)) for s, p in released] == RELEASED


def test_one_name_per_migration_on_both_backends() -> None:
    assert len(migrations.SQLITE) == len(migrations.POSTGRES) == len(migrations.MIGRATION_NAMES)


def test_the_reserved_column_is_quoted_in_both_tables() -> None:
    for text in (migrations.SQLITE[0], migrations.SQLITE[2], migrations.POSTGRES[0]):
        assert '\n    "user" TEXT,' in text
