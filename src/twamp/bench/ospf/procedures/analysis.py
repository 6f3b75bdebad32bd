"""An event log in, the report document out: every figure of every procedure, with its verdict.

`analyse` is what ``twamp-bench ospf`` runs after its drivers and what
``twamp-bench ospf report LOG`` runs on a saved log; the document is the ``--json`` output
(schema in `report`). Pure: a list of events, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ....ospf.logformat import Event
from .figures import PROCEDURES, TrialResult, evaluate
from .trials import LogIndex
from .verdicts import PRECISION_NS, Timer, dut_timers, judge, stats

__all__ = ["SCHEMA", "analyse", "precision_text"]

SCHEMA = "twamp-bench-ospf/1"

_SUBTRACTION = {"5.1": "new LSA", "5.3": "trigger LSA"}


def precision_text(proc: str, nproc: int | None) -> str:
    """How exactly the figure is stamped, in words (issue 9, Honesty)."""
    cpus = f"{nproc} CPUs" if nproc else "CPUs"
    base = (
        f"kernel receive stamps and kernel software transmit stamps, about "
        f"{PRECISION_NS // 1000} µs apart at worst, plus CPU contention ({cpus} shared by the "
        f"DUT, the tester and anything else running)"
    )
    base += (
        "; FIB figures are when our netlink watcher received the notification: it shares the "
        "tester's CPU and lags while our speaker floods, so FIB times are upper bounds and FIB "
        "rates lower bounds"
    )
    if proc in ("6.1", "6.7"):
        return (
            "start: a user-space stamp right before the netlink request (the carrier change "
            "follows within about a millisecond); end: " + base
        )
    return base


def _conditions(index: LogIndex) -> dict[str, Any]:
    cond: dict[str, Any] = dict(index.conditions)
    start = index.first("lab", "log-start")
    if start is not None:
        cond.setdefault("kernel", start.get("kernel"))
        cond.setdefault("nproc", start.get("nproc"))
        cond.setdefault("host", start.get("host"))
    cfg = index.first("dut", "config")
    if cfg is not None:
        cond.setdefault(
            "dut",
            {k: cfg.get(k) for k in ("kind", "version", "profile", "rendered", "quirks")},
        )
    topo = [e.fields for e in index.by_source("lab") if e.event == "topology"]
    if topo:
        cond.setdefault("topologies", [dict(t) for t in topo])
    return cond


def _spread_of(results: Sequence[TrialResult], attr: str) -> dict[str, Any]:
    names: dict[str, list[float]] = defaultdict(list)
    for r in results:
        for k, v in getattr(r, attr).items():
            if isinstance(v, int | float):
                names[k].append(v)
    return {k: stats(v) for k, v in sorted(names.items())}


def _dataplane(results: Sequence[TrialResult]) -> dict[str, Any] | None:
    dps = [r.dataplane for r in results if r.dataplane is not None]
    if not dps:
        return None

    def col(name: str) -> list[float]:
        return [d[name] for d in dps if d.get(name) is not None]

    lost = col("lost")
    return {
        "trials": len(dps),
        "window_ms": stats(col("window_ns")),
        "loss_time_ms": stats(col("loss_time_ns")),
        "restored_after_ms": stats(col("restored_after_ns")),
        "lost_packets": None
        if not lost
        else {"min": min(lost), "median": float(sorted(lost)[len(lost) // 2]), "max": max(lost)},
        "not_restored": sum(1 for d in dps if not d.get("restored")),
        "restored_after_end_ms": stats(col("restored_after_end_ns")),
        "late": sum(1 for d in dps if d.get("restored_after_end_ns") is not None),
        # the DUT moved the probe's path (route-get before/after) and not one packet was lost:
        # its reroute took less than one probe interval, not "no effect"
        "rerouted_without_loss": sum(
            1 for d in dps if not d.get("lost") and len(set(d.get("path") or ())) > 1
        ),
        "evidence": [_dp_words(d) for d in dps if _dp_words(d)],
        "paths": sorted({" -> ".join(d["path"]) for d in dps if d.get("path")}),
        "rate_pps": dps[0].get("rate_pps"),
    }


def _dp_words(d: Mapping[str, Any]) -> str | None:
    """One trial's late or missing restoration in words, with the evidence from the log."""
    if d.get("restored_after_end_ns") is None and d.get("restored", True):
        return None
    parts = []
    if d.get("restored_after_end_ns") is not None:
        parts.append(
            f"restored {d['restored_after_end_ns'] / 1e6:.1f} ms after the procedure's end"
        )
    else:
        wait = d.get("wait_s")
        parts.append(
            "not restored"
            + (f" within {wait:g} s after the procedure's end" if wait is not None else "")
        )
    stuck = d.get("dut_adjacency_at_end") or {}
    for nbr, state in sorted(stuck.items()):
        text = f"the DUT's adjacency with {nbr} was {state} at the procedure's end"
        full = (d.get("dut_full_after_ns") or {}).get(nbr)
        if full is not None:
            text += f" (Full at +{full / 1e6:.0f} ms, its own log)"
        parts.append(text)
    if d.get("route_installed_after_ns") is not None:
        parts.append(
            f"the DUT installed its route to {d.get('route_installed_prefix')} at "
            f"+{d['route_installed_after_ns'] / 1e6:.0f} ms (netlink)"
        )
    else:
        parts.append("the DUT installed no route to the probe's ends within the trial (netlink)")
    return "; ".join(parts)


