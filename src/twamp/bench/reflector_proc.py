"""One of our reflectors in a process of its own, for `twamp-bench`.

    python -m twamp.bench.reflector_proc --impl fast --port 0 --cpu 0 [--stamp] [--busy-poll]

A stateless TWAMP Light reflector (`LightPolicy`, RFC 5357 Appendix I; `--stamp`: the 44-octet
STAMP layout, RFC 8762) on one UDP socket. `--impl fast` is what `twamp.dataplane` selects (the
compiled twin when it is built), `pure` the pure-Python twin, or an IMPLEMENTATION name.

The process pins itself to `--cpu` before starting the reflector thread (which inherits the
mask), prints one line ``ready {json}`` once the socket is bound, reflects until SIGTERM or
SIGINT (or until its parent is gone, or `--max-seconds`), then prints its counters as one JSON
line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from types import FrameType

from .. import clock, dataplane
from ..constants import TestMode
from ..dataplane.sockets import DEFAULT_BUFFER, buffer_sizes, open_test_socket
from ..wire.packets import TestFormat
from .conditions import socket_stats

__all__ = ["main", "select_implementation"]


def select_implementation(name: str) -> dataplane.Twin:
    """'fast' (what twamp.dataplane selects), 'pure' (the Python twin), or a twin's name."""
    twins = dataplane.implementations()
    if name == "fast":
        return twins.get(dataplane.IMPLEMENTATION, twins["python"])
    if name == "pure":
        return twins["python"]
    module = twins.get(name)
    if module is None:
        raise ValueError(f"implementation {name!r} is not importable here: {sorted(twins)}")
    return module


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m twamp.bench.reflector_proc")
    p.add_argument("--impl", default="fast")
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cpu", type=int, default=-1, help="pin to this core (-1: do not pin)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--busy-poll", action="store_true")
    p.add_argument("--rcvbuf", type=int, default=DEFAULT_BUFFER)
    p.add_argument("--stamp", action="store_true")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        module = select_implementation(args.impl)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fmt = TestFormat(TestMode.OPEN, stamp=args.stamp)
    sock = open_test_socket(args.addr, args.port, rcvbuf=args.rcvbuf, sndbuf=args.rcvbuf)
    inode = os.fstat(sock.fileno()).st_ino
    light = module.LightPolicy(fmt=fmt, stateful=False)
    reflector = module.Reflector(sock, batch=args.batch, busy_poll=args.busy_poll, light=light)
    rcvbuf, sndbuf = buffer_sizes(sock)
    ready = {
        "port": sock.getsockname()[1],
        "implementation": module.IMPLEMENTATION,
        "rcvbuf": rcvbuf,
        "sndbuf": sndbuf,
        "batch": args.batch,
        "busy_poll": args.busy_poll,
        "cpu": args.cpu if args.cpu >= 0 else None,
        "pid": os.getpid(),
        "inode": inode,
    }
    started = clock.monotonic_ns()
    parent = os.getppid()
    reflector.start()
    try:
        print("ready", json.dumps(ready), flush=True)
        deadline = started + int(args.max_seconds * 1e9)
        while not stop.wait(0.2) and clock.monotonic_ns() < deadline:
            if not reflector.running:
                print("the reflector thread died", file=sys.stderr)
                break
            if os.getppid() != parent:
                break  # twamp-bench is gone (killed): do not outlive it
    finally:
        reflector.stop()
    times = os.times()
    stats = socket_stats(inode=inode)
    counters = dict(reflector.counters())
    counters.update(
        drops=None if stats is None else stats.drops,
        cpu_user_s=round(times.user, 3),
        cpu_system_s=round(times.system, 3),
    )
    print(json.dumps(counters), flush=True)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
