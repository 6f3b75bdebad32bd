"""From trials to figures: what a size's runs and latency trials say, with their spread.

A size's throughput is searched `trials` times (runs); each run ends with, per criterion, the
highest rate that passed verification and what bounds it from above (`search.SearchResult`).

**The figure is the highest rate that passed verification in any run** (`figure_pps`), with the
spread (min / median / max, `pps`) over the runs whose answer is bracketed by a real failure of
the reflector, or by a disturbed bound (`search`) that no other run contradicts by passing
higher at the setup's limit. Not the median: RFC 2544 §26.1's throughput is the fastest rate at
which nothing is lost, and on a shared machine the noise is one-sided. A stall of our sender or
another process on the reflector's core can make a trial fail (and end a run low); nothing can
make a reflector that loses packets pass a verified trial. The median of three runs therefore
moved with the machine (issue 13: in five quiet default runs it was 198-261 kpps at 512 octets,
−16 % of their median, where the highest pass of each run stayed within 10 %); the highest
verified pass does not, and the spread beside it still shows a run that ended low.

Runs whose answer is bounded only by the test setup (our sender's ceiling, or `--max-rate`) give
no figure, only a lower bound. When such a run passed higher than every bracketed run, the
size's figure *is* that lower bound: its status says the setup bounded it (the reflector passed
there and was never seen to fail above), and `runs_below_pps` keeps the bracketed runs' answers
beneath it; the table words it (`tables`).

Statuses: `found` (every run bracketed), `partial` (some), `sender_limited` (the reflector lost
nothing at the most our sender could hold), `at_max_rate` (nothing lost up to --max-rate),
`at_medium_max` (nothing lost up to the medium's theoretical maximum frame rate, `--medium`:
the reflector's own limit may be higher),
`none` (even the lowest rate lost packets), `unverifiable` (not one trial could be verified:
the sender never held even the lowest rate), `disturbed` (packets were lost down to the lowest
rate, but only while other work had the CPU), `not_measured`.

**Disturbed figures.** Every trial says whether other work had the CPU meanwhile
(`trial.disturbance`). A figure is marked `disturbed`, with the reason in words, when a trial
that decided it in any run was disturbed (the highest pass reported, or the failing or disturbed
trial just above it: a hog that halved the reflector's core halves the figure through exactly
these trials), or when at least `DISTURBED_SHARE` of the size's throughput trials were. A
latency point is marked when a trial it summarises was disturbed; its trials are chosen
undisturbed first (`latency_trials_used`).

Bit rates: `mbps` counts UDP payload; `l2_mbps` Ethernet frames (payload + 8 UDP + 20 IPv4 or
40 IPv6 + 14 header + 4 FCS, at least 64 octets); `l1_mbps` adds the 8-octet preamble and
12-octet inter-frame gap (IEEE 802.3), what a link's line rate is measured against. On loopback
there is no Ethernet: these say what the same packet rate would take on a wire.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import ETHERNET_L1_EXTRA, ETHERNET_L2_EXTRA, frame_octets
from .stats import spread, spread_of_summaries

__all__ = [
    "BOUNDED_STATUSES",
    "DISTURBED_SHARE",
    "ETHERNET_L1_EXTRA",
    "ETHERNET_L2_EXTRA",
    "LOSSY_LATENCY_PCT",
    "bits_at_headline",
    "finalize_size",
    "frame_octets",
    "headline_pps",
    "latency_base",
    "latency_trials_used",
    "lost_to_a_disturbance",
]

DISTURBED_SHARE = 0.25
"""At least this share of a size's throughput trials disturbed: its figures are marked as
measured beside other work even if the trials that decided them were not."""
BOUNDED_STATUSES = ("sender_limited", "at_max_rate", "at_medium_max")
"""Nothing lost at the highest rate searched: the figure is a lower bound set by the setup."""
LOSSY_LATENCY_PCT = 1.0
"""A latency point losing more than this is flagged: its delays describe an overloaded path."""


def lost_to_a_disturbance(trial: dict[str, Any]) -> bool:
    """Did this trial lose packets because other work had the CPU (`trial` module docstring)?

    Disturbed, and the loss looks like a backlog, as a reflector that fell behind leaves: a
    quarter of the lost packets came back late or were dropped by the reflector's socket; or
    the lost packets are the tail of the schedule (`lost_at_end`) well beyond what losses
    spread over the trial would put there (lost/sent of them: a policer's or a dropper's).
    """
    if not trial.get("disturbed"):
        return False
    lost = int(trial.get("lost") or 0)
    sent = int(trial.get("sent") or 0)
    if lost <= 0 or sent <= 0:
        return False
    backlog = int(trial.get("late") or 0) + max(0, int(trial.get("reflector_drops") or 0))
    if backlog >= 0.25 * lost:
        return True
    spread_out = lost / sent  # the share of the tail a spread-out loss would hit
    return int(trial.get("lost_at_end") or 0) >= lost * (1 + spread_out) / 2


def _foreign(trials: list[dict[str, Any]]) -> float | None:
    values = [t["foreign_cpu_cores"] for t in trials if t.get("foreign_cpu_cores") is not None]
    return float(np.median(values)) if values else None


def _deciding(run: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The trials that decided a run's answer: at its highest pass, and at the lowest failing
    or disturbed rate (the bound just above it)."""
    uppers = [run.get(f"{key}_fail_pps"), run.get(f"{key}_disturbed_pps")]
    rates = [run[f"{key}_pps"], min((u for u in uppers if u is not None), default=None)]
    wanted = [r for r in rates if r is not None]
    return [t for t in run["trials"] if any(math.isclose(t["offered_pps"], r) for r in wanted)]


