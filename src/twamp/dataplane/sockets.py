"""UDP sockets for TWAMP-Test: options, ancillary data in and out (Linux).

A reflector needs, per datagram, the kernel's receive timestamp and the IP TTL and TOS octet it
arrived with (RFC 5357 §4.2.1: Sender TTL; RFC 7750: S-DSCP-ECN), and it must send with TTL 255
and a chosen TOS. All of that is socket options and control messages; CPython's `socket` module
lacks several of the constants, so they are defined here (values from the Linux uapi headers).

Dual-stack sockets: an IPv6 socket bound to `::` also serves IPv4 peers as v4-mapped addresses.
For those the kernel applies and reports the *IPv4* options, so such a socket gets both sets, and
a per-packet TOS towards a v4-mapped peer must be an `IP_TOS` control message (`IPV6_TCLASS` is
silently ignored there).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

__all__ = [
    "ANCBUF_SIZE",
    "DEFAULT_BUFFER",
    "IPV6_HOPLIMIT",
    "IPV6_RECVHOPLIMIT",
    "IPV6_RECVTCLASS",
    "IPV6_TCLASS",
    "IP_RECVTOS",
    "IP_RECVTTL",
    "SEND_TTL",
    "SO_BUSY_POLL",
    "SO_RCVBUFFORCE",
    "SO_SNDBUFFORCE",
    "SO_TIMESTAMPNS",
    "TS_SLOT_HARDWARE",
    "TS_SLOT_SOFTWARE",
    "buffer_sizes",
    "enable_receive_options",
    "enable_tx_timestamps",
    "is_v4_peer",
    "open_test_socket",
    "parse_ancillary",
    "parse_tx_timestamp",
    "read_tx_timestamps",
    "set_send_ttl",
    "tos_ancillary",
]

# Linux values (<asm-generic/socket.h>, <linux/in.h>, <linux/in6.h>) CPython may not define.
SO_TIMESTAMPNS = 35  # the control message type is the same number (SCM_TIMESTAMPNS)
SO_BUSY_POLL = 46
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
IP_RECVTTL = 12
IP_RECVTOS = 13
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_RECVTCLASS = 66
IPV6_TCLASS = 67
SO_TIMESTAMPING = 37  # the control message type is the same number (SCM_TIMESTAMPING)
IP_RECVERR = 11  # the error-queue control message of IPv4 (struct sock_extended_err)
IPV6_RECVERR = 25
SO_EE_ORIGIN_TIMESTAMPING = 4
# <linux/net_tstamp.h>: software transmit stamps, reported, each with the datagram's number
# (OPT_ID) and without a copy of the datagram (OPT_TSONLY); OPT_RX_FILTER keeps received
# datagrams free of an SCM_TIMESTAMPING message (SO_TIMESTAMPNS already stamps them).
SOF_TIMESTAMPING_TX_HARDWARE = 1 << 0
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_RX_HARDWARE = 1 << 2
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_RAW_HARDWARE = 1 << 6
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SOF_TIMESTAMPING_OPT_RX_FILTER = 1 << 17
_IP_TTL = 2  # the cmsg type IP_RECVTTL delivers
_IP_TOS = 1  # the cmsg type IP_RECVTOS delivers (one octet)

DEFAULT_BUFFER = 4 << 20  # a bigger socket buffer is the main lever against loss (measured)
SEND_TTL = 255  # RFC 5357 §4.2.1: the reflector SHOULD send with TTL 255

_TIMESPEC = struct.Struct("@ll")
_INT = struct.Struct("@i")
# Room for a timespec, a TTL and a TOS control message, with slack for the other family's pair.
ANCBUF_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + 4 * socket.CMSG_SPACE(_INT.size)

_SOL_IP = socket.IPPROTO_IP
_SOL_IPV6 = socket.IPPROTO_IPV6


def _try_setsockopt(sock: socket.socket, level: int, option: int, value: int) -> bool:
    try:
        sock.setsockopt(level, option, value)
    except OSError:
        return False
    return True


def open_test_socket(
    host: str,
    port: int,
    *,
    rcvbuf: int = DEFAULT_BUFFER,
    sndbuf: int = DEFAULT_BUFFER,
    reuse_port: bool = False,
    peer: tuple[str, int] | None = None,
) -> socket.socket:
    """A bound UDP socket ready for TWAMP-Test, IPv4 or IPv6 according to `host` (a literal).

    Enables kernel receive timestamps and TTL/TOS (hop limit/traffic class) reception, sends with
    TTL 255, and asks for `rcvbuf`/`sndbuf` octets of buffer (`SO_*BUFFORCE` as root, which may
    exceed `net.core.rmem_max`); `buffer_sizes()` tells what the kernel granted. An IPv6 wildcard
    socket is dual-stack. Port 0 picks a free port (see `getsockname()`).

    `peer` (address literal, port): the one Session-Sender this socket serves. The socket is
    `connect()`ed to it, so the kernel itself drops datagrams from anyone else before they reach
    the session's receive queue (a stranger cannot fill it); replies still name their peer. On
    a dual-stack socket an IPv4 peer is connected as its v4-mapped address.
    """
    flags = socket.AI_NUMERICHOST | socket.AI_PASSIVE
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, flags
    )[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and ipaddress.ip_address(sockaddr[0]).is_unspecified:
            sock.setsockopt(_SOL_IPV6, socket.IPV6_V6ONLY, 0)
        _set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, rcvbuf)
        _set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, sndbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        enable_receive_options(sock)
        set_send_ttl(sock)
        sock.bind(sockaddr)
        if peer is not None:
            sock.connect(_peer_sockaddr(family, peer))
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_sockaddr(family: int, peer: tuple[str, int]) -> tuple[str, int]:
    ip, port = peer
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if family == socket.AF_INET6 and addr.version == 4:
        return (f"::ffff:{addr}", port)
    if family == socket.AF_INET and addr.version == 6:
        if addr.ipv4_mapped is None:
            raise ValueError(f"an IPv4 socket cannot serve the IPv6 peer {ip}")
        return (str(addr.ipv4_mapped), port)
    return (ip, port)


def enable_receive_options(sock: socket.socket) -> None:
    """Ask for the TTL and TOS of every received datagram as control messages."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(_SOL_IPV6, IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(_SOL_IPV6, IPV6_RECVTCLASS, 1)
        # v4-mapped peers are reported through the IPv4 options; a v6-only socket refuses them.
        _try_setsockopt(sock, _SOL_IP, IP_RECVTTL, 1)
        _try_setsockopt(sock, _SOL_IP, IP_RECVTOS, 1)
    else:
        sock.setsockopt(_SOL_IP, IP_RECVTTL, 1)
        sock.setsockopt(_SOL_IP, IP_RECVTOS, 1)


