"""TWAMP-Control messages (RFC 4656 §3, RFC 5357 §3, RFC 5938, RFC 6038 §4).

Each message is declared three times, and the tests check that the three agree: a frozen
slotted dataclass holding its values, one module-level `struct.Struct` (MBZ octets are `x` pad
bytes, so encoding writes zeros and decoding ignores them, RFC 4656 §3.1), and the RFC diagram
in the docstring. `encode_<message>(msg) -> bytes` and `decode_<message>(data) -> Message`.

* Construction validates every field and raises ValueError (TypeError for a wrong type), so any
  message that exists can be encoded.
* Decoders take `bytes | bytearray | memoryview` of exactly the message's size and raise only
  `DecodeError` (`message_type` = the class name, `field` = what was wrong). They reject what a
  message cannot carry, not what a peer may not ask for: a non-zero Conf-Sender or SID in
  Request-TW-Session decodes, and the Server answers it with Accept 3 (RFC 5357 §3.5).
* Unknown Modes bits are kept as received (RFC 5618 §3.1 makes receivers ignore them); reserved
  Accept values decode as FAILURE (RFC 4656 §3.3).
* `hmac` is always the last 16 octets. These functions neither compute nor check it, and in
  unauthenticated mode it is whatever the peer sent (owamp once sent stale bytes there; its
  ChangeLog records the fix).

Framing (RFC 5357 §3): every message is a multiple of 16 octets and its length is known from its
first 16 (decrypted) octets; see `client_command_length` and `n_message_length`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final, TypeVar

from ..constants import (
    AES_BLOCK,
    HMAC_LEN,
    KEYID_LEN,
    MIN_COUNT,
    SECURE_CONTROL_MODES,
    SID_LEN,
    AcceptCode,
    Command,
    Mode,
)
from ..errors import DecodeError, UnsupportedError
from ..inet import check_dscp

__all__ = [
    "ACCEPT_SESSION_SIZE",
    "MAX_N_SESSIONS",
    "N_MESSAGE_BASE_SIZE",
    "REQUEST_TW_SESSION_SIZE",
    "SERVER_GREETING_SIZE",
    "SERVER_START_SIZE",
    "SET_UP_RESPONSE_SIZE",
    "START_ACK_SIZE",
    "START_SESSIONS_SIZE",
    "STOP_SESSIONS_SIZE",
    "AcceptSession",
    "Buffer",
    "ClientCommand",
    "RequestTWSession",
    "ServerGreeting",
    "ServerStart",
    "SetUpResponse",
    "StartAck",
    "StartNAck",
    "StartNSessions",
    "StartSessions",
    "StopNAck",
    "StopNSessions",
    "StopSessions",
    "client_command_length",
    "decode_accept_session",
    "decode_client_command",
    "decode_request_tw_session",
    "decode_server_greeting",
    "decode_server_start",
    "decode_set_up_response",
    "decode_start_ack",
    "decode_start_n_ack",
    "decode_start_n_sessions",
    "decode_start_sessions",
    "decode_stop_n_ack",
    "decode_stop_n_sessions",
    "decode_stop_sessions",
    "encode_accept_session",
    "encode_request_tw_session",
    "encode_server_greeting",
    "encode_server_start",
    "encode_set_up_response",
    "encode_start_ack",
    "encode_start_n_ack",
    "encode_start_n_sessions",
    "encode_start_sessions",
    "encode_stop_n_ack",
    "encode_stop_n_sessions",
    "encode_stop_sessions",
    "n_message_length",
    "type_p_for_dscp",
    "type_p_for_phb_id",
]

Buffer = bytes | bytearray | memoryview

SERVER_GREETING_SIZE: Final = 64
SET_UP_RESPONSE_SIZE: Final = 164
SERVER_START_SIZE: Final = 48
REQUEST_TW_SESSION_SIZE: Final = 112
ACCEPT_SESSION_SIZE: Final = 48
START_SESSIONS_SIZE: Final = 32
START_ACK_SIZE: Final = 32
STOP_SESSIONS_SIZE: Final = 32
# RFC 5938 §3.2-3.5: Start-N-Sessions, Start-N-Ack, Stop-N-Sessions, Stop-N-Ack are 32 + 16 N.
N_MESSAGE_BASE_SIZE: Final = 32
# RFC 5938 sets no upper bound on N; this one caps what a peer can make us buffer (16 416 octets).
MAX_N_SESSIONS: Final = 1024

_SERVER_GREETING = struct.Struct("!12xI16s16sI12x")
_SET_UP_RESPONSE = struct.Struct("!I80s64s16s")
_SERVER_START = struct.Struct("!15xB16sQ8x")
_REQUEST_TW_SESSION = struct.Struct("!BBBBIIHH16s16s16sIQQIHH4x16s")
_ACCEPT_SESSION = struct.Struct("!BxH16sHH8x16s")
_START_SESSIONS = struct.Struct("!B15x16s")
_START_ACK = struct.Struct("!B15x16s")
_STOP_SESSIONS = struct.Struct("!BB2xI8x16s")
# First block of the RFC 5938 messages; the SIDs and the HMAC follow it.
_N_COMMAND_HEAD = struct.Struct("!B11xI")  # Start-N-Sessions (7), Stop-N-Sessions (9)
_N_ACK_HEAD = struct.Struct("!BB10xI")  # Start-N-Ack (8), Stop-N-Ack (10)

_IPV4_PAD = bytes(12)
_TOKEN_LEN = 64

_M = TypeVar("_M")


# --------------------------------------------------------------------------------------------
# Field validation shared by the dataclasses


class _FieldError(ValueError):
    """A value a field cannot hold; decoders turn it into DecodeError(field=...)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _check_octets(field: str, value: object, length: int) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{field} must be bytes, not {type(value).__name__}")
    if len(value) != length:
        raise _FieldError(field, f"must be {length} octets, got {len(value)}")


