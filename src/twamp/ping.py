"""`twamp ping` as a library: one test session from set-up to summary.

`run_ping` is the full protocol (RFC 5357): a TWAMP-Control connection (`net.client`) sets up
one test session, the Session-Sender (`dataplane.Sender`, compiled when built) sends the
schedule and collects reflections, Stop-Sessions ends it, `metrics.summarize` sums it up.
`run_light_ping` is the same without control, towards a TWAMP Light or STAMP reflector (RFC 5357
Appendix I, RFC 8762): open mode, the TWAMP sender format, which a STAMP reflector also answers
(its replies may be longer, RFC 8762 §4.6).

The Sender runs in slices of about `slice_seconds` so that records can leave the process as
they arrive: `raw` writes one JSON line per reflection after each slice (and, at the end, one
per packet that got no reply), and `on_slice` sees each slice's result. A KeyboardInterrupt or a
set `stop` ends the exchange early; the sessions are still stopped, the raw file is flushed and
closed, and the result covers what was sent so far (`interrupted` is True).

This module orchestrates I/O but imports no I/O module itself (tests/test_sourcecode.py): the
sockets, the clock and the event loop are reached through `dataplane`, `clock` and `net`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from . import __version__, clock
from .constants import (
    SYMMETRIC_PADDING_AUTH,
    SYMMETRIC_PADDING_OPEN,
    TWAMP_CONTROL_PORT,
    TWAMP_TEST_PORT,
    Mode,
    TestMode,
)
from .dataplane import Sender, SenderResult, StopFlag
from .dataplane.hwstamp import choose_tx_stamps
from .dataplane.sockets import open_test_socket
from .hostport import parse_hostport
from .inet import check_dscp, dscp_to_tos
from .metrics import RECORD_DTYPE, SENT_DTYPE, kernel_stamps, summarize
from .net.client import (
    BlockingClient,
    ClientError,
    ClientTimeoutError,
    mode_name,
    resolve_blocking,
)
from .timestamps import NS, ErrorEstimate
from .wire.packets import TestFormat

__all__ = [
    "MAX_COUNT",
    "IntervalReport",
    "PingOptions",
    "PingResult",
    "Slot",
    "continuous_count",
    "default_padding",
    "iter_schedule",
    "make_schedule",
    "our_error_estimate_ns",
    "parse_schedule",
    "parse_target",
    "run_continuous",
    "run_light_ping",
    "run_ping",
]

log = logging.getLogger(__name__)

_S_BIT = 0x8000  # Error Estimate: clock synchronised (RFC 4656 §4.1.2)
_LEAD_NS = 10_000_000  # first send this long after the schedule is made
_MAX_PADDING = 65000
_FLOOD_SLICE = 100  # packets per slice when the interval is 0


def default_padding(test_mode: TestMode) -> int:
    """twping's padding: replies as long as requests (RFC 5357 §4.1.2, owamp #32): 27 or 64."""
    return SYMMETRIC_PADDING_OPEN if test_mode is TestMode.OPEN else SYMMETRIC_PADDING_AUTH


def parse_target(target: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 literal -> (host, port)."""
    return parse_hostport(target, default_port)


MAX_COUNT = 1 << 32
"""Sequence numbers are 32 bits (RFC 5357 §4.1.2): one session sends at most this many packets."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One entry of twping's `-i` send schedule: a gap in seconds, fixed or exponential."""

    seconds: float
    exponential: bool = True

    def __post_init__(self) -> None:
        if not (self.seconds >= 0 and math.isfinite(self.seconds)):
            raise ValueError(f"a gap must be 0 or more seconds, not {self.seconds}")

    def __str__(self) -> str:
        return f"{self.seconds:g}{'e' if self.exponential else 'f'}"


def parse_schedule(text: str) -> tuple[Slot, ...]:
    """twping's `-i`: comma-separated gaps in seconds, each with `f` (fixed) or `e` (exponential).

    A gap without a letter is exponential, as in twping (owping(1), `-i`): '0.1' and '0.1e' are
    Poisson sending with a mean gap of 0.1 s, '0.01f' is periodic, '0.1f,0.5e' alternates.
    """
    slots = []
    for item in text.split(","):
        value = item.strip().lower()
        kind = value[-1:] if value[-1:] in ("e", "f") else "e"
        number = value[:-1] if value[-1:] in ("e", "f") else value
        try:
            seconds = float(number)
        except ValueError:
            raise ValueError(
                f"-i {text!r}: {item!r} is not a gap in seconds; write e.g. 0.1 or 0.1e "
                "(exponential) or 0.01f (fixed), several separated by commas"
            ) from None
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"-i {text!r}: the interval must be 0 or more seconds, not {number}")
        slots.append(Slot(seconds, kind == "e"))
    return tuple(slots)


