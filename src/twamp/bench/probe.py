"""Before any trial: is the target a reflector at all (the probe), and what can our sender offer.

**Probe.** 20 packets at 100 pps. No reply at all, replies that do not parse or do not echo what
we sent, or sends that fail each end the run for this target with one sentence (`BenchError`).
Its median round trip (T4 - T1) sets the loss threshold (RFC 7680 §2.4: a packet not received
within Tmax is lost).

**Sender calibration, per size.** Our Sender (the compiled twin when built) sends back to back
into a discard sink on loopback: the rate it reaches is the most it could ever offer, and the
search is capped below it. Answering replies costs the sender too, so trials are still checked
one by one (`trial.sender_check`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import clock
from ..dataplane.sockets import open_test_socket
from ..wire.packets import TestFormat
from .config import PacketSize
from .targets import (
    BenchError,
    CommandReflector,
    SessionOptions,
    Target,
    TestSession,
    hostport,
    send_error,
    throwaway_crypto,
)
from .trial import first_copies, make_schedule, send_schedule

__all__ = ["ProbeResult", "calibrate", "run_probe", "wait_ready"]

_PROBE_COUNT = 20
_PROBE_PPS = 100.0
_PROBE_WAIT_NS = 1_000_000_000
_READY_TIMEOUT_NS = 10_000_000_000
_CALIBRATION_S = 0.15


@dataclass(frozen=True, slots=True)
class ProbeResult:
    sent: int
    received: int
    total_rtt_median_ns: int
    reflector_synced: bool


def _no_reply(session: TestSession, counters: dict[str, int], foreign: int) -> BenchError:
    """Why nothing usable came back, in one sentence."""
    where = hostport(session.peer)
    if counters["auth_failed"]:
        return BenchError(
            f"replies from {where} fail authentication (wrong key, or not this session's?)"
        )
    if counters["malformed"] or foreign:
        return BenchError(f"replies from {where} are not TWAMP/STAMP reflections")
    if counters["send_errors"] and counters["sent"] == 0:
        why = send_error(session.peer) or "every send failed"
        return BenchError(f"{where} is unreachable: {why[0].lower()}{why[1:]}")
    if counters["unknown_peer"]:
        return BenchError(f"no reply from {where} (replies came from another address)")
    return BenchError(f"no reply from {where}")


def run_probe(target: Target, session: TestSession, size: PacketSize) -> ProbeResult:
    """The probe of the module docstring; BenchError names what is wrong with the target."""
    schedule = make_schedule(_PROBE_PPS, _PROBE_COUNT)
    data = send_schedule(session, size, schedule, wait_ns=_PROBE_WAIT_NS)
    c = data.counters
    got = int(np.unique(data.received["sender_seq"]).size) if data.received.size else 0
    if got == 0:
        raise _no_reply(session, c, data.foreign)
    firsts = first_copies(data.received)
    total = firsts["t4"].astype(np.int64) - firsts["t1"].astype(np.int64)
    return ProbeResult(
        sent=c["sent"],
        received=got,
        total_rtt_median_ns=int(np.median(total)),
        reflector_synced=c["reflector_unsynced"] == 0,
    )


def wait_ready(target: Target, session: TestSession, size: PacketSize) -> ProbeResult:
    """The probe; a reflector started from a command line may take a while to answer it."""
    if not isinstance(target, CommandReflector):
        return run_probe(target, session, size)
    deadline = clock.monotonic_ns() + _READY_TIMEOUT_NS
    while True:
        try:
            return run_probe(target, session, size)
        except BenchError:
            status = target.exited()
            if status is not None:
                raise BenchError(
                    f"the reflector command exited with status {status} before answering"
                ) from None
            if clock.monotonic_ns() >= deadline:
                raise


def calibrate(fmt: TestFormat, size: PacketSize, options: SessionOptions) -> float:
    """The rate (pps) our Sender reaches back to back into a discard sink on loopback."""
    sink = open_test_socket("127.0.0.1", 0, rcvbuf=65536, sndbuf=65536)
    session = TestSession(
        ("127.0.0.1", int(sink.getsockname()[1])),
        fmt,
        crypto=throwaway_crypto(fmt),
        local_ip="127.0.0.1",
        dscp=options.dscp,
        batch=options.batch,
        busy_poll=options.busy_poll,
        rcvbuf=65536,
        sender=options.sender,
    )
    try:
        rate = 0.0
        count = 2000
        for _ in range(2):
            now = np.full(count, clock.realtime_ns(), dtype=np.int64)
            data = send_schedule(session, size, now, wait_ns=0)
            rate = data.achieved_pps or 0.0
            if rate <= 0:
                break
            count = int(min(max(rate * _CALIBRATION_S, 2000), 500_000))
        return rate
    finally:
        session.close()
        sink.close()
