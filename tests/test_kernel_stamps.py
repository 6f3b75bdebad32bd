"""Kernel transmit stamps (issue 11, deliverable 4): the send-time error and the RTT from the
kernel's clock in `twamp ping`, the error-queue parsing of both twins, hardware stamps.

Over both sender twins with real sockets on loopback; the machine has no NIC that stamps in
hardware, so the hardware path is tested as far as it can be without one: the capability query
on lo and a veth, the fallback sentence, and the hardware slot of a hand-built control message.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import twamp
from conftest import require
from twamp import clock, dataplane, ping
from twamp.cli.ping_output import format_report
from twamp.constants import TestMode
from twamp.dataplane import Twin
from twamp.dataplane.hwstamp import choose_tx_stamps, ts_info
from twamp.dataplane.sockets import (
    SOF_TIMESTAMPING_RAW_HARDWARE,
    SOF_TIMESTAMPING_SOFTWARE,
    SOF_TIMESTAMPING_TX_HARDWARE,
    SOF_TIMESTAMPING_TX_SOFTWARE,
    TS_SLOT_HARDWARE,
    TS_SLOT_SOFTWARE,
    open_test_socket,
)
from twamp.metrics import RECORD_DTYPE, SENT_DTYPE, kernel_stamps
from twamp.ping import PingOptions, run_light_ping
from twamp.wire.packets import TestFormat

PURE = dataplane.implementations()["python"]
OPEN = TestFormat(TestMode.OPEN)
SCHEMA = json.loads((Path(twamp.__file__).parent / "schemas" / "ping.schema.json").read_text())


@pytest.fixture(params=sorted(dataplane.implementations()))
def impl(request: pytest.FixtureRequest) -> Twin:
    twin: Twin = dataplane.implementations()[request.param]
    return twin


@contextlib.contextmanager
def light_reflector() -> Iterator[int]:
    sock = open_test_socket("127.0.0.1", 0)
    reflector = PURE.Reflector(sock, light=PURE.LightPolicy(OPEN, stateful=False))
    try:
        with reflector:
            yield int(sock.getsockname()[1])
    finally:
        sock.close()


def light_ping(impl: Twin, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> ping.PingResult:
    # ping.py takes the selected twin; the test runs it over each one.
    monkeypatch.setattr(ping, "Sender", impl.Sender)
    with light_reflector() as port:
        opts = PingOptions(count=30, interval=0.002, wait=1.0, **kw)
        return run_light_ping(f"127.0.0.1:{port}", opts)


def test_ping_reports_send_error_and_kernel_rtt(
    impl: Twin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On by default: every packet stamped by the kernel, after the T1 written into it, and an
    RTT from kernel stamps at both ends beside the one from written Timestamps."""
    import jsonschema

    result = light_ping(impl, monkeypatch)
    assert result.implementation == impl.IMPLEMENTATION
    k = result.kernel_stamps
    assert k is not None and result.kernel_stamps_note is None
    assert (k["source"], k["sent"], k["stamped"], k["missing"]) == ("software", 30, 30, 0)
    assert k["missing_note"] is None
    err, rk, rw = k["send_error"], k["rtt_kernel"], k["rtt_written"]
    assert err["count"] == 30 and err["min"] >= 0  # the kernel sends after the Timestamp
    assert err["max"] < 1_000_000_000
    assert rk["count"] == rw["count"] == result.summary["counts"]["received"] == 30
    assert rk["min"] >= 0
    # T1 written before the kernel's stamp: the written RTT is the longer, packet by packet.
    assert rw["min"] >= rk["min"] and rw["median"] >= rk["median"]
    jsonschema.validate(result.to_json(), SCHEMA)
    text = format_report(result)
    assert "send error  kernel software TX stamp − T1 written: median " in text
    assert " us (30 of 30 packets stamped)" in text
    assert "kernel RTT  median " in text


