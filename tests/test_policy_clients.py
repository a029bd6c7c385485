"""``egresswatch.policy_clients`` as the policy uses it: departments by client network (the
longest prefix wins), and the exceptions register's own checks."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from typing import Any

import pytest
from egresswatch.catalogue import Catalogue
from egresswatch.matcher import Match
from egresswatch.policy import MAX_DEPARTMENTS
from egresswatch.policy import Department
from egresswatch.policy import ExceptionRule
from egresswatch.policy import Policy
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tests.plugins.policy import DEPARTMENTS
from tests.plugins.policy import NOW

# --- departments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "department"),
    [
        ("10.1.2.3", "engineering"),
        ("10.1.200.9", "lab"),  # the most specific network wins
        ("10.2.0.1", "finance"),
        ("192.0.2.7", "finance"),  # a bare address is a /32
        ("192.0.2.8", "other"),
        ("10.77.0.1", "corp"),
        ("11.0.0.1", "other"),
        ("::ffff:10.2.0.1", "finance"),  # IPv4-mapped IPv6 (dual-stack listeners)
        ("fd00:1::1", "engineering"),
        ("fd00:1:0:ffff::1", "engineering"),
        ("fd00:1:1::1", "other"),
        ("fd00:1:0:42::1", "lab"),
        ("[fd00:1::1]", "engineering"),
        ("fd00:1::1%eth0", "engineering"),
        ("fd00:2::1", "other"),
        ("::1", "other"),
        (None, "unknown"),
        ("", "unknown"),
        ("not-an-address", "unknown"),
    ],
)
def test_departments(
    policy_from: Callable[[str], Policy],
    hit: Callable[[str], Match],
    client: str | None,
    department: str,
) -> None:
    policy = policy_from(DEPARTMENTS)
    assert policy.department(client) == department
    decision = policy.decide(hit("a1.test"), client, None, NOW)
    assert decision is not None and decision.department == department


def test_department_names(
    policy_from: Callable[[str], Policy], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="egresswatch.policy"):
        policy = policy_from(DEPARTMENTS)
    assert policy.departments == ("corp", "engineering", "finance", "lab", "other", "unknown")
    assert "departments" not in caplog.text


def test_many_departments_warn(
    policy_from: Callable[[str], Policy], caplog: pytest.LogCaptureFixture
) -> None:
    n = MAX_DEPARTMENTS + 1
    text = "departments:\n" + "".join(
        f"  - {{name: d{i}, cidrs: [10.{i}.0.0/16]}}\n" for i in range(n)
    )
    with caplog.at_level(logging.WARNING, logger="egresswatch.policy"):
        policy = policy_from(text)
    assert f"{n} departments" in caplog.text
    assert len(policy.departments) == n + 2
    assert policy.department("10.50.1.1") == "d50"


# --- the prefix-bucketed lookup agrees with a plain longest-prefix scan -------------------------

_NETS = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: ipaddress.ip_network((t[0], t[1]), strict=False)
    ),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
        lambda t: ipaddress.ip_network((t[0], t[1]), strict=False)
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    nets=st.lists(_NETS, min_size=1, max_size=12, unique=True),
    probes=st.lists(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1)), max_size=8),
)
def test_department_lookup_is_longest_prefix_match(
    cat: Catalogue, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], probes: list[int]
) -> None:
    departments = [Department(f"d{i}", (str(n),)) for i, n in enumerate(nets)]
    policy = Policy(cat, departments=departments)
    # probe each network's first and last address too, and random ones of both families
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for n in nets:
        addresses += [n.network_address, n.broadcast_address]
    for p in probes:
        addresses.append(ipaddress.ip_address(p) if p < 2**32 else ipaddress.IPv6Address(p))
    for addr in addresses:
        # documented: IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are looked up as IPv4
        mapped = getattr(addr, "ipv4_mapped", None)
        seen_as = mapped if mapped is not None else addr
        containing = [(n.prefixlen, f"d{i}") for i, n in enumerate(nets) if seen_as in n]
        expected = max(containing)[1] if containing else "other"
        assert policy.department(str(addr)) == expected, (addr, nets)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"apps": ("a1",)}, "blanket exception"),
        ({"clients": ("10.0.0.0/8",)}, "neither apps nor regimes"),
        ({"apps": ("a1",), "clients": ("10.0.0.300/32",)}, "does not appear to be"),
    ],
)
def test_exception_rule_checks_itself(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ExceptionRule(id="X", reason="r", approver="a", expires=NOW, **kwargs)


def test_exception_rule_naive_expiry_is_utc() -> None:
    rule = ExceptionRule(
        id="X", reason="r", approver="a", expires=datetime(2026, 7, 1), users=("u",), apps=("a1",)
    )
    assert rule.expires == datetime(2026, 7, 1, tzinfo=UTC)
    assert rule.in_force(datetime(2026, 6, 30, 23, 59)) and not rule.in_force(rule.expires)
    assert rule.covers(None, "u") and not rule.covers(None, None)