def enable_tx_timestamps(sock: socket.socket, *, hardware: bool = False) -> None:
    """Have the kernel report the software transmit time of every datagram `sock` sends.

    The reports arrive on the socket's error queue (`read_tx_timestamps`), numbered from 0 in
    send order from now on (`SO_TIMESTAMPING` with OPT_ID). OSError if the kernel refuses.
    `hardware` also asks for the NIC's raw transmit stamp (TX_HARDWARE, RAW_HARDWARE; the
    device must have it switched on, `dataplane.hwstamp`); it lands in the report's
    `TS_SLOT_HARDWARE` slot, and a packet the NIC did not stamp gets a software-only report.
    """
    flags = (
        SOF_TIMESTAMPING_TX_SOFTWARE
        | SOF_TIMESTAMPING_SOFTWARE
        | SOF_TIMESTAMPING_OPT_ID
        | SOF_TIMESTAMPING_OPT_TSONLY
    )
    if hardware:
        flags |= SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE
    # OPT_RX_FILTER (Linux 6.2) keeps received datagrams' control messages as they were.
    if not _try_setsockopt(
        sock, socket.SOL_SOCKET, SO_TIMESTAMPING, flags | SOF_TIMESTAMPING_OPT_RX_FILTER
    ):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)


TS_SLOT_SOFTWARE = 0  # struct scm_timestamping: ts[0] software, ts[1] unused, ts[2] raw hardware
TS_SLOT_HARDWARE = 2
_SCM_TIMESTAMPING = struct.Struct("@llllll")  # struct scm_timestamping: three timespecs
_EXTENDED_ERR = struct.Struct("@IBBBBII")  # struct sock_extended_err
_RECVERR = ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR))


