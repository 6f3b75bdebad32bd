"""Measurement metrics over per-packet records (RFC 5357 §4.2.1, Appendix I; RFC 8762 §4).

A Session-Sender (`twamp ping`, `twamp-bench`) records one `SENT_DTYPE` row per test packet it
sends and one `RECORD_DTYPE` row per reflection it receives; `summarize` turns the two arrays
into a JSON-serialisable summary. Everything here is pure and vectorised: numpy arrays in, a
dict out, no clock and no sockets.

Times are integer nanoseconds. T1 and T4 come from our clock, T2 and T3 from the reflector's, so

* RTT = (T4 − T1) − (T3 − T2) needs no synchronisation (RFC 5357 §4.2.1): each bracket is read on
  one clock;
* residence = T3 − T2 is on the reflector's clock alone;
* forward = T2 − T1 and backward = T4 − T3 mix both clocks and are only meaningful when both ends
  report synchronised clocks (the S bit of both Error Estimates); otherwise they are still
  reported, but flagged ``"valid": false``.

Duplicates are removed before any statistic: per sender sequence number only the first copy to
arrive (by T4) counts, as RFC 4737 does for reordering.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "RECORD_DTYPE",
    "SENT_DTYPE",
    "Records",
    "kernel_stamps",
    "summarize",
]

RECORD_DTYPE: np.dtype[np.void] = np.dtype(
    [
        ("sender_seq", "u4"),
        ("reflector_seq", "u4"),
        ("t1", "i8"),  # sender transmit, our clock
        ("t2", "i8"),  # reflector receive, its clock
        ("t3", "i8"),  # reflector transmit, its clock
        ("t4", "i8"),  # our receive, our clock
        ("sender_ttl", "u1"),  # the TTL the reflector saw (Sender TTL field)
        ("reply_ttl", "u1"),  # the TTL we saw on the reflection; 0 = not read
        ("reply_tos", "u1"),
        ("reflector_ee", "u2"),  # the reflection's Error Estimate (RFC 4656 §4.1.2), raw
    ]
)
"""One received reflection."""

SENT_DTYPE: np.dtype[np.void] = np.dtype([("seq", "u4"), ("t1", "i8")])
"""One packet sent."""

# Keys of a distribution object, in output order.
_DIST_KEYS = ("min", "mean", "median", "p95", "p99", "max", "stddev", "count")

Int64Array = npt.NDArray[np.int64]
RecordArray = npt.NDArray[np.void]


class Records:
    """A preallocated structured array filled one row at a time.

    Rows live in a single numpy buffer (no per-packet Python objects are kept); the buffer
    doubles when full so that late duplicates never get dropped.
    """

    __slots__ = ("_buf", "_n")

    def __init__(self, capacity: int, dtype: np.dtype[np.void] = RECORD_DTYPE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._buf: RecordArray = np.zeros(capacity, dtype=dtype)
        self._n = 0

    def append(self, *values: int) -> None:
        """Append one row; `values` in the dtype's field order."""
        if self._n == len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
        self._buf[self._n] = values
        self._n += 1

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return len(self._buf)

    @property
    def array(self) -> RecordArray:
        """The rows appended so far (a view, not a copy)."""
        return self._buf[: self._n]


def _require_fields(arr: RecordArray, dtype: np.dtype[np.void], what: str) -> None:
    names = arr.dtype.names or ()
    missing = [n for n in dtype.names or () if n not in names]
    if missing:
        raise ValueError(f"{what} array lacks field(s) {', '.join(missing)}")


