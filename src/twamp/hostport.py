"""One parser for every `HOST[:PORT]` a user types (targets, --listen, --control, --target)."""

from __future__ import annotations

import ipaddress


def parse_hostport(text: str, default_port: int, *, listen: bool = False) -> tuple[str, int]:
    """'HOST', 'HOST:PORT', '[V6]', '[V6]:PORT' or a bare IPv6 literal -> (host, port).

    A target's host may be a name and its port is 1-65535. A listening address (`listen=True`)
    must be an IP address, or empty as in ':PORT' (every address), and port 0 asks the kernel to
    choose. Errors are a `ValueError` whose text names what was typed.
    """
    value = text.strip()
    if not value:
        raise ValueError("the address is empty")
    port_text: str | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDR]:PORT")
        if rest:
            port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host = value  # a name, an IPv4 address or a bare IPv6 literal
    if not host and not listen:
        raise ValueError(f"{text!r}: the host is missing")
    if listen and host:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if port_text is None:
        return host, default_port
    lowest = 0 if listen else 1
    if not port_text.isdigit() or not lowest <= int(port_text) <= 0xFFFF:
        raise ValueError(f"{text!r}: the port must be a number from {lowest} to 65535")
    return host, int(port_text)
