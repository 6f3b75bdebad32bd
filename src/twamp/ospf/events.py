"""What the emulated OSPF router is configured with and what it reports (sans-I/O).

`InterfaceConfig` configures one interface; the router reports `Event`s (returned by every call
that takes `now_ns`) and queues `Transmit`s (collected with `take_transmits()`). All times are
integer nanoseconds on the caller's clock; intervals that are seconds on the wire stay seconds.
Everything here is a frozen dataclass, so the I/O layer can log it as is (`dataclasses.asdict`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Final

from .wire import LsaBody, LsaHeader, LsaKey, Options, PacketType

__all__ = [
    "NS",
    "AdjacencyProblem",
    "DrChange",
    "Event",
    "InterfaceConfig",
    "InterfaceState",
    "InterfaceStateChange",
    "LsaAckReceived",
    "LsaFlushed",
    "LsaOriginated",
    "LsaReceived",
    "LsaSpec",
    "LsaStatus",
    "MalformedPacket",
    "NeighborInfo",
    "NeighborState",
    "NeighborStateChange",
    "NetworkType",
    "PacketRejected",
    "RejectReason",
    "Transmit",
]

NS: Final = 1_000_000_000
_BACKBONE: Final = IPv4Address(0)


def _interface(value: object) -> IPv4Interface:
    return value if isinstance(value, IPv4Interface) else IPv4Interface(str(value))


def _address(value: object) -> IPv4Address:
    return value if isinstance(value, IPv4Address) else IPv4Address(str(value))


class NetworkType(enum.Enum):
    """The interface types the emulated router speaks on (RFC 2328 §1.2)."""

    POINT_TO_POINT = "point-to-point"
    BROADCAST = "broadcast"


class InterfaceState(enum.IntEnum):
    """Interface states (RFC 2328 §9.1); Loopback is not emulated."""

    DOWN = 0
    WAITING = 2
    POINT_TO_POINT = 3
    DR_OTHER = 4
    BACKUP = 5
    DR = 6


class NeighborState(enum.IntEnum):
    """Neighbour states (RFC 2328 §10.1), ordered so that `state >= EXCHANGE` reads naturally.

    Attempt (NBMA only) is not used.
    """

    DOWN = 0
    INIT = 2
    TWO_WAY = 3
    EXSTART = 4
    EXCHANGE = 5
    LOADING = 6
    FULL = 7


@dataclass(frozen=True, slots=True)
class InterfaceConfig:
    """One interface of the emulated router.

    `address` is our address with the link's prefix (the Hello's Network Mask comes from it;
    on point-to-point links it is not checked, RFC 2328 §10.5). `priority` 0 makes us DROther
    forever (RFC 2328 §9.4); on broadcast links a DROther sends its updates and acks to
    AllDRouters 224.0.0.6. `mtu` is the interface MTU: DBDs announce it and every packet stays
    within it (raw sockets would fragment). `rxmt_interval_ns` defaults to 5 s because at 1 s
    BIRD's ~1 s delayed acks cause spurious retransmissions (research note §3).
    `exstart_problem_after` reports an `AdjacencyProblem` when a neighbour stays in ExStart for
    that many retransmit intervals (MTU mismatch or router-ID clash, note §3).
    `ack_delay_ns` 0 acks each received LSA at once (in one LSAck per received LSU); a positive
    value gathers acks for up to that long (RFC 2328 §13.5 delayed acks).
    """

    name: str
    address: IPv4Interface
    network_type: NetworkType = NetworkType.POINT_TO_POINT
    area: IPv4Address = _BACKBONE
    mtu: int = 1500
    cost: int = 10
    priority: int = 1
    hello_interval_s: int = 10
    dead_interval_s: int = 40
    rxmt_interval_ns: int = 5 * NS
    inf_trans_delay_s: int = 1
    options: Options = Options.E
    exstart_problem_after: int = 3
    ack_delay_ns: int = 0
    advertise_stub: bool = True

    def __post_init__(self) -> None:
        # Accept "192.0.2.2/30" and "0.0.0.0" as well, for configs read from text.
        object.__setattr__(self, "address", _interface(self.address))
        object.__setattr__(self, "area", _address(self.area))
        if not 68 <= self.mtu <= 0xFFFF:
            raise ValueError(f"{self.name}: MTU {self.mtu} is not in 68-65535")
        if not 1 <= self.cost <= 0xFFFF:
            raise ValueError(f"{self.name}: cost {self.cost} is not in 1-65535")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"{self.name}: priority {self.priority} is not in 0-255")
        if not 1 <= self.hello_interval_s <= 0xFFFF:
            raise ValueError(f"{self.name}: hello interval {self.hello_interval_s} s")
        if not self.hello_interval_s < self.dead_interval_s <= 0xFFFFFFFF:
            raise ValueError(
                f"{self.name}: dead interval {self.dead_interval_s} s must exceed the hello"
                f" interval {self.hello_interval_s} s"
            )
        if self.rxmt_interval_ns <= 0:
            raise ValueError(f"{self.name}: retransmit interval must be positive")
        if self.ack_delay_ns < 0:
            raise ValueError(f"{self.name}: ack delay must not be negative")


@dataclass(frozen=True, slots=True)
class LsaSpec:
    """An LSA to originate, without sequence number, age or checksum (the router picks them).

    `advertising_router` may be another router ID than ours: LSAs of an emulated topology behind
    the router. Every advertising router used here counts as self-originated (RFC 2328 §13.4).
    """

    ls_type: int
    link_state_id: IPv4Address
    advertising_router: IPv4Address
    body: LsaBody
    options: Options = Options.E

    @property
    def key(self) -> LsaKey:
        return LsaKey(self.ls_type, self.link_state_id, self.advertising_router)


@dataclass(frozen=True, slots=True)
class Transmit:
    """A packet to send: on `ifname` to `destination` (224.0.0.5, 224.0.0.6 or a unicast).

    `packet_type` and the LSA references say what it carries, so the I/O layer can log a send
    stamp per LSA: `keys` are the LSAs in an LSU, acked in an LSAck, described in a DBD or
    requested in an LSR; `seqs` their sequence numbers in the same order (empty for an LSR).
    `retransmission` marks a packet resent on the retransmit timer. `neighbor_id` is the
    neighbour it is meant for when there is one (unicast, or an adjacency's DBD/LSR).
    """

    t_ns: int
    ifname: str
    destination: IPv4Address
    data: bytes
    packet_type: PacketType
    keys: tuple[LsaKey, ...] = ()
    seqs: tuple[int, ...] = ()
    retransmission: bool = False
    neighbor_id: IPv4Address | None = None


# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class Event:
    """Base of everything the router reports: when (the `now_ns` it was given) and where."""

    t_ns: int
    ifname: str


@dataclass(frozen=True, slots=True)
class InterfaceStateChange(Event):
    old: InterfaceState
    new: InterfaceState
    dr: IPv4Address
    bdr: IPv4Address


@dataclass(frozen=True, slots=True)
class NeighborStateChange(Event):
    """A neighbour's state moved (RFC 2328 §10.3); `cause` names the event, e.g. "1-WayReceived"."""

    neighbor_id: IPv4Address
    address: IPv4Address
    old: NeighborState
    new: NeighborState
    cause: str


@dataclass(frozen=True, slots=True)
class DrChange(Event):
    """A neighbour's Hello declared a different DR or BDR than its previous Hello (or its first).

    RFC 4061 §6.4-6.6 time from these: "first DUT Hello listing a DR".
    """

    neighbor_id: IPv4Address
    dr: IPv4Address
    bdr: IPv4Address
    previous_dr: IPv4Address | None
    previous_bdr: IPv4Address | None


class LsaStatus(enum.Enum):
    """What RFC 2328 §13 made of one received LSA."""

    NEW = "new"  # installed (step 5); acked, flooded on
    DUPLICATE = "duplicate"  # same instance (step 7): acked (direct, or implied)
    OLDER = "older"  # ours is newer (step 8): our copy sent back
    SELF_ORIGINATED = "self-originated"  # §13.4: newer copy of one of ours: re-originated/flushed
    MAXAGE_UNKNOWN = "maxage-unknown"  # step 4: MaxAge, not in our LSDB: acked, discarded
    BAD_CHECKSUM = "bad-checksum"  # step 1: discarded, not acked
    SEQ_WRAPPING = "seq-wrapping"  # step 5(a)-like: MaxSequenceNumber held back until flushed


@dataclass(frozen=True, slots=True)
class LsaReceived(Event):
    """One LSA of a received Link State Update (one event per LSA, in packet order)."""

    neighbor_id: IPv4Address
    key: LsaKey
    seq: int
    age: int
    checksum: int
    status: LsaStatus
    implied_ack: bool = False  # it acknowledged an LSA on our retransmit list (§13 step 7a)


@dataclass(frozen=True, slots=True)
class LsaAckReceived(Event):
    """A Link State Acknowledgment: every header it carried, and which retransmit entries it
    cleared (an ack for another instance than the one we sent clears nothing, §13.7)."""

    neighbor_id: IPv4Address
    headers: tuple[LsaHeader, ...]
    cleared: tuple[LsaKey, ...]


@dataclass(frozen=True, slots=True)
class LsaOriginated(Event):
    """We installed and flooded a new instance of one of our LSAs (ifname is "")."""

    key: LsaKey
    seq: int
    reason: str  # "originate", "full" (router-LSA on adjacency change), "13.4", "refresh"


@dataclass(frozen=True, slots=True)
class LsaFlushed(Event):
    """We set one of our LSAs to MaxAge and flooded it (premature aging, RFC 2328 §14.1)."""

    key: LsaKey
    seq: int
    reason: str


class RejectReason(enum.Enum):
    """Why a well-formed packet was dropped (RFC 2328 §8.2, §10.5, §10.6, §10.8)."""

    WRONG_AREA = "wrong-area"
    AUTH = "authentication"
    HELLO_MISMATCH = "hello-mismatch"  # mask (broadcast), hello or dead interval, E option
    OWN_ROUTER_ID = "own-router-id"  # a packet carrying our own Router ID: an RID clash
    UNKNOWN_NEIGHBOR = "unknown-neighbor"
    NEIGHBOR_STATE = "neighbor-state"  # a DBD/LSR/LSU/LSAck the neighbour's state does not allow
    MTU_MISMATCH = "mtu-mismatch"  # DBD announcing an MTU above ours (§10.6): stays in ExStart
    DD_SEQUENCE = "dd-sequence"  # SeqNumberMismatch
    BAD_LS_REQUEST = "bad-ls-request"
    INTERFACE_DOWN = "interface-down"
    DESTINATION = "destination"  # AllDRouters while we are DROther, or another unicast


@dataclass(frozen=True, slots=True)
class MalformedPacket(Event):
    """Bytes that did not decode (or failed the checksum); counted, never raised."""

    source: IPv4Address
    reason: str


@dataclass(frozen=True, slots=True)
class PacketRejected(Event):
    source: IPv4Address
    router_id: IPv4Address
    packet_type: PacketType
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class AdjacencyProblem(Event):
    """A neighbour stuck in ExStart past `exstart_problem_after` retransmit intervals.

    `likely_cause` is "mtu" (it announced a larger MTU, or we never heard its DBDs while it
    kept its Hellos), "router-id" (it uses our Router ID) or "no-answer"; `detail` says why in
    one sentence with the fix.
    """

    neighbor_id: IPv4Address
    state: NeighborState
    likely_cause: str
    detail: str


@dataclass(frozen=True, slots=True)
class NeighborInfo:
    """A snapshot of one neighbour, for reports and tests."""

    ifname: str
    router_id: IPv4Address
    address: IPv4Address
    state: NeighborState
    priority: int
    dr: IPv4Address
    bdr: IPv4Address
    master: bool  # True when the neighbour is the DBD master
    retransmit_count: int
    request_count: int
    db_summary_count: int
    since_ns: int  # when it entered `state`
