"""OSPFv2 packets and LSAs (RFC 2328 Appendix A), with the packet and LSA checksums.

One declaration per message, as in `twamp.wire`: a frozen slotted dataclass, one module-level
`struct.Struct` and the RFC diagram in the docstring; `encode_<x>(msg) -> bytes` and
`decode_<x>(data) -> X`. A whole packet is `encode_packet(router_id, area_id, body)` (computes
the length and the Internet checksum) and `decode_packet(data) -> Packet`.

* Addresses and IDs (Router ID, Area ID, Link State ID, masks, DR/BDR) are `IPv4Address`.
* LS sequence numbers are **signed** 32-bit integers (RFC 2328 §12.1.6): InitialSequenceNumber
  0x80000001 is -0x7FFFFFFF, MaxSequenceNumber 0x7FFFFFFF. Packing them unsigned is the classic
  crash of a first run.
* Decoders raise only `OspfDecodeError` (a `twamp.errors.DecodeError`), naming the message and
  the field, for any input they cannot read; they never raise anything else (fuzz-tested).
* Unknown LSA types (opaque 9-11, anything else) decode to `OpaqueLsaBody` with the body kept
  as bytes, so a speaker can acknowledge, store and flood them unchanged (RFC 2328 §13 does not
  require understanding an LSA to flood it).
* `encode_lsa` writes the header as stored. `make_lsa` is how an LSA is originated: it computes
  the length and the Fletcher checksum (RFC 2328 §12.1.7). LS age is outside the checksum, so
  the flooding code may rewrite octets 0-1 of encoded bytes (`with_age`) without recomputing it.
* MBZ octets are written as zero and ignored on receipt; unknown option and flag bits are kept
  (IntFlag), because they are covered by the LSA checksum and must survive re-encoding.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address
from itertools import accumulate
from typing import Final, NamedTuple, TypeVar

from ..errors import DecodeError

__all__ = [
    "ALL_D_ROUTERS",
    "ALL_SPF_ROUTERS",
    "CHECK_AGE",
    "HEADER_SIZE",
    "INITIAL_SEQUENCE_NUMBER",
    "IP_HEADER_SIZE",
    "LSA_HEADER_SIZE",
    "LS_INFINITY",
    "LS_REFRESH_TIME",
    "MAX_AGE",
    "MAX_AGE_DIFF",
    "MAX_SEQUENCE_NUMBER",
    "MIN_LS_ARRIVAL",
    "MIN_LS_INTERVAL",
    "OSPF_PROTOCOL",
    "AsExternalLsaBody",
    "AuType",
    "Body",
    "Buffer",
    "DatabaseDescription",
    "DbdFlags",
    "Hello",
    "LinkStateAck",
    "LinkStateRequest",
    "LinkStateUpdate",
    "LinkType",
    "Lsa",
    "LsaBody",
    "LsaHeader",
    "LsaKey",
    "LsaType",
    "NetworkLsaBody",
    "OpaqueLsaBody",
    "Options",
    "OspfDecodeError",
    "OspfHeader",
    "Packet",
    "PacketType",
    "RouterLink",
    "RouterLsaBody",
    "RouterLsaFlags",
    "SummaryLsaBody",
    "compare_lsa",
    "dbd_capacity",
    "decode_database_description",
    "decode_hello",
    "decode_link_state_ack",
    "decode_link_state_request",
    "decode_link_state_update",
    "decode_lsa",
    "decode_lsa_header",
    "decode_lsas",
    "decode_packet",
    "encode_database_description",
    "encode_hello",
    "encode_link_state_ack",
    "encode_link_state_request",
    "encode_link_state_update",
    "encode_lsa",
    "encode_lsa_header",
    "encode_lsu_payload",
    "encode_packet",
    "encode_packet_payload",
    "internet_checksum",
    "lsa_checksum",
    "lsa_checksum_ok",
    "lsr_capacity",
    "make_lsa",
    "pack_lsus",
    "packet_checksum_ok",
    "with_age",
]

Buffer = bytes | bytearray | memoryview

OSPF_PROTOCOL: Final = 89  # IP protocol number (RFC 2328 §A.1)
ALL_SPF_ROUTERS: Final = IPv4Address("224.0.0.5")  # RFC 2328 §A.1
ALL_D_ROUTERS: Final = IPv4Address("224.0.0.6")
IP_HEADER_SIZE: Final = 20  # the kernel's header, without options: what the MTU figures assume
HEADER_SIZE: Final = 24
LSA_HEADER_SIZE: Final = 20
VERSION: Final = 2

# RFC 2328 Appendix B architectural constants, seconds (ages) or plain numbers.
MAX_AGE: Final = 3600
MAX_AGE_DIFF: Final = 900
CHECK_AGE: Final = 300
LS_REFRESH_TIME: Final = 1800
MIN_LS_INTERVAL: Final = 5
MIN_LS_ARRIVAL: Final = 1
LS_INFINITY: Final = 0xFFFFFF
# RFC 2328 §12.1.6: signed, 0x80000000 (the most negative value) is reserved and never used.
INITIAL_SEQUENCE_NUMBER: Final = -0x7FFFFFFF
MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF

_HEADER = struct.Struct("!BBHIIHH8s")
_HELLO = struct.Struct("!IHBBIII")
_DBD = struct.Struct("!HBBI")
_LSR_ENTRY = struct.Struct("!III")
_LSU_COUNT = struct.Struct("!I")
_LSA_HEADER = struct.Struct("!HBBIIiHH")
_ROUTER_BODY = struct.Struct("!BxH")
_ROUTER_LINK = struct.Struct("!IIBBH")
_TOS_METRIC = struct.Struct("!BxH")  # router-LSA TOS entry
_WORD = struct.Struct("!I")
_EXTERNAL_TOS = struct.Struct("!III")  # E|TOS|metric, forwarding address, route tag
# A whole AS-external-LSA without extra TOS entries, the bulk case (RFC 4061 §5 floods of 20,000).
_EXTERNAL_LSA = struct.Struct("!HBBIIiHHIIII")
_EXTERNAL_BODY = struct.Struct("!IIII")
_AGE = struct.Struct("!H")
_ZERO: Final = IPv4Address(0)


@lru_cache(maxsize=1 << 16)
def _ip(value: int) -> IPv4Address:
    # Decoders see the same few router IDs, masks and area IDs again and again; building an
    # IPv4Address costs more than a C-level cache lookup, and shared instances make the
    # equality tests of dict lookups take the identity shortcut.
    return IPv4Address(value)


_M = TypeVar("_M")


class OspfDecodeError(DecodeError):
    """Bytes that do not form an OSPFv2 packet or LSA (the only error the decoders raise)."""


class PacketType(enum.IntEnum):
    """OSPF packet types (RFC 2328 §A.3.1)."""

    HELLO = 1
    DATABASE_DESCRIPTION = 2
    LINK_STATE_REQUEST = 3
    LINK_STATE_UPDATE = 4
    LINK_STATE_ACK = 5


class AuType(enum.IntEnum):
    """Authentication types (RFC 2328 §D.3)."""

    NULL = 0
    SIMPLE = 1
    CRYPTOGRAPHIC = 2


class LsaType(enum.IntEnum):
    """LS types this codec decodes into structured bodies (RFC 2328 §A.4.1)."""

    ROUTER = 1
    NETWORK = 2
    SUMMARY_NETWORK = 3
    SUMMARY_ASBR = 4
    AS_EXTERNAL = 5


class Options(enum.IntFlag):
    """The Options field (RFC 2328 §A.2; DN from RFC 4576, O from RFC 5250)."""

    MT = 0x01  # formerly T (TOS)
    E = 0x02
    MC = 0x04
    NP = 0x08
    EA = 0x10
    DC = 0x20
    O = 0x40  # noqa: E741 - the RFC's name
    DN = 0x80


class DbdFlags(enum.IntFlag):
    """Database Description flags (RFC 2328 §A.3.3)."""

    MS = 0x01
    M = 0x02
    I = 0x04  # noqa: E741 - the RFC's name


class RouterLsaFlags(enum.IntFlag):
    """Router-LSA flags (RFC 2328 §A.4.2)."""

    B = 0x01
    E = 0x02
    V = 0x04


class LinkType(enum.IntEnum):
    """Router-LSA link types (RFC 2328 §A.4.2)."""

    POINT_TO_POINT = 1
    TRANSIT = 2
    STUB = 3
    VIRTUAL = 4


# --------------------------------------------------------------------------------------------
# Checksums


def internet_checksum(data: Buffer) -> int:
    """RFC 1071 one's-complement sum of 16-bit words (odd length padded with a zero octet)."""
    raw = bytes(data)
    if len(raw) & 1:
        raw += b"\0"
    total: int = sum(struct.unpack(f"!{len(raw) // 2}H", raw))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _packet_checksum(packet: bytes | bytearray) -> int:
    # RFC 2328 §D.4.1: over the whole packet, checksum field taken as 0, 64-bit auth excluded
    # (equivalently: zeroed, which adds nothing to a one's-complement sum).
    return internet_checksum(bytes(packet[:12]) + b"\0\0" + bytes(packet[14:16]) + packet[24:])