def _check_uint(field: str, value: int, bits: int) -> None:
    if not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise _FieldError(field, f"{value} does not fit in {bits} unsigned bits")


def _mode(field: str, value: int) -> Mode:
    _check_uint(field, value, 32)
    # Mode(value) keeps unknown bits (IntFlag), which RFC 5618 §3.1 asks receivers to ignore.
    return Mode(value)


def _accept(value: int) -> AcceptCode:
    try:
        return AcceptCode(value)
    except ValueError:
        # RFC 4656 §3.3: other values are reserved; a sender must not use them.
        raise _FieldError("accept", f"{value!r} is not an Accept value") from None


def _sids(value: tuple[bytes, ...]) -> tuple[bytes, ...]:
    sids = tuple(value)
    # RFC 5938 §3.2-3.5: Number of Sessions MUST be one or greater.
    if not 1 <= len(sids) <= MAX_N_SESSIONS:
        raise _FieldError("sids", f"1 to {MAX_N_SESSIONS} SIDs required, got {len(sids)}")
    for sid in sids:
        _check_octets("sids", sid, SID_LEN)
    return sids


# --------------------------------------------------------------------------------------------
# Decoding helpers: every failure becomes a DecodeError naming the message and the field


def _octets(data: Buffer) -> bytes | bytearray:
    if isinstance(data, (bytes, bytearray)):
        return data
    # A memoryview may have a multi-octet item format; len() must count octets.
    return memoryview(data).tobytes()


def _exact(data: Buffer, size: int, message_type: str) -> bytes | bytearray:
    raw = _octets(data)
    if len(raw) != size:
        raise DecodeError(
            f"{size} octets expected, got {len(raw)}", message_type=message_type, field="length"
        )
    return raw


def _expect_command(got: int, want: Command, message_type: str) -> None:
    if got != want:
        raise DecodeError(
            f"command number {got}, expected {want.value} ({want.name})",
            message_type=message_type,
            field="command",
        )


def _build(cls: Callable[..., _M], message_type: str, *args: object) -> _M:
    try:
        return cls(*args)
    except ValueError as exc:
        field = exc.field if isinstance(exc, _FieldError) else None
        raise DecodeError(str(exc), message_type=message_type, field=field) from None


# --------------------------------------------------------------------------------------------
# Connection setup: Server-Greeting, Set-Up-Response, Server-Start (RFC 4656 §3.1)


@dataclass(frozen=True, slots=True)
class ServerGreeting:
    """Server-Greeting, server -> client, 64 octets, clear text (RFC 4656 §3.1, RFC 5357 §3.1).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                                                               |
    |                      Unused (12 octets)                       |
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                            Modes                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Challenge (16 octets)                     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Salt (16 octets)                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Count (4 octets)                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        MBZ (12 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    `count` is the PBKDF2 iteration count. RFC 4656 §3.1 requires at least 1024; this is enforced
    only when the greeting offers a mode that uses the shared secret (2, 4 or 8), because a lower
    count would let an attacker who rewrites the greeting brute-force the secret cheaply from the
    Token. The configurable upper bound (RFC 5357 §6) is the client's decision, not the codec's.
    """

    modes: Mode
    challenge: bytes
    salt: bytes
    count: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", _mode("modes", self.modes))
        _check_octets("challenge", self.challenge, 16)
        _check_octets("salt", self.salt, 16)
        _check_uint("count", self.count, 32)
        if self.modes & SECURE_CONTROL_MODES and self.count < MIN_COUNT:
            raise _FieldError("count", f"{self.count} is below the minimum of {MIN_COUNT}")


