"""IP-layer values every layer shares: DSCP and the TOS octet, and the text of an address.

**One unit per API.** Public interfaces of `twamp` take and report a *DSCP* (0-63, the code
point of RFC 2474 §3), never a TOS octet: it is what an operator types, what Type-P carries
(RFC 4656 §3.5: octet 84 is the DSCP itself) and what a report shows. The TOS octet (IPv4) or
Traffic Class octet (IPv6) is the DSCP shifted left by two with the ECN field (RFC 3168 §5) in
the low two bits; it exists only at the socket (`IP_TOS` / `IPV6_TCLASS`) and in the raw
per-packet records, which keep what the kernel delivered. Convert with `dscp_to_tos` and
`tos_to_dscp` at that edge and nowhere else.

**One address normaliser.** A dual-stack socket reports an IPv4 peer as ``::ffff:a.b.c.d`` and a
link-local IPv6 peer with its scope (``fe80::1%eth0``); sessions, allow-lists and logs compare
addresses as text, so every such text goes through `normalize_ip` first.
"""

from __future__ import annotations

import ipaddress

__all__ = ["DSCP_MAX", "check_dscp", "dscp_to_tos", "normalize_ip", "tos_to_dscp"]

DSCP_MAX = 0x3F  # six bits (RFC 2474 §3)
_ECN_MASK = 0x03  # the two low bits of the TOS octet (RFC 3168 §5)


def check_dscp(dscp: int) -> int:
    """`dscp` if it is a DSCP (0-63); `ValueError` naming the value otherwise."""
    if not 0 <= dscp <= DSCP_MAX:
        raise ValueError(f"DSCP {dscp} is outside 0-63")
    return dscp


def dscp_to_tos(dscp: int, ecn: int = 0) -> int:
    """The TOS / Traffic Class octet of a DSCP and an ECN codepoint (default Not-ECT)."""
    if not 0 <= ecn <= _ECN_MASK:
        raise ValueError(f"ECN codepoint {ecn} is outside 0-3")
    return check_dscp(dscp) << 2 | ecn


def tos_to_dscp(tos: int) -> int:
    """The DSCP of a TOS / Traffic Class octet (its top six bits; the ECN bits dropped)."""
    if not 0 <= tos <= 0xFF:
        raise ValueError(f"TOS octet {tos} is outside 0-255")
    return tos >> 2


def normalize_ip(ip: str) -> str:
    """Canonical text of an IP address: scope dropped, IPv4-mapped IPv6 written as IPv4.

    ``"::FFFF:192.0.2.1"`` -> ``"192.0.2.1"``, ``"fe80::1%eth0"`` -> ``"fe80::1"``,
    ``"2001:DB8::01"`` -> ``"2001:db8::1"``. `ValueError` if `ip` is not an address (a name must
    be resolved first).
    """
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)
