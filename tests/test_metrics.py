"""Measurement metrics (twamp.metrics): hand-built sessions with answers worked out by hand."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import twamp
from twamp.metrics import RECORD_DTYPE, SENT_DTYPE, Records, summarize

US = 1_000
MS = 1_000_000
SCHEMA_PATH = Path(twamp.__file__).parent / "schemas" / "ping.schema.json"


def sent(n: int, interval: int = 10 * MS) -> np.ndarray[Any, Any]:
    return np.array([(i, i * interval) for i in range(n)], dtype=SENT_DTYPE)


def rx(
    seq: int,
    rseq: int,
    fwd: int,
    res: int,
    back: int,
    *,
    offset: int = 0,
    interval: int = 10 * MS,
    sender_ttl: int = 255,
    reply_ttl: int = 255,
    tos: int = 0,
) -> tuple[int, ...]:
    """One reflection of packet `seq`; `offset` = how far the reflector's clock is ahead."""
    t1 = seq * interval
    t2 = t1 + fwd + offset
    t3 = t2 + res
    t4 = t3 - offset + back
    return (seq, rseq, t1, t2, t3, t4, sender_ttl, reply_ttl, tos)


def received(rows: Sequence[tuple[int, ...]]) -> np.ndarray[Any, Any]:
    # Rows may leave out the trailing reflector Error Estimate (0: none given).
    width = len(RECORD_DTYPE.names or ())
    return np.array([(*r, *(0,) * (width - len(r))) for r in rows], dtype=RECORD_DTYPE)