def iter_schedule(
    count: int | None,
    slots: tuple[Slot, ...],
    *,
    seed: int | None = None,
    chunk: int = 1024,
    start: int = 0,
) -> Iterator[npt.NDArray[np.int64]]:
    """Send times relative to the first packet (ns, ascending, the first is 0), `chunk` at a time.

    The gap before packet i (i >= 1) is slot (i - 1) mod len(slots), twping's loop over the
    schedule; exponential slots draw from one seeded numpy generator, so a run can be repeated.
    Each gap is rounded to a whole ns before the running sum, so fixed gaps never drift. Only
    one chunk exists at a time: memory does not grow with `count` (None: for ever). `start`
    skips that many packets (their times are still drawn, so the sequence is the same).
    """
    if count is not None and count < 0:
        raise ValueError("count cannot be negative")
    if not slots:
        raise ValueError("the schedule needs at least one gap")
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    means = np.array([s.seconds * NS for s in slots], dtype=np.float64)
    exponential = np.array([s.exponential for s in slots], dtype=bool)
    rng = np.random.default_rng(seed) if exponential.any() else None
    last = 0  # send time of the packet before the chunk
    done = 0
    while count is None or done < count:
        n = chunk if count is None else min(chunk, count - done)
        index = np.arange(done, done + n, dtype=np.int64)
        which = (index - 1) % len(slots)
        gaps = means[which]
        if rng is not None:
            draws = rng.exponential(1.0, n)
            gaps = np.where(exponential[which], gaps * draws, gaps)
        gaps_ns = np.rint(gaps).astype(np.int64)
        if done == 0:
            gaps_ns[0] = 0
        out = last + np.cumsum(gaps_ns)
        last = int(out[-1])
        done += n
        if done > start:
            yield out[max(0, start - (done - n)) :]


def make_schedule(
    count: int, interval_ns: int, *, poisson: bool = False, seed: int | None = None
) -> npt.NDArray[np.int64]:
    """All `count` send times at once (ns from the first): see `iter_schedule`.

    Periodic: i * interval. Poisson (RFC 2330 §11.1.1): exponential gaps of mean `interval_ns`.
    """
    if interval_ns < 0:
        raise ValueError("the interval cannot be negative")
    slots = (Slot(interval_ns / NS, poisson),)
    if count < 0:
        raise ValueError("count cannot be negative")
    parts = list(iter_schedule(count, slots, seed=seed, chunk=max(count, 1)))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return parts[0]