def _disturbance(done: list[dict[str, Any]], key: str) -> tuple[str | None, int]:
    """(why a figure is marked disturbed in words, or None; disturbed trials of the size)."""
    trials = [t for r in done for t in r["trials"]]
    disturbed = [t for t in trials if t.get("disturbed")]
    deciding = [t for r in done for t in _deciding(r, key) if t.get("disturbed")]
    if deciding:
        t = deciding[0]
        return (
            f"a trial that decided it ({t['offered_pps']:,.0f} pps) ran beside other work: "
            f"{t.get('disturbance') or 'other processes had the CPU'}",
            len(disturbed),
        )
    if disturbed and len(disturbed) >= DISTURBED_SHARE * len(trials):
        return (
            f"{len(disturbed)} of its {len(trials)} trials ran beside other work (e.g. "
            f"{disturbed[0].get('disturbance') or 'other processes had the CPU'})",
            len(disturbed),
        )
    return None, len(disturbed)


def _bits(found: list[float], octets: float) -> dict[str, Any] | None:
    return spread(p * octets * 8 / 1e6 for p in found)


def _empty(done: list[dict[str, Any]], key: str) -> dict[str, Any]:
    why, n_disturbed = _disturbance(done, key)
    return {
        "status": "not_measured",
        "pps": None,
        "mbps": None,
        "l2_mbps": None,
        "l1_mbps": None,
        "figure_pps": None,
        "lower_bound_pps": None,
        "setup_limit_pps": None,
        "runs_below_pps": None,
        "runs": len(done),
        "runs_found": 0,
        "foreign_cpu_cores": _foreign([t for r in done for t in r["trials"]]),
        "disturbed": why is not None,
        "disturbance": why,
        "disturbed_trials": n_disturbed,
    }


