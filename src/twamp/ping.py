"""`twamp ping` as a library: one test session from set-up to summary.

`run_ping` is the full protocol (RFC 5357): a TWAMP-Control connection (`net.client`) sets up
one test session, the Session-Sender (`dataplane.Sender`, compiled when built) sends the
schedule and collects reflections, Stop-Sessions ends it, `metrics.summarize` sums it up.
`run_light_ping` is the same without control, towards a TWAMP Light or STAMP reflector (RFC 5357
Appendix I, RFC 8762): open mode, the TWAMP sender format, which a STAMP reflector also answers
(its replies may be longer, spec §7.3).

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
import json
import logging
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
from .dataplane.sockets import open_test_socket
from .hostport import parse_hostport
from .inet import dscp_to_tos
from .metrics import RECORD_DTYPE, SENT_DTYPE, summarize
from .net.client import BlockingClient, ClientError, mode_name, resolve_blocking
from .timestamps import NS
from .wire.packets import TestFormat

__all__ = [
    "PingOptions",
    "PingResult",
    "default_padding",
    "make_schedule",
    "parse_target",
    "run_light_ping",
    "run_ping",
]

log = logging.getLogger(__name__)

_S_BIT = 0x8000  # Error Estimate: clock synchronised (RFC 4656 §4.1.2)
_LEAD_NS = 10_000_000  # first send this long after the schedule is made
_MAX_PADDING = 65000
_FLOOD_SLICE = 100  # packets per slice when the interval is 0


def default_padding(test_mode: TestMode) -> int:
    """twping's padding: replies as long as requests (spec §5.5, owamp #32): 27 or 64."""
    return SYMMETRIC_PADDING_OPEN if test_mode is TestMode.OPEN else SYMMETRIC_PADDING_AUTH