@dataclass(frozen=True, slots=True)
class PingOptions:
    """What `twamp ping` can be told (twping's conventions; see `twamp ping --help`)."""

    count: int = 100
    interval: float = 0.1
    """Seconds between packets; the mean gap with `poisson`. Ignored when `schedule` is given."""
    poisson: bool = False
    seed: int | None = None
    schedule: tuple[Slot, ...] | None = None
    """twping's `-i` schedule (`parse_schedule`); None: one slot of `interval`, `poisson`."""
    modes: tuple[Mode, ...] | None = None
    """Security modes in preference order; None: the strongest offered (open without a key)."""
    key_id: str | None = None
    passphrase: bytes | None = None
    dscp: int = 0
    """Sent with this DSCP and asked for in Type-P, so replies carry it too (RFC 5357 §3.5)."""
    padding: int | None = None
    """Padding octets; None: 27 in open and mixed modes, 64 in authenticated and encrypted."""
    source: str | None = None
    """Local address to send from (and to connect from)."""
    port: int = 0
    """TWAMP: the test receiver port to ask for (0: the server picks)."""
    local_ports: tuple[int, int] | None = None
    """twping's `-P LOW-HIGH`: our test port is the first free one in the range (None: any)."""
    family: int = 0
    """4 or 6 to use only that address family for the target (twping's -4/-6); 0: either."""
    delay_start: float = 0.0
    """twping's `-z`: seconds between setting up the session and its first packet."""
    timeout: float = 10.0
    """Seconds to wait for the control connection and each server answer."""
    wait: float = 2.0
    """Seconds to wait for replies after the last packet; also the session Timeout."""
    raw: str | os.PathLike[str] | None = None
    slice_seconds: float = 0.1
    stateful: bool | None = None
    """Light only: whether the reflector counts its own sequence numbers; None infers it."""
    kernel_stamps: bool = True
    """Ask the kernel for the transmit stamp of every packet (SO_TIMESTAMPING, software) and
    report the send-time error and the RTT from kernel stamps at both ends (`PingResult`).
    One error-queue report per packet: cheap at ping rates, so on by default."""
    hw_timestamps: str | None = None
    """Use the NIC's raw hardware transmit stamps of this interface when it offers them
    (`dataplane.hwstamp.choose_tx_stamps`); software ones, with a sentence, otherwise."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"the count must be at least 1, not {self.count}")
        if self.count > MAX_COUNT:
            raise ValueError(
                f"the count {self.count} is more than one session can send ({MAX_COUNT}: "
                "sequence numbers are 32 bits); use --continuous to measure without end"
            )
        if not (self.interval >= 0 and math.isfinite(self.interval)):
            raise ValueError(f"the interval must be 0 or more seconds, not {self.interval}")
        if self.schedule is not None and not self.schedule:
            raise ValueError("the schedule needs at least one gap")
        check_dscp(self.dscp)
        if self.padding is not None and not 0 <= self.padding <= _MAX_PADDING:
            raise ValueError(f"the padding must be 0-{_MAX_PADDING} octets, not {self.padding}")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"the port must be 0-65535, not {self.port}")
        if self.local_ports is not None:
            low, high = self.local_ports
            if not 1 <= low <= high <= 0xFFFF:
                raise ValueError(
                    f"the port range must be LOW-HIGH within 1-65535, not {low}-{high}"
                )
        if self.family not in (0, 4, 6):
            raise ValueError(f"the address family must be 4 or 6, not {self.family}")
        if not self.delay_start >= 0:
            raise ValueError("the start delay must be 0 or more seconds")
        if not self.timeout > 0:
            raise ValueError("the timeout must be positive")
        if not self.wait >= 0:
            raise ValueError("the wait must be 0 or more seconds")
        if not self.slice_seconds > 0:
            raise ValueError("slice_seconds must be positive")

    @property
    def slots(self) -> tuple[Slot, ...]:
        if self.schedule is not None:
            return self.schedule
        return (Slot(self.interval, self.poisson),)

    @property
    def mean_interval(self) -> float:
        """Mean gap between packets in seconds."""
        slots = self.slots
        return sum(s.seconds for s in slots) / len(slots)


@dataclass(frozen=True, slots=True)
class PingResult:
    """One finished (or interrupted) test session; `to_json()` matches ping.schema.json."""

    target: str
    mode: str
    """'open', 'authenticated', 'encrypted', 'mixed', or 'light'."""
    session: dict[str, Any]
    summary: dict[str, Any]
    implementation: str
    interrupted: bool
    schedule: str
    counters: dict[str, int]
    sent: npt.NDArray[np.void] = field(repr=False)
    received: npt.NDArray[np.void] = field(repr=False)
    control_closed: bool = False
    """The server closed the control connection during the test; sending stopped then."""
    error_estimate_ns: int | None = None
    """Our clock's Error Estimate (RFC 4656 §4.1.2) in ns; None when the clock gives none."""
    kernel_stamps: dict[str, Any] | None = None
    """`metrics.kernel_stamps`: send-time error and RTT from kernel stamps; None when off or
    refused (`kernel_stamps_note` says which)."""
    kernel_stamps_note: str | None = None

    def delays(self) -> dict[str, npt.NDArray[np.int64]]:
        """Per answered packet (first copy, by sequence number): rtt, residence, forward,
        backward and time_away (T4 − T1), in ns."""
        rec = self.received
        _, first = np.unique(rec["sender_seq"], return_index=True)
        r = rec[first]
        t1, t2, t3, t4 = (r[f].astype(np.int64) for f in ("t1", "t2", "t3", "t4"))
        return {
            "rtt": (t4 - t1) - (t3 - t2),
            "residence": t3 - t2,
            "forward": t2 - t1,
            "backward": t4 - t3,
            "time_away": t4 - t1,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "session": self.session,
            "summary": self.summary,
            "implementation": self.implementation,
            "version": __version__,
            "interrupted": self.interrupted,
            "control_closed": self.control_closed,
            "schedule": self.schedule,
            "sender": self.counters,
            "error_estimate_ns": self.error_estimate_ns,
            "kernel_stamps": self.kernel_stamps,
            "kernel_stamps_note": self.kernel_stamps_note,
        }


