"""Micro-benchmarks of the hot paths: what one packet costs in each step, in isolation.

    python benchmarks/micro.py [--quick] [--json FILE]

Each case runs a step in a loop (`timeit`, best of 5 repeats) and prints nanoseconds per call:
building and parsing a Session-Sender packet, reflecting it (the pure twin's per-packet work,
RFC 5357 §4.2.1), the NTP timestamp conversion (RFC 5905 §6), protecting and checking a test
packet in authenticated and encrypted mode (RFC 4656 §4.1.2, RFC 5357 §4.1.2), and
`metrics.summarize` over 100,000 records (per record). These are the costs `twamp-bench`
aggregates; a reflector's throughput is measured with `twamp-bench` (`twamp-bench compare -r
fast -r pure -r c`), not here.

The numbers depend on the machine and on what else runs on it: compare cases within one run,
and runs on one quiet machine, never figures across machines.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np

from twamp.constants import TestMode
from twamp.crypto import TestKeys, TestPacketCrypto
from twamp.metrics import RECORD_DTYPE, SENT_DTYPE, summarize
from twamp.timestamps import ntp_from_ns
from twamp.wire.testformat import TestFormat, build_sender, parse_sender, reflect

Case = tuple[str, Callable[[], Any], int]  # name, one call, items per call


def _cases(records: int) -> list[Case]:
    open_fmt = TestFormat(TestMode.OPEN)
    request = bytes(build_sender(open_fmt, 1, ntp_from_ns(1_700_000_000_000_000_000), 1, bytes(27)))
    keys = TestKeys(bytes(range(16)), bytes(range(32)))
    cases: list[Case] = [
        ("ntp_from_ns", lambda: ntp_from_ns(1_700_000_000_123_456_789), 1),
        (
            "build_sender (open, 41 octets)",
            lambda: build_sender(open_fmt, 7, 0x1234_5678_9ABC_DEF0, 1, bytes(27)),
            1,
        ),
        ("parse_sender (open)", lambda: parse_sender(open_fmt, request), 1),
        (
            "reflect (open, stateless)",
            lambda: reflect(
                open_fmt, request, seq=None, receive_timestamp=1, error_estimate=1, sender_ttl=64
            ),
            1,
        ),
    ]
    for mode, name in ((TestMode.AUTHENTICATED, "auth"), (TestMode.ENCRYPTED, "enc")):
        fmt = TestFormat(mode)
        crypto = TestPacketCrypto(keys, mode)
        pkt = bytearray(build_sender(fmt, 1, 2, 1, bytes(64)))
        sealed = bytearray(pkt)
        crypto.protect_sender(sealed)
        cases.append(
            (f"protect_sender ({name})", lambda c=crypto, p=pkt: c.protect_sender(bytearray(p)), 1)
        )
        cases.append(
            (
                f"unprotect_sender ({name})",
                lambda c=crypto, p=sealed: c.unprotect_sender(bytearray(p)),
                1,
            )
        )
    sent = np.zeros(records, dtype=SENT_DTYPE)
    sent["seq"] = np.arange(records)
    sent["t1"] = np.arange(records, dtype=np.int64) * 10_000
    rx = np.zeros(records, dtype=RECORD_DTYPE)
    rx["sender_seq"] = sent["seq"]
    rx["t1"] = sent["t1"]
    rx["t2"] = rx["t1"] + 5_000
    rx["t3"] = rx["t2"] + 2_000
    rx["t4"] = rx["t3"] + 5_000
    cases.append(
        (
            f"metrics.summarize ({records:,} records, per record)",
            lambda: summarize(sent, rx, clocks_synced=False, stateful_reflector=False),
            records,
        )
    )
    return cases


def run(quick: bool) -> list[dict[str, Any]]:
    number = 200 if quick else 20_000
    out = []
    for name, call, items in _cases(1_000 if quick else 100_000):
        n = max(1, number // items) if items > 1 else number
        best = min(timeit.repeat(call, number=n, repeat=2 if quick else 5))
        out.append({"case": name, "ns_per_item": best / n / items * 1e9, "calls": n})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few repetitions (a smoke test)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-': stdout)")
    args = p.parse_args(argv)
    results = run(args.quick)
    if args.json == "-":
        print(json.dumps(results, indent=2))
        return 0
    width = max(len(r["case"]) for r in results)
    for r in results:
        print(f"{r['case']:<{width}}  {r['ns_per_item']:>10,.0f} ns")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