def parse_target(target: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 literal -> (host, port)."""
    return parse_hostport(target, default_port)


def make_schedule(
    count: int, interval_ns: int, *, poisson: bool = False, seed: int | None = None
) -> npt.NDArray[np.int64]:
    """Send times relative to the first packet (ns, ascending, the first is 0).

    Periodic: i * interval. Poisson (RFC 2330 §11.1.1): exponential gaps of mean `interval_ns`
    from a seeded numpy generator, so a run can be repeated.
    """
    if count < 0:
        raise ValueError("count cannot be negative")
    if interval_ns < 0:
        raise ValueError("the interval cannot be negative")
    out: npt.NDArray[np.int64]
    if not poisson:
        out = np.arange(count, dtype=np.int64) * np.int64(interval_ns)
        return out
    gaps = np.random.default_rng(seed).exponential(float(interval_ns), max(count - 1, 0))
    offsets = np.concatenate([np.zeros(1), np.cumsum(gaps)])[:count]
    out = np.rint(offsets).astype(np.int64)
    return out


@dataclass(frozen=True, slots=True)
class PingOptions:
    """What `twamp ping` can be told (twping's conventions; see `twamp ping --help`)."""

    count: int = 100
    interval: float = 0.1
    """Seconds between packets; the mean gap with `poisson`."""
    poisson: bool = False
    seed: int | None = None
    modes: tuple[Mode, ...] | None = None
    """Security modes in preference order; None: the strongest offered (open without a key)."""
    key_id: str | None = None
    passphrase: bytes | None = None
    dscp: int = 0
    """Sent with this DSCP and asked for in Type-P, so replies carry it too (spec §3.8)."""
    padding: int | None = None
    """Padding octets; None: 27 in open and mixed modes, 64 in authenticated and encrypted."""
    source: str | None = None
    """Local address to send from (and to connect from)."""
    port: int = 0
    """TWAMP: the test receiver port to ask for (0: the server picks)."""
    timeout: float = 10.0
    """Seconds to wait for the control connection and each server answer."""
    wait: float = 2.0
    """Seconds to wait for replies after the last packet; also the session Timeout."""
    raw: str | os.PathLike[str] | None = None
    slice_seconds: float = 0.1
    stateful: bool | None = None
    """Light only: whether the reflector counts its own sequence numbers; None infers it."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"the count must be at least 1, not {self.count}")
        if not self.interval >= 0:
            raise ValueError(f"the interval must be 0 or more seconds, not {self.interval}")
        if not 0 <= self.dscp <= 63:
            raise ValueError(f"the DSCP must be 0-63, not {self.dscp}")
        if self.padding is not None and not 0 <= self.padding <= _MAX_PADDING:
            raise ValueError(f"the padding must be 0-{_MAX_PADDING} octets, not {self.padding}")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"the port must be 0-65535, not {self.port}")
        if not self.timeout > 0:
            raise ValueError("the timeout must be positive")
        if not self.wait >= 0:
            raise ValueError("the wait must be 0 or more seconds")
        if not self.slice_seconds > 0:
            raise ValueError("slice_seconds must be positive")


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

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "session": self.session,
            "summary": self.summary,
            "implementation": self.implementation,
            "version": __version__,
            "interrupted": self.interrupted,
            "schedule": self.schedule,
            "sender": self.counters,
        }


@dataclass(slots=True)
class _Exchange:
    sent: list[npt.NDArray[np.void]] = field(default_factory=list)
    received: list[npt.NDArray[np.void]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    def add(self, result: SenderResult) -> None:
        self.sent.append(result.sent)
        self.received.append(result.received)
        for key, value in result.counters.items():
            if key == "max_lag_ns":
                self.counters[key] = max(self.counters.get(key, 0), value)
            else:
                self.counters[key] = self.counters.get(key, 0) + value

    def arrays(self) -> tuple[npt.NDArray[np.void], npt.NDArray[np.void]]:
        sent = np.concatenate(self.sent) if self.sent else np.zeros(0, SENT_DTYPE)
        received = np.concatenate(self.received) if self.received else np.zeros(0, RECORD_DTYPE)
        return sent, received


class _RawWriter:
    """One JSON object per line: each reflection as it arrives, then each unanswered packet."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def replies(self, received: npt.NDArray[np.void]) -> None:
        lines = []
        for row in received.tolist():
            seq, rseq, t1, t2, t3, t4, sender_ttl, reply_ttl, reply_tos = row
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
    with open(path, "w", encoding="utf-8") as stream:
        yield _RawWriter(stream)


def _exchange(
    sender: Sender,
    offsets: npt.NDArray[np.int64],
    options: PingOptions,
    raw: _RawWriter | None,
    stop: StopFlag | None,
    on_slice: Callable[[SenderResult], None] | None,
) -> _Exchange:
    """Run the schedule in slices, then wait for stragglers; survives KeyboardInterrupt."""
    out = _Exchange()
    n = int(offsets.size)
    if options.interval > 0:
        step = max(1, int(options.slice_seconds / options.interval))
    else:
        step = _FLOOD_SLICE
    wait_ns = int(options.wait * NS)
    schedule = offsets + (clock.realtime_ns() + _LEAD_NS)

    def take(result: SenderResult) -> None:
        out.add(result)
        if raw is not None:
            raw.replies(result.received)

    try:
        for start in range(0, n, step):
            last = start + step >= n
            result = sender.run(
                schedule[start : start + step],
                first_seq=start,
                wait_ns=wait_ns if last else 0,
                stop=stop,
            )
            take(result)
            if stop is not None and stop.is_set():
                out.interrupted = True
                break
            if on_slice is not None:
                on_slice(result)
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


def _stop_sessions(client: BlockingClient) -> None:
    """Stop-Sessions; a control connection that broke meanwhile does not void the results."""
    if client.closed:
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


def _session_info(
    sender_port: int, reflector_port: int, padding: int, options: PingOptions
) -> dict[str, Any]:
    return {
        "sender_port": sender_port,
        "reflector_port": reflector_port,
        "padding": padding,
        "dscp": options.dscp,
        "count": options.count,
        "interval_ms": options.interval * 1000.0,
    }


def _offsets(options: PingOptions) -> npt.NDArray[np.int64]:
    return make_schedule(
        options.count, int(options.interval * NS), poisson=options.poisson, seed=options.seed
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
    `OSError` for local socket trouble and `ValueError` for bad options.
    """
    opts = options if options is not None else PingOptions()
    host, port = parse_target(target, TWAMP_CONTROL_PORT)
    offsets = _offsets(opts)
    # The raw file first: an unwritable path fails before anything starts on the server.
    with (
        _raw_writer(opts.raw) as raw,
        BlockingClient.open(
            host,
            port,
            mode=opts.modes,
            key_id=opts.key_id,
            passphrase=opts.passphrase,
            timeout=opts.timeout,
            local_address=opts.source,
        ) as client,
    ):
        test_mode = client.test_mode
        padding = default_padding(test_mode) if opts.padding is None else opts.padding
        sock = open_test_socket(client.local_address[0], 0)
        with contextlib.closing(sock):
            sender_port = int(sock.getsockname()[1])
            accept = client.request_session(
                sender_port=sender_port,
                receiver_port=opts.port,
                padding=padding,
                dscp=opts.dscp,
                timeout_ns=int(opts.wait * NS),
            )
            sender = Sender(
                sock,
                (client.peer_address[0], accept.port),
                fmt=TestFormat(test_mode),
                crypto=client.test_crypto(accept.sid),
                padding=padding,
                tos=dscp_to_tos(opts.dscp),
            )
            client.start()
            try:
                out = _exchange(sender, offsets, opts, raw, stop, on_slice)
            finally:
                _stop_sessions(client)
    sent, received = out.arrays()
    summary = summarize(sent, received, clocks_synced=_clocks_synced(out.counters))
    return PingResult(
        target=target,
        mode=mode_name(client.mode),
        session=_session_info(sender_port, accept.port, padding, opts),
        summary=summary,
        implementation=sender.IMPLEMENTATION,
        interrupted=out.interrupted,
        schedule="poisson" if opts.poisson else "periodic",
        counters=out.counters,
        sent=sent,
        received=received,
    )


def run_light_ping(
    target: str,
    options: PingOptions | None = None,
    *,
    stop: StopFlag | None = None,
    on_slice: Callable[[SenderResult], None] | None = None,
) -> PingResult:
    """Test packets to a TWAMP Light / STAMP reflector at `target` (default UDP port 862).

    Open mode only (Light has no way to agree on keys). Whether the reflector is stateful
    decides if loss can be split into forward and backward (spec §5.8, §11 item 11): give
    `options.stateful`, or let it be inferred, True as soon as a reply's sequence number differs
    from ours (with no loss the two kinds of reflector cannot be told apart, and the split is
    then not reported).
    """
    opts = options if options is not None else PingOptions()
    host, port = parse_target(target, TWAMP_TEST_PORT)
    ip, port = resolve_blocking(host, port, udp=True)
    offsets = _offsets(opts)
    padding = default_padding(TestMode.OPEN) if opts.padding is None else opts.padding
    local = opts.source or ("::" if ":" in ip else "0.0.0.0")
    sock = open_test_socket(local, 0)
    with contextlib.closing(sock):
        sender_port = int(sock.getsockname()[1])
        sender = Sender(
            sock,
            (ip, port),
            fmt=TestFormat(TestMode.OPEN),
            padding=padding,
            tos=dscp_to_tos(opts.dscp),
        )
        with _raw_writer(opts.raw) as raw:
            out = _exchange(sender, offsets, opts, raw, stop, on_slice)
    sent, received = out.arrays()
    stateful = opts.stateful
    if stateful is None:
        stateful = bool(np.any(received["reflector_seq"] != received["sender_seq"]))
    summary = summarize(
        sent, received, clocks_synced=_clocks_synced(out.counters), stateful_reflector=stateful
    )
    return PingResult(
        target=target,
        mode="light",
        session=_session_info(sender_port, port, padding, opts),
        summary=summary,
        implementation=sender.IMPLEMENTATION,
        interrupted=out.interrupted,
        schedule="poisson" if opts.poisson else "periodic",
        counters=out.counters,
        sent=sent,
        received=received,
    )