def parse_tx_timestamp(
    ancdata: list[tuple[int, int, bytes]], slot: int = TS_SLOT_SOFTWARE
) -> tuple[int, int] | None:
    """An error-queue message -> (datagram number, transmit time in ns), or None.

    `slot` picks the stamp of struct scm_timestamping: `TS_SLOT_SOFTWARE` (the kernel's, Unix
    ns) or `TS_SLOT_HARDWARE` (the NIC's raw one, on its clock). A zero stamp in that slot is
    the kernel saying "none of this kind": None, never a time (as `wire.pxd`'s
    parse_tx_report in the compiled twins).
    """
    stamp: int | None = None
    key: int | None = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
            if len(data) >= _SCM_TIMESTAMPING.size:
                sec, nsec = _SCM_TIMESTAMPING.unpack_from(data)[2 * slot : 2 * slot + 2]
                stamp = sec * 1_000_000_000 + nsec
        elif (level, kind) in _RECVERR and len(data) >= _EXTENDED_ERR.size:
            _, origin, _, _, _, _, data_field = _EXTENDED_ERR.unpack_from(data)
            if origin == SO_EE_ORIGIN_TIMESTAMPING:
                key = data_field
    if stamp is None or key is None or stamp == 0:
        return None
    return key, stamp


def read_tx_timestamps(
    sock: socket.socket, limit: int = 1 << 16, slot: int = TS_SLOT_SOFTWARE
) -> list[tuple[int, int]]:
    """Take up to `limit` transmit reports off `sock`'s error queue, without blocking."""
    out: list[tuple[int, int]] = []
    for _ in range(limit):
        try:
            _, anc, _, _ = sock.recvmsg(1, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        report = parse_tx_timestamp(anc, slot)
        if report is not None:
            out.append(report)
    return out


def set_send_ttl(sock: socket.socket, ttl: int = SEND_TTL) -> None:
    """Unicast TTL / hop limit for everything `sock` sends (both families on a v6 socket)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(_SOL_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        _try_setsockopt(sock, _SOL_IP, socket.IP_TTL, ttl)
    else:
        sock.setsockopt(_SOL_IP, socket.IP_TTL, ttl)


def _set_buffer(sock: socket.socket, plain: int, force: int, size: int) -> None:
    # The FORCE variants ignore net.core.[rw]mem_max but need CAP_NET_ADMIN.
    if os.geteuid() == 0 and _try_setsockopt(sock, socket.SOL_SOCKET, force, size):
        return
    sock.setsockopt(socket.SOL_SOCKET, plain, size)


def buffer_sizes(sock: socket.socket) -> tuple[int, int]:
    """(receive, send) buffer sizes as the kernel reports them (Linux doubles the request)."""
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
    )


def parse_ancillary(
    ancdata: list[tuple[int, int, bytes]],
) -> tuple[int | None, int | None, int | None]:
    """`recvmsg` ancillary data -> (receive time in Unix ns, TTL/hop limit, TOS/traffic class).

    Each is None when its control message is absent (or truncated).
    """
    rx_ns: int | None = None
    ttl: int | None = None
    tos: int | None = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET:
            if kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(data)
                rx_ns = sec * 1_000_000_000 + nsec
        elif level == _SOL_IP:
            if kind == _IP_TTL and len(data) >= _INT.size:
                ttl = _INT.unpack_from(data)[0]
            elif kind == _IP_TOS and data:
                tos = data[0]
        elif level == _SOL_IPV6:
            if kind == IPV6_HOPLIMIT and len(data) >= _INT.size:
                ttl = _INT.unpack_from(data)[0]
            elif kind == IPV6_TCLASS and len(data) >= _INT.size:
                tos = _INT.unpack_from(data)[0] & 0xFF
    return rx_ns, ttl, tos


def is_v4_peer(peer_ip: str) -> bool:
    """True for a dotted IPv4 address or an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`)."""
    if ":" not in peer_ip:
        return True
    return peer_ip[:7].lower() == "::ffff:" and "." in peer_ip


def tos_ancillary(
    sock_family: int, peer_addr: str | tuple[object, ...], tos: int
) -> list[tuple[int, int, bytes]]:
    """The `sendmsg` control message that sets the TOS / traffic class octet of one datagram.

    `peer_addr` is the peer's address string or socket address tuple; towards an IPv4 or
    v4-mapped peer the IPv4 option is used even on an IPv6 socket.
    """
    ip = peer_addr if isinstance(peer_addr, str) else str(peer_addr[0])
    value = _INT.pack(tos & 0xFF)
    if sock_family == socket.AF_INET or is_v4_peer(ip):
        return [(_SOL_IP, socket.IP_TOS, value)]
    return [(_SOL_IPV6, IPV6_TCLASS, value)]