def encode_server_greeting(msg: ServerGreeting) -> bytes:
    return _SERVER_GREETING.pack(msg.modes, msg.challenge, msg.salt, msg.count)


def decode_server_greeting(data: Buffer) -> ServerGreeting:
    raw = _exact(data, SERVER_GREETING_SIZE, "ServerGreeting")
    modes, challenge, salt, count = _SERVER_GREETING.unpack(raw)
    return _build(ServerGreeting, "ServerGreeting", modes, challenge, salt, count)


@dataclass(frozen=True, slots=True)
class SetUpResponse:
    """Set-Up-Response, client -> server, 164 octets, clear text (RFC 4656 §3.1, RFC 5357 §3.1).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                             Mode                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       KeyID (80 octets)                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       Token (64 octets)                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Client-IV (16 octets)                     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    `key_id` is held without its zero padding: trailing zero octets are removed on construction,
    since the wire cannot tell them from padding. It stays bytes, because RFC 7717 §5 puts
    binary SPIs in it. In unauthenticated mode the server ignores all but `mode` (RFC 4656 §3.1).
    """

    mode: Mode
    key_id: bytes = b""
    token: bytes = bytes(_TOKEN_LEN)
    client_iv: bytes = bytes(AES_BLOCK)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", _mode("mode", self.mode))
        if not isinstance(self.key_id, bytes):
            raise TypeError(f"key_id must be bytes, not {type(self.key_id).__name__}")
        if len(self.key_id) > KEYID_LEN:
            raise _FieldError("key_id", f"at most {KEYID_LEN} octets, got {len(self.key_id)}")
        object.__setattr__(self, "key_id", self.key_id.rstrip(b"\0"))
        _check_octets("token", self.token, _TOKEN_LEN)
        _check_octets("client_iv", self.client_iv, AES_BLOCK)


def encode_set_up_response(msg: SetUpResponse) -> bytes:
    # struct's "80s" pads key_id with zeros, which is the KeyID encoding (RFC 4656 §3.1).
    return _SET_UP_RESPONSE.pack(msg.mode, msg.key_id, msg.token, msg.client_iv)


def decode_set_up_response(data: Buffer) -> SetUpResponse:
    raw = _exact(data, SET_UP_RESPONSE_SIZE, "SetUpResponse")
    return _build(SetUpResponse, "SetUpResponse", *_SET_UP_RESPONSE.unpack(raw))


@dataclass(frozen=True, slots=True)
class ServerStart:
    """Server-Start, server -> client, 48 octets (RFC 4656 §3.1, RFC 5357 §3.1).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                                                               |
    |                         MBZ (15 octets)                       |
    |                                                               |
    |                                               |   Accept      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Server-IV (16 octets)                     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Start-Time (Timestamp)                   |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         MBZ (8 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    `start_time` is the raw 64-bit timestamp. In modes 2, 4 and 8 octets 32-47 are the first
    encrypted block of the server's stream (RFC 5357 §3.1); this codec sees them decrypted.
    """

    accept: AcceptCode
    server_iv: bytes
    start_time: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "accept", _accept(self.accept))
        _check_octets("server_iv", self.server_iv, AES_BLOCK)
        _check_uint("start_time", self.start_time, 64)


def encode_server_start(msg: ServerStart) -> bytes:
    return _SERVER_START.pack(msg.accept, msg.server_iv, msg.start_time)


def decode_server_start(data: Buffer) -> ServerStart:
    raw = _exact(data, SERVER_START_SIZE, "ServerStart")
    accept, server_iv, start_time = _SERVER_START.unpack(raw)
    return _build(ServerStart, "ServerStart", AcceptCode.from_wire(accept), server_iv, start_time)


# --------------------------------------------------------------------------------------------
# Session creation: Request-TW-Session and Accept-Session (RFC 5357 §3.5, RFC 6038 §4.2-4.3)


def type_p_for_dscp(dscp: int) -> int:
    """Type-P Descriptor for a DSCP (RFC 4656 §3.5): `DSCP << 24`, so octet 84 is the DSCP."""
    return check_dscp(dscp) << 24


def type_p_for_phb_id(phb_id: int) -> int:
    """Type-P Descriptor for an RFC 2836 PHB ID: top bits 01, then the 16-bit PHB ID."""
    if not 0 <= phb_id <= 0xFFFF:
        raise ValueError(f"PHB ID {phb_id} is not a 16-bit value")
    return 0x40000000 | (phb_id << 14)


