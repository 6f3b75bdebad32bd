"""EmulatedRouter against scripted peers, without sockets.

Peers are other EmulatedRouter instances joined through a fake link (`Net`): zero-latency
delivery on the caller's clock, with hooks to drop or repeat chosen packets; the fault cases use
hand-made packets. Time only moves through `Net.run`, which jumps from one router deadline to
the next, so every timer (Hello, Wait, inactivity, retransmission, MinLSInterval) is exercised
exactly, and a 40-second scenario runs in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, TypeVar

import pytest

from twamp.ospf.events import (
    NS,
    AdjacencyProblem,
    DrChange,
    Event,
    InterfaceConfig,
    InterfaceState,
    LsaAckReceived,
    LsaFlushed,
    LsaOriginated,
    LsaReceived,
    LsaSpec,
    LsaStatus,
    MalformedPacket,
    NeighborState,
    NeighborStateChange,
    NetworkType,
    PacketRejected,
    RejectReason,
    Transmit,
)
from twamp.ospf.router import EmulatedRouter
from twamp.ospf.wire import (
    ALL_D_ROUTERS,
    ALL_SPF_ROUTERS,
    MAX_AGE,
    AsExternalLsaBody,
    DatabaseDescription,
    DbdFlags,
    Hello,
    LinkStateUpdate,
    LsaKey,
    LsaType,
    Options,
    PacketType,
    RouterLsaFlags,
    decode_lsa,
    decode_packet,
    encode_packet,
    make_lsa,
)

A = IPv4Address
E = TypeVar("E", bound=Event)
FULL = NeighborState.FULL
LOW, HIGH = A("192.0.2.2"), A("192.0.2.129")
MASK24 = A("255.255.255.0")


def cfg(name: str, addr: str, **kw: Any) -> InterfaceConfig:
    kw.setdefault("hello_interval_s", 1)
    kw.setdefault("dead_interval_s", 4)
    return InterfaceConfig(name, IPv4Interface(addr), **kw)


def external(adv: IPv4Address, i: int, metric: int = 20) -> LsaSpec:
    lsid = A(int(A("198.18.0.0")) + (i << 8))
    return LsaSpec(LsaType.AS_EXTERNAL, lsid, adv, AsExternalLsaBody(MASK24, metric))


@dataclass
class Sent:
    t_ns: int
    sender: EmulatedRouter
    tx: Transmit


@dataclass
class Net:
    """Routers' interfaces attached to named segments; delivers what they transmit."""

    now: int = 0
    ports: dict[str, list[tuple[EmulatedRouter, str]]] = field(default_factory=dict)
    drop: Callable[[Sent, EmulatedRouter], bool] | None = None
    repeat: Callable[[Sent, EmulatedRouter], bool] | None = None
    sent: list[Sent] = field(default_factory=list)
    events: list[tuple[EmulatedRouter, Event]] = field(default_factory=list)
    cut: set[tuple[int, str]] = field(default_factory=set)  # (id(router), ifname) not delivering

    def attach(self, segment: str, router: EmulatedRouter, ifname: str) -> None:
        self.ports.setdefault(segment, []).append((router, ifname))

    def routers(self) -> list[EmulatedRouter]:
        seen: dict[int, EmulatedRouter] = {}
        for ports in self.ports.values():
            for r, _ in ports:
                seen[id(r)] = r
        return list(seen.values())

    def _segment(self, router: EmulatedRouter, ifname: str) -> str:
        for seg, ports in self.ports.items():
            if any(r is router and i == ifname for r, i in ports):
                return seg
        raise KeyError(ifname)

    def note(self, router: EmulatedRouter, events: list[Event]) -> None:
        self.events.extend((router, e) for e in events)

    def deliver(self) -> None:
        for _ in range(10_000):
            moved = False
            for r in self.routers():
                for tx in r.take_transmits():
                    moved = True
                    self._deliver_one(Sent(self.now, r, tx))
            if not moved:
                return
        raise AssertionError("packets kept flowing without time passing")

    def _deliver_one(self, s: Sent) -> None:
        self.sent.append(s)
        if (id(s.sender), s.tx.ifname) in self.cut:
            return
        src = s.sender.interface_config(s.tx.ifname).address.ip
        for peer, pif in self.ports[self._segment(s.sender, s.tx.ifname)]:
            if peer is s.sender or (id(peer), pif) in self.cut:
                continue
            dst = s.tx.destination
            if not dst.is_multicast and dst != peer.interface_config(pif).address.ip:
                continue
            if self.drop is not None and self.drop(s, peer):
                continue
            times = 2 if self.repeat is not None and self.repeat(s, peer) else 1
            for _ in range(times):
                self.note(peer, peer.receive(pif, src, dst, s.tx.data, self.now))

    def run(self, until_ns: int) -> None:
        self.deliver()
        for _ in range(1_000_000):
            deadlines = [d for r in self.routers() if (d := r.next_deadline()) is not None]
            nxt = min(deadlines, default=until_ns + 1)
            if nxt > until_ns:
                self.now = until_ns
                return
            self.now = max(self.now, nxt)
            for r in self.routers():
                self.note(r, r.tick(self.now))
            self.deliver()
        raise AssertionError("no progress")

    def of(self, router: EmulatedRouter, kind: type[E]) -> list[E]:
        return [e for r, e in self.events if r is router and isinstance(e, kind)]

    def packets(self, sender: EmulatedRouter, ptype: PacketType) -> list[Sent]:
        return [s for s in self.sent if s.sender is sender and s.tx.packet_type is ptype]


