"""The speaker's router-event -> event-log table (`twamp.ospf.io._EVENT_LOG`), no root needed.

Known answers: each router event becomes exactly the log line the `elif` chain it replaced wrote
(name, field names, field order, rendering), so `twamp-bench ospf report` reads old and new
logs alike.
"""

from __future__ import annotations

import inspect
from ipaddress import IPv4Address

from twamp.ospf import events as ev_mod
from twamp.ospf import io
from twamp.ospf.eventlog import EventLog
from twamp.ospf.events import (
    AdjacencyProblem,
    DrChange,
    InterfaceState,
    InterfaceStateChange,
    LsaAckReceived,
    LsaFlushed,
    LsaOriginated,
    LsaReceived,
    LsaStatus,
    MalformedPacket,
    NeighborState,
    NeighborStateChange,
    PacketRejected,
    RejectReason,
)
from twamp.ospf.wire import LsaKey, PacketType

A = IPv4Address
KEY = LsaKey(5, A("198.18.0.0"), A("192.0.2.2"))


def _log(events: list[ev_mod.Event]) -> list[str]:
    speaker = object.__new__(io.Speaker)  # only `log` and `ports` are touched
    speaker.log = EventLog.memory()
    speaker.ports = {}
    speaker._log_events("gen", events)
    return [e.to_json() for e in speaker.log.events if e.source == "gen"]


def test_every_router_event_has_a_log_entry_or_a_reason() -> None:
    classes = {
        c
        for _, c in inspect.getmembers(ev_mod, inspect.isclass)
        if issubclass(c, ev_mod.Event) and c is not ev_mod.Event
    }
    assert classes == set(io._EVENT_LOG) | io._LOGGED_ELSEWHERE
    assert not set(io._EVENT_LOG) & io._LOGGED_ELSEWHERE


def test_known_answer_lines() -> None:
    lines = _log(
        [
            NeighborStateChange(
                1, "e0", A("10.0.0.1"), A("10.1.0.1"), NeighborState.EXSTART, NeighborState.FULL,
                "ExchangeDone",
            ),
            InterfaceStateChange(
                2, "e1", InterfaceState.WAITING, InterfaceState.DR, A("10.0.0.2"), A("0.0.0.0")
            ),
            LsaOriginated(3, "", KEY, -2147483647, "originate"),
            LsaFlushed(4, "", KEY, 7, "flush"),
            LsaReceived(5, "e0", A("10.0.0.1"), KEY, 9, 1, 0xBEEF, LsaStatus.DUPLICATE, True),
            LsaAckReceived(6, "e0", A("10.0.0.1"), (), (KEY,)),
            AdjacencyProblem(7, "e0", A("10.0.0.1"), NeighborState.EXSTART, "mtu", "fix it"),
            DrChange(8, "e1", A("10.0.0.3"), A("10.0.0.3"), A("10.0.0.2"), None, None),
            PacketRejected(
                9, "e1", A("10.1.0.9"), A("10.0.0.9"), PacketType.DATABASE_DESCRIPTION,
                RejectReason.MTU_MISMATCH, "mtu 9000",
            ),
            MalformedPacket(10, "e0", A("10.1.0.1"), "short"),
        ]
    )  # fmt: skip
    k = '"5/198.18.0.0/192.0.2.2"'
    assert lines == [
        '{"t_ns":1,"source":"gen","event":"nbr","ifname":"e0","nbr":"10.0.0.1",'
        '"addr":"10.1.0.1","old":"ExStart","new":"Full","why":"ExchangeDone"}',
        '{"t_ns":2,"source":"gen","event":"ifstate","ifname":"e1","old":"WAITING","new":"DR",'
        '"dr":"10.0.0.2","bdr":"0.0.0.0"}',
        '{"t_ns":3,"source":"gen","event":"originate","lsas":[{"key":' + k + ","
        '"seq":-2147483647}],"why":"originate"}',
        '{"t_ns":4,"source":"gen","event":"flush","lsas":[{"key":' + k + ',"seq":7}],'
        '"why":"flush"}',
        '{"t_ns":5,"source":"gen","event":"lsa-in","ifname":"e0","nbr":"10.0.0.1","key":' + k + ","
        '"seq":9,"age":1,"status":"duplicate","implied_ack":true}',
        '{"t_ns":6,"source":"gen","event":"ack-in","ifname":"e0","nbr":"10.0.0.1",'
        '"cleared":[' + k + "]}",
        '{"t_ns":7,"source":"gen","event":"exstart-stuck","ifname":"e0","nbr":"10.0.0.1",'
        '"state":"ExStart","cause":"mtu","hint":"fix it"}',
        '{"t_ns":8,"source":"gen","event":"dr-change","ifname":"e1","nbr":"10.0.0.3",'
        '"dr":"10.0.0.3","bdr":"10.0.0.2"}',
        '{"t_ns":9,"source":"gen","event":"rejected","ifname":"e1","src":"10.1.0.9",'
        '"rid":"10.0.0.9","type":"database_description","reason":"mtu-mismatch",'
        '"detail":"mtu 9000"}',
    ]
