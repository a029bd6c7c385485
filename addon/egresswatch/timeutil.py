"""UTC, one helper per meaning: every time egresswatch stores or compares is UTC.

- :func:`as_utc`: a ``datetime`` from a caller (a CLI ``--now``, a test's frozen clock) as an
  aware UTC datetime; a naive one is taken as UTC, never as the machine's local time.
- :func:`from_unix`: Unix seconds (an event's ``ts``) as an aware UTC datetime.

>>> from datetime import datetime, timedelta, timezone
>>> as_utc(datetime(2026, 7, 1, 12)).isoformat()
'2026-07-01T12:00:00+00:00'
>>> as_utc(datetime(2026, 7, 1, 14, tzinfo=timezone(timedelta(hours=2)))).isoformat()
'2026-07-01T12:00:00+00:00'
>>> from_unix(0.0).isoformat()
'1970-01-01T00:00:00+00:00'
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

__all__ = ["as_utc", "from_unix"]


def as_utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive datetime is taken as UTC (as everywhere in egresswatch)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def from_unix(ts: float) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)