def packet_checksum_ok(packet: Buffer) -> bool:
    """True if an encoded packet (length as in its header) carries a correct Internet checksum."""
    raw = bytes(packet)
    return len(raw) >= HEADER_SIZE and _packet_checksum(raw) == int.from_bytes(raw[12:14], "big")


def _fletcher(raw: bytes | bytearray) -> tuple[int, int]:
    # RFC 2328 §12.1.7 / ISO 8473 Annex C from octet 2 (LS age excluded). c1 is the sum of the
    # running sums c0, which accumulate() computes in C; no per-octet Python loop.
    body = memoryview(raw)[2:]
    return sum(body) % 255, sum(accumulate(body)) % 255


def lsa_checksum(lsa: Buffer) -> int:
    """The Fletcher checksum for an encoded LSA (its octets 16-17 are ignored)."""
    raw = bytearray(lsa)
    if len(raw) < LSA_HEADER_SIZE:
        raise ValueError(f"an LSA is at least {LSA_HEADER_SIZE} octets, got {len(raw)}")
    raw[16:18] = b"\0\0"
    return _check_octets(raw)


def _check_octets(raw: bytearray) -> int:
    # `raw` has zeros at octets 16-17. Place the two check octets so that the checksum over
    # the whole LSA is zero (RFC 905 Annex B, as RFC 2328 §12.1.7 prescribes).
    c0, c1 = _fletcher(raw)
    x = ((len(raw) - 16 - 1) * c0 - c1) % 255
    if x <= 0:
        x += 255
    y = 510 - c0 - x
    if y > 255:
        y -= 255
    return (x << 8) | y


def lsa_checksum_ok(lsa: Buffer) -> bool:
    """True if an encoded LSA verifies (RFC 2328 §13 step 1); a zero checksum never does."""
    raw = bytes(lsa)
    if len(raw) < LSA_HEADER_SIZE or raw[16:18] == b"\0\0":
        return False
    c0, c1 = _fletcher(raw)
    return c0 == 0 and c1 == 0


# --------------------------------------------------------------------------------------------
# Validation helpers


class _FieldError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _uint(field: str, value: int, bits: int) -> None:
    if not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise _FieldError(field, f"{value} does not fit in {bits} unsigned bits")


def _addr(field: str, value: object) -> IPv4Address:
    if type(value) is IPv4Address:
        return value
    if isinstance(value, (int, str, IPv4Address)):
        try:
            return IPv4Address(value)
        except ValueError as exc:
            raise _FieldError(field, str(exc)) from None
    raise TypeError(f"{field} must be an IPv4Address, not {type(value).__name__}")


_set = object.__setattr__
_new = object.__new__


def _build(cls: Callable[..., _M], message_type: str, *args: object) -> _M:
    try:
        return cls(*args)
    except ValueError as exc:
        field = exc.field if isinstance(exc, _FieldError) else None
        raise OspfDecodeError(str(exc), message_type=message_type, field=field) from None


