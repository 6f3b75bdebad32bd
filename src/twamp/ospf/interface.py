"""Per-interface data and the DR/BDR election (RFC 2328 §9, §9.4), sans-I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final, NamedTuple

from .events import InterfaceConfig, InterfaceState, NeighborState, NetworkType
from .neighbor import Neighbor
from .wire import LsaHeader

__all__ = ["Candidate", "Interface", "elect"]

NO_ROUTER: Final = IPv4Address(0)


class Candidate(NamedTuple):
    """One router as the election sees it: Hello fields, identified by interface address."""

    router_id: IPv4Address
    address: IPv4Address
    priority: int
    declared_dr: IPv4Address
    declared_bdr: IPv4Address


def _best(cands: Sequence[Candidate]) -> Candidate | None:
    # Highest priority, then highest Router ID (RFC 2328 §9.4 steps 2 and 3).
    return max(cands, key=lambda c: (c.priority, int(c.router_id)), default=None)


def _elect_once(cands: Sequence[Candidate]) -> tuple[IPv4Address, IPv4Address]:
    eligible = [c for c in cands if c.priority > 0]
    # Step 2: the BDR, among those not declaring themselves DR; self-declared BDRs first.
    not_dr = [c for c in eligible if c.declared_dr != c.address]
    bdr = _best([c for c in not_dr if c.declared_bdr == c.address]) or _best(not_dr)
    # Step 3: the DR, among those declaring themselves DR; else the new BDR.
    dr = _best([c for c in eligible if c.declared_dr == c.address]) or bdr
    return (dr.address if dr else NO_ROUTER, bdr.address if bdr else NO_ROUTER)


def elect(me: Candidate, others: Sequence[Candidate]) -> tuple[IPv4Address, IPv4Address]:
    """(DR, BDR) interface addresses after the election (RFC 2328 §9.4).

    `others` are the neighbours in state 2-Way or above. Step 4: if we newly became or ceased
    to be DR or BDR, the steps are repeated once with our new declaration, so that we never
    declare ourselves both, and a router that just became DR is not also elected BDR.
    """
    dr, bdr = _elect_once([me, *others])
    was = (me.declared_dr == me.address, me.declared_bdr == me.address)
    now = (dr == me.address, bdr == me.address)
    if was != now:
        me2 = me._replace(declared_dr=dr, declared_bdr=bdr)
        dr, bdr = _elect_once([me2, *others])
    return dr, bdr


@dataclass(slots=True)
class Interface:
    """What the router keeps per interface (RFC 2328 §9)."""

    config: InterfaceConfig
    state: InterfaceState = InterfaceState.DOWN
    dr: IPv4Address = NO_ROUTER
    bdr: IPv4Address = NO_ROUTER
    silent: bool = False  # stop_hellos(): neither sends nor listens, carrier up
    flood: bool = True  # set_flooding(): False floods nothing out of it (RFC 4061 §5.2)
    hello_deadline: int | None = None
    wait_deadline: int | None = None
    neighbors: dict[IPv4Address, Neighbor] = field(default_factory=dict)
    pending_acks: list[LsaHeader] = field(default_factory=list)
    ack_deadline: int | None = None
    own_rid_seen: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def address(self) -> IPv4Address:
        return self.config.address.ip

    @property
    def broadcast(self) -> bool:
        return self.config.network_type is NetworkType.BROADCAST

    @property
    def is_dr_or_bdr(self) -> bool:
        return self.state in (InterfaceState.DR, InterfaceState.BACKUP)

    def adjacency_wanted(self, nbr: Neighbor) -> bool:
        """Should an adjacency form with this neighbour? (RFC 2328 §10.4)"""
        if not self.broadcast:
            return True
        return self.is_dr_or_bdr or nbr.address in (self.dr, self.bdr)

    def me(self, router_id: IPv4Address) -> Candidate:
        return Candidate(router_id, self.address, self.config.priority, self.dr, self.bdr)

    def candidates(self) -> list[Candidate]:
        return [
            Candidate(n.router_id, n.address, n.priority, n.dr, n.bdr)
            for n in self.neighbors.values()
            if n.state >= NeighborState.TWO_WAY
        ]
