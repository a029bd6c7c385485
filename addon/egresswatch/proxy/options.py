"""The addon's options: declared for mitmproxy's loader, and parsed by small functions that raise
``ValueError`` with the message the operator sees (``EgressWatch.configure`` turns it into
mitmproxy's ``OptionsError``)."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from egresswatch.catalogue import bundled_dir
from egresswatch.identity import ClientIdentity
from egresswatch.identity import identity_from_options
from egresswatch.pac import build_pac
from egresswatch.proxy.answers import DNS_BLOCK_CHOICES
from egresswatch.proxy.layers import DECRYPT_CHOICES
from egresswatch.store import default_store_url

__all__ = [
    "DECRYPT_CHOICES",
    "DNS_BLOCK_CHOICES",
    "IDENTITY_CHOICES",
    "catalogue_paths",
    "checkpoint_interval",
    "choice",
    "client_identity",
    "COUNT_OPTIONS",
    "declare",
    "instance_name",
    "metrics_endpoint",
    "pac_file",
    "parse_listen",
    "store_url",
    "validate_counts",
]

IDENTITY_CHOICES = ("address", "hash", "none")
STORE_SCHEMES = ("sqlite", "postgresql", "postgres", "memory")

#: Integer options: (name, the least value allowed, default, help).
_COUNTS: tuple[tuple[str, int, int, str], ...] = (
    ("egresswatch_heartbeat", 1, 60, "Seconds between heartbeat events."),
    ("egresswatch_flush_ms", 1, 1000, "Milliseconds between event-store flushes."),
    ("egresswatch_queue_size", 1, 10000, "Events queued for the store before dropping."),
    (
        "egresswatch_retention_days",
        0,
        90,
        "Days of raw events kept in the store (daily rollups stay); 0 keeps everything.",
    ),
    (
        "egresswatch_reload_interval",
        0,
        2,
        "0: reload on command only; otherwise catalogue/policy files are watched (file "
        "notifications) and, where notifications are unavailable, polled every this many seconds.",
    ),
    (
        "egresswatch_dns_resolutions",
        1,
        100_000,
        "Addresses of designated names remembered from DNS answers, to attribute connections "
        "that carry no name (least recently used out first).",
    ),
)


#: The integer options' names.
COUNT_OPTIONS = frozenset(name for name, _least, _default, _help in _COUNTS)


def declare(loader: Any) -> None:
    """Register every ``egresswatch_*`` option with mitmproxy's loader (in ``load``)."""
    add = loader.add_option
    add(
        "egresswatch_lists",
        Sequence[str],
        [],
        "Extra catalogue directories, merged after the bundled one (repeatable).",
    )
    add("egresswatch_bundled", bool, True, "Load the catalogue shipped with egresswatch.")
    add(
        "egresswatch_policy",
        str,
        "",
        "Policy YAML file (actions per regime and app, exceptions, departments). "
        "Empty: built-in policy that monitors every app.",
    )
    add(
        "egresswatch_data_dir",
        str,
        "",
        "Directory for the default SQLite event store. Empty: the platform default.",
    )
    add(
        "egresswatch_store",
        str,
        "",
        "Event store URL: sqlite:///path/events.db, postgresql://... or memory://. "
        "Empty: sqlite:///<data dir>/events.db.",
    )
    add(
        "egresswatch_metrics_listen",
        str,
        "127.0.0.1:9464",
        "host:port (or [v6]:port) for the Prometheus /metrics endpoint; empty or off disables.",
    )
    add("egresswatch_metrics_certfile", str, "", "TLS certificate for the metrics endpoint.")
    add("egresswatch_metrics_keyfile", str, "", "TLS key for the metrics endpoint.")
    add(
        "egresswatch_decrypt",
        str,
        "off",
        "off: pass every TLS connection through untouched (no CA needed); blocked: intercept "
        "only connections to blocked apps, to show a block page; all: intercept everything "
        "mitmproxy can verify.",
        choices=DECRYPT_CHOICES,
    )
    add(
        "egresswatch_dns_block",
        str,
        "nxdomain",
        "Answer to a blocked DNS query in dns mode.",
        choices=DNS_BLOCK_CHOICES,
    )
    add(
        "egresswatch_client_identity",
        str,
        "address",
        "How clients are recorded in the event store: address, hash (keyed HMAC) or none.",
        choices=IDENTITY_CHOICES,
    )
    add(
        "egresswatch_client_key_file",
        str,
        "",
        "Secret key file for egresswatch_client_identity=hash.",
    )
    add(
        "egresswatch_department_label",
        bool,
        False,
        "Add the policy's department as a label on the hit counter.",
    )
    add("egresswatch_instance", str, "", "Instance name in events. Empty: the host name.")
    for name, _least, default, help_ in _COUNTS:
        add(name, int, default, help_)
    add(
        "egresswatch_signing_key",
        str,
        "",
        "Ed25519 key file that signs the event-store checkpoints (created mode 0600 on first "
        "start, its public half beside it as .pub). Empty: <data dir>/signing.key.",
    )
    add(
        "egresswatch_checkpoint_interval",
        float,
        60.0,
        "Seconds between signed checkpoints (only when the chain moved; one more at stop). "
        "0: do not sign.",
    )
    add(
        "egresswatch_reload_polling",
        bool,
        False,
        "Poll the catalogue/policy files every egresswatch_reload_interval seconds instead of "
        "using file notifications (for network filesystems, whose changes inotify does not see).",
    )
    add(
        "egresswatch_pac_proxies",
        Sequence[str],
        [],
        "HOST:PORT of each proxy of the fleet (repeatable): serve a PAC file listing them at "
        "/proxy.pac beside the metrics. Empty: no PAC file.",
    )


