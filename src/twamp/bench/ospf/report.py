"""The report of an RFC 4061 run: one table, the verdicts in words, JSON and CSV.

JSON document (``--json``; schema ``twamp-bench-ospf/1``)
-------------------------------------------------------
``schema``        ``"twamp-bench-ospf/1"``
``conditions``    what the run ran on: ``command_line``, ``kernel``, ``nproc``, ``pinning``
                  (``{"dut": [cpus], "tester": [cpus]}``), ``dut`` (``kind``, ``version``,
                  ``profile``, ``rendered`` config, ``quirks``), ``topologies``, ``trials``...
``timers``        name -> ``{name, seconds, origin, text}``: the timers the verdicts used
                  (``origin``: ``profile:<key>``, ``quirk:<name>`` or ``hello`` for the dead
                  interval the DUT announces)
``procedures``    one entry per procedure and LSA count:
    ``id`` (``"5.1"``...), ``title``, ``topology`` (T1-T4), ``start_event``, ``end_event``,
    ``observed_at``, ``lsas``, ``trials_total``, ``trials_valid``, ``shared_ack_trials``,
    ``invalid`` (``[{trial, reason}]``), ``failed`` (reason or null),
    ``figure_ms`` (``{min, median, p90, max, n}`` of the RFC's figure, or null),
    ``parts_ms`` / ``proxies_ms`` (name -> the same statistics; ``proxy_text`` says what each
    proxy is), ``counts`` (LSAs, LSUs, octets, rates: ``{min, median, max}``),
    ``dataplane_note`` (why the probe shows no loss or did not run, in words),
    ``dataplane`` (``window_ms``, ``loss_time_ms``, ``restored_after_ms`` statistics,
    ``lost_packets``, ``not_restored``, ``rate_pps``; ``late`` trials restored only after the
    RFC's procedure had ended, ``restored_after_end_ms`` how long after, ``evidence`` one
    sentence per late or unrestored trial: route install, the DUT's adjacency state;
    ``paths`` the DUT's next hop to the probe's source before -> after (6.7/6.8);
    ``rerouted_without_loss`` trials whose path moved with no packet lost; null without a
    probe),
    ``verdict`` (``{kind, text, timer}``; kind one of ``measured``, ``timer-dominated``,
    ``includes-timer``, ``meaningless``, ``below-precision``, ``failed``; ``timer`` the timer
    named, also on a ``measured`` verdict too few trials could not clear of that timer's phase),
    ``precision`` (in words), ``trials`` (every attempt: ``value_ns``, ``parts_ns``,
    ``proxies_ns``, ``valid``, ``reason``, ``shared_ack``, ``dataplane``...)
``scaling``       per LSA procedure and count: ``figure_median_ms``, ``per_lsa_us``,
                  ``fib_last_median_ms``, ``fib_rate_routes_s``

CSV (``--csv``): one row per procedure and LSA count, `CSV_HEADER` columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ["BEST_PROXIES", "CSV_HEADER", "format_report", "write_csv"]

BEST_PROXIES: Mapping[str, tuple[str, ...]] = {
    "5.1": ("flood_to_collector", "fib", "dup_ack"),
    "5.2": ("fib_last",),
    "5.3": ("spf_whitebox", "fib", "dup_ack"),
    "6.1": ("full_at_generator", "dut_router_lsa_at_collector", "fib_last"),
    "6.2": ("full_at_generator", "dut_router_lsa_at_collector", "fib_last"),
    "6.3": ("full_at_generator", "dut_router_lsa_at_collector", "fib_last"),
    "6.4": ("minus_dead_interval",),
    "6.5": ("minus_dead_interval",),
    "6.6": (),
    "6.7": ("after_kernel_notice", "fib"),
    "6.8": ("minus_dead_interval", "fib"),
}
"""The proxy shown in the table beside each figure, best first (all are in the notes)."""

CSV_HEADER = (
    "id", "title", "lsas", "trials_valid", "trials_total", "median_ms", "min_ms", "p90_ms",
    "max_ms", "verdict", "timer", "timer_s", "proxy", "proxy_median_ms", "dp_window_median_ms",
    "dp_lost_median", "dp_restored_after_median_ms", "per_lsa_us", "fib_rate_routes_s",
)  # fmt: skip


def fmt_ms(x: float | None) -> str:
    """Milliseconds with the digits that mean something at our stamps' precision."""
    if x is None:
        return "-"
    a = abs(x)
    if a < 10:
        return f"{x:.3f}"
    if a < 1000:
        return f"{x:.1f}"
    return f"{x:.0f}"


