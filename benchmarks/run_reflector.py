"""Launcher: one of OUR reflectors (pure or compiled twin) in a process of its own, for benchmarks.

    python benchmarks/run_reflector.py --impl cython --port 0 --cpu 0 [--busy-poll]
        [--mode open|auth|enc --peer 127.0.0.1:40000 --aes-key HEX --hmac-key HEX]

Open mode is a stateless TWAMP Light reflector (`LightPolicy`, RFC 5357 Appendix I), the same
job as `c_reflector.c`. TWAMP Light has no keys, so the authenticated and encrypted modes use a
`SessionSpec` for the one sender (`--peer`, its exact address and port) with fixed test keys, as
TWAMP-Control would have installed it (stateful: the reflector counts its own Sequence Number).

The process pins itself to `--cpu` (the reflector thread inherits the mask), prints one line
`ready {json}` when the socket is bound, reflects until SIGTERM/SIGINT (or `--max-seconds`), then
prints its counters as one JSON line and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from types import FrameType

from twamp.constants import TestMode
from twamp.crypto import TestKeys, TestPacketCrypto
from twamp.dataplane import implementations
from twamp.dataplane.sockets import DEFAULT_BUFFER, buffer_sizes, open_test_socket
from twamp.wire.packets import TestFormat

_MODES = {"open": TestMode.OPEN, "auth": TestMode.AUTHENTICATED, "enc": TestMode.ENCRYPTED}


def _peer(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", required=True, help="python | cython (dataplane.implementations())")
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port, reported in 'ready'")
    p.add_argument("--cpu", type=int, default=-1, help="pin to this CPU (-1: do not pin)")
    p.add_argument("--busy-poll", action="store_true")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rcvbuf", type=int, default=DEFAULT_BUFFER)
    p.add_argument("--mode", choices=sorted(_MODES), default="open")
    p.add_argument("--peer", type=_peer, help="auth/enc: the sender's ADDR:PORT")
    p.add_argument("--aes-key", type=bytes.fromhex, help="auth/enc: 16-octet test AES key, hex")
    p.add_argument("--hmac-key", type=bytes.fromhex, help="auth/enc: 32-octet test HMAC key, hex")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    twins = implementations()
    module = twins.get(args.impl)
    if module is None:
        known = sorted(twins)
        print(f"implementation {args.impl!r} is not importable here: {known}", file=sys.stderr)
        return 2
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    mode = _MODES[args.mode]
    fmt = TestFormat(mode)
    sock = open_test_socket(args.addr, args.port, rcvbuf=args.rcvbuf, sndbuf=args.rcvbuf)
    light = module.LightPolicy(fmt=fmt, stateful=False) if mode is TestMode.OPEN else None
    reflector = module.Reflector(sock, batch=args.batch, busy_poll=args.busy_poll, light=light)
    if mode is not TestMode.OPEN:
        if args.peer is None or args.aes_key is None or args.hmac_key is None:
            print("--mode auth/enc needs --peer, --aes-key and --hmac-key", file=sys.stderr)
            return 2
        crypto = TestPacketCrypto(TestKeys(args.aes_key, args.hmac_key), mode)
        reflector.add_session(module.SessionSpec(peer=args.peer, fmt=fmt, crypto=crypto))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rcvbuf, sndbuf = buffer_sizes(sock)
    ready = {
        "port": sock.getsockname()[1],
        "impl": module.IMPLEMENTATION,
        "crypto_backend": getattr(module, "CRYPTO_BACKEND", "python"),
        "mode": args.mode,
        "rcvbuf": rcvbuf,
        "sndbuf": sndbuf,
        "batch": args.batch,
        "busy_poll": args.busy_poll,
        "pid": os.getpid(),
    }
    started = time.monotonic()
    reflector.start()
    try:
        print("ready", json.dumps(ready), flush=True)
        deadline = started + args.max_seconds
        while not stop.wait(0.2) and time.monotonic() < deadline:
            if not reflector.running:
                print("the reflector thread died", file=sys.stderr)
                break
    finally:
        reflector.stop()
    cpu = os.times()
    counters = dict(reflector.counters())
    counters.update(
        impl=module.IMPLEMENTATION,
        crypto_backend=getattr(module, "CRYPTO_BACKEND", "python"),
        mode=args.mode,
        cpu_user_s=round(cpu.user, 3),
        cpu_system_s=round(cpu.system, 3),
        wall_s=round(time.monotonic() - started, 3),
    )
    print(json.dumps(counters), flush=True)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