def validate(summary: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    envelope = {
        "target": "127.0.0.1",
        "mode": "open",
        "session": {
            "sender_port": 40000,
            "reflector_port": 862,
            "padding": 27,
            "dscp": 0,
            "count": 10,
            "interval_ms": 10.0,
        },
        # A JSON round trip proves the summary holds only plain JSON types.
        "summary": json.loads(json.dumps(summary)),
        "implementation": "py",
        "version": twamp.__version__,
    }
    jsonschema.Draft202012Validator(schema).validate(envelope)


# Forward delays 10, 30, 20, 50, 40 µs; residence 5 µs; backward 20 µs.
FWD = [10 * US, 30 * US, 20 * US, 50 * US, 40 * US]


def no_loss_session(offset: int) -> np.ndarray[Any, Any]:
    return received([rx(i, i, FWD[i], 5 * US, 20 * US, offset=offset) for i in range(5)])


def test_no_loss_counts_and_rtt() -> None:
    s = summarize(sent(5), no_loss_session(0), clocks_synced=True)
    c = s["counts"]
    assert (c["sent"], c["received"], c["lost"]) == (5, 5, 0)
    assert (c["duplicates"], c["unexpected"]) == (0, 0)
    assert c["loss_pct"] == 0.0
    assert (c["forward_lost"], c["backward_lost"]) == (0, 0)
    # RTT = 30, 50, 40, 70, 60 µs. Sorted 30..70: p95 at rank 3.8 -> 68, p99 at 3.96 -> 69.6.
    # Deviations -20, 0, -10, 20, 10 -> variance 200 µs², stddev 14.142 µs.
    assert s["delay"]["rtt"] == {
        "min": 30 * US,
        "mean": 50 * US,
        "median": 50 * US,
        "p95": 68 * US,
        "p99": 69_600,
        "max": 70 * US,
        "stddev": 14_142,
        "count": 5,
    }
    assert s["delay"]["residence"]["min"] == s["delay"]["residence"]["max"] == 5 * US
    assert s["delay"]["forward"]["valid"] is True
    assert s["delay"]["forward"]["median"] == 30 * US
    assert s["delay"]["backward"]["mean"] == 20 * US
    validate(s)


def test_unsynchronised_clocks_flag_one_way_only() -> None:
    offset = 123_456_789  # reflector clock 123 ms ahead
    s = summarize(sent(5), no_loss_session(offset), clocks_synced=False)
    assert s["clocks_synced"] is False
    assert s["delay"]["forward"]["valid"] is False
    assert s["delay"]["backward"]["valid"] is False
    # The offset shows up in the one-way numbers, which is why they are flagged ...
    assert s["delay"]["forward"]["min"] == 10 * US + offset
    assert s["delay"]["backward"]["min"] == 20 * US - offset
    # ... and not in RTT, residence, IPDV or PDV.
    synced = summarize(sent(5), no_loss_session(0), clocks_synced=True)
    for key in ("rtt", "residence"):
        assert s["delay"][key] == synced["delay"][key]
    assert s["ipdv"] == synced["ipdv"]
    assert s["pdv"] == synced["pdv"]
    validate(s)


def test_ipdv_and_pdv_known_sequence() -> None:
    s = summarize(sent(5), no_loss_session(0), clocks_synced=True)
    # Forward IPDV: 30-10, 20-30, 50-20, 40-50 = 20, -10, 30, -10 µs; mean 7.5 µs.
    fwd = s["ipdv"]["forward"]
    assert (fwd["min"], fwd["max"], fwd["count"], fwd["mean"]) == (-10 * US, 30 * US, 4, 7_500)
    assert fwd["median"] == 5 * US  # between -10 and 20
    # Backward delay is constant, so its IPDV is all zero; RTT IPDV equals the forward one.
    assert s["ipdv"]["backward"]["min"] == s["ipdv"]["backward"]["max"] == 0
    assert s["ipdv"]["rtt"] == fwd
    # Forward PDV: 0, 20, 10, 40, 30 µs.
    pdv = s["pdv"]["forward"]
    assert (pdv["min"], pdv["median"], pdv["max"], pdv["count"]) == (0, 20 * US, 40 * US, 5)


def test_ipdv_does_not_pair_across_a_gap() -> None:
    # RTT (all in forward delay) 10, 12, 11, lost, 20, 14 µs: pairs (0,1) (1,2) (4,5) only.
    rtts = {0: 10, 1: 12, 2: 11, 4: 20, 5: 14}
    rows = [rx(q, r, rtts[q] * US, 0, 0) for r, q in enumerate(sorted(rtts))]
    s = summarize(sent(6), received(rows), clocks_synced=True)
    ipdv = s["ipdv"]["rtt"]
    # +2, -1, -6 µs; the 11 -> 20 step across the lost packet is not an IPDV sample.
    assert (ipdv["count"], ipdv["min"], ipdv["median"], ipdv["max"]) == (3, -6 * US, -US, 2 * US)
    assert ipdv["mean"] == -1_667  # -5/3 µs


def test_loss_split_forward_and_backward() -> None:
    # Seq 3 is lost on the way out, so the reflector numbers 0 1 2 4 5 6 7 8 9 as 0..8.
    # Seq 6's reflection (reflector seq 5) is lost on the way back.
    rseq = {0: 0, 1: 1, 2: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8}
    rows = [rx(q, r, 10 * US, 0, 10 * US) for q, r in rseq.items() if q != 6]
    s = summarize(sent(10), received(rows), clocks_synced=True)
    c = s["counts"]
    assert (c["received"], c["lost"], c["loss_pct"]) == (8, 2, 20.0)
    assert (c["forward_lost"], c["backward_lost"]) == (1, 1)
    validate(s)


def test_loss_split_several_losses() -> None:
    # Seqs 1 and 2 lost forward; the reflector numbers 0 3 4 5 6 7 as 0..5; seq 5's reflection
    # (reflector seq 3) lost backward.
    rseq = {0: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
    rows = [rx(q, r, 0, 0, 0) for q, r in rseq.items() if q != 5]
    c = summarize(sent(8), received(rows), clocks_synced=True)["counts"]
    assert (c["lost"], c["forward_lost"], c["backward_lost"]) == (3, 2, 1)


def test_loss_split_tail_backward_loss_counts_as_forward() -> None:
    # The documented approximation: seq 4's reflection (reflector seq 4) is lost on the way back,
    # but no later reflection reveals the gap, so it is indistinguishable from a forward loss.
    rows = [rx(q, q, 0, 0, 0) for q in range(4)]
    c = summarize(sent(5), received(rows), clocks_synced=True)["counts"]
    assert (c["lost"], c["forward_lost"], c["backward_lost"]) == (1, 1, 0)
    # One position earlier the gap is visible and the split is exact.
    rows = [rx(q, q, 0, 0, 0) for q in (0, 1, 3, 4)]
    c = summarize(sent(5), received(rows), clocks_synced=True)["counts"]
    assert (c["lost"], c["forward_lost"], c["backward_lost"]) == (1, 0, 1)


def test_stateless_reflector_reports_round_trip_loss_only() -> None:
    # A stateless reflector copies our sequence number (RFC 5357 Appendix I): no split is possible.
    rows = [rx(q, q, 0, 0, 0) for q in (0, 1, 2, 4)]
    s = summarize(sent(5), received(rows), clocks_synced=True, stateful_reflector=False)
    c = s["counts"]
    assert (c["lost"], c["forward_lost"], c["backward_lost"]) == (1, None, None)
    assert c["forward_duplicates"] is None
    assert s["reordering"]["forward"] is None
    validate(s)


def test_total_loss_gives_valid_summary_with_null_distributions() -> None:
    s = summarize(sent(10), received([]), clocks_synced=True)
    c = s["counts"]
    assert (c["sent"], c["received"], c["lost"], c["loss_pct"]) == (10, 0, 10, 100.0)
    assert (c["forward_lost"], c["backward_lost"]) == (10, 0)
    for group in ("delay", "ipdv", "pdv"):
        assert all(v is None for v in s[group].values()), group
    assert s["hops"] == {
        "forward": None,
        "backward": None,
        "forward_unknown": None,
        "backward_unknown": None,
    }
    assert s["reordering"]["round_trip"] == {"reordered": 0, "ratio": None, "max_extent": 0}
    validate(s)


def test_nothing_sent() -> None:
    s = summarize(sent(0), received([]), clocks_synced=False)
    assert s["counts"]["sent"] == 0
    assert s["counts"]["loss_pct"] is None
    validate(s)


def test_duplicates_forward_and_backward() -> None:
    # Seq 1's reflection arrives twice (backward duplicate: same reflector seq); seq 2 is
    # duplicated on the way out and reflected twice (reflector seqs 2 and 3).
    first = [
        rx(0, 0, 10 * US, 0, 10 * US),
        rx(1, 1, 10 * US, 0, 10 * US),
        rx(2, 2, 10 * US, 0, 10 * US),
        rx(3, 4, 10 * US, 0, 10 * US),
    ]
    # The copies arrive 5 ms late; they come first in the array, but not first by T4.
    copies = [rx(1, 1, 10 * US, 0, 5 * MS), rx(2, 3, 10 * US, 0, 5 * MS)]
    s = summarize(sent(4), received(copies + first), clocks_synced=True)
    c = s["counts"]
    assert (c["received"], c["lost"], c["duplicates"]) == (4, 0, 2)
    assert (c["forward_duplicates"], c["backward_duplicates"]) == (1, 1)
    # Reflector counter reached 5 for 4 distinct packets: the duplicate explains the extra one.
    assert (c["forward_lost"], c["backward_lost"]) == (0, 0)
    # Only first copies count in the statistics: the late copies would make max RTT 5.01 ms.
    assert s["delay"]["rtt"]["max"] == 20 * US
    assert s["delay"]["rtt"]["count"] == 4
    assert s["reordering"]["round_trip"]["reordered"] == 0
    validate(s)


def test_forward_duplicate_does_not_hide_forward_loss() -> None:
    # Seq 2 duplicated on the way out (reflector seqs 2, 3), seq 4 lost on the way out.
    rows = [rx(q, r, 0, 0, 0) for q, r in ((0, 0), (1, 1), (2, 2), (2, 3), (3, 4))]
    c = summarize(sent(5), received(rows), clocks_synced=True)["counts"]
    assert (c["lost"], c["forward_lost"], c["backward_lost"]) == (1, 1, 0)


def test_unexpected_sequence_numbers_are_not_received() -> None:
    # 3 is just past the last sequence number sent.
    rows = [rx(q, q, 0, 0, 0) for q in (0, 1, 2)] + [rx(3, 3, 0, 0, 0), rx(99, 4, 0, 0, 0)]
    c = summarize(sent(3), received(rows), clocks_synced=True)["counts"]
    assert (c["received"], c["unexpected"], c["lost"], c["duplicates"]) == (3, 2, 0, 0)


def test_unexpected_with_non_contiguous_sent() -> None:
    # Only 0 1 2 5 6 were sent (say, a window of a longer run): 3 is unexpected, 7 too.
    snd = np.array([(q, q * MS) for q in (0, 1, 2, 5, 6)], dtype=SENT_DTYPE)
    rows = [rx(q, r, 0, 0, 0) for r, q in enumerate((0, 1, 3, 5, 7))]
    c = summarize(snd, received(rows), clocks_synced=True, stateful_reflector=False)["counts"]
    assert (c["sent"], c["received"], c["unexpected"], c["lost"]) == (5, 3, 2, 2)


def arrival_order(order: list[int]) -> np.ndarray[Any, Any]:
    """Reflections of 0..n-1 arriving in `order` (position k arrives k ms after the first).

    Rows are stored reversed, so only the T4 sort can recover the arrival order.
    """
    rows = []
    for pos, q in enumerate(order):
        t1 = q * 10 * US
        t4 = 10 * MS + pos * MS
        rows.append((q, q, t1, t1 + 1, t1 + 2, t4, 255, 255, 0))
    return received(rows[::-1])


def test_reordering_extent_single() -> None:
    # 3 arrives after 4 and 5: reordered; the earliest later-numbered packet, 4, arrived two
    # positions earlier, so the extent is 2 (RFC 4737 §4.2).
    s = summarize(sent(7), arrival_order([0, 1, 2, 4, 5, 3, 6]), clocks_synced=True)
    r = s["reordering"]["round_trip"]
    assert r["reordered"] == 1
    assert math.isclose(r["ratio"], 1 / 7)
    assert r["max_extent"] == 2
    validate(s)


def test_reordering_several() -> None:
    # 1 0 3 2 6 4 5 7: 0 (extent 1), 2 (extent 1), 4 (extent 1, behind 6), 5 (extent 2, 6 is
    # the earliest greater) are reordered; 5 is late even though it follows 4 (NextExp is 7).
    s = summarize(sent(8), arrival_order([1, 0, 3, 2, 6, 4, 5, 7]), clocks_synced=True)
    assert s["reordering"]["round_trip"] == {"reordered": 4, "ratio": 0.5, "max_extent": 2}


def test_in_order_with_losses_is_not_reordering() -> None:
    s = summarize(sent(8), arrival_order([0, 2, 3, 6, 7]), clocks_synced=True)
    assert s["reordering"]["round_trip"] == {"reordered": 0, "ratio": 0.0, "max_extent": 0}


def test_forward_reordering_from_reflector_sequence() -> None:
    # The forward path swaps 2 and 3 (the reflector numbers 3 before 2); the replies arrive in
    # sender order again, so only the forward direction shows reordering.
    rseq = {0: 0, 1: 1, 2: 3, 3: 2, 4: 4}
    rows = [
        (q, r, q * MS, q * MS + 1, q * MS + 2, q * MS + 3, 255, 255, 0) for q, r in rseq.items()
    ]
    s = summarize(sent(5), received(rows), clocks_synced=True)
    assert s["reordering"]["round_trip"]["reordered"] == 0
    assert s["reordering"]["forward"] == {"reordered": 1, "ratio": 0.2, "max_extent": 1}


def test_hops() -> None:
    # Sent with TTL 64. Sender TTL 0 (twampy's bug) and 255 (reflector could not read it) are
    # excluded; so is a reply TTL of 0 (we could not read it).
    ttls = [(60, 250), (60, 250), (59, 250), (0, 0), (255, 249)]
    rows = [rx(q, q, 0, 0, 0, sender_ttl=s, reply_ttl=r) for q, (s, r) in enumerate(ttls)]
    s = summarize(sent(5), received(rows), clocks_synced=True, sent_ttl=64)
    assert s["hops"]["forward"] == {
        "min": 4,
        "max": 5,
        "mode": 4,
        "count": 3,
        "histogram": {"4": 2, "5": 1},
    }
    assert s["hops"]["backward"] == {
        "min": 5,
        "max": 6,
        "mode": 5,
        "count": 4,
        "histogram": {"5": 3, "6": 1},
    }
    validate(s)


def test_reply_tos_histogram() -> None:
    rows = [rx(q, q, 0, 0, 0, tos=tos) for q, tos in enumerate([0xB8, 0xB8, 0x00])]
    s = summarize(sent(3), received(rows), clocks_synced=True)
    assert s["reply_tos"] == {"184": 2, "0": 1}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-(10**9), max_value=10**10), min_size=1, max_size=300))