@dataclass(frozen=True, slots=True)
class RequestTWSession:
    """Request-TW-Session, client -> server, 112 octets, command 5 (RFC 5357 §3.5, RFC 6038 §4.2).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      5        |  MBZ  | IPVN  |  Conf-Sender  | Conf-Receiver |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  Number of Schedule Slots                     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Number of Packets                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Sender Port          |         Receiver Port         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Sender Address                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |              Sender Address (cont.) or MBZ (12 octets)        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Receiver Address                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |              Receiver Address (cont.) or MBZ (12 octets)      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        SID (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Padding Length                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Start Time (8 octets)                     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Timeout (8 octets)                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       Type-P Descriptor                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Octets to be reflected    |  Length of padding to reflect |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        MBZ (4 octets)                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       HMAC (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    * Both addresses have the same IP version, which IPVN carries. An IPv4 address takes the
      first 4 of its 16 octets; the other 12 are sent as zeros and ignored on receipt (RFC 4656
      §3.5). All-zero addresses mean "the addresses of the control connection" (RFC 5357 §3.5).
    * `start_time` is a raw 64-bit timestamp; `timeout` a raw NTP-format interval (2 s is
      `0x00000002_00000000`), see `twamp.timestamps.ntp_interval_from_ns`.
    * `type_p` is the raw Type-P Descriptor; see `dscp` and `phb_id`.
    * `octets_to_reflect` and `padding_to_reflect` are the RFC 6038 fields at 88-91, MBZ unless
      Reflect Octets mode (32) was selected.
    * Conf-Sender, Conf-Receiver, schedule slots, packets and SID MUST be zero; they are kept
      as received so that the Server can answer Accept 3.
    """

    sender_address: IPv4Address | IPv6Address
    receiver_address: IPv4Address | IPv6Address
    sender_port: int
    receiver_port: int
    padding_length: int
    start_time: int
    timeout: int
    type_p: int = 0
    conf_sender: int = 0
    conf_receiver: int = 0
    schedule_slots: int = 0
    num_packets: int = 0
    sid: bytes = bytes(SID_LEN)
    octets_to_reflect: int = 0
    padding_to_reflect: int = 0
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        for name in ("sender_address", "receiver_address"):
            if not isinstance(getattr(self, name), (IPv4Address, IPv6Address)):
                raise TypeError(f"{name} must be an IPv4Address or IPv6Address")
        if self.sender_address.version != self.receiver_address.version:
            raise _FieldError("receiver_address", "must be the IP version of sender_address")
        _check_uint("sender_port", self.sender_port, 16)
        _check_uint("receiver_port", self.receiver_port, 16)
        _check_uint("padding_length", self.padding_length, 32)
        _check_uint("start_time", self.start_time, 64)
        _check_uint("timeout", self.timeout, 64)
        _check_uint("type_p", self.type_p, 32)
        _check_uint("conf_sender", self.conf_sender, 8)
        _check_uint("conf_receiver", self.conf_receiver, 8)
        _check_uint("schedule_slots", self.schedule_slots, 32)
        _check_uint("num_packets", self.num_packets, 32)
        _check_octets("sid", self.sid, SID_LEN)
        _check_uint("octets_to_reflect", self.octets_to_reflect, 16)
        _check_uint("padding_to_reflect", self.padding_to_reflect, 16)
        _check_octets("hmac", self.hmac, HMAC_LEN)

    @property
    def ipvn(self) -> int:
        """4 or 6, the IPVN nibble of octet 1."""
        return self.sender_address.version

    @property
    def dscp(self) -> int | None:
        """The DSCP (octet 84) when Type-P's top two bits are 00, else None (RFC 4656 §3.5)."""
        if self.type_p >> 30 != 0:
            return None
        return self.type_p >> 24

    @property
    def phb_id(self) -> int | None:
        """The 16-bit PHB ID when Type-P's top two bits are 01 (RFC 2836), else None."""
        if self.type_p >> 30 != 1:
            return None
        return (self.type_p >> 14) & 0xFFFF


def _encode_address(address: IPv4Address | IPv6Address) -> bytes:
    if address.version == 4:
        return address.packed + _IPV4_PAD
    return address.packed


