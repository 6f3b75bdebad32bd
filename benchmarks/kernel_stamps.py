"""Send-time error and T3 error of both data-plane twins, from the kernel's transmit stamps.

For each twin, `--runs` times (issue 11: at least 3, for the spread):

* **send error**: a Sender with kernel transmit stamps (`Sender(tx_timestamps=True)`) sends
  `--count` packets at `--rate` to a compiled Light reflector in this process, and
  `metrics.kernel_stamps` gives the distribution of kernel TX stamp - T1 written, and the RTT
  from kernel stamps beside the RTT from the written Timestamps;
* **T3 error**: a Reflector of that twin with its T3 diagnostic (`tx_timestamps=True`)
  answers the compiled Sender at the same rate, and `Reflector.t3_error()` gives kernel TX
  stamp - T3 written (p50/p99 are power-of-two upper bounds).

Loopback, software stamps. The figures depend on the machine and on what else runs on it:
never present a run beside other work as a property of the code.

    python benchmarks/kernel_stamps.py [--runs 3] [--count 5000] [--rate 5000] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from twamp import clock, dataplane
from twamp.constants import TestMode
from twamp.dataplane.sockets import open_test_socket
from twamp.metrics import kernel_stamps
from twamp.wire.packets import TestFormat

OPEN = TestFormat(TestMode.OPEN)


@contextlib.contextmanager
def _light(twin: dataplane.Twin, *, t3: bool) -> Iterator[tuple[Any, tuple[str, int]]]:
    sock = open_test_socket("127.0.0.1", 0)
    refl = twin.Reflector(sock, light=twin.LightPolicy(OPEN, stateful=False), tx_timestamps=t3)
    try:
        with refl:
            yield refl, sock.getsockname()
    finally:
        sock.close()


def _schedule(count: int, rate: float) -> np.ndarray[Any, np.dtype[np.int64]]:
    start = clock.realtime_ns() + 20_000_000
    return start + np.rint(np.arange(count) * (1e9 / rate)).astype(np.int64)


def send_error(
    sender_twin: dataplane.Twin, refl_twin: dataplane.Twin, count: int, rate: float
) -> dict[str, Any]:
    with _light(refl_twin, t3=False) as (_, peer):
        sock = open_test_socket("127.0.0.1", 0)
        with contextlib.closing(sock):
            sender = sender_twin.Sender(sock, peer, fmt=OPEN, tx_timestamps=True)
            result = sender.run(_schedule(count, rate), wait_ns=1_000_000_000)
    assert result.tx_kernel_ns is not None
    return kernel_stamps(result.sent, result.received, result.tx_kernel_ns)


def t3_error(
    refl_twin: dataplane.Twin, sender_twin: dataplane.Twin, count: int, rate: float
) -> dict[str, int]:
    with _light(refl_twin, t3=True) as (refl, peer):
        sock = open_test_socket("127.0.0.1", 0)
        with contextlib.closing(sock):
            sender_twin.Sender(sock, peer, fmt=OPEN).run(
                _schedule(count, rate), wait_ns=1_000_000_000
            )
        t3 = refl.t3_error()
    assert t3 is not None
    return t3


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures as JSON")
    args = parser.parse_args(argv)
    twins = dataplane.implementations()
    fast = twins.get("cython", twins["python"])
    out: dict[str, Any] = {"runs": args.runs, "count": args.count, "rate_pps": args.rate}
    print(f"loopback, software stamps, {args.count} packets at {args.rate:g} pps, {args.runs} runs")
    print("figures in µs: median over runs (min-max over runs)")
    for name, twin in sorted(twins.items()):
        sends = [send_error(twin, fast, args.count, args.rate) for _ in range(args.runs)]
        t3s = [t3_error(twin, fast, args.count, args.rate) for _ in range(args.runs)]
        out[name] = {"send": sends, "t3": t3s}

        def col(runs: list[dict[str, Any]], key: str, stat: str) -> str:
            return _spread([r[key][stat] / 1e3 for r in runs if r[key] is not None])

        missing = sum(s["missing"] for s in sends)
        print(
            f"{name} Sender:    send error p50 {col(sends, 'send_error', 'median')}, "
            f"p99 {col(sends, 'send_error', 'p99')}, max {col(sends, 'send_error', 'max')}; "
            f"kernel RTT p50 {col(sends, 'rtt_kernel', 'median')} vs written "
            f"{col(sends, 'rtt_written', 'median')}; {missing} stamps missing"
        )
        t3_p50 = _spread([t["p50_ns"] / 1e3 for t in t3s])
        t3_p99 = _spread([t["p99_ns"] / 1e3 for t in t3s])
        print(
            f"{name} Reflector: T3 error mean {_spread([t['mean_ns'] / 1e3 for t in t3s])}, "
            f"p50 <= {t3_p50}, p99 <= {t3_p99}, max {_spread([t['max_ns'] / 1e3 for t in t3s])}; "
            f"{sum(t['samples'] for t in t3s)} of {args.runs * args.count} replies stamped"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