def test_percentiles_are_ordered(delays: list[int]) -> None:
    rows = [rx(q, q, d, 0, 0) for q, d in enumerate(delays)]
    s = summarize(sent(len(delays)), received(rows), clocks_synced=True)
    for dist in (s["delay"]["rtt"], s["delay"]["forward"], s["pdv"]["rtt"]):
        assert dist["min"] <= dist["median"] <= dist["p95"] <= dist["p99"] <= dist["max"]
        assert dist["min"] <= dist["mean"] <= dist["max"]
        assert dist["count"] == len(delays)
    assert s["delay"]["rtt"]["min"] == min(delays)
    assert s["delay"]["rtt"]["max"] == max(delays)
    ipdv = s["ipdv"]["rtt"]
    if len(delays) == 1:
        assert ipdv is None
    else:
        assert ipdv["count"] == len(delays) - 1


def test_schema_rejects_drift() -> None:
    s = summarize(sent(5), no_loss_session(0), clocks_synced=True)
    validate(s)
    extra = copy.deepcopy(s)
    extra["counts"]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(extra)
    missing = copy.deepcopy(s)
    del missing["delay"]["rtt"]["p99"]
    with pytest.raises(jsonschema.ValidationError):
        validate(missing)
    unflagged = copy.deepcopy(s)
    del unflagged["delay"]["forward"]["valid"]
    with pytest.raises(jsonschema.ValidationError):
        validate(unflagged)


