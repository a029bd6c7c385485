"""Values as report text: times, lengths of time, percentages, HTML-escaped cells.

Every rendering shows times as ISO 8601 UTC with ``Z``; these helpers are shared by the
model's own descriptions and all four renderers so that a value reads the same everywhere.
"""

from __future__ import annotations

import html

from ..timeutil import from_unix

__all__ = ["duration", "esc", "iso", "pct"]


def iso(ts: float | None) -> str:
    """Unix seconds -> ISO 8601 UTC with ``Z`` (milliseconds only when there are any).

    >>> iso(0), iso(1.5), iso(None)
    ('1970-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z', '')
    """
    if ts is None:
        return ""
    dt = from_unix(ts)
    spec = "seconds" if dt.microsecond == 0 else "milliseconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """A readable length of time.

    >>> duration(93784.0), duration(59.6)
    ('1d 2h 3m 4s', '1m 0s')
    """
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    if d or h:
        parts.append(f"{h}h")
    if d or h or m:
        parts.append(f"{m}m")
    parts.append(f"{s}s")
    return " ".join(parts)


def pct(value: float) -> str:
    """A percentage with two decimals."""
    return f"{value:.2f}"


def esc(value: object) -> str:
    """A value as HTML text (attribute-safe); ``None`` is empty."""
    return html.escape("" if value is None else str(value), quote=True)
