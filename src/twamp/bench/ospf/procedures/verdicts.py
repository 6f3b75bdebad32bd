"""Whether an RFC 4061 figure measures the DUT's work or one of its timers, said in words.

Real daemons have timers that swamp what RFC 4061 defines:
FRR acks new LSAs from a 1 s periodic timer, so "newLSAprocTime" is that timer's phase; the
Hello phase spreads adjacency times over a HelloInterval; the dead interval is *part* of the
definition of 6.4, 6.5 and 6.8. A figure is therefore judged, over its valid trials, as

* ``meaningless``: in every trial the two acks of the subtraction pair (5.1, 5.3) came in one
  LSAck packet: the DUT held the duplicate's ack for its delayed-ack timer, so the difference
  is that timer, whatever the DUT's processing took;
* ``includes-timer``: the RFC's own definition includes a protocol timer (the dead interval);
  the figure minus that timer is given as the DUT's part;
* ``timer-dominated``: the DUT issues the end event only when a periodic timer fires and the
  median is below one period (BIRD originates its LSAs on its tick: ``quantum``), or the
  median lies within a tolerance of a configured timer or a small multiple of it, or the
  trials spread over a good part of one timer period (a periodic timer's phase, as the delayed
  ack's 350-1,050 ms);
* ``below-precision``: the figure is smaller than what our stamps resolve on a shared machine;
* ``measured``: none of the above; the figure is the DUT's. With fewer trials than the spread
  rule needs and a figure within a periodic timer's period, it carries that timer and says it
  may be its phase ("measured?" in the table);
* ``failed``: no valid trial (the reasons are listed).

Timers come from the DUT's timer profile and quirks record (`dut`/`config` event) and, for
the dead interval, from the DUT's own Hellos (what it actually runs with).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .trials import LogIndex

__all__ = [
    "PRECISION_NS",
    "TIMER_NAMES",
    "Timer",
    "Verdict",
    "dut_timers",
    "judge",
    "stats",
    "timers_from_config",
]

PRECISION_NS = 50_000
"""What two of our stamps resolve on this kind of machine: 10-50 µs between kernel stamps of
different sockets, more under CPU contention (research §4.3). Figures below it are noise."""

SPREAD_FRACTION = 0.4
"""Trials spread over at least this fraction of a period are taken to sample a timer's phase
(uniform phase: the range of 5 trials falls below 0.4 of the period with probability < 9 %)."""

MIN_SPREAD_TRIALS = 3
"""Fewer valid trials cannot show a periodic timer's phase by their spread."""

PERIODIC = frozenset({"tick", "delayed-ack", "ase", "hello", "work-queue"})
"""Timers that fire on a period of their own, whatever the trigger: a figure ending on one is
its phase at the trigger."""

PHASE_FLOOR_FRACTION = 0.05
"""A figure below this fraction of a periodic timer's period is that timer's phase with a
probability below it (a uniform phase): FRR's 0.8 ms §5.1 beside its 1 s delayed ack is not."""

NEAR_FRACTION = 0.1
NEAR_MIN_NS = 2_000_000
MAX_MULTIPLE = 3

TIMER_NAMES: Mapping[str, str] = {
    "hello": "HelloInterval",
    "dead": "RouterDeadInterval (also the Wait timer on broadcast links)",
    "retransmit": "RxmtInterval",
    "delayed-ack": "delayed-ack timer",
    "spf-delay": "SPF delay",
    "spf-hold": "SPF hold time",
    "min-ls-arrival": "MinLSArrival",
    "min-ls-interval": "MinLSInterval / LSA throttle",
    "tick": "BIRD tick (LSA origination and route calculation)",
    "ase": "FRR's external-route timer",
    "work-queue": "zebra's work-queue hold",
}

# Substrings of a profile or quirk name -> canonical timer (first match wins; order matters:
# "lsa_min_arrival" must not become min-ls-interval).
_ALIASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("dead",), "dead"),
    (("wait",), "dead"),
    (("hello",), "hello"),
    (("retransmit",), "retransmit"),
    (("rxmt",), "retransmit"),
    (("lsr",), "retransmit"),
    (("ack",), "delayed-ack"),
    (("arrival",), "min-ls-arrival"),
    (("spf", "hold"), "spf-hold"),
    (("spf", "throttle"), "spf-hold"),
    (("spf", "delay"), "spf-delay"),
    (("spf", "initial"), "spf-delay"),
    (("spf", "start"), "spf-delay"),
    (("ls", "interval"), "min-ls-interval"),
    (("lsa", "throttle"), "min-ls-interval"),
    (("throttle", "lsa"), "min-ls-interval"),
    (("tick",), "tick"),
    (("ase",), "ase"),
    (("external",), "ase"),
    (("work", "queue"), "work-queue"),
    (("workqueue",), "work-queue"),
)

_UNITS = (("_us", 1e-6), ("_ms", 1e-3), ("_s", 1.0), ("_sec", 1.0), ("_seconds", 1.0))