def _short(message_type: str, field: str, need: int, got: int) -> OspfDecodeError:
    return OspfDecodeError(
        f"{need} octets needed, {got} left", message_type=message_type, field=field
    )


def _octets(data: Buffer) -> bytes:
    return data if isinstance(data, bytes) else memoryview(data).tobytes()


# --------------------------------------------------------------------------------------------
# LSA header and key


class LsaKey(NamedTuple):
    """What identifies an LSA instance's LSA (RFC 2328 §12.1): type, Link State ID, router."""

    ls_type: int
    link_state_id: IPv4Address
    advertising_router: IPv4Address

    def __str__(self) -> str:
        return f"{self.ls_type}/{self.link_state_id}/{self.advertising_router}"

    def __hash__(self) -> int:
        # IPv4Address.__hash__ is Python code (hash(hex(ip))); keys are hashed hundreds of
        # thousands of times in a 20,000-LSA flood, so hash the integers directly. Equal keys
        # still hash equal: an IPv4Address equals another only if their integers do.
        return hash((self[0], self[1]._ip, self[2]._ip))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class LsaHeader:
    """LSA header, 20 octets (RFC 2328 §A.4.1).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            LS age             |    Options    |    LS type    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Link State ID                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Advertising Router                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     LS sequence number                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         LS checksum           |             length            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    `seq` is signed (RFC 2328 §12.1.6). `ls_type` is an `LsaType` when known, else the int.
    `age` may carry the DoNotAge bit (0x8000, RFC 1793) as received; it is kept, not interpreted.
    """

    age: int
    options: Options
    ls_type: int
    link_state_id: IPv4Address
    advertising_router: IPv4Address
    seq: int
    checksum: int
    length: int
    key: LsaKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Checked field by field only when the quick test fails: headers are built by the
        # ten thousand (RFC 4061 floods), and the common case is plain in-range ints.
        age, seq, checksum, length = self.age, self.seq, self.checksum, self.length
        if not (
            type(age) is int
            and 0 <= age <= 0xFFFF
            and type(seq) is int
            and -(1 << 31) <= seq < 1 << 31
            and type(checksum) is int
            and 0 <= checksum <= 0xFFFF
            and type(length) is int
            and LSA_HEADER_SIZE <= length <= 0xFFFF
        ):
            self._check_numbers()
        if type(self.options) is not Options:
            _uint("options", self.options, 8)
            _set(self, "options", _OPTIONS[self.options])
        if type(self.ls_type) is not LsaType:
            _uint("ls_type", self.ls_type, 8)
            _set(self, "ls_type", _LS_TYPE.get(self.ls_type, self.ls_type))
        if type(self.link_state_id) is not IPv4Address:
            _set(self, "link_state_id", _addr("link_state_id", self.link_state_id))
        if type(self.advertising_router) is not IPv4Address:
            _set(self, "advertising_router", _addr("advertising_router", self.advertising_router))
        _set(self, "key", LsaKey(self.ls_type, self.link_state_id, self.advertising_router))

    def _check_numbers(self) -> None:
        _uint("age", self.age, 16)
        if not isinstance(self.seq, int) or not -(1 << 31) <= self.seq < 1 << 31:
            raise _FieldError("seq", f"{self.seq!r} is not a signed 32-bit integer")
        _uint("checksum", self.checksum, 16)
        _uint("length", self.length, 16)
        if self.length < LSA_HEADER_SIZE:
            raise _FieldError(
                "length", f"{self.length} is below the {LSA_HEADER_SIZE}-octet header"
            )


_LSA_TYPES = frozenset(int(t) for t in LsaType)
_LS_TYPE: dict[int, int] = {int(t): t for t in LsaType}
# IntFlag construction costs microseconds; decoding looks the 256 values up instead.
_OPTIONS: tuple[Options, ...] = tuple(Options(i) for i in range(256))


def encode_lsa_header(h: LsaHeader) -> bytes:
    return _LSA_HEADER.pack(
        h.age,
        h.options,
        h.ls_type,
        int(h.link_state_id),
        int(h.advertising_router),
        h.seq,
        h.checksum,
        h.length,
    )


def _header_from(values: tuple[int, ...]) -> LsaHeader:
    """A header from unpacked fields, which struct already bounded; only the length can be
    impossible. Built without __post_init__ (this is the decoder's hot path)."""
    age, options, ls_type, lsid, adv, seq, checksum, length = values
    if length < LSA_HEADER_SIZE:
        raise OspfDecodeError(
            f"LSA length {length} is below the 20-octet header",
            message_type="LsaHeader",
            field="length",
        )
    h = _new(LsaHeader)
    _set(h, "age", age)
    _set(h, "options", _OPTIONS[options])
    _set(h, "ls_type", _LS_TYPE.get(ls_type, ls_type))
    _set(h, "link_state_id", _ip(lsid))
    _set(h, "advertising_router", _ip(adv))
    _set(h, "seq", seq)
    _set(h, "checksum", checksum)
    _set(h, "length", length)
    _set(h, "key", LsaKey(h.ls_type, h.link_state_id, h.advertising_router))
    return h


def decode_lsa_header(data: Buffer) -> LsaHeader:
    raw = _octets(data)
    if len(raw) != LSA_HEADER_SIZE:
        raise _short("LsaHeader", "length", LSA_HEADER_SIZE, len(raw))
    return _header_from(_LSA_HEADER.unpack(raw))


def _decode_headers(raw: bytes, offset: int, message_type: str) -> tuple[LsaHeader, ...]:
    if (len(raw) - offset) % LSA_HEADER_SIZE:
        raise OspfDecodeError(
            f"{len(raw) - offset} octets of LSA headers is not a multiple of 20",
            message_type=message_type,
            field="lsa_headers",
        )
    return tuple(_header_from(v) for v in _LSA_HEADER.iter_unpack(raw[offset:]))