def best_proxy(entry: Mapping[str, Any]) -> tuple[str, dict[str, float]] | None:
    for name in BEST_PROXIES.get(entry["id"], ()):
        st = entry["proxies_ms"].get(name)
        if st:
            return name, st
    return None


_KIND_SHORT = {
    "measured": "measured",
    "timer-dominated": "TIMER",
    "includes-timer": "incl. timer",
    "meaningless": "MEANINGLESS",
    "below-precision": "< precision",
    "failed": "FAILED",
}


def _verdict_cell(entry: Mapping[str, Any]) -> str:
    v = entry["verdict"]
    short = str(_KIND_SHORT.get(v["kind"], v["kind"]))
    t = v.get("timer")
    if t and v["kind"] == "measured":
        return f"measured? ({t['name']} phase)"  # too few trials to rule the timer out
    if t:
        secs = t["seconds"]
        short += f": {t['name']} {secs:g} s" if secs >= 1 else f": {t['name']} {secs * 1e3:g} ms"
    return short


def _dp_cell(entry: Mapping[str, Any]) -> str:
    dp = entry.get("dataplane")
    if not dp:
        return "no probe (see notes)" if entry.get("dataplane_note") else "no probe data"
    w = dp.get("window_ms")
    lost = dp.get("lost_packets") or {}
    rate = dp.get("rate_pps") or 0
    quick = ""
    if dp.get("rerouted_without_loss"):
        interval = f"{1e3 / rate:g} ms" if rate else "one probe interval"
        quick = f"{dp['rerouted_without_loss']} rerouted within {interval} (no packet lost)"
    if not lost.get("max"):
        if quick:
            return quick
        return "no loss (off path)" if entry.get("dataplane_note") else "no loss"
    text = f"{fmt_ms(w['median'])} (max {fmt_ms(w['max'])})" if w else "?"
    text += f", {lost['median']:g}-{lost['max']:g} pkts"
    if dp.get("late"):
        late = dp.get("restored_after_end_ms") or {}
        text += f", {dp['late']} restored after the procedure's end"
        if late.get("max") is not None:
            text += f" (+{fmt_ms(late['max'])} ms max)"
    if dp.get("not_restored"):
        text += f", {dp['not_restored']} not restored"
    if quick:
        text += f", {quick}"
    return text


