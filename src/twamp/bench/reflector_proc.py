"""One of our reflectors in a process of its own, for `twamp-bench`.

    python -m twamp.bench.reflector_proc --impl fast --port 0 --cpu 0 [--stamp] [--busy-poll]
        [--mode auth|enc --peer 127.0.0.1:40000 --aes-key HEX --hmac-key HEX]

A stateless TWAMP Light reflector (`LightPolicy`, RFC 5357 Appendix I; `--stamp`: the 44-octet
STAMP layout, RFC 8762) on one UDP socket; with `--mode auth|enc` instead one session for the
one sender `--peer` with fixed test keys, so a C sender can check the test-packet crypto.
`--impl fast` is what `twamp.dataplane` selects (the compiled twin when it is built), `pure` the
pure-Python twin, or an IMPLEMENTATION name.

Only the reflector loop's thread is pinned to `--cpu`, the measured core; the main thread runs
on the other cores (on `--cpu` only when it is the only one allowed) and sleeps in `select` on
the signal wake-up pipe, waking once a second to look at the loop and the parent. Before, the
whole process was pinned to `--cpu` and the main thread woke every 100 ms there: with
`--busy-poll` each wake preempted the spinning loop (residence p99 9-72 x the C reference's,
which is one thread). The SIGTERM/SIGINT handler only records the signal (issue 12: a handler
that calls Event.set() can hang); `signal.set_wakeup_fd` makes the pipe readable at once.

Prints one line ``ready {json}`` once the socket is bound and the loop runs, reflects until
SIGTERM or SIGINT (or until its parent is gone, or `--max-seconds`), then prints its counters
as one JSON line and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import sys
from types import FrameType
from typing import Any

from .. import clock, dataplane
from ..constants import TestMode
from ..crypto import TestKeys, TestPacketCrypto
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
    p.add_argument(
        "--send-batch",
        type=int,
        default=None,
        help="replies per sendmmsg at most (default: SEND_BATCH)",
    )
    p.add_argument("--busy-poll", action="store_true")
    p.add_argument("--rcvbuf", type=int, default=DEFAULT_BUFFER)
    p.add_argument("--stamp", action="store_true")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p.add_argument("--mode", choices=sorted(_MODES), default="open")
    p.add_argument("--peer", type=_peer, help="auth/enc: the one sender's ADDR:PORT")
    p.add_argument("--aes-key", type=bytes.fromhex, help="auth/enc: 16-octet test AES key, hex")
    p.add_argument("--hmac-key", type=bytes.fromhex, help="auth/enc: 32-octet test HMAC key, hex")
    return p.parse_args(argv)


_MODES = {"open": TestMode.OPEN, "auth": TestMode.AUTHENTICATED, "enc": TestMode.ENCRYPTED}


def _peer(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _reflector(module: dataplane.Twin, args: argparse.Namespace, sock: socket.socket) -> Any:
    """Open: a stateless Light reflector. auth/enc: one session for `--peer` with fixed test
    keys, as TWAMP-Control would install it (RFC 5357 §4.1.2 protection of test packets)."""
    mode = _MODES[args.mode]
    if mode is TestMode.OPEN:
        light = module.LightPolicy(fmt=TestFormat(mode, stamp=args.stamp), stateful=False)
        return module.Reflector(
            sock,
            batch=args.batch,
            busy_poll=args.busy_poll,
            light=light,
            send_batch=args.send_batch,
        )
    if args.peer is None or args.aes_key is None or args.hmac_key is None:
        raise ValueError("--mode auth/enc needs --peer, --aes-key and --hmac-key")
    reflector = module.Reflector(
        sock, batch=args.batch, busy_poll=args.busy_poll, light=None, send_batch=args.send_batch
    )
    crypto = TestPacketCrypto(TestKeys(args.aes_key, args.hmac_key), mode)
    spec = module.SessionSpec(peer=args.peer, fmt=TestFormat(mode), crypto=crypto)
    reflector.add_session(spec)
    return reflector


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _pin(reflector: Any, cpu: int) -> tuple[int | None, list[int] | None]:
    """Pin the reflector loop's thread, and only it, to `cpu`; every other thread of the
    process (the main one, and any a library started at import, e.g. OpenBLAS's worker) to
    the other allowed cores. Returns (the loop's thread id, the others' cores), or Nones."""
    if cpu < 0:
        return None, None
    thread = reflector.loop.thread if reflector.loop is not None else None
    if thread is None or thread.native_id is None:
        raise RuntimeError("the reflector loop has no thread to pin")
    loop_tid = int(thread.native_id)
    others = sorted(os.sched_getaffinity(0) - {cpu}) or [cpu]
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != loop_tid:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), others)
    os.sched_setaffinity(loop_tid, {cpu})
    return loop_tid, others


def _send_batch(reflector: Any) -> int | None:
    value = getattr(reflector, "send_batch", None)
    return None if value is None else int(value)


def _wait(reflector: Any, parent: int, deadline_ns: int, stop: list[int], wake: int) -> None:
    """Sleep in select on the signal wake-up pipe (one wake a second) until SIGTERM or SIGINT,
    the deadline, the loop's death or the parent's."""
    while not stop and clock.monotonic_ns() < deadline_ns:
        if select.select([wake], [], [], 1.0)[0]:
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 64)
            continue  # the handler has run (or runs now): `stop` says
        if not reflector.running:
            print("the reflector thread died", file=sys.stderr)
            return
        if os.getppid() != parent:
            return  # twamp-bench is gone (killed): do not outlive it


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        module = select_implementation(args.impl)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    # The handler only records the signal. A handler that calls threading.Event.set() can hang
    # for good: it runs in the main thread, and if the signal lands while that thread is inside
    # Event.wait() holding the Event's condition lock, set() waits for the lock forever.
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    wake, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    sock = open_test_socket(args.addr, args.port, rcvbuf=args.rcvbuf, sndbuf=args.rcvbuf)
    inode = os.fstat(sock.fileno()).st_ino
    try:
        reflector = _reflector(module, args, sock)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
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
        "mode": args.mode,
        "crypto_backend": getattr(module, "CRYPTO_BACKEND", "python"),
    }
    started = clock.monotonic_ns()
    parent = os.getppid()
    reflector.start()
    try:
        loop_tid, main_cpus = _pin(reflector, args.cpu)
        ready.update(
            loop_cpu=None if loop_tid is None else args.cpu,
            loop_tid=loop_tid,
            main_cpus=main_cpus,
            send_batch=_send_batch(reflector),
        )
        print("ready", json.dumps(ready), flush=True)
        _wait(reflector, parent, started + int(args.max_seconds * 1e9), stop, wake)
    finally:
        # From here on a second signal (SIGINT right after SIGTERM) must not kill the process
        # before its counters are out: Python's finalization puts a recording handler back to
        # SIG_DFL, and a signal arriving then would end it with no counters; ignored ones stay.
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
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