def compare_lsa(a: LsaHeader, b: LsaHeader) -> int:
    """Which instance is newer (RFC 2328 §13.1): 1 if `a`, -1 if `b`, 0 if the same instance.

    Ages here are the current ages (the caller adds the time held). The order of the rules:
    higher sequence number; then larger checksum; then the one at MaxAge; then, if the ages
    differ by more than MaxAgeDiff, the younger; else the same instance.
    """
    if a.seq != b.seq:
        return 1 if a.seq > b.seq else -1
    if a.checksum != b.checksum:
        return 1 if a.checksum > b.checksum else -1
    age_a, age_b = min(a.age & 0x7FFF, MAX_AGE), min(b.age & 0x7FFF, MAX_AGE)
    if (age_a == MAX_AGE) != (age_b == MAX_AGE):
        return 1 if age_a == MAX_AGE else -1
    if abs(age_a - age_b) > MAX_AGE_DIFF:
        return 1 if age_a < age_b else -1
    return 0


# --------------------------------------------------------------------------------------------
# LSA bodies


@dataclass(frozen=True, slots=True)
class RouterLink:
    """One link of a router-LSA (RFC 2328 §A.4.2), with its TOS metrics as (tos, metric) pairs.

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          Link ID                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Link Data                             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Type      |     # TOS     |            metric             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      TOS      |        0      |          TOS  metric          |  (# TOS times)
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    """

    link_id: IPv4Address
    link_data: IPv4Address
    link_type: int
    metric: int
    tos: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        _set(self, "link_id", _addr("link_id", self.link_id))
        _set(self, "link_data", _addr("link_data", self.link_data))
        _uint("link_type", self.link_type, 8)
        if self.link_type in _LINK_TYPES and type(self.link_type) is not LinkType:
            _set(self, "link_type", LinkType(self.link_type))
        _uint("metric", self.metric, 16)
        _set(self, "tos", tuple(self.tos))
        if len(self.tos) > 255:
            raise _FieldError("tos", f"{len(self.tos)} TOS entries, at most 255")
        for tos, metric in self.tos:
            _uint("tos", tos, 8)
            _uint("tos metric", metric, 16)


_LINK_TYPES = frozenset(int(t) for t in LinkType)


@dataclass(frozen=True, slots=True)
class RouterLsaBody:
    """Router-LSA body, LS type 1 (RFC 2328 §A.4.2).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    0    |V|E|B|        0      |            # links            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      links (RouterLink) ...                   |
    ```
    """

    flags: RouterLsaFlags
    links: tuple[RouterLink, ...]

    def __post_init__(self) -> None:
        _uint("flags", self.flags, 8)
        _set(self, "flags", RouterLsaFlags(self.flags))
        _set(self, "links", tuple(self.links))
        if len(self.links) > 0xFFFF:
            raise _FieldError("links", f"{len(self.links)} links, at most 65535")


@dataclass(frozen=True, slots=True)
class NetworkLsaBody:
    """Network-LSA body, LS type 2, originated by the DR (RFC 2328 §A.4.3).

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Network Mask                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Attached Router                        |  ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    """

    mask: IPv4Address
    attached_routers: tuple[IPv4Address, ...]

    def __post_init__(self) -> None:
        _set(self, "mask", _addr("mask", self.mask))
        _set(
            self,
            "attached_routers",
            tuple(_addr("attached_routers", a) for a in self.attached_routers),
        )


@dataclass(frozen=True, slots=True)
class SummaryLsaBody:
    """Summary-LSA body, LS types 3 (network) and 4 (ASBR) (RFC 2328 §A.4.4).

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Network Mask                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      0        |                  metric                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     TOS       |                TOS  metric                    |  ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    For type 4 the mask is unused and should be 0.0.0.0.
    """

    mask: IPv4Address
    metric: int
    tos: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        _set(self, "mask", _addr("mask", self.mask))
        _uint("metric", self.metric, 24)
        _set(self, "tos", tuple(self.tos))
        for tos, metric in self.tos:
            _uint("tos", tos, 8)
            _uint("tos metric", metric, 24)


@dataclass(frozen=True, slots=True)
class AsExternalLsaBody:
    """AS-external-LSA body, LS type 5 (RFC 2328 §A.4.5).

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Network Mask                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |E|     0       |                  metric                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Forwarding address                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      External Route Tag                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |E|    TOS      |                TOS  metric                    |  ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    `e_bit` True means a type 2 external metric. `tos` holds (e_bit, tos, metric, forwarding
    address, route tag) for TOS entries after the first (unused since RFC 2328, kept for fidelity).
    """

    mask: IPv4Address
    metric: int
    e_bit: bool = True
    forwarding: IPv4Address = _ZERO
    route_tag: int = 0
    tos: tuple[tuple[bool, int, int, IPv4Address, int], ...] = ()

    def __post_init__(self) -> None:
        _set(self, "mask", _addr("mask", self.mask))
        _uint("metric", self.metric, 24)
        _set(self, "e_bit", bool(self.e_bit))
        _set(self, "forwarding", _addr("forwarding", self.forwarding))
        _uint("route_tag", self.route_tag, 32)
        _set(self, "tos", tuple(self.tos))
        for _e, tos, metric, _fwd, tag in self.tos:
            _uint("tos", tos, 7)
            _uint("tos metric", metric, 24)
            _uint("tos route_tag", tag, 32)


@dataclass(frozen=True, slots=True)
class OpaqueLsaBody:
    """The body of an LSA whose type this codec does not structure, kept octet for octet."""

    data: bytes

    def __post_init__(self) -> None:
        if type(self.data) is not bytes:
            # bytearray or memoryview from a caller: keep an immutable copy.
            _set(self, "data", bytes(self.data))


LsaBody = RouterLsaBody | NetworkLsaBody | SummaryLsaBody | AsExternalLsaBody | OpaqueLsaBody


