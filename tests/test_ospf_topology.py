"""Topology generators: deterministic, inside the allowed ranges, validated, and usable."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

import pytest

from test_ospf_router import Net
from twamp.ospf.events import NS, InterfaceConfig, NeighborState
from twamp.ospf.router import EmulatedRouter
from twamp.ospf.topology import ALLOWED_RANGES, external_lsas, router_chain, router_grid
from twamp.ospf.wire import LinkType, LsaKey, LsaType, RouterLsaFlags

A = IPv4Address
US = A("192.0.2.2")


def _inside(addr: IPv4Address) -> bool:
    return any(addr in r for r in ALLOWED_RANGES)


def test_externals_are_consecutive_prefixes_of_the_range() -> None:
    specs = external_lsas(3, US, prefixes="198.18.0.0/15", prefix_len=24, metric=7)
    assert [str(s.link_state_id) for s in specs] == ["198.18.0.0", "198.18.1.0", "198.18.2.0"]
    assert all(s.body.mask == A("255.255.255.0") and s.body.metric == 7 for s in specs)  # type: ignore[union-attr]
    assert all(s.ls_type is LsaType.AS_EXTERNAL and s.advertising_router == US for s in specs)
    assert external_lsas(3, US, prefixes="198.18.0.0/15", prefix_len=24, metric=7) == specs
    many = external_lsas(20_000, US)
    assert len({s.key for s in many}) == 20_000
    assert all(s.link_state_id in IPv4Network("198.18.0.0/16") for s in many)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 513, "prefixes": "198.18.0.0/15", "prefix_len": 24}, "holds only 512"),
        ({"count": 1, "prefixes": "10.0.0.0/8"}, "outside"),
        ({"count": 1, "prefixes": "198.16.0.0/14"}, "outside"),
        ({"count": 1, "prefixes": "203.0.113.0/24", "prefix_len": 23}, "does not fit"),
        ({"count": 257, "prefixes": "203.0.113.0/24", "prefix_len": 32}, "holds only 256"),
    ],
)
def test_externals_validation(kwargs: dict[str, object], message: str) -> None:
    count = kwargs.pop("count")
    with pytest.raises(ValueError, match=message):
        external_lsas(count, US, **kwargs)  # type: ignore[arg-type]


def test_chain_links_each_router_to_its_neighbours() -> None:
    topo = router_chain(3, US)
    assert topo == router_chain(3, US)
    r1, r2, r3 = topo.router_ids
    assert all(_inside(r) for r in topo.router_ids)
    bodies = {s.link_state_id: s.body for s in topo.lsas}
    p2p = {
        rid: {link.link_id for link in body.links if link.link_type is LinkType.POINT_TO_POINT}  # type: ignore[union-attr]
        for rid, body in bodies.items()
    }
    assert p2p == {r1: {US, r2}, r2: {r1, r3}, r3: {r2}}
    assert [(str(x.link_id), x.link_type) for x in topo.attach_links] == [
        (str(r1), LinkType.POINT_TO_POINT)
    ]
    assert all(s.prefixlen == 32 and s.network_address in ALLOWED_RANGES[3] for s in topo.stubs)


def test_grid_degree_and_validation() -> None:
    topo = router_grid(3, 4, US)
    assert len(topo.lsas) == 12
    degrees = sorted(
        sum(link.link_type is LinkType.POINT_TO_POINT for link in s.body.links)  # type: ignore[union-attr]
        for s in topo.lsas
    )
    # 4 corners (2, the attached corner 3), 6 edge routers (3), 2 inner routers (4).
    assert degrees == [2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="holds only 254"):
        router_grid(16, 16, US)
    with pytest.raises(ValueError, match="outside"):
        router_chain(2, US, router_ids="10.1.0.0/24")
    with pytest.raises(ValueError, match="inside the emulated routers"):
        router_chain(2, "198.19.0.1")


def test_topology_reaches_a_peer_and_marks_us_asbr() -> None:
    topo = router_chain(4, US)
    cfg: dict[str, Any] = {"hello_interval_s": 1, "dead_interval_s": 4}
    gen = EmulatedRouter(
        US,
        [InterfaceConfig("g", IPv4Interface("192.0.2.2/30"), **cfg)],
        now_ns=0,
        extra_links=topo.attach_links,
    )
    dut = EmulatedRouter(
        "192.0.2.129", [InterfaceConfig("d", IPv4Interface("192.0.2.1/30"), **cfg)], now_ns=0
    )
    net = Net()
    net.attach("l", gen, "g")
    net.attach("l", dut, "d")
    gen.originate([*topo.lsas, *external_lsas(50, US)], 0)
    net.run(4 * NS)
    assert dut.neighbor_state("d", US) is NeighborState.FULL
    for spec in topo.lsas:
        assert spec.key in dut.lsdb
    assert sum(k.ls_type == LsaType.AS_EXTERNAL for k in dut.lsdb) == 50
    ours = dut.lsdb[LsaKey(1, US, US)].lsa.body
    assert ours.flags & RouterLsaFlags.E  # type: ignore[union-attr]
    assert topo.router_ids[0] in {x.link_id for x in ours.links}  # type: ignore[union-attr]