@dataclass(slots=True)
class _Exchange:
    sent: list[npt.NDArray[np.void]] = field(default_factory=list)
    received: list[npt.NDArray[np.void]] = field(default_factory=list)
    tx_kernel: list[npt.NDArray[np.int64]] = field(default_factory=list)
    """Per slice, the kernel transmit stamps of `sent`'s rows (with `Sender(tx_timestamps)`)."""
    has_tx: bool = True
    counters: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    control_closed: bool = False

    def add(self, result: SenderResult) -> None:
        self.sent.append(result.sent)
        self.received.append(result.received)
        if result.tx_kernel_ns is None:
            self.has_tx = False
        else:
            self.tx_kernel.append(result.tx_kernel_ns)
        for key, value in result.counters.items():
            if key == "max_lag_ns":
                self.counters[key] = max(self.counters.get(key, 0), value)
            else:
                self.counters[key] = self.counters.get(key, 0) + value

    def arrays(self) -> tuple[npt.NDArray[np.void], npt.NDArray[np.void]]:
        sent = np.concatenate(self.sent) if self.sent else np.zeros(0, SENT_DTYPE)
        received = np.concatenate(self.received) if self.received else np.zeros(0, RECORD_DTYPE)
        # Keep one array each, so that a long session holds no list of small ones.
        self.sent = [sent]
        self.received = [received]
        return sent, received

    def tx_stamps(self) -> npt.NDArray[np.int64] | None:
        """The kernel transmit stamps of every sent row, in `arrays()` order, or None."""
        if not self.has_tx:
            return None
        tx = np.concatenate(self.tx_kernel) if self.tx_kernel else np.zeros(0, np.int64)
        self.tx_kernel = [tx]
        return tx


