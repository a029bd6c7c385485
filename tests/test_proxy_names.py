"""``egresswatch.proxy.names``: destination names refused before a connect or never intercepted."""

from __future__ import annotations

import pytest
from egresswatch.proxy import names
from egresswatch.proxy.names import refusal_reason
from egresswatch.proxy.names import verifiable_sni
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("example.com", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("bücher.example", False),
        ("a\x00b.test", True),
        ("x" * 300, True),
        ("a." * 200 + "test", True),
        ("a" * 64 + ".test", True),  # label too long: the idna codec raises
        ("a..b.test", True),
        ("\udcff.test", True),
    ],
)
def test_refusal_reason(name: str, refused: bool) -> None:
    assert (refusal_reason(name) is not None) == refused


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, False),  # 253 bytes
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ".", False),  # + dot
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62, True),  # 254 bytes
        ("a." * 127, False),
        ("a.test..", True),
        (".a.test", True),
        ("a" * 63 + ".test.", False),
    ],
)
def test_refusal_reason_at_the_limits(name: str, refused: bool) -> None:
    assert (refusal_reason(name) is not None) == refused


def test_refusal_reason_plain_names_skip_codec_and_ip_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def careful(name: str) -> str | None:
        raise AssertionError(f"careful path taken for {name!r}")

    monkeypatch.setattr(names, "codec_refusal_reason", careful)
    for name in ("www.Example.COM", "192.0.2.1", "a_b-c.test.", "x" * 63):
        assert refusal_reason(name) is None


_NAME_CHARS = st.sampled_from(list("aZ09-_.") + ["\x00", "ü", "\udcff", ":", " ", "\u200d"])


@given(st.lists(_NAME_CHARS, max_size=80).map("".join) | st.text(max_size=40))
def test_refusal_reason_fast_path_agrees_with_the_codec(name: str) -> None:
    assert refusal_reason(name) == names.codec_refusal_reason(name)


@given(
    st.lists(
        st.sampled_from(["a", "b-c", "-", "x-", "9", "A" * 63, "b" * 64, "", "ü", "_", "a.b"]),
        max_size=6,
    ).map(".".join)
)
def test_refusal_reason_fast_path_on_label_mixes(name: str) -> None:
    assert refusal_reason(name) == names.codec_refusal_reason(name)


@pytest.mark.parametrize(
    ("sni", "ok"),
    [
        (None, True),
        ("blocked.test", True),
        ("blocked.test.", False),
        ("cdn-.x", False),
        ("a_b.test", False),
        ("xn--bcher-kva.test", True),
    ],
)
def test_verifiable_sni(sni: str | None, ok: bool) -> None:
    assert verifiable_sni(sni) is ok


def _verifiable_reference(sni: str) -> bool:
    """The rule spelled out label by label (what the compiled pattern must agree with)."""
    if sni.endswith(".") or not sni.isascii():
        return False
    for label in sni.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c.isalnum() or c == "-" for c in label):
            return False
    return True


@given(
    st.lists(
        st.sampled_from(
            ["a", "Z9", "b-c", "-", "x-", "-y", "a" * 63, "b" * 64, "", "ü", "_", "\n"]
        ),
        max_size=6,
    ).map(".".join)
    | st.text(max_size=30)
)
def test_verifiable_sni_agrees_with_the_label_rule(sni: str) -> None:
    assert verifiable_sni(sni) is _verifiable_reference(sni)
