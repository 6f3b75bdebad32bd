"""Per-neighbour data of the emulated router (RFC 2328 §10: the neighbour data structure).

The transitions themselves live in `router.py`, which sees the interface, the LSDB and the
other neighbours as a transition needs them; this module holds what one neighbour remembers and
the list operations that keep its invariants.

The retransmission list is an insertion-ordered dict `key -> (header sent, sent_ns)`. An entry
is moved to the end whenever it is (re)sent, so the first entry is always the one sent longest
ago and the list's deadline is `first sent_ns + RxmtInterval`. A burst of LSAs added 4.9 s after
an earlier one is therefore not retransmitted 0.1 s later: each LSA waits a full RxmtInterval
(research note §3: spurious retransmissions against BIRD's ~1 s delayed acks).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from .events import NeighborState
from .wire import DbdFlags, LsaHeader, LsaKey, Options

__all__ = ["Neighbor"]


@dataclass(slots=True)
class Neighbor:
    """What we know about one neighbour on one interface."""

    router_id: IPv4Address
    address: IPv4Address
    state: NeighborState = NeighborState.DOWN
    since_ns: int = 0
    priority: int = 0
    dr: IPv4Address = IPv4Address(0)  # noqa: RUF009 - immutable value
    bdr: IPv4Address = IPv4Address(0)  # noqa: RUF009 - immutable value
    options: Options = Options(0)  # noqa: RUF009 - immutable value
    hello_seen: bool = False
    inactivity_deadline: int | None = None
    # Database exchange (RFC 2328 §10.6, §10.8)
    we_are_master: bool = True
    dd_seq: int = 0
    our_more: bool = True
    last_rx_dbd: tuple[DbdFlags, Options, int] | None = None
    last_tx_dbd: bytes | None = None
    last_tx_keys: tuple[LsaKey, ...] = ()
    last_tx_seqs: tuple[int, ...] = ()
    dbd_deadline: int | None = None
    db_summary: deque[LsaHeader] = field(default_factory=deque)
    dbd_received: int = 0
    mtu_rejects: int = 0
    peer_mtu: int | None = None
    exstart_since_ns: int | None = None
    problem_reported: bool = False
    # Link state requests: the request list, and the keys of the one LSR in flight
    requests: dict[LsaKey, LsaHeader] = field(default_factory=dict)
    lsr_outstanding: tuple[LsaKey, ...] = ()
    lsr_deadline: int | None = None
    # Flooding: LSAs awaiting an ack (see module doc for the ordering invariant)
    retransmit: dict[LsaKey, tuple[LsaHeader, int]] = field(default_factory=dict)

    def clear_lists(self) -> None:
        """Empty the three lists (RFC 2328 §10.3, events that fall back to ExStart/Init/Down)."""
        self.db_summary.clear()
        self.requests.clear()
        self.retransmit.clear()
        self.lsr_outstanding = ()
        self.lsr_deadline = None
        self.dbd_deadline = None
        self.last_tx_dbd = None
        self.last_rx_dbd = None

    def add_retransmit(self, header: LsaHeader, now_ns: int) -> None:
        self.retransmit.pop(header.key, None)
        self.retransmit[header.key] = (header, now_ns)

    def retransmit_deadline(self, rxmt_ns: int) -> int | None:
        for _header, sent_ns in self.retransmit.values():
            return sent_ns + rxmt_ns
        return None

    def due_retransmits(self, now_ns: int, rxmt_ns: int) -> list[LsaHeader]:
        """Entries whose RxmtInterval has passed, oldest first; they move to the end as re-sent."""
        due: list[LsaHeader] = []
        for header, sent_ns in self.retransmit.values():
            if sent_ns + rxmt_ns > now_ns:
                break
            due.append(header)
        for header in due:
            self.add_retransmit(header, now_ns)
        return due