def pair(
    rid_a: IPv4Address = LOW,
    rid_b: IPv4Address = HIGH,
    *,
    a_kw: dict[str, Any] | None = None,
    b_kw: dict[str, Any] | None = None,
    router_kw: dict[str, Any] | None = None,
) -> tuple[Net, EmulatedRouter, EmulatedRouter]:
    net = Net()
    a = EmulatedRouter(
        rid_a, [cfg("a0", "192.0.2.2/30", **(a_kw or {}))], now_ns=0, **(router_kw or {})
    )
    b = EmulatedRouter(
        rid_b, [cfg("b0", "192.0.2.1/30", **(b_kw or {}))], now_ns=0, **(router_kw or {})
    )
    net.attach("p2p", a, "a0")
    net.attach("p2p", b, "b0")
    return net, a, b


def assert_synchronised(a: EmulatedRouter, b: EmulatedRouter) -> None:
    assert set(a.lsdb) == set(b.lsdb)
    for key, entry in a.lsdb.items():
        assert b.lsdb[key].lsa.header.seq == entry.lsa.header.seq, key
        assert b.lsdb[key].lsa.header.checksum == entry.lsa.header.checksum, key


def states(net: Net, router: EmulatedRouter) -> list[NeighborState]:
    return [e.new for e in net.of(router, NeighborStateChange)]


# --- adjacency --------------------------------------------------------------------------------


@pytest.mark.parametrize("we_are_higher", [False, True])
def test_adjacency_reaches_full_in_both_dbd_roles(we_are_higher: bool) -> None:
    rid_a, rid_b = (HIGH, LOW) if we_are_higher else (LOW, HIGH)
    net, a, b = pair(rid_a, rid_b)
    net.run(3 * NS)
    assert a.neighbor_state("a0", rid_b) is FULL
    assert b.neighbor_state("b0", rid_a) is FULL
    (info,) = a.neighbors("a0")
    assert info.master is (not we_are_higher)  # the higher Router ID is the DBD master
    assert states(net, a) == [
        NeighborState.INIT,
        NeighborState.EXSTART,
        NeighborState.EXCHANGE,
        NeighborState.LOADING,
        FULL,
    ]
    # Router-LSAs re-originated on Full list the point-to-point link and the stub.
    net.run(5 * NS)
    assert_synchronised(a, b)
    body = a.lsdb[LsaKey(1, rid_a, rid_a)].lsa.body
    links = {(str(x.link_id), int(x.link_type)) for x in body.links}  # type: ignore[union-attr]
    assert links == {(str(rid_b), 1), ("192.0.2.0", 3)}
    assert a.retransmit_count() == 0 and b.retransmit_count() == 0
    # p2p: every packet goes to AllSPFRouters (RFC 2328 §8.1).
    assert {s.tx.destination for s in net.sent} == {ALL_SPF_ROUTERS}


