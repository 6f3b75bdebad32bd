"""Time the OSPF codec and the emulated router on a bulk of AS-external-LSAs (no sockets).

    python benchmarks/bench_ospf_codec.py [--count 20000] [--repeat 5]

Stages, each timed separately (median and range over the repeats, wall clock, one process):
  make       `make_lsa` for every external (struct packing and the Fletcher checksum)
  pack       grouping into MTU-1500 Link State Updates and encoding the packets
  decode     `decode_packet` of every LSU
  originate  `EmulatedRouter.originate` with one Full neighbour (install, retransmit list,
             flood queue, events) until the LSUs are queued
  receive    the neighbour processing every LSU (checksums, §13 steps, acks queued)
  ack        the originator processing the neighbour's LSAcks (retransmit list drained)

Figures depend on the machine and on what else runs on it; report them with that context.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface

from twamp.ospf.events import NS, InterfaceConfig, NeighborState
from twamp.ospf.router import EmulatedRouter
from twamp.ospf.topology import external_lsas
from twamp.ospf.wire import (
    INITIAL_SEQUENCE_NUMBER,
    PacketType,
    decode_packet,
    encode_lsu_payload,
    encode_packet_payload,
    make_lsa,
    pack_lsus,
)

GEN, DUT = IPv4Address("192.0.2.2"), IPv4Address("192.0.2.129")


def _adjacent_pair() -> tuple[EmulatedRouter, EmulatedRouter, int]:
    kw = {"hello_interval_s": 1, "dead_interval_s": 4}
    a = EmulatedRouter(GEN, [InterfaceConfig("a", IPv4Interface("192.0.2.2/30"), **kw)], now_ns=0)  # type: ignore[arg-type]
    b = EmulatedRouter(DUT, [InterfaceConfig("b", IPv4Interface("192.0.2.1/30"), **kw)], now_ns=0)  # type: ignore[arg-type]
    now = 0
    for _ in range(100):  # 10 s of simulated time at 100 ms steps: Full and all acked
        for r, peer, pif, src in ((a, b, "b", GEN), (b, a, "a", DUT)):
            r.tick(now)
            for tx in r.take_transmits():
                peer.receive(pif, src, tx.destination, tx.data, now)
        now += NS // 10
    full = NeighborState.FULL
    if a.neighbor_state("a", DUT) is not full or b.neighbor_state("b", GEN) is not full:
        raise SystemExit("the two emulated routers did not reach Full")
    return a, b, now


def run_once(count: int) -> dict[str, float]:
    specs = external_lsas(count, GEN)
    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> object:
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        return out

    raws = timed(
        "make",
        lambda: [
            make_lsa(
                s.ls_type, s.link_state_id, s.advertising_router, INITIAL_SEQUENCE_NUMBER, s.body
            )[1]
            for s in specs
        ],
    )
    assert isinstance(raws, list)
    packets = timed(
        "pack",
        lambda: [
            encode_packet_payload(
                GEN,
                IPv4Address(0),
                PacketType.LINK_STATE_UPDATE,
                encode_lsu_payload([raws[i] for i in g]),
            )
            for g in pack_lsus(raws, 1500)
        ],
    )
    assert isinstance(packets, list)
    timed("decode", lambda: [decode_packet(p) for p in packets])
    a, b, now = _adjacent_pair()
    sent = timed("originate", lambda: (a.originate(specs, now), a.take_transmits())[1])
    assert isinstance(sent, list)
    lsus = [t for t in sent if t.packet_type is PacketType.LINK_STATE_UPDATE]
    timed("receive", lambda: [b.receive("b", GEN, t.destination, t.data, now) for t in lsus])
    acks = [t for t in b.take_transmits() if t.packet_type is PacketType.LINK_STATE_ACK]
    timed("ack", lambda: [a.receive("a", DUT, t.destination, t.data, now) for t in acks])
    if a.retransmit_count() != 0 or len(b.lsdb) < count:
        raise SystemExit(f"{a.retransmit_count()} LSAs were not acknowledged")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = [run_once(args.count) for _ in range(args.repeat)]
    print(
        f"{args.count} AS-external-LSAs, MTU 1500, {args.repeat} runs (seconds, median [min-max])"
    )
    for stage in runs[0]:
        values = [r[stage] for r in runs]
        print(
            f"  {stage:<10} {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
        )


if __name__ == "__main__":
    main()
