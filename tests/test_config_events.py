"""Tests of ``egresswatch.config_events``: the typed details of START and CONFIG rows.

What the writers store today must parse into the types and come back as the very same object
(the stored bytes and hashes depend on it); a stored detail of the wrong shape is refused with
the event and the key named.
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.config_events import CatalogueLoaded
from egresswatch.config_events import ExceptionDetail
from egresswatch.config_events import MalformedDetail
from egresswatch.config_events import PolicyLoaded
from egresswatch.config_events import StartDetail
from egresswatch.config_events import parse_detail
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.policy import load_policy

EXAMPLE_POLICY = Path(__file__).parent.parent / "deploy" / "policy.example.yaml"


def _event(kind: EventKind, detail: Any) -> Event:
    return Event(ts=0.0, kind=kind, instance="proxy-1", event_id="ev7", detail=detail)


def test_a_policy_snapshot_round_trips() -> None:
    catalogue = load_catalogue([bundled_dir()])
    policy = load_policy(EXAMPLE_POLICY, catalogue)
    stored = {"kind": "policy", **policy.snapshot(datetime(2026, 7, 1, tzinfo=UTC))}
    typed = parse_detail(_event(EventKind.CONFIG, stored))
    assert isinstance(typed, PolicyLoaded)
    assert typed.to_detail() == stored
    assert typed.version == policy.version and typed.exceptions  # the example grants some


def test_the_built_in_policy_round_trips() -> None:
    """No file, no ticket: both are stored as null and must come back as null."""
    catalogue = load_catalogue([bundled_dir()])
    policy = load_policy(None, catalogue)
    stored = {"kind": "policy", **policy.snapshot(datetime(2026, 7, 1, tzinfo=UTC))}
    assert stored["file"] is None
    typed = parse_detail(_event(EventKind.CONFIG, stored))
    assert isinstance(typed, PolicyLoaded) and typed.to_detail() == stored


def test_an_exception_without_a_ticket_round_trips() -> None:
    stored = {
        "kind": "policy",
        "exceptions": [
            {
                "id": "X9",
                "apps": ["tiktok"],
                "regimes": [],
                "clients": [],
                "users": ["alice"],
                "reason": "pilot",
                "approver": "ciso@example.org",
                "ticket": None,
                "expires": "2026-12-31",
                "expires_at": "2027-01-01T00:00:00+00:00",
            }
        ],
    }
    typed = parse_detail(_event(EventKind.CONFIG, stored))
    assert isinstance(typed, PolicyLoaded)
    assert typed.to_detail()["exceptions"] == stored["exceptions"]


def test_a_catalogue_load_round_trips() -> None:
    catalogue = load_catalogue([bundled_dir()])
    stored = {
        "kind": "catalogue",
        "version": catalogue.version,
        "files": [str(f) for f in catalogue.files],
        "entries": catalogue.entries_per_app(),
    }
    typed = parse_detail(_event(EventKind.CONFIG, stored))
    assert isinstance(typed, CatalogueLoaded)
    assert typed.to_detail() == stored
    assert dict(typed.entries)["tiktok"] > 0


def test_a_start_round_trips() -> None:
    stored = {
        "egresswatch": "0.1.0",
        "mitmproxy": "12.3.1",
        "catalogue_version": "c1",
        "policy_version": "p1",
        "client_identity": "hash",
    }
    typed = parse_detail(_event(EventKind.START, stored))
    assert typed == StartDetail("0.1.0", "12.3.1", "c1", "p1", "hash")
    assert typed.to_detail() == stored


def test_an_older_policy_detail_without_the_later_keys_parses() -> None:
    typed = parse_detail(
        _event(
            EventKind.CONFIG,
            {
                "kind": "policy",
                "version": "p1",
                "exceptions": [{"id": "X1", "apps": ["tiktok"], "expires": "2026-07-15"}],
            },
        )
    )
    assert typed == PolicyLoaded(
        version="p1", exceptions=(ExceptionDetail(id="X1", apps=("tiktok",), expires="2026-07-15"),)
    )


@pytest.mark.parametrize(
    ("kind", "event"),
    [
        (EventKind.HEARTBEAT, None),
        (EventKind.STOP, None),
        (EventKind.START, None),
        (EventKind.CONFIG, {"kind": "a-later-kind", "anything": 1}),
        (EventKind.HIT, {"kind": "policy"}),
    ],
)
def test_rows_without_a_typed_detail_give_none(kind: EventKind, event: Any) -> None:
    assert parse_detail(_event(kind, event)) is None


@pytest.mark.parametrize(
    ("kind", "detail", "message"),
    [
        (EventKind.START, {"client_identity": ["hash"]}, r"detail\.client_identity: expected text, got list"),
        (EventKind.CONFIG, {"kind": "catalogue", "files": "a.yaml"}, r"detail\.files: expected a list of text, got str"),
        (EventKind.CONFIG, {"kind": "catalogue", "entries": {"tiktok": "12"}}, r"detail\.entries: expected an object of whole numbers"),
        (EventKind.CONFIG, {"kind": "catalogue", "entries": {"tiktok": True}}, r"detail\.entries: expected an object of whole numbers"),
        (EventKind.CONFIG, {"kind": "policy", "dry_run": "yes"}, r"detail\.dry_run: expected true or false, got str"),
        (EventKind.CONFIG, {"kind": "policy", "modes": {"tiktok": 1}}, r"detail\.modes: expected an object of text"),
        (EventKind.CONFIG, {"kind": "policy", "exceptions": ["X1"]}, r"detail\.exceptions: expected a list of objects"),
        (EventKind.CONFIG, {"kind": "policy", "exceptions": [{"apps": []}]}, r"detail\.exceptions\[0\]\.id: expected text, got NoneType"),
        (EventKind.CONFIG, {"kind": "policy", "exceptions": [{"id": "X1", "users": [3]}]}, r"detail\.exceptions\[0\]\.users: expected a list of text"),
        (EventKind.CONFIG, ["kind", "policy"], r"detail: expected an object, got list"),
    ],
)  # fmt: skip
def test_a_malformed_detail_names_the_event_and_the_key(
    kind: EventKind, detail: Any, message: str
) -> None:
    with pytest.raises(MalformedDetail, match=rf"^{kind} event proxy-1/ev7: .*{message}"):
        parse_detail(_event(kind, detail))
