"""``egresswatch.proxy.journal``: the proxy's own events, and the heartbeat's housekeeping
(policy-exception expiry, pruning)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from egresswatch.events import EventKind
from egresswatch.proxy.journal import Journal
from egresswatch.proxy.observe import Settings

from tests.plugins.addon import NOW
from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import connect_flow


def test_exception_expiry_before_a_reload_is_logged_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.addon.journal.check_exceptions(NOW)  # a heartbeat
    later = 1_798_761_600.0 + 60  # EXC-1 expired a minute ago
    env.clock[0] = later
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon.reload()  # before the next heartbeat
        env.addon.journal.check_exceptions(later + 60)  # the next heartbeat
    assert caplog.text.count("egresswatch: exception EXC-1 expired at") == 1


def test_exception_expiry_logged_once(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.addon.journal.check_exceptions(NOW)
    later = 1_798_761_600.0 + 60  # 2027-01-01T00:01Z: EXC-1 (end of 2026-12-31) has expired
    with caplog.at_level(logging.WARNING, logger="egresswatch"):
        env.addon.journal.check_exceptions(later)
        env.addon.journal.check_exceptions(later + 60)
    assert (
        caplog.text.count("egresswatch: exception EXC-1 expired at 2027-01-01T00:00:00+00:00") == 1
    )
    env.clock[0] = later
    f = connect_flow("blocked.test", client(ip="10.9.9.9"))
    env.observe.http_connect(f)
    assert f.response is not None and f.response.status_code == 403


class _Writer:
    """Stands in for EventWriter: records what is put and what runs on the store."""

    def __init__(self) -> None:
        self.put_events: list[Any] = []
        self.calls = 0

    def put(self, event: Any) -> None:
        self.put_events.append(event)

    def call(self, fn: Any) -> None:
        self.calls += 1


def test_events_wait_for_the_writer_then_go_in_order() -> None:
    j = Journal(lambda: NOW, Settings(instance="i-1"), lambda: None, lambda: None)
    first, second = j.event(EventKind.CONFIG, NOW), j.event(EventKind.CONFIG, NOW + 1)
    j.emit(first)
    j.emit(second)
    assert j.pending() == [first, second] and j.writer is None
    w = _Writer()
    j.start(w)  # type: ignore[arg-type]
    third = j.event(EventKind.START, NOW + 2)
    j.emit(third)
    assert w.put_events == [first, second, third] and j.pending() == []
    assert (third.instance, third.catalogue_version, third.policy_version) == ("i-1", "", "")


def test_prune_runs_at_most_once_a_day_and_never_with_zero_days() -> None:
    j = Journal(lambda: NOW, Settings(), lambda: None, lambda: None)
    j.prune(NOW, 90)  # no writer yet: nothing to prune through
    w = _Writer()
    j.start(w)  # type: ignore[arg-type]
    j.prune(NOW, 0)
    assert w.calls == 0
    j.prune(NOW, 90)
    j.prune(NOW + 3600, 90)
    assert w.calls == 1
    j.prune(NOW + 86400, 90)
    assert w.calls == 2