def _encode_body(ls_type: int, body: LsaBody) -> bytes:
    if isinstance(body, OpaqueLsaBody):
        return body.data
    if isinstance(body, AsExternalLsaBody):
        if ls_type != LsaType.AS_EXTERNAL:
            raise ValueError(f"AS-external body in an LSA of type {ls_type}")
        parts = [
            _EXTERNAL_TOS.pack(
                (body.e_bit << 31) | body.metric, int(body.forwarding), body.route_tag
            )
        ]
        parts += [
            _EXTERNAL_TOS.pack((e << 31) | (tos << 24) | m, int(fwd), tag)
            for e, tos, m, fwd, tag in body.tos
        ]
        return _WORD.pack(int(body.mask)) + b"".join(parts)
    if isinstance(body, RouterLsaBody):
        if ls_type != LsaType.ROUTER:
            raise ValueError(f"router body in an LSA of type {ls_type}")
        out = [_ROUTER_BODY.pack(body.flags, len(body.links))]
        for link in body.links:
            out.append(
                _ROUTER_LINK.pack(
                    int(link.link_id),
                    int(link.link_data),
                    link.link_type,
                    len(link.tos),
                    link.metric,
                )
            )
            out.extend(_TOS_METRIC.pack(t, m) for t, m in link.tos)
        return b"".join(out)
    if isinstance(body, NetworkLsaBody):
        if ls_type != LsaType.NETWORK:
            raise ValueError(f"network body in an LSA of type {ls_type}")
        words = [int(body.mask), *(int(a) for a in body.attached_routers)]
        return struct.pack(f"!{len(words)}I", *words)
    if ls_type not in (LsaType.SUMMARY_NETWORK, LsaType.SUMMARY_ASBR):
        raise ValueError(f"summary body in an LSA of type {ls_type}")
    words = [int(body.mask), body.metric, *((t << 24) | m for t, m in body.tos)]
    return struct.pack(f"!{len(words)}I", *words)


def _decode_body(ls_type: int, raw: bytes) -> LsaBody:
    n = len(raw)
    if ls_type == LsaType.ROUTER:
        if n < 4:
            raise _short("RouterLsa", "body", 4, n)
        flags, count = _ROUTER_BODY.unpack_from(raw)
        links: list[RouterLink] = []
        off = 4
        for _ in range(count):
            if n - off < 12:
                raise _short("RouterLsa", "links", 12, n - off)
            lid, ldata, ltype, ntos, metric = _ROUTER_LINK.unpack_from(raw, off)
            off += 12
            if n - off < 4 * ntos:
                raise _short("RouterLsa", "tos", 4 * ntos, n - off)
            tos = tuple(_TOS_METRIC.iter_unpack(raw[off : off + 4 * ntos]))
            off += 4 * ntos
            links.append(RouterLink(_ip(lid), _ip(ldata), ltype, metric, tos))
        if off != n:
            raise OspfDecodeError(
                f"{n - off} octets after the last link", message_type="RouterLsa", field="length"
            )
        return _build(RouterLsaBody, "RouterLsa", RouterLsaFlags(flags), tuple(links))
    if ls_type == LsaType.NETWORK:
        if n < 4 or n % 4:
            raise OspfDecodeError(
                f"body of {n} octets is not a mask plus 4-octet router IDs",
                message_type="NetworkLsa",
                field="length",
            )
        words = [_ip(w) for (w,) in _WORD.iter_unpack(raw)]
        return NetworkLsaBody(words[0], tuple(words[1:]))
    if ls_type in (LsaType.SUMMARY_NETWORK, LsaType.SUMMARY_ASBR):
        if n < 8 or n % 4:
            raise OspfDecodeError(
                f"body of {n} octets is not mask, metric and TOS words",
                message_type="SummaryLsa",
                field="length",
            )
        ws = [w for (w,) in _WORD.iter_unpack(raw)]
        # The octet before the TOS-0 metric is 0 (the TOS); it is covered by the checksum, so a
        # non-zero value is kept as a TOS-0 entry would not round-trip: reject it instead.
        if ws[1] >> 24:
            raise OspfDecodeError(
                "TOS-0 metric word has a non-zero TOS octet",
                message_type="SummaryLsa",
                field="metric",
            )
        tos = tuple((w >> 24, w & 0xFFFFFF) for w in ws[2:])
        return SummaryLsaBody(_ip(ws[0]), ws[1], tos)
    if ls_type == LsaType.AS_EXTERNAL:
        if n < 16 or (n - 4) % 12:
            raise OspfDecodeError(
                f"body of {n} octets is not a mask and 12-octet TOS entries",
                message_type="AsExternalLsa",
                field="length",
            )
        if n == 16:
            # The bulk case, built without __post_init__: struct bounded every field.
            mask, w0, fwd, tag = _EXTERNAL_BODY.unpack(raw)
            if (w0 >> 24) & 0x7F:
                raise OspfDecodeError(
                    "first entry is not TOS 0", message_type="AsExternalLsa", field="tos"
                )
            ext = _new(AsExternalLsaBody)
            _set(ext, "mask", _ip(mask))
            _set(ext, "metric", w0 & 0xFFFFFF)
            _set(ext, "e_bit", bool(w0 >> 31))
            _set(ext, "forwarding", _ip(fwd) if fwd else _ZERO)
            _set(ext, "route_tag", tag)
            _set(ext, "tos", ())
            return ext
        (mask,) = _WORD.unpack_from(raw)
        entries = list(_EXTERNAL_TOS.iter_unpack(raw[4:]))
        w0, fwd, tag = entries[0]
        if (w0 >> 24) & 0x7F:
            raise OspfDecodeError(
                "first entry is not TOS 0", message_type="AsExternalLsa", field="tos"
            )
        more = tuple(
            (bool(w >> 31), (w >> 24) & 0x7F, w & 0xFFFFFF, _ip(f), t) for w, f, t in entries[1:]
        )
        return AsExternalLsaBody(_ip(mask), w0 & 0xFFFFFF, bool(w0 >> 31), _ip(fwd), tag, more)
    return OpaqueLsaBody(raw)


# --------------------------------------------------------------------------------------------
# Whole LSAs