def _counts(results: Sequence[TrialResult]) -> dict[str, dict[str, float] | None]:
    names: dict[str, list[float]] = defaultdict(list)
    for r in results:
        for k, v in r.counts.items():
            names[k].append(float(v))
    out: dict[str, dict[str, float] | None] = {}
    for k, vals in sorted(names.items()):
        s = sorted(vals)
        out[k] = {"min": s[0], "median": s[len(s) // 2], "max": s[-1]}
    return out


def _entry(
    proc_id: str,
    lsas: int,
    results: Sequence[TrialResult],
    timers: Mapping[str, Timer],
    failed: str | None,
    nproc: int | None,
) -> dict[str, Any]:
    proc = PROCEDURES[proc_id]
    valid = [r for r in results if r.valid and r.value_ns is not None]
    shared = sum(1 for r in valid if r.shared_ack)
    # Trials whose pair shared one LSAck measure the ack timer: left out of the figure unless
    # all of them did (then the verdict is "meaningless" and the numbers are shown as such).
    counted = [r for r in valid if not r.shared_ack] or valid
    values = [int(r.value_ns) for r in counted if r.value_ns is not None]
    verdict = judge(
        proc_timers=proc.timers,
        design_timer=proc.design_timer,
        values_ns=values,
        shared=shared,
        valid=len(valid),
        timers=timers,
        invalid_reasons=[r.reason or "" for r in results if not r.valid],
        failed=failed,
        subtraction=_SUBTRACTION.get(proc_id, ""),
        # BIRD originates its router- and network-LSAs only on its tick (`ospf_disp`); "tick"
        # is among the timers only for BIRD (`verdicts.dut_timers`)
        quantum=timers.get("tick") if proc.ends_on_origination else None,
    )
    return {
        "id": proc.id,
        "title": proc.title,
        "topology": proc.topology,
        "start_event": proc.start,
        "end_event": proc.end,
        "observed_at": proc.observed_at,
        "lsas": lsas,
        "trials_total": len(results),
        "trials_valid": len(valid),
        "shared_ack_trials": shared,
        "invalid": [{"trial": r.trial, "reason": r.reason} for r in results if not r.valid],
        "failed": failed,
        "figure_ms": stats(values),
        "parts_ms": _spread_of(counted, "parts"),
        "proxies_ms": _spread_of(counted, "proxies"),
        "proxy_text": dict(proc.proxies),
        "counts": _counts(counted),
        "dataplane": _dataplane(counted),
        "dataplane_note": DATAPLANE_NOTES.get(proc.id),
        "verdict": verdict.to_json(),
        "precision": precision_text(proc.id, nproc),
        "trials": [r.to_json() for r in results],
    }


# Why a procedure's data-plane view shows no loss or has no probe at all, in words (issue 9:
# a data-plane figure for every event that changes routes, or the reason there is none). The
# probe runs gen → DUT → collector between two /32s the DUT learns only through OSPF (T1, T4).
DATAPLANE_NOTES: dict[str, str] = {
    "5.1": "the new AS-external-LSA is a 198.18.0.x/32 off the probe path: the stream through "
    "the DUT must not (and should not) notice it",
    "5.2": "no probe: 5.2 runs in T2 for the RFC's generator-collector link, where the DUT's "
    "route to the generator may go through the collector, an emulated router whose namespace "
    "does not forward; the burst's AS-external-LSAs (198.18.3.x-121.x) are off the probe's "
    "/32s in any case",
    "5.3": "the SPF trigger changes the cost of 198.18.254.0/24, not the probe path: the stream "
    "shows whether the SPF run disturbs forwarding",
    "6.3": "no probe: in T2 the DUT's route to the generator goes through the collector, an "
    "emulated router whose namespace does not forward, so the stream would show our lab, not "
    "the DUT",
    "6.4": "no probe: T3 is one broadcast LAN with no network behind the DUT to send through; "
    "the routes that change are the LAN's own (network-LSA), which no stream crosses",
    "6.5": "no probe: T3 is one broadcast LAN with no network behind the DUT to send through",
    "6.6": "no probe: T3 is one broadcast LAN with no network behind the DUT to send through",
}


EXTERNAL_DATAPLANE_NOTE = (
    "no probe: --dut external sends no TWAMP stream through the router (it would need routes "
    "set on your hosts, and this mode changes nothing there)"
)


def _scaling(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """How the DUT's cost grows with the LSA count: time per LSA and FIB install rate."""
    rows = []
    counts: dict[str, set[int]] = defaultdict(set)
    for e in entries:
        counts[e["id"]].add(e["lsas"])
    for e in entries:
        if not PROCEDURES[e["id"]].lsa_procedure or not e["figure_ms"] or not e["lsas"]:
            continue
        if len(counts[e["id"]]) < 2:  # one LSA count: nothing to scale against
            continue
        fib = (e["proxies_ms"].get("fib_last") or {}).get("median")
        rate = (e["counts"].get("fib_rate_routes_s") or {}).get("median")
        rows.append(
            {
                "id": e["id"],
                "lsas": e["lsas"],
                "figure_median_ms": e["figure_ms"]["median"],
                "per_lsa_us": (
                    per["median"] / 1e3
                    if (per := e["counts"].get("per_lsa_ns"))
                    else e["figure_ms"]["median"] * 1e3 / e["lsas"]
                ),
                "span_median_ms": (e["counts"].get("span_ns") or {}).get("median", 0) / 1e6 or None,
                "send_rate_lsa_s": (e["counts"].get("send_rate_lsa_s") or {}).get("median"),
                "sender_bound": bool((e["counts"].get("sender_bound") or {}).get("max")),
                "fib_last_median_ms": fib,
                "fib_rate_routes_s": rate
                if rate is not None
                else (e["lsas"] / (fib / 1e3) if fib else None),
            }
        )
    return rows


def analyse(events: Iterable[Event]) -> dict[str, Any]:
    """The report document of one run (see `report.SCHEMA_DOC` for the fields)."""
    index = LogIndex(events)
    results = [evaluate(t) for t in index.trials]
    timers = dut_timers(index)
    conditions = _conditions(index)
    nproc = conditions.get("nproc")
    groups: dict[tuple[str, int], list[TrialResult]] = defaultdict(list)
    for r in results:
        if r.proc in PROCEDURES:
            groups[(r.proc, r.lsas)].append(r)
    for proc_id, n in index.failed:
        if proc_id in PROCEDURES and not any(
            p == proc_id and (n is None or k == n) for p, k in groups
        ):
            groups[(proc_id, n or 0)] = []

    def failed(p: str, n: int) -> str | None:
        return index.failed.get((p, n)) or index.failed.get((p, None))

    order = list(PROCEDURES)
    entries = [
        _entry(p, n, groups[(p, n)], timers, failed(p, n), nproc)
        for p, n in sorted(groups, key=lambda k: (order.index(k[0]), k[1]))
    ]
    kind = str((conditions.get("dut") or {}).get("kind") or "")
    for e in entries:
        if e["id"] == "5.3":
            e["whitebox_note"] = _whitebox_note(e, kind)
    if kind == "external":
        for e in entries:
            if e["id"] in EXTERNAL_DEVIATIONS:
                e["deviation"] = EXTERNAL_DEVIATIONS[e["id"]]
            if e["verdict"]["kind"] == "measured":
                # "No configured timer explains it" is weaker here: only the Hello and dead
                # intervals are observable; a delayed-ack or SPF timer may still dominate.
                e["verdict"]["text"] += (
                    " (of this router's timers only the Hello and dead intervals are known, "
                    "from its Hellos: a delayed-ack or SPF timer of its own may still dominate)"
                )
        # No probe against an external router: the tool sends its stream only where it built
        # both ends' routes, and on the user's ports it changes no route (issue 8 item 5).
        for e in entries:
            e["dataplane_note"] = EXTERNAL_DATAPLANE_NOTE
    return {
        "schema": SCHEMA,
        "conditions": conditions,
        "timers": {k: t.to_json() for k, t in sorted(timers.items())},
        "procedures": entries,
        "scaling": _scaling(entries),
        "unknown_procedures": sorted({t.proc for t in index.trials} - set(PROCEDURES)),
    }


# What an external router's run does differently from the RFC's method, in words.
EXTERNAL_DEVIATIONS: dict[str, str] = {
    "6.1": "the carrier change is our port's admin state (down, then up); the router sees it "
    "as carrier loss and return on its own port",
    "6.2": "RFC 4061 enables OSPF on the DUT's interface; on an external router the tool can "
    "only start OSPF on its own end: our Hellos stop until the router's dead interval drops "
    "us, then start again, and the start event is the router's first Hello after that",
    "6.7": "the carrier loss is our port's admin state; the new router-LSA is watched for at "
    "the collector (its port is link 2)",
    "6.8": "the new router-LSA is watched for at the collector (its port is link 2)",
}


def _whitebox_note(entry: Mapping[str, Any], kind: str) -> str:
    """RFC 4061 §5.3 allows a white-box SPF figure within one implementation: what this DUT
    gave, or why there is none, in words."""
    st = (entry.get("proxies_ms") or {}).get("spf_whitebox")
    if st:
        prec = ((entry.get("counts") or {}).get("spf_precision_us") or {}).get("max")
        runs = ((entry.get("counts") or {}).get("spf_runs") or {}).get("max")
        return (
            f"white-box SPF time (the DUT's own figure, RFC 4061 §5.3's white-box variant): "
            f"median {st['median'] * 1e3:.0f} µs (min {st['min'] * 1e3:.0f}, max "
            f"{st['max'] * 1e3:.0f}, n {st['n']}), as the daemon reports it"
            + (f" in {prec:g} µs steps" if prec else "")
            + "; it times the SPF calculation alone, not the route install"
            + (
                f"; up to {runs:g} SPF runs in one trial (the last one's is shown)"
                if runs and runs > 1
                else ""
            )
        )
    if kind == "bird":
        return (
            "white-box SPF time: not available: BIRD 2 exposes no SPF duration (no birdc "
            "command reports one, and its 'debug events' trace logs only the start of a "
            "routing table calculation)"
        )
    if kind == "external":
        return "white-box SPF time: not read (the tool has no access to an external router's CLI)"
    if kind == "frr":
        return (
            "white-box SPF time: none of the valid trials had an FRR SPF run that started "
            "after the trigger (or ospfd did not answer 'show ip ospf')"
        )
    return "white-box SPF time: this DUT exposes none"
