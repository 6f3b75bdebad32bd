"""The OSPF lab's event log format: JSON lines ``{"t_ns", "source", "event", ...fields}``.

Every observer of a convergence run (the emulated routers' sockets, the link triggers, the
netlink FIB watcher, the TWAMP probe, the DUT adapter) appends to one log; the RFC 4061
procedures (`bench/ospf/procedures`) are computed offline from exactly this file, so
``twamp-bench ospf report LOG`` can recompute any figure from a saved run. The log is the boundary
between measuring and computing (design/layers.md).

Format
------
One JSON object per line, UTF-8, keys::

    t_ns    int  CLOCK_REALTIME nanoseconds of the event (see "Clocks" below)
    source  str  who observed it (see "Sources")
    event   str  what happened (see "Vocabulary")
    ...          event-specific fields, listed below; unknown fields must be ignored by readers

The first line is ``{"source": "lab", "event": "log-start", "version": LOG_VERSION, ...}``.
The vocabulary only grows (new events, new optional fields); an existing field never changes its
meaning or type, so an old log stays readable. Lines are written in the order they are observed,
which is *not* strictly the order of ``t_ns``: a transmit is logged when its kernel stamp returns
from the error queue, after later receptions may already have been logged. Readers that need
time order sort (``read_events(path, sort=True)``; the sort is stable).

Clocks
------
All stamps are CLOCK_REALTIME in integer nanoseconds: one clock across all network namespaces,
shared by the kernel's socket stamps, ``time.time_ns()``, FRR's ``log timestamp precision 6``
and BIRD's log, so stamps from different sources subtract directly (research §4.3: error
about 10-50 µs plus CPU contention). Each event says how its stamp was taken in ``stamp``:

* ``"kernel-rx"``: ``SO_TIMESTAMPNS`` on the receiving socket (the packet's arrival in the
  kernel, equal to tcpdump's stamp);
* ``"kernel-tx"``: ``SO_TIMESTAMPING`` software transmit stamp from ``MSG_ERRQUEUE`` (the packet
  leaving the IP stack for the device, 3-37 µs after the user stamp);
* ``"user"``: ``time.time_ns()`` in our process next to the action (a send whose kernel stamp
  never came back, a netlink call, a netlink notification *received*);
* ``"dut-log"``: parsed from a daemon's log line (µs resolution).

Sources
-------
``gen``, ``col``, ``r1``, ``r2``, ``gen2`` ... (an emulated router, named by the lab), ``link``
(link triggers), ``fib`` (netlink route watcher in the DUT's namespace), ``probe`` (the TWAMP
Light data-plane probe), ``dut`` (the DUT adapter: lifecycle and state snapshots), ``dut-log``
(lines of the DUT's own log), ``lab`` (the lab itself: topology, profile, errors, teardown).

Vocabulary
----------
LSA keys are strings ``"<type>/<link-state id>/<advertising router>"`` (e.g.
``"5/198.18.0.0/192.0.2.2"``, `lsa_key`); LS sequence numbers are the **signed** 32-bit values
of RFC 2328 §12.1.6 (InitialSequenceNumber 0x80000001 is -2147483647), so ``>`` orders them.
IPv4 addresses and router IDs are dotted strings.

Packets (source: an emulated router)
    ``rx``  a packet received.  ``tx``  a packet sent.  Fields of both:
        ``ifname`` (our device), ``src``, ``dst`` (IP addresses), ``len`` (OSPF length),
        ``stamp``, ``type`` (``"hello" | "dbd" | "lsr" | "lsu" | "ack"``), ``rid`` (the
        packet's router ID), ``area``; and per type:
        hello: ``dr``, ``bdr``, ``neighbors`` (list of RIDs), ``priority``, ``hello_s``,
               ``dead_s``, ``mask``
        dbd:   ``flags`` (subset of ``["I", "M", "MS"]``), ``dd_seq``, ``mtu``, ``lsas``
               (list of ``{"key", "seq"}``: the headers described)
        lsr:   ``keys`` (list of LSA keys)
        lsu:   ``lsas`` (list of ``{"key", "seq", "age"}``, age in seconds)
        ack:   ``acked`` (list of ``{"key", "seq", "age"}``)
    ``tx`` additionally has ``t_user_ns`` (``time.time_ns()`` right before ``sendto``) and,
    when the kernel stamp came back, ``stamp == "kernel-tx"``; else ``t_ns == t_user_ns`` and
    ``stamp == "user"``; ``retransmission: true`` on a packet resent by the retransmit timer,
    ``nbr`` (RID) when the packet is meant for one neighbour.
    ``tx-error``: ``ifname``, ``dst``, ``type``, ``errno`` (e.g. ``"ENETUNREACH"`` while the link
        is down: expected, not a fault), ``len``.
    ``rx-malformed``: a packet that did not decode: ``ifname``, ``src``, ``len``, ``error``
        (one sentence), ``count`` (the socket's malformed total so far), ``head`` (first 64
        bytes, hex). The speaker never crashes on these.
    ``rx-error``: ``ifname``, ``errno`` (``recvmsg`` failed; the loop goes on).
    ``internal-error``: ``error``, ``trace`` (an exception inside the router while handling a
        packet or timer: a bug, logged, the loop goes on).

Protocol state (source: an emulated router; stamp ``"user"``)
    ``nbr``  a neighbour state change: ``ifname``, ``nbr`` (its RID), ``addr``, ``old``,
        ``new`` (RFC 2328 §10.1 names: ``Down Attempt Init 2-Way ExStart Exchange Loading
        Full``), ``why`` (the §10.2 event, e.g. ``"HelloReceived"``).
    ``ifstate``  an interface state change: ``ifname``, ``old``, ``new`` (§9.1 names), ``dr``,
        ``bdr``.
    ``originate``  the router (re)originated LSAs into its LSDB: ``lsas`` (``{"key", "seq"}``),
        ``why`` (free text: ``"inject"``, ``"full"``, ``"selfupdate-13.4"``...).
    ``exstart-stuck``  ExStart lasted more than N × RxmtInterval: ``ifname``, ``nbr``,
        ``state``, ``cause`` (``"mtu" | "router-id" | "no-answer"``), ``hint`` (one sentence).
    ``flush``  we prematurely aged our LSAs: ``lsas`` (``{"key", "seq"}``), ``why``.
    ``lsa-in``  one LSA of a received LSU as RFC 2328 §13 judged it: ``ifname``, ``nbr``,
        ``key``, ``seq``, ``age``, ``status`` (``"new" | "duplicate" | "older" |
        "self-originated" | "maxage-unknown" | "bad-checksum" | "seq-wrapping"``),
        ``implied_ack``.
    ``ack-in``  a received LSAck: ``ifname``, ``nbr``, ``cleared`` (keys removed from our
        retransmit list; the acked headers themselves are in the ``rx`` event).
    ``dr-change``  a neighbour's Hello named another DR/BDR: ``ifname``, ``nbr``, ``dr``,
        ``bdr``.
    ``rejected``  a well-formed packet dropped: ``ifname``, ``src``, ``rid``, ``type``,
        ``reason`` (e.g. ``"mtu-mismatch"``, ``"hello-mismatch"``), ``detail``.

Links (source ``link``; ``t_ns`` taken right before the netlink request, stamp ``"user"``)
    ``down`` / ``up``: ``ns`` (namespace), ``ifname``, ``how`` (``"carrier"``: the veth set
        down/up through rtnetlink; ``"hellos"``: the emulated router stops/resumes OSPF on the
        interface, carrier kept; then also ``router``), ``t_done_ns`` (when the kernel
        acknowledged the request, or the router had applied it).

FIB (source ``fib``; stamp ``"user"``: the time our watcher *received* the netlink
notification, **not** a kernel stamp: a cross-check, never a primary measurement)
    ``route-add`` / ``route-del``: ``ns``, ``prefix`` (``"a.b.c.d/len"``), ``table``,
        ``proto`` (rtnetlink protocol number, e.g. 188 ospf for FRR, 12 bird),
        ``nexthops`` (list of ``{"gw", "dev"}``).
    ``watch-start`` / ``watch-stop``: ``ns`` (stop also ``adds``, ``dels``).
    ``overrun``: ``ns``, ``error`` (the netlink socket overflowed: notifications were lost).

Data-plane probe (source ``probe``)
    ``start``: ``rate_pps``, ``dst``, ``src``, ``ns``.
    ``sent``: ``seq``, ``stamp`` (``"user"``: the Sender's transmit timestamp; ``"schedule"``
        with ``send_error: true`` when ``sendto`` failed, e.g. no route: counted lost).
    ``rcvd``: ``seq``, ``tx_ns``, ``rx_ns`` (the Sender's kernel receive stamp of the reply,
        also the event's ``t_ns``), ``rtt_ns``.
    ``lost``: ``seq``, ``tx_ns`` (a packet that got no reply; ``t_ns`` = its send time).
    ``restored``: ``seq`` (the first packet answered after a run of losses), ``lost_run``
        (how many were lost before it), ``first_lost_seq``; ``t_ns`` = that packet's send time.
    ``stop``: ``sent``, ``rcvd``, ``lost``.

DUT (source ``dut``; stamp ``"user"``)
    ``config``: ``kind`` (``"frr" | "bird" | "external"``), ``version``, ``profile`` (timer
        profile as a dict), ``rendered`` (the config text), ``quirks`` (list of dicts).
    ``start`` / ``ready`` / ``stop``: ``kind``, ``pids``.
    ``died``: ``kind``, ``log_tail``.
    ``state``: ``what`` (``"neighbors" | "database" | "routes" | "spf"``), ``data`` (the
        daemon's answer as parsed JSON or raw text).
    ``spf``: ``proc``, ``trial``, ``runs_before`` (the daemon's SPF count before the trial),
        ``runs``, ``duration_us`` and ``precision_us`` (its last SPF run's duration, as the
        daemon prints it), ``ago_us`` / ``ago_precision_us`` (since that run started; ``t_ns``
        is when it was read), ``text``, ``read_from``: RFC 4061 §5.3's white-box figure.
    ``hello-heard``: ``ifname``, ``heard``, and when heard ``rid``, ``hello_s``, ``dead_s``,
        ``mask``, ``priority`` (an external router's Hello, heard before our routers speak;
        ``t_ns`` its kernel receive stamp), else ``wait_s``.

DUT log (source ``dut-log``; stamp ``"dut-log"``)
    ``line``: ``text``.

Lab (source ``lab``; stamp ``"user"``)
    ``log-start``: ``version``, ``host``, ``kernel``, ``nproc``, ``clock``.
    ``topology``: ``name`` (``"T1" | "T2" | "T3" | "T4"``), ``namespaces``, ``links`` (list of
        ``{"a", "b", "ns_a", "ns_b", "addr_a", "addr_b"}``).
    ``error``: ``message`` (the one-sentence cause and fix).
    ``teardown``: ``removed`` (list of names), ``killed`` (pids).
    ``mark``: ``label`` (a free-text marker a driver sets, e.g. trial boundaries).

This module is the format alone (no file or clock access), so the analysis layer
(`bench/ospf/procedures`) can read events without depending on I/O; the writer and the file
reader are `twamp.ospf.eventlog`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LOG_VERSION",
    "SOURCES",
    "VOCABULARY",
    "Event",
    "EventLogError",
    "lsa_key",
    "parse_lines",
    "parse_lsa_key",
]

LOG_VERSION = 1

#: Fixed sources; emulated routers add their own names (``gen``, ``col``, ``r1``...).
SOURCES = frozenset({"link", "fib", "probe", "dut", "dut-log", "lab"})

#: Event names by source class ("router" stands for any emulated router's name).
VOCABULARY: Mapping[str, frozenset[str]] = {
    "router": frozenset(
        {
            "rx",
            "tx",
            "tx-error",
            "rx-malformed",
            "rx-error",
            "internal-error",
            "nbr",
            "ifstate",
            "originate",
            "flush",
            "lsa-in",
            "ack-in",
            "dr-change",
            "rejected",
            "exstart-stuck",
        }
    ),
    "link": frozenset({"down", "up"}),
    "fib": frozenset({"route-add", "route-del", "watch-start", "watch-stop", "overrun"}),
    "probe": frozenset({"start", "sent", "rcvd", "lost", "restored", "stop"}),
    "dut": frozenset({"config", "start", "ready", "stop", "died", "state", "spf", "hello-heard"}),
    "dut-log": frozenset({"line"}),
    "lab": frozenset({"log-start", "topology", "error", "teardown", "mark"}),
}


class EventLogError(ValueError):
    """A log line that is not a valid event (not the truncated last line of a killed run)."""


def lsa_key(ls_type: int, ls_id: str, adv_router: str) -> str:
    """The log's LSA key ``"type/id/adv"`` (RFC 2328 §12.1: the triple identifies an LSA)."""
    return f"{int(ls_type)}/{ls_id}/{adv_router}"


