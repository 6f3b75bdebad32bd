"""The reflector's per-packet knobs over both twins: the send batch cap (replies per send call,
observed with `send_groups()`) and the receive-buffer stride (the truncation limit it implies),
and `reflector_proc` pinning only the loop thread to the measured core. Behaviour only; their
performance is measured by benchmarks/t3_backlog.py, not asserted here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from twamp import dataplane
from twamp.constants import TestMode
from twamp.dataplane import Twin
from twamp.dataplane.sockets import open_test_socket
from twamp.dataplane.types import BUF_STRIDE, REFLECTOR_SEND_BATCH
from twamp.wire.packets import TestFormat, build_sender

REQUIRE = dataplane.REQUIRE_EXTENSION
FMT = TestFormat(TestMode.OPEN)


def _twin(name: str) -> Twin:
    twins = dataplane.implementations()
    if name not in twins:
        if REQUIRE:
            pytest.fail("TWAMP_REQUIRE_EXTENSION=1 but the compiled data plane is not importable")
        pytest.skip("the compiled twin is not built")
    return twins[name]


def _wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def _reflect_backlog(
    twin: Twin, count: int, *, batch: int, send_batch: int | None, size: int = 41
) -> tuple[dict[int, int], dict[str, int], list[int]]:
    """Queue `count` requests before the Reflector starts (a backlog), reflect them, and
    return its send groups, counters and the sequence numbers of the replies."""
    sock = open_test_socket("127.0.0.1", 0)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(2.0)
        refl = twin.Reflector(sock, batch=batch, send_batch=send_batch)
        refl.add_session(twin.SessionSpec(peer.getsockname(), FMT, stateful=False))
        padding = bytes(max(0, size - FMT.sender_header))
        for i in range(count):
            peer.sendto(bytes(build_sender(FMT, i, 0, 0, padding)), sock.getsockname())
        with refl:
            seqs = [int.from_bytes(peer.recv(65536)[:4], "big") for _ in range(count)]
            assert _wait_until(lambda: refl.counters()["reflected"] == count)
            groups = refl.send_groups()
            counters = refl.counters()
        return groups, counters, seqs
    finally:
        peer.close()
        sock.close()


@pytest.mark.parametrize("name", ["python", "cython"])
@pytest.mark.parametrize("cap", [1, 3, 8])
def test_the_send_batch_cap_is_honoured(name: str, cap: int) -> None:
    twin = _twin(name)
    groups, counters, seqs = _reflect_backlog(twin, 40, batch=16, send_batch=cap)
    assert seqs == list(range(40))
    assert counters["reflected"] == 40 and counters["send_errors"] == 0
    assert sum(size * calls for size, calls in groups.items()) == 40
    assert max(groups) <= cap
    if name == "cython":
        # A full receive batch (16 queued of a backlog of 40) goes out `cap` per call (graded:
        # 1 + 16 x (cap - 1) / 16); the pure twin has no sendmmsg, one reply per sendmsg.
        assert max(groups) == cap
    else:
        assert groups == {1: 40}


@pytest.mark.parametrize("name", ["python", "cython"])
def test_send_batch_default_and_bad_values(name: str) -> None:
    twin = _twin(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert twin.Reflector(sock).send_batch == REFLECTOR_SEND_BATCH
        assert twin.Reflector(sock, send_batch=2).send_batch == 2
        for bad in (0, -1, 2.5, True, "8"):
            with pytest.raises(ValueError, match="send_batch"):
                twin.Reflector(sock, send_batch=bad)


@pytest.mark.parametrize("name", ["python", "cython"])
def test_the_buffer_stride_bounds_the_datagram(name: str) -> None:
    """A loop with a compact stride truncates longer datagrams (counted malformed) and
    reflects the rest byte for byte as a default loop does."""
    twin = _twin(name)
    assert twin.ReflectorLoop().buf_stride == BUF_STRIDE
    for bad in (0, 64, 2 << 20):
        with pytest.raises(ValueError, match="buf_stride"):
            twin.ReflectorLoop(buf_stride=bad)
    loop = twin.ReflectorLoop(batch=8, buf_stride=256)
    sock = open_test_socket("127.0.0.1", 0)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(2.0)
        refl = twin.Reflector(sock, loop=loop)
        refl.add_session(twin.SessionSpec(peer.getsockname(), FMT, stateful=False))
        with refl:
            for size in (200, 300, 256):
                pad = bytes(size - FMT.sender_header)
                peer.sendto(bytes(build_sender(FMT, size, 0, 0, pad)), sock.getsockname())
            replies = [peer.recv(65536) for _ in range(2)]
            assert _wait_until(
                lambda: refl.counters()["received"] == 3 and refl.counters()["reflected"] == 2
            )
            counters = refl.counters()
    finally:
        loop.close()
        peer.close()
        sock.close()
    assert sorted(len(r) for r in replies) == [200, 256]
    assert counters["malformed"] == 1 and counters["reflected"] == 2


def _threads_affinity(pid: int) -> dict[int, set[int]]:
    """Thread id -> allowed cores, from /proc."""
    return {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two allowed cores")
@pytest.mark.parametrize("impl", ["pure", "fast"])
def test_reflector_proc_pins_only_the_loop_thread(impl: str) -> None:
    cores = sorted(os.sched_getaffinity(0))
    cpu = cores[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "twamp.bench.reflector_proc", "--impl", impl, "--cpu", str(cpu)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), line
        info = json.loads(line[6:])
        assert info["loop_cpu"] == cpu and cpu not in info["main_cpus"]
        assert info["send_batch"] == REFLECTOR_SEND_BATCH
        threads = _threads_affinity(proc.pid)
        assert threads[info["loop_tid"]] == {cpu}
        # Every other thread (the main one at least) stays off the measured core.
        assert threads[proc.pid] == set(info["main_cpus"])
        others = [c for tid, c in threads.items() if tid != info["loop_tid"]]
        assert others and all(cpu not in c for c in others), threads
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(bytes(41), ("127.0.0.1", info["port"]))
            assert len(s.recvfrom(100)[0]) == 41
    finally:
        proc.send_signal(signal.SIGTERM)  # by PID: the process this test started
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["reflected"] == 1


def test_the_t3_backlog_harness_runs_every_variant(tmp_path: Path) -> None:
    """benchmarks/t3_backlog.py: a tiny run of two variants; only the shape is asserted (the
    figures are measurements), and that each variant's send calls follow its cap."""
    _twin("cython")
    out = tmp_path / "t3.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "t3_backlog.py"
    args = ["--rounds", "1", "--bursts", "3", "--burst", "64", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, str(script), *args, "--variants", "sb=4", "sb=1,stride=2112"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    (row,) = doc["rounds"]
    assert set(row) == {"sb=4", "sb=1,stride=2112"}
    assert row["sb=4"]["sent"] == 192 and row["sb=4"]["loss"] == 0
    assert max(int(k) for k in row["sb=4"]["groups"]) == 4
    assert set(row["sb=1,stride=2112"]["groups"]) == {"1"}
    assert row["sb=4"]["t3_samples"] > 0
    assert "ratios_to_sb=4" in doc["summary"]["sb=1,stride=2112"]