def pac_file(proxies: Sequence[str]) -> str | None:
    """The PAC file for ``egresswatch_pac_proxies`` (None when empty).

    >>> pac_file([]) is None
    True
    >>> pac_file(["p1:80", "p1:80"])
    Traceback (most recent call last):
    ...
    ValueError: egresswatch_pac_proxies: a proxy is listed twice
    """
    if not proxies:
        return None
    try:
        return build_pac(list(proxies))
    except ValueError as e:
        raise ValueError(f"egresswatch_pac_proxies: {e}") from None


def choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``.

    >>> choice("egresswatch_decrypt", "sometimes", DECRYPT_CHOICES)
    Traceback (most recent call last):
    ...
    ValueError: egresswatch_decrypt: invalid value 'sometimes' (choose from off, blocked, all)
    """
    if value not in choices:
        raise ValueError(f"{name}: invalid value {value!r} (choose from {', '.join(choices)})")
    return value


def validate_counts(values: Mapping[str, int]) -> None:
    """Refuse negative integer options in ``values``, and zero where at least 1 is needed.

    >>> validate_counts({"egresswatch_heartbeat": 0})
    Traceback (most recent call last):
    ...
    ValueError: egresswatch_heartbeat must be at least 1 second
    """
    for name, _least, _default, _help in _COUNTS:
        if name in values and values[name] < 0:
            raise ValueError(f"{name} must not be negative, got {values[name]}")
    for name, least, _default, _help in _COUNTS:
        if name in values and values[name] < least:
            unit = " second" if name == "egresswatch_heartbeat" else ""
            raise ValueError(f"{name} must be at least {least}{unit}")


def client_identity(mode: str, key_file: str) -> ClientIdentity:
    """The client identity for ``egresswatch_client_identity`` / ``_key_file``."""
    mode = choice("egresswatch_client_identity", mode, IDENTITY_CHOICES)
    if mode == "hash" and not key_file:
        raise ValueError("egresswatch_client_identity=hash needs egresswatch_client_key_file")
    try:
        return identity_from_options(mode, key_file or None)
    except ValueError as e:
        raise ValueError(f"egresswatch_client_key_file: {e}") from e


def parse_listen(spec: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9464"`` / ``"[::1]:9464"`` -> (host, port); ``""``/``"off"`` -> None.

    >>> parse_listen("[::1]:9464"), parse_listen("off")
    (('::1', 9464), None)
    """
    spec = spec.strip()
    if spec in ("", "off"):
        return None
    if spec.startswith("["):
        host, sep, port = spec[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid listen address {spec!r} (use [v6addr]:port)")
    else:
        host, sep, port = spec.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"invalid listen address {spec!r} (use host:port)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid port in listen address {spec!r}")
    if not host:
        raise ValueError(f"missing host in listen address {spec!r}")
    return host, int(port)


def metrics_endpoint(
    listen: str, certfile: str, keyfile: str
) -> tuple[tuple[str, int] | None, tuple[str, str]]:
    """(address or None, (certfile, keyfile)) of the metrics endpoint."""
    try:
        address = parse_listen(listen)
    except ValueError as e:
        raise ValueError(f"egresswatch_metrics_listen: {e}") from e
    if bool(certfile) != bool(keyfile):
        raise ValueError("egresswatch_metrics_certfile and egresswatch_metrics_keyfile go together")
    return address, (certfile, keyfile)


def store_url(store: str, data_dir: str) -> str:
    """The event store URL: ``store``, else SQLite in ``data_dir`` (or the platform default)."""
    url = store or default_store_url(data_dir or None)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in STORE_SCHEMES:
        raise ValueError(
            f"egresswatch_store {url!r}: unknown scheme (use sqlite://, postgresql:// or memory://)"
        )
    return url


def checkpoint_interval(value: float) -> float:
    """``egresswatch_checkpoint_interval``: seconds (0: no signing).

    >>> checkpoint_interval(-1)
    Traceback (most recent call last):
    ...
    ValueError: egresswatch_checkpoint_interval must not be negative, got -1
    """
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"egresswatch_checkpoint_interval must not be negative, got {value}")
    return float(value)


def instance_name(value: str) -> str:
    """``egresswatch_instance``: printable, no spaces (it names the checkpoints' origin).

    >>> instance_name("edge a")
    Traceback (most recent call last):
    ...
    ValueError: egresswatch_instance 'edge a': use printable characters without spaces
    """
    if value and (not value.isprintable() or any(c.isspace() for c in value)):
        raise ValueError(f"egresswatch_instance {value!r}: use printable characters without spaces")
    return value


def catalogue_paths(
    bundled: bool, lists: Sequence[str], policy: str
) -> tuple[tuple[Path, ...], Path | None]:
    """The catalogue directories (the bundled one first) and the policy file."""
    dirs: list[Path] = [bundled_dir()] if bundled else []
    dirs += [Path(d) for d in lists]
    if not dirs:
        raise ValueError(
            "egresswatch: no catalogue (egresswatch_bundled is false and egresswatch_lists "
            "is empty)"
        )
    return tuple(dirs), Path(policy) if policy else None
