"""What N idle sessions cost a reflector process, and how fast a new session answers.

Builds what `twamp server` builds per accepted session: one bound test socket, one Reflector
with one session, started on the process's shared ReflectorLoop. Then reports, as JSON:

* `threads` and `rss_mb` (from /proc/self/status) before and after starting the sessions;
* `start_us`: the cost of one Reflector.start() (median and max over the N);
* `idle_cpu_pct`: CPU time of the whole process over `--idle` seconds of no traffic, as a
  percentage of one core (the loop makes no system call while idle);
* `first_packet`: round-trip times from a client socket on loopback for the first datagram of
  `--probes` fresh sessions (each sent 10 ms after its session started), and the medians of 20
  later datagrams of an established session sent back to back and 10 ms apart (the fair
  comparison: the loop is asleep in epoll_wait before each of those too).

Usage: python benchmarks/idle_sessions.py --impl cython --sessions 2048 --idle 10
Figures from a shared machine are measurements beside other work, not facts about the code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time
from typing import Any

from twamp.constants import TestMode
from twamp.dataplane import implementations
from twamp.dataplane.sockets import open_test_socket
from twamp.wire.packets import TestFormat, build_sender

OPEN = TestFormat(TestMode.OPEN)


def _status() -> dict[str, float]:
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Threads":
                out["threads"] = int(value)
            elif key == "VmRSS":
                out["rss_mb"] = int(value.split()[0]) / 1024
    return out


def _rtt_us(client: socket.socket, target: tuple[str, int], seq: int) -> float:
    t0 = time.perf_counter_ns()
    client.sendto(bytes(build_sender(OPEN, seq, 0, 0, b"")), target)
    client.recvfrom(2048)
    return (time.perf_counter_ns() - t0) / 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", default="cython", help="python | cython")
    p.add_argument("--sessions", type=int, default=2048)
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    p.add_argument("--probes", type=int, default=20, help="fresh sessions for first packets")
    args = p.parse_args(argv)
    twin = implementations().get(args.impl)
    if twin is None:
        print(f"implementation {args.impl!r} is not importable here", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.sessions + args.probes + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2.0)
    peer = client.getsockname()
    result: dict[str, Any] = {"impl": args.impl, "sessions": args.sessions, "pid": os.getpid()}
    result["before"] = _status()
    reflectors = []
    starts: list[float] = []
    for _ in range(args.sessions):
        sock = open_test_socket("127.0.0.1", 0, rcvbuf=1 << 16, sndbuf=1 << 16)
        refl = twin.Reflector(sock)
        refl.add_session(twin.SessionSpec(peer, OPEN))
        t0 = time.perf_counter_ns()
        refl.start()
        starts.append((time.perf_counter_ns() - t0) / 1000)
        reflectors.append(refl)
    result["start_us"] = {"median": statistics.median(starts), "max": max(starts)}
    time.sleep(1.0)
    result["after"] = _status()
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(args.idle)
    cpu1, wall1 = time.process_time(), time.monotonic()
    result["idle_cpu_pct"] = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
    result["idle_s"] = wall1 - wall0
    firsts: list[float] = []
    for i in range(args.probes):
        sock = open_test_socket("127.0.0.1", 0, rcvbuf=1 << 16, sndbuf=1 << 16)
        refl = twin.Reflector(sock)
        refl.add_session(twin.SessionSpec(peer, OPEN))
        refl.start()
        reflectors.append(refl)
        time.sleep(0.01)  # the session exists before its first packet, as after Start-Ack
        firsts.append(_rtt_us(client, sock.getsockname(), i))
    target = reflectors[-1].socket.getsockname()
    later = [_rtt_us(client, target, 100 + i) for i in range(20)]
    spaced = []
    for i in range(20):
        time.sleep(0.01)  # the same pause as before each first packet
        spaced.append(_rtt_us(client, target, 200 + i))
    result["first_packet"] = {
        "first_us_median": statistics.median(firsts),
        "first_us_max": max(firsts),
        "back_to_back_us_median": statistics.median(later),
        "spaced_us_median": statistics.median(spaced),
        "first_over_spaced_median": statistics.median(firsts) / statistics.median(spaced),
    }
    for refl in reflectors:
        refl.stop()
        refl.socket.close()
    client.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
