"""The human report: the tables `twamp-bench` prints, a view of the JSON document.

Every number carries its unit (in the cell or its column header). Throughput is given in
packets/s and as bit rates: UDP payload, and what the same packet rate takes on Ethernet at
layer 2 (frames: + 8 UDP + 20 IPv4 or 40 IPv6 + 18 Ethernet header and FCS, 64 at least) and at
layer 1 (+ 20 octets of preamble and inter-frame gap), so that a figure can be set against a
link's line rate. A figure that is not the reflector's (our sender could not offer more, or
nothing could be verified) is never printed as a number in its cell: the cell says what
happened and a note under the table says it in words. Figures and latency points measured
beside other work (`aggregate`: "Disturbed figures") are marked `*` with the reason in a note,
latency points that lost heavily `!`.
"""

from __future__ import annotations

from typing import Any

from .aggregate import (
    BOUNDED_STATUSES,
    LOSSY_LATENCY_PCT,
    bits_at_headline,
    lost_to_a_disturbance,
)
from .config import MEDIA

__all__ = ["format_tables", "pps", "table"]


def pps(x: float | None) -> str:
    """A packet rate with its unit: 1.23 Mpps, 45.6 kpps, 789 pps."""
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} Mpps"
    if x >= 1e3:
        return f"{x / 1e3:.1f} kpps"
    return f"{x:.0f} pps"


def _mbps(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e3:.2f} Gbit/s" if x >= 1e3 else f"{x:.1f} Mbit/s"


def _us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e3:.1f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


class _Notes:
    """Numbered notes under a table, each said once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> str:
        if text not in self.lines:
            self.lines.append(text)
        return f"[{self.lines.index(text) + 1}]"

    def render(self) -> list[str]:
        return [f"  [{i + 1}] {t}" for i, t in enumerate(self.lines)]


_BOUND_SET_BY = {
    "at_medium_max": "the medium's max",
    "sender_limited": "sender-limited",
    "at_max_rate": "--max-rate",
}
"""What set a figure that is only a lower bound (`BOUNDED_STATUSES`), as its table cell says."""


def _below(fig: dict[str, Any]) -> str:
    """Runs that found a limit under a figure the setup bounded: the spread, said, not hidden."""
    below = fig.get("runs_below_pps")
    if not below:
        return ""
    n, runs = below["n"], fig.get("runs", "?")
    at = pps(below["max"]) if n == 1 else f"{pps(below['min'])}-{pps(below['max'])}"
    return (
        f"; {n} of {runs} run{'s' if runs != 1 else ''} lost packets lower down (highest "
        f"pass {at}): a stall of the machine, or a reflector that is not always this fast"
    )


def _why(fig: dict[str, Any], label: str, what: str, medium: str = "the medium") -> str:
    """A figure that is not the reflector's, in words."""
    status, limit = fig["status"], fig.get("setup_limit_pps")
    where = f"size {label}, {what}"
    if status == "at_medium_max":
        # One note for both criteria when both passed at the cap.
        fps = f"{limit:,.0f} fps" if limit else "its limit"
        return (
            f"size {label}: the reflector passed at the medium's maximum frame rate ({fps}, "
            f"the most {medium} carries of these frames, RFC 2544 Appendix A): the "
            "reflector's own limit may be higher"
        )
    if status == "sender_limited":
        bound = fig.get("lower_bound_pps")
        passed = f"; it passed at up to {pps(bound)}" if bound else ""
        held = f"; our sender never held {pps(limit)}" if limit else ""
        best = "in the runs that went highest, " if fig.get("runs_below_pps") else ""
        return (
            f"{where}: {best}the reflector lost nothing at any rate our sender could hold{passed}"
            f"{held}; the reflector's own limit is higher and this setup cannot measure it "
            f"(try --sender-cores on a machine with more cores, or --sender c){_below(fig)}"
        )
    if status == "at_max_rate":
        return f"{where}: nothing lost up to --max-rate; the reflector's limit is higher" + _below(
            fig
        )
    if status == "none":
        return f"{where}: packets were lost even at the lowest rate searched (--min-rate)"
    if status == "disturbed":
        return (
            f"{where}: packets were lost down to {pps(limit)}, but only while other work had "
            "the CPU (see --raw for each trial's reason): run it again on a quiet machine"
        )
    if status == "unverifiable":
        return (
            f"{where}: no trial could be verified: our sender could not hold even "
            f"{pps(limit)} on this machine (see --raw for each trial's reason)"
        )
    return f"{where}: not measured (the run ended first)"


