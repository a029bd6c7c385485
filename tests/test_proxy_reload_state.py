"""Issue 12, item 6: reload state that tells the truth. A successful reload (even back to the
exact last good content) clears ``egresswatch_reload_last_successful``; the catalogue and the
policy are each validated, counted and logged on their own (a broken policy is still named while
the catalogue is broken); YAML syntax (``parse``) and content (``validation``) failures carry
their own reasons. Real files, reverted byte for byte."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.plugins.addon import Env


def ok(env: Env, kind: str) -> float | None:
    return env.registry.get_sample_value("egresswatch_reload_last_successful", {"kind": kind})


def failures(env: Env, kind: str, reason: str) -> float:
    v = env.registry.get_sample_value(
        "egresswatch_reload_failures_total", {"kind": kind, "reason": reason}
    )
    return v or 0.0


def app_file(env: Env) -> Path:
    return sorted(env.cat_dir.glob("*.yaml"))[-1]


def test_a_revert_to_identical_content_clears_the_failure(env: Env) -> None:
    good = env.policy.read_bytes()
    env.policy.write_text("apps: [unclosed\n")
    env.addon.reload()
    assert ok(env, "policy") == 0
    assert failures(env, "policy", "parse") == 1
    env.policy.write_bytes(good)  # the exact last good content: same version as in force
    env.addon.reload()
    assert ok(env, "policy") == 1 and ok(env, "catalogue") == 1
    assert failures(env, "policy", "parse") == 1


def test_a_broken_policy_is_named_while_the_catalogue_is_broken(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    cat = app_file(env)
    good_cat, good_pol = cat.read_bytes(), env.policy.read_bytes()
    cat.write_text("id: [oops\n")  # YAML syntax error
    env.policy.write_text("default: sometimes\n")  # valid YAML, invalid content
    caplog.set_level(logging.WARNING, logger="egresswatch")
    env.addon.reload()
    assert failures(env, "catalogue", "parse") == 1
    assert failures(env, "policy", "validation") == 1
    assert ok(env, "catalogue") == 0 and ok(env, "policy") == 0
    lines = [r.getMessage() for r in caplog.records if "reload rejected" in r.getMessage()]
    assert any(
        m.startswith(f"egresswatch: catalogue reload rejected: {cat}:2: YAML syntax error")
        and m.endswith("[parse]")
        for m in lines
    ), lines
    assert any(
        m.startswith(f"egresswatch: policy reload rejected: {env.policy}:1: default")
        and m.endswith("[validation]")
        for m in lines
    ), lines
    # Revert both: one successful reload clears both flags.
    cat.write_bytes(good_cat)
    env.policy.write_bytes(good_pol)
    env.addon.reload()
    assert ok(env, "catalogue") == 1 and ok(env, "policy") == 1


def test_a_catalogue_content_error_is_a_validation_failure(env: Env) -> None:
    cat = app_file(env)
    good = cat.read_bytes()
    cat.write_text(good.decode() + "\nunknown_key: 1\n")
    env.addon.reload()
    assert failures(env, "catalogue", "validation") == 1
    assert failures(env, "catalogue", "parse") == 0
    assert ok(env, "policy") == 1  # the policy still validates against the catalogue in force
    cat.write_bytes(good)
    env.addon.reload()
    assert ok(env, "catalogue") == 1
