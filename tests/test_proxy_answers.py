"""``egresswatch.proxy.answers``: what a blocked client is told, as pure functions."""

from __future__ import annotations

import json

import pytest
from egresswatch.proxy.answers import block_page
from egresswatch.proxy.answers import prefers_json


@pytest.mark.parametrize(
    ("accept", "json_"),
    [
        ("application/json", True),
        ("application/json, text/html;q=0.5", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("text/html;q=0.2, application/json;q=0.9", True),
        ("*/*", False),
        ("application/json;q=0", False),
        ("", False),
    ],
)
def test_prefers_json(accept: str, json_: bool) -> None:
    assert prefers_json(accept) is json_


def test_block_page_escapes_every_value() -> None:
    body, ctype = block_page(
        app="a<b",
        app_name="<script>x</script>",
        regime="r&d",
        contact='"c" <c@x>',
        event_id="<id>",
        host="h<o>st",
        as_json=False,
    )
    text = body.decode()
    assert ctype.startswith("text/html")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "r&amp;d" in text and "&lt;id&gt;" in text and "&lt;c@x&gt;" in text
    body, ctype = block_page(
        app="a", app_name="A", regime="r", contact="", event_id="e1", host="h", as_json=True
    )
    assert ctype == "application/json"
    assert json.loads(body)["event_id"] == "e1"