def encode_request_tw_session(msg: RequestTWSession) -> bytes:
    return _REQUEST_TW_SESSION.pack(
        Command.REQUEST_TW_SESSION,
        msg.ipvn,
        msg.conf_sender,
        msg.conf_receiver,
        msg.schedule_slots,
        msg.num_packets,
        msg.sender_port,
        msg.receiver_port,
        _encode_address(msg.sender_address),
        _encode_address(msg.receiver_address),
        msg.sid,
        msg.padding_length,
        msg.start_time,
        msg.timeout,
        msg.type_p,
        msg.octets_to_reflect,
        msg.padding_to_reflect,
        msg.hmac,
    )


def decode_request_tw_session(data: Buffer) -> RequestTWSession:
    raw = _exact(data, REQUEST_TW_SESSION_SIZE, "RequestTWSession")
    (
        command,
        ipvn_octet,
        conf_sender,
        conf_receiver,
        schedule_slots,
        num_packets,
        sender_port,
        receiver_port,
        sender,
        receiver,
        sid,
        padding_length,
        start_time,
        timeout,
        type_p,
        octets_to_reflect,
        padding_to_reflect,
        hmac,
    ) = _REQUEST_TW_SESSION.unpack(raw)
    _expect_command(command, Command.REQUEST_TW_SESSION, "RequestTWSession")
    # RFC 4656 §3.5: the high nibble of octet 1 is MBZ, so only the low one is read.
    ipvn = ipvn_octet & 0x0F
    sender_address: IPv4Address | IPv6Address
    receiver_address: IPv4Address | IPv6Address
    if ipvn == 4:
        sender_address, receiver_address = IPv4Address(sender[:4]), IPv4Address(receiver[:4])
    elif ipvn == 6:
        sender_address, receiver_address = IPv6Address(sender), IPv6Address(receiver)
    else:
        raise DecodeError(
            f"IPVN {ipvn} is neither 4 nor 6", message_type="RequestTWSession", field="ipvn"
        )
    return _build(
        RequestTWSession,
        "RequestTWSession",
        sender_address,
        receiver_address,
        sender_port,
        receiver_port,
        padding_length,
        start_time,
        timeout,
        type_p,
        conf_sender,
        conf_receiver,
        schedule_slots,
        num_packets,
        sid,
        octets_to_reflect,
        padding_to_reflect,
        hmac,
    )


@dataclass(frozen=True, slots=True)
class AcceptSession:
    """Accept-Session, server -> client, 48 octets (RFC 5357 §3.5, RFC 6038 §4.3).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    Accept     |      MBZ      |            Port               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        SID (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |       Reflected octets        |         Server octets         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        MBZ (8 octets)                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       HMAC (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    There is no command octet: the client reads this after a Request-TW-Session. With Accept 0
    `port` is the reflector's receive port (maybe an alternative to the one requested); otherwise
    it MUST be 0 (RFC 5357 §3.5, erratum 1587), which is the receiver's check to make.
    """

    accept: AcceptCode
    port: int
    sid: bytes
    reflected_octets: int = 0
    server_octets: int = 0
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accept", _accept(self.accept))
        _check_uint("port", self.port, 16)
        _check_octets("sid", self.sid, SID_LEN)
        _check_uint("reflected_octets", self.reflected_octets, 16)
        _check_uint("server_octets", self.server_octets, 16)
        _check_octets("hmac", self.hmac, HMAC_LEN)


def encode_accept_session(msg: AcceptSession) -> bytes:
    return _ACCEPT_SESSION.pack(
        msg.accept, msg.port, msg.sid, msg.reflected_octets, msg.server_octets, msg.hmac
    )


def decode_accept_session(data: Buffer) -> AcceptSession:
    raw = _exact(data, ACCEPT_SESSION_SIZE, "AcceptSession")
    accept, port, sid, reflected, server_octets, hmac = _ACCEPT_SESSION.unpack(raw)
    return _build(
        AcceptSession,
        "AcceptSession",
        AcceptCode.from_wire(accept),
        port,
        sid,
        reflected,
        server_octets,
        hmac,
    )


# --------------------------------------------------------------------------------------------
# Starting and stopping: Start-Sessions, Start-Ack, Stop-Sessions (RFC 4656 §3.7, RFC 5357 §3.8)


@dataclass(frozen=True, slots=True)
class StartSessions:
    """Start-Sessions, client -> server, 32 octets, command 2 (RFC 4656 §3.7, RFC 5357 §3.7).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      2        |                                               |
    +-+-+-+-+-+-+-+-+                                               +
    |                        MBZ (15 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       HMAC (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    Forbidden in Individual Session Control mode (RFC 5938 §3.1); that is the state machine's
    check.
    """

    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        _check_octets("hmac", self.hmac, HMAC_LEN)


def encode_start_sessions(msg: StartSessions) -> bytes:
    return _START_SESSIONS.pack(Command.START_SESSIONS, msg.hmac)


