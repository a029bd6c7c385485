"""``egresswatch.proxy.options``: the option parsers (``ValueError`` with the operator's message)."""

from __future__ import annotations

import pytest
from egresswatch.proxy import options
from egresswatch.proxy.options import parse_listen


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
        ("", None),
        ("off", None),
    ],
)
def test_parse_listen(spec: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(spec) == expected


@pytest.mark.parametrize(
    "spec", ["9464", "::1:9464", "[::1]9464", "host:http", "host:70000", ":80"]
)
def test_parse_listen_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(spec)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"egresswatch_heartbeat": 0}, "egresswatch_heartbeat must be at least 1 second"),
        ({"egresswatch_queue_size": 0}, "egresswatch_queue_size must be at least 1"),
        ({"egresswatch_flush_ms": -5}, "egresswatch_flush_ms must not be negative, got -5"),
        ({"egresswatch_retention_days": -1}, "must not be negative"),
    ],
)
def test_validate_counts_refuses(values: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options.validate_counts(values)


def test_validate_counts_accepts_zero_where_zero_means_off() -> None:
    options.validate_counts({"egresswatch_retention_days": 0, "egresswatch_reload_interval": 0})


def test_store_url_schemes() -> None:
    assert options.store_url("postgres://h/db", "") == "postgres://h/db"
    assert options.store_url("", "/data") == "sqlite:///data/events.db"
    with pytest.raises(ValueError, match="unknown scheme"):
        options.store_url("mysql://x", "")


def test_metrics_endpoint_needs_both_tls_files() -> None:
    assert options.metrics_endpoint("off", "", "") == (None, ("", ""))
    assert options.metrics_endpoint("[::1]:1", "c", "k") == (("::1", 1), ("c", "k"))
    with pytest.raises(ValueError, match="go together"):
        options.metrics_endpoint("127.0.0.1:1", "c", "")
    with pytest.raises(ValueError, match="^egresswatch_metrics_listen: invalid listen address"):
        options.metrics_endpoint("nope", "", "")


def test_catalogue_paths() -> None:
    dirs, policy = options.catalogue_paths(False, ["/a", "/b"], "/p.yaml")
    assert [str(d) for d in dirs] == ["/a", "/b"] and str(policy) == "/p.yaml"
    assert options.catalogue_paths(False, ["/a"], "")[1] is None
    with pytest.raises(ValueError, match="no catalogue"):
        options.catalogue_paths(False, [], "")


def test_client_identity_hash_needs_a_key_file() -> None:
    assert options.client_identity("none", "").mode == "none"
    with pytest.raises(ValueError, match="needs egresswatch_client_key_file"):
        options.client_identity("hash", "")
    with pytest.raises(ValueError, match="invalid value 'mac'"):
        options.client_identity("mac", "")