def test_large_database_exchange_uses_mtu_sized_dbds_and_pipelined_lsrs() -> None:
    net, a, b = pair()
    b.originate([external(HIGH, i) for i in range(300)], 0)
    net.run(3 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL
    assert_synchronised(a, b)
    dbds = [decode_packet(s.tx.data) for s in net.packets(b, PacketType.DATABASE_DESCRIPTION)]
    counts = [len(p.body.lsa_headers) for p in dbds]  # type: ignore[union-attr]
    assert max(counts) == 72 and sum(counts) >= 301
    assert all(len(s.tx.data) + 20 <= 1500 for s in net.sent)
    lsrs = net.packets(a, PacketType.LINK_STATE_REQUEST)
    # Requests start in Exchange, as soon as a DBD names LSAs we lack (one DBD's worth each).
    assert [len(s.tx.keys) for s in lsrs] == [72, 72, 72, 72, 13]
    # Pipelined: each LSR goes out as soon as the previous one is answered (same instant),
    # never two in flight: between two of a's LSRs there is b's answering LSU.
    assert len({s.t_ns for s in lsrs}) == 1
    flow = [
        "R" if s.sender is a else "U"
        for s in net.sent
        if (s.sender is a and s.tx.packet_type is PacketType.LINK_STATE_REQUEST)
        or (s.sender is b and s.tx.packet_type is PacketType.LINK_STATE_UPDATE)
    ]
    assert "RR" not in "".join(flow)
    assert "".join(flow).count("R") == 5


def test_lsr_holds_at_most_121_keys_at_mtu_1500() -> None:
    lost: list[Sent] = []

    def drop(s: Sent, _peer: EmulatedRouter) -> bool:
        if s.tx.packet_type is PacketType.LINK_STATE_REQUEST and s.sender.router_id == LOW:
            if lost:
                return False
            lost.append(s)
            return True
        return False

    net, a, b = pair()
    net.drop = drop
    b.originate([external(HIGH, i) for i in range(300)], 0)
    net.run(12 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL
    lsrs = net.packets(a, PacketType.LINK_STATE_REQUEST)
    # The lost first LSR (72 keys) is resent after RxmtInterval; the request list has grown
    # meanwhile, so the next LSRs are full ones.
    sizes = [len(s.tx.keys) for s in lsrs]
    assert sizes[:3] == [72, 72, 121] and max(sizes) == 121
    assert lsrs[1].tx.retransmission and lsrs[1].t_ns - lsrs[0].t_ns == 5 * NS
    assert all(20 + len(s.tx.data) <= 1500 for s in lsrs)
    assert_synchronised(a, b)


def test_lost_dbd_is_retransmitted_after_rxmt_interval() -> None:
    lost: list[Sent] = []

    def drop(s: Sent, _peer: EmulatedRouter) -> bool:
        # The master's first DBD after negotiation (I bit clear) is lost once.
        if s.sender.router_id == HIGH and s.tx.packet_type is PacketType.DATABASE_DESCRIPTION:
            body = decode_packet(s.tx.data).body
            if not body.flags & DbdFlags.I and not lost:  # type: ignore[union-attr]
                lost.append(s)
                return True
        return False

    net, a, b = pair()
    net.drop = drop
    net.run(10 * NS)
    assert lost
    assert a.neighbor_state("a0", HIGH) is FULL
    resent = [s for s in net.packets(b, PacketType.DATABASE_DESCRIPTION) if s.tx.retransmission]
    assert resent and resent[0].t_ns - lost[0].t_ns == 5 * NS
    assert resent[0].tx.data == lost[0].tx.data


def test_repeated_dbd_makes_the_slave_repeat_not_restart() -> None:
    net, a, _b = pair()
    net.repeat = lambda s, _p: (
        s.sender.router_id == HIGH and s.tx.packet_type is PacketType.DATABASE_DESCRIPTION
    )
    net.run(3 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL
    assert a.counters["dbd_duplicate"] >= 1
    assert NeighborState.EXSTART not in states(net, a)[2:]


def test_lost_lsr_and_lsu_are_retransmitted() -> None:
    dropped: set[PacketType] = set()

    def drop(s: Sent, _peer: EmulatedRouter) -> bool:
        t = s.tx.packet_type
        if t in (PacketType.LINK_STATE_REQUEST,) and t not in dropped and s.sender.router_id == LOW:
            dropped.add(t)
            return True
        return False

    net, a, b = pair()
    b.originate([external(HIGH, i) for i in range(5)], 0)
    net.drop = drop
    net.run(10 * NS)
    assert dropped == {PacketType.LINK_STATE_REQUEST}
    assert a.neighbor_state("a0", HIGH) is FULL
    assert a.counters["retransmitted_lsrs"] == 1
    assert_synchronised(a, b)

    # Now a flooded LSU is lost: it stays on the retransmission list and goes again 5 s later.
    net.drop = lambda s, _p: (
        s.tx.packet_type is PacketType.LINK_STATE_UPDATE and not s.tx.retransmission
    )
    t0 = net.now
    b.originate([external(HIGH, 100)], t0)
    net.deliver()
    assert b.retransmit_count() == 1
    key = external(HIGH, 100).key
    assert b.awaiting_ack(key) == t0 and b.awaiting_ack(external(HIGH, 1).key) is None
    net.run(t0 + 5 * NS - 1)
    assert b.retransmit_count() == 1  # not retransmitted early
    assert b.awaiting_ack(key) == t0
    net.run(t0 + 5 * NS)
    assert b.retransmit_count() == 0 and b.awaiting_ack(key) is None
    (rx,) = [s for s in net.packets(b, PacketType.LINK_STATE_UPDATE) if s.tx.retransmission]
    assert rx.t_ns == t0 + 5 * NS and rx.tx.keys == (external(HIGH, 100).key,)
    assert_synchronised(a, b)


def test_repeated_lsu_is_a_duplicate_acked_directly() -> None:
    net, a, b = pair()
    net.run(3 * NS)
    net.repeat = lambda s, _p: s.tx.packet_type is PacketType.LINK_STATE_UPDATE
    b.originate([external(HIGH, 1)], net.now)
    net.deliver()
    got = [e for e in net.of(a, LsaReceived) if e.key == external(HIGH, 1).key]
    assert [e.status for e in got] == [LsaStatus.NEW, LsaStatus.DUPLICATE]
    acks = net.packets(a, PacketType.LINK_STATE_ACK)
    assert len(acks[-2:]) == 2 and all(external(HIGH, 1).key in s.tx.keys for s in acks[-2:])
    assert b.retransmit_count() == 0


def test_older_instance_gets_our_copy_back() -> None:
    net, a, b = pair()
    b.originate([external(HIGH, 1)], 0)
    net.run(3 * NS)
    b.originate([external(HIGH, 1, metric=30)], net.now)
    net.run(net.now + 2 * NS)
    newest = a.lsdb[external(HIGH, 1).key].lsa.header.seq
    # A hand-made copy with an older sequence number from b: a answers with its newer copy.
    lsa, raw = make_lsa(
        5, external(HIGH, 1).link_state_id, HIGH, newest - 1, AsExternalLsaBody(MASK24, 20)
    )
    pkt = encode_packet(HIGH, A(0), LinkStateUpdate((lsa,), (raw,)))
    events = a.receive("a0", A("192.0.2.1"), ALL_SPF_ROUTERS, pkt, net.now)
    (ev,) = [e for e in events if isinstance(e, LsaReceived)]
    assert ev.status is LsaStatus.OLDER
    (tx,) = a.take_transmits()
    assert tx.packet_type is PacketType.LINK_STATE_UPDATE and tx.seqs == (newest,)


# --- restarts and mismatches ---------------------------------------------------------------------


def test_peer_restart_one_way_hello_then_back_to_full() -> None:
    net, a, _b = pair()
    net.run(3 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL
    # b restarts: a fresh instance with the same Router ID, whose Hellos do not list a yet.
    b2 = EmulatedRouter(HIGH, [cfg("b0", "192.0.2.1/30")], now_ns=net.now)
    net.ports["p2p"] = [(a, "a0"), (b2, "b0")]
    t_restart = net.now
    net.run(net.now + 5 * NS)
    changes = [e for e in net.of(a, NeighborStateChange) if e.t_ns >= t_restart]
    assert changes[0].cause == "1-WayReceived" and changes[0].new is NeighborState.INIT
    assert a.neighbor_state("a0", HIGH) is FULL and b2.neighbor_state("b0", LOW) is FULL
    assert_synchronised(a, b2)


def test_seq_number_mismatch_returns_to_exstart() -> None:
    net, a, _b = pair()
    net.run(3 * NS)
    dbd = DatabaseDescription(1500, Options.E, DbdFlags.MS, 12345)
    pkt = encode_packet(HIGH, A(0), dbd)
    events = a.receive("a0", A("192.0.2.1"), ALL_SPF_ROUTERS, pkt, net.now)
    (change,) = [e for e in events if isinstance(e, NeighborStateChange)]
    assert (change.old, change.new, change.cause) == (
        FULL,
        NeighborState.EXSTART,
        "SeqNumberMismatch",
    )
    net.run(net.now + 12 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL


def test_mtu_mismatch_keeps_exstart_and_is_diagnosed() -> None:
    net, a, b = pair(b_kw={"mtu": 9000})
    net.run(20 * NS)
    assert a.neighbor_state("a0", HIGH) is NeighborState.EXSTART
    rejected = [e for e in net.of(a, PacketRejected) if e.reason is RejectReason.MTU_MISMATCH]
    assert rejected and "9000" in rejected[0].detail
    (problem,) = net.of(a, AdjacencyProblem)
    assert problem.likely_cause == "mtu" and "9000" in problem.detail
    assert problem.t_ns - rejected[0].t_ns <= 3 * 5 * NS + NS
    # b's side: its DBDs are never answered; it sees a's (smaller) MTU, so it too is stuck,
    # and reports the likely cause from silence.
    (bprob,) = net.of(b, AdjacencyProblem)
    assert bprob.likely_cause == "mtu"


def test_router_id_clash_is_reported() -> None:
    net, a, _b = pair(LOW, LOW)
    net.run(3 * NS)
    assert a.neighbors() == []
    (problem,) = net.of(a, AdjacencyProblem)
    assert problem.likely_cause == "router-id"
    assert a.counters["rejected_own-router-id"] >= 2


def test_bad_packets_are_counted_not_raised() -> None:
    net, a, _b = pair()
    net.run(3 * NS)
    src = A("192.0.2.1")
    assert isinstance(
        a.receive("a0", src, ALL_SPF_ROUTERS, b"\x02\x01garbage", net.now)[0], MalformedPacket
    )
    hello = Hello(A("255.255.255.252"), 1, Options.E, 1, 4, A(0), A(0), (LOW,))
    wrong_area = encode_packet(HIGH, A("0.0.0.1"), hello)
    (ev,) = a.receive("a0", src, ALL_SPF_ROUTERS, wrong_area, net.now)
    assert isinstance(ev, PacketRejected) and ev.reason is RejectReason.WRONG_AREA
    bad_dead = encode_packet(
        HIGH, A(0), Hello(A("255.255.255.252"), 1, Options.E, 1, 40, A(0), A(0), (LOW,))
    )
    (ev,) = a.receive("a0", src, ALL_SPF_ROUTERS, bad_dead, net.now)
    assert isinstance(ev, PacketRejected) and ev.reason is RejectReason.HELLO_MISMATCH
    assert a.counters["malformed"] == 1
    assert a.neighbor_state("a0", HIGH) is FULL


# --- self-originated LSAs from an earlier run (RFC 2328 §13.4) ------------------------------------


def test_stale_self_originated_lsas_are_superseded_or_flushed() -> None:
    net, a, b = pair(router_kw={"min_ls_interval_ns": 0})
    keep, drop = external(LOW, 1), external(LOW, 2)
    a.originate([keep, drop], 0)
    for i in range(5):  # the earlier run went up to seq Initial+5
        a.originate([external(LOW, 1, metric=30 + i), external(LOW, 2, metric=30 + i)], i)
    net.run(3 * NS)
    old_seq = b.lsdb[keep.key].lsa.header.seq
    assert old_seq == -0x7FFFFFFF + 5
    # The emulated router restarts with the same Router ID and originates only `keep`.
    a2 = EmulatedRouter(LOW, [cfg("a0", "192.0.2.2/30")], now_ns=net.now, min_ls_interval_ns=0)
    a2.originate([keep], net.now)
    net.ports["p2p"] = [(a2, "a0"), (b, "b0")]
    net.run(net.now + 10 * NS)
    assert a2.neighbor_state("a0", HIGH) is FULL
    assert b.lsdb[keep.key].lsa.header.seq == old_seq + 1  # jumped past the old instance
    assert b.lsdb[keep.key].lsa.body == keep.body
    received = [e for e in net.of(a2, LsaReceived) if e.status is LsaStatus.SELF_ORIGINATED]
    assert {e.key for e in received} >= {keep.key, drop.key}
    (flushed,) = net.of(a2, LsaFlushed)
    assert flushed.key == drop.key
    assert drop.key not in b.lsdb and drop.key not in a2.lsdb  # flushed, acked, removed
    assert a2.retransmit_count() == 0


# --- flooding ------------------------------------------------------------------------------------


def test_flooding_packs_lsus_and_drains_retransmit_list_on_ack() -> None:
    net, a, _b = pair()
    net.run(3 * NS)
    net.drop = lambda s, _p: s.tx.packet_type is PacketType.LINK_STATE_ACK
    a.originate([external(LOW, i) for i in range(100)], net.now)
    net.deliver()
    # The 100 externals, then our router-LSA re-originated with the E bit (now an ASBR).
    assert a.retransmit_count("a0") == 101
    lsus = [s for s in net.packets(a, PacketType.LINK_STATE_UPDATE) if len(s.tx.keys) > 1]
    assert [len(s.tx.keys) for s in lsus] == [40, 40, 21]
    assert lsus[-1].tx.keys[-1] == LsaKey(1, LOW, LOW)
    assert all(20 + len(s.tx.data) <= 1500 for s in lsus)
    net.drop = None
    net.run(net.now + 5 * NS)  # retransmitted, now acked
    assert a.retransmit_count() == 0
    acks = net.of(a, LsaAckReceived)
    assert sum(len(e.cleared) for e in acks) >= 100
    assert a.counters["retransmitted_lsas"] == 101


def test_min_ls_interval_spaces_reoriginations() -> None:
    net, a, b = pair()
    net.run(3 * NS)
    spec = external(LOW, 7)
    t0 = net.now
    net.note(a, a.originate([spec], t0))
    net.run(t0 + NS // 5)
    net.note(a, a.originate([external(LOW, 7, metric=50)], net.now))
    net.note(a, a.originate([external(LOW, 7, metric=60)], net.now))  # only the latest goes
    net.run(t0 + 3 * NS)
    origs = [e for e in net.of(a, LsaOriginated) if e.key == spec.key]
    assert [e.t_ns - t0 for e in origs] == [0, NS]
    assert b.lsdb[spec.key].lsa.body.metric == 60  # type: ignore[union-attr]
    assert b.lsdb[spec.key].lsa.header.seq == origs[1].seq


def test_three_routers_flood_through_the_middle() -> None:
    net = Net()
    a = EmulatedRouter("10.0.0.1", [cfg("x", "192.0.2.1/30")], now_ns=0)
    m = EmulatedRouter(
        "10.0.0.2", [cfg("x", "192.0.2.2/30"), cfg("y", "198.51.100.1/30")], now_ns=0
    )
    c = EmulatedRouter("10.0.0.3", [cfg("y", "198.51.100.2/30")], now_ns=0)
    net.attach("s1", a, "x")
    net.attach("s1", m, "x")
    net.attach("s2", m, "y")
    net.attach("s2", c, "y")
    net.run(4 * NS)
    a.originate([external(A("10.0.0.1"), 3)], net.now)
    net.run(net.now + NS)
    assert c.lsdb[external(A("10.0.0.1"), 3).key].lsa.header.seq == -0x7FFFFFFF
    assert m.retransmit_count() == 0 and a.retransmit_count() == 0
    assert_synchronised(a, c)


def test_set_flooding_off_floods_nothing_out_of_that_interface() -> None:
    """RFC 4061 §5.2's collector: it learns the generator's LSAs but floods nothing to the DUT
    (here c learns a's LSA over a direct link and must not pass it on to m); back on, it
    floods again. Acks are unchanged: m's own flood to c is still acknowledged."""
    net = Net()
    a = EmulatedRouter("10.0.0.1", [cfg("d", "192.0.2.9/30")], now_ns=0)
    m = EmulatedRouter("10.0.0.2", [cfg("y", "198.51.100.1/30")], now_ns=0)
    c = EmulatedRouter(
        "10.0.0.3", [cfg("d", "192.0.2.10/30"), cfg("y", "198.51.100.2/30")], now_ns=0
    )
    net.attach("ac", a, "d")
    net.attach("ac", c, "d")
    net.attach("cm", c, "y")
    net.attach("cm", m, "y")
    net.run(4 * NS)
    c.set_flooding("y", False, net.now)
    before = len(net.packets(c, PacketType.LINK_STATE_UPDATE))
    spec = external(A("10.0.0.1"), 7)
    a.originate([spec], net.now)
    net.run(net.now + 2 * NS)
    assert spec.key in c.lsdb and spec.key not in m.lsdb
    assert len(net.packets(c, PacketType.LINK_STATE_UPDATE)) == before and c.retransmit_count() == 0
    m.originate([external(A("10.0.0.2"), 8)], net.now)  # m's flood to c: acked as ever
    net.run(net.now + 3 * NS)
    assert m.retransmit_count() == 0 and external(A("10.0.0.2"), 8).key in c.lsdb
    c.set_flooding("y", True, net.now)
    spec2 = external(A("10.0.0.1"), 9)
    a.originate([spec2], net.now)
    net.run(net.now + 2 * NS)
    assert spec2.key in m.lsdb


# --- interface events ---------------------------------------------------------------------------


def test_stop_hellos_lets_the_peer_dead_interval_expire() -> None:
    net, a, b = pair()
    net.run(3 * NS)
    t0 = net.now
    a.stop_hellos("a0", t0)
    net.run(t0 + 6 * NS)
    assert not [s for s in net.sent if s.sender is a and s.t_ns > t0]
    assert a.neighbor_state("a0", HIGH) is FULL  # frozen on our side
    downs = [e for e in net.of(b, NeighborStateChange) if e.new is NeighborState.DOWN]
    assert len(downs) == 1 and downs[0].cause == "InactivityTimer"
    last_hello = max(s.t_ns for s in net.packets(a, PacketType.HELLO))
    assert downs[0].t_ns - last_hello == 4 * NS
    t1 = net.now
    a.start_hellos("a0", t1)
    net.run(t1 + 8 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL and b.neighbor_state("b0", LOW) is FULL
    # b restarts the exchange at once; a, still Full, takes b's initial DBD as a sequence
    # mismatch (RFC 2328 §10.6) and answers b's retransmission one RxmtInterval later.
    causes = [e.cause for e in net.of(a, NeighborStateChange) if e.t_ns >= t1]
    assert causes[0] == "SeqNumberMismatch"


def test_interface_down_and_up() -> None:
    net, a, b = pair()
    net.run(3 * NS)
    ev = a.interface_down("a0", net.now)
    assert any(isinstance(e, NeighborStateChange) and e.new is NeighborState.DOWN for e in ev)
    assert a.interface_state("a0") is InterfaceState.DOWN and a.neighbors() == []
    net.cut.add((id(a), "a0"))
    net.run(net.now + 5 * NS)
    assert b.neighbors() == []
    net.cut.clear()
    a.interface_up("a0", net.now)
    net.run(net.now + 3 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL


# --- broadcast: DR election ---------------------------------------------------------------------


def lan(*routers: tuple[str, str, int]) -> tuple[Net, list[EmulatedRouter]]:
    net = Net()
    out = []
    for rid, addr, prio in routers:
        r = EmulatedRouter(
            rid, [cfg("e0", addr, network_type=NetworkType.BROADCAST, priority=prio)], now_ns=0
        )
        net.attach("lan", r, "e0")
        out.append(r)
    return net, out


def test_dr_election_and_network_lsa() -> None:
    net, (r1, r2, r3, r4) = lan(
        ("10.0.0.9", "203.0.113.9/24", 1),
        ("10.0.0.5", "203.0.113.5/24", 1),
        ("10.0.0.3", "203.0.113.3/24", 0),
        ("10.0.0.4", "203.0.113.4/24", 0),
    )
    net.run(2 * NS)
    assert r1.interface_state("e0") is InterfaceState.WAITING
    assert r3.interface_state("e0") is InterfaceState.DR_OTHER  # priority 0: never waits
    net.run(8 * NS)
    assert r1.interface_state("e0") is InterfaceState.DR
    assert r2.interface_state("e0") is InterfaceState.BACKUP
    for r in (r1, r2, r3, r4):
        assert r.dr("e0") == A("203.0.113.9") and r.bdr("e0") == A("203.0.113.5")
    # DROthers are adjacent to DR and BDR only; 2-Way between themselves.
    assert r3.neighbor_state("e0", A("10.0.0.9")) is FULL
    assert r3.neighbor_state("e0", A("10.0.0.5")) is FULL
    assert r3.neighbor_state("e0", A("10.0.0.4")) is NeighborState.TWO_WAY
    net_lsa = r3.lsdb[LsaKey(2, A("203.0.113.9"), A("10.0.0.9"))].lsa.body
    assert set(net_lsa.attached_routers) == {A(f"10.0.0.{i}") for i in (9, 5, 3, 4)}  # type: ignore[union-attr]
    # A DROther floods to AllDRouters; the DR refloods to AllSPFRouters.
    t0 = net.now
    r3.originate([external(A("10.0.0.3"), 1)], t0)
    net.deliver()
    floods = [
        s for s in net.sent if s.t_ns == t0 and s.tx.packet_type is PacketType.LINK_STATE_UPDATE
    ]
    assert floods[0].sender is r3 and floods[0].tx.destination == ALL_D_ROUTERS
    assert any(s.sender is r1 and s.tx.destination == ALL_SPF_ROUTERS for s in floods)
    assert external(A("10.0.0.3"), 1).key in r4.lsdb
    # r4 (DROther) heard r3's AllDRouters flood and ignored it: it got the LSA from the DR.
    assert r4.counters["rejected_destination"] >= 1
    assert not [e for e in net.of(r4, PacketRejected) if e.reason is RejectReason.DESTINATION]
    assert all(r.retransmit_count() == 0 for r in (r1, r2, r3, r4))
    # Hellos reported DR changes as they were seen.
    seen = [e for e in net.of(r3, DrChange) if e.dr == A("203.0.113.9")]
    assert seen


def test_dr_failure_promotes_the_bdr() -> None:
    net, (r1, r2, r3) = lan(
        ("10.0.0.9", "203.0.113.9/24", 1),
        ("10.0.0.5", "203.0.113.5/24", 1),
        ("10.0.0.3", "203.0.113.3/24", 0),
    )
    net.run(10 * NS)
    assert r1.interface_state("e0") is InterfaceState.DR
    t0 = net.now
    r1.stop_hellos("e0", t0)
    net.run(t0 + 6 * NS)
    assert r2.interface_state("e0") is InterfaceState.DR
    assert r3.dr("e0") == A("203.0.113.5")
    new_net = LsaKey(2, A("203.0.113.5"), A("10.0.0.5"))
    assert new_net in r3.lsdb
    body = r3.lsdb[new_net].lsa.body
    assert set(body.attached_routers) == {A("10.0.0.5"), A("10.0.0.3")}  # type: ignore[union-attr]
    # The old DR's network-LSA is still r1's: only r1 could flush it, and r1 is silent.
    assert r3.lsdb[LsaKey(2, A("203.0.113.9"), A("10.0.0.9"))].age(net.now) < MAX_AGE


def test_next_deadline_is_the_hello_timer_when_idle() -> None:
    net, a, _b = pair()
    net.run(3 * NS)
    d = a.next_deadline()
    assert d is not None and net.now < d <= net.now + NS
    assert a.tick(d - 1) == [] and a.take_transmits() == []
    a.tick(d)
    (hello,) = a.take_transmits()
    assert hello.packet_type is PacketType.HELLO and hello.t_ns == d


def test_repeated_lsr_is_answered_twice_without_restarting() -> None:
    net, a, b = pair()
    b.originate([external(HIGH, i) for i in range(10)], 0)
    net.repeat = lambda s, _p: s.tx.packet_type is PacketType.LINK_STATE_REQUEST
    net.run(3 * NS)
    assert a.neighbor_state("a0", HIGH) is FULL
    assert_synchronised(a, b)
    got = [e.status for e in net.of(a, LsaReceived) if e.key == external(HIGH, 3).key]
    assert got[:2] == [LsaStatus.NEW, LsaStatus.DUPLICATE]
    assert not [c for c in states(net, a) if c is NeighborState.EXSTART][1:]


def test_delayed_acks_are_gathered_into_one_packet() -> None:
    net, a, b = pair(a_kw={"ack_delay_ns": NS // 2})
    net.run(3 * NS)
    t0 = net.now
    b.originate([external(HIGH, i) for i in range(3)], t0)
    b.originate([external(HIGH, 10)], t0)
    net.run(t0 + NS)
    acks = [s for s in net.packets(a, PacketType.LINK_STATE_ACK) if s.t_ns >= t0]
    # Four externals and b's router-LSA (E bit set): five acks, one packet, 0.5 s later.
    assert [(s.t_ns - t0, len(s.tx.keys)) for s in acks] == [(NS // 2, 5)]
    assert b.retransmit_count() == 0


def test_flushing_many_lsas_removes_them_once_acked() -> None:
    net, a, b = pair()
    net.run(3 * NS)
    specs = [external(LOW, i) for i in range(500)]
    a.originate(specs, net.now)
    net.run(net.now + NS)
    assert all(s.key in b.lsdb for s in specs)
    events = a.flush([s.key for s in specs], net.now)
    assert sum(isinstance(e, LsaFlushed) for e in events) == 500
    assert a.lsdb[specs[0].key].age(net.now) == MAX_AGE
    net.deliver()
    assert not any(s.key in a.lsdb or s.key in b.lsdb for s in specs)
    assert a.retransmit_count() == 0
    with pytest.raises(ValueError, match="not an LSA this router originates"):
        a.flush([specs[0].key], net.now)
    # Originated again later: the sequence continues past the flushed instance.
    net.note(a, a.originate([specs[0]], net.now + 2 * NS))
    net.deliver()
    assert b.lsdb[specs[0].key].lsa.header.seq == -0x7FFFFFFF + 1


def test_peer_restart_during_loading() -> None:
    # a's LSRs are lost, so a sits in Loading; then b restarts (fresh instance, same ID).
    net, a, b = pair()
    b.originate([external(HIGH, i) for i in range(20)], 0)
    net.drop = lambda s, _p: s.tx.packet_type is PacketType.LINK_STATE_REQUEST
    net.run(2 * NS)
    assert a.neighbor_state("a0", HIGH) is NeighborState.LOADING
    b2 = EmulatedRouter(HIGH, [cfg("b0", "192.0.2.1/30")], now_ns=net.now)
    b2.originate([external(HIGH, i) for i in range(20)], net.now)
    net.ports["p2p"] = [(a, "a0"), (b2, "b0")]
    net.drop = None
    t0 = net.now
    net.run(t0 + 10 * NS)
    causes = [e.cause for e in net.of(a, NeighborStateChange) if e.t_ns >= t0]
    assert causes[0] == "1-WayReceived"
    assert a.neighbor_state("a0", HIGH) is FULL and b2.neighbor_state("b0", LOW) is FULL
    assert a.neighbors("a0")[0].request_count == 0
    assert_synchronised(a, b2)


def test_transmits_name_what_they_carry() -> None:
    net, a, _b = pair()
    net.run(3 * NS)
    specs = [external(LOW, i) for i in range(3)]
    a.originate(specs, net.now)
    (lsu,) = [t for t in a.take_transmits() if t.packet_type is PacketType.LINK_STATE_UPDATE]
    keys = (*(s.key for s in specs), LsaKey(1, LOW, LOW))  # and our router-LSA, now with E
    assert lsu.keys == keys
    assert lsu.seqs == tuple(a.lsdb[k].lsa.header.seq for k in keys)
    assert lsu.destination == ALL_SPF_ROUTERS and not lsu.retransmission
    body = decode_packet(lsu.data).body
    assert tuple(x.key for x in body.lsas) == lsu.keys  # type: ignore[union-attr]


def test_own_lsas_are_refreshed_every_ls_refresh_time() -> None:
    slow = {"hello_interval_s": 10, "dead_interval_s": 40}
    net, a, b = pair(a_kw=slow, b_kw=slow)
    spec = external(LOW, 1)
    net.note(a, a.originate([spec], 0))
    net.run(60 * NS)
    first = b.lsdb[spec.key].lsa.header.seq
    net.run(1800 * NS - 1)
    assert b.lsdb[spec.key].lsa.header.seq == first
    net.run(1801 * NS)
    assert b.lsdb[spec.key].lsa.header.seq == first + 1
    refreshes = [e for e in net.of(a, LsaOriginated) if e.reason == "refresh"]
    assert {e.key for e in refreshes} >= {spec.key}
    assert all(e.t_ns >= 1800 * NS for e in refreshes)
    assert b.lsdb[spec.key].age(net.now) < 5


def test_lsa_with_bad_checksum_is_dropped_unacked() -> None:
    net, a, _b = pair()
    net.run(3 * NS)
    _lsa, raw = make_lsa(5, A("198.18.9.0"), HIGH, 1, AsExternalLsaBody(MASK24, 20))
    bad = bytearray(raw)
    bad[-1] ^= 0x5A
    good_lsa, good_raw = make_lsa(5, A("198.18.10.0"), HIGH, 1, AsExternalLsaBody(MASK24, 20))
    pkt = encode_packet(
        HIGH, A(0), LinkStateUpdate((decode_lsa(bytes(bad)), good_lsa), (bytes(bad), good_raw))
    )
    events = a.receive("a0", A("192.0.2.1"), ALL_SPF_ROUTERS, pkt, net.now)
    statuses = [e.status for e in events if isinstance(e, LsaReceived)]
    assert statuses == [LsaStatus.BAD_CHECKSUM, LsaStatus.NEW]  # the rest of the packet is used
    assert LsaKey(5, A("198.18.9.0"), HIGH) not in a.lsdb
    (ack,) = [t for t in a.take_transmits() if t.packet_type is PacketType.LINK_STATE_ACK]
    assert ack.keys == (good_lsa.key,)


def test_originating_externals_sets_and_flushing_them_clears_the_e_bit() -> None:
    # Externals originated after Full: without the E bit in our router-LSA the DUT acks them
    # all but installs none (RFC 2328 §16.4 (3)), so it must follow at once (MinLSInterval).
    net, a, b = pair()
    net.run(5 * NS)
    ours = LsaKey(1, LOW, LOW)

    def e_bit() -> bool:
        return bool(b.lsdb[ours].lsa.body.flags & RouterLsaFlags.E)  # type: ignore[union-attr]

    assert not e_bit()
    specs = [external(LOW, i) for i in range(3)]
    t0 = net.now
    net.note(a, a.originate(specs, t0))
    net.run(t0 + 2 * NS)
    assert e_bit()
    origs = [e for e in net.of(a, LsaOriginated) if e.key == ours and e.t_ns >= t0]
    assert len(origs) == 1 and origs[0].t_ns - t0 <= NS
    net.note(a, a.flush([s.key for s in specs[:2]], net.now))
    net.run(net.now + 2 * NS)
    assert e_bit()  # one external left
    net.note(a, a.flush([specs[2].key], net.now))
    net.run(net.now + 2 * NS)
    assert not e_bit()
