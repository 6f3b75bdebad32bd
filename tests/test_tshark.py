"""Wireshark's TWAMP dissectors (tshark) read what our encoders write.

An independent parser is the check here: we write a pcap of a whole open-mode TWAMP-Control
conversation and of TWAMP-Test packets built by our encoders, let tshark dissect it, and compare
the field values it reports with the ones we set. Wireshark dissects only unauthenticated test
packets and cannot tell sender from reflector packets by itself (its heuristic: 27 or more extra
octets mean a reflector packet), so the reflector packets are checked and the sender packets only
for "not malformed".
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pcapwriter import PcapWriter
from twamp.constants import AcceptCode, Mode, TestMode
from twamp.timestamps import ntp_from_ns, ntp_interval_from_ns
from twamp.wire import control as c
from twamp.wire import testformat as p

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 862)
SENDER = ("127.0.0.1", 40001)
REFLECTOR = ("127.0.0.1", 18760)
SID = bytes.fromhex("7f000001e9b3c4d5a1b2c3d401020304")
T0 = 1_795_435_200_000_000_000  # 2026-11-23 12:00:00 UTC


def _dissect(tshark: str, pcap: Path, *extra: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "json", "-o", "tcp.desegment_tcp_streams:TRUE", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frames: list[dict[str, Any]] = json.loads(out.stdout)
    assert "Malformed" not in out.stdout, out.stdout[:2000]
    assert "_ws.malformed" not in out.stdout
    assert "_ws.expert" not in out.stdout or "Error" not in out.stdout
    return frames


def _field(frames: list[dict[str, Any]], layer: str, name: str) -> list[str]:
    """Every value of `name` in `layer`, in frame order (nested trees flattened)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == name:
                    found.extend(value if isinstance(value, list) else [value])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for frame in frames:
        layers = frame["_source"]["layers"]
        if layer in layers:
            walk(layers[layer])
    return found


def test_control_conversation(tshark: str, tmp_path: Path) -> None:
    pcap = PcapWriter()
    pcap.handshake(CLIENT, SERVER)
    greeting = c.ServerGreeting(
        modes=Mode.UNAUTHENTICATED | Mode.AUTHENTICATED | Mode.ENCRYPTED,
        challenge=bytes(range(16)),
        salt=bytes(range(16, 32)),
        count=2048,
    )
    request = c.RequestTWSession(
        sender_address=IPv4Address(SENDER[0]),
        receiver_address=IPv4Address(REFLECTOR[0]),
        sender_port=SENDER[1],
        receiver_port=REFLECTOR[1],
        padding_length=27,
        start_time=ntp_from_ns(T0),
        timeout=ntp_interval_from_ns(2_000_000_000),
        type_p=46 << 24,
    )
    pcap.tcp(SERVER, CLIENT, c.encode_server_greeting(greeting))
    setup = c.SetUpResponse(
        mode=Mode.UNAUTHENTICATED, key_id=b"", token=bytes(64), client_iv=bytes(16)
    )
    pcap.tcp(CLIENT, SERVER, c.encode_set_up_response(setup))
    start = c.ServerStart(accept=AcceptCode.OK, server_iv=bytes(16), start_time=ntp_from_ns(T0))
    pcap.tcp(SERVER, CLIENT, c.encode_server_start(start))
    pcap.tcp(CLIENT, SERVER, c.encode_request_tw_session(request))
    accept = c.AcceptSession(accept=AcceptCode.OK, port=REFLECTOR[1], sid=SID)
    pcap.tcp(SERVER, CLIENT, c.encode_accept_session(accept))
    pcap.tcp(CLIENT, SERVER, c.encode_start_sessions(c.StartSessions()))
    pcap.tcp(SERVER, CLIENT, c.encode_start_ack(c.StartAck(accept=AcceptCode.OK)))
    stop = c.StopSessions(accept=AcceptCode.OK, num_sessions=1)
    pcap.tcp(CLIENT, SERVER, c.encode_stop_sessions(stop))
    path = tmp_path / "control.pcap"
    pcap.write(path)

    frames = _dissect(tshark, path)
    assert _field(frames, "twamp.control", "twamp.control.modes") == ["7"]
    assert _field(frames, "twamp.control", "twamp.control.count") == ["2048"]
    assert _field(frames, "twamp.control", "twamp.control.challenge") == [
        ":".join(f"{b:02x}" for b in greeting.challenge)
    ]
    assert _field(frames, "twamp.control", "twamp.control.mode") == ["1"]
    assert _field(frames, "twamp.control", "twamp.control.sender_port") == [str(SENDER[1])]
    # Request-TW-Session's Receiver Port and Accept-Session's Port share one field name.
    assert _field(frames, "twamp.control", "twamp.control.receiver_port") == [str(REFLECTOR[1])] * 2
    assert _field(frames, "twamp.control", "twamp.control.sender_ipv4") == [SENDER[0]]
    assert _field(frames, "twamp.control", "twamp.control.receiver_ipv4") == [REFLECTOR[0]]
    assert _field(frames, "twamp.control", "twamp.control.padding_length") == ["27"]
    assert _field(frames, "twamp.control", "twamp.control.ipvn") == ["4"]
    # Request-TW-Session's SID (zero, the server assigns it) then Accept-Session's.
    assert _field(frames, "twamp.control", "twamp.control.session_id") == [
        ":".join(["00"] * 16),
        ":".join(f"{b:02x}" for b in SID),
    ]
    # Server-Start, Accept-Session and Start-Ack each carry Accept 0.
    assert _field(frames, "twamp.control", "twamp.control.accept").count("0") >= 3
    assert _field(frames, "twamp.control", "twamp.control.numsessions") == ["1"]
    commands = _field(frames, "twamp.control", "twamp.control.command")
    assert {"5", "2", "3"} <= set(commands)


