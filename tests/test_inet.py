"""twamp.inet: the one DSCP/TOS conversion and the one address normaliser."""

from __future__ import annotations

import importlib.metadata

import pytest

import twamp
from twamp.inet import check_dscp, dscp_to_tos, normalize_ip, tos_to_dscp


@pytest.mark.parametrize(
    ("dscp", "ecn", "tos"),
    [(0, 0, 0x00), (46, 0, 0xB8), (46, 1, 0xB9), (63, 3, 0xFF), (10, 2, 0x2A)],
)
def test_dscp_tos_round_trip(dscp: int, ecn: int, tos: int) -> None:
    assert dscp_to_tos(dscp, ecn) == tos
    assert tos_to_dscp(tos) == dscp


@pytest.mark.parametrize("bad", [-1, 64, 255])
def test_dscp_out_of_range_is_named(bad: int) -> None:
    with pytest.raises(ValueError, match=f"DSCP {bad} is outside 0-63"):
        check_dscp(bad)
    with pytest.raises(ValueError, match="DSCP"):
        dscp_to_tos(bad)


def test_ecn_and_tos_ranges() -> None:
    with pytest.raises(ValueError, match="ECN"):
        dscp_to_tos(0, 4)
    with pytest.raises(ValueError, match="TOS octet 256"):
        tos_to_dscp(256)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:c000:0201", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("2001:DB8:0::01", "2001:db8::1"),
        ("::1", "::1"),
    ],
)
def test_normalize_ip(text: str, canonical: str) -> None:
    assert normalize_ip(text) == canonical


def test_normalize_ip_rejects_names() -> None:
    with pytest.raises(ValueError):
        normalize_ip("localhost")


def test_version_is_written_once() -> None:
    # pyproject.toml reads twamp.__version__ (dynamic), so the installed metadata agrees.
    assert importlib.metadata.version("twamp") == twamp.__version__