@dataclass(frozen=True, slots=True)
class Lsa:
    """An LSA: its header (RFC 2328 §A.4.1) and its type's body (§A.4.2-A.4.5, or opaque)."""

    header: LsaHeader
    body: LsaBody

    @property
    def key(self) -> LsaKey:
        return self.header.key


def encode_lsa(lsa: Lsa) -> bytes:
    """Header as stored followed by the body; `header.length` must match the encoded size."""
    h = lsa.header
    body = lsa.body
    if type(body) is AsExternalLsaBody and not body.tos:
        # The bulk case in one pack call (20,000 externals must encode in well under a second).
        out = _EXTERNAL_LSA.pack(
            h.age,
            h.options,
            h.ls_type,
            int(h.link_state_id),
            int(h.advertising_router),
            h.seq,
            h.checksum,
            h.length,
            int(body.mask),
            (body.e_bit << 31) | body.metric,
            int(body.forwarding),
            body.route_tag,
        )
    else:
        out = encode_lsa_header(h) + _encode_body(h.ls_type, body)
    if len(out) != h.length:
        raise ValueError(f"header length {h.length} but the LSA encodes to {len(out)} octets")
    return out


def make_lsa(
    ls_type: int,
    link_state_id: IPv4Address | str | int,
    advertising_router: IPv4Address | str | int,
    seq: int,
    body: LsaBody,
    *,
    age: int = 0,
    options: Options = Options.E,
) -> tuple[Lsa, bytes]:
    """Originate an LSA: compute its length and Fletcher checksum; return it and its octets."""
    body_raw = _encode_body(ls_type, body)
    length = LSA_HEADER_SIZE + len(body_raw)
    # Validated once with a zero checksum; the checksum is set before anyone sees the header.
    head = LsaHeader(age, options, ls_type, link_state_id, advertising_router, seq, 0, length)  # type: ignore[arg-type]
    raw = bytearray(encode_lsa_header(head) + body_raw)
    checksum = _check_octets(raw)
    raw[16:18] = checksum.to_bytes(2, "big")
    _set(head, "checksum", checksum)
    return Lsa(head, body), bytes(raw)


def with_age(raw: Buffer, age: int) -> bytes:
    """The encoded LSA with LS age replaced (the checksum does not cover it, RFC 2328 §12.1.7)."""
    _uint("age", age, 16)
    return _AGE.pack(age) + bytes(raw[2:])


def _decode_lsa_at(raw: bytes, off: int, message_type: str) -> tuple[Lsa, int]:
    if len(raw) - off < LSA_HEADER_SIZE:
        raise _short(message_type, "lsa header", LSA_HEADER_SIZE, len(raw) - off)
    header = _header_from(_LSA_HEADER.unpack_from(raw, off))
    end = off + header.length
    if end > len(raw):
        raise OspfDecodeError(
            f"LSA length {header.length} runs past the packet ({len(raw) - off} octets left)",
            message_type=message_type,
            field="lsa length",
        )
    return Lsa(header, _decode_body(header.ls_type, raw[off + LSA_HEADER_SIZE : end])), end


def decode_lsa(data: Buffer) -> Lsa:
    """One LSA occupying all of `data` (checksum not verified: see `lsa_checksum_ok`)."""
    raw = _octets(data)
    lsa, end = _decode_lsa_at(raw, 0, "Lsa")
    if end != len(raw):
        raise OspfDecodeError(
            f"{len(raw) - end} octets after the LSA", message_type="Lsa", field="length"
        )
    return lsa


def decode_lsas(data: Buffer, count: int) -> list[tuple[Lsa, bytes]]:
    """`count` consecutive LSAs from `data`, each with its own octets."""
    raw = _octets(data)
    out: list[tuple[Lsa, bytes]] = []
    off = 0
    for _ in range(count):
        lsa, end = _decode_lsa_at(raw, off, "LinkStateUpdate")
        out.append((lsa, raw[off:end]))
        off = end
    return out


# --------------------------------------------------------------------------------------------
# Packet header and packet bodies


@dataclass(frozen=True, slots=True)
class OspfHeader:
    """OSPF packet header, 24 octets (RFC 2328 §A.3.1).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |   Version #   |     Type      |         Packet length         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          Router ID                            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           Area ID                             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           Checksum            |             AuType            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       Authentication                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       Authentication                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    """

    packet_type: PacketType
    length: int
    router_id: IPv4Address
    area_id: IPv4Address
    checksum: int
    au_type: int = AuType.NULL
    auth: bytes = bytes(8)
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Hello:
    """Hello packet body, type 1 (RFC 2328 §A.3.2).

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Network Mask                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         HelloInterval         |    Options    |    Rtr Pri    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     RouterDeadInterval                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Designated Router                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                   Backup Designated Router                    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          Neighbor                             |  ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    Intervals are whole seconds, as on the wire.
    """

    mask: IPv4Address
    hello_interval: int
    options: Options
    priority: int
    dead_interval: int
    dr: IPv4Address
    bdr: IPv4Address
    neighbors: tuple[IPv4Address, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "mask", _addr("mask", self.mask))
        _uint("hello_interval", self.hello_interval, 16)
        _uint("options", self.options, 8)
        _set(self, "options", Options(self.options))
        _uint("priority", self.priority, 8)
        _uint("dead_interval", self.dead_interval, 32)
        _set(self, "dr", _addr("dr", self.dr))
        _set(self, "bdr", _addr("bdr", self.bdr))
        _set(self, "neighbors", tuple(_addr("neighbors", n) for n in self.neighbors))


def encode_hello(msg: Hello) -> bytes:
    head = _HELLO.pack(
        int(msg.mask),
        msg.hello_interval,
        msg.options,
        msg.priority,
        msg.dead_interval,
        int(msg.dr),
        int(msg.bdr),
    )
    return head + struct.pack(f"!{len(msg.neighbors)}I", *(int(n) for n in msg.neighbors))


