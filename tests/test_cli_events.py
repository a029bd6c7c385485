"""``egresswatch events export``: ECS-shaped JSON lines, streamed, from sqlite and postgres."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from egresswatch.cli import main
from egresswatch.commands.events import ecs_document
from egresswatch.commands.events import parse_when
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import EventStore

MakeEvent = Callable[..., Event]
JULY = parse_when("2026-07-01")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-07-01", JULY),
        ("2026-07-01T00:00:00", JULY),
        ("2026-07-01T00:00:00Z", JULY),
        ("2026-07-01T03:00:00+03:00", JULY),
        ("2026-07-01 00:00:01.5", JULY + 1.5),
    ],
)
def test_parse_when(text: str, expected: float) -> None:
    assert parse_when(text) == expected


def test_parse_when_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not an ISO date"):
        parse_when("last tuesday")


def test_ecs_fields(make_event: MakeEvent) -> None:
    doc = ecs_document(
        make_event(
            ts=JULY + 0.25,
            user="alice",
            signal="http_host",
            exception_id="EXC-1",
            detail={"path": "/x"},
            decided_by="exception",
            decided_id="EXC-1",
        )
    )
    assert doc["@timestamp"] == "2026-07-01T00:00:00.250000Z"
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["category"] == ["network"]
    assert doc["event"]["action"] == "blocked"
    assert doc["event"]["outcome"] == "failure"
    assert doc["event"]["type"] == ["connection", "denied"]
    assert doc["destination"] == {"domain": "www.tiktok.com"}
    assert doc["source"] == {"ip": "10.0.0.7", "address": "10.0.0.7"}
    assert doc["client"] == {"ip": "10.0.0.7"}
    assert doc["user"] == {"name": "alice"}
    # rule.name: the catalogue rule that matched; ruleset and id: the policy rule that decided
    assert doc["rule"]["name"] == "tiktok.com"
    assert (doc["rule"]["ruleset"], doc["rule"]["id"]) == ("exception", "EXC-1")
    assert doc["observer"]["name"] == "proxy-1"
    assert doc["network"] == {"protocol": "http"}
    assert doc["egresswatch"]["regimes"] == ["us-far-52-204-27"]
    assert doc["egresswatch"]["exception_id"] == "EXC-1"
    assert doc["egresswatch"]["detail"] == {"path": "/x"}


def test_ecs_pseudonymous_client_and_ip_destination(make_event: MakeEvent) -> None:
    doc = ecs_document(
        make_event(client="hmac:3f2a", host="203.0.113.9", signal="ip", action="monitor")
    )
    assert doc["source"] == {"address": "hmac:3f2a"} and "client" not in doc
    assert doc["destination"] == {"ip": "203.0.113.9"}
    assert doc["event"]["outcome"] == "success" and "network" not in doc
    life = ecs_document(
        make_event(kind=EventKind.HEARTBEAT, app=None, host=None, action=None, rule=None)
    )
    assert life["event"]["kind"] == "state" and life["event"]["action"] == "egresswatch-heartbeat"


@pytest.mark.parametrize(
    ("kind", "category", "type_"),
    [
        (EventKind.START, "process", "start"),
        (EventKind.STOP, "process", "end"),
        (EventKind.HEARTBEAT, "process", "info"),
        (EventKind.CONFIG, "configuration", "change"),
    ],
)
def test_ecs_lifecycle_events_carry_an_allowed_type(
    make_event: MakeEvent, kind: EventKind, category: str, type_: str
) -> None:
    # ECS pairs each category with its allowed event.type values.
    doc = ecs_document(make_event(kind=kind, app=None, host=None, action=None, rule=None))
    assert (doc["event"]["category"], doc["event"]["type"]) == ([category], [type_])
    assert "outcome" not in doc["event"]


def test_export_streams_the_window(
    sql_store: EventStore, make_event: MakeEvent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql_store.write([make_event(ts=JULY - 1), make_event(ts=JULY + 5)])
    sql_store.write([make_event(ts=JULY + 86400 * i + 1, instance="p2") for i in range(40)])
    out = tmp_path / "export.jsonl"
    rc = main(
        ["events", "export", "--store", sql_store.url, "--since", "2026-07-01",
         "--until", "2026-08-01", "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    lines = out.read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    assert len(docs) == 1 + 31  # July only, half-open
    assert docs[0]["@timestamp"] == "2026-07-01T00:00:01.000000Z"
    assert [d["@timestamp"] for d in docs] == sorted(d["@timestamp"] for d in docs)
    assert "exported 32 events" in capsys.readouterr().err
    rc = main(["events", "export", "--store", sql_store.url, "--since", "2026-06-30T23:59:59"])
    assert rc == 0
    stdout = capsys.readouterr().out.splitlines()
    assert len(stdout) == 42


def test_export_bad_date_exits_2(sql_store: EventStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "export", "--store", sql_store.url, "--since", "july"]) == 2
    assert "not an ISO date" in capsys.readouterr().err