def _sorted_unique(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """np.unique for integers; sort-based, several times faster than numpy 2's hashing."""
    ordered = np.sort(values)
    keep = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _first_of_each(values: Int64Array) -> npt.NDArray[np.intp]:
    """Index of the first occurrence of each distinct value, in ascending order of value."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    keep = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    first: npt.NDArray[np.intp] = order[keep]
    return first


def _histogram(octets: Int64Array) -> tuple[Int64Array, Int64Array]:
    """Distinct values of an 8-bit field and how often each occurs."""
    counts = np.bincount(octets, minlength=256)
    values = np.flatnonzero(counts)
    return values, counts[values]


def _distribution(values: Int64Array) -> dict[str, int] | None:
    """{min, mean, median, p95, p99, max, stddev, count} in integer ns, or None when empty.

    Percentiles interpolate linearly; rounding to the nearest ns is monotonic, so
    min <= median <= p95 <= p99 <= max always holds.
    """
    if values.size == 0:
        return None
    as_float = values.astype(np.float64)
    median, p95, p99 = np.rint(np.percentile(as_float, [50.0, 95.0, 99.0]))
    stats = (
        int(values.min()),
        int(np.rint(as_float.mean())),
        int(median),
        int(p95),
        int(p99),
        int(values.max()),
        int(np.rint(as_float.std())),
        int(values.size),
    )
    return dict(zip(_DIST_KEYS, stats, strict=True))


def _one_way(values: Int64Array, valid: bool) -> dict[str, Any] | None:
    dist = _distribution(values)
    if dist is None:
        return None
    return {"valid": valid, **dist}


def _ipdv(seq: Int64Array, delay: Int64Array) -> Int64Array:
    """RFC 5481 IPDV: D(i+1) − D(i) for sequence-consecutive packets both received.

    `seq` must be sorted and free of duplicates. A gap (a lost packet) breaks the pair rather
    than pairing across it: that is RFC 3393's selection function of consecutive packets.
    """
    consecutive = seq[1:] == seq[:-1] + 1
    diffs: Int64Array = (delay[1:] - delay[:-1])[consecutive]
    return diffs


def _reordering(seq: Int64Array) -> dict[str, Any]:
    """RFC 4737 reordering of a duplicate-free stream of sequence numbers in arrival order.

    RFC 4737 §3.3: packet i is reordered if s[i] < NextExp, where NextExp is one more than the
    highest sequence number seen before it; that running maximum is `np.maximum.accumulate`.
    RFC 4737 §4.1: ratio = reordered / received. RFC 4737 §4.2: the extent of a reordered
    packet j is j − i, where i is the earliest arrival with s[i] > s[j]. Because the running
    maximum only rises at a new record value, the first position where it exceeds s[j] is that
    earliest arrival, which one `searchsorted` finds for all reordered packets at once.
    """
    n = int(seq.size)
    if n == 0:
        return {"reordered": 0, "ratio": None, "max_extent": 0}
    running_max = np.maximum.accumulate(seq)
    late = np.flatnonzero(seq[1:] <= running_max[:-1]) + 1
    if late.size == 0:
        return {"reordered": 0, "ratio": 0.0, "max_extent": 0}
    earliest_greater = np.searchsorted(running_max, seq[late], side="right")
    extent = late - earliest_greater
    return {
        "reordered": int(late.size),
        "ratio": late.size / n,
        "max_extent": int(extent.max()),
    }


def _hops(hops: Int64Array) -> dict[str, Any] | None:
    if hops.size == 0:
        return None
    values, counts = _histogram(hops)
    return {
        "min": int(values[0]),
        "max": int(values[-1]),
        "mode": int(values[np.argmax(counts)]),  # ties go to the fewest hops
        "count": int(hops.size),
        "histogram": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
    }


_TTL_INITIALS = (32, 64, 128, 255)
"""Initial TTLs hosts use; a reply TTL at or below one of the smaller ones betrays it."""


def _initial_ttl(reply_ttl: Int64Array) -> int:
    """The smallest common initial TTL that the highest reply TTL seen fits under."""
    top = int(reply_ttl.max())
    return next(t for t in _TTL_INITIALS if top <= t)


def _backward_hops(reply_ttl: Int64Array) -> tuple[dict[str, Any] | None, str | None]:
    """Backward hops = 255 − reply TTL, or None with the reason when that would mislead.

    RFC 5357 §4.2.1: the reflector SHOULD send with TTL 255. Many do not (twampy, STAMP and
    TWAMP Light reflectors send with the host default of 64, some with 128), and 255 − 64
    would print 191 hops. A path of more than 127 hops does not occur in practice, so when every
    reply arrives with a TTL at or below 128, the reflector did not send with 255 and the hop
    count is unknown; the guessed initial TTL is named.
    """
    seen = reply_ttl[reply_ttl > 0]
    if seen.size == 0:
        if reply_ttl.size:
            return None, "the reply TTL could not be read on this host"
        return None, None
    initial = _initial_ttl(seen)
    if initial != 255:
        return None, (
            f"the reflector sends with TTL {initial}, not 255 (RFC 5357 §4.2.1), so the hops "
            f"cannot be counted (replies arrived with TTL {int(seen.min())}-{int(seen.max())})"
        )
    return _hops(255 - seen), None


def _anomalies(
    rtt: Int64Array,
    total: Int64Array,
    residence: Int64Array,
    forward: Int64Array,
    backward: Int64Array,
    clocks_synced: bool,
) -> list[dict[str, Any]]:
    """Delays that cannot be true, each counted with the likely cause in words.

    One clock cannot go backwards between two readings: T3 < T2 (negative residence) means the
    reflector wrote its timestamps into the wrong fields (a known C++ TWAMP Light reflector
    swaps Receive and Timestamp) or from different clocks; RTT < 0 means its residence exceeds
    the whole time the packet was away. With both clocks claimed synchronised, a negative
    one-way delay means one of them is wrong by at least that much.
    """
    out: list[dict[str, Any]] = []

    def add(kind: str, mask: npt.NDArray[np.bool_], message: str) -> None:
        count = int(np.count_nonzero(mask))
        if count:
            out.append({"kind": kind, "count": count, "message": message.format(n=count)})

    swapped = (residence < 0) & (-residence <= total)
    add(
        "negative_residence",
        residence < 0,
        "{n} replies have the reflector's transmit time (T3) before its receive time (T2)"
        + (
            ": it likely swapped the Receive and Timestamp fields (RFC 5357 §4.2.1), so "
            "residence and one-way delays are wrong and the round trip (T4−T1)−(T3−T2) is "
            "overstated; the time away (T4−T1) is still right"
            if np.count_nonzero(swapped) * 2 > np.count_nonzero(residence < 0)
            else ": its timestamps do not come from one clock, so residence is not valid"
        ),
    )
    add(
        "negative_rtt",
        rtt < 0,
        "{n} replies give a negative round trip: the reflector's residence (T3−T2) exceeds the "
        "whole time away (T4−T1), so its timestamps are wrong or in another format",
    )
    if clocks_synced:
        add(
            "negative_one_way",
            (forward < 0) | (backward < 0),
            "{n} one-way delays are negative although both clocks claim synchronisation: one "
            "clock is wrong by more than its Error Estimate says",
        )
    return out


def summarize(
    sent: RecordArray,
    received: RecordArray,
    *,
    clocks_synced: bool,
    stateful_reflector: bool = True,
    sent_ttl: int = 255,
) -> dict[str, Any]:
    """Summarise one test session; the result validates against ``schemas/ping.schema.json``.

    `sent` holds `SENT_DTYPE` rows, `received` holds `RECORD_DTYPE` rows in any order.
    Reflections whose sender sequence number was never sent are counted as ``unexpected`` and
    otherwise ignored.

    **Loss.** ``received`` counts distinct sender sequence numbers; ``duplicates`` the extra
    copies. A stateful reflector numbers the packets it reflects 0, 1, 2, … (RFC 5357 §4.2.1), so
    max(reflector_seq) + 1 is how many reflections it sent at least. Subtracting the extra
    reflections caused by forward-path duplicates (same sender_seq, different reflector_seq)
    estimates how many distinct packets reached it; the rest of ``sent`` was lost forward, and
    the remaining loss is backward. The split is exact for losses before the last reflection
    that came back; reflections lost after it raise no visible gap, so those backward losses are
    counted as forward ones (with nothing received, every loss counts as forward). A stateless
    reflector copies our sequence number (RFC 5357 Appendix I, RFC 8762 §4.2), so
    ``stateful_reflector=False`` reports round-trip loss only and the split and forward fields are
    null.

    **Delay.** ``delay`` holds RTT, forward, backward and residence distributions; forward and
    backward carry ``valid = clocks_synced``.

    **Delay variation.** ``ipdv`` (RFC 5481: D(i+1) − D(i) for sender-sequence-consecutive
    packets both received) and ``pdv`` (RFC 5481: D(i) − min D) are given for RTT and for both
    one-way delays. They are valid without clock synchronisation: a constant offset between the
    clocks adds the same amount to every one-way delay and cancels in the difference (clock
    *drift* over the session does not cancel, but it is usually small).

    **Reordering** (RFC 4737) in arrival order by T4 for the round trip and, with a stateful
    reflector, in reflector_seq order for the forward path (which sees only packets whose
    reflection came back).

    **Hops.** Forward = `sent_ttl` − Sender TTL, backward = 255 − reply TTL (the reflector
    SHOULD send with TTL 255, RFC 5357 §4.2.1). A Sender TTL of 0 (twampy's reflector writes it) or
    above `sent_ttl` (a reflector that could not read it writes 255) is excluded, as is a reply
    TTL of 0 (not read). With `sent_ttl` 255, "could not read" is indistinguishable from 0 hops.
    """
    if not 1 <= sent_ttl <= 255:
        raise ValueError(f"sent_ttl {sent_ttl} is not in 1..255")
    _require_fields(sent, SENT_DTYPE, "sent")
    _require_fields(received, RECORD_DTYPE, "received")

    sent_seq = _sorted_unique(sent["seq"].astype(np.int64))
    known = _sent_by_us(sent_seq, received["sender_seq"].astype(np.int64))
    recs = received[known]
    recs = recs[np.argsort(recs["t4"], kind="stable")]  # arrival order, ties keep input order
    first_idx = _first_of_each(recs["sender_seq"].astype(np.int64))  # first copies
    counts = _counts(int(sent_seq.size), recs, first_idx, int(np.count_nonzero(~known)))
    forward_order: Int64Array | None = None
    if stateful_reflector:
        forward_order = _split_by_direction(counts, recs)

    by_seq = recs[first_idx]  # deduplicated, sender_seq order
    by_arrival = recs[np.sort(first_idx)]  # deduplicated, arrival order
    return {
        "clocks_synced": bool(clocks_synced),
        "stateful_reflector": bool(stateful_reflector),
        "counts": counts,
        **_delays(by_seq, clocks_synced),
        "reordering": {
            "round_trip": _reordering(by_arrival["sender_seq"].astype(np.int64)),
            "forward": None if forward_order is None else _reordering(forward_order),
        },
        **_hops_and_tos(by_seq, sent_ttl),
        "anomalies": _anomalies_of(by_seq, clocks_synced),
        "reflector_error_estimate": _reflector_error(by_seq),
    }


def kernel_stamps(
    sent: RecordArray,
    received: RecordArray,
    tx_kernel: Int64Array,
    *,
    source: str = "software",
) -> dict[str, Any]:
    """Send-time error and RTT from the kernel's clock at both ends; validates against the
    ``kernel_stamps`` object of ``schemas/ping.schema.json``.

    `tx_kernel` holds, per row of `sent`, the kernel's transmit stamp of that packet
    (``SenderResult.tx_kernel_ns``, SO_TIMESTAMPING), 0 where the kernel reported none (its
    error queue overflowed, the socket closed first, or the NIC gave no hardware stamp).

    * ``send_error`` = kernel transmit stamp − T1 written in the packet, over the stamped
      packets: how much earlier than the packet's departure its Timestamp was taken (the
      sender's part of the error of every delay). It includes the kernel's own path down to
      where it stamps (before the qdisc for software stamps, RFC 5357 §4.1.2 asks for "as
      close as possible" to the wire).
    * ``rtt_kernel`` = (T4 − kernel T1) − (T3 − T2) over the first copy of each answered packet
      that has a kernel stamp, and ``rtt_written`` the usual (T4 − T1) − (T3 − T2) over the
      same packets, so the two are comparable; T4 is the kernel's receive stamp
      (SO_TIMESTAMPNS) already.
    * A packet without a kernel stamp is counted in ``missing`` and left out; nothing is
      invented for it. ``missing_note`` says it in words (None when every packet was stamped).
    """
    _require_fields(sent, SENT_DTYPE, "sent")
    _require_fields(received, RECORD_DTYPE, "received")
    if tx_kernel.shape != sent.shape:
        raise ValueError(f"tx_kernel has {tx_kernel.size} rows, sent {sent.size}")
    tx = tx_kernel.astype(np.int64)
    stamped = tx != 0
    t1 = sent["t1"].astype(np.int64)
    seqs = sent["seq"].astype(np.int64)
    missing = int(np.count_nonzero(~stamped))
    recs = received[np.argsort(received["t4"], kind="stable")]
    first = recs[_first_of_each(recs["sender_seq"].astype(np.int64))]  # sender_seq order
    # The kernel stamp of each answered packet, by its sequence number (first copy sent).
    order = np.argsort(seqs, kind="stable")
    pos = np.searchsorted(seqs[order], first["sender_seq"].astype(np.int64))
    pos = np.minimum(pos, max(seqs.size - 1, 0))
    if seqs.size:
        rows = order[pos]
        hit = (seqs[rows] == first["sender_seq"].astype(np.int64)) & stamped[rows]
    else:
        rows = np.zeros(0, np.intp)
        hit = np.zeros(first.size, np.bool_)
    r = first[hit]
    back = r["t4"].astype(np.int64)
    residence = r["t3"].astype(np.int64) - r["t2"].astype(np.int64)
    note = None
    if missing:
        note = (
            f"the kernel reported no {source} transmit stamp for {missing} of {sent.size} "
            "packets (error queue overflow, socket closed before the report, or no stamp of "
            "this kind); they are left out of send_error and rtt_kernel"
        )
    return {
        "source": source,
        "sent": int(sent.size),
        "stamped": int(sent.size) - missing,
        "missing": missing,
        "missing_note": note,
        "send_error": _distribution(tx[stamped] - t1[stamped]),
        "rtt_kernel": _distribution((back - tx[rows[hit]]) - residence),
        "rtt_written": _distribution((back - r["t1"].astype(np.int64)) - residence),
    }


def _sent_by_us(sent_seq: Int64Array, rx_seq: Int64Array) -> npt.NDArray[np.bool_]:
    """Which reflections carry a sender sequence number we sent (`sent_seq` sorted, unique)."""
    n_sent = int(sent_seq.size)
    if n_sent == 0:
        return np.zeros(rx_seq.size, dtype=bool)
    if sent_seq[-1] - sent_seq[0] == n_sent - 1:
        # The usual case, sequence numbers 0..n-1 (RFC 4656 §4.1.2): a range check, no search.
        in_range: npt.NDArray[np.bool_] = (rx_seq >= sent_seq[0]) & (rx_seq <= sent_seq[-1])
        return in_range
    at = np.minimum(np.searchsorted(sent_seq, rx_seq), n_sent - 1)
    found: npt.NDArray[np.bool_] = sent_seq[at] == rx_seq
    return found


def _counts(
    n_sent: int, recs: RecordArray, first_idx: Int64Array, unexpected: int
) -> dict[str, Any]:
    """Round-trip counts; the direction split stays None until `_split_by_direction`."""
    n_received = int(first_idx.size)
    n_lost = n_sent - n_received
    return {
        "sent": n_sent,
        "received": n_received,
        "lost": n_lost,
        "loss_pct": 100.0 * n_lost / n_sent if n_sent else None,
        "duplicates": int(recs.size) - n_received,
        "unexpected": unexpected,
        "forward_lost": None,
        "backward_lost": None,
        "forward_duplicates": None,
        "backward_duplicates": None,
    }


def _split_by_direction(counts: dict[str, Any], recs: RecordArray) -> Int64Array:
    """Fill the forward/backward loss and duplicate counts of a stateful reflector's session.

    `recs` are the known reflections in arrival order. Returns the sender sequence numbers in
    the order the reflector saw them (forward-path order), first reflection of each only.
    """
    sender_seq = recs["sender_seq"].astype(np.int64)
    reflector_seq = recs["reflector_seq"].astype(np.int64)
    n_sent, n_received, n_lost = counts["sent"], counts["received"], counts["lost"]
    # A forward duplicate was reflected twice (new reflector_seq); a backward duplicate is
    # one reflection that arrived twice (same pair).
    key = (sender_seq.astype(np.uint64) << np.uint64(32)) | reflector_seq.astype(np.uint64)
    pairs = _sorted_unique(key)
    forward_dups = int(pairs.size) - n_received
    reflected = int(reflector_seq.max()) + 1 if reflector_seq.size else 0
    forward_lost = min(max(n_sent - (reflected - forward_dups), 0), n_lost)
    counts["forward_lost"] = forward_lost
    counts["backward_lost"] = n_lost - forward_lost
    counts["forward_duplicates"] = forward_dups
    counts["backward_duplicates"] = int(recs.size) - int(pairs.size)
    # Forward order is reflector order. `pairs` is sorted by sender_seq, then reflector_seq,
    # so the first pair of each sender_seq is its first reflection (forward duplicates out).
    pair_sender = (pairs >> np.uint64(32)).astype(np.int64)
    new_sender = np.ones(pair_sender.size, dtype=bool)
    np.not_equal(pair_sender[1:], pair_sender[:-1], out=new_sender[1:])
    first_reflection = np.flatnonzero(new_sender)
    pair_reflector = (pairs[first_reflection] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    order: Int64Array = pair_sender[first_reflection][np.argsort(pair_reflector, kind="stable")]
    return order


def _delays(by_seq: RecordArray, clocks_synced: bool) -> dict[str, Any]:
    """The ``delay``, ``ipdv`` and ``pdv`` sections from deduplicated records in seq order."""
    seq = by_seq["sender_seq"].astype(np.int64)
    t1, t2, t3, t4 = (by_seq[f].astype(np.int64) for f in ("t1", "t2", "t3", "t4"))
    rtt = (t4 - t1) - (t3 - t2)
    forward = t2 - t1
    backward = t4 - t3
    residence = t3 - t2

    def pdv(delay: Int64Array) -> dict[str, int] | None:
        return _distribution(delay - delay.min()) if delay.size else None

    return {
        "delay": {
            "rtt": _distribution(rtt),
            "forward": _one_way(forward, clocks_synced),
            "backward": _one_way(backward, clocks_synced),
            "residence": _distribution(residence),
            "time_away": _distribution(t4 - t1),
        },
        "ipdv": {
            "rtt": _distribution(_ipdv(seq, rtt)),
            "forward": _distribution(_ipdv(seq, forward)),
            "backward": _distribution(_ipdv(seq, backward)),
        },
        "pdv": {
            "rtt": pdv(rtt),
            "forward": pdv(forward),
            "backward": pdv(backward),
        },
    }


def _ee_ns(raw: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Error Estimates (RFC 4656 §4.1.2: Multiplier × 2^(Scale − 32) s) in ns; NaN if invalid.

    Multiplier 0 is invalid (no estimate given), so those are NaN.
    """
    scale = (raw >> 8) & 0x3F
    multiplier = raw & 0xFF
    ns = multiplier * np.exp2(scale.astype(np.float64) - 32.0) * 1e9
    out: npt.NDArray[np.float64] = np.where(multiplier > 0, ns, np.nan)
    return out


def _reflector_error(by_seq: RecordArray) -> dict[str, Any]:
    """The reflector's own Error Estimates: how many replies say unsynchronised, the largest."""
    if "reflector_ee" not in (by_seq.dtype.names or ()) or by_seq.size == 0:
        return {"max_ns": None, "unsynced": 0, "count": 0}
    raw = by_seq["reflector_ee"].astype(np.int64)
    ns = _ee_ns(raw)
    valid = ns[~np.isnan(ns)]
    return {
        "max_ns": int(np.ceil(valid.max())) if valid.size else None,
        "unsynced": int(np.count_nonzero((raw & 0x8000) == 0)),
        "count": int(raw.size),
    }


def _anomalies_of(by_seq: RecordArray, clocks_synced: bool) -> list[dict[str, Any]]:
    """The ``anomalies`` section from deduplicated records (see `_anomalies`)."""
    t1, t2, t3, t4 = (by_seq[f].astype(np.int64) for f in ("t1", "t2", "t3", "t4"))
    residence = t3 - t2
    return _anomalies((t4 - t1) - residence, t4 - t1, residence, t2 - t1, t4 - t3, clocks_synced)


def _hops_and_tos(by_seq: RecordArray, sent_ttl: int) -> dict[str, Any]:
    """The ``hops`` and ``reply_tos`` sections (see `summarize` for what is excluded)."""
    sender_ttl = by_seq["sender_ttl"].astype(np.int64)
    reply_ttl = by_seq["reply_ttl"].astype(np.int64)
    forward_hops = (sent_ttl - sender_ttl)[(sender_ttl > 0) & (sender_ttl <= sent_ttl)]
    backward_summary, backward_unknown = _backward_hops(reply_ttl)
    forward_unknown = None
    if sender_ttl.size and forward_hops.size == 0:
        forward_unknown = "the reflector did not report the TTL it received (Sender TTL 0)"
    tos_values, tos_counts = _histogram(by_seq["reply_tos"].astype(np.int64))
    return {
        "hops": {
            "forward": _hops(forward_hops),
            "backward": backward_summary,
            "forward_unknown": forward_unknown,
            "backward_unknown": backward_unknown,
        },
        "reply_tos": {str(int(v)): int(c) for v, c in zip(tos_values, tos_counts, strict=True)},
    }