def _rows(doc: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for e in doc["procedures"]:
        fig = e.get("figure_ms")
        prox = best_proxy(e)
        rows.append(
            [
                e["id"],
                e["title"],
                str(e["lsas"] or "-"),
                f"{e['trials_valid']}/{e['trials_total']}",
                fmt_ms(fig["median"]) if fig else "-",
                f"{fmt_ms(fig['min'])}/{fmt_ms(fig['p90'])}/{fmt_ms(fig['max'])}" if fig else "-",
                _verdict_cell(e),
                f"{prox[0].replace('_', ' ')} {fmt_ms(prox[1]['median'])}" if prox else "-",
                _dp_cell(e),
            ]
        )
    return rows


_HEAD = [
    "§", "procedure", "LSAs", "valid", "median ms", "min/p90/max ms", "verdict",
    "best proxy (median ms)", "data-plane loss window ms",
]  # fmt: skip


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [_HEAD, *rows]) for i in range(len(_HEAD))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_HEAD, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _header(doc: Mapping[str, Any]) -> list[str]:
    c = doc.get("conditions") or {}
    dut = c.get("dut") or {}
    profile = dut.get("profile") or {}
    name = profile.get("name") if isinstance(profile, Mapping) else None
    kind, version = str(dut.get("kind") or "?"), str(dut.get("version") or "")
    if version.lower().startswith(kind.lower()):
        version = version[len(kind) :].strip().removeprefix("version ").strip()
    lines = [
        f"RFC 4061 OSPF convergence: DUT {kind} {version}"
        f"{f', timer profile {name}' if name else ''}".rstrip()
    ]
    pin = c.get("pinning") or {}
    pin_text = (
        f"DUT on CPUs {pin.get('dut')}, tester on CPUs {pin.get('tester')}"
        if pin
        else "no CPU pinning recorded"
    )
    lines.append(f"kernel {c.get('kernel') or '?'}, {c.get('nproc') or '?'} CPUs, {pin_text}")
    if c.get("command_line"):
        lines.append(f"command: {c['command_line']}")
    per = (c.get("settings") or {}).get("trials_per_procedure") or {}
    if per:
        by_count: dict[int, list[str]] = {}
        for proc, n in per.items():
            by_count.setdefault(int(n), []).append(str(proc))
        lines.append(
            "valid trials asked: "
            + "; ".join(f"{n} for {', '.join(ps)}" for n, ps in sorted(by_count.items()))
            + (" (--trials)" if (c.get("settings") or {}).get("trials") else " (defaults)")
        )
    if doc.get("timers"):
        lines.append(
            "timers: "
            + ", ".join(
                f"{t['name']} {t['seconds']:g} s ({timer_origin(t['origin'], kind)})"
                for t in doc["timers"].values()
            )
        )
    return lines


def timer_origin(origin: str, kind: str) -> str:
    """Where a timer's value came from, in words: heard in the DUT's Hellos, the `--timers`
    profile (for an external router an assumption: the tool cannot read its configuration),
    or the adapter's record of a daemon's fixed behaviour."""
    if origin == "hello":
        return "observed in the DUT's Hellos"
    if origin.startswith("profile:"):
        key = origin.removeprefix("profile:")
        if kind == "external":
            return f"--timers profile {key}, assumed: not observable on an external router"
        return f"--timers profile {key}"
    if origin.startswith("quirk:"):
        return f"{kind} behaviour {origin.removeprefix('quirk:')}"
    return origin or "unknown"


