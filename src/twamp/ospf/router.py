"""An emulated OSPFv2 router, sans-I/O: bytes and `now_ns` in, events and packets out.

This is the speaker RFC 4061 needs (research note §3): Hellos, DR/BDR election on broadcast
links (RFC 2328 §9.4), the neighbour state machine with master/slave negotiation in both roles
(§10), DBDs sized from the interface MTU, pipelined LSRs, an LSDB with flooding, retransmit lists
and immediate acks (§13), §13.4 handling of self-originated LSAs left by an earlier run, and
MinLSArrival spacing of our re-originations.

Public API (additive changes only from here on)
-----------------------------------------------
``EmulatedRouter(router_id, interfaces, *, now_ns, min_ls_interval_ns=NS,
originate_router_lsa=True, extra_links=(), owned_router_ids=())``
    `interfaces` is a sequence of `InterfaceConfig` (events.py), all in one area (ValueError
    otherwise, and for repeated names). Every interface starts up; the first `tick(now_ns)`
    sends the first Hellos and originates our router-LSA. `extra_links` are `RouterLink`s our
    router-LSA carries besides the interfaces (attachment of an emulated topology, see
    topology.py). `owned_router_ids` are advertising routers whose LSAs count as ours for
    RFC 2328 §13.4 even before we originate any (emulated routers of an earlier run).
    `originate_router_lsa=False` leaves router-LSA origination to the caller.

Driving it (every call returns the `Event`s it caused, in order):
    ``receive(ifname, src, dst, data, now_ns)``  one OSPF packet as received on `ifname` (IP
        header stripped), from IPv4 `src` to `dst` (224.0.0.5, 224.0.0.6 or our address).
        Never raises for bad input: malformed packets give `MalformedPacket`, unexpected ones
        `PacketRejected` (+ `AdjacencyProblem` for a Router-ID clash); all are counted in
        `counters`. An unknown `ifname` is a caller error (ValueError).
    ``tick(now_ns)``  run every timer due at `now_ns` (Hello, Wait, inactivity, DBD/LSR/LSU
        retransmission, delayed acks, MinLSInterval-deferred originations, the ExStart
        diagnosis). Call it at `next_deadline()`; calling it early or late is harmless.
    ``next_deadline() -> int | None``  the earliest `now_ns` at which `tick` has work.
    ``take_transmits() -> list[Transmit]``  the packets queued since the last call, in order.
        `Transmit.destination` is already right for the link: AllSPFRouters for everything on
        point-to-point links (RFC 2328 §8.1); on broadcast links Hellos to AllSPFRouters, DBDs,
        LSRs, LSR answers and retransmissions unicast to the neighbour, floods and acks to
        AllDRouters as DROther and to AllSPFRouters as DR/BDR. Packets never exceed the MTU.

Acting on it:
    ``originate(specs, now_ns)``  install and flood LSAs (`LsaSpec`); each gets the next
        sequence number for its key (InitialSequenceNumber the first time, or the DUT's + 1
        after §13.4). A re-origination within `min_ls_interval_ns` of the previous instance
        of the same key is held back and sent when the interval has passed (only the latest
        content is sent): BIRD ignores faster ones (MinLSArrival, RFC 2328 §13 step 5a).
        Originating AS-external-LSAs under our own Router ID sets the E bit of our router-LSA.
        Every LSA we originate is refreshed (same content, next sequence number) when it is
        LSRefreshTime (30 min) old, reported as `LsaOriginated(reason="refresh")`.
    ``flush(keys, now_ns)``  premature aging (§14.1): our LSAs set to MaxAge and flooded; they
        leave our database once acknowledged. ValueError for keys we do not originate.
    ``interface_down(ifname, now_ns)`` / ``interface_up(ifname, now_ns)``  carrier loss and
        return (InterfaceDown: neighbours dropped, router-LSA re-originated on the others).
    ``stop_hellos(ifname, now_ns)`` / ``start_hellos(ifname, now_ns)``  RFC 4061 §6.8 "layer-3
        link down": we go silent on the link (nothing sent, everything received ignored, our
        view of its neighbours frozen) while the carrier stays up; the DUT's dead interval then
        expires. `start_hellos` sends a Hello at once; the DUT, having dropped us, restarts the
        exchange (it reaches Full again one RxmtInterval later, see the tests).
    ``set_cost(ifname, cost, now_ns)``  change an interface cost; router-LSA re-originated.
    ``set_flooding(ifname, enabled, now_ns)``  flood out of `ifname` or not (RFC 4061 §5.2:
        the collector "floods nothing to the DUT"); acks and requests are unchanged.
    ``set_extra_links(links, now_ns)``  replace `extra_links`; router-LSA re-originated.

Reading it:
    ``router_id``, ``area``, ``interface_names``, ``interface_config(ifname)``,
    ``interface_state(ifname)``, ``dr(ifname)``, ``bdr(ifname)`` (interface addresses,
    0.0.0.0 for none), ``neighbors(ifname=None) -> list[NeighborInfo]``,
    ``neighbor_state(ifname, neighbor_id) -> NeighborState | None``,
    ``lsdb`` (read-only mapping `LsaKey -> LsdbEntry`; `entry.age(now_ns)` is the current
    age), ``lsa(key) -> LsdbEntry | None``, ``retransmit_count(ifname=None) -> int`` (LSAs
    awaiting acks, summed over neighbours), ``awaiting_ack(key) -> int | None`` (when we last
    sent `key` to a neighbour yet to acknowledge it), ``counters`` (a snapshot dict: rx_<type>,
    tx_<type>, malformed, rejected_<reason>, lsa_<status>, neighbor_<state>, originated,
    originations_deferred, flushed, acks_cleared, retransmitted_lsas/_dbds/_lsrs,
    dbd_duplicate, exchange_restart_<cause> ...).

Not implemented (deliberately, for a benchmark speaker): authentication (null only),
NBMA/point-to-multipoint/virtual links, more than one area, natural aging of other
routers' LSAs to MaxAge (they refresh theirs every 30 min; ours are refreshed), MinLSArrival on
*received* LSAs (§13 step 5a: we observe the DUT, we do not rate-limit it), and the
sequence-number wrap (§12.1.6; counted as originations_seq_exhausted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from .events import (
    NS,
    AdjacencyProblem,
    DrChange,
    Event,
    InterfaceConfig,
    InterfaceState,
    InterfaceStateChange,
    LsaAckReceived,
    LsaFlushed,
    LsaOriginated,
    LsaReceived,
    LsaSpec,
    LsaStatus,
    MalformedPacket,
    NeighborInfo,
    NeighborState,
    NeighborStateChange,
    PacketRejected,
    RejectReason,
    Transmit,
)
from .interface import NO_ROUTER, Interface, elect
from .lsdb import Lsdb, LsdbEntry
from .neighbor import Neighbor
from .wire import (
    ALL_D_ROUTERS,
    ALL_SPF_ROUTERS,
    HEADER_SIZE,
    INITIAL_SEQUENCE_NUMBER,
    IP_HEADER_SIZE,
    LS_REFRESH_TIME,
    LSA_HEADER_SIZE,
    MAX_AGE,
    MAX_SEQUENCE_NUMBER,
    AuType,
    DatabaseDescription,
    DbdFlags,
    Hello,
    LinkStateAck,
    LinkStateRequest,
    LinkStateUpdate,
    LinkType,
    Lsa,
    LsaHeader,
    LsaKey,
    LsaType,
    NetworkLsaBody,
    Options,
    OspfDecodeError,
    OspfHeader,
    PacketType,
    RouterLink,
    RouterLsaBody,
    RouterLsaFlags,
    compare_lsa,
    dbd_capacity,
    decode_packet,
    encode_lsu_payload,
    encode_packet,
    encode_packet_payload,
    lsa_checksum_ok,
    lsr_capacity,
    make_lsa,
    pack_lsus,
    with_age,
)

__all__ = ["EmulatedRouter"]

_EXCHANGING = (NeighborState.EXCHANGE, NeighborState.LOADING)
_DBD_BITS = DbdFlags.I | DbdFlags.M | DbdFlags.MS


@dataclass(slots=True)
class _Own:
    """One LSA we originate: its current content (None once flushed), last sequence and time."""

    spec: LsaSpec | None
    seq: int
    last_ns: int


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
        extra_links: Sequence[RouterLink] = (),
        owned_router_ids: Iterable[IPv4Address] = (),
    ) -> None:
        self._rid = IPv4Address(router_id)
        if not interfaces:
            raise ValueError("an emulated router needs at least one interface")
        names = [c.name for c in interfaces]
        if len(set(names)) != len(names):
            raise ValueError(f"interface names repeat: {names}")
        areas = {c.area for c in interfaces}
        if len(areas) != 1:
            raise ValueError(f"all interfaces must be in one area, got {sorted(map(str, areas))}")
        self._area = areas.pop()
        self._ifaces = {c.name: Interface(c) for c in interfaces}
        self._lsdb = Lsdb()
        self._own: dict[LsaKey, _Own] = {}
        self._pending: dict[LsaKey, tuple[LsaSpec, str]] = {}
        self._owned_routers = {self._rid, *map(IPv4Address, owned_router_ids)}
        self._maxage: set[LsaKey] = set()  # MaxAge LSAs waiting to leave the database
        self._maxage_check: set[LsaKey] = set()  # of those, the ones to look at in _finish
        self._maxage_sweep = False  # look at all of them (neighbour lists changed)
        # No later than the first LSRefreshTime expiry among our LSAs (may be early: harmless).
        self._refresh_at: int | None = None
        self._refresh_ns = LS_REFRESH_TIME * NS
        self._min_ls_interval_ns = min_ls_interval_ns
        self._originate_router_lsa = originate_router_lsa
        self._extra_links = tuple(extra_links)
        self._transmits: list[Transmit] = []
        self._events: list[Event] = []
        self._counters: Counter[str] = Counter()
        self._flood_queue: dict[str, dict[LsaKey, None]] = {}
        self._dirty = True
        for iface in self._ifaces.values():
            self._interface_up(iface, now_ns)
        # The first tick (at now_ns) sends the first Hellos and originates our router-LSA.
        self._events.clear()

    # ==========================================================================================
    # Driving

    def receive(
        self, ifname: str, src: IPv4Address, dst: IPv4Address, data: bytes, now_ns: int
    ) -> list[Event]:
        """Process one received OSPF packet (without IP header); never raises for bad input."""
        iface = self._iface(ifname)
        self._counters["rx_packets"] += 1
        if iface.state is InterfaceState.DOWN or iface.silent:
            self._counters["rx_ignored_interface_down_or_silent"] += 1
            return []
        try:
            packet = decode_packet(data)
        except OspfDecodeError as exc:
            self._counters["malformed"] += 1
            self._emit(MalformedPacket(now_ns, ifname, src, str(exc)))
            return self._finish(now_ns)
        h = packet.header
        self._counters[f"rx_{h.packet_type.name.lower()}"] += 1
        if self._acceptable(iface, src, dst, h, now_ns):
            body = packet.body
            if isinstance(body, Hello):
                self._on_hello(iface, src, h, body, now_ns)
            elif isinstance(body, DatabaseDescription):
                self._on_dbd(iface, src, h, body, now_ns)
            elif isinstance(body, LinkStateRequest):
                self._on_lsr(iface, src, h, body, now_ns)
            elif isinstance(body, LinkStateUpdate):
                self._on_lsu(iface, src, h, body, now_ns)
            else:
                self._on_ack(iface, src, h, body, now_ns)
        return self._finish(now_ns)

    def tick(self, now_ns: int) -> list[Event]:
        """Run every timer due at `now_ns`."""
        for iface in self._ifaces.values():
            if iface.state is InterfaceState.DOWN or iface.silent:
                continue
            self._interface_timers(iface, now_ns)
            for nbr in list(iface.neighbors.values()):
                self._neighbor_timers(iface, nbr, now_ns)
        for key, (spec, reason) in list(self._pending.items()):
            own = self._own[key]
            if own.last_ns + self._min_ls_interval_ns <= now_ns:
                del self._pending[key]
                self._originate_one(spec, now_ns, reason)
        if self._refresh_at is not None and self._refresh_at <= now_ns:
            self._refresh_own(now_ns)
        return self._finish(now_ns)

    def next_deadline(self) -> int | None:
        """The earliest time `tick` has work, or None."""
        times: list[int] = []
        for iface in self._ifaces.values():
            if iface.state is InterfaceState.DOWN or iface.silent:
                continue
            times += [
                t
                for t in (iface.hello_deadline, iface.wait_deadline, iface.ack_deadline)
                if t is not None
            ]
            rxmt = iface.config.rxmt_interval_ns
            for nbr in iface.neighbors.values():
                times += [
                    t
                    for t in (
                        nbr.inactivity_deadline,
                        nbr.dbd_deadline,
                        nbr.lsr_deadline,
                        nbr.retransmit_deadline(rxmt),
                        self._problem_deadline(iface, nbr),
                    )
                    if t is not None
                ]
        times += [self._own[k].last_ns + self._min_ls_interval_ns for k in self._pending]
        if self._refresh_at is not None:
            times.append(self._refresh_at)
        return min(times) if times else None

    def take_transmits(self) -> list[Transmit]:
        """Packets queued since the last call, oldest first."""
        out, self._transmits = self._transmits, []
        return out

    # ==========================================================================================
    # Acting

    def originate(self, specs: Iterable[LsaSpec], now_ns: int) -> list[Event]:
        """Install and flood new instances of these LSAs (see module doc for sequencing)."""
        for spec in specs:
            self._owned_routers.add(spec.advertising_router)
            self._originate_one(spec, now_ns, "originate")
        # Our router-LSA's E bit says whether we originate externals (ASBR, §12.4.1); without
        # it the DUT ignores them (§16.4 (3): unknown ASBR) although it acks every one.
        self._dirty = True
        return self._finish(now_ns)

    def flush(self, keys: Iterable[LsaKey], now_ns: int) -> list[Event]:
        """Premature aging of our own LSAs (RFC 2328 §14.1): MaxAge, same sequence, flooded.

        Raises ValueError, before changing anything, if a key is not one we originate now.
        """
        wanted = list(keys)
        for key in wanted:
            own = self._own.get(key)
            if own is None or own.spec is None:
                raise ValueError(f"{key} is not an LSA this router originates")
        for key in wanted:
            self._pending.pop(key, None)
            self._own[key].spec = None
            entry = self._lsdb.get(key)
            if entry is not None and entry.age(now_ns) < MAX_AGE:
                self._flush_entry(entry, now_ns, "flush")
        self._dirty = True  # the last external gone clears the E bit
        return self._finish(now_ns)

    def interface_down(self, ifname: str, now_ns: int) -> list[Event]:
        """InterfaceDown (RFC 2328 §9.3): neighbours killed, our LSAs updated on the others."""
        iface = self._iface(ifname)
        for nbr in list(iface.neighbors.values()):
            self._set_state(iface, nbr, NeighborState.DOWN, "InterfaceDown", now_ns)
        iface.neighbors.clear()
        iface.hello_deadline = iface.wait_deadline = iface.ack_deadline = None
        iface.pending_acks.clear()
        self._set_iface_state(iface, InterfaceState.DOWN, NO_ROUTER, NO_ROUTER, now_ns)
        return self._finish(now_ns)

    def interface_up(self, ifname: str, now_ns: int) -> list[Event]:
        """InterfaceUp (RFC 2328 §9.3): Hellos start at once."""
        iface = self._iface(ifname)
        if iface.state is InterfaceState.DOWN:
            self._interface_up(iface, now_ns)
        return self._finish(now_ns)

    def stop_hellos(self, ifname: str, now_ns: int) -> list[Event]:
        """Go silent on `ifname` with the carrier up (RFC 4061 §6.8, "layer 3" link down).

        Nothing is sent on the interface and everything received there is ignored; our view of
        its neighbours is frozen (no inactivity timer, no retransmissions), so our router-LSA
        keeps the link and the DUT alone detects the failure through its dead interval.
        """
        self._iface(ifname).silent = True
        return self._finish(now_ns)

    def start_hellos(self, ifname: str, now_ns: int) -> list[Event]:
        """Resume after `stop_hellos`: a Hello at once, neighbours' dead timers restart."""
        iface = self._iface(ifname)
        if iface.silent:
            iface.silent = False
            if iface.state is not InterfaceState.DOWN:
                iface.hello_deadline = now_ns
                dead = iface.config.dead_interval_s * NS
                for nbr in iface.neighbors.values():
                    nbr.inactivity_deadline = now_ns + dead
                self._interface_timers(iface, now_ns)
        return self._finish(now_ns)

    def set_flooding(self, ifname: str, enabled: bool, now_ns: int) -> list[Event]:
        """Flood (RFC 2328 §13.3) out of `ifname`, or not: RFC 4061 §5.2's collector learns
        the generator's LSAs over its direct link and "floods nothing to the DUT", else the
        DUT could get them from the collector first and never flood them to it (§13.3 (2)).
        Off, LSAs skip the interface's neighbours (no flood, no retransmission list); acks,
        LS requests and their answers go on as before. Not part of RFC 2328: a tester's knob."""
        self._iface(ifname).flood = enabled
        return self._finish(now_ns)

    def set_cost(self, ifname: str, cost: int, now_ns: int) -> list[Event]:
        """Change an interface's cost; the router-LSA is re-originated (MinLSInterval applies)."""
        iface = self._iface(ifname)
        iface.config = replace(iface.config, cost=cost)
        self._dirty = True
        return self._finish(now_ns)

    def set_extra_links(self, links: Sequence[RouterLink], now_ns: int) -> list[Event]:
        """Replace the links our router-LSA carries besides its interfaces (emulated topology)."""
        self._extra_links = tuple(links)
        self._dirty = True
        return self._finish(now_ns)

    # ==========================================================================================
    # Reading

    @property
    def router_id(self) -> IPv4Address:
        return self._rid

    @property
    def area(self) -> IPv4Address:
        return self._area

    @property
    def interface_names(self) -> tuple[str, ...]:
        return tuple(self._ifaces)

    def interface_config(self, ifname: str) -> InterfaceConfig:
        return self._iface(ifname).config

    def interface_state(self, ifname: str) -> InterfaceState:
        return self._iface(ifname).state

    def dr(self, ifname: str) -> IPv4Address:
        return self._iface(ifname).dr

    def bdr(self, ifname: str) -> IPv4Address:
        return self._iface(ifname).bdr

    def neighbors(self, ifname: str | None = None) -> list[NeighborInfo]:
        ifaces = [self._iface(ifname)] if ifname is not None else list(self._ifaces.values())
        return [
            NeighborInfo(
                iface.name,
                n.router_id,
                n.address,
                n.state,
                n.priority,
                n.dr,
                n.bdr,
                not n.we_are_master,
                len(n.retransmit),
                len(n.requests),
                len(n.db_summary),
                n.since_ns,
            )
            for iface in ifaces
            for n in iface.neighbors.values()
        ]

    def neighbor_state(self, ifname: str, neighbor_id: IPv4Address) -> NeighborState | None:
        nbr = self._iface(ifname).neighbors.get(IPv4Address(neighbor_id))
        return None if nbr is None else nbr.state

    @property
    def lsdb(self) -> Mapping[LsaKey, LsdbEntry]:
        return self._lsdb

    def lsa(self, key: LsaKey) -> LsdbEntry | None:
        return self._lsdb.get(key)

    def awaiting_ack(self, key: LsaKey) -> int | None:
        """When we last sent `key` to a neighbour that has not acknowledged it yet (the newest
        stamp on any retransmission list, §13.6), None if no neighbour is waiting for it."""
        sent = [
            n.retransmit[key][1]
            for i in self._ifaces.values()
            for n in i.neighbors.values()
            if key in n.retransmit
        ]
        return max(sent) if sent else None

    def retransmit_count(self, ifname: str | None = None) -> int:
        ifaces = [self._iface(ifname)] if ifname is not None else list(self._ifaces.values())
        return sum(len(n.retransmit) for i in ifaces for n in i.neighbors.values())

    @property
    def counters(self) -> Mapping[str, int]:
        return dict(self._counters)

    # ==========================================================================================
    # Plumbing

    def _iface(self, ifname: str) -> Interface:
        try:
            return self._ifaces[ifname]
        except KeyError:
            raise ValueError(f"no interface {ifname!r} on router {self._rid}") from None

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _finish(self, now_ns: int) -> list[Event]:
        """End of every public call: our own LSAs brought up to date, floods sent, MaxAge reaped."""
        if self._dirty:
            self._dirty = False
            self._refresh_self(now_ns)
        self._send_floods(now_ns)
        self._reap_maxage()
        out, self._events = self._events, []
        return out

    def _reject(
        self,
        iface: Interface,
        src: IPv4Address,
        h: OspfHeader,
        reason: RejectReason,
        detail: str,
        now_ns: int,
    ) -> None:
        self._counters[f"rejected_{reason.value}"] += 1
        self._emit(
            PacketRejected(now_ns, iface.name, src, h.router_id, h.packet_type, reason, detail)
        )

    def _acceptable(
        self, iface: Interface, src: IPv4Address, dst: IPv4Address, h: OspfHeader, now_ns: int
    ) -> bool:
        """RFC 2328 §8.2 checks that do not need the neighbour."""
        cfg = iface.config
        if h.area_id != cfg.area:
            detail = f"area {h.area_id}, ours is {cfg.area}"
            self._reject(iface, src, h, RejectReason.WRONG_AREA, detail, now_ns)
            return False
        if h.au_type != AuType.NULL:
            detail = f"AuType {h.au_type}; this speaker uses null authentication"
            self._reject(iface, src, h, RejectReason.AUTH, detail, now_ns)
            return False
        if h.router_id == self._rid:
            iface.own_rid_seen += 1
            detail = f"packet from {src} carries our Router ID {self._rid}"
            self._reject(iface, src, h, RejectReason.OWN_ROUTER_ID, detail, now_ns)
            if iface.own_rid_seen == 1:
                self._emit(
                    AdjacencyProblem(
                        now_ns,
                        iface.name,
                        self._rid,
                        NeighborState.DOWN,
                        "router-id",
                        f"{src} uses our Router ID {self._rid}: no adjacency can form;"
                        " give the emulated router another Router ID",
                    )
                )
            return False
        if dst == ALL_D_ROUTERS and not iface.is_dr_or_bdr:
            # Normal on a LAN with other DROthers (RFC 2328 §8.2): counted, no event.
            self._counters[f"rejected_{RejectReason.DESTINATION.value}"] += 1
            return False
        return True

    def _transmit(
        self,
        iface: Interface,
        dst: IPv4Address,
        data: bytes,
        ptype: PacketType,
        now_ns: int,
        *,
        keys: tuple[LsaKey, ...] = (),
        seqs: tuple[int, ...] = (),
        retransmission: bool = False,
        nbr: Neighbor | None = None,
    ) -> None:
        if iface.silent or iface.state is InterfaceState.DOWN:
            return
        self._counters[f"tx_{ptype.name.lower()}"] += 1
        self._transmits.append(
            Transmit(
                now_ns,
                iface.name,
                dst,
                data,
                ptype,
                keys,
                seqs,
                retransmission,
                None if nbr is None else nbr.router_id,
            )
        )

    def _packet(self, body: Hello | DatabaseDescription | LinkStateRequest | LinkStateAck) -> bytes:
        return encode_packet(self._rid, self._area, body)

    @staticmethod
    def _to_neighbor(iface: Interface, nbr: Neighbor) -> IPv4Address:
        # RFC 2328 §8.1: on point-to-point links every packet goes to AllSPFRouters.
        return nbr.address if iface.broadcast else ALL_SPF_ROUTERS

    @staticmethod
    def _to_all(iface: Interface) -> IPv4Address:
        # RFC 2328 §13.3: a DROther floods (and acks) to AllDRouters; DR and BDR to AllSPFRouters.
        if iface.broadcast and not iface.is_dr_or_bdr:
            return ALL_D_ROUTERS
        return ALL_SPF_ROUTERS

    # ==========================================================================================
    # Interface state machine and DR election (RFC 2328 §9.3, §9.4)

    def _interface_up(self, iface: Interface, now_ns: int) -> None:
        cfg = iface.config
        iface.hello_deadline = now_ns
        if not iface.broadcast:
            self._set_iface_state(
                iface, InterfaceState.POINT_TO_POINT, NO_ROUTER, NO_ROUTER, now_ns
            )
        elif cfg.priority == 0:
            self._set_iface_state(iface, InterfaceState.DR_OTHER, NO_ROUTER, NO_ROUTER, now_ns)
        else:
            iface.wait_deadline = now_ns + cfg.dead_interval_s * NS
            self._set_iface_state(iface, InterfaceState.WAITING, NO_ROUTER, NO_ROUTER, now_ns)

    def _set_iface_state(
        self,
        iface: Interface,
        state: InterfaceState,
        dr: IPv4Address,
        bdr: IPv4Address,
        now_ns: int,
    ) -> None:
        if (iface.state, iface.dr, iface.bdr) == (state, dr, bdr):
            return
        old = iface.state
        iface.state, iface.dr, iface.bdr = state, dr, bdr
        self._dirty = True
        self._emit(InterfaceStateChange(now_ns, iface.name, old, state, dr, bdr))

    def _elect(self, iface: Interface, now_ns: int) -> None:
        """Run the election and then AdjOK? for every 2-Way-or-better neighbour (§9.4, §10.4)."""
        if not iface.broadcast or iface.state is InterfaceState.DOWN:
            return
        if iface.state is InterfaceState.WAITING and iface.wait_deadline is not None:
            return
        dr, bdr = elect(iface.me(self._rid), iface.candidates())
        if dr == iface.address:
            state = InterfaceState.DR
        elif bdr == iface.address:
            state = InterfaceState.BACKUP
        else:
            state = InterfaceState.DR_OTHER
        self._set_iface_state(iface, state, dr, bdr, now_ns)
        for nbr in list(iface.neighbors.values()):
            wanted = iface.adjacency_wanted(nbr)
            if nbr.state is NeighborState.TWO_WAY and wanted:
                self._start_exstart(iface, nbr, "AdjOK?", now_ns)
            elif nbr.state >= NeighborState.EXSTART and not wanted:
                self._set_state(iface, nbr, NeighborState.TWO_WAY, "AdjOK?", now_ns)
                nbr.clear_lists()

    # ==========================================================================================
    # Neighbour state machine (RFC 2328 §10.3)

    def _set_state(
        self, iface: Interface, nbr: Neighbor, new: NeighborState, cause: str, now_ns: int
    ) -> None:
        old = nbr.state
        if old is new:
            return
        nbr.state = new
        nbr.since_ns = now_ns
        if NeighborState.FULL in (old, new):
            self._dirty = True  # router-LSA (and network-LSA as DR) list Full neighbours
        if new is NeighborState.EXSTART:
            nbr.exstart_since_ns = now_ns
            nbr.problem_reported = False
        elif new > NeighborState.EXSTART or new < NeighborState.TWO_WAY:
            nbr.exstart_since_ns = None
        if new < NeighborState.EXSTART:
            nbr.clear_lists()
        self._maxage_sweep = True
        self._counters[f"neighbor_{new.name.lower()}"] += 1
        self._emit(
            NeighborStateChange(now_ns, iface.name, nbr.router_id, nbr.address, old, new, cause)
        )

    def _kill(self, iface: Interface, nbr: Neighbor, cause: str, now_ns: int) -> None:
        self._set_state(iface, nbr, NeighborState.DOWN, cause, now_ns)
        iface.neighbors.pop(nbr.router_id, None)
        self._elect(iface, now_ns)

    def _two_way_received(self, iface: Interface, nbr: Neighbor, now_ns: int) -> None:
        if nbr.state is not NeighborState.INIT:
            return
        if not iface.broadcast:
            self._start_exstart(iface, nbr, "2-WayReceived", now_ns)
            return
        self._set_state(iface, nbr, NeighborState.TWO_WAY, "2-WayReceived", now_ns)
        # NeighborChange: bidirectional communication established (§9.2); the election then
        # decides, through AdjOK?, whether this neighbour becomes adjacent.
        if iface.state is not InterfaceState.WAITING:
            self._elect(iface, now_ns)
        elif iface.adjacency_wanted(nbr):
            self._start_exstart(iface, nbr, "2-WayReceived", now_ns)

    def _start_exstart(self, iface: Interface, nbr: Neighbor, cause: str, now_ns: int) -> None:
        self._set_state(iface, nbr, NeighborState.EXSTART, cause, now_ns)
        nbr.clear_lists()
        self._maxage_sweep = True
        # §10.8: a fresh DD sequence number the first time (unique per start), +1 afterwards.
        nbr.dd_seq = (
            (nbr.dd_seq + 1) & 0xFFFFFFFF if nbr.dd_seq else (now_ns // 1000) & 0x7FFFFFFF or 1
        )
        nbr.we_are_master = True
        nbr.our_more = True
        self._send_dbd(iface, nbr, now_ns, initial=True)

    def _restart_exchange(self, iface: Interface, nbr: Neighbor, cause: str, now_ns: int) -> None:
        """SeqNumberMismatch or BadLSReq (§10.3): back to ExStart with the lists cleared."""
        self._counters[f"exchange_restart_{cause}"] += 1
        self._start_exstart(iface, nbr, cause, now_ns)

    def _on_hello(
        self, iface: Interface, src: IPv4Address, h: OspfHeader, hello: Hello, now_ns: int
    ) -> None:
        cfg = iface.config
        mismatch = ""
        if iface.broadcast and hello.mask != cfg.address.netmask:
            mismatch = f"network mask {hello.mask}, ours {cfg.address.netmask}"
        elif hello.hello_interval != cfg.hello_interval_s:
            mismatch = f"HelloInterval {hello.hello_interval} s, ours {cfg.hello_interval_s} s"
        elif hello.dead_interval != cfg.dead_interval_s:
            mismatch = f"RouterDeadInterval {hello.dead_interval} s, ours {cfg.dead_interval_s} s"
        elif (hello.options ^ cfg.options) & Options.E:
            mismatch = "E option differs (stub area mismatch)"
        if mismatch:
            self._reject(iface, src, h, RejectReason.HELLO_MISMATCH, mismatch, now_ns)
            return
        nbr = iface.neighbors.get(h.router_id)
        if nbr is None:
            nbr = Neighbor(h.router_id, src, since_ns=now_ns)
            iface.neighbors[h.router_id] = nbr
        nbr.address = src
        before = (nbr.priority, nbr.dr == nbr.address, nbr.bdr == nbr.address)
        changed = not nbr.hello_seen or (nbr.dr, nbr.bdr) != (hello.dr, hello.bdr)
        if iface.broadcast and changed:
            prev = (nbr.dr, nbr.bdr) if nbr.hello_seen else (None, None)
            self._emit(
                DrChange(now_ns, iface.name, nbr.router_id, hello.dr, hello.bdr, prev[0], prev[1])
            )
        first = not nbr.hello_seen
        nbr.hello_seen = True
        nbr.priority, nbr.dr, nbr.bdr, nbr.options = (
            hello.priority,
            hello.dr,
            hello.bdr,
            hello.options,
        )
        nbr.inactivity_deadline = now_ns + cfg.dead_interval_s * NS
        if nbr.state is NeighborState.DOWN:
            self._set_state(iface, nbr, NeighborState.INIT, "HelloReceived", now_ns)
        if self._rid in hello.neighbors:
            self._two_way_received(iface, nbr, now_ns)
        elif nbr.state >= NeighborState.TWO_WAY:
            self._set_state(iface, nbr, NeighborState.INIT, "1-WayReceived", now_ns)
            self._elect(iface, now_ns)
            return
        if not iface.broadcast or nbr.state < NeighborState.TWO_WAY:
            return
        after = (nbr.priority, nbr.dr == nbr.address, nbr.bdr == nbr.address)
        if iface.state is InterfaceState.WAITING:
            # BackupSeen (§9.2): a BDR exists, or a DR with no BDR: no need to wait further.
            if after[2] or (after[1] and hello.bdr == NO_ROUTER):
                iface.wait_deadline = None
                self._elect(iface, now_ns)
        elif first or before != after:
            self._elect(iface, now_ns)

    # ==========================================================================================
    # Database exchange (RFC 2328 §10.6, §10.8)

    def _send_dbd(
        self,
        iface: Interface,
        nbr: Neighbor,
        now_ns: int,
        *,
        initial: bool = False,
    ) -> None:
        cfg = iface.config
        headers: list[LsaHeader] = []
        if initial:
            flags = _DBD_BITS
        else:
            for _ in range(dbd_capacity(cfg.mtu)):
                if not nbr.db_summary:
                    break
                headers.append(nbr.db_summary.popleft())
            nbr.our_more = bool(nbr.db_summary)
            flags = DbdFlags(0)
            if nbr.our_more:
                flags |= DbdFlags.M
            if nbr.we_are_master:
                flags |= DbdFlags.MS
        dbd = DatabaseDescription(cfg.mtu, cfg.options, flags, nbr.dd_seq, tuple(headers))
        nbr.last_tx_dbd = self._packet(dbd)
        nbr.last_tx_keys = tuple(x.key for x in headers)
        nbr.last_tx_seqs = tuple(x.seq for x in headers)
        if nbr.we_are_master:
            nbr.dbd_deadline = now_ns + cfg.rxmt_interval_ns
        self._send_last_dbd(iface, nbr, now_ns, retransmission=False)

    def _send_last_dbd(
        self, iface: Interface, nbr: Neighbor, now_ns: int, *, retransmission: bool
    ) -> None:
        if nbr.last_tx_dbd is None:
            return
        self._transmit(
            iface,
            self._to_neighbor(iface, nbr),
            nbr.last_tx_dbd,
            PacketType.DATABASE_DESCRIPTION,
            now_ns,
            keys=nbr.last_tx_keys,
            seqs=nbr.last_tx_seqs,
            retransmission=retransmission,
            nbr=nbr,
        )

    def _on_dbd(
        self,
        iface: Interface,
        src: IPv4Address,
        h: OspfHeader,
        dbd: DatabaseDescription,
        now_ns: int,
    ) -> None:
        nbr = iface.neighbors.get(h.router_id)
        if nbr is None or nbr.state is NeighborState.DOWN:
            self._reject(
                iface, src, h, RejectReason.UNKNOWN_NEIGHBOR, "DBD before any Hello", now_ns
            )
            return
        if dbd.mtu > iface.config.mtu:
            # §10.6: larger than we can receive unfragmented: rejected, the neighbour stays in
            # ExStart (FRR logs "MTU ... is larger than ..."), reported by AdjacencyProblem.
            nbr.mtu_rejects += 1
            nbr.peer_mtu = dbd.mtu
            detail = f"neighbour announces MTU {dbd.mtu}, ours is {iface.config.mtu}"
            self._reject(iface, src, h, RejectReason.MTU_MISMATCH, detail, now_ns)
            return
        nbr.dbd_received += 1
        nbr.peer_mtu = dbd.mtu
        self._two_way_received(iface, nbr, now_ns)
        if nbr.state is NeighborState.TWO_WAY or nbr.state is NeighborState.INIT:
            detail = f"DBD in state {nbr.state.name}"
            self._reject(iface, src, h, RejectReason.NEIGHBOR_STATE, detail, now_ns)
            return
        signature = (dbd.flags & _DBD_BITS, dbd.options, dbd.dd_seq)
        if nbr.state is NeighborState.EXSTART:
            self._dbd_exstart(iface, nbr, h, dbd, signature, now_ns)
            return
        if signature == nbr.last_rx_dbd:
            # A duplicate: the master ignores it, the slave repeats its last answer (§10.6).
            self._counters["dbd_duplicate"] += 1
            if not nbr.we_are_master:
                self._send_last_dbd(iface, nbr, now_ns, retransmission=True)
            return
        if nbr.state is not NeighborState.EXCHANGE:
            self._restart_exchange(iface, nbr, "SeqNumberMismatch", now_ns)
            return
        last = nbr.last_rx_dbd
        expected = nbr.dd_seq if nbr.we_are_master else (nbr.dd_seq + 1) & 0xFFFFFFFF
        if (
            bool(dbd.flags & DbdFlags.MS) == nbr.we_are_master
            or dbd.flags & DbdFlags.I
            or (last is not None and last[1] != dbd.options)
            or dbd.dd_seq != expected
        ):
            self._restart_exchange(iface, nbr, "SeqNumberMismatch", now_ns)
            return
        nbr.last_rx_dbd = signature
        self._accept_dbd(iface, nbr, dbd, now_ns)

    def _dbd_exstart(
        self,
        iface: Interface,
        nbr: Neighbor,
        h: OspfHeader,
        dbd: DatabaseDescription,
        signature: tuple[DbdFlags, Options, int],
        now_ns: int,
    ) -> None:
        flags = dbd.flags
        if (
            flags & _DBD_BITS == _DBD_BITS
            and not dbd.lsa_headers
            and int(h.router_id) > int(self._rid)
        ):
            nbr.we_are_master = False  # the neighbour is master: adopt its sequence number
            nbr.dd_seq = dbd.dd_seq
        elif (
            not flags & (DbdFlags.I | DbdFlags.MS)
            and dbd.dd_seq == nbr.dd_seq
            and int(h.router_id) < int(self._rid)
        ):
            nbr.we_are_master = True
        else:
            self._counters["dbd_ignored_exstart"] += 1
            return
        self._set_state(iface, nbr, NeighborState.EXCHANGE, "NegotiationDone", now_ns)
        nbr.dbd_deadline = None
        nbr.last_rx_dbd = signature
        # §10.8 NegotiationDone: the summary list is the database now; MaxAge LSAs go to the
        # retransmission list instead (§10.3).
        for entry in self._lsdb.values():
            if entry.age(now_ns) >= MAX_AGE:
                nbr.add_retransmit(entry.lsa.header, now_ns)
            else:
                nbr.db_summary.append(entry.header(now_ns))
        self._accept_dbd(iface, nbr, dbd, now_ns)

    def _accept_dbd(
        self, iface: Interface, nbr: Neighbor, dbd: DatabaseDescription, now_ns: int
    ) -> None:
        for header in dbd.lsa_headers:
            entry = self._lsdb.get(header.key)
            if entry is None or compare_lsa(header, entry.header(now_ns)) > 0:
                nbr.requests[header.key] = header
        their_more = bool(dbd.flags & DbdFlags.M)
        if nbr.we_are_master:
            nbr.dd_seq = (nbr.dd_seq + 1) & 0xFFFFFFFF
            if not nbr.our_more and not their_more:
                nbr.dbd_deadline = None
                self._exchange_done(iface, nbr, now_ns)
            else:
                self._send_dbd(iface, nbr, now_ns)
        else:
            nbr.dd_seq = dbd.dd_seq
            self._send_dbd(iface, nbr, now_ns)
            if not their_more and not nbr.our_more:
                self._exchange_done(iface, nbr, now_ns)
        self._request_next(iface, nbr, now_ns)

    def _exchange_done(self, iface: Interface, nbr: Neighbor, now_ns: int) -> None:
        if nbr.requests:
            self._set_state(iface, nbr, NeighborState.LOADING, "ExchangeDone", now_ns)
        else:
            self._set_state(iface, nbr, NeighborState.FULL, "ExchangeDone", now_ns)

    # ==========================================================================================
    # Link state requests (RFC 2328 §10.7, §10.9): one LSR in flight, the next when answered

    def _request_next(self, iface: Interface, nbr: Neighbor, now_ns: int) -> None:
        if nbr.state not in _EXCHANGING:
            return
        if nbr.lsr_outstanding:
            remaining = tuple(k for k in nbr.lsr_outstanding if k in nbr.requests)
            if remaining:
                nbr.lsr_outstanding = remaining
                return
            nbr.lsr_outstanding, nbr.lsr_deadline = (), None
        if not nbr.requests:
            if nbr.state is NeighborState.LOADING:
                self._set_state(iface, nbr, NeighborState.FULL, "LoadingDone", now_ns)
            return
        keys: list[LsaKey] = []
        for key in nbr.requests:
            keys.append(key)
            if len(keys) == lsr_capacity(iface.config.mtu):
                break
        nbr.lsr_outstanding = tuple(keys)
        self._send_lsr(iface, nbr, now_ns, retransmission=False)

    def _send_lsr(
        self, iface: Interface, nbr: Neighbor, now_ns: int, *, retransmission: bool
    ) -> None:
        keys = nbr.lsr_outstanding
        nbr.lsr_deadline = now_ns + iface.config.rxmt_interval_ns
        data = self._packet(LinkStateRequest(keys))
        self._transmit(
            iface,
            self._to_neighbor(iface, nbr),
            data,
            PacketType.LINK_STATE_REQUEST,
            now_ns,
            keys=keys,
            retransmission=retransmission,
            nbr=nbr,
        )

    def _on_lsr(
        self,
        iface: Interface,
        src: IPv4Address,
        h: OspfHeader,
        lsr: LinkStateRequest,
        now_ns: int,
    ) -> None:
        nbr = self._adjacent(iface, src, h, now_ns)
        if nbr is None:
            return
        entries: list[LsdbEntry] = []
        for key in lsr.keys:
            entry = self._lsdb.get(key)
            if entry is None:
                detail = f"request for {key}, which is not in our database"
                self._reject(iface, src, h, RejectReason.BAD_LS_REQUEST, detail, now_ns)
                self._restart_exchange(iface, nbr, "BadLSReq", now_ns)
                return
            entries.append(entry)
        # §10.7: answered directly, not placed on the retransmission list.
        self._send_entries(iface, self._to_neighbor(iface, nbr), entries, now_ns, nbr=nbr)

    def _adjacent(
        self, iface: Interface, src: IPv4Address, h: OspfHeader, now_ns: int
    ) -> Neighbor | None:
        nbr = iface.neighbors.get(h.router_id)
        if nbr is None:
            self._reject(iface, src, h, RejectReason.UNKNOWN_NEIGHBOR, "no Hello seen", now_ns)
            return None
        if nbr.state < NeighborState.EXCHANGE:
            detail = f"{h.packet_type.name} in state {nbr.state.name}"
            self._reject(iface, src, h, RejectReason.NEIGHBOR_STATE, detail, now_ns)
            return None
        return nbr

    # ==========================================================================================
    # Receiving LSAs (RFC 2328 §13) and acknowledgments (§13.7)

    def _on_lsu(
        self,
        iface: Interface,
        src: IPv4Address,
        h: OspfHeader,
        lsu: LinkStateUpdate,
        now_ns: int,
    ) -> None:
        nbr = self._adjacent(iface, src, h, now_ns)
        if nbr is None:
            return
        acks: list[LsaHeader] = []
        for lsa, raw in zip(lsu.lsas, lsu.raw_lsas, strict=True):
            if not self._receive_lsa(iface, nbr, lsa, raw, acks, now_ns):
                break  # BadLSReq restarted the exchange: the rest of the packet is moot
        if acks:
            self._ack(iface, acks, now_ns)
        self._request_next(iface, nbr, now_ns)

    def _receive_lsa(
        self,
        iface: Interface,
        nbr: Neighbor,
        lsa: Lsa,
        raw: bytes,
        acks: list[LsaHeader],
        now_ns: int,
    ) -> bool:
        h = lsa.header
        key = h.key

        def report(status: LsaStatus, implied: bool = False) -> None:
            self._counters[f"lsa_{status.value}"] += 1
            self._emit(
                LsaReceived(
                    now_ns,
                    iface.name,
                    nbr.router_id,
                    key,
                    h.seq,
                    h.age,
                    h.checksum,
                    status,
                    implied,
                )
            )

        if not lsa_checksum_ok(raw):
            report(LsaStatus.BAD_CHECKSUM)  # step 1: discarded, not acked
            return True
        entry = self._lsdb.get(key)
        maxage = (h.age & 0x7FFF) >= MAX_AGE
        if maxage and entry is None and not self._anyone_exchanging():
            acks.append(h)  # step 4
            report(LsaStatus.MAXAGE_UNKNOWN)
            return True
        cmp = 1 if entry is None else compare_lsa(h, entry.header(now_ns))
        if cmp > 0:
            self._install_received(iface, nbr, lsa, raw, acks, now_ns, report)
            return True
        if key in nbr.requests:
            # Step 6: the neighbour sent an instance not newer than ours that we had requested.
            self._restart_exchange(iface, nbr, "BadLSReq", now_ns)
            return False
        if cmp == 0:
            if key in nbr.retransmit:
                del nbr.retransmit[key]  # step 7a: an implied acknowledgment
                self._maxage_check.add(key)
                report(LsaStatus.DUPLICATE, implied=True)
            else:
                acks.append(h)
                report(LsaStatus.DUPLICATE)
            return True
        assert entry is not None
        if entry.lsa.header.seq == MAX_SEQUENCE_NUMBER and entry.age(now_ns) >= MAX_AGE:
            report(LsaStatus.SEQ_WRAPPING)  # step 8: being flushed for a wrap; discard
            return True
        self._send_entries(iface, self._to_neighbor(iface, nbr), [entry], now_ns, nbr=nbr)
        report(LsaStatus.OLDER)
        return True

    def _install_received(
        self,
        iface: Interface,
        nbr: Neighbor,
        lsa: Lsa,
        raw: bytes,
        acks: list[LsaHeader],
        now_ns: int,
        report: object,
    ) -> None:
        """§13 step 5 (b)-(f): flood, install, ack, and §13.4 for our own LSAs."""
        h = lsa.header
        key = h.key
        is_self = key.advertising_router in self._owned_routers or (
            key.ls_type == LsaType.NETWORK
            and any(key.link_state_id == i.address for i in self._ifaces.values())
        )
        self._install(LsdbEntry(lsa, raw, now_ns, is_self), now_ns)
        flooded_back = self._flood(key, now_ns, from_iface=iface, from_nbr=nbr)
        if not flooded_back:
            acks.append(h)  # (e): acknowledged at once (RFC 2328 §13.5, our "immediate" policy)
        assert callable(report)
        if not is_self:
            report(LsaStatus.NEW)
            return
        report(LsaStatus.SELF_ORIGINATED)
        # §13.4: a newer instance of one of ours, left by an earlier run (or another router
        # with our ID). Still originated: jump past its sequence number and re-flood. Not
        # originated any more: flush it.
        own = self._own.get(key)
        if own is not None and own.spec is not None:
            own.seq = max(own.seq, h.seq)
            self._originate_one(own.spec, now_ns, "13.4")
        elif (h.age & 0x7FFF) < MAX_AGE:
            if own is None:
                self._own[key] = _Own(None, h.seq, now_ns)
            else:
                own.seq = max(own.seq, h.seq)
            self._flush_entry(self._lsdb[key], now_ns, "13.4")

    def _anyone_exchanging(self) -> bool:
        return any(
            n.state in _EXCHANGING for i in self._ifaces.values() for n in i.neighbors.values()
        )

    def _ack(self, iface: Interface, headers: list[LsaHeader], now_ns: int) -> None:
        delay = iface.config.ack_delay_ns
        if delay:
            iface.pending_acks.extend(headers)
            if iface.ack_deadline is None:
                iface.ack_deadline = now_ns + delay
            return
        self._send_acks(iface, headers, now_ns)

    def _send_acks(self, iface: Interface, headers: list[LsaHeader], now_ns: int) -> None:
        # As many 20-octet headers as fit in one packet at the interface MTU.
        room = max(1, (iface.config.mtu - IP_HEADER_SIZE - HEADER_SIZE) // LSA_HEADER_SIZE)
        for i in range(0, len(headers), room):
            chunk = tuple(headers[i : i + room])
            self._transmit(
                iface,
                self._to_all(iface),
                self._packet(LinkStateAck(chunk)),
                PacketType.LINK_STATE_ACK,
                now_ns,
                keys=tuple(x.key for x in chunk),
                seqs=tuple(x.seq for x in chunk),
            )

    def _on_ack(
        self,
        iface: Interface,
        src: IPv4Address,
        h: OspfHeader,
        ack: LinkStateAck,
        now_ns: int,
    ) -> None:
        nbr = self._adjacent(iface, src, h, now_ns)
        if nbr is None:
            return
        cleared: list[LsaKey] = []
        for header in ack.lsa_headers:
            item = nbr.retransmit.get(header.key)
            # §13.7: only an ack for the very instance we sent clears the entry.
            if item is not None and compare_lsa(header, item[0]) == 0:
                del nbr.retransmit[header.key]
                cleared.append(header.key)
        self._counters["acks_cleared"] += len(cleared)
        self._maxage_check.update(cleared)
        self._emit(
            LsaAckReceived(now_ns, iface.name, nbr.router_id, ack.lsa_headers, tuple(cleared))
        )

    # ==========================================================================================
    # Database and flooding (RFC 2328 §13.2, §13.3)

    def _install(self, entry: LsdbEntry, now_ns: int) -> None:
        old = self._lsdb.install(entry)
        if old is not None:
            # §13.2: the old instance leaves every retransmission list.
            for iface in self._ifaces.values():
                for nbr in iface.neighbors.values():
                    nbr.retransmit.pop(entry.key, None)
        if entry.age(now_ns) >= MAX_AGE:
            self._maxage.add(entry.key)
            self._maxage_check.add(entry.key)
        else:
            self._maxage.discard(entry.key)

    def _flood(
        self,
        key: LsaKey,
        now_ns: int,
        *,
        from_iface: Interface | None = None,
        from_nbr: Neighbor | None = None,
    ) -> bool:
        """§13.3: put the LSA on retransmit lists and queue it per interface; True if it goes
        back out of the interface it came in on (then it needs no separate ack, §13.5)."""
        entry = self._lsdb[key]
        header = entry.lsa.header
        back = False
        for iface in self._ifaces.values():
            if iface.state is InterfaceState.DOWN or not iface.flood:
                continue
            added = False
            for nbr in iface.neighbors.values():
                if nbr.state < NeighborState.EXCHANGE:
                    continue
                if nbr.state in _EXCHANGING:
                    req = nbr.requests.get(key)
                    if req is not None:
                        cmp = compare_lsa(header, req)
                        if cmp < 0:
                            continue
                        del nbr.requests[key]
                        if cmp == 0:
                            continue
                if nbr is from_nbr:
                    continue
                nbr.add_retransmit(header, now_ns)
                added = True
            if not added:
                continue
            if iface is from_iface and from_nbr is not None:
                if iface.broadcast and (
                    from_nbr.address in (iface.dr, iface.bdr)
                    or iface.state is InterfaceState.BACKUP
                ):
                    continue
                back = True
            self._flood_queue.setdefault(iface.name, {})[key] = None
        return back

    def _send_floods(self, now_ns: int) -> None:
        queue, self._flood_queue = self._flood_queue, {}
        for ifname, keys in queue.items():
            iface = self._ifaces[ifname]
            entries = [self._lsdb[k] for k in keys if k in self._lsdb]
            self._send_entries(iface, self._to_all(iface), entries, now_ns)

    def _send_entries(
        self,
        iface: Interface,
        dst: IPv4Address,
        entries: Sequence[LsdbEntry],
        now_ns: int,
        *,
        nbr: Neighbor | None = None,
        retransmission: bool = False,
    ) -> None:
        """Link State Updates carrying these LSAs, packed to the interface MTU."""
        if not entries:
            return
        delay = iface.config.inf_trans_delay_s
        raws = [e.wire(now_ns, delay) for e in entries]
        for group in pack_lsus(raws, iface.config.mtu):
            payload = encode_lsu_payload([raws[i] for i in group])
            data = encode_packet_payload(
                self._rid, self._area, PacketType.LINK_STATE_UPDATE, payload
            )
            self._transmit(
                iface,
                dst,
                data,
                PacketType.LINK_STATE_UPDATE,
                now_ns,
                keys=tuple(entries[i].key for i in group),
                seqs=tuple(entries[i].lsa.header.seq for i in group),
                retransmission=retransmission,
                nbr=nbr,
            )
        if retransmission:
            self._counters["retransmitted_lsas"] += len(entries)

    def _reap_maxage(self) -> None:
        """§14: a MaxAge LSA leaves the database once no retransmission list holds it and no
        neighbour is exchanging databases.

        Only candidates are examined (installed or acked during this call), or all of them
        after neighbour lists changed: flushing 20,000 LSAs must not cost 20,000 look-ups per
        received LSAck.
        """
        if not self._maxage:
            return
        if self._anyone_exchanging():
            self._maxage_sweep = True
            return
        candidates = set(self._maxage) if self._maxage_sweep else self._maxage_check & self._maxage
        self._maxage_check.clear()
        self._maxage_sweep = False
        if not candidates:
            return
        lists = [n.retransmit for i in self._ifaces.values() for n in i.neighbors.values()]
        for key in candidates:
            if not any(key in held for held in lists):
                self._maxage.discard(key)
                self._lsdb.remove(key)

    # ==========================================================================================
    # Origination (RFC 2328 §12.4) with MinLSInterval spacing, flushing (§14.1)

    def _originate_one(self, spec: LsaSpec, now_ns: int, reason: str) -> None:
        key = spec.key
        own = self._own.get(key)
        if own is not None and own.last_ns + self._min_ls_interval_ns > now_ns:
            # Too soon after the previous instance: keep only the latest content and send it
            # when MinLSInterval has passed (BIRD drops faster ones, research note §3).
            self._pending[key] = (spec, reason)
            own.spec = spec
            self._counters["originations_deferred"] += 1
            return
        seq = INITIAL_SEQUENCE_NUMBER if own is None else own.seq + 1
        entry = self._lsdb.get(key)
        if entry is not None:
            seq = max(seq, entry.lsa.header.seq + 1)
        if seq > MAX_SEQUENCE_NUMBER:
            # §12.1.6 wrap needs a flush first; at one origination per second it takes 68 years.
            self._counters["originations_seq_exhausted"] += 1
            return
        lsa, raw = make_lsa(
            spec.ls_type,
            spec.link_state_id,
            spec.advertising_router,
            seq,
            spec.body,
            options=spec.options,
        )
        if own is None:
            self._own[key] = _Own(spec, seq, now_ns)
        else:
            own.spec, own.seq, own.last_ns = spec, seq, now_ns
        if self._refresh_at is None:
            self._refresh_at = now_ns + self._refresh_ns
        self._install(LsdbEntry(lsa, raw, now_ns, True), now_ns)
        self._flood(key, now_ns)
        self._counters["originated"] += 1
        self._emit(LsaOriginated(now_ns, "", key, seq, reason))

    def _refresh_own(self, now_ns: int) -> None:
        """§12.4: a new instance of every LSA we still originate once it is LSRefreshTime old,
        so that the DUT never ages them out during a long run."""
        due = [
            o.spec
            for k, o in self._own.items()
            if o.spec is not None
            and k not in self._pending
            and o.last_ns + self._refresh_ns <= now_ns
        ]
        for spec in due:
            assert spec is not None
            self._originate_one(spec, now_ns, "refresh")
        live = [o.last_ns for o in self._own.values() if o.spec is not None]
        self._refresh_at = min(live) + self._refresh_ns if live else None

    def _flush_entry(self, entry: LsdbEntry, now_ns: int, reason: str) -> None:
        header = replace(entry.lsa.header, age=MAX_AGE)
        flushed = LsdbEntry(Lsa(header, entry.lsa.body), with_age(entry.raw, MAX_AGE), now_ns, True)
        self._install(flushed, now_ns)
        self._flood(entry.key, now_ns)
        self._counters["flushed"] += 1
        self._emit(LsaFlushed(now_ns, "", entry.key, header.seq, reason))

    def _router_lsa(self) -> LsaSpec:
        """Our router-LSA (§12.4.1): p2p and transit links for Full adjacencies, stubs."""
        links: list[RouterLink] = []
        for iface in self._ifaces.values():
            cfg = iface.config
            if iface.state is InterfaceState.DOWN:
                continue
            net = cfg.address.network
            stub = RouterLink(net.network_address, net.netmask, LinkType.STUB, cfg.cost)
            if not iface.broadcast:
                for nbr in iface.neighbors.values():
                    if nbr.state is NeighborState.FULL:
                        links.append(
                            RouterLink(
                                nbr.router_id, iface.address, LinkType.POINT_TO_POINT, cfg.cost
                            )
                        )
                if cfg.advertise_stub:
                    links.append(stub)
                continue
            full = [n for n in iface.neighbors.values() if n.state is NeighborState.FULL]
            if iface.state is InterfaceState.DR:
                transit = bool(full)
            else:
                transit = any(n.address == iface.dr for n in full)
            if transit and iface.state is not InterfaceState.WAITING:
                links.append(RouterLink(iface.dr, iface.address, LinkType.TRANSIT, cfg.cost))
            elif cfg.advertise_stub:
                links.append(stub)
        links.extend(self._extra_links)
        asbr = any(
            k.ls_type == LsaType.AS_EXTERNAL and o.spec is not None for k, o in self._own.items()
        )
        flags = RouterLsaFlags.E if asbr else RouterLsaFlags(0)
        body = RouterLsaBody(flags, tuple(links))
        return LsaSpec(LsaType.ROUTER, self._rid, self._rid, body)

    def _refresh_self(self, now_ns: int) -> None:
        """Re-originate our router-LSA and our network-LSAs where their content changed."""
        if self._originate_router_lsa:
            spec = self._router_lsa()
            own = self._own.get(spec.key)
            if own is None or own.spec != spec:
                self._originate_one(spec, now_ns, "adjacency")
        for iface in self._ifaces.values():
            key = LsaKey(LsaType.NETWORK, iface.address, self._rid)
            own = self._own.get(key)
            full = [n.router_id for n in iface.neighbors.values() if n.state is NeighborState.FULL]
            if iface.state is InterfaceState.DR and full:
                body = NetworkLsaBody(iface.config.address.netmask, (self._rid, *full))
                spec = LsaSpec(LsaType.NETWORK, iface.address, self._rid, body)
                if own is None or own.spec != spec:
                    self._originate_one(spec, now_ns, "dr")
            elif own is not None and own.spec is not None:
                own.spec = None
                self._pending.pop(key, None)
                entry = self._lsdb.get(key)
                if entry is not None:
                    self._flush_entry(entry, now_ns, "no longer DR")

    # ==========================================================================================
    # Timers

    def _interface_timers(self, iface: Interface, now_ns: int) -> None:
        cfg = iface.config
        if iface.wait_deadline is not None and iface.wait_deadline <= now_ns:
            iface.wait_deadline = None  # WaitTimer (§9.3)
            self._elect(iface, now_ns)
        if iface.hello_deadline is not None and iface.hello_deadline <= now_ns:
            self._send_hello(iface, now_ns)
            interval = cfg.hello_interval_s * NS
            nxt = iface.hello_deadline + interval
            iface.hello_deadline = nxt if nxt > now_ns else now_ns + interval
        if iface.ack_deadline is not None and iface.ack_deadline <= now_ns:
            acks, iface.pending_acks = iface.pending_acks, []
            iface.ack_deadline = None
            self._send_acks(iface, acks, now_ns)

    def _send_hello(self, iface: Interface, now_ns: int) -> None:
        cfg = iface.config
        seen = tuple(n.router_id for n in iface.neighbors.values() if n.state >= NeighborState.INIT)
        hello = Hello(
            cfg.address.netmask,
            cfg.hello_interval_s,
            cfg.options,
            cfg.priority,
            cfg.dead_interval_s,
            iface.dr,
            iface.bdr,
            seen,
        )
        self._transmit(iface, ALL_SPF_ROUTERS, self._packet(hello), PacketType.HELLO, now_ns)

    def _neighbor_timers(self, iface: Interface, nbr: Neighbor, now_ns: int) -> None:
        rxmt = iface.config.rxmt_interval_ns
        if nbr.inactivity_deadline is not None and nbr.inactivity_deadline <= now_ns:
            self._kill(iface, nbr, "InactivityTimer", now_ns)
            return
        if nbr.dbd_deadline is not None and nbr.dbd_deadline <= now_ns:
            if nbr.we_are_master and nbr.state in (NeighborState.EXSTART, NeighborState.EXCHANGE):
                nbr.dbd_deadline = now_ns + rxmt
                self._counters["retransmitted_dbds"] += 1
                self._send_last_dbd(iface, nbr, now_ns, retransmission=True)
            else:
                nbr.dbd_deadline = None
        if nbr.lsr_deadline is not None and nbr.lsr_deadline <= now_ns:
            nbr.lsr_outstanding = tuple(k for k in nbr.lsr_outstanding if k in nbr.requests)
            if nbr.lsr_outstanding and nbr.state in _EXCHANGING:
                self._counters["retransmitted_lsrs"] += 1
                self._send_lsr(iface, nbr, now_ns, retransmission=True)
            else:
                nbr.lsr_deadline = None
                self._request_next(iface, nbr, now_ns)
        due = nbr.due_retransmits(now_ns, rxmt)
        if due:
            entries = [self._lsdb[h.key] for h in due if h.key in self._lsdb]
            self._send_entries(
                iface, self._to_neighbor(iface, nbr), entries, now_ns, nbr=nbr, retransmission=True
            )
        deadline = self._problem_deadline(iface, nbr)
        if deadline is not None and deadline <= now_ns:
            nbr.problem_reported = True
            self._emit(self._diagnose(iface, nbr, now_ns))

    def _problem_deadline(self, iface: Interface, nbr: Neighbor) -> int | None:
        if nbr.state is not NeighborState.EXSTART or nbr.problem_reported:
            return None
        if nbr.exstart_since_ns is None:
            return None
        return (
            nbr.exstart_since_ns
            + iface.config.exstart_problem_after * iface.config.rxmt_interval_ns
        )

    def _diagnose(self, iface: Interface, nbr: Neighbor, now_ns: int) -> AdjacencyProblem:
        mtu = iface.config.mtu
        waited = (now_ns - (nbr.exstart_since_ns or now_ns)) / NS
        if nbr.mtu_rejects:
            cause = "mtu"
            detail = (
                f"stuck in ExStart for {waited:.1f} s: the neighbour announces MTU {nbr.peer_mtu},"
                f" above our {mtu}; set the same MTU on both ends"
            )
        elif nbr.peer_mtu is not None and nbr.peer_mtu < mtu:
            cause = "mtu"
            detail = (
                f"stuck in ExStart for {waited:.1f} s: the neighbour announces MTU {nbr.peer_mtu},"
                f" below our {mtu}, and so rejects our DBDs; set the same MTU on both ends"
            )
        elif iface.own_rid_seen:
            cause = "router-id"
            detail = (
                f"stuck in ExStart for {waited:.1f} s: packets with our Router ID {self._rid}"
                " were seen on this link; give the emulated router another Router ID"
            )
        elif nbr.dbd_received == 0:
            cause = "mtu"
            detail = (
                f"stuck in ExStart for {waited:.1f} s: the neighbour never answered our DBDs;"
                f" its MTU is probably below our {mtu} (it rejects them), or it uses our Router"
                " ID; check both"
            )
        else:
            cause = "no-answer"
            detail = (
                f"stuck in ExStart for {waited:.1f} s although DBDs arrive: master/slave"
                " negotiation does not complete; look for a Router ID clash"
            )
        return AdjacencyProblem(now_ns, iface.name, nbr.router_id, nbr.state, cause, detail)
