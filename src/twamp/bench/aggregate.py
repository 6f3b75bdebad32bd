"""From trials to figures: what a size's runs and latency trials say, with their spread.

A size's throughput is searched `trials` times (runs); each run ends with, per criterion, the
highest rate that passed verification and what bounds it from above (`search.SearchResult`).
The figure of the size is the spread (min / median / max) over the runs whose answer is
bracketed by a real failure of the reflector. Runs whose answer is bounded only by the test
setup (our sender's ceiling, or `--max-rate`) give no figure, only a lower bound, and a size
where every run is so bounded says so in its status; the table words it (`tables`).

Statuses: `found` (every run bracketed), `partial` (some), `sender_limited` (the reflector lost
nothing at the most our sender could hold), `at_max_rate` (nothing lost up to --max-rate),
`at_medium_max` (nothing lost up to the medium's theoretical maximum frame rate, `--medium`:
the reflector's own limit may be higher),
`none` (even the lowest rate lost packets), `unverifiable` (not one trial could be verified:
the sender never held even the lowest rate), `not_measured`.

Bit rates: `mbps` counts UDP payload; `l2_mbps` Ethernet frames (payload + 8 UDP + 20 IPv4 or
40 IPv6 + 14 header + 4 FCS, at least 64 octets); `l1_mbps` adds the 8-octet preamble and
12-octet inter-frame gap (IEEE 802.3), what a link's line rate is measured against. On loopback
there is no Ethernet: these say what the same packet rate would take on a wire.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import ETHERNET_L1_EXTRA, ETHERNET_L2_EXTRA, frame_octets
from .stats import spread, spread_of_summaries

__all__ = [
    "BOUNDED_STATUSES",
    "DISTURBED_CORES",
    "ETHERNET_L1_EXTRA",
    "ETHERNET_L2_EXTRA",
    "LOSSY_LATENCY_PCT",
    "finalize_size",
    "frame_octets",
    "latency_base",
]

DISTURBED_CORES = 0.3
"""Other processes took more than this many cores (median over a figure's trials): the figure
is marked as measured beside other work."""
BOUNDED_STATUSES = ("sender_limited", "at_max_rate", "at_medium_max")
"""Nothing lost at the highest rate searched: the figure is a lower bound set by the setup."""
LOSSY_LATENCY_PCT = 1.0
"""A latency point losing more than this is flagged: its delays describe an overloaded path."""


def _foreign(runs: list[dict[str, Any]]) -> float | None:
    values = [
        t["foreign_cpu_cores"]
        for r in runs
        for t in r["trials"]
        if t.get("foreign_cpu_cores") is not None
    ]
    return float(np.median(values)) if values else None


def _bits(found: list[float], octets: float) -> dict[str, Any] | None:
    return spread(p * octets * 8 / 1e6 for p in found)


def _empty(done: list[dict[str, Any]]) -> dict[str, Any]:
    foreign = _foreign(done)
    return {
        "status": "not_measured",
        "pps": None,
        "mbps": None,
        "l2_mbps": None,
        "l1_mbps": None,
        "lower_bound_pps": None,
        "setup_limit_pps": None,
        "runs": len(done),
        "runs_found": 0,
        "foreign_cpu_cores": foreign,
        "disturbed": foreign is not None and foreign > DISTURBED_CORES,
    }


def rate_figure(
    runs: list[dict[str, Any]], key: str, size_result: dict[str, Any], n_wanted: int
) -> dict[str, Any]:
    """One criterion's figure over the runs of a size (statuses: the module docstring)."""
    done = [r for r in runs if r.get("complete")]
    figure = _empty(done)
    if not done:
        return figure
    found = [
        r[f"{key}_pps"] for r in done if r[f"{key}_pps"] is not None and not r[f"{key}_at_cap"]
    ]
    bounded = [r for r in done if r[f"{key}_at_cap"]]
    figure["runs_found"] = len(found)
    if bounded:
        # The highest rate that passed verification in any run bounded by the setup.
        figure["lower_bound_pps"] = max(r[f"{key}_pps"] for r in bounded)
        limits = [r.get(f"{key}_ceiling_pps") or r["cap_pps"] for r in bounded]
        figure["setup_limit_pps"] = max(limits)
    if found:
        figure["status"] = "found" if len(found) == len(done) == n_wanted else "partial"
        figure["pps"] = spread(found)
        figure["mbps"] = _bits(found, size_result["mean_octets"])
        figure["l2_mbps"] = _bits(found, size_result["l2_octets"])
        figure["l1_mbps"] = _bits(found, size_result["l1_octets"])
    elif bounded:
        by_sender = any(
            r[f"{key}_bound"] == "ceiling" or r["cap_source"] == "sender" for r in bounded
        )
        if by_sender:
            figure["status"] = "sender_limited"
        elif all(r["cap_source"] == "medium" for r in bounded):
            figure["status"] = "at_medium_max"
        else:
            figure["status"] = "at_max_rate"
    elif any(r[f"{key}_fail_pps"] is not None for r in done):
        figure["status"] = "none"
    elif any(r.get(f"{key}_ceiling_pps") is not None for r in done):
        figure["status"] = "unverifiable"
        figure["setup_limit_pps"] = min(r[f"{key}_ceiling_pps"] or 0.0 for r in done)
    return figure


def _latency_point(point: dict[str, Any]) -> None:
    good = [t for t in point["trials"] if not t["sender_limited"]]
    # With no clean trial (a busy machine), the trials that at least offered the load are
    # used, and the point says so: their delays include our sender's catch-up bursts.
    point["sender_clean"] = bool(good) or not point["trials"]
    if not good:
        good = [t for t in point["trials"] if t["offered"]]
    point["summary"] = spread_of_summaries(good)
    point["loss_pct"] = spread(t["loss_pct"] for t in good)
    point["reordered"] = spread(t["reordered"] for t in good)
    point["duplicates"] = spread(t["duplicates"] for t in good)
    point["clocks_synced"] = bool(good) and all(t["clocks_synced"] for t in good)
    point["trials_used"] = len(good)
    loss = point["loss_pct"]
    point["lossy"] = loss is not None and loss["median"] > LOSSY_LATENCY_PCT


def finalize_size(size_result: dict[str, Any], n_wanted: int) -> None:
    """Aggregate the raw runs and latency trials of one size (also after an interruption)."""
    tp = size_result["throughput"]
    tp["zero_loss"] = rate_figure(tp["runs"], "zero_loss", size_result, n_wanted)
    tp["tolerant"] = rate_figure(tp["runs"], "tolerant", size_result, n_wanted)
    trials = [t for run in tp["runs"] for t in run["trials"]]
    costs = [
        t["reflector_cpu_us_per_packet"]
        for t in trials
        if t.get("reflector_cpu_us_per_packet") is not None
        and not t["sender_limited"]
        # Idle trials cost the reflector too little CPU for the clock tick to see it.
        and t["received"] >= 2000
    ]
    size_result["reflector_cpu_us_per_packet"] = spread(costs)
    for point in size_result["latency"]:
        _latency_point(point)


def latency_base(size_result: dict[str, Any]) -> tuple[float | None, str | None]:
    """The rate latency fractions refer to, and which figure it is."""
    for key in ("zero_loss", "tolerant"):
        fig = size_result["throughput"][key]
        if fig["pps"] is not None:
            return float(fig["pps"]["median"]), key
        if fig["status"] in BOUNDED_STATUSES and fig["lower_bound_pps"]:
            return float(fig["lower_bound_pps"]), f"{key}_lower_bound"
    return None, None