def test_no_kernel_stamps_is_said(impl: Twin, monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema

    result = light_ping(impl, monkeypatch, kernel_stamps=False)
    assert result.kernel_stamps is None
    assert result.kernel_stamps_note == "kernel transmit stamps not asked for"
    jsonschema.validate(result.to_json(), SCHEMA)
    assert "kernel tx   none: kernel transmit stamps not asked for" in format_report(result)


def test_hardware_stamps_on_lo_fall_back_with_a_sentence(
    impl: Twin, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = light_ping(impl, monkeypatch, hw_timestamps="lo")
    assert result.kernel_stamps_note == (
        "lo offers no hardware transmit stamps (ethtool -T lo): software stamps instead"
    )
    k = result.kernel_stamps
    assert k is not None and k["source"] == "software" and k["stamped"] == 30
    assert "kernel tx   lo offers no hardware transmit stamps" in format_report(result)


def test_cli_prints_and_switches_kernel_stamps() -> None:
    from click.testing import CliRunner

    from twamp.cli.ping import ping as ping_command

    with light_reflector() as port:
        target = f"127.0.0.1:{port}"
        shown = CliRunner().invoke(ping_command, ["--light", "-c", "5", "-i", "0.01", target])
        off = CliRunner().invoke(
            ping_command, ["--light", "-c", "5", "-i", "0.01", "--no-kernel-stamps", target]
        )
        as_json = CliRunner().invoke(ping_command, ["--light", "-c", "5", "--json", target])
    assert shown.exit_code == 0, shown.output
    assert "send error  kernel software TX stamp" in shown.output
    assert "(5 of 5 packets stamped)" in shown.output
    assert off.exit_code == 0 and "send error" not in off.output
    assert "kernel tx   none: kernel transmit stamps not asked for" in off.output
    assert json.loads(as_json.output)["kernel_stamps"]["stamped"] == 5


def test_a_missing_stamp_is_reported_not_invented(impl: Twin) -> None:
    """A Sender reading the hardware slot on lo, whose reports carry software stamps only:
    every row stays 0 (no time made up), and the summary says so in words."""
    send_sock = open_test_socket("127.0.0.1", 0)
    refl_sock = open_test_socket("127.0.0.1", 0)
    with contextlib.closing(send_sock), contextlib.closing(refl_sock):
        reflector = PURE.Reflector(refl_sock, light=PURE.LightPolicy(OPEN, stateful=False))
        sender = impl.Sender(send_sock, refl_sock.getsockname(), fmt=OPEN, hw_timestamps=True)
        assert sender.hw_timestamps
        with reflector:
            times = clock.realtime_ns() + 10_000_000 + np.arange(10, dtype=np.int64) * 1_000_000
            result = sender.run(times, wait_ns=1_000_000_000)
    assert result.tx_kernel_ns is not None
    assert result.tx_kernel_ns.tolist() == [0] * 10
    k = kernel_stamps(result.sent, result.received, result.tx_kernel_ns, source="hardware")
    assert (k["stamped"], k["missing"]) == (0, 10)
    assert k["send_error"] is None and k["rtt_kernel"] is None and k["rtt_written"] is None
    assert k["missing_note"].startswith(
        "the kernel reported no hardware transmit stamp for 10 of 10 packets"
    )
    lines = "\n".join(ping_output_lines(k))
    assert "kernel tx   no hardware transmit stamp came back from the kernel" in lines


def ping_output_lines(k: dict[str, Any]) -> list[str]:
    from twamp.cli.ping_output import kernel_stamp_lines

    return list(kernel_stamp_lines(k, None))


def test_error_queue_overflow_leaves_rows_empty(impl: Twin) -> None:
    """A receive buffer too small for the transmit reports (the kernel drops what does not
    fit): the rows without a report stay 0, the others are after their T1."""
    send_sock = open_test_socket("127.0.0.1", 0)
    refl_sock = open_test_socket("127.0.0.1", 0)
    with contextlib.closing(send_sock), contextlib.closing(refl_sock):
        send_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sender = impl.Sender(send_sock, refl_sock.getsockname(), fmt=OPEN, tx_timestamps=True)
        result = sender.run(np.full(300, clock.realtime_ns(), np.int64), wait_ns=10_000_000)
    tx = result.tx_kernel_ns
    assert tx is not None and tx.size == result.counters["sent"] == 300
    t1 = result.sent["t1"].astype(np.int64)
    stamped = tx != 0
    assert np.all(tx[stamped] >= t1[stamped])
    k = kernel_stamps(result.sent, result.received, tx)
    assert k["missing"] == int(np.count_nonzero(~stamped))
    assert (k["missing_note"] is None) == bool(np.all(stamped))
    if impl.IMPLEMENTATION == "cython":
        # sendmmsg in batches of 32 outruns a 2 KiB buffer: some reports must have been lost.
        assert k["missing"] > 0


def test_kernel_stamps_known_answer() -> None:
    sent = np.array([(0, 1000), (1, 2000), (2, 3000), (3, 4000)], dtype=SENT_DTYPE)
    tx = np.array([1010, 0, 3030, 4040], dtype=np.int64)  # packet 1: no report
    received = np.zeros(3, RECORD_DTYPE)
    for row, (seq, t1, t4) in enumerate(((0, 1000, 1500), (1, 2000, 2600), (3, 4000, 4900))):
        received[row] = (seq, seq, t1, t1 + 100, t1 + 150, t4, 64, 64, 0, 0)
    received = np.concatenate([received, received[2:3]])  # a duplicate of packet 3
    k = kernel_stamps(sent, received, tx)
    assert (k["sent"], k["stamped"], k["missing"]) == (4, 3, 1)
    assert (k["send_error"]["min"], k["send_error"]["max"]) == (10, 40)
    # Packets 0 and 3 are answered and stamped: (T4 - kernel T1) - 50.
    assert (k["rtt_kernel"]["count"], k["rtt_kernel"]["min"], k["rtt_kernel"]["max"]) == (
        2,
        440,
        810,
    )
    assert (k["rtt_written"]["min"], k["rtt_written"]["max"]) == (450, 850)
    assert "1 of 4 packets" in k["missing_note"]
    with pytest.raises(ValueError, match="rows"):
        kernel_stamps(sent, received, tx[:2])


# -- the control message parsing of both twins ---------------------------------------------

_CMSG = struct.Struct("@Nii")
_ALIGN = struct.calcsize("@N")


def cmsg(level: int, kind: int, data: bytes) -> bytes:
    raw = _CMSG.pack(_CMSG.size + len(data), level, kind) + data
    return raw + bytes(-len(raw) % _ALIGN)


def error_queue_message(software: tuple[int, int], hardware: tuple[int, int], key: int) -> bytes:
    """What the kernel puts on the error queue for one transmit report: scm_timestamping
    (ts[0] software, ts[1] unused, ts[2] raw hardware) and sock_extended_err (origin
    SO_EE_ORIGIN_TIMESTAMPING = 4, ee_data = the datagram's number)."""
    stamps = struct.pack("@llllll", *software, 0, 0, *hardware)
    err = struct.pack("@IBBBBII", 42, 4, 0, 0, 0, 0, key)  # ENOMSG
    return cmsg(socket.SOL_SOCKET, 37, stamps) + cmsg(socket.IPPROTO_IP, 11, err)


def test_hardware_slot_of_scm_timestamping(impl: Twin) -> None:
    parse = impl.sender_module.parse_tx_report_bytes
    both = error_queue_message((5, 6), (7, 8), key=9)
    assert parse(both, TS_SLOT_SOFTWARE) == (9, 5_000_000_006)
    assert parse(both, TS_SLOT_HARDWARE) == (9, 7_000_000_008)
    software_only = error_queue_message((5, 6), (0, 0), key=10)
    assert parse(software_only, TS_SLOT_HARDWARE) is None  # none of that kind: not a time
    assert parse(software_only, TS_SLOT_SOFTWARE) == (10, 5_000_000_006)
    v6 = cmsg(socket.SOL_SOCKET, 37, struct.pack("@llllll", 1, 2, 0, 0, 3, 4)) + cmsg(
        socket.IPPROTO_IPV6, 25, struct.pack("@IBBBBII", 42, 4, 0, 0, 0, 0, 2**32 - 1)
    )
    assert parse(v6, TS_SLOT_HARDWARE) == (2**32 - 1, 3_000_000_004)
    no_key = cmsg(socket.SOL_SOCKET, 37, struct.pack("@llllll", 1, 2, 0, 0, 3, 4))
    assert parse(no_key, TS_SLOT_SOFTWARE) is None
    other_origin = cmsg(socket.SOL_SOCKET, 37, struct.pack("@llllll", 1, 2, 0, 0, 3, 4)) + cmsg(
        socket.IPPROTO_IP,
        11,
        struct.pack("@IBBBBII", 111, 2, 3, 3, 0, 0, 5),  # ICMP
    )
    assert parse(other_origin, TS_SLOT_SOFTWARE) is None


# -- the capability query ---------------------------------------------------------------------


def test_capabilities_of_lo_are_software_only() -> None:
    info = ts_info("lo")
    assert info.so_timestamping & SOF_TIMESTAMPING_TX_SOFTWARE
    assert info.so_timestamping & SOF_TIMESTAMPING_SOFTWARE
    assert not info.so_timestamping & (SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE)
    assert info.phc_index == -1 and not info.hardware_tx and not info.hardware_rx
    ethtool = shutil.which("ethtool")
    if ethtool:  # the oracle, where installed
        out = subprocess.run([ethtool, "-T", "lo"], capture_output=True, text=True).stdout
        assert "software-transmit" in out and "hardware-transmit" not in out


def test_capability_query_of_a_missing_interface() -> None:
    hardware, note = choose_tx_stamps("txstamp-none0")
    assert not hardware
    assert (
        note
        == "cannot query txstamp-none0's timestamping (No such device): software stamps instead"
    )
    hardware, note = choose_tx_stamps("x" * 20)
    assert not hardware and note is not None and "not an interface name" in note
    assert choose_tx_stamps(None) == (False, None)


def test_capabilities_of_a_veth_are_software_only(root: None) -> None:
    require(shutil.which("ip") is not None, "needs iproute2's ip")
    names = ("txstampA0", "txstampB0")
    subprocess.run(["ip", "link", "del", names[0]], capture_output=True)
    subprocess.run(
        ["ip", "link", "add", names[0], "type", "veth", "peer", "name", names[1]], check=True
    )
    try:
        info = ts_info(names[0])
        assert info.so_timestamping & SOF_TIMESTAMPING_TX_SOFTWARE
        assert not info.hardware_tx
        hardware, note = choose_tx_stamps(names[0])
        assert not hardware
        assert note == (
            f"{names[0]} offers no hardware transmit stamps (ethtool -T {names[0]}): "
            "software stamps instead"
        )
    finally:
        subprocess.run(["ip", "link", "del", names[0]], capture_output=True)


# -- the reflector's T3 diagnostic on the command line -------------------------------------------


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_reflect_t3_diagnostic_end_to_end(implementation: str) -> None:
    """`twamp reflect --t3-diagnostic`: the T3 error in the periodic and exit statistics and in
    the Prometheus metrics, over both reflector twins."""
    from ops_helpers import free_port, scrape, stop, twamp, value, wait_listening

    require(implementation in dataplane.implementations(), "the compiled twin is not built")
    env = {"TWAMP_PURE_PYTHON": "1"} if implementation == "python" else {}
    port, mport = free_port(socket.SOCK_DGRAM), free_port()
    proc = twamp(
        "reflect", "--listen", f"127.0.0.1:{port}", "--t3-diagnostic",
        "--stats-interval", "0.3", "--metrics", f"127.0.0.1:{mport}", env=env,
    )  # fmt: skip
    try:
        wait_listening(mport)
        result = run_light_ping(
            f"127.0.0.1:{port}", PingOptions(count=40, interval=0.002, wait=0.5)
        )
        assert result.summary["counts"]["received"] == 40
        time.sleep(0.8)  # a statistics line after the replies
        samples = scrape(mport)
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert f"{implementation} reflector" in out
    assert value(samples, "twamp_reflector_t3_error_seconds_count") == 40
    assert value(samples, "twamp_reflector_t3_error_seconds_bucket", le="+Inf") == 40
    assert value(samples, "twamp_reflector_t3_error_seconds_sum") > 0
    assert 0 < value(samples, "twamp_reflector_t3_error_max_seconds") < 1
    periodic = [line for line in out.splitlines() if line.startswith("pid ") and "T3 error" in line]
    assert periodic, out
    assert "T3 error (kernel transmit stamp - T3 written): 40 replies, mean " in periodic[-1]
    final = out.splitlines()[-1]
    assert final.startswith("twamp reflect: T3 error (kernel transmit stamp - T3 written): 40 ")
    assert " us, p50 <= " in final and " us, p99 <= " in final and " us, max " in final


def test_reflect_t3_diagnostic_with_workers() -> None:
    """With --workers each worker reports its T3 error and the parent the sum of their counts
    (a worker that got no traffic says so in words)."""
    from ops_helpers import free_port, stop, twamp

    port = free_port(socket.SOCK_DGRAM)
    proc = twamp(
        "reflect", "--listen", f"127.0.0.1:{port}", "--t3-diagnostic", "--workers", "2"
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "2 workers" in banner, banner
        for _ in range(3):  # new source ports: SO_REUSEPORT spreads them over the workers
            result = run_light_ping(
                f"127.0.0.1:{port}", PingOptions(count=10, interval=0.002, wait=0.5)
            )
            assert result.summary["counts"]["received"] == 10
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert out.count(": T3 error") == 3, out  # one line per worker and the total
    assert "twamp reflect: T3 error (kernel transmit stamp - T3 written): 30 replies" in out


def test_reflect_without_the_diagnostic_says_nothing_of_t3() -> None:
    from ops_helpers import free_port, scrape, stop, twamp, wait_listening

    port, mport = free_port(socket.SOCK_DGRAM), free_port()
    proc = twamp("reflect", "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}")
    try:
        wait_listening(mport)
        run_light_ping(f"127.0.0.1:{port}", PingOptions(count=5, interval=0.002, wait=0.5))
        samples = scrape(mport)
    finally:
        out, _ = stop(proc)
    assert "T3 error" not in out
    assert not any("t3_error" in name for name in samples)


# -- twamp-bench latency trials -----------------------------------------------------------------


def test_bench_latency_trial_has_kernel_stamps(impl: Twin, monkeypatch: pytest.MonkeyPatch) -> None:
    """A latency trial's record carries the send-time error and the kernel RTT (our sender,
    either twin); the socket's stamps are off again afterwards, so a throughput trial on the
    same session sends without them."""
    from twamp.bench.config import PacketSize
    from twamp.bench.targets import TestSession
    from twamp.bench.trial import latency_summary, make_schedule, send_schedule

    monkeypatch.setattr(dataplane, "Sender", impl.Sender)  # what bench.targets builds
    size = PacketSize("41", ((41, 1),))
    with light_reflector() as port:
        session = TestSession(("127.0.0.1", port), OPEN)
        try:
            data = send_schedule(
                session, size, make_schedule(5000, 200), wait_ns=300_000_000, tx_stamps=True
            )
            assert session.sock.getsockopt(socket.SOL_SOCKET, 37) == 0  # SO_TIMESTAMPING off
            later = send_schedule(session, size, make_schedule(5000, 50), wait_ns=300_000_000)
        finally:
            session.close()
    fields, _ = latency_summary(data, False)
    k = fields["kernel_stamps"]
    assert fields["kernel_stamps_note"] is None
    assert k is not None and (k["sent"], k["stamped"], k["missing"]) == (200, 200, 0)
    assert k["send_error"]["min"] >= 0 and k["rtt_kernel"]["min"] >= 0
    assert k["rtt_kernel"]["count"] == fields["received"] == 200
    assert later.tx_kernel is None and later.received.size == 50
    assert latency_summary(later, False)[0]["kernel_stamps_note"] == (
        "kernel transmit stamps not asked for"
    )


def test_bench_says_why_a_trial_has_no_kernel_stamps() -> None:
    from twamp.bench.config import PacketSize
    from twamp.bench.targets import TestSession
    from twamp.bench.trial import latency_summary, make_schedule, send_schedule

    imix = PacketSize("imix", ((64, 7), (576, 4), (1472, 1)))
    with light_reflector() as port:
        session = TestSession(("127.0.0.1", port), OPEN)
        try:
            data = send_schedule(
                session, imix, make_schedule(5000, 24), wait_ns=300_000_000, tx_stamps=True
            )
        finally:
            session.close()
    fields, _ = latency_summary(data, False)
    assert fields["kernel_stamps"] is None
    assert fields["kernel_stamps_note"] == (
        "kernel transmit stamps need one packet size per trial (not with a mix)"
    )
    c_session = TestSession(("127.0.0.1", 9), OPEN, sender="c")
    try:
        with c_session.tx_stamps((41,)) as note:
            assert note == "the C sender records no kernel transmit stamps"
    finally:
        c_session.close()


def test_server_t3_diagnostic_end_to_end() -> None:
    """`twamp server --t3-diagnostic`: the T3 error of its reflectors in the metrics and in the
    exit log line, counted over a session that has ended."""
    from ops_helpers import free_port, scrape, stop, twamp, value, wait_listening

    port, mport = free_port(), free_port()
    server = twamp(
        "server", "--listen", f"127.0.0.1:{port}", "--t3-diagnostic",
        "--metrics", f"127.0.0.1:{mport}",
    )  # fmt: skip
    try:
        wait_listening(port)
        result = ping.run_ping(f"127.0.0.1:{port}", PingOptions(count=25, interval=0.002, wait=0.5))
        assert result.summary["counts"]["received"] == 25
        samples = scrape(mport)
    finally:
        _, err = stop(server)
    assert server.returncode == 0, err
    assert value(samples, "twamp_reflector_t3_error_seconds_count") == 25
    assert 0 < value(samples, "twamp_reflector_t3_error_max_seconds") < 1
    assert "T3 error (kernel transmit stamp - T3 written): 25 replies, mean " in err


def test_switching_on_hardware_stamping_of_lo_is_refused(root: None) -> None:
    """SIOCSHWTSTAMP reaches the driver (root), which has no hardware stamping to switch on."""
    from twamp.dataplane.hwstamp import enable_device_stamping

    with pytest.raises(OSError) as caught:
        enable_device_stamping("lo")
    assert caught.value.errno == errno.EOPNOTSUPP


def test_choose_tx_stamps_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision on a NIC that offers hardware stamps, which this machine lacks: the
    capability query is replaced by what such a NIC reports (ethtool_ts_info of, e.g., an
    igb: TX/RX/RAW hardware, a PHC, HWTSTAMP_TX_ON, HWTSTAMP_FILTER_ALL)."""
    from twamp.dataplane import hwstamp

    offered = hwstamp.TsInfo(
        "eth9",
        SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE | (1 << 2) | 0x1A,
        0,
        1 << hwstamp.HWTSTAMP_TX_ON,
        1 << hwstamp.HWTSTAMP_FILTER_ALL,
    )
    assert offered.hardware_tx and offered.hardware_rx
    monkeypatch.setattr(hwstamp, "ts_info", lambda name: offered)
    calls: list[tuple[str, bool]] = []

    def refuse(name: str, *, rx_all: bool = False) -> None:
        calls.append((name, rx_all))
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(hwstamp, "enable_device_stamping", refuse)
    assert hwstamp.choose_tx_stamps("eth9") == (
        False,
        "cannot switch on hardware stamping on eth9 (it needs root: CAP_NET_ADMIN): "
        "software stamps instead",
    )
    assert calls == [("eth9", True)]
    monkeypatch.setattr(hwstamp, "enable_device_stamping", lambda name, *, rx_all=False: None)
    assert hwstamp.choose_tx_stamps("eth9") == (True, None)


def test_continuous_ping_reports_kernel_stamps_per_interval() -> None:
    from twamp.cli.ping import _interval_line

    reports: list[ping.IntervalReport] = []

    class StopAfterOne:
        def is_set(self) -> bool:
            return bool(reports)

    with light_reflector() as port:
        ping.run_continuous(
            f"127.0.0.1:{port}",
            PingOptions(interval=0.005, wait=0.3),
            interval=0.1,
            light=True,
            stop=StopAfterOne(),
            on_interval=reports.append,
        )
    (report,) = reports
    line = report.to_json()
    assert line["kernel_stamps"]["stamped"] == line["summary"]["counts"]["sent"] > 0
    assert "; send error median " in _interval_line(report)


def test_bench_report_has_kernel_stamps_and_old_reports_validate(tmp_path: Path) -> None:
    """A short `twamp-bench` run: each latency trial of a single size carries kernel_stamps, an
    IMIX one says why it has none, the table shows them; a version-2 report (without them)
    still validates (`twamp-bench plot OLD.json`)."""
    from click.testing import CliRunner

    from twamp.bench.report import validate
    from twamp.bench.tables import format_tables
    from twamp.cli import bench as cli

    out = tmp_path / "bench.json"
    run = CliRunner().invoke(
        cli.bench,
        [
            "--sizes", "min,imix", "--trials", "1", "--trial-duration", "0.05",
            "--max-rate", "4000", "--latency-fractions", "50", "--json", str(out), "-q",
        ],
        prog_name="twamp-bench",
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    doc = json.loads(out.read_text())
    validate(doc)
    assert doc["schema_version"] == 3
    (target,) = doc["targets"]
    by_size = {size["size"]: size for size in target["sizes"]}
    single = [tr for p in by_size["41"]["latency"] for tr in p["trials"]]
    assert single and all(tr["kernel_stamps"]["stamped"] == tr["sent"] for tr in single)
    assert all(tr["kernel_stamps"]["send_error"]["min"] >= 0 for tr in single)
    mixed = [tr for p in by_size["imix"]["latency"] for tr in p["trials"]]
    assert mixed and all(tr["kernel_stamps"] is None for tr in mixed)
    text = format_tables(doc)
    assert "send-time error (kernel transmit stamp − T1 written)" in text
    assert "kernel stamps: kernel transmit stamps need one packet size per trial" in text
    old = json.loads(json.dumps(doc))
    old["schema_version"] = 2
    for size in old["targets"][0]["sizes"]:
        for point in size["latency"]:
            for tr in point["trials"]:
                del tr["kernel_stamps"], tr["kernel_stamps_note"]
    validate(old)
    assert "send-time error" not in format_tables(old)