class _RawWriter:
    """One JSON object per line: each reflection as it arrives, then each unanswered packet."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def replies(self, received: npt.NDArray[np.void]) -> None:
        lines = []
        for row in received.tolist():
            seq, rseq, t1, t2, t3, t4, sender_ttl, reply_ttl, reply_tos, reflector_ee = row
            record = {
                "seq": seq,
                "lost": False,
                "reflector_seq": rseq,
                "t1": t1,
                "t2": t2,
                "t3": t3,
                "t4": t4,
                "rtt_ns": (t4 - t1) - (t3 - t2),
                "sender_ttl": sender_ttl,
                "reply_ttl": reply_ttl,
                "reply_tos": reply_tos,
                "reflector_error_estimate": reflector_ee,
            }
            lines.append(json.dumps(record, separators=(",", ":")))
        self._write(lines)

    def lost(self, sent: npt.NDArray[np.void], received: npt.NDArray[np.void]) -> None:
        answered = np.isin(sent["seq"], received["sender_seq"])
        lines = [
            json.dumps({"seq": seq, "lost": True, "t1": t1}, separators=(",", ":"))
            for seq, t1 in sent[~answered].tolist()
        ]
        self._write(lines)

    def _write(self, lines: list[str]) -> None:
        if lines:
            self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()


@contextlib.contextmanager
def _raw_writer(path: str | os.PathLike[str] | None) -> Iterator[_RawWriter | None]:
    if path is None:
        yield None
        return
    try:
        stream = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ValueError(
            f"cannot write the raw file {os.fspath(path)}: {exc.strerror or exc}; "
            "give --raw a path in a directory that exists and is writable"
        ) from None
    with stream:
        yield _RawWriter(stream)


class _Schedule:
    """The send times of a session, produced a slice at a time (`iter_schedule`), with lookahead.

    `next()` returns the next slice as absolute realtime ns and whether it is the last one, so
    `-c 1000000000` holds one slice in memory, not a billion send times (issue 12).
    """

    def __init__(self, options: PingOptions, step: int, epoch_ns: int) -> None:
        self._it = iter_schedule(options.count, options.slots, seed=options.seed, chunk=step)
        self._epoch = epoch_ns
        self._next: npt.NDArray[np.int64] | None = next(self._it, None)

    def next(self) -> tuple[npt.NDArray[np.int64], bool] | None:
        current = self._next
        if current is None:
            return None
        self._next = next(self._it, None)
        return current + self._epoch, self._next is None


def _slice_packets(options: PingOptions) -> int:
    interval = options.mean_interval
    if interval > 0:
        return max(1, min(int(options.slice_seconds / interval), 1 << 16))
    return _FLOOD_SLICE


def _exchange(
    sender: Sender,
    options: PingOptions,
    raw: _RawWriter | None,
    stop: StopFlag | None,
    on_slice: Callable[[SenderResult], None] | None,
    alive: Callable[[], bool] | None = None,
) -> _Exchange:
    """Run the schedule in slices, then wait for stragglers; survives KeyboardInterrupt.

    `alive` is asked after each slice; when it says False (the server closed the control
    connection) sending stops at once: the session is gone, and what follows would be counted
    as loss (issue 12).
    """
    out = _Exchange()
    wait_ns = int(options.wait * NS)
    epoch = clock.realtime_ns() + _LEAD_NS + int(options.delay_start * NS)
    schedule = _Schedule(options, _slice_packets(options), epoch)
    first_seq = 0

    def take(result: SenderResult) -> None:
        out.add(result)
        if raw is not None:
            raw.replies(result.received)

    try:
        while (piece := schedule.next()) is not None:
            times, last = piece
            result = sender.run(
                times, first_seq=first_seq, wait_ns=wait_ns if last else 0, stop=stop
            )
            first_seq += int(times.size)
            take(result)
            if stop is not None and stop.is_set():
                out.interrupted = True
                break
            if on_slice is not None:
                on_slice(result)
            if alive is not None and not alive():
                out.control_closed = True
                break
        else:
            # Replies to earlier slices may still be on their way: wait out the rest of `wait`.
            sent, received = out.arrays()
            missing = np.setdiff1d(sent["seq"], received["sender_seq"]).size
            if missing and sent.size:
                remaining = int(sent["t1"].max()) + wait_ns - clock.realtime_ns()
                if remaining > 0:
                    take(sender.run(np.zeros(0, np.int64), wait_ns=remaining, stop=stop))
    except KeyboardInterrupt:
        out.interrupted = True
    if raw is not None:
        raw.lost(*out.arrays())
    return out


def _stop_sessions(client: BlockingClient, out: _Exchange | None) -> None:
    """Stop-Sessions; a control connection that broke meanwhile does not void the results."""
    if client.closed or (out is not None and out.control_closed):
        log.warning("the control connection closed during the test; no Stop-Sessions sent")
        return
    try:
        client.stop()
    except ClientError as exc:
        log.warning("Stop-Sessions failed: %s", exc)


def _clocks_synced(counters: dict[str, int]) -> bool:
    """Both ends claim synchronised clocks: our S bit, and no reply without it."""
    ours = bool(clock.error_estimate() & _S_BIT)
    return ours and counters.get("received", 0) > 0 and counters.get("reflector_unsynced", 1) == 0


def our_error_estimate_ns() -> int | None:
    """Our clock's Error Estimate in ns (RFC 4656 §4.1.2), None when its multiplier is 0."""
    ee = ErrorEstimate.from_wire(clock.error_estimate())
    if ee.multiplier == 0:
        return None
    return round(ee.multiplier * 2.0 ** (ee.scale - 32) * NS)