def decode_start_sessions(data: Buffer) -> StartSessions:
    raw = _exact(data, START_SESSIONS_SIZE, "StartSessions")
    command, hmac = _START_SESSIONS.unpack(raw)
    _expect_command(command, Command.START_SESSIONS, "StartSessions")
    return _build(StartSessions, "StartSessions", hmac)


@dataclass(frozen=True, slots=True)
class StartAck:
    """Start-Ack, server -> client, 32 octets, no command octet (RFC 4656 §3.7).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Accept    |                                               |
    +-+-+-+-+-+-+-+-+                                               +
    |                        MBZ (15 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       HMAC (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```
    """

    accept: AcceptCode
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accept", _accept(self.accept))
        _check_octets("hmac", self.hmac, HMAC_LEN)


def encode_start_ack(msg: StartAck) -> bytes:
    return _START_ACK.pack(msg.accept, msg.hmac)


def decode_start_ack(data: Buffer) -> StartAck:
    raw = _exact(data, START_ACK_SIZE, "StartAck")
    accept, hmac = _START_ACK.unpack(raw)
    return _build(StartAck, "StartAck", AcceptCode.from_wire(accept), hmac)


@dataclass(frozen=True, slots=True)
class StopSessions:
    """Stop-Sessions, client -> server, 32 octets, command 3 (RFC 5357 §3.8).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      3        |    Accept     |              MBZ              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Number of Sessions                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        MBZ (8 octets)                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       HMAC (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ```

    Unlike OWAMP's, TWAMP's Stop-Sessions carries no session descriptions, stops every started
    session and gets no reply. `num_sessions` MUST equal the sessions in progress; a mismatch is
    for the Server to judge (RFC 5357 §3.8), so any value decodes.
    """

    accept: AcceptCode
    num_sessions: int
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accept", _accept(self.accept))
        _check_uint("num_sessions", self.num_sessions, 32)
        _check_octets("hmac", self.hmac, HMAC_LEN)


def encode_stop_sessions(msg: StopSessions) -> bytes:
    return _STOP_SESSIONS.pack(Command.STOP_SESSIONS, msg.accept, msg.num_sessions, msg.hmac)


def decode_stop_sessions(data: Buffer) -> StopSessions:
    raw = _exact(data, STOP_SESSIONS_SIZE, "StopSessions")
    command, accept, num_sessions, hmac = _STOP_SESSIONS.unpack(raw)
    _expect_command(command, Command.STOP_SESSIONS, "StopSessions")
    return _build(StopSessions, "StopSessions", AcceptCode.from_wire(accept), num_sessions, hmac)


# --------------------------------------------------------------------------------------------
# Individual Session Control (RFC 5938 §3.2-3.5): 32 + 16 N octets, N >= 1


@dataclass(frozen=True, slots=True)
class StartNSessions:
    """Start-N-Sessions, client -> server, 32 + 16 N octets, command 7 (RFC 5938 §3.2).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    |      7        |                                               |
    +-+-+-+-+-+-+-+-+                                               +
    |                        MBZ (11 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Number of Sessions                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    |                    First SID (16 octets)                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    .                remaining SIDs (16 octets each)                .
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    |                       HMAC (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    ```

    Number of Sessions is `len(sids)`, 1 to `MAX_N_SESSIONS`. B marks 16-octet boundaries.
    """

    sids: tuple[bytes, ...]
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sids", _sids(self.sids))
        _check_octets("hmac", self.hmac, HMAC_LEN)


@dataclass(frozen=True, slots=True)
class StartNAck:
    """Start-N-Ack, server -> client, 32 + 16 N octets, command 8 (RFC 5938 §3.3).

    ```
     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    |      8        |     Accept    |            MBZ                |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        MBZ (8 octets)                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Number of Sessions                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    |                    First SID (16 octets)                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    .                remaining SIDs (16 octets each)                .
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    |                       HMAC (16 octets)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+B
    ```

    The Server may answer one Start-N-Sessions with several acks, one per Accept value.
    """

    accept: AcceptCode
    sids: tuple[bytes, ...]
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accept", _accept(self.accept))
        object.__setattr__(self, "sids", _sids(self.sids))
        _check_octets("hmac", self.hmac, HMAC_LEN)


@dataclass(frozen=True, slots=True)
class StopNSessions:
    """Stop-N-Sessions, client -> server, 32 + 16 N octets, command 9 (RFC 5938 §3.4).

    The layout is Start-N-Sessions' (see `StartNSessions`) with command number 9:
    `9 | MBZ (11) | Number of Sessions (4) | N x SID (16) | HMAC (16)`.
    """

    sids: tuple[bytes, ...]
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sids", _sids(self.sids))
        _check_octets("hmac", self.hmac, HMAC_LEN)


