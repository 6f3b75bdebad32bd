"""The compiled reflector's send batch and buffer stride, side by side in one run (loopback).

    python benchmarks/t3_backlog.py [--variants sb=1 sb=2 sb=4 sb=8 sb=64] [--rounds 3]
        [--scenario burst --burst 64 --bursts 300 --gap-ms 2] [--json out.json]
    python benchmarks/t3_backlog.py --variants stride=65600 stride=65536 stride=2112 ...

A variant is `sb=N` (Reflector(send_batch=N)) and/or `stride=M` (ReflectorLoop(buf_stride=M)),
joined by commas (`sb=4,stride=2112`); the first one is the baseline of the ratios. Every round
runs every variant once, in a rotated order (interleaved: a disturbance on the shared machine
hits all variants alike), each a fresh Reflector (stateless TWAMP Light, open mode, batch 64,
`tx_timestamps=True`: the T3 diagnostic) on its own loop, fed by the compiled Sender.

Scenarios:
- `burst` (a backlog): the Reflector leaves its loop (`stop()`), `--burst` requests are queued
  on its socket, and it joins again (`start()`): the loop drains a backlog of exactly that
  size; the next burst when every reply is out. Residence is meaningless here (T2 is the
  enqueue time, before the pause) and is printed for completeness only.
- `paced`: the compiled Sender on another core at `--rate` pps: the loop keeps up, batches
  of one or a few; residence is meaningful.

Per variant and round: T3 error (the kernel's software transmit time minus the Timestamp
written, `Reflector.t3_error()`: mean, p99 upper bound), residence p50/p99 upper bounds
(T3 - T2, `residence()`), the loop thread's CPU time per reflected datagram
(`pthread_getcpuclockid`), send calls per datagram (`send_groups()`), and loss. Printed: the
median over rounds per variant, then the ratios to the baseline per round (median, min-max).
Figures from a shared machine are not properties of the code: say so where they are quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

import numpy as np

from twamp import clock, dataplane
from twamp.constants import TestMode
from twamp.dataplane.sockets import open_test_socket
from twamp.dataplane.types import (
    BUF_STRIDE,
    REFLECTOR_SEND_BATCH,
    RESIDENCE_BOUNDS_NS,
    RESIDENCE_KEYS,
)
from twamp.wire.packets import TestFormat, build_sender

FMT = TestFormat(TestMode.OPEN)
METRICS = ("t3_mean_us", "t3_p99_us", "res_p50_us", "res_p99_us", "cpu_us", "calls_per_pkt")


def parse_variant(text: str) -> dict[str, int]:
    out = {"sb": REFLECTOR_SEND_BATCH, "stride": BUF_STRIDE}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in out:
            raise argparse.ArgumentTypeError(f"unknown variant key {key!r} (sb, stride)")
        out[key] = int(value)
    return out


def _quantile_us(hist: list[int], bounds_ns: list[int], q: float) -> float:
    """Upper bound of the bucket holding quantile q (the last bucket: its lower bound)."""
    total = sum(hist)
    if not total:
        return float("nan")
    need = q * total
    run = 0
    for i, count in enumerate(hist):
        run += count
        if run >= need:
            return bounds_ns[min(i, len(bounds_ns) - 1)] / 1000.0
    return bounds_ns[-1] / 1000.0


def _paced(args: argparse.Namespace) -> np.ndarray:
    count = int(args.rate * args.seconds)
    start_ns = clock.realtime_ns() + 20_000_000
    return start_ns + np.arange(count, dtype=np.int64) * int(1e9 / args.rate)


def _drain(tx: socket.socket) -> int:
    n = 0
    while True:
        try:
            tx.recv(65536)
        except BlockingIOError:
            return n
        n += 1


def _bursts(refl: Any, rsock: socket.socket, args: argparse.Namespace) -> dict[str, int]:
    """Queue each burst while the Reflector is off its loop, then let it drain the backlog."""
    padding = bytes(args.size - FMT.sender_header)
    dest = rsock.getsockname()[:2]
    sent = received = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.bind(("127.0.0.1", 0))
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        tx.setblocking(False)
        for _ in range(args.bursts):
            refl.stop()
            for _ in range(args.burst):
                tx.sendto(bytes(build_sender(FMT, sent, 0, 0, padding)), dest)
                sent += 1
            refl.start()
            deadline = time.monotonic() + 2.0
            while refl.counters()["received"] < sent and time.monotonic() < deadline:
                time.sleep(0.0005)
            received += _drain(tx)
        time.sleep(0.05)
        received += _drain(tx)
    return {"sent": sent, "received": received}


def trial(variant: dict[str, int], args: argparse.Namespace, cores: list[int]) -> dict[str, Any]:
    loop_core = cores[0]
    sender_core = cores[-1]
    with ExitStack() as stack:
        rsock = stack.enter_context(open_test_socket("127.0.0.1", 0))
        ssock = stack.enter_context(open_test_socket("127.0.0.1", 0))
        loop = dataplane.ReflectorLoop(batch=64, buf_stride=variant["stride"])
        stack.callback(loop.close)
        light = dataplane.LightPolicy(fmt=FMT, stateful=False)
        refl = dataplane.Reflector(
            rsock, light=light, loop=loop, send_batch=variant["sb"], tx_timestamps=True
        )
        refl.start()
        stack.callback(refl.stop)
        thread = loop.thread
        assert thread is not None and thread.native_id is not None and thread.ident is not None
        os.sched_setaffinity(thread.native_id, {loop_core})
        cpu_clock = time.pthread_getcpuclockid(thread.ident)
        if args.scenario == "burst":
            cpu0 = time.clock_gettime_ns(cpu_clock)
            counts = _bursts(refl, rsock, args)
            cpu1 = time.clock_gettime_ns(cpu_clock)
        else:
            peer = rsock.getsockname()[:2]
            ssock.connect(peer)
            padding = args.size - FMT.sender_header
            sender = dataplane.Sender(ssock, peer, fmt=FMT, padding=padding)
            saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {sender_core})
            try:
                cpu0 = time.clock_gettime_ns(cpu_clock)
                result = sender.run(_paced(args))
                cpu1 = time.clock_gettime_ns(cpu_clock)
            finally:
                os.sched_setaffinity(0, saved)
            counts = {"sent": result.counters["sent"], "received": result.counters["received"]}
        t3 = refl.t3_error() or {}
        res = refl.residence()
        groups = refl.send_groups()
        counters = refl.counters()
    reflected = max(1, counters["reflected"])
    hist = [res[k] for k in RESIDENCE_KEYS[:-1]]  # the buckets, +Inf last (not the sum)
    bounds = [*RESIDENCE_BOUNDS_NS, RESIDENCE_BOUNDS_NS[-1]]  # +Inf: reported as its floor
    return {
        "sent": counts["sent"],
        "received": counts["received"],
        "loss": counts["sent"] - counts["received"],
        "t3_mean_us": t3.get("mean_ns", 0) / 1000.0,
        "t3_p99_us": t3.get("p99_ns", 0) / 1000.0,
        "t3_samples": t3.get("samples", 0),
        "res_p50_us": _quantile_us(hist, bounds, 0.5),
        "res_p99_us": _quantile_us(hist, bounds, 0.99),
        "cpu_us": (cpu1 - cpu0) / 1000.0 / reflected,
        "calls_per_pkt": sum(groups.values()) / reflected,
        "groups": {str(k): v for k, v in sorted(groups.items())},
    }


def summarize(names: list[str], rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    base = names[0]
    out: dict[str, Any] = {}
    for name in names:
        rows = [r[name] for r in rounds]
        entry: dict[str, Any] = {
            m: statistics.median(row[m] for row in rows) for m in (*METRICS, "loss")
        }
        ratios = {}
        for m in METRICS:
            vals = [r[name][m] / r[base][m] for r in rounds if r[base][m]]
            if vals:
                ratios[m] = (statistics.median(vals), min(vals), max(vals))
        entry["ratios_to_" + base] = ratios
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["sb=8", "sb=1", "sb=2", "sb=4", "sb=64"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scenario", choices=("burst", "paced"), default="burst")
    p.add_argument("--burst", type=int, default=64)
    p.add_argument("--bursts", type=int, default=300)
    p.add_argument("--gap-ms", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=20000.0)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--size", type=int, default=41, help="request size in octets (>= 14)")
    p.add_argument("--json", help="also write the results as JSON here ('-': stdout)")
    args = p.parse_args(argv)
    if dataplane.IMPLEMENTATION != "cython":
        print("the compiled data plane is not built: nothing to measure", file=sys.stderr)
        return 2
    variants = {name: parse_variant(name) for name in args.variants}
    names = list(variants)
    cores = sorted(os.sched_getaffinity(0))
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        row = {}
        for name in order:
            row[name] = trial(variants[name], args, cores)
            print(f"round {r + 1} {name:>24}: " + _line(row[name]), flush=True)
        rounds.append(row)
    summary = summarize(names, rounds)
    print(f"\nmedian of {args.rounds} rounds, scenario {args.scenario}; ratios to {names[0]}")
    for name in names:
        s = summary[name]
        ratio = s["ratios_to_" + names[0]]
        print(f"{name:>24}: " + _line(s))
        print(
            " " * 26
            + "  ".join(f"{m} x{v[0]:.2f} ({v[1]:.2f}-{v[2]:.2f})" for m, v in ratio.items())
        )
    if args.json:
        doc = {
            "args": vars(args),
            "rounds": rounds,
            "summary": summary,
            "host": socket.gethostname(),
        }
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    return 0


def _line(d: dict[str, Any]) -> str:
    return (
        f"T3 err mean {d['t3_mean_us']:7.2f} us p99<= {d['t3_p99_us']:8.2f} us  "
        f"residence p50<= {d['res_p50_us']:7.1f} p99<= {d['res_p99_us']:7.1f} us  "
        f"CPU {d['cpu_us']:5.2f} us/pkt  calls/pkt {d['calls_per_pkt']:.3f}  loss {d['loss']}"
    )


if __name__ == "__main__":
    sys.exit(main())
