"""`--sender c`: the C load generator (`csrc/c_sender.c`) behind our Sender's interface.

Why a second sender: on loopback the sending core carries the whole kernel delivery path, so a
sender costs about as much per packet as a reflector, and which of the two limits a run is not
obvious. Running the same suite with a sender that shares no code with ours (no Python, no
Cython) tells the two apart: a figure both senders agree on is the reflector's.

`CSender.run` has the signature and result of `dataplane.Sender.run`, so the trial machinery is
the same for both senders. Per schedule it starts ``c_sender`` (built on first use, `cprogs`),
pinned to the calling thread's core, at the schedule's rate for its length, with
``-B 1``: every packet on its own due time, as our Sender paces. ``c_sender`` numbers its
packets from 0, writes one 40-octet record per reflection (sequence number, TTLs, length,
T1-T4), and prints its counters as JSON; they are mapped onto ours: `behind_schedule` is its
count of packets over 1 ms late, `max_lag_ns` its largest lag, `own_drops` its receive
buffer's drop counter (SO_RXQ_OVFL). It does not report per-packet send times: the `sent`
records of the packets that came back carry their true T1 (echoed by the reflector), the
others a T1 placed at the achieved rate, so that the achieved rate of the trial is the one
``c_sender`` measured.

Limits (the CLI checks them before measuring): unauthenticated TWAMP Light (14-octet header +
padding, not STAMP: the Python side does not pass keys), one sender core, trials of at most
`MAX_TRIAL_S` and `MAX_PACKETS` packets. IPv4 and IPv6 both work. The trial length used to be
bounded at 30 s because ``c_sender`` kept every reflection's record in memory until the end (at
most 16 M records, 640 MB, beyond which records were silently dropped and would have read as
loss); it now streams them to the file as they arrive, and its memory is one bit per planned
packet. What stays bounded is the record file this side reads back (40 octets per reflection)
and the run's length, an hour, as every load loop here is bounded in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..metrics import RECORD_DTYPE, SENT_DTYPE
from . import cprogs
from .config import C_SENDER_MAX_PACKETS, C_SENDER_MAX_TRIAL_S

__all__ = ["MAX_PACKETS", "MAX_TRIAL_S", "RAW_DTYPE", "CSender", "CSenderError"]

MAX_TRIAL_S = C_SENDER_MAX_TRIAL_S  # c_sender.c MAX_DURATION_S
MAX_PACKETS = C_SENDER_MAX_PACKETS  # c_sender.c MAX_PACKETS: its duplicate bitmap, 25 MB
_MAX_WAIT_MS = 10_000
_NS = 1_000_000_000
_SEQ_MASK = 0xFFFFFFFF

RAW_DTYPE = np.dtype(
    [
        ("seq", "<u4"),
        ("sender_ttl", "u1"),
        ("reply_ttl", "u1"),
        ("length", "<u2"),
        ("t1", "<i8"),
        ("t2", "<i8"),
        ("t3", "<i8"),
        ("t4", "<i8"),
    ]
)
"""`struct record` of c_sender.c: packed, little-endian, 40 octets."""


class CSenderError(RuntimeError):
    """c_sender failed; the message is its own last line of error output."""


@dataclass(slots=True)
class CSenderResult:
    sent: npt.NDArray[np.void]
    received: npt.NDArray[np.void]
    counters: dict[str, int]


def _own_core() -> int:
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return next(iter(cores)) if len(cores) == 1 else -1


class CSender:
    """One session's C sender: the peer, the padding, the receive buffer (see the docstring)."""

    IMPLEMENTATION = "c"

    def __init__(self, peer: tuple[str, int], *, padding: int, rcvbuf: int, dscp: int = 0) -> None:
        self.peer = peer
        self.padding = padding
        self.rcvbuf = rcvbuf
        self.dscp = dscp
        self.binary: Path = cprogs.build("c_sender")

    def _argv(self, rate: float, duration_s: float, wait_ns: int, raw: Path) -> list[str]:
        wait_ms = min(_MAX_WAIT_MS, max(0, round(wait_ns / 1e6)))
        return [
            str(self.binary),
            "-a",
            self.peer[0],
            "-p",
            str(self.peer[1]),
            "-r",
            f"{rate:.3f}",
            "-d",
            f"{duration_s:.6f}",
            "-s",
            str(self.padding),
            "-B",
            "1",
            "-w",
            str(wait_ms),
            "-R",
            str(self.rcvbuf),
            "-c",
            str(_own_core()),
            "-D",
            str(self.dscp),
            "-o",
            str(raw),
        ]

    def run(
        self, schedule: npt.NDArray[np.int64], *, first_seq: int = 0, wait_ns: int = 0
    ) -> CSenderResult:
        n = int(schedule.size)
        if n == 0:
            return CSenderResult(
                np.zeros(0, SENT_DTYPE), np.zeros(0, RECORD_DTYPE), dict.fromkeys(_KEYS, 0)
            )
        span = int(schedule[-1]) - int(schedule[0])
        # A schedule all at one time (calibration) means back to back: as fast as it goes.
        rate = 1e6 if n < 2 or span <= 0 else (n - 1) * _NS / span
        duration = n / rate
        if duration > MAX_TRIAL_S:
            raise CSenderError(f"c_sender runs at most {MAX_TRIAL_S:g} s per trial")
        if n > MAX_PACKETS:
            raise CSenderError(f"c_sender sends at most {MAX_PACKETS:,} packets per trial")
        with tempfile.TemporaryDirectory(prefix="twamp-csender-") as tmp:
            raw = Path(tmp) / "raw"
            proc = subprocess.run(
                self._argv(rate, duration, wait_ns, raw),
                capture_output=True,
                text=True,
                timeout=duration + wait_ns / 1e9 + 30,
                check=False,
            )
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
                raise CSenderError(f"c_sender failed: {lines[-1]}")
            summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
            records = np.fromfile(raw, dtype=RAW_DTYPE) if raw.exists() else np.zeros(0, RAW_DTYPE)
        return _result(summary, records, first_seq)