@dataclass(frozen=True, slots=True)
class StopNAck:
    """Stop-N-Ack, server -> client, 32 + 16 N octets, command 10 (RFC 5938 §3.5).

    The layout is Start-N-Ack's (see `StartNAck`) with command number 10:
    `10 | Accept | MBZ (2) | MBZ (8) | Number of Sessions (4) | N x SID (16) | HMAC (16)`.
    """

    accept: AcceptCode
    sids: tuple[bytes, ...]
    hmac: bytes = bytes(HMAC_LEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accept", _accept(self.accept))
        object.__setattr__(self, "sids", _sids(self.sids))
        _check_octets("hmac", self.hmac, HMAC_LEN)


_N_MESSAGE_TYPES: Final[dict[int, str]] = {
    Command.START_N_SESSIONS: "StartNSessions",
    Command.START_N_ACK: "StartNAck",
    Command.STOP_N_SESSIONS: "StopNSessions",
    Command.STOP_N_ACK: "StopNAck",
}


def _n_message_size(n: int, message_type: str) -> int:
    # RFC 5938 §3.2-3.5: Number of Sessions MUST be one or greater.
    if not 1 <= n <= MAX_N_SESSIONS:
        raise DecodeError(
            f"Number of Sessions {n} is not in 1-{MAX_N_SESSIONS}",
            message_type=message_type,
            field="num_sessions",
        )
    return N_MESSAGE_BASE_SIZE + SID_LEN * n


def _split_sids(raw: bytes | bytearray, n: int) -> tuple[bytes, ...]:
    return tuple(bytes(raw[i : i + SID_LEN]) for i in range(16, 16 + SID_LEN * n, SID_LEN))


def _decode_n_command(data: Buffer, want: Command) -> tuple[tuple[bytes, ...], bytes]:
    message_type = _N_MESSAGE_TYPES[want]
    raw = _octets(data)
    if len(raw) < AES_BLOCK:
        raise DecodeError(
            f"at least {N_MESSAGE_BASE_SIZE + SID_LEN} octets expected, got {len(raw)}",
            message_type=message_type,
            field="length",
        )
    command, n = _N_COMMAND_HEAD.unpack_from(raw)
    _expect_command(command, want, message_type)
    _exact(raw, _n_message_size(n, message_type), message_type)
    return _split_sids(raw, n), bytes(raw[-HMAC_LEN:])


def _decode_n_ack(data: Buffer, want: Command) -> tuple[AcceptCode, tuple[bytes, ...], bytes]:
    message_type = _N_MESSAGE_TYPES[want]
    raw = _octets(data)
    if len(raw) < AES_BLOCK:
        raise DecodeError(
            f"at least {N_MESSAGE_BASE_SIZE + SID_LEN} octets expected, got {len(raw)}",
            message_type=message_type,
            field="length",
        )
    command, accept, n = _N_ACK_HEAD.unpack_from(raw)
    _expect_command(command, want, message_type)
    _exact(raw, _n_message_size(n, message_type), message_type)
    return AcceptCode.from_wire(accept), _split_sids(raw, n), bytes(raw[-HMAC_LEN:])


def encode_start_n_sessions(msg: StartNSessions) -> bytes:
    head = _N_COMMAND_HEAD.pack(Command.START_N_SESSIONS, len(msg.sids))
    return head + b"".join(msg.sids) + msg.hmac


def decode_start_n_sessions(data: Buffer) -> StartNSessions:
    sids, hmac = _decode_n_command(data, Command.START_N_SESSIONS)
    return _build(StartNSessions, "StartNSessions", sids, hmac)


def encode_start_n_ack(msg: StartNAck) -> bytes:
    head = _N_ACK_HEAD.pack(Command.START_N_ACK, msg.accept, len(msg.sids))
    return head + b"".join(msg.sids) + msg.hmac


def decode_start_n_ack(data: Buffer) -> StartNAck:
    accept, sids, hmac = _decode_n_ack(data, Command.START_N_ACK)
    return _build(StartNAck, "StartNAck", accept, sids, hmac)


def encode_stop_n_sessions(msg: StopNSessions) -> bytes:
    head = _N_COMMAND_HEAD.pack(Command.STOP_N_SESSIONS, len(msg.sids))
    return head + b"".join(msg.sids) + msg.hmac


def decode_stop_n_sessions(data: Buffer) -> StopNSessions:
    sids, hmac = _decode_n_command(data, Command.STOP_N_SESSIONS)
    return _build(StopNSessions, "StopNSessions", sids, hmac)


def encode_stop_n_ack(msg: StopNAck) -> bytes:
    head = _N_ACK_HEAD.pack(Command.STOP_N_ACK, msg.accept, len(msg.sids))
    return head + b"".join(msg.sids) + msg.hmac


def decode_stop_n_ack(data: Buffer) -> StopNAck:
    accept, sids, hmac = _decode_n_ack(data, Command.STOP_N_ACK)
    return _build(StopNAck, "StopNAck", accept, sids, hmac)


# --------------------------------------------------------------------------------------------
# Framing (RFC 5357 §3): a message's length from its first 16 plaintext octets

ClientCommand = RequestTWSession | StartSessions | StopSessions | StartNSessions | StopNSessions

_FIXED_COMMAND_SIZES: Final[dict[int, int]] = {
    Command.START_SESSIONS: START_SESSIONS_SIZE,
    Command.STOP_SESSIONS: STOP_SESSIONS_SIZE,
    Command.REQUEST_TW_SESSION: REQUEST_TW_SESSION_SIZE,
}


def _first_block(first_block: Buffer) -> bytes | bytearray:
    raw = _octets(first_block)
    if len(raw) < AES_BLOCK:
        raise DecodeError(
            f"the first {AES_BLOCK} octets are needed, got {len(raw)}",
            message_type="Command",
            field="length",
        )
    return raw


def _unsupported(command: int) -> UnsupportedError:
    try:
        name = Command(command).name
    except ValueError:
        name = "UNASSIGNED"
    # RFC 5357 §3.5: an unexpected Command Number (Forbidden, Reserved, ...) gets Accept 3.
    return UnsupportedError(
        f"command number {command} ({name}) is not supported",
        message_type="Command",
        field="command",
    )


def client_command_length(first_block: Buffer) -> int:
    """Full length of a client command from its first 16 plaintext octets (more are ignored).

    Commands 2, 3 and 5 have fixed sizes; 7 and 9 are 32 + 16 N with N at octets 12-15.
    Anything else (0, 1, 4, 6, 8, 10, 11, unassigned) raises `UnsupportedError` (Accept 3,
    RFC 5357 §3.5); N = 0 or N > `MAX_N_SESSIONS` raises `DecodeError` (field "num_sessions").
    """
    raw = _first_block(first_block)
    command = raw[0]
    size = _FIXED_COMMAND_SIZES.get(command)
    if size is not None:
        return size
    if command in (Command.START_N_SESSIONS, Command.STOP_N_SESSIONS):
        _, n = _N_COMMAND_HEAD.unpack_from(raw)
        return _n_message_size(n, _N_MESSAGE_TYPES[command])
    raise _unsupported(command)


def n_message_length(first_block: Buffer) -> int:
    """Full length of an RFC 5938 message (commands 7-10) from its first 16 plaintext octets.

    The client reads Start-N-Ack (8) and Stop-N-Ack (10) with it. Another command number raises
    `DecodeError` (field "command"); N = 0 or N > `MAX_N_SESSIONS` raises `DecodeError` (field
    "num_sessions").
    """
    raw = _first_block(first_block)
    command = raw[0]
    if command not in _N_MESSAGE_TYPES:
        raise DecodeError(
            f"command number {command} is not an RFC 5938 message (7-10)",
            message_type="Command",
            field="command",
        )
    # N sits at octets 12-15 in both the command and the ack layouts.
    _, n = _N_COMMAND_HEAD.unpack_from(raw)
    return _n_message_size(n, _N_MESSAGE_TYPES[command])


_CLIENT_DECODERS: Final[dict[int, Callable[[Buffer], ClientCommand]]] = {
    Command.START_SESSIONS: decode_start_sessions,
    Command.STOP_SESSIONS: decode_stop_sessions,
    Command.REQUEST_TW_SESSION: decode_request_tw_session,
    Command.START_N_SESSIONS: decode_start_n_sessions,
    Command.STOP_N_SESSIONS: decode_stop_n_sessions,
}


def decode_client_command(data: Buffer) -> ClientCommand:
    """Decode a whole client command (the bytes `client_command_length` said to read), choosing
    the message by its Command Number. Unknown commands raise `UnsupportedError`."""
    raw = _octets(data)
    if not raw:
        raise DecodeError("empty message", message_type="Command", field="length")
    decoder = _CLIENT_DECODERS.get(raw[0])
    if decoder is None:
        raise _unsupported(raw[0])
    return decoder(raw)