def _notes(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for e in doc["procedures"]:
        n = f" at {e['lsas']} LSAs" if e["lsas"] > 1 else ""
        out.append(f"{e['id']} {e['title']}{n}: {e['verdict']['text']}.")
        out.append(
            f"    RFC: {e['start_event']} -> {e['end_event']} (observed at {e['observed_at']})."
        )
        for name, st in e["proxies_ms"].items():
            if st:
                what = e["proxy_text"].get(name, name.replace("_", " "))
                out.append(
                    f"    proxy {what}: median {fmt_ms(st['median'])} ms "
                    f"(min {fmt_ms(st['min'])}, max {fmt_ms(st['max'])}, n {st['n']})"
                )
        parts = e.get("parts_ms") or {}
        if parts.get("kernel_notice"):
            out.append(
                "    the DUT's kernel reported the carrier loss a median "
                f"{fmt_ms(parts['kernel_notice']['median'])} ms (max "
                f"{fmt_ms(parts['kernel_notice']['max'])}) after it (Linux batches carrier "
                "changes machine-wide, at most once a second): the figure and the loss window "
                "include that wait, the proxy 'from the DUT kernel's carrier-loss notice' does not"
            )
        if parts.get("send_skew") and parts.get("rfc_uncorrected"):
            out.append(
                "    reference: the last LSA at the collector straight from the generator (RFC), "
                f"taken back by our own send skew between the two links (median "
                f"{fmt_ms(parts['send_skew']['median'])} ms); uncorrected figure median "
                f"{fmt_ms(parts['rfc_uncorrected']['median'])} ms"
            )
        dp = e.get("dataplane")
        if dp and dp.get("restored_after_ms"):
            st = dp["restored_after_ms"]
            out.append(
                f"    data plane: traffic restored {fmt_ms(st['median'])} ms after the start "
                f"event (median), {dp.get('rate_pps') or '?'} pps offered"
            )
        if e.get("deviation"):
            out.append(f"    deviation: {e['deviation']}.")
        if e.get("whitebox_note"):
            out.append(f"    {e['whitebox_note']}.")
        if e.get("dataplane_note"):
            out.append(f"    data plane: {e['dataplane_note']}")
        for path in (dp or {}).get("paths") or ():
            out.append(
                f"    data plane path: the DUT's next hop to the probe's source {path} "
                "(before the trigger -> after the reroute, `ip route get`)"
            )
        evidence = (dp or {}).get("evidence") or ()
        for words in evidence:
            out.append(f"    data plane, one trial: {words}")
        stall = (doc.get("timers") or {}).get("retransmit") or {}
        if any("was Loading" in w for w in evidence) and "lsr-stall" in str(stall.get("origin")):
            out.append(
                "    data plane: a DUT adjacency left in Loading waits for its next LS request, "
                f"which this DUT holds for its retransmit interval ({stall.get('seconds'):g} s, "
                "the LSR stall): the DUT's timer, not the probe path"
            )
        reasons = sorted({i["reason"] for i in e["invalid"]})
        if reasons:
            out.append(f"    {len(e['invalid'])} invalid trial(s), repeated: " + "; ".join(reasons))
    return out


def _scaling(doc: Mapping[str, Any]) -> list[str]:
    rows = doc.get("scaling") or []
    if len({r["lsas"] for r in rows}) < 2:
        return []
    out = ["", "Scaling (median over trials):"]
    for r in rows:
        rate = r.get("fib_rate_routes_s")
        span = r.get("span_median_ms")
        line = (
            f"  {r['id']} {r['lsas']:>6} LSAs: figure {fmt_ms(r['figure_median_ms'])} ms"
            + (f", first send to last flood {fmt_ms(span)} ms" if span else "")
            + f", {r['per_lsa_us']:.2f} µs per LSA"
            + (f", FIB {rate:,.0f} routes/s" if rate else "")
        )
        if r.get("sender_bound"):
            send = r.get("send_rate_lsa_s")
            line += (
                " (the DUT kept pace with our sender"
                + (f" at {send:,.0f} LSAs/s" if send else "")
                + ": an upper bound on its cost)"
            )
        out.append(line)
    return out


def format_report(doc: Mapping[str, Any]) -> str:
    """The table a person reads: header with conditions, one row per figure, notes."""
    parts = [*_header(doc), "", _table(_rows(doc)), *_scaling(doc), "", *_notes(doc)]
    parts.append("")
    parts.append(
        "Figures are from kernel receive/transmit stamps on one CLOCK_REALTIME; on a shared "
        "machine they carry CPU-contention noise of 0.1-1 ms. 'TIMER' and 'incl. timer' mean "
        "the RFC's figure measures a DUT timer: read the proxy beside it."
    )
    return "\n".join(parts)


def write_csv(doc: Mapping[str, Any], out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    scaling = {(r["id"], r["lsas"]): r for r in doc.get("scaling") or []}
    for e in doc["procedures"]:
        fig = e.get("figure_ms") or {}
        t = e["verdict"].get("timer") or {}
        prox = best_proxy(e)
        dp = e.get("dataplane") or {}
        sc = scaling.get((e["id"], e["lsas"]), {})
        w.writerow(
            [
                e["id"], e["title"], e["lsas"], e["trials_valid"], e["trials_total"],
                fig.get("median"), fig.get("min"), fig.get("p90"), fig.get("max"),
                e["verdict"]["kind"], t.get("name"), t.get("seconds"),
                prox[0] if prox else None, prox[1]["median"] if prox else None,
                (dp.get("window_ms") or {}).get("median"),
                (dp.get("lost_packets") or {}).get("median"),
                (dp.get("restored_after_ms") or {}).get("median"),
                sc.get("per_lsa_us"), sc.get("fib_rate_routes_s"),
            ]
        )  # fmt: skip


def csv_text(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    write_csv(doc, buf)
    return buf.getvalue()
