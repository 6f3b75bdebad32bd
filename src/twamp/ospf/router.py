"""An emulated OSPFv2 router, sans-I/O: bytes and `now_ns` in, events and packets out.

This is the speaker RFC 4061 needs (research note §3): Hellos, DR/BDR election on broadcast
links (RFC 2328 §9.4), the neighbour state machine with master/slave negotiation in both roles
(§10), DBDs sized from the interface MTU, pipelined LSRs, an LSDB with flooding, retransmit lists
and immediate acks (§13), §13.4 handling of self-originated LSAs left by an earlier run, and
MinLSArrival spacing of our re-originations.

Public API (additive changes only from here on)
-----------------------------------------------
``EmulatedRouter(router_id, interfaces, *, now_ns, min_ls_interval_ns=NS,
originate_router_lsa=True)``
    `interfaces` is a sequence of `InterfaceConfig` (events.py), all in one area. The router
    starts with every interface up and sending Hellos (the first at `now_ns`).

Driving it (every call returns the `Event`s it caused, in order):
    ``receive(ifname, src, dst, data, now_ns)``  one OSPF packet as received on `ifname` (IP
        header stripped), from IPv4 `src` to `dst` (224.0.0.5, 224.0.0.6 or our address).
        Never raises for bad input: malformed packets give `MalformedPacket`, unexpected ones
        `PacketRejected`; both are counted in `counters`.
    ``tick(now_ns)``  run every timer due at `now_ns` (Hello, inactivity, retransmission,
        Wait, delayed originations, delayed acks). Call it at `next_deadline()`.
    ``next_deadline() -> int | None``  the earliest `now_ns` at which `tick` has work.
    ``take_transmits() -> list[Transmit]``  the packets queued since the last call, in order.

Acting on it:
    ``originate(specs, now_ns)``  install and flood LSAs (`LsaSpec`); each gets the next
        sequence number for its key (InitialSequenceNumber the first time, or the DUT's + 1
        after §13.4). A re-origination within `min_ls_interval_ns` of the previous instance
        of the same key is held back and sent when the interval has passed (only the latest
        content is sent): BIRD ignores faster ones (MinLSArrival, RFC 2328 §13 step 5a).
    ``flush(keys, now_ns)``  premature aging (§14.1): our LSAs set to MaxAge and flooded.
    ``interface_down(ifname, now_ns)`` / ``interface_up(ifname, now_ns)``  carrier loss and
        return (InterfaceDown: neighbours dropped, router-LSA re-originated).
    ``stop_hellos(ifname, now_ns)`` / ``start_hellos(ifname, now_ns)``  RFC 4061 §6.8 "layer-3
        link down": we go silent on the link (no Hellos, and no answers to anything) while the
        carrier stays up; the DUT's dead interval then expires.
    ``set_cost(ifname, cost, now_ns)``  change an interface cost and re-originate the router-LSA.

Reading it:
    ``router_id``, ``interface_names``, ``interface_state(ifname)``, ``dr(ifname)``,
    ``bdr(ifname)``, ``neighbors(ifname=None) -> list[NeighborInfo]``,
    ``neighbor_state(ifname, neighbor_id) -> NeighborState | None``,
    ``lsdb`` (read-only mapping `LsaKey -> LsdbEntry`), ``lsa(key) -> LsdbEntry | None``,
    ``retransmit_count(ifname=None) -> int`` (LSAs awaiting acks, summed over neighbours),
    ``counters`` (a dict of named counts: packets in/out per type, malformed, rejected per
    reason, retransmissions, lsas_new/duplicate/older ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address

from .events import (
    NS,
    Event,
    InterfaceConfig,
    InterfaceState,
    LsaSpec,
    NeighborInfo,
    NeighborState,
    Transmit,
)
from .lsdb import LsdbEntry
from .wire import LsaKey

__all__ = ["EmulatedRouter"]


class EmulatedRouter:
    """One emulated OSPFv2 router with one or more interfaces in one area (see module doc)."""

    def __init__(
        self,
        router_id: IPv4Address | str,
        interfaces: Sequence[InterfaceConfig],
        *,
        now_ns: int,
        min_ls_interval_ns: int = NS,
        originate_router_lsa: bool = True,
    ) -> None:
        raise NotImplementedError

    # -- driving -------------------------------------------------------------------------------

    def receive(
        self, ifname: str, src: IPv4Address, dst: IPv4Address, data: bytes, now_ns: int
    ) -> list[Event]:
        """Process one received OSPF packet (without IP header)."""
        raise NotImplementedError

    def tick(self, now_ns: int) -> list[Event]:
        """Run every timer due at `now_ns`."""
        raise NotImplementedError

    def next_deadline(self) -> int | None:
        """The earliest time `tick` has work, or None."""
        raise NotImplementedError

    def take_transmits(self) -> list[Transmit]:
        """Packets queued since the last call, oldest first."""
        raise NotImplementedError

    # -- acting --------------------------------------------------------------------------------

    def originate(self, specs: Iterable[LsaSpec], now_ns: int) -> list[Event]:
        """Install and flood new instances of these LSAs (see module doc for sequencing)."""
        raise NotImplementedError

    def flush(self, keys: Iterable[LsaKey], now_ns: int) -> list[Event]:
        """Premature aging of our own LSAs (RFC 2328 §14.1)."""
        raise NotImplementedError

    def interface_down(self, ifname: str, now_ns: int) -> list[Event]:
        raise NotImplementedError

    def interface_up(self, ifname: str, now_ns: int) -> list[Event]:
        raise NotImplementedError

    def stop_hellos(self, ifname: str, now_ns: int) -> list[Event]:
        raise NotImplementedError

    def start_hellos(self, ifname: str, now_ns: int) -> list[Event]:
        raise NotImplementedError

    def set_cost(self, ifname: str, cost: int, now_ns: int) -> list[Event]:
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------------

    @property
    def router_id(self) -> IPv4Address:
        raise NotImplementedError

    @property
    def interface_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def interface_state(self, ifname: str) -> InterfaceState:
        raise NotImplementedError

    def dr(self, ifname: str) -> IPv4Address:
        raise NotImplementedError

    def bdr(self, ifname: str) -> IPv4Address:
        raise NotImplementedError

    def neighbors(self, ifname: str | None = None) -> list[NeighborInfo]:
        raise NotImplementedError

    def neighbor_state(self, ifname: str, neighbor_id: IPv4Address) -> NeighborState | None:
        raise NotImplementedError

    @property
    def lsdb(self) -> Mapping[LsaKey, LsdbEntry]:
        raise NotImplementedError

    def lsa(self, key: LsaKey) -> LsdbEntry | None:
        raise NotImplementedError

    def retransmit_count(self, ifname: str | None = None) -> int:
        raise NotImplementedError

    @property
    def counters(self) -> Mapping[str, int]:
        raise NotImplementedError