def parse_lsa_key(key: str) -> tuple[int, str, str]:
    """Inverse of `lsa_key`."""
    t, ls_id, adv = key.split("/")
    return int(t), ls_id, adv


@dataclass(frozen=True)
class Event:
    """One line of the log."""

    t_ns: int
    source: str
    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def to_json(self) -> str:
        obj: dict[str, Any] = {"t_ns": self.t_ns, "source": self.source, "event": self.event}
        for k, v in self.fields.items():
            if k not in obj:
                obj[k] = v
        return json.dumps(obj, separators=(",", ":"), default=_json_default)

    @classmethod
    def from_json(cls, line: str) -> Event:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise EventLogError("an event line must be a JSON object")
        try:
            t_ns, source, event = obj.pop("t_ns"), obj.pop("source"), obj.pop("event")
        except KeyError as exc:
            raise EventLogError(f"event line lacks {exc.args[0]!r}") from None
        if not isinstance(t_ns, int) or not isinstance(source, str) or not isinstance(event, str):
            raise EventLogError("t_ns must be an integer, source and event strings")
        return cls(t_ns, source, event, obj)


def _json_default(obj: object) -> object:
    # bytes (packet heads), sets and IP address objects appear in fields; everything else is a bug
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, set | frozenset | tuple):
        return sorted(obj) if isinstance(obj, set | frozenset) else list(obj)
    return str(obj)


def parse_lines(lines: Iterable[str], *, name: str = "<log>") -> Iterator[Event]:
    """Events from text lines; a bad *last* line (truncated write) is dropped silently."""
    pending: tuple[int, str] | None = None
    for no, raw in enumerate(lines, 1):
        if pending is not None:
            # the previous bad line was not the last one: a real corruption
            raise EventLogError(f"{name}:{pending[0]}: not an event line: {pending[1][:80]!r}")
        line = raw.strip()
        if not line:
            continue
        try:
            yield Event.from_json(line)
        except (ValueError, EventLogError):
            pending = (no, line)
