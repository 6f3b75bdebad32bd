"""`twamp reflect` as a real process: started, answered, stopped by PID with SIGINT/SIGTERM.

Requests are packed by hand from RFC 5357 §4.1.2 and replies read at the offsets of RFC 5357 §4.2.1
(RFC 8762 §4.3 for STAMP), so the running command is checked against the RFCs. Loopback only; every
wait is bounded, and the process is killed if it outlives the test.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from twamp.cli.reflect import parse_listen, reflect

SENDER_OPEN = struct.Struct("!IQH")  # RFC 5357 §4.1.2
REFLECTOR_OPEN = struct.Struct("!IQH2xQIQH2xB")  # RFC 5357 §4.2.1
START_S = 20.0
STOP_S = 15.0
SENT_TTL = 77  # an unusual TTL, so the Sender TTL field shows it was read


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def reflect_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m twamp.cli.reflect ARGS`; yields the process and its start-up line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "twamp.cli.reflect", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _readline(proc, START_S)
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            pytest.fail(f"twamp reflect printed nothing in {timeout} s")
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=5)
        pytest.fail(f"twamp reflect exited at start-up: {err}")
    return line


def ping_once(host: str, port: int, seq: int, *, padding: int = 27) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        if family == socket.AF_INET:
            client.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, SENT_TTL)
        else:
            client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, SENT_TTL)
        client.settimeout(3.0)
        client.sendto(
            SENDER_OPEN.pack(seq, 0x1234_5678_9ABC_DEF0, 0x3FFF) + bytes(padding), (host, port)
        )
        data, _ = client.recvfrom(4096)
    return data


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[str, str]:
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=STOP_S)
    return out, err


def test_reflects_and_stops_on_sigint() -> None:
    port = free_udp_port()
    with reflect_process("--listen", f"127.0.0.1:{port}") as (proc, banner):
        assert f"127.0.0.1:{port}" in banner
        assert "stateless TWAMP Light" in banner
        assert any(impl in banner for impl in ("python reflector", "cython reflector"))
        for seq in range(5):
            reply = ping_once("127.0.0.1", port, 100 + seq)
            assert len(reply) == 41  # as long as the 14 + 27 octet request (RFC 5357 §4.2.1)
            rseq, _, _, _, sseq, sts, see, ttl = REFLECTOR_OPEN.unpack_from(reply)
            # Stateless: the sender's sequence number comes back (RFC 5357 Appendix I).
            assert rseq == sseq == 100 + seq
            assert sts == 0x1234_5678_9ABC_DEF0 and see == 0x3FFF
            assert ttl == SENT_TTL  # read from the IP header (RFC 5357 §4.2.1)
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "received 5, reflected 5" in out
    assert "Traceback" not in err


def test_stateful_stamp_ipv6_and_sigterm() -> None:
    port = free_udp_port("::1")
    with reflect_process("--listen", f"[::1]:{port}", "--stateful", "--stamp") as (proc, banner):
        assert "stateful" in banner and "STAMP replies" in banner
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.settimeout(3.0)
            replies = []
            for i in range(3):  # one sender (address, port): one counter
                client.sendto(SENDER_OPEN.pack(50 + i, 0, 0x3FFF), ("::1", port))
                replies.append(client.recvfrom(4096)[0])
        other = ping_once("::1", port, 7, padding=0)  # another port: a counter of its own
        out, err = stop(proc, signal.SIGTERM)
    assert struct.unpack_from("!I", other, 0)[0] == 0
    assert proc.returncode == 0, err
    for i, reply in enumerate(replies):
        assert len(reply) == 44  # STAMP base packet for a 14-octet request (RFC 8762 §4.6)
        assert struct.unpack_from("!I", reply, 0)[0] == i  # its own counter
        assert struct.unpack_from("!I", reply, 24)[0] == 50 + i
    assert "reflected 4" in out


def test_a_full_stateful_table_evicts_and_warns() -> None:
    """Senders beyond --max-senders are answered, each evicting the least recently used one,
    and the reflector says so (once per tick) in a warning line and in its counters."""
    port = free_udp_port()
    with reflect_process("--listen", f"127.0.0.1:{port}", "--stateful", "--max-senders", "2") as (
        proc,
        _,
    ):
        replies = [ping_once("127.0.0.1", port, 40 + i) for i in range(5)]  # five source ports
        time.sleep(0.5)  # the main loop looks at the counters every 0.2 s
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert [struct.unpack_from("!I", r, 0)[0] for r in replies] == [0] * 5  # each a new state
    assert "stateful Light table full (2 senders)" in err
    assert "reflected 5" in out and "light evicted 3" in out


def test_symmetric_only_drops_short_requests() -> None:
    port = free_udp_port()
    with reflect_process("--listen", f"127.0.0.1:{port}", "--symmetric-only") as (proc, _):
        full = ping_once("127.0.0.1", port, 1)  # 14 + 27 octets: as long as the reply
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.3)
            client.sendto(SENDER_OPEN.pack(2, 0, 0x3FFF), ("127.0.0.1", port))  # 14 octets
            with pytest.raises(TimeoutError):
                client.recvfrom(4096)
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert len(full) == 41
    assert "reflected 1" in out and "malformed 1" in out


def test_two_workers_share_the_port() -> None:
    port = free_udp_port()
    with reflect_process("--listen", f"127.0.0.1:{port}", "--workers", "2") as (proc, banner):
        assert "2 workers (PIDs" in banner
        pids = [int(p) for p in banner.split("PIDs ")[1].rstrip(")\n").split(", ")]
        assert len(pids) == 2 and proc.pid not in pids
        for seq in range(20):  # a new source port each time: SO_REUSEPORT spreads them
            assert len(ping_once("127.0.0.1", port, seq)) == 41
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert out.count("worker ") == 2
    assert "twamp reflect: stopped; received 20, reflected 20" in out
    for pid in pids:  # the workers are gone too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_allow_list_drops_others() -> None:
    port = free_udp_port()
    with reflect_process("--listen", f"127.0.0.1:{port}", "--allow", "192.0.2.0/24") as (proc, _):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.5)
            client.sendto(SENDER_OPEN.pack(1, 0, 0x3FFF), ("127.0.0.1", port))
            with pytest.raises(TimeoutError):
                client.recvfrom(4096)
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "reflected 0, unknown peer 1" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--listen", "127.0.0.1:99999"], "port must be a number"),
        (["--listen", "nohost:862"], "is not an IP address"),
        (["--listen", "[::1:862"], "[ADDR]:PORT"),
        (["--allow", "not-a-net"], "bad --allow"),
        (["--dscp", "64"], "--dscp must be 0-63"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--listen", "127.0.0.1:0"], "explicit port"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--max-senders", "0"], "--max-senders must be at least 1"),
        (["--burst", "0"], "--burst must be at least 1"),
        (["--rate-limit", "-1"], "--rate-limit cannot be negative"),
    ],
)
def test_wrong_arguments(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(reflect, args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output


def test_address_in_use_is_one_sentence() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = CliRunner().invoke(reflect, ["--listen", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"Error: cannot listen on UDP 127.0.0.1:{port}: Address already in use" in result.output
    assert "choose another --listen" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("[::1]:9000", ("::1", 9000)),
        (":9000", ("", 9000)),
        ("10.0.0.1", ("10.0.0.1", 862)),
        ("[::]", ("::", 862)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
