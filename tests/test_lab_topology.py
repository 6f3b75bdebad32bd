"""The lab's namespaces, veths, bridge and link triggers (root; no routing daemon needed)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from conftest import require
from twamp.lab import TOPOLOGIES, Lab, LabError, lab_objects, netns
from twamp.lab.observers import FibWatcher, Probe
from twamp.ospf.eventlog import EventLog

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]
TAG = f"twolt{os.getpid() % 100000}"


@pytest.fixture(autouse=True)
def _root() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces)")


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_each_topology_builds_and_leaves_nothing(topology: str) -> None:
    log = EventLog.memory()
    with Lab(topology, tag=TAG, log=log) as lab:
        names = [lab.ns(r) for r in lab.roles]
        assert all(netns.exists(n) for n in names)
        for lk in lab.links:
            for p in (lk.a, lk.b):
                idx = lab.ifindex(p.role, p.ifname)
                link = lab.ipr(p.role).get_links(idx)[0]
                assert link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN"), (p, link)
                if p.addr is not None:
                    addrs = [a.get_attr("IFA_ADDRESS") for a in lab.ipr(p.role).get_addr(index=idx)]
                    assert p.ip in addrs
        topo = log.select("lab", "topology")[0]
        assert topo["name"] == topology and topo["namespaces"] == names
        # no lab device ever appears in the host namespace
        host = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert lab.prefix not in host and "eth-gen" not in host
    assert lab_objects(TAG)["namespaces"] == []
    assert log.select("lab", "teardown")


def test_bridge_joins_three_ports() -> None:
    with Lab("T3", tag=TAG) as lab:
        sw = lab.ipr("sw")
        br = sw.link_lookup(ifname="br0")[0]
        ports = [
            sw.get_links(i)[0]
            for i in (sw.link_lookup(ifname=f"p-{r}")[0] for r in ("dut", "r1", "r2"))
        ]
        assert all(p.get_attr("IFLA_MASTER") == br for p in ports)


def test_link_trigger_is_stamped_at_the_netlink_call_and_flushes_routes() -> None:
    log = EventLog.memory()
    with Lab("T1", tag=TAG, log=log) as lab:
        gen = lab.ipr("gen")

        def probe_route() -> bool:
            return any(r.get_attr("RTA_DST") == "203.0.113.0" for r in gen.get_routes(table=254))

        assert probe_route()
        t0 = time.time_ns()
        t = lab.link_down("gen", "dut")  # the DUT side: gen's veth loses carrier
        t1 = time.time_ns()
        assert t0 <= t <= t1
        ev = log.select("link", "down")[0]
        assert ev.t_ns == t and t <= ev["t_done_ns"] <= t1
        assert ev["ns"] == lab.ns("dut") and ev["ifname"] == "eth-gen" and ev["how"] == "carrier"
        idx = lab.ifindex("gen", "eth-dut")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            carrier = gen.get_links(idx)[0].get_attr("IFLA_CARRIER")
            if carrier == 0:
                break
            time.sleep(0.01)
        assert carrier == 0, "the peer lost carrier"
        lab.link_down("gen", "gen")
        assert not probe_route(), "a veth down flushes its static routes (research §4.1 item 6)"
        lab.link_up("gen", "gen")
        lab.link_up("gen", "dut")
        assert probe_route(), "link_up re-adds the probe's static routes"


def test_unknown_topology_and_link_are_clear_errors() -> None:
    with pytest.raises(LabError, match="unknown topology 'T9'"):
        Lab("T9", tag=TAG)
    lab = Lab("T1", tag=TAG)
    with pytest.raises(LabError, match="has no link 'gen2'"):
        lab.link("gen2")


def test_fib_watcher_and_probe_see_a_route_change() -> None:
    """The data-plane probe through the DUT namespace shows loss while the route is gone and
    restoration after; the FIB watcher logs both route changes (static routes, no OSPF)."""
    log = EventLog.memory()
    with Lab("T1", tag=TAG, log=log) as lab:
        dut = lab.ipr("dut")
        with (
            FibWatcher(lab.ns("dut"), log) as fib,
            Probe(log, src_ns=lab.ns("gen"), src="192.0.2.2", dst_ns=lab.ns("col"),
                  dst="203.0.113.77", rate_pps=500, loss_timeout_ns=100_000_000) as probe,
        ):  # fmt: skip
            time.sleep(0.2)
            t_add = time.time_ns()
            dut.route("add", dst="203.0.113.77/32", gateway="198.51.100.2")
            time.sleep(0.4)
            t_del = time.time_ns()
            dut.route("del", dst="203.0.113.77/32", gateway="198.51.100.2")
            time.sleep(0.4)
            t_readd = time.time_ns()
            dut.route("add", dst="203.0.113.77/32", gateway="198.51.100.2")
            time.sleep(0.4)
            assert fib.count("203.0.113.77") == 1
        totals = probe.stop()
    adds = [e for e in log.select("fib", "route-add") if e["prefix"] == "203.0.113.77/32"]
    dels = [e for e in log.select("fib", "route-del") if e["prefix"] == "203.0.113.77/32"]
    assert len(adds) == 2 and len(dels) == 1
    assert adds[0]["nexthops"] == [{"gw": "198.51.100.2", "dev": "eth-col"}]
    restored = log.select("probe", "restored")
    assert len(restored) == 2
    # the first restoration follows the first install, the second the re-install
    assert t_add - 5_000_000 <= restored[0].t_ns and restored[1].t_ns >= t_readd - 5_000_000
    lost = log.select("probe", "lost")
    assert any(t_del <= e.t_ns <= t_readd for e in lost)
    assert totals["sent"] == totals["rcvd"] + totals["lost"]
    rcvd = log.select("probe", "rcvd")
    assert rcvd and all(e["stamp"] == "kernel-rx" and e["rtt_ns"] > 0 for e in rcvd)


def test_building_and_tearing_down_never_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked Python child inherits our signal handlers; one that raised SystemExit once tore
    down the parent's lab and ran the rest of a test session inside a lab namespace. The lab
    itself must not fork (subprocess's fork+exec runs no Python in the child and is fine)."""
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", counting_fork)
    before = os.readlink("/proc/thread-self/ns/net")
    with Lab("T3", tag=TAG) as lab:
        lab.link_down("lan-r1", "r1")
        lab.link_up("lan-r1", "r1")
    assert forks == []
    assert os.readlink("/proc/thread-self/ns/net") == before  # we never left our namespace


