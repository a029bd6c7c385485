from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import pytest
from egresswatch.identity import MIN_KEY_BYTES
from egresswatch.identity import ClientIdentity
from egresswatch.identity import KeyFileError
from egresswatch.identity import identity_from_options
from egresswatch.identity import load_key

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("[fd00::1]", "fd00::1"),
        ("FD00:0:0::1", "fd00::1"),
        ("not-an-ip", "not-an-ip"),
        (None, None),
        ("", None),
    ],
)
def test_address_mode(raw: str | None, expected: str | None) -> None:
    assert ClientIdentity("address").of(raw) == expected


@pytest.mark.parametrize("raw", ["10.0.0.1", "fd00::1", None])
def test_none_mode(raw: str | None) -> None:
    assert ClientIdentity("none").of(raw) is None


def test_hash_mode_is_hmac_sha256_truncated() -> None:
    ident = ClientIdentity("hash", KEY)
    expected = "h:" + hmac.new(KEY, b"10.0.0.1", hashlib.sha256).hexdigest()[:16]
    assert ident.of("10.0.0.1") == expected
    assert len(expected) == 18
    # the same client in any notation gets the same pseudonym; another client or key does not
    assert ident.of("::ffff:10.0.0.1") == expected
    assert ident.of("10.0.0.2") != expected
    assert ClientIdentity("hash", b"x" * 32).of("10.0.0.1") != expected
    assert ident.of("fd00::1") == ident.of("[FD00:0::1]")
    assert ident.of(None) is None


@pytest.mark.parametrize(
    ("mode", "key", "fragment"),
    [
        ("hash", None, "needs a key"),
        ("hash", b"short", "needs a key"),
        ("address", KEY, "only used in hash mode"),
        ("ip", None, "unknown client identity mode"),
    ],
)
def test_bad_identity(mode: str, key: bytes | None, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ClientIdentity(mode, key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"0123456789abcdef", b"0123456789abcdef"),
        (b"0123456789abcdef\n", b"0123456789abcdef"),
        (b"0123456789abcdef0123\r\n  ", b"0123456789abcdef0123"),
        (bytes(range(32)), bytes(range(32))),
    ],
)
def test_load_key(tmp_path: Path, content: bytes, expected: bytes) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(0o600)
    assert load_key(path) == expected


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read key file"),
        (b"", "key file is empty"),
        (b"\n\n", "key file is empty"),
        (b"x" * (MIN_KEY_BYTES - 1) + b"\n", f"key is {MIN_KEY_BYTES - 1} bytes"),
    ],
)
def test_load_key_errors(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=fragment) as info:
        load_key(path)
    assert str(path) in str(info.value)


def test_load_key_warns_when_others_can_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="egresswatch.identity"):
        load_key(path)
    assert "accessible to other users" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="egresswatch.identity"):
        load_key(path)
    assert caplog.text == ""


def test_identity_from_options(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    assert identity_from_options("hash", path) == ClientIdentity("hash", KEY)
    assert identity_from_options("address", None) == ClientIdentity("address")
    assert identity_from_options("none", str(path)).of("10.0.0.1") is None
    with pytest.raises(ValueError, match="needs a key file"):
        identity_from_options("hash", None)
    with pytest.raises(ValueError, match="use one of address, hash, none"):
        identity_from_options("mac", None)
    with pytest.raises(KeyFileError):
        identity_from_options("hash", tmp_path / "missing")