def test_unauthenticated_test_packets(tshark: str, tmp_path: Path) -> None:
    fmt = p.TestFormat(TestMode.OPEN)
    pcap = PcapWriter()
    sent = []
    for seq in range(3):
        pkt = p.build_sender(fmt, seq, ntp_from_ns(T0 + seq * 10**6), 0x8001, bytes(27))
        sent.append(pkt)
        pcap.udp(SENDER, REFLECTOR, bytes(pkt), ttl=255)
    for seq, pkt in enumerate(sent):
        reply = p.reflect(
            fmt,
            pkt,
            seq=100 + seq,
            receive_timestamp=ntp_from_ns(T0 + seq * 10**6 + 5000),
            error_estimate=0x8002,
            sender_ttl=253,
        )
        p.write_transmit_timestamp(reply, fmt, ntp_from_ns(T0 + seq * 10**6 + 9000), 0x8002)
        pcap.udp(REFLECTOR, SENDER, bytes(reply), ttl=255)
    path = tmp_path / "test.pcap"
    pcap.write(path)

    frames = _dissect(tshark, path, "-d", f"udp.port=={REFLECTOR[1]},twamp.test")
    assert len(frames) == 6
    assert _field(frames, "twamp.test", "twamp.test.seq_number") == [
        "0",
        "1",
        "2",
        "100",
        "101",
        "102",
    ]
    # Wireshark takes any packet of >= 41 octets for a reflector's, so only the real
    # reflector packets (the last three frames) are read field by field.
    replies = frames[3:]
    assert _field(replies, "twamp.test", "twamp.test.sender_seq_number") == ["0", "1", "2"]
    assert _field(replies, "twamp.test", "twamp.test.sender_ttl") == ["253"] * 3
    assert _field(replies, "twamp.test", "twamp.test.error_estimate") == [str(0x8002)] * 3
    assert _field(replies, "twamp.test", "twamp.test.sender_error_estimate") == [str(0x8001)] * 3
    received = _field(replies, "twamp.test", "twamp.test.receive_timestamp")
    assert len(received) == 3 and all("2026" in r and "12:00:00" in r for r in received), received