def _session_info(
    sender_port: int, reflector_port: int, padding: int, options: PingOptions
) -> dict[str, Any]:
    return {
        "sender_port": sender_port,
        "reflector_port": reflector_port,
        "padding": padding,
        "dscp": options.dscp,
        "count": options.count,
        "interval_ms": options.mean_interval * 1000.0,
        "send_schedule": ",".join(str(s) for s in options.slots),
    }


def _schedule_name(options: PingOptions) -> str:
    kinds = {s.exponential for s in options.slots}
    if kinds == {True}:
        return "poisson"
    return "periodic" if kinds == {False} else "mixed"


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ipv6_port_hint(host: str) -> str:
    """For '::1:862' typed as a target: it is the IPv6 address ::1:862 on the default port."""
    head, _, tail = host.rpartition(":")
    if head and tail.isdigit() and ":" in head:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(head.rstrip(":") or "::")
            return f"; to give a port write [{head}]:{tail}, not {host}"
    return ""


def _resolve(host: str, port: int, family: int, *, udp: bool) -> tuple[str, int]:
    """The address to test; -4/-6 keep to one family, with a sentence when there is none."""
    return resolve_blocking(host, port, udp=udp, version=family)


def _check_source(source: str | None, ip: str) -> None:
    """-S must be of the target's family: say so instead of asyncio's AddressFamily text."""
    if source is None:
        return
    try:
        src = ipaddress.ip_address(source)
    except ValueError:
        return  # a name: the kernel decides
    dst = ipaddress.ip_address(ip)
    if src.version != dst.version:
        raise ValueError(
            f"the source address {source} is IPv{src.version} but the target {ip} is "
            f"IPv{dst.version}: give -S an IPv{dst.version} address (or drop -S)"
        )


def _open_client(host: str, port: int, ip: str, opts: PingOptions) -> BlockingClient:
    """The control connection; failures name the target and, for '::1:862', the fix."""
    where = _where(host, port)
    hint = _ipv6_port_hint(host)
    try:
        return BlockingClient.open(
            ip if opts.family else host,
            port,
            mode=opts.modes,
            key_id=opts.key_id,
            passphrase=opts.passphrase,
            timeout=opts.timeout,
            local_address=opts.source,
        )
    except ClientTimeoutError as exc:
        if "Server-Greeting" in str(exc):
            # Connected, but silent: an HTTP server, say, waits for the client to speak first.
            raise ClientTimeoutError(
                f"{where} accepted the connection but sent no Server-Greeting within "
                f"{opts.timeout:g} s: it is probably not a TWAMP server (TWAMP-Control is TCP "
                f"862){hint}"
            ) from None
        raise ClientTimeoutError(f"{exc}{hint}") from None
    except ClientError as exc:
        if not hint:
            raise
        raise type(exc)(f"{exc}{hint}", exc.accept) from None
    except OSError as exc:
        # asyncio's "Connect call failed ('::1', 862, 0, 0)" and friends: say what and where.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ClientError(f"cannot connect to {where}: {reason}{hint}") from None


def _open_sender_socket(local: str, ports: tuple[int, int] | None) -> Any:
    """The test socket, on the first free port of twping's -P range when one is given."""
    if ports is None:
        return open_test_socket(local, 0)
    low, high = ports
    for candidate in range(low, high + 1):
        try:
            return open_test_socket(local, candidate)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise ValueError(
        f"no free UDP port in the range {low}-{high} on {local or 'any address'}; "
        "widen -P or free a port"
    )


