"""The speaker's socket layer over real namespaces (root): raw protocol-89 sockets, kernel RX and
TX stamps, link-down sends, malformed packets. A minimal Hello-only router stands in for the
emulated router so that these tests exercise the I/O alone; the full router runs against FRR and
BIRD in test_ospf_integration.py."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from conftest import require
from twamp.lab import Lab, lab_objects, netns
from twamp.ospf import wire
from twamp.ospf.eventlog import Event, EventLog, read_events
from twamp.ospf.events import InterfaceConfig, Transmit
from twamp.ospf.io import Attachment, Speaker, packet_summary

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

NS = 1_000_000_000


class HelloOnly:
    """Sends a Hello each second naming every router it heard; records what it received."""

    def __init__(self, rid: str, ifaces: list[InterfaceConfig], *, now_ns: int, **_: Any) -> None:
        self.rid = IPv4Address(rid)
        self.ifc = ifaces[0]
        self.next = now_ns
        self.heard: set[IPv4Address] = set()
        self.queue: list[Transmit] = []
        self.received = 0

    def receive(
        self, ifname: str, src: IPv4Address, dst: IPv4Address, data: bytes, now: int
    ) -> list[Any]:
        self.received += 1
        with contextlib.suppress(wire.OspfDecodeError):
            self.heard.add(wire.decode_packet(data).header.router_id)
        return []

    def tick(self, now: int) -> list[Any]:
        hello = wire.Hello(
            IPv4Address("255.255.255.252"), 1, wire.Options.E, 1, 4,
            IPv4Address(0), IPv4Address(0), tuple(sorted(self.heard)),
        )  # fmt: skip
        data = wire.encode_packet(self.rid, IPv4Address(0), hello)
        self.queue.append(
            Transmit(now, self.ifc.name, IPv4Address("224.0.0.5"), data, wire.PacketType.HELLO)
        )
        self.next = now + NS // 4
        return []

    def next_deadline(self) -> int:
        return self.next

    def take_transmits(self) -> list[Transmit]:
        out, self.queue = self.queue, []
        return out


# the speaker is typed for EmulatedRouter; this stand-in has just the four methods it drives
HELLO_ONLY: Any = HelloOnly


@pytest.fixture
def lab(tmp_path: Any) -> Iterator[Lab]:
    require(os.geteuid() == 0, "needs root (network namespaces, raw sockets)")
    log = EventLog(tmp_path / "io.jsonl", keep=True)
    with Lab("T1-bare", tag=f"twol{os.getpid() % 10000}", log=log) as lab:
        yield lab
    log.close()


def _cfg(ifname: str, addr: str) -> InterfaceConfig:
    return InterfaceConfig(ifname, IPv4Interface(addr), hello_interval_s=1, dead_interval_s=4)


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


def test_two_namespaces_one_loop_kernel_stamps(lab: Lab) -> None:
    log = lab.log
    assert log is not None
    with Speaker(log, router_factory=HELLO_ONLY) as sp:
        sp.add_router(
            "a", "192.0.2.2", [Attachment(lab.ns("gen"), _cfg("eth-dut", "192.0.2.2/30"))]
        )
        sp.add_router(
            "b", "192.0.2.1", [Attachment(lab.ns("dut"), _cfg("eth-gen", "192.0.2.1/30"))]
        )
        assert _wait(lambda: len(log.select("b", "rx")) >= 3 and len(log.select("a", "rx")) >= 3, 5)
        # IP_MULTICAST_LOOP 0: neither hears itself
        assert all(e["src"] == "192.0.2.1" for e in log.select("a", "rx"))
        assert all(e["src"] == "192.0.2.2" for e in log.select("b", "rx"))
    rx = log.select("b", "rx")
    tx = log.select("a", "tx")
    assert all(e["stamp"] == "kernel-rx" and e["type"] == "hello" for e in rx)
    assert tx and all(e["stamp"] == "kernel-tx" for e in tx)
    # the kernel TX stamp is taken after the user stamp, and within a millisecond on a veth
    assert all(0 <= e.t_ns - e["t_user_ns"] < 50_000_000 for e in tx)
    # each reception comes after the matching send (same clock across namespaces)
    first_tx = min(e.t_ns for e in tx)
    assert min(e.t_ns for e in rx) > first_tx
    assert any("192.0.2.1" in e["neighbors"] for e in tx)


def test_link_down_send_is_logged_not_fatal(lab: Lab) -> None:
    log = lab.log
    assert log is not None
    with Speaker(log, router_factory=HELLO_ONLY) as sp:
        sp.add_router(
            "a", "192.0.2.2", [Attachment(lab.ns("gen"), _cfg("eth-dut", "192.0.2.2/30"))]
        )
        assert _wait(lambda: len(log.select("a", "tx")) >= 1, 3)
        lab.link_down("gen", "gen")
        assert _wait(lambda: len(log.select("a", "tx-error")) >= 2, 3)
        lab.link_up("gen", "gen")
        n = len(log.select("a", "tx"))
        assert _wait(lambda: len(log.select("a", "tx")) > n + 1, 3), "sending resumed"
        assert sp.errors == 0
    errs = log.select("a", "tx-error")
    assert {e["errno"] for e in errs} <= {"ENETUNREACH", "ENETDOWN"}
    assert all(e["expected"] for e in errs)
    downs = log.select("link", "down")
    assert len(downs) == 1 and downs[0]["how"] == "carrier"
    assert downs[0].t_ns <= downs[0]["t_done_ns"]


def test_malformed_packets_are_counted_and_survived(lab: Lab) -> None:
    log = lab.log
    assert log is not None
    with Speaker(log, router_factory=HELLO_ONLY) as sp:
        sp.add_router(
            "a", "192.0.2.2", [Attachment(lab.ns("gen"), _cfg("eth-dut", "192.0.2.2/30"))]
        )
        bad = netns.socket_in(lab.ns("dut"), socket.AF_INET, socket.SOCK_RAW, 89)
        try:
            bad.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth-gen")
            good = wire.encode_packet(
                IPv4Address("192.0.2.1"),
                IPv4Address(0),
                wire.Hello(IPv4Address("255.255.255.252"), 1, wire.Options.E, 1, 4,
                           IPv4Address(0), IPv4Address(0)),
            )  # fmt: skip
            corrupt = good[:12] + bytes([good[12] ^ 0xFF]) + good[13:]  # checksum broken
            for payload in (b"\x02", b"\x03" * 40, corrupt, good[:30], good):
                bad.sendto(payload, ("192.0.2.2", 0))
        finally:
            bad.close()
        assert _wait(lambda: len(log.select("a", "rx")) >= 1, 3)
    mal = log.select("a", "rx-malformed")
    assert [e["count"] for e in mal] == [1, 2, 3, 4]
    assert all(e["src"] == "192.0.2.1" and e["error"] for e in mal)
    ok = log.select("a", "rx")
    assert ok[-1]["type"] == "hello" and ok[-1]["rid"] == "192.0.2.1"


def test_log_on_disk_and_teardown_leaves_nothing(lab: Lab) -> None:
    log = lab.log
    assert log is not None and log.path is not None
    with Speaker(log, router_factory=HELLO_ONLY) as sp:
        sp.add_router(
            "a", "192.0.2.2", [Attachment(lab.ns("gen"), _cfg("eth-dut", "192.0.2.2/30"))]
        )
        assert _wait(lambda: len(log.select("a", "tx")) >= 2, 3)
    on_disk = [e for e in read_events(log.path) if e.source == "a"]
    assert len(on_disk) == len(log.select("a"))
    names = [lab.ns(r) for r in lab.roles]
    lab.down()
    assert not any(netns.exists(n) for n in names)
    assert lab_objects(lab.tag) == {"namespaces": [], "state": [], "frr": [], "pids": []}


def test_packet_summary_shapes() -> None:
    rid = IPv4Address("192.0.2.2")
    one = IPv4Address("192.0.2.1")
    hello = wire.Hello(
        IPv4Address("255.255.255.0"), 10, wire.Options.E, 1, 40, one, IPv4Address(0), (one,)
    )
    s = packet_summary(wire.decode_packet(wire.encode_packet(rid, IPv4Address(0), hello)))
    assert s == {
        "rid": "192.0.2.2", "area": "0.0.0.0", "len": 48, "type": "hello", "dr": "192.0.2.1",
        "bdr": "0.0.0.0", "neighbors": ["192.0.2.1"], "priority": 1, "hello_s": 10,
        "dead_s": 40, "mask": "255.255.255.0",
    }  # fmt: skip
    ev = Event(1, "gen", "rx", s)
    assert ev["neighbors"] == ["192.0.2.1"]


def test_close_waits_for_a_busy_loop_and_never_closes_its_sockets_under_it(lab: Lab) -> None:
    """An overloaded loop (a long call) outlasting close()'s join: the sockets must stay open
    until the loop is done with them (it sends Hellos after the call), then be closed by it.
    The old close() joined for 5 s and then closed them under the running loop: EBADF."""
    import threading

    log = lab.log
    assert log is not None
    crashed: list[BaseException] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: crashed.append(args.exc_value)  # type: ignore[arg-type]
    gate = threading.Event()
    try:
        sp = Speaker(log, router_factory=HELLO_ONLY)
        sp.close_timeout = 0.3
        sp.start()
        sp.add_router(
            "a", "192.0.2.2", [Attachment(lab.ns("gen"), _cfg("eth-dut", "192.0.2.2/30"))]
        )
        port = sp.ports[("a", "eth-dut")]
        # The loop blocks in this call until the gate opens (bounded: 8 s), like a big burst.
        busy = threading.Thread(target=lambda: sp.call("a", lambda r, now: gate.wait(8.0)))
        busy.start()
        time.sleep(0.1)
        closer = threading.Thread(target=sp.close)
        closer.start()
        closer.join(6.5)  # the old code returned after its 5 s join, sockets closed
        assert port.sock.fileno() != -1, "close() closed the sockets under the running loop"
        gate.set()
        busy.join(5)
        closer.join(5)
        thread = sp._thread
        assert thread is None or _wait(lambda: not thread.is_alive(), 5)
        assert port.sock.fileno() == -1  # the loop closed them on its way out
        with pytest.raises(RuntimeError):
            sp.call("a", lambda r, now: None)
    finally:
        gate.set()
        threading.excepthook = old_hook
    assert not crashed, f"the loop thread died: {crashed!r}"
    bad = [e for e in log.events if e.event in ("tx-error", "rx-error") and e["errno"] == "EBADF"]
    assert not bad and sp.errors == 0