def test_records_grow_and_feed_summarize() -> None:
    snd = Records(2, SENT_DTYPE)
    rcv = Records(1)
    for q in range(5):
        snd.append(q, q * 10 * MS)
    for q in (0, 1, 3):
        rcv.append(*rx(q, q, 10 * US, 0, 10 * US), 0)
    assert (len(snd), len(rcv)) == (5, 3)
    assert snd.capacity >= 5
    assert snd.array["seq"].tolist() == [0, 1, 2, 3, 4]
    assert snd.array["t1"][4] == 40 * MS
    assert rcv.array.dtype == RECORD_DTYPE
    assert rcv.array["sender_seq"].tolist() == [0, 1, 3]
    c = summarize(snd.array, rcv.array, clocks_synced=True)["counts"]
    assert (c["sent"], c["received"], c["lost"]) == (5, 3, 2)


def test_records_reject_bad_rows() -> None:
    with pytest.raises(ValueError):
        Records(0)
    r = Records(4, SENT_DTYPE)
    with pytest.raises(ValueError):
        r.append(1, 2, 3)
    with pytest.raises(OverflowError):
        r.append(-1, 0)  # seq is unsigned
    assert len(r) == 0


def test_summarize_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="sent_ttl"):
        summarize(sent(1), received([]), clocks_synced=True, sent_ttl=0)
    with pytest.raises(ValueError, match="reflector_seq"):
        bad = np.zeros(1, dtype=[("sender_seq", "u4"), ("t1", "i8")])
        summarize(sent(1), bad, clocks_synced=True)