def decode_hello(data: Buffer) -> Hello:
    raw = _octets(data)
    if len(raw) < _HELLO.size or (len(raw) - _HELLO.size) % 4:
        raise OspfDecodeError(
            f"{len(raw)} octets is not 20 plus 4-octet neighbours",
            message_type="Hello",
            field="length",
        )
    mask, hi, opts, pri, dead, dr, bdr = _HELLO.unpack_from(raw)
    nbrs = tuple(_ip(n) for (n,) in _WORD.iter_unpack(raw[_HELLO.size :]))
    return _build(
        Hello,
        "Hello",
        _ip(mask),
        hi,
        Options(opts),
        pri,
        dead,
        _ip(dr),
        _ip(bdr),
        nbrs,
    )


@dataclass(frozen=True, slots=True)
class DatabaseDescription:
    """Database Description body, type 2 (RFC 2328 §A.3.3).

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         Interface MTU         |    Options    |0|0|0|0|0|I|M|MS
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     DD sequence number                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       LSA headers ...                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    """

    mtu: int
    options: Options
    flags: DbdFlags
    dd_seq: int
    lsa_headers: tuple[LsaHeader, ...] = ()

    def __post_init__(self) -> None:
        _uint("mtu", self.mtu, 16)
        _uint("options", self.options, 8)
        _set(self, "options", Options(self.options))
        _uint("flags", self.flags, 8)
        _set(self, "flags", DbdFlags(self.flags))
        _uint("dd_seq", self.dd_seq, 32)
        _set(self, "lsa_headers", tuple(self.lsa_headers))


def encode_database_description(msg: DatabaseDescription) -> bytes:
    head = _DBD.pack(msg.mtu, msg.options, msg.flags, msg.dd_seq)
    return head + b"".join(encode_lsa_header(h) for h in msg.lsa_headers)


def decode_database_description(data: Buffer) -> DatabaseDescription:
    raw = _octets(data)
    if len(raw) < _DBD.size:
        raise _short("DatabaseDescription", "length", _DBD.size, len(raw))
    mtu, opts, flags, seq = _DBD.unpack_from(raw)
    headers = _decode_headers(raw, _DBD.size, "DatabaseDescription")
    return _build(
        DatabaseDescription,
        "DatabaseDescription",
        mtu,
        Options(opts),
        DbdFlags(flags),
        seq,
        headers,
    )


@dataclass(frozen=True, slots=True)
class LinkStateRequest:
    """Link State Request body, type 3 (RFC 2328 §A.3.4): a list of LSA keys.

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          LS type                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       Link State ID                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Advertising Router                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                              ...                              |
    ```
    The LS type is a 32-bit field here; values above 255 cannot name an LSA and are rejected.
    """

    keys: tuple[LsaKey, ...]

    def __post_init__(self) -> None:
        keys = tuple(
            LsaKey(k[0], _addr("link_state_id", k[1]), _addr("advertising_router", k[2]))
            for k in self.keys
        )
        for k in keys:
            _uint("ls_type", k.ls_type, 8)
        _set(self, "keys", keys)


def encode_link_state_request(msg: LinkStateRequest) -> bytes:
    return b"".join(
        _LSR_ENTRY.pack(k.ls_type, int(k.link_state_id), int(k.advertising_router))
        for k in msg.keys
    )


def decode_link_state_request(data: Buffer) -> LinkStateRequest:
    raw = _octets(data)
    if len(raw) % 12:
        raise OspfDecodeError(
            f"{len(raw)} octets is not a multiple of 12",
            message_type="LinkStateRequest",
            field="length",
        )
    keys = tuple(LsaKey(t, _ip(i), _ip(a)) for t, i, a in _LSR_ENTRY.iter_unpack(raw))
    return _build(LinkStateRequest, "LinkStateRequest", keys)


@dataclass(frozen=True, slots=True)
class LinkStateUpdate:
    """Link State Update body, type 4 (RFC 2328 §A.3.5).

    ```
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                            # LSAs                             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                            LSAs ...                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    `lsas` are the decoded LSAs and `raw_lsas` their octets as received (for checksum
    verification and for flooding them on unchanged). When encoding, `raw_lsas` is what is
    sent; an update built from `Lsa` objects alone is made with `LinkStateUpdate.of`.
    """

    lsas: tuple[Lsa, ...]
    raw_lsas: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _set(self, "lsas", tuple(self.lsas))
        _set(self, "raw_lsas", tuple(self.raw_lsas))
        if len(self.lsas) != len(self.raw_lsas):
            raise _FieldError("raw_lsas", "one encoding per LSA is required")

    @classmethod
    def of(cls, lsas: Iterable[Lsa]) -> LinkStateUpdate:
        items = tuple(lsas)
        return cls(items, tuple(encode_lsa(x) for x in items))


def encode_link_state_update(msg: LinkStateUpdate) -> bytes:
    return _LSU_COUNT.pack(len(msg.raw_lsas)) + b"".join(msg.raw_lsas)


def decode_link_state_update(data: Buffer) -> LinkStateUpdate:
    raw = _octets(data)
    if len(raw) < 4:
        raise _short("LinkStateUpdate", "length", 4, len(raw))
    (count,) = _LSU_COUNT.unpack_from(raw)
    # Each LSA takes at least 20 octets: a hostile count cannot make us loop for long.
    if count * LSA_HEADER_SIZE > len(raw) - 4:
        raise OspfDecodeError(
            f"{count} LSAs cannot fit in {len(raw) - 4} octets",
            message_type="LinkStateUpdate",
            field="count",
        )
    items = decode_lsas(raw[4:], count)
    return LinkStateUpdate(tuple(x for x, _ in items), tuple(r for _, r in items))


@dataclass(frozen=True, slots=True)
class LinkStateAck:
    """Link State Acknowledgment body, type 5 (RFC 2328 §A.3.6): a list of LSA headers."""

    lsa_headers: tuple[LsaHeader, ...]

    def __post_init__(self) -> None:
        _set(self, "lsa_headers", tuple(self.lsa_headers))


def encode_link_state_ack(msg: LinkStateAck) -> bytes:
    return b"".join(encode_lsa_header(h) for h in msg.lsa_headers)


def decode_link_state_ack(data: Buffer) -> LinkStateAck:
    return LinkStateAck(_decode_headers(_octets(data), 0, "LinkStateAck"))