def rate_figure(
    runs: list[dict[str, Any]], key: str, size_result: dict[str, Any], n_wanted: int
) -> dict[str, Any]:
    """One criterion's figure over the runs of a size (statuses: the module docstring)."""
    done = [r for r in runs if r.get("complete")]
    figure = _empty(done, key)
    if not done:
        return figure
    bounded = [r for r in done if r[f"{key}_at_cap"]]
    # A run bounded only by a disturbed rate is contradicted by a run that lost nothing up to
    # a higher rate the setup allowed: a pass is a pass, the disturbance was the limit.
    proven = max((r[f"{key}_pps"] for r in bounded), default=0.0)
    found = [
        r[f"{key}_pps"]
        for r in done
        if r[f"{key}_pps"] is not None
        and not r[f"{key}_at_cap"]
        and not (r[f"{key}_bound"] == "disturbed" and r[f"{key}_pps"] < proven)
    ]
    figure["runs_found"] = len(found)
    if bounded:
        # The highest rate that passed verification in any run bounded by the setup.
        figure["lower_bound_pps"] = max(r[f"{key}_pps"] for r in bounded)
        limits = [r.get(f"{key}_ceiling_pps") or r["cap_pps"] for r in bounded]
        figure["setup_limit_pps"] = max(limits)
    # A bracketed run's answer is the figure only if no run bounded by the setup passed higher
    # (a tie goes to the bracketed run: a failure of the reflector was seen just above it).
    if found and max(found) >= (figure["lower_bound_pps"] or 0.0):
        figure["status"] = "found" if len(found) == len(done) == n_wanted else "partial"
        figure["figure_pps"] = max(found)
        figure["pps"] = spread(found)
        figure["mbps"] = _bits(found, size_result["mean_octets"])
        figure["l2_mbps"] = _bits(found, size_result["l2_octets"])
        figure["l1_mbps"] = _bits(found, size_result["l1_octets"])
    elif bounded:
        figure["runs_below_pps"] = spread(found)
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
    elif any(r.get(f"{key}_disturbed_pps") is not None for r in done):
        figure["status"] = "disturbed"
        figure["setup_limit_pps"] = min(
            r[f"{key}_disturbed_pps"] for r in done if r.get(f"{key}_disturbed_pps") is not None
        )
    elif any(r.get(f"{key}_ceiling_pps") is not None for r in done):
        figure["status"] = "unverifiable"
        figure["setup_limit_pps"] = min(r[f"{key}_ceiling_pps"] or 0.0 for r in done)
    return figure


def headline_pps(fig: dict[str, Any]) -> float | None:
    """A rate figure's headline: `figure_pps` (the highest verified pass), or for a report saved
    before that field existed (schema 3 of an older release) the median it headlined then."""
    if fig.get("figure_pps") is not None:
        return float(fig["figure_pps"])
    if fig.get("pps"):
        return float(fig["pps"]["median"])
    return None


def bits_at_headline(fig: dict[str, Any], key: str) -> float:
    """A bit rate (`mbps`, `l2_mbps`, `l1_mbps`) at the headline rate: the spread's max, since
    the headline is the highest pass (`figure_pps`); an older report's median."""
    return float(fig[key]["max" if fig.get("figure_pps") is not None else "median"])


def latency_trials_used(trials: list[dict[str, Any]]) -> list[int]:
    """Which of a latency point's trials to summarise (indexes), best first available:
    those our sender held cleanly on an undisturbed machine; else those it held cleanly (the
    point is marked disturbed); else (a busy machine) those that at least offered the load
    (`sender_clean` false: their delays include our sender's catch-up bursts)."""
    for keep in (
        lambda t: not t["sender_limited"] and not t.get("disturbed"),
        lambda t: not t["sender_limited"],
        lambda t: t["offered"],
    ):
        used = [i for i, t in enumerate(trials) if keep(t)]
        if used:
            return used
    return []


def _latency_point(point: dict[str, Any]) -> None:
    trials = point["trials"]
    good = [trials[i] for i in latency_trials_used(trials)]
    point["sender_clean"] = any(not t["sender_limited"] for t in trials) or not trials
    disturbed = [t for t in good if t.get("disturbed")]
    point["disturbed"] = bool(disturbed)
    point["disturbance"] = (
        f"{len(disturbed)} of the {len(good)} trials summarised ran beside other work "
        f"(e.g. {disturbed[0].get('disturbance') or 'other processes had the CPU'})"
        if disturbed
        else None
    )
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
        if fig["figure_pps"] is not None:
            return float(fig["figure_pps"]), key
        if fig["status"] in BOUNDED_STATUSES and fig["lower_bound_pps"]:
            return float(fig["lower_bound_pps"]), f"{key}_lower_bound"
    return None, None