_KEYS = (
    "sent",
    "send_errors",
    "received",
    "malformed",
    "auth_failed",
    "unknown_peer",
    "behind_schedule",
    "max_lag_ns",
    "reflector_unsynced",
    "own_drops",
)


def _result(
    summary: dict[str, Any], records: npt.NDArray[np.void], first_seq: int
) -> CSenderResult:
    sent_n = int(summary["sent"])
    achieved = float(summary["send_rate"]) or 1.0
    received = np.zeros(records.size, dtype=RECORD_DTYPE)
    received["sender_seq"] = (records["seq"].astype(np.int64) + first_seq) & _SEQ_MASK
    for field in ("t1", "t2", "t3", "t4", "sender_ttl", "reply_ttl"):
        received[field] = records[field]
    sent = np.zeros(sent_n, dtype=SENT_DTYPE)
    sent["seq"] = (np.arange(sent_n, dtype=np.int64) + first_seq) & _SEQ_MASK
    # T1 placed at the achieved rate from the first reflected packet's true T1 (see docstring),
    # then the true T1 of every packet that came back.
    if records.size:
        k0 = int(records["seq"][0])
        t0 = int(records["t1"][0]) - round(k0 * _NS / achieved)
    else:
        t0 = 0
    sent["t1"] = t0 + np.rint(np.arange(sent_n) * (_NS / achieved)).astype(np.int64)
    ok = records["seq"] < sent_n
    sent["t1"][records["seq"][ok].astype(np.int64)] = records["t1"][ok]
    counters = {
        "sent": sent_n,
        "send_errors": int(summary["send_errors"]),
        "received": int(records.size),
        "malformed": int(summary["malformed"]),
        "auth_failed": int(summary["auth_failed"]),
        "unknown_peer": int(summary["unexpected"]),
        "behind_schedule": int(summary["late_1ms"]),
        "max_lag_ns": int(summary["lag_max_ns"]),
        "reflector_unsynced": 0,
        "own_drops": int(summary["rx_overflow"]),
    }
    return CSenderResult(sent, received, counters)
