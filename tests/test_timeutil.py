"""Tests of ``egresswatch.timeutil``: one UTC helper per meaning."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from egresswatch.timeutil import as_utc
from egresswatch.timeutil import from_unix


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (datetime(2026, 7, 1, 12, 0), datetime(2026, 7, 1, 12, 0, tzinfo=UTC)),  # naive = UTC
        (datetime(2026, 7, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2))),
         datetime(2026, 7, 2, 1, 30, tzinfo=UTC)),
        (datetime(2026, 7, 1, 12, 0, tzinfo=UTC), datetime(2026, 7, 1, 12, 0, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_as_utc(given: datetime, expected: datetime) -> None:
    got = as_utc(given)
    assert got == expected and got.tzinfo is UTC and got.utcoffset() == timedelta(0)
    assert (got.year, got.month, got.day, got.hour) == (
        expected.year,
        expected.month,
        expected.day,
        expected.hour,
    )


def test_from_unix() -> None:
    assert from_unix(1_782_864_000.5) == datetime(2026, 7, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    assert from_unix(0).tzinfo is UTC
