"""Emulated topologies behind the emulated router: router-LSA chains and grids, N externals.

RFC 4061 builds its topologies from LSAs the generator announces (§5.3: "Build RFC topologies
from router-LSAs", research note §4.1 item 4, because FRR recomputes externals on a fixed 1 s
timer). Everything here is deterministic (the same arguments give the same LSAs) and returns
`LsaSpec`s, to which `EmulatedRouter.originate` gives sequence numbers and checksums.

Addresses come only from the documentation ranges (RFC 5737: 192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24) and the benchmarking range (RFC 2544 / RFC 6815: 198.18.0.0/15); a range
outside them, or a request for more prefixes or routers than a range holds, raises ValueError.
Defaults keep the sets apart: externals from 198.18.0.0/16, emulated Router IDs from
198.19.0.0/24, their loopback stubs from 198.19.1.0/24.

A chain or grid is attached to the emulated router by point-to-point links: pass
`Topology.attach_links` to `EmulatedRouter(extra_links=...)` (or `set_extra_links`) so our own
router-LSA names the first emulated router; without that link the DUT's SPF cannot reach them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from .events import LsaSpec
from .wire import (
    AsExternalLsaBody,
    LinkType,
    LsaType,
    RouterLink,
    RouterLsaBody,
    RouterLsaFlags,
)

__all__ = [
    "ALLOWED_RANGES",
    "Topology",
    "allowed_network",
    "external_lsas",
    "router_chain",
    "router_grid",
]

ALLOWED_RANGES: Final = tuple(
    IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15")
)
DEFAULT_EXTERNALS: Final = "198.18.0.0/16"
DEFAULT_ROUTER_IDS: Final = "198.19.0.0/24"
DEFAULT_STUBS: Final = "198.19.1.0/24"
_HOST: Final = IPv4Address("255.255.255.255")


def allowed_network(value: IPv4Network | str) -> IPv4Network:
    """`value` as a network, if it lies inside a documentation or benchmarking range."""
    net = IPv4Network(value)
    if not any(net.subnet_of(r) for r in ALLOWED_RANGES):
        ranges = ", ".join(map(str, ALLOWED_RANGES))
        raise ValueError(f"{net} is outside the ranges the lab may announce ({ranges})")
    return net


def _hosts(value: IPv4Network | str, count: int, what: str) -> list[IPv4Address]:
    """`count` consecutive addresses of `value`, skipping its network and broadcast address."""
    net = allowed_network(value)
    first = int(net.network_address) + (1 if net.prefixlen < 31 else 0)
    room = net.num_addresses - (2 if net.prefixlen < 31 else 0)
    if count > room:
        raise ValueError(f"{count} {what} requested, but {net} holds only {room}")
    return [IPv4Address(first + i) for i in range(count)]


def external_lsas(
    count: int,
    advertising_router: IPv4Address | str,
    *,
    prefixes: IPv4Network | str = DEFAULT_EXTERNALS,
    prefix_len: int = 32,
    metric: int = 20,
    e_bit: bool = True,
    route_tag: int = 0,
) -> list[LsaSpec]:
    """`count` AS-external-LSAs for consecutive /`prefix_len` prefixes of `prefixes`.

    The Link State ID is the prefix's network address (RFC 2328 §12.1.4; the prefixes never
    share one). Announcing externals makes the advertising router an ASBR: `EmulatedRouter`
    sets the E bit in its own router-LSA when it originates them.
    """
    net = allowed_network(prefixes)
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    if not net.prefixlen <= prefix_len <= 32:
        raise ValueError(f"prefix length /{prefix_len} does not fit inside {net}")
    room = 1 << (prefix_len - net.prefixlen)
    if count > room:
        raise ValueError(f"{count} /{prefix_len} prefixes requested, but {net} holds only {room}")
    adv = IPv4Address(advertising_router)
    mask = IPv4Network(f"0.0.0.0/{prefix_len}").netmask
    step = 1 << (32 - prefix_len)
    base = int(net.network_address)
    body = AsExternalLsaBody(mask, metric, e_bit, IPv4Address(0), route_tag)  # shared: frozen
    return [
        LsaSpec(LsaType.AS_EXTERNAL, IPv4Address(base + i * step), adv, body) for i in range(count)
    ]


@dataclass(frozen=True, slots=True)
class Topology:
    """Router-LSAs of emulated routers and the links that attach them to the emulated router."""

    lsas: tuple[LsaSpec, ...]
    attach_links: tuple[RouterLink, ...]
    router_ids: tuple[IPv4Address, ...]
    stubs: tuple[IPv4Network, ...]


def _p2p(to: IPv4Address, me: IPv4Address, cost: int) -> RouterLink:
    # Link Data of a numbered p2p link is the router's interface address; emulated routers
    # have none, so their Router ID stands in (the DUT only uses Link Data for next hops on
    # its own links, and these routers are not on its links).
    return RouterLink(to, me, LinkType.POINT_TO_POINT, cost)


def _build(
    adjacency: Sequence[Sequence[int]],
    attach_to: IPv4Address | str,
    *,
    cost: int,
    router_ids: IPv4Network | str,
    stubs: IPv4Network | str,
) -> Topology:
    n = len(adjacency)
    rids = _hosts(router_ids, n, "router IDs")
    loops = _hosts(stubs, n, "loopback stubs")
    ours = IPv4Address(attach_to)
    if ours in rids:
        raise ValueError(f"the emulated router's ID {ours} is inside the emulated routers' IDs")
    lsas: list[LsaSpec] = []
    for i, peers in enumerate(adjacency):
        links = [_p2p(rids[j], rids[i], cost) for j in peers]
        if i == 0:
            links.insert(0, _p2p(ours, rids[0], cost))
        links.append(RouterLink(loops[i], _HOST, LinkType.STUB, 1))
        body = RouterLsaBody(RouterLsaFlags(0), tuple(links))
        lsas.append(LsaSpec(LsaType.ROUTER, rids[i], rids[i], body))
    attach = (_p2p(rids[0], ours, cost),) if n else ()
    return Topology(tuple(lsas), attach, tuple(rids), tuple(IPv4Network(f"{a}/32") for a in loops))


def router_chain(
    length: int,
    attach_to: IPv4Address | str,
    *,
    cost: int = 10,
    router_ids: IPv4Network | str = DEFAULT_ROUTER_IDS,
    stubs: IPv4Network | str = DEFAULT_STUBS,
) -> Topology:
    """`length` emulated routers in a line behind `attach_to` (our Router ID): us - R1 - ... - Rn.

    Each has point-to-point links to its neighbours in the chain and a /32 loopback stub.
    """
    if length < 0:
        raise ValueError(f"length must not be negative, got {length}")
    adjacency = [[j for j in (i - 1, i + 1) if 0 <= j < length] for i in range(length)]
    return _build(adjacency, attach_to, cost=cost, router_ids=router_ids, stubs=stubs)


def router_grid(
    rows: int,
    cols: int,
    attach_to: IPv4Address | str,
    *,
    cost: int = 10,
    router_ids: IPv4Network | str = DEFAULT_ROUTER_IDS,
    stubs: IPv4Network | str = DEFAULT_STUBS,
) -> Topology:
    """A `rows` x `cols` grid of emulated routers, row-major, its corner (0, 0) attached to us.

    Each router links to its up/down/left/right neighbours: many equal-cost paths, which is what
    makes SPF work in RFC 4061 §5.3 grow with the grid.
    """
    if rows < 0 or cols < 0:
        raise ValueError(f"grid {rows} x {cols} must not be negative")
    adjacency: list[list[int]] = []
    for r in range(rows):
        for c in range(cols):
            near = [(r - 1, c), (r, c - 1), (r, c + 1), (r + 1, c)]
            adjacency.append([y * cols + x for y, x in near if 0 <= y < rows and 0 <= x < cols])
    return _build(adjacency, attach_to, cost=cost, router_ids=router_ids, stubs=stubs)