Body = Hello | DatabaseDescription | LinkStateRequest | LinkStateUpdate | LinkStateAck

_ENCODERS: dict[type, tuple[PacketType, Callable[..., bytes]]] = {
    Hello: (PacketType.HELLO, encode_hello),
    DatabaseDescription: (PacketType.DATABASE_DESCRIPTION, encode_database_description),
    LinkStateRequest: (PacketType.LINK_STATE_REQUEST, encode_link_state_request),
    LinkStateUpdate: (PacketType.LINK_STATE_UPDATE, encode_link_state_update),
    LinkStateAck: (PacketType.LINK_STATE_ACK, encode_link_state_ack),
}
_DECODERS: dict[int, Callable[[bytes], Body]] = {
    PacketType.HELLO: decode_hello,
    PacketType.DATABASE_DESCRIPTION: decode_database_description,
    PacketType.LINK_STATE_REQUEST: decode_link_state_request,
    PacketType.LINK_STATE_UPDATE: decode_link_state_update,
    PacketType.LINK_STATE_ACK: decode_link_state_ack,
}


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded OSPF packet: its header and its type's body."""

    header: OspfHeader
    body: Body


def encode_packet(
    router_id: IPv4Address,
    area_id: IPv4Address,
    body: Body,
    *,
    au_type: AuType = AuType.NULL,
    auth: bytes = bytes(8),
) -> bytes:
    """Header plus body, with the length and the checksum filled in (RFC 2328 §D.4.1-D.4.2).

    Cryptographic authentication (AuType 2) is not implemented: it needs a key and a trailer.
    """
    if au_type == AuType.CRYPTOGRAPHIC:
        raise ValueError("cryptographic authentication (AuType 2) is not implemented")
    if len(auth) != 8:
        raise ValueError(f"auth must be 8 octets, got {len(auth)}")
    ptype, encoder = _ENCODERS[type(body)]
    return encode_packet_payload(router_id, area_id, ptype, encoder(body), au_type, auth)


def encode_packet_payload(
    router_id: IPv4Address,
    area_id: IPv4Address,
    packet_type: PacketType,
    payload: bytes,
    au_type: AuType = AuType.NULL,
    auth: bytes = bytes(8),
) -> bytes:
    """A packet from an already encoded body (the flooding path packs LSA octets directly)."""
    length = HEADER_SIZE + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"packet of {length} octets exceeds the 16-bit length")
    rid, area = int(router_id), int(area_id)
    head = _HEADER.pack(VERSION, packet_type, length, rid, area, 0, au_type, bytes(8))
    checksum = internet_checksum(head + payload)
    return _HEADER.pack(VERSION, packet_type, length, rid, area, checksum, au_type, auth) + payload


def encode_lsu_payload(raw_lsas: Sequence[bytes]) -> bytes:
    """A Link State Update body from encoded LSAs."""
    return _LSU_COUNT.pack(len(raw_lsas)) + b"".join(raw_lsas)


def decode_packet(data: Buffer, *, verify_checksum: bool = True) -> Packet:
    """One OSPF packet (without the IP header). Octets beyond the header's length are ignored
    (the IP payload may be padded); the checksum is verified unless AuType is cryptographic,
    where RFC 2328 §D.4.3 says it is not computed."""
    raw = _octets(data)
    if len(raw) < HEADER_SIZE:
        raise _short("OspfHeader", "length", HEADER_SIZE, len(raw))
    version, ptype, length, rid, area, checksum, au_type, auth = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise OspfDecodeError(
            f"version {version}, not 2", message_type="OspfHeader", field="version"
        )
    if not HEADER_SIZE <= length <= len(raw):
        raise OspfDecodeError(
            f"packet length {length} with {len(raw)} octets received",
            message_type="OspfHeader",
            field="length",
        )
    decoder = _DECODERS.get(ptype)
    if decoder is None:
        raise OspfDecodeError(
            f"unknown packet type {ptype}", message_type="OspfHeader", field="type"
        )
    raw = raw[:length]
    if verify_checksum and au_type != AuType.CRYPTOGRAPHIC and _packet_checksum(raw) != checksum:
        raise OspfDecodeError(
            f"checksum 0x{checksum:04x}, computed 0x{_packet_checksum(raw):04x}",
            message_type="OspfHeader",
            field="checksum",
        )
    header = OspfHeader(
        PacketType(ptype),
        length,
        _ip(rid),
        _ip(area),
        checksum,
        au_type,
        auth,
        version,
    )
    return Packet(header, decoder(raw[HEADER_SIZE:]))


# --------------------------------------------------------------------------------------------
# MTU arithmetic and LSU packing (note §3: 72 DBD headers, 121 LSR keys, 40 externals at 1500)


def _max_ospf(mtu: int) -> int:
    room = mtu - IP_HEADER_SIZE - HEADER_SIZE
    if room < 0:
        raise ValueError(f"MTU {mtu} leaves no room for an OSPF header")
    return room


def dbd_capacity(mtu: int) -> int:
    """LSA headers per Database Description at this interface MTU."""
    return max(0, (_max_ospf(mtu) - _DBD.size) // LSA_HEADER_SIZE)


def lsr_capacity(mtu: int) -> int:
    """LSA keys per Link State Request at this interface MTU."""
    return _max_ospf(mtu) // _LSR_ENTRY.size


def pack_lsus(raw_lsas: Sequence[bytes], mtu: int) -> list[list[int]]:
    """Group encoded LSAs into Link State Updates that fit the MTU, in order.

    Returns lists of indices into `raw_lsas`. An LSA too big for any packet gets a packet of its
    own (the kernel will fragment it; RFC 2328 §A.1 allows this, but the note warns that it is a
    bad idea, so topology generators keep LSAs small).
    """
    room = _max_ospf(mtu) - _LSU_COUNT.size
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, raw in enumerate(raw_lsas):
        size = len(raw)
        if current and used + size > room:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += size
    if current:
        groups.append(current)
    return groups