def _rate_cell(
    fig: dict[str, Any] | None, label: str, what: str, notes: _Notes, medium: str = "the medium"
) -> str:
    if fig is None:
        return "-"
    if fig["pps"] is None:
        note = notes.add(_why(fig, label, what, medium))
        # A bound is the highest rate the reflector passed, so it is shown, as ">=" with what
        # set it: a reader then has a number from every run, never one the setup made up.
        bound = fig.get("lower_bound_pps")
        set_by = _BOUND_SET_BY.get(fig["status"])
        if set_by and bound:
            cell = f">= {pps(bound)}, {set_by} {note}"
        else:
            cell = f"{fig['status'].replace('_', '-')} {note}"
        if fig["status"] == "disturbed":
            return cell
        return cell + _disturbed_mark(fig, f"size {label}", notes)
    s = fig["pps"]
    if fig.get("figure_pps") is None:  # a report saved before the headline was the best pass
        cell = f"{pps(s['median'])} ({pps(s['min'])}-{pps(s['max'])})"
    elif s["n"] > 1:
        cell = f"{pps(fig['figure_pps'])} (median {pps(s['median'])}, min {pps(s['min'])})"
    else:
        cell = pps(fig["figure_pps"])
    if fig["status"] == "partial":
        cell += f", {fig['runs_found']} of {fig['runs']} runs"
    return cell + _disturbed_mark(fig, f"size {label}", notes)


def _disturbed_mark(part: dict[str, Any], where: str | None, notes: _Notes) -> str:
    """`` *[n]`` when a figure (`where` says which, with the reason) or a latency point (one
    note for all) was measured beside other work, else nothing."""
    if not part.get("disturbed"):
        return ""
    if where is None:
        return " *" + notes.add(
            "* latency measured beside other work (a trial summarised ran while other "
            "processes had our cores, or while the reflector waited for its core): "
            "its delays may include those waits; the JSON's latency[].disturbance says why"
        )
    why = part.get("disturbance") or "other processes had the CPU"
    return " *" + notes.add(f"* {where}: measured beside other work, may be low: {why}")


def _bits_cell(fig: dict[str, Any] | None) -> str:
    if not fig or fig.get("l1_mbps") is None:
        return "-"
    return " / ".join(_mbps(bits_at_headline(fig, k)) for k in ("mbps", "l2_mbps", "l1_mbps"))


def _throughput(t: dict[str, Any], settings: dict[str, Any], notes: _Notes) -> list[str]:
    tol = settings["loss_tolerance_pct"]
    medium = MEDIA.get(settings.get("medium") or "", ("the medium", 0))[0]
    rows = []
    for size in t.get("sizes") or []:
        tp, label = size["throughput"], size["size"]
        zero, tolerant = tp.get("zero_loss"), tp.get("tolerant")
        cpu = size.get("reflector_cpu_us_per_packet")
        rows.append(
            [
                label,
                f"{size['mean_octets']:.0f}",
                pps(size.get("sender_capacity_pps")),
                _rate_cell(zero, label, "zero loss", notes, medium),
                _bits_cell(zero),
                _rate_cell(tolerant, label, f"<= {tol:g} % loss", notes, medium),
                "-" if cpu is None else f"{cpu['median']:.2f}",
            ]
        )
    headers = [
        "size",
        "octets",
        "sender max",
        "zero-loss rate: highest pass (over runs)",
        "= payload / L2 / L1 bit rate",
        f"<= {tol:g} % loss",
        "reflector CPU µs/pkt",
    ]
    return [table(headers, rows)]


def _stat(summary: dict[str, Any], metric: str, stat: str) -> float | None:
    dist = summary.get(metric)
    if not dist or not dist.get(stat):
        return None
    return float(dist[stat]["median"])


def _latency_row(size: dict[str, Any], point: dict[str, Any], notes: _Notes) -> list[str]:
    summary = point.get("summary") or {}
    loss = point.get("loss_pct")
    loss_cell = "-" if loss is None else f"{loss['median']:.2f}"
    if point.get("lossy"):
        loss_cell += " " + notes.add(
            f"! loss over {LOSSY_LATENCY_PCT:g} % at this load: its delays describe an "
            "overloaded path, not the reflector's latency"
        )
    fwd, bwd = _stat(summary, "forward", "median"), _stat(summary, "backward", "median")
    used = str(point.get("trials_used", 0)) + _disturbed_mark(point, None, notes)
    if not point.get("sender_clean", True):
        used += " " + notes.add(
            "no trial at this load was held cleanly by our sender (late packets, stalls): "
            "these delays include its catch-up bursts and are higher than the reflector's"
        )
    elif not point.get("trials_used") and point["trials"]:
        used += " " + notes.add("our sender could not offer this load in any trial")
    return [
        size["size"],
        f"{point['fraction_pct']:g} %",
        pps(point["offered_pps"]),
        _us(_stat(summary, "rtt", "median")),
        _us(_stat(summary, "rtt", "p99")),
        _us(_stat(summary, "rtt", "max")),
        f"{_us(fwd)} / {_us(bwd)}" if point.get("clocks_synced") else "unsynced",
        _us(_stat(summary, "residence", "median")),
        _us(_stat(summary, "residence", "p99")),
        _us(_stat(summary, "ipdv", "p99")),
        loss_cell,
        used,
    ]


