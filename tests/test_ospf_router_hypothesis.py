"""Property: whatever packets a lossy link drops (or repeats) for a while, two emulated routers
end up Full with identical databases and empty retransmission lists once the link heals."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_ospf_router import HIGH, LOW, Sent, assert_synchronised, external, pair
from twamp.ospf.events import NS, NeighborState
from twamp.ospf.router import EmulatedRouter


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.3),
    lossy_s=st.integers(1, 30),
    n_a=st.integers(0, 150),
    n_b=st.integers(0, 150),
    a_higher=st.booleans(),
)
def test_lossy_link_converges(
    seed: int, loss: float, dup: float, lossy_s: int, n_a: int, n_b: int, a_higher: bool
) -> None:
    rng = random.Random(seed)
    rid_a, rid_b = (HIGH, LOW) if a_higher else (LOW, HIGH)
    net, a, b = pair(rid_a, rid_b)
    a.originate([external(rid_a, i) for i in range(n_a)], 0)
    b.originate([external(rid_b, 1000 + i) for i in range(n_b)], 0)

    def lossy(_s: Sent, _p: EmulatedRouter) -> bool:
        return net.now < lossy_s * NS and rng.random() < loss

    def repeated(_s: Sent, _p: EmulatedRouter) -> bool:
        return net.now < lossy_s * NS and rng.random() < dup

    net.drop, net.repeat = lossy, repeated
    # A healed link converges within: dead interval (a dropped adjacency comes back) plus a
    # few RxmtIntervals for the exchange and the last retransmissions.
    net.run((lossy_s + 40) * NS)
    assert a.neighbor_state("a0", rid_b) is NeighborState.FULL
    assert b.neighbor_state("b0", rid_a) is NeighborState.FULL
    assert_synchronised(a, b)
    assert len(a.lsdb) == n_a + n_b + 2
    assert a.retransmit_count() == 0 and b.retransmit_count() == 0
    assert not [e for r, e in net.events if type(e).__name__ == "MalformedPacket"]
