"""The OSPF lab end to end, as root, against real FRR and BIRD daemons in namespaces.

Each test builds its own lab (unique per-run names ``twol<pid>-<pid>-<n>-<role>``), runs the
emulated generator and collector against the DUT and tears everything down. Timers are short
(hello 1 s, dead 4 s: the `tuned` profile). Off-root or without the daemons they skip with the
reason; in CI (TWAMP_CI=1) they fail instead, so CI never silently skips them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from conftest import require
from twamp.lab import LabError, cleanup_stale, lab_objects, netns
from twamp.lab.dut import PROFILES
from twamp.lab.session import LabSession
from twamp.lab.topology import _pid_alive, _read_pid
from twamp.ospf.eventlog import EventLog, read_events
from twamp.ospf.events import LsaSpec, NeighborState
from twamp.ospf.wire import AsExternalLsaBody, LinkType, RouterLink

pytestmark = [pytest.mark.root, pytest.mark.slow]

DUT_RID = "192.0.2.129"
TUNED = PROFILES["tuned"]
TAG = f"twol{os.getpid() % 100000}"


def _prereq(kind: str) -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, raw sockets, daemons)")
    if kind == "frr":
        require(
            os.access("/usr/lib/frr/ospfd", os.X_OK) and shutil.which("vtysh") is not None,
            "FRR is not installed (apt-get install frr)",
        )
    else:
        require(
            shutil.which("bird") is not None and shutil.which("birdc") is not None,
            "BIRD 2 is not installed (apt-get install bird2)",
        )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with EventLog(tmp_path / "events.jsonl", keep=True) as ev:
        yield ev
    _assert_clean()


def _assert_clean() -> None:
    """Nothing of this test run is left: namespaces, state dirs, FRR dirs, live daemons."""
    left = lab_objects(TAG)
    assert left == {"namespaces": [], "state": [], "frr": [], "pids": []}, left


def external(prefix: str, adv: str, fwd: str = "0.0.0.0") -> LsaSpec:
    net = IPv4Network(prefix)
    body = AsExternalLsaBody(net.netmask, 20, True, IPv4Address(fwd))
    return LsaSpec(5, net.network_address, IPv4Address(adv), body)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["frr", "bird"])
@pytest.mark.parametrize("gen_rid", ["192.0.2.2", "192.0.2.200"], ids=["gen-slave", "gen-master"])
def test_adjacency_full_in_both_dbd_roles(kind: str, gen_rid: str, log: EventLog) -> None:
    _prereq(kind)
    with LabSession(kind, profile=TUNED, log=log, tag=TAG, gen_rid=gen_rid) as s:
        s.wait_adjacencies(30)
        assert s.dut.wait_neighbor(gen_rid, "Full", 10), s.dut.neighbors()
        nbr = next(n for n in s.gen.neighbors() if str(n.router_id) == DUT_RID)
        assert nbr.state == NeighborState.FULL
        # RFC 2328 §10.8: the higher router ID is the DBD master
        assert nbr.master == (IPv4Address(gen_rid) < IPv4Address(DUT_RID))
        # our Exchange-phase DBDs carry MS exactly when we are master
        ours = [e for e in log.select("gen", "tx") if e["type"] == "dbd" and "I" not in e["flags"]]
        assert ours and all(("MS" in e["flags"]) == (not nbr.master) for e in ours)
        # the state walk at the generator, in order, each with a kernel-stamped packet behind it
        walk = [e["new"] for e in log.select("gen", "nbr") if e["nbr"] == DUT_RID]
        assert walk[-4:] == ["ExStart", "Exchange", "Loading", "Full"] or walk[-3:] == [
            "ExStart",
            "Exchange",
            "Full",
        ], walk
        assert all(e["stamp"] == "kernel-rx" for e in log.select("gen", "rx"))
        kernel_tx = [e for e in log.select("gen", "tx") if e["stamp"] == "kernel-tx"]
        assert len(kernel_tx) >= 0.9 * len(log.select("gen", "tx"))
        pids = _dut_pids(s)
        assert pids
    assert not any(_pid_alive(p) for p in pids)


def _dut_pids(s: LabSession) -> list[int]:
    pids = getattr(s.dut, "pids", None)
    if callable(pids):
        return [p for p in pids().values() if p]
    pid = _read_pid(s.dut.state_dir / "bird.pid")
    return [pid] if pid else []


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["frr", "bird"])
def test_2000_externals_all_acked_and_installed(kind: str, log: EventLog) -> None:
    _prereq(kind)
    n = 2000
    with LabSession(kind, profile=TUNED, log=log, tag=TAG) as s:
        s.wait_adjacencies(30)
        nets = list(IPv4Network("198.18.0.0/15").subnets(new_prefix=26))[:n]
        specs = [external(str(net), s.gen_rid) for net in nets]
        keys = {str(spec.key) for spec in specs}
        t0 = time.time_ns()
        s.gen.originate(specs)
        assert s.wait_acked(s.gen, 60), f"{s.gen.retransmit_count()} LSAs never acked"
        acked = {
            a["key"] for e in log.select("gen", "rx") if e["type"] == "ack" for a in e["acked"]
        }
        implied = {e["key"] for e in log.select("gen", "lsa-in") if e.get("implied_ack")}
        assert keys <= acked | implied, f"{len(keys - acked - implied)} never acked"
        assert s.wait_fib("198.1", n, 60), f"only {s.fib and s.fib.count('198.1')} in the FIB"
        # cross-check the FIB by a netlink dump, not only by notifications
        routes = s.lab.ipr("dut").get_routes(family=2, table=254)
        in_fib = {
            f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
            for r in routes
            if str(r.get_attr("RTA_DST") or "").startswith("198.1")
        }
        assert in_fib == {str(net) for net in nets}
        # and the collector received every one of them, flooded by the DUT
        flooded = {e["key"] for e in log.select("col", "lsa-in") if e["key"] in keys}
        assert flooded == keys
        sends = [e for e in log.select("gen", "tx") if e["type"] == "lsu" and e.t_ns >= t0]
        assert sum(len(e["lsas"]) for e in sends) >= n


def _after(log: EventLog, source: str, event: str, t_ns: int) -> list:  # type: ignore[type-arg]
    return [e for e in log.select(source, event) if e.t_ns >= t_ns]


def _dut_router_lsa_seqs(log: EventLog, since: int = 0) -> list[int]:
    key = f"1/{DUT_RID}/{DUT_RID}"
    return [
        e["seq"] for e in log.select("col", "lsa-in") if e["key"] == key and e.t_ns >= since
    ] or [-(2**31)]


def _wait(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


@pytest.mark.timeout(60)
def test_mtu_mismatch_is_one_clear_sentence_and_torn_down(log: EventLog) -> None:
    _prereq("frr")
    with (
        pytest.raises(LabError, match=r"ExStart.*MTU") as info,
        LabSession(
            "frr", profile=TUNED, log=log, tag=TAG, gen_mtu=9000, rxmt_interval_ns=1_000_000_000,
            collector=False,
        ) as s,
    ):  # fmt: skip
        s.wait_adjacencies(30)
    assert "\n" not in str(info.value)
    assert log.select("lab", "error")


@pytest.mark.timeout(60)
def test_dead_daemon_is_reported_with_its_log(log: EventLog) -> None:
    _prereq("bird")
    with pytest.raises(LabError, match="bird DUT died") as info, LabSession(
        "bird", profile=TUNED, log=log, tag=TAG
    ) as s:  # fmt: skip
        pid = _dut_pids(s)[0]
        os.kill(pid, 9)
        _wait(lambda: not _pid_alive(pid), 5)
        s.wait_adjacencies(30)
    assert "log" in str(info.value)
    assert log.select("dut", "died")


@pytest.mark.timeout(60)
def test_stale_run_is_cleaned_by_prefix_only() -> None:
    """Objects of a dead run (a pid that no longer exists) go; a live run's stay."""
    require(os.geteuid() == 0, "needs root (network namespaces)")
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that existed and is now gone
    dead = f"{TAG}-{proc.pid}-1-dut"
    live = f"{TAG}-{os.getpid()}-77-dut"
    netns.create(dead)
    netns.create(live)
    try:
        removed = cleanup_stale(TAG)
        assert dead in removed and live not in removed
        assert not netns.exists(dead) and netns.exists(live)
    finally:
        netns.remove(dead)
        netns.remove(live)
    _assert_clean()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_tears_everything_down(signame: str, tmp_path: Path) -> None:
    """A run killed by SIGTERM or Ctrl-C (SIGINT) removes its namespaces and stops its daemon."""
    _prereq("frr")
    tag = f"{TAG}s"
    code = (
        "import sys, time\n"
        "from twamp.lab.session import LabSession\n"
        "from twamp.lab.dut import PROFILES\n"
        f"with LabSession('frr', profile=PROFILES['tuned'], tag={tag!r},"
        f" log_path={str(tmp_path / 'ev.jsonl')!r}) as s:\n"
        "    print('up', s.lab.prefix, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["up"], line
    prefix = line[1]
    pids = [int(p.read_text().split()[0]) for p in Path(f"/var/run/frr/{prefix}-dut").glob("*.pid")]
    assert len(pids) == 2 and all(_pid_alive(p) for p in pids)
    os.kill(proc.pid, getattr(signal, signame))
    proc.wait(timeout=30)
    assert not any(_pid_alive(p) for p in pids)
    assert lab_objects(tag) == {"namespaces": [], "state": [], "frr": [], "pids": []}
    events = [e.event for e in read_events(tmp_path / "ev.jsonl") if e.source in ("dut", "lab")]
    assert "stop" in events and "teardown" in events


@pytest.mark.timeout(90)
def test_hellos_stopped_is_seen_after_the_dead_interval(log: EventLog) -> None:
    """RFC 4061 §6.8's trigger: the generator goes silent with the carrier kept; the DUT's
    dead interval (4 s) expires and the collector receives its new router-LSA."""
    _prereq("frr")
    with LabSession("frr", profile=TUNED, log=log, tag=TAG) as s:
        s.wait_adjacencies(30)
        time.sleep(1.5)  # past the DUT's MinLSInterval after the adjacency's router-LSA
        before = max(_dut_router_lsa_seqs(log))
        s.gen.stop_hellos("eth-dut")
        down = log.select("link", "down")[-1]
        assert down["how"] == "hellos" and down["router"] == "gen"
        assert _wait(lambda: max(_dut_router_lsa_seqs(log, down.t_ns)) > before, 10)
        t_lsa = min(
            e.t_ns
            for e in log.select("col", "lsa-in")
            if e["key"] == f"1/{DUT_RID}/{DUT_RID}" and e.t_ns >= down.t_ns
        )
        # the DUT only notices through its dead interval: 4 s after our last Hello
        last_hello = max(
            e.t_ns for e in log.select("gen", "tx") if e["type"] == "hello" and e.t_ns < down.t_ns
        )
        assert 3.5e9 < t_lsa - last_hello < 6e9
        assert s.dut.neighbors().get(s.gen_rid, "Down") != "Full"


@pytest.mark.timeout(60)
def test_silent_dut_is_one_clear_sentence(log: EventLog) -> None:
    """A DUT that is alive but sends nothing (here: BIRD stopped with SIGSTOP) is reported as
    'never answered', with what to check."""
    _prereq("bird")
    with LabSession("bird", profile=TUNED, log=log, tag=TAG) as s:
        pid = _dut_pids(s)[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(LabError, match=r"the DUT never answered: no OSPF packet") as info:
                s.wait_adjacencies(3)
            assert "\n" not in str(info.value)
        finally:
            os.kill(pid, signal.SIGCONT)


def announce_probe_target(s: LabSession) -> None:
    """The collector announces 203.0.113.77/32 (its loopback) as a stub in its router-LSA."""
    assert s.col is not None
    stub = RouterLink(IPv4Address("203.0.113.77"), IPv4Address("255.255.255.255"), LinkType.STUB, 1)
    s.col.call(lambda r, now: r.set_extra_links([stub], now))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["frr", "bird"])
def test_link_down_seen_at_collector_and_in_twamp_stream(kind: str, log: EventLog) -> None:
    _prereq(kind)
    with LabSession(kind, profile=TUNED, log=log, tag=TAG, probe_rate=500) as s:
        s.wait_adjacencies(30)
        # the probe's destination as a stub of the collector's router-LSA: the DUT forwards
        # gen -> DUT -> col once it has run SPF over that LSA
        announce_probe_target(s)
        assert s.wait_fib("203.0.113.77/32", 1, 20)
        assert _wait(lambda: bool(_after(log, "probe", "rcvd", 0)), 10), "no probe got through"
        before = _dut_router_lsa_seqs(log)
        t_down = s.lab.link_down("gen", "gen")
        s.gen.interface_down("eth-dut")
        # the collector sees the DUT's new router-LSA (gen link gone) flooded after the event
        assert _wait(
            lambda: max(_dut_router_lsa_seqs(log, t_down), default=-(2**31)) > max(before), 10
        )
        time.sleep(1.0)
        t_up = s.lab.link_up("gen", "gen")
        s.gen.interface_up("eth-dut")
        s.wait_adjacencies(30)
        assert _wait(lambda: bool(_after(log, "probe", "restored", t_up)), 20)
    lost = _after(log, "probe", "lost", t_down)
    assert lost and min(e.t_ns for e in lost) < t_up
    restored = _after(log, "probe", "restored", t_up)
    assert restored[0]["lost_run"] >= 1
    downs = log.select("link", "down")
    assert downs[0]["how"] == "carrier" and downs[0].t_ns == t_down