def test_blackhole_route_get_carrier_and_flowing() -> None:
    """§6.8's failure beyond layer 2: with link 1 black-holed the DUT's unicast to the
    generator goes nowhere (probe lost, carrier up); undone, it flows again. `route_get`
    names the device, `Probe.flowing` follows the stream, and the FIB watcher logs a carrier
    loss in the DUT's namespace (the kernel's notice, 6.7)."""
    log = EventLog.memory()
    with Lab("T4", tag=TAG, log=log) as lab:
        dut = lab.ipr("dut")
        dut.route("add", dst="198.18.255.1/32", gateway="192.0.2.2")
        dut.route("add", dst="203.0.113.77/32", gateway="198.51.100.2")  # OSPF's, in the bench
        gen = lab.ipr("gen")
        gen.addr("add", index=lab.ifindex("gen", "lo"), address="198.18.255.1", prefixlen=32)
        lab.ipr("col").route("replace", dst="198.18.255.0/24", gateway="198.51.100.1")
        assert lab.route_get("dut", "198.18.255.1")["dev"] == "eth-gen"
        with (
            FibWatcher(lab.ns("dut"), log),
            Probe(log, src_ns=lab.ns("gen"), src="198.18.255.1", dst_ns=lab.ns("col"),
                  dst="203.0.113.77", rate_pps=500, loss_timeout_ns=100_000_000) as probe,
        ):  # fmt: skip
            deadline = time.monotonic() + 5
            while not probe.flowing() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert probe.flowing()
            lab.blackhole("gen", True)
            time.sleep(0.5)
            assert not probe.flowing()
            assert lab.ipr("dut").get_links(lab.ifindex("dut", "eth-gen"))[0]["flags"] & 0x10000
            lab.blackhole("gen", False)
            deadline = time.monotonic() + 5
            while not probe.flowing() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert probe.flowing()
            lab.link_down("gen", "gen")
            time.sleep(1.5)  # linkwatch may hold the carrier change up to a second
        probe.stop()
    assert [e["on"] for e in log.select("lab", "blackhole")] == [True, False]
    assert log.select("probe", "lost") and log.select("probe", "restored")
    carrier = [e for e in log.select("fib", "carrier") if e["ifname"] == "eth-gen"]
    assert carrier and carrier[0]["up"] is False