def run_ping(
    target: str,
    options: PingOptions | None = None,
    *,
    stop: StopFlag | None = None,
    on_slice: Callable[[SenderResult], None] | None = None,
) -> PingResult:
    """One TWAMP test session towards the server at `target` ('host[:port]', '[v6]:port').

    Raises `net.client.ClientError` (and its subclasses) when the control protocol fails,
    `OSError` for local socket trouble and `ValueError` for bad options. When the server
    closes the control connection during the test, sending stops and the result says so
    (`control_closed`).
    """
    opts = options if options is not None else PingOptions()
    host, port = parse_target(target, TWAMP_CONTROL_PORT)
    ip, port = _resolve(host, port, opts.family, udp=False)
    _check_source(opts.source, ip)
    out: _Exchange | None = None
    # The raw file first: an unwritable path fails before anything starts on the server.
    with _raw_writer(opts.raw) as raw, _open_client(host, port, ip, opts) as client:
        test_mode = client.test_mode
        padding = default_padding(test_mode) if opts.padding is None else opts.padding
        sock = _open_sender_socket(client.local_address[0], opts.local_ports)
        with contextlib.closing(sock):
            sender_port = int(sock.getsockname()[1])
            accept = client.request_session(
                sender_port=sender_port,
                receiver_port=opts.port,
                padding=padding,
                dscp=opts.dscp,
                timeout_ns=int(opts.wait * NS),
            )
            sender, stamps_note = _make_sender(
                sock,
                (client.peer_address[0], accept.port),
                opts,
                fmt=TestFormat(test_mode),
                crypto=client.test_crypto(accept.sid),
                padding=padding,
            )
            client.start()
            try:
                out = _exchange(sender, opts, raw, stop, on_slice, alive=client.poll)
            finally:
                _stop_sessions(client, out)
    assert out is not None
    return _result(
        target,
        mode_name(client.mode),
        sender_port,
        accept.port,
        padding,
        opts,
        sender.IMPLEMENTATION,
        out,
        stateful=True,
        stamps_note=stamps_note,
        hardware_stamps=sender.hw_timestamps,
    )


def _result(
    target: str,
    mode: str,
    sender_port: int,
    reflector_port: int,
    padding: int,
    opts: PingOptions,
    implementation: str,
    out: _Exchange,
    *,
    stateful: bool | None,
    stamps_note: str | None = None,
    hardware_stamps: bool = False,
) -> PingResult:
    sent, received = out.arrays()
    tx = out.tx_stamps()
    source = "hardware" if hardware_stamps else "software"
    stamps = None if tx is None else kernel_stamps(sent, received, tx, source=source)
    if stateful is None:
        stateful = bool(np.any(received["reflector_seq"] != received["sender_seq"]))
    summary = summarize(
        sent, received, clocks_synced=_clocks_synced(out.counters), stateful_reflector=stateful
    )
    return PingResult(
        target=target,
        mode=mode,
        session=_session_info(sender_port, reflector_port, padding, opts),
        summary=summary,
        implementation=implementation,
        interrupted=out.interrupted,
        schedule=_schedule_name(opts),
        counters=out.counters,
        sent=sent,
        received=received,
        control_closed=out.control_closed,
        error_estimate_ns=our_error_estimate_ns(),
        kernel_stamps=stamps,
        kernel_stamps_note=stamps_note,
    )


def _make_sender(
    sock: Any,
    peer: tuple[str, int],
    opts: PingOptions,
    *,
    fmt: TestFormat,
    padding: int,
    crypto: Any = None,
) -> tuple[Sender, str | None]:
    """The session's Sender, with kernel transmit stamps when asked for and the kernel agrees;
    else without them, and the sentence that says why (`PingResult.kernel_stamps_note`)."""
    kwargs: dict[str, Any] = {
        "fmt": fmt,
        "crypto": crypto,
        "padding": padding,
        "tos": dscp_to_tos(opts.dscp),
    }
    if not opts.kernel_stamps:
        return Sender(sock, peer, **kwargs), "kernel transmit stamps not asked for"
    hardware, note = choose_tx_stamps(opts.hw_timestamps)
    try:
        return Sender(sock, peer, tx_timestamps=True, hw_timestamps=hardware, **kwargs), note
    except OSError as exc:
        note = f"the kernel refused transmit stamps (SO_TIMESTAMPING: {exc.strerror or exc})"
        log.warning("%s; reporting RTT from the written Timestamps only", note)
        return Sender(sock, peer, **kwargs), note