@dataclass(frozen=True)
class Timer:
    name: str
    """Canonical name (`TIMER_NAMES`)."""
    seconds: float
    origin: str
    """Where the value came from: ``profile:<key>``, ``quirk:<name>``, ``hello``."""

    @property
    def ns(self) -> int:
        return round(self.seconds * 1e9)

    def describe(self) -> str:
        return f"{TIMER_NAMES.get(self.name, self.name)} {_fmt_s(self.seconds)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": self.seconds,
            "origin": self.origin,
            "text": TIMER_NAMES.get(self.name, self.name),
        }


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1e3:g} ms"


def canonical(name: str) -> str | None:
    low = name.lower().replace("-", "_")
    for parts, canon in _ALIASES:
        if all(p in low for p in parts):
            return canon
    return None


def _seconds(key: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    low = key.lower()
    for suffix, scale in _UNITS:
        if low.endswith(suffix):
            return float(value) * scale
    return None  # no unit in the name: not guessed


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, f"{name}_")
        else:
            yield name, v


def _quirk_seconds(q: Mapping[str, Any]) -> float | None:
    for k, v in _flatten(q):
        if k in ("name", "what", "text", "note"):
            continue
        s = _seconds(k if "_" in k else f"x_{k}", v)
        if s is not None:
            return s
    return None


def timers_from_config(
    profile: Mapping[str, Any] | None, quirks: Sequence[Mapping[str, Any]] | None
) -> dict[str, Timer]:
    """Canonical timers from a DUT timer profile (keys with a unit suffix: ``dead_s``,
    ``spf_hold_ms``...) and its quirks record (dicts with a ``name`` and a value with a unit).
    A quirk overrides the profile: it is what the daemon really does (FRR's ack timer has no
    knob)."""
    found: dict[str, Timer] = {}
    for key, value in _flatten(profile or {}):
        canon, secs = canonical(key), _seconds(key, value)
        if canon is not None and secs is not None and canon not in found:
            found[canon] = Timer(canon, secs, f"profile:{key}")
    for q in quirks or ():
        name = str(q.get("name") or q.get("what") or "")
        canon, secs = canonical(name), _quirk_seconds(q)
        if canon is not None and secs is not None:
            found[canon] = Timer(canon, secs, f"quirk:{name}")
    return found


def dut_timers(index: LogIndex) -> dict[str, Timer]:
    """The DUT's timers as its config event and its Hellos in the log give them (computed once
    per index)."""
    memo = index.memo.get("timers")
    if memo is not None:
        return dict(memo)
    cfg = index.first("dut", "config")
    profile = cfg.get("profile") if cfg is not None else None
    quirks = cfg.get("quirks") if cfg is not None else None
    timers = timers_from_config(
        profile if isinstance(profile, Mapping) else None,
        quirks if isinstance(quirks, list) else None,
    )
    kind = cfg.get("kind") if cfg is not None else None
    # One profile renders both daemons; a knob the DUT does not have means nothing for it.
    foreign = (
        {"tick"}
        if kind != "bird"
        else {"spf-delay", "spf-hold", "min-ls-arrival", "min-ls-interval", "work-queue", "ase"}
    )
    for name in foreign:
        t = timers.get(name)
        if t is not None and t.origin.startswith("profile"):
            del timers[name]
    # The Hello and dead intervals the DUT announces in its Hellos are what it runs with (a
    # profile may leave them to the daemon's default): prefer them.
    duts = {t.param("dut_rid") for t in index.trials} - {None}
    for field, name in (("hello_s", "hello"), ("dead_s", "dead")):
        seen = [
            e.get(field)
            for e in index.events
            if e.event == "rx" and e.get("type") == "hello" and e.get("rid") in duts
        ]
        values = [v for v in seen if isinstance(v, int | float) and v > 0]
        if values:
            timers[name] = Timer(name, float(max(values)), "hello")
    index.memo["timers"] = timers
    return dict(timers)


def stats(values_ns: Sequence[int | float]) -> dict[str, float] | None:
    """{min, median, p90, max} in milliseconds and n; None when empty."""
    if not values_ns:
        return None
    arr = np.asarray(values_ns, dtype=np.float64) / 1e6
    return {
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


@dataclass(frozen=True)
class Verdict:
    kind: str
    text: str
    timer: Timer | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "timer": None if self.timer is None else self.timer.to_json(),
        }


def _dominating(values_ns: Sequence[int], timers: Iterable[Timer]) -> tuple[Timer, str] | None:
    arr = np.asarray(values_ns, dtype=np.float64)
    median, spread = float(np.median(arr)), float(arr.max() - arr.min())
    for t in timers:
        period = float(t.ns)
        if period <= 0:
            continue
        k = round(median / period)
        tol = max(NEAR_FRACTION * period, NEAR_MIN_NS)
        if 1 <= k <= MAX_MULTIPLE and abs(median - k * period) <= tol:
            times = "" if k == 1 else f"{k} × "
            return t, (
                f"the median {median / 1e6:.1f} ms lies within {tol / 1e6:g} ms of "
                f"{times}the {t.describe()}"
            )
        if (
            arr.size >= MIN_SPREAD_TRIALS
            and SPREAD_FRACTION * period <= spread <= 1.5 * period
            and median <= MAX_MULTIPLE * period
        ):
            return t, (
                f"the trials spread over {spread / 1e6:.0f} ms, {spread / period:.0%} of the "
                f"{t.describe()} period: they sample that timer's phase"
            )
    return None


