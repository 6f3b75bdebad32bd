"""Protocol numbers shared by every layer: ports, Modes bits, Accept values, Command numbers, sizes.

Values follow the IANA TWAMP registries (ports as renamed by RFC 8545), RFC 4656 §3.1 and §3.3,
RFC 5357 §3 and §4, and RFC 5938.
"""

from __future__ import annotations

import enum

# RFC 8545: TWAMP-Control 862/tcp, TWAMP-Test 862/udp (861 is OWAMP).
TWAMP_CONTROL_PORT = 862
TWAMP_TEST_PORT = 862

AES_BLOCK = 16
HMAC_LEN = 16  # HMAC-SHA1 (TWAMP) and HMAC-SHA-256 (STAMP) are both truncated to 16 octets
SID_LEN = 16
KEYID_LEN = 80

# RFC 5357 §6: a client SHOULD refuse a Server-Greeting Count above a configurable maximum.
MIN_COUNT = 1024
DEFAULT_MAX_COUNT = 32768
DEFAULT_COUNT = 2048  # owamp's default

# RFC 5357 §3.1 / §4.2: SERVWAIT and REFWAIT, both 900 s by default.
DEFAULT_SERVWAIT_NS = 900 * 1_000_000_000
DEFAULT_REFWAIT_NS = 900 * 1_000_000_000


class Mode(enum.IntFlag):
    """Modes bits of Server-Greeting and Set-Up-Response (RFC 4656 §3.1, RFC 5357 §3.1).

    A receiver ignores bits it does not know (RFC 5618 §3.1): decoders keep unknown bits in the
    value but `Mode.known()` drops them, and negotiation only ever looks at known bits.
    """

    UNAUTHENTICATED = 1
    AUTHENTICATED = 2
    ENCRYPTED = 4
    MIXED = 8  # RFC 5618: encrypted control, unauthenticated test
    INDIVIDUAL_SESSION_CONTROL = 16  # RFC 5938
    REFLECT_OCTETS = 32  # RFC 6038
    SYMMETRICAL_SIZE = 64  # RFC 6038
    IKEV2_DERIVED = 128  # RFC 7717
    DSCP_ECN = 256  # RFC 7750
    PTP_TIMESTAMPS = 512  # RFC 8186

    @classmethod
    def known(cls, value: int) -> Mode:
        return cls(value & _ALL_KNOWN)

    @property
    def security(self) -> Mode:
        """The security bits (0-3) only."""
        return Mode(self & SECURITY_MODES)


_ALL_KNOWN = 0x3FF

_MODE_WORDS = {
    Mode.UNAUTHENTICATED: "open",
    Mode.AUTHENTICATED: "authenticated",
    Mode.ENCRYPTED: "encrypted",
    Mode.MIXED: "mixed",
    Mode.INDIVIDUAL_SESSION_CONTROL: "individual-session-control",
    Mode.REFLECT_OCTETS: "reflect-octets",
    Mode.SYMMETRICAL_SIZE: "symmetrical-size",
    Mode.IKEV2_DERIVED: "ikev2-derived",
    Mode.DSCP_ECN: "dscp-ecn",
    Mode.PTP_TIMESTAMPS: "ptp-timestamps",
}


def mode_names(mode: int) -> str:
    """'open, authenticated, ... + individual-session-control, ...' for a Modes value.

    For logs and start-up lines, where `modes 383` says nothing to an operator; unknown bits
    are shown as a number.
    """
    value = Mode(mode & _ALL_KNOWN)
    security = [w for bit, w in _MODE_WORDS.items() if bit & SECURITY_MODES and value & bit]
    features = [w for bit, w in _MODE_WORDS.items() if not bit & SECURITY_MODES and value & bit]
    text = ", ".join(security) if security else "no security mode"
    if features:
        text += " + " + ", ".join(features)
    unknown = mode & ~_ALL_KNOWN
    if unknown:
        text += f" + unknown bits 0x{unknown:x}"
    return text


SECURITY_MODES = Mode.UNAUTHENTICATED | Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED
# Modes in which TWAMP-Control is encrypted and authenticated (RFC 5357 §3.4, RFC 5618).
SECURE_CONTROL_MODES = Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED


class AcceptCode(enum.IntEnum):
    """Accept values (RFC 4656 §3.3, RFC 7717). Unknown values are treated as FAILURE."""

    OK = 0
    FAILURE = 1
    INTERNAL_ERROR = 2
    NOT_SUPPORTED = 3
    PERMANENT_RESOURCE_LIMIT = 4
    TEMPORARY_RESOURCE_LIMIT = 5
    IKEV2_SA_NOT_FOUND = 6

    @classmethod
    def from_wire(cls, value: int) -> AcceptCode:
        # RFC 4656 §3.3: reserved values MUST be treated as 1.
        try:
            return cls(value)
        except ValueError:
            return cls.FAILURE


class Command(enum.IntEnum):
    """TWAMP-Control Command Numbers, octet 0 of client commands (RFC 5357 §3.4,
    RFC 5938 §3; IANA TWAMP-Control Command Numbers)."""

    RESERVED = 0
    FORBIDDEN = 1
    START_SESSIONS = 2
    STOP_SESSIONS = 3
    RESERVED_FETCH = 4
    REQUEST_TW_SESSION = 5
    EXPERIMENTATION = 6
    START_N_SESSIONS = 7
    START_N_ACK = 8
    STOP_N_SESSIONS = 9
    STOP_N_ACK = 10
    REQUEST_TW_MICRO_SESSIONS = 11


class TestMode(enum.Enum):
    """How TWAMP-Test packets of a session are protected (RFC 5357 §4.1.2, RFC 5618)."""

    __test__ = False  # not a pytest class

    OPEN = "open"  # modes 1 and 8
    AUTHENTICATED = "authenticated"  # mode 2
    ENCRYPTED = "encrypted"  # mode 4

    @classmethod
    def for_mode(cls, mode: Mode) -> TestMode:
        if mode & Mode.ENCRYPTED:
            return cls.ENCRYPTED
        if mode & Mode.AUTHENTICATED:
            return cls.AUTHENTICATED
        return cls.OPEN


# TWAMP-Test base sizes (RFC 5357 §4.1.2, §4.2.1): 112/64 as the figures sum, not the text's
# 104/56 left over from draft-05; owamp, RFC 7750's figure and STAMP agree, and RFC 6038
# erratum EID 6408 corrects the same table there.
SENDER_BASE_OPEN = 14
SENDER_BASE_AUTH = 48
REFLECTOR_BASE_OPEN = 41
REFLECTOR_BASE_AUTH = 112
STAMP_BASE_OPEN = 44
STAMP_BASE_AUTH = 112
SYMMETRIC_PADDING_OPEN = REFLECTOR_BASE_OPEN - SENDER_BASE_OPEN  # 27
SYMMETRIC_PADDING_AUTH = REFLECTOR_BASE_AUTH - SENDER_BASE_AUTH  # 64

# Sender TTL a reflector writes when it cannot read the received TTL (RFC 5357 §4.2.1).
DEFAULT_TTL = 255