def _latency(t: dict[str, Any], notes: _Notes) -> list[str]:
    rows = [
        _latency_row(size, point, notes)
        for size in t.get("sizes") or []
        for point in size["latency"]
    ]
    if not rows:
        return []
    headers = [
        "size",
        "load",
        "offered",
        "RTT p50 µs",
        "RTT p99 µs",
        "RTT max µs",
        "fwd / bwd p50 µs",
        "residence p50 µs",
        "residence p99 µs",
        "IPDV p99 µs",
        "loss %",
        "trials",
    ]
    return [
        "",
        "latency, medians over trials (load: % of the zero-loss rate found):",
        table(headers, rows),
    ]


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _kernel_stamps(t: dict[str, Any]) -> list[str]:
    """Per latency point, the send-time error and the RTT from the kernel's transmit stamps
    (medians over its trials; `metrics.kernel_stamps`), or why there are none, in words."""
    rows: list[list[str]] = []
    why: set[str] = set()
    for size in t.get("sizes") or []:
        for point in size["latency"]:
            stamps = [tr["kernel_stamps"] for tr in point["trials"] if tr.get("kernel_stamps")]
            why.update(
                tr["kernel_stamps_note"] for tr in point["trials"] if tr.get("kernel_stamps_note")
            )
            stamps = [k for k in stamps if k["send_error"] is not None]
            if not stamps:
                continue

            def med(key: str, stat: str, ks: list[dict[str, Any]] = stamps) -> str:
                return _us(_median([k[key][stat] for k in ks if k[key] is not None]))

            rows.append(
                [
                    size["size"],
                    f"{point['fraction_pct']:g} %",
                    med("send_error", "median"),
                    med("send_error", "p99"),
                    _us(max(k["send_error"]["max"] for k in stamps)),
                    med("rtt_kernel", "median"),
                    med("rtt_written", "median"),
                    f"{sum(k['stamped'] for k in stamps):,} / {sum(k['sent'] for k in stamps):,}",
                ]
            )
            why.update(k["missing_note"] for k in stamps if k["missing_note"])
    out: list[str] = []
    if rows:
        headers = [
            "size",
            "load",
            "send err p50 µs",
            "send err p99 µs",
            "send err max µs",
            "kernel RTT p50 µs",
            "written RTT p50 µs",
            "stamped / sent",
        ]
        out += [
            "",
            "send-time error (kernel transmit stamp − T1 written) and RTT from kernel stamps at "
            "both ends, medians over trials:",
            table(headers, rows),
        ]
    out += [f"   kernel stamps: {reason}" for reason in sorted(why)]
    return out


def _target_header(t: dict[str, Any], doc: dict[str, Any]) -> str:
    refl = t.get("reflector") or {}
    sender = (doc.get("conditions") or {}).get("sender") or {}
    if t.get("error") and not refl.get("pid") and t.get("kind") in ("local", "c", "command"):
        return f"== {t['name']}: not started"
    impl = refl.get("implementation") or "implementation unknown"
    fmt = "STAMP" if t.get("stamp") else "TWAMP"
    cpu = refl.get("cpu")
    pin = f", reflector on cpu {cpu}" if cpu is not None else ""
    cpus = [c for c in sender.get("cpus") or [sender.get("cpu")] if c is not None]
    spin = f" on cpu {','.join(map(str, cpus))}" if cpus else ""
    threads = len(sender.get("cpus") or [None])
    many = f" x{threads} threads" if threads > 1 else ""
    return (
        f"== {t['name']}: {t.get('kind', '?')} reflector ({impl}) at {t.get('address') or '?'}, "
        f"{fmt} {t.get('mode') or '?'}{pin}; sender {sender.get('implementation', '?')}"
        f"{many}{spin}"
    )


def _sender_note(t: dict[str, Any]) -> list[str]:
    trials = [
        trial
        for size in t.get("sizes") or []
        for run in size["throughput"]["runs"]
        for trial in run["trials"]
    ]
    out = []
    limited = sum(1 for tr in trials if tr["sender_limited"])
    if limited:
        out.append(
            f"  {limited} of {len(trials)} throughput trials were not held cleanly by our "
            "sender (stalls, late packets, own drops); those were repeated and never counted "
            "as the reflector's failures (--raw shows each reason)"
        )
    disturbed = [tr for tr in trials if tr.get("disturbed")]
    if disturbed:
        lossy = sum(1 for tr in disturbed if lost_to_a_disturbance(tr) and tr["offered"])
        out.append(
            f"  {len(disturbed)} of {len(trials)} throughput trials ran beside other work "
            f"(other processes on our cores, or the reflector waiting for its core); {lossy} "
            "of them lost packets the way a reflector short of CPU does (late, dropped in its "
            "socket buffer, or the schedule's tail unanswered): those were repeated and never "
            "counted as the reflector's failures"
        )
    return out