def judge(
    *,
    proc_timers: Sequence[str],
    design_timer: str | None,
    values_ns: Sequence[int],
    shared: int,
    valid: int,
    timers: Mapping[str, Timer],
    invalid_reasons: Sequence[str] = (),
    failed: str | None = None,
    subtraction: str = "",
    quantum: Timer | None = None,
) -> Verdict:
    """The verdict on one figure over its valid trials (module docstring). `quantum`: a
    periodic timer the DUT issues this figure's end event on, whatever the trigger (BIRD
    originates its LSAs on its tick)."""
    if failed:
        if failed.startswith("not run"):  # the setup cannot drive it (--dut external): not the DUT
            return Verdict("failed", failed)
        return Verdict("failed", f"the DUT did not reach the state this procedure needs: {failed}")
    if valid == 0:
        why = "; ".join(sorted(set(invalid_reasons))) or "no trial ran"
        return Verdict("failed", f"no valid trial ({why})")
    ack = timers.get("delayed-ack")
    if shared and shared == valid:
        held = f" ({ack.describe()})" if ack else ""
        return Verdict(
            "meaningless",
            f"in every trial the DUT acked the duplicate in the same LSAck packet as the "
            f"{subtraction or 'other LSA'}: it held both for its delayed-ack timer{held}, so the "
            f"difference measures that timer, not the DUT's work; see the proxies",
            ack,
        )
    if design_timer is not None:
        t = timers.get(design_timer)
        if t is not None:
            tick = (
                f" (the DUT originates LSAs only when a periodic timer fires, the "
                f"{quantum.describe()}: that part is quantised to it)"
                if quantum is not None and quantum.ns > 0
                else ""
            )
            return Verdict(
                "includes-timer",
                f"by the RFC's definition the figure includes the {t.describe()}; the DUT's own "
                f"part is the proxy 'minus {design_timer} interval'{tick}",
                t,
            )
    median = float(np.median(np.asarray(values_ns, dtype=np.float64)))
    if quantum is not None and quantum.ns > 0 and 0 <= median < quantum.ns:
        # Whatever the spread: trials whose trigger is the DUT's own packet (6.6: its Hello)
        # sit at one phase of its timers, and five BIRD figures agreed to 25 ms on a phase.
        return Verdict(
            "timer-dominated",
            f"the DUT originates this LSA only when a periodic timer fires, the "
            f"{quantum.describe()}, whatever the trigger: the median {median / 1e6:.1f} ms is "
            "below one period, so it is that timer's phase at the trigger, not the DUT's work",
            quantum,
        )
    candidates = [timers[n] for n in proc_timers if n in timers]
    hit = _dominating(values_ns, candidates)
    if hit is not None:
        t, why = hit
        # Timers of the same period cannot be told apart by the figure alone: name them all.
        twins = [c.describe() for c in candidates if c is not t and c.ns == t.ns]
        also = f" (or the {' or the '.join(twins)}, of the same period)" if twins else ""
        return Verdict(
            "timer-dominated",
            f"{why}{also}: the figure measures that timer, not the DUT's work; see the proxies",
            t,
        )
    if median < -PRECISION_NS:
        return Verdict(
            "below-precision",
            f"the median is negative ({median / 1e6:.3f} ms): the DUT answered the end event "
            "before it finished (or announced) the work the start event began, so this method "
            "cannot see that work on this DUT; read the proxies",
        )
    if abs(median) < PRECISION_NS:
        return Verdict(
            "below-precision",
            f"the median {median / 1e3:.1f} µs is below what our stamps resolve on a shared "
            f"machine (about {PRECISION_NS / 1e3:.0f} µs): read it as 'too small to measure'",
        )
    note = f" ({shared} of {valid} trials with a shared LSAck left out)" if shared else ""
    # Fewer trials than the spread rule needs, all within one period of a periodic timer of
    # this procedure: the figure may be that timer's phase at the trigger (BIRD's §6.7 is its
    # next tick), and nothing here can tell. Say so; the timer goes with the verdict.
    n = len(values_ns)
    phase = [
        t
        for t in candidates
        if t.name in PERIODIC
        and t.ns > 0
        and n < MIN_SPREAD_TRIALS
        and PHASE_FLOOR_FRACTION * t.ns <= median < t.ns
    ]
    if phase:
        t = phase[0]
        return Verdict(
            "measured",
            f"the DUT's work as far as {n} trial{'s' if n != 1 else ''} can tell: the figure is "
            f"below one period of the {t.describe()} and may be that timer's phase at the "
            f"trigger; {MIN_SPREAD_TRIALS} or more trials (--trials) tell the two apart{note}",
            t,
        )
    return Verdict("measured", f"the DUT's work, no configured timer explains it{note}")
