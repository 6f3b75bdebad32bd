"""`twamp-bench ospf --dut external` against a stand-in "real router", as root.

The test builds what a user would have: a router (FRR, started in a namespace of its own by the
project's FRR adapter, configured by us, not by the tool, with hello 2 s / dead 8 s, which the
tool's `--timers` profile does not say) linked by veth pairs to a tester namespace whose ports
already carry their addresses. It then runs the external mode *inside* the tester namespace
(`ip netns exec`, a subprocess) naming those ports, and checks that the tool took the router's
Hello and dead intervals from its Hellos, that every procedure it can drive from its side (5.1,
5.2, 5.3, 6.1, 6.2, 6.7, 6.8) gives valid figures consistent with those timers, that the others
are reported with a reason, and that the named ports end as they began (6.1 and 6.7 take our
port down and up; nothing is created, deleted or left changed). Namespaces and veths are
prefixed ``twox<pid>`` and removed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require
from twamp.lab import netns
from twamp.lab.dut import PROFILES, BirdDut, DutPort, FrrDut

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]


HELLO_S, DEAD_S = 2, 8  # the stand-in router's intervals; the default --timers says 1 / 4


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _port_state(ns: str, ifname: str) -> dict[str, Any]:
    """What the tool must leave alone: the port's index, flags, MTU and addresses, and the
    namespace's list of links."""
    link = json.loads(_ip("-n", ns, "-j", "link", "show", "dev", ifname))[0]
    addrs = json.loads(_ip("-n", ns, "-j", "addr", "show", "dev", ifname))[0]["addr_info"]
    links = sorted(x["ifname"] for x in json.loads(_ip("-n", ns, "-j", "link", "show")))
    return {
        "ifindex": link["ifindex"],
        "flags": sorted(link["flags"]),
        "mtu": link["mtu"],
        "addrs": sorted((a["family"], a["local"], a["prefixlen"]) for a in addrs),
        "links": links,
    }


@pytest.fixture(params=["frr", "bird"])
def stand_in(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, str, list[str]]]:
    kind = str(request.param)
    require(os.geteuid() == 0, "needs root (network namespaces, raw OSPF sockets)")
    if kind == "frr":
        require(Path("/usr/lib/frr/ospfd").exists(), "FRR is not installed (apt-get install frr)")
    else:
        require(shutil.which("bird") is not None, "BIRD is not installed (apt-get install bird2)")
    tag = f"twox{os.getpid() % 10000}"
    rtr, tst = f"{tag}-rtr", f"{tag}-tst"
    ports = [f"{tag}g", f"{tag}c"]
    plan = [(ports[0], "eth-g", "192.0.2.2/30", "192.0.2.1/30"),
            (ports[1], "eth-c", "198.51.100.2/30", "198.51.100.1/30")]  # fmt: skip
    dut: FrrDut | BirdDut | None = None
    try:
        for ns in (rtr, tst):
            netns.create(ns)
        _ip("-n", rtr, "link", "set", "lo", "up")
        _ip("-n", tst, "link", "set", "lo", "up")
        for ours, theirs, our_addr, their_addr in plan:
            _ip("-n", tst, "link", "add", ours, "type", "veth", "peer", "name", theirs,
                "netns", rtr)  # fmt: skip
            _ip("-n", tst, "addr", "add", our_addr, "dev", ours)
            _ip("-n", rtr, "addr", "add", their_addr, "dev", theirs)
            _ip("-n", tst, "link", "set", ours, "up")
            _ip("-n", rtr, "link", "set", theirs, "up")
        _ip("-n", rtr, "addr", "add", "192.0.2.129/32", "dev", "lo")
        dut = (FrrDut if kind == "frr" else BirdDut)(
            router_id="192.0.2.129",
            ports=[DutPort("eth-g", "192.0.2.1/30"), DutPort("eth-c", "198.51.100.1/30")],
            profile=PROFILES["tuned"].replace(hello_s=HELLO_S, dead_s=DEAD_S),
            ns=rtr,
            state_dir=tmp_path / kind,
            stubs=["192.0.2.129/32"],
        )
        dut.start()
        dut.wait_ready()
        yield kind, tst, ports
    finally:
        if dut is not None:
            dut.stop()
        for ns in (tst, rtr):
            netns.remove(ns)


def test_external_mode_on_named_ports(stand_in: tuple[str, str, list[str]], tmp_path: Path) -> None:
    kind, tst, ports = stand_in
    before = {p: _port_state(tst, p) for p in ports}
    out = tmp_path / "run.json"
    cmd = ["ip", "netns", "exec", tst, sys.executable, "-m", "twamp.cli.bench", "ospf",
           "--dut", "external", "--interface", ports[0], "--interface", ports[1],
           "--tests", "5.1,5.2,5.3,6.1,6.2,6.3,6.4,6.7,6.8", "--trials", "1", "--lsas", "20",
           "--json", str(out), "--log", str(tmp_path / "run.jsonl")]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=540, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    by_id = {e["id"]: e for e in doc["procedures"]}
    for proc in ("5.1", "5.2", "5.3", "6.1", "6.2", "6.7", "6.8"):
        assert by_id[proc]["failed"] is None, (proc, by_id[proc]["failed"])
        assert by_id[proc]["trials_valid"] >= 1, (proc, by_id[proc]["invalid"], by_id[proc])
        assert by_id[proc]["figure_ms"] is not None
        assert by_id[proc]["dataplane"] is None
        assert by_id[proc]["dataplane_note"].startswith("no probe: --dut external")
    # The router's own intervals, heard in its Hellos, not the --timers profile's 1 s / 4 s.
    assert doc["timers"]["hello"] == {**doc["timers"]["hello"], "seconds": 2.0, "origin": "hello"}
    assert doc["timers"]["dead"] == {**doc["timers"]["dead"], "seconds": 8.0, "origin": "hello"}
    log = (tmp_path / "run.jsonl").read_text()
    heard = [json.loads(x) for x in log.splitlines() if '"event":"hello-heard"' in x]
    assert heard and heard[0]["heard"] and heard[0]["hello_s"] == HELLO_S, heard
    assert '"192.0.2.129"' in log and "Full" in log
    # Consistent with those timers: layer 3 waits the router's dead interval, layer 2 does not.
    dead_ms = DEAD_S * 1000.0
    l3 = by_id["6.8"]["figure_ms"]["median"]
    assert dead_ms - 1.0 <= l3 <= dead_ms + 3000.0, l3
    assert by_id["6.8"]["verdict"]["kind"] == "includes-timer"
    assert by_id["6.8"]["verdict"]["timer"]["seconds"] == DEAD_S
    l2 = by_id["6.7"]["figure_ms"]["median"]
    if kind == "frr":
        assert l2 < l3 - dead_ms / 2, (l2, l3)  # FRR re-originates at once on carrier loss
    else:
        # BIRD re-originates at most every MinLSInterval (5 s) on its 1 s tick: layer 2 may
        # be late by about that, never by the dead interval's wait on top
        assert l2 <= 6500.0, (l2, l3)
    assert "its own end" in by_id["6.2"]["deviation"]
    assert "no access to an external router's CLI" in by_id["5.3"]["whitebox_note"]
    for proc in ("6.3", "6.4"):
        assert by_id[proc]["failed"], by_id[proc]
        assert "--dut external" in json.dumps(by_id[proc]["failed"])
        assert by_id[proc]["verdict"]["text"].startswith("not run"), by_id[proc]["verdict"]
    text = res.stdout
    assert "hello 2 s (observed in the DUT's Hellos)" in text, text
    after = {p: _port_state(tst, p) for p in ports}
    assert after == before