def run_light_ping(
    target: str,
    options: PingOptions | None = None,
    *,
    stop: StopFlag | None = None,
    on_slice: Callable[[SenderResult], None] | None = None,
) -> PingResult:
    """Test packets to a TWAMP Light / STAMP reflector at `target` (default UDP port 862).

    Open mode only (Light has no way to agree on keys). Whether the reflector is stateful
    decides if loss can be split into forward and backward (a stateless one copies our sequence
    number, RFC 5357 Appendix I, so its replies say nothing of the forward leg): give
    `options.stateful`, or let it be inferred, True as soon as a reply's sequence number differs
    from ours (with no loss the two kinds of reflector cannot be told apart, and the split is
    then not reported).
    """
    opts = options if options is not None else PingOptions()
    host, port = parse_target(target, TWAMP_TEST_PORT)
    ip, port = _resolve(host, port, opts.family, udp=True)
    _check_source(opts.source, ip)
    padding = default_padding(TestMode.OPEN) if opts.padding is None else opts.padding
    local = opts.source or ("::" if ":" in ip else "0.0.0.0")
    with _raw_writer(opts.raw) as raw:
        sock = _open_sender_socket(local, opts.local_ports)
        with contextlib.closing(sock):
            sender_port = int(sock.getsockname()[1])
            sender, stamps_note = _make_sender(
                sock, (ip, port), opts, fmt=TestFormat(TestMode.OPEN), padding=padding
            )
            out = _exchange(sender, opts, raw, stop, on_slice)
    return _result(
        target,
        "light",
        sender_port,
        port,
        padding,
        opts,
        sender.IMPLEMENTATION,
        out,
        stateful=opts.stateful,
        stamps_note=stamps_note,
        hardware_stamps=sender.hw_timestamps,
    )


@dataclass(frozen=True, slots=True)
class IntervalReport:
    """One summary interval of `run_continuous`: a finished session, or why there was none."""

    index: int
    start_ns: int
    end_ns: int
    target: str
    result: PingResult | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """One JSON line of the summary file (`twamp ping --continuous --summary-file`)."""
        out: dict[str, Any] = {
            "interval": self.index,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "target": self.target,
            "error": self.error,
        }
        if self.result is not None:
            r = self.result
            out.update(
                mode=r.mode,
                control_closed=r.control_closed,
                interrupted=r.interrupted,
                summary=r.summary,
                sender=r.counters,
                kernel_stamps=r.kernel_stamps,
            )
        return out


def continuous_count(options: PingOptions, interval: float) -> int:
    """Packets per summary interval: the interval over the mean gap, within 1..MAX_COUNT."""
    gap = options.mean_interval
    if not gap > 0:
        raise ValueError("continuous measurement needs a gap above 0 s between packets (-i)")
    if not interval > 0:
        raise ValueError("the summary interval must be positive")
    return max(1, min(MAX_COUNT, round(interval / gap)))


def run_continuous(
    target: str,
    options: PingOptions | None = None,
    *,
    interval: float = 60.0,
    light: bool = False,
    stop: StopFlag | None = None,
    on_interval: Callable[[IntervalReport], None],
    retry_max: float = 30.0,
) -> int:
    """Measure until `stop` is set: back-to-back sessions of `interval` seconds, as powstream.

    Each interval is one test session (`run_ping`, or `run_light_ping` with `light`) of
    `continuous_count` packets, handed to `on_interval` and then dropped, so memory stays flat
    however long it runs. A new session means a new control connection: a server that
    restarted is simply connected to again. When a session cannot be set up, or the server
    closes the control connection, the error is reported as an interval and the next attempt
    waits 1, 2, 4, ... up to `retry_max` seconds. The raw file (`options.raw`) is not written:
    it would grow without end. Returns the number of intervals reported.
    """
    opts = options if options is not None else PingOptions()
    per_session = dataclasses.replace(opts, count=continuous_count(opts, interval), raw=None)
    runner = run_light_ping if light else run_ping

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    index = 0
    backoff = 1.0
    while not stopped():
        start = clock.realtime_ns()
        result: PingResult | None = None
        error: str | None = None
        try:
            result = runner(target, per_session, stop=stop)
        except (ClientError, OSError) as exc:
            error = str(exc)
        on_interval(IntervalReport(index, start, clock.realtime_ns(), target, result, error))
        index += 1
        if result is not None and result.interrupted:
            break
        if error is None and result is not None and not result.control_closed:
            backoff = 1.0
            continue
        if clock.pause(backoff, stopped):
            break
        backoff = min(backoff * 2, retry_max)
    return index