def _target(t: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    out = ["", _target_header(t, doc)]
    if t.get("error"):
        out.append(f"   error: {t['error']}")
    if t.get("fixed_rate"):
        out += _fixed(t["fixed_rate"])
    if not t.get("sizes"):
        return out
    notes = _Notes()
    out += _throughput(t, doc["settings"], notes)
    out += _latency(t, notes)
    out += _kernel_stamps(t)
    out += notes.render()
    out += _sender_note(t)
    return out


def _fixed(f: dict[str, Any]) -> list[str]:
    total = f.get("total")
    if not total:
        return ["   fixed rate: no interval completed"]
    rtt = total.get("rtt_ns") or {}
    loss = total["loss_pct"]
    return [
        f"   fixed rate {pps(f['rate_pps'])} for {f['duration_s']:g} s, size {f['size']}: "
        f"sent {total['sent']:,}, received {total['received']:,}, "
        f"loss {'-' if loss is None else f'{loss:.3f}'} %, "
        f"RTT p50 {_us(rtt.get('median'))} µs, p99 {_us(rtt.get('p99'))} µs, "
        f"max {_us(rtt.get('max'))} µs; "
        f"{total['intervals_sender_limited']} interval(s) not held by our sender"
    ]


def _header(doc: dict[str, Any]) -> list[str]:
    s = doc["settings"]
    if doc.get("command") == "fixed_rate":
        return [
            f"twamp-bench {doc['version']}, fixed-rate mode (no search): RTT is the round trip "
            "without the reflector's residence; L1 bit rates count Ethernet frames with "
            "preamble and gap"
        ]
    out = [
        f"twamp-bench {doc['version']}, profile {s.get('profile', 'quick')}: "
        f"{s['trials']} search run{'s' if s['trials'] != 1 else ''} per size (figures: "
        "the highest rate that passed verification in any run, RFC 2544 §26.1, with the median "
        f"and min over runs), {s['trial_duration_s']:g} s per trial, loss tolerance "
        f"{s['loss_tolerance_pct']:g} %; sizes are UDP payload octets; bit rates count "
        "payload, and Ethernet frames at L2 (+ 46 octets IPv4, 66 IPv6) and L1 (+ 20 more)"
    ]
    if s.get("medium"):
        out.append(
            f"each size's search is capped at the maximum frame rate of {MEDIA[s['medium']][0]} "
            "(--medium, RFC 2544 Appendix A)"
        )
    deviations = s.get("rfc2544_deviations") or []
    if deviations:
        hint = " (use --rfc2544 for them)" if s.get("profile", "quick") == "quick" else ""
        out.append(f"deviates from RFC 2544's trial rules{hint}: " + "; ".join(deviations))
    return out


def _comparison_cell(e: dict[str, Any] | None) -> str:
    if e is None:
        return "-"
    if e["zero_loss_pps"] is None:
        bound = e.get("zero_loss_lower_bound_pps")
        if e["zero_loss_status"] in BOUNDED_STATUSES and bound is not None:
            ratio = e.get("zero_loss_ratio")
            r = "" if ratio is None else f" (>= {ratio:.2f}x)"
            return f">= {pps(bound)}, {e['zero_loss_status'].replace('_', '-')}{r}"
        return str(e["zero_loss_status"]).replace("_", "-")
    ratio = e["zero_loss_ratio"]
    kind = e.get("zero_loss_ratio_kind", "exact")
    mark = {"exact": "", "at_most": "<= ", "at_least": ">= "}.get(kind, "")
    r = "" if ratio is None else f" ({mark}{ratio:.2f}x)"
    return f"{pps(e['zero_loss_pps'])}{r}"


def _comparison(doc: dict[str, Any]) -> list[str]:
    comparison = doc.get("comparison")
    if not comparison:
        return []
    names = [e["target"] for e in comparison[0]["entries"]]
    rows = []
    for c in comparison:
        by_name = {e["target"]: e for e in c["entries"]}
        rows.append([c["size"], *(_comparison_cell(by_name.get(n)) for n in names)])
    return [
        "",
        f"comparison: zero-loss rate (highest pass), ratio to {comparison[0]['baseline']}:",
        table(["size", *names], rows),
    ]


def format_tables(doc: dict[str, Any]) -> str:
    """The human report: a header, per target its tables and notes, the comparison."""
    out = _header(doc)
    for t in doc["targets"]:
        out += _target(t, doc)
    out += _comparison(doc)
    if doc.get("interrupted"):
        out += ["", "interrupted: the results above are partial"]
    return "\n".join(out)
