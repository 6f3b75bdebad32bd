"""The throughput search: which offered rate to try next, and what the trials so far prove.

Theory of operation
-------------------
RFC 2544 §26.1 defines throughput as the fastest rate at which no offered frame is lost, found by
trials of fixed duration: send at a rate, count; if frames were lost, lower the rate, else raise
it, until the answer is known to a stated resolution. `twamp-bench` reports two such rates per
packet size, one per loss criterion: zero loss, and loss at most `tolerance_pct` (RFC 8219's
spirit of stating the loss a result allows). They share the trials.

`RateSearch` is sans-I/O: `next_rate()` names the rate to try, `record()` takes the outcome, and
`result()` says what is proven. The search is geometric (rates span orders of magnitude and the
resolution is relative), between `floor_pps` and `cap_pps`.

**Verification.** A trial says something about the reflector only if our sender did its part.
For each criterion a trial is one of three things (`Verdict`):

* **pass**: the sender offered the rate (`offered`: it reached it on average, no send failed)
  and the loss is within the criterion. A sender that was late and bursty made the reflector's
  job harder, not easier, so lateness does not spoil a pass.
* **fail**: the loss is over the criterion and the sender was `clean`: it offered the rate on
  its schedule and none of the replies was lost in our own receive buffer.
* **disturbed**: the loss is over the criterion and the sender was clean, but other work on
  the machine had the CPU meanwhile and the reflector lost packets the way one short of CPU
  does (`disturbed`: `aggregate.lost_to_a_disturbance`, e.g. a process on the reflector's
  core). A reflector that got half its core loses packets at half its rate; that is not a
  failure of the reflector, so such a trial is repeated like an unverified one.
* **unverified**: neither. Such a trial proves nothing either way, so it never moves the search:
  the same rate is tried again, up to `attempts` times. Only a rate that stays unverified every
  time (our sender cannot hold it, not once) becomes that criterion's *ceiling*: no rate at or
  above it is tried again, and a figure bounded by it is a lower bound set by the test setup,
  never the reflector's figure.

A rate that failed every attempt and at least once with a clean sender on a disturbed machine
(the disturbance lasted through the attempts) bounds the search like a failure, as the
*disturbed bound*: the figure is then the highest rate that passed below it, and the run says
that a disturbed trial decided it (`SearchResult.bound == "disturbed"`), which the report marks.
A pass is a pass, disturbed or not: the reflector kept up with less CPU than it could have had.

This is what makes the search survive a busy machine: one stall of the sender (another process
took its core for 12 ms) costs one repeated trial, not a step down of the search, and a burst
of other work beside the reflector costs repeated trials, not half the figure.

Each criterion keeps the highest passing rate below its lowest failing rate (results are noisy:
a pass above a failure does not count). The steps:

1. Without a hint the first trial is at the cap, as RFC 2544 starts at the maximum rate; with a
   `hint` (the answer of a previous repetition) the first trials bracket the hint and widen
   geometrically until one passes and one fails.
2. Then bisection: the geometric mean of the bracket, until `upper / pass <= 1 + resolution`,
   where `upper` is the lowest failure, disturbed bound or ceiling, whichever is lowest.
3. A criterion with no passing rate tries the floor; if the floor fails its result is "none"
   (no rate passes); if the floor cannot be verified the result says so (`unverifiable`).

The tolerant criterion is searched first; the zero-loss one then starts from what the shared
trials already show.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["Criterion", "RateSearch", "SearchResult", "Verdict", "verdict"]

# A hint is bracketed first at hint * (1 ± this), widened by doubling the exponent.
_HINT_STEP = 0.15
_SAME = 1e-9  # relative: two rates this close are the same rate


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    DISTURBED = "disturbed"
    UNVERIFIED = "unverified"


def verdict(
    loss_pct: float,
    threshold_pct: float,
    *,
    offered: bool,
    clean: bool,
    disturbed: bool = False,
) -> Verdict:
    """One trial against one loss criterion (see the module docstring)."""
    if loss_pct <= threshold_pct and offered:
        return Verdict.PASS
    if loss_pct > threshold_pct and clean:
        return Verdict.DISTURBED if disturbed else Verdict.FAIL
    return Verdict.UNVERIFIED


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What one criterion's search proved.

    `pps`: the highest rate that passed (None: none did). `fail_pps`: the lowest rate that
    failed (None: none did), so the figure lies in [pps, fail_pps). `at_cap`: it passed at the
    highest rate the search could try (the cap, or the ceiling: the lowest rate our sender
    could never hold), with no failure in between, so the true figure may be higher; `bound`
    says which ("cap" or "ceiling"; "disturbed" when the tightest bound above the figure is a
    disturbed bound, at_cap then False: a figure, marked). `ceiling_pps`: that lowest
    unverifiable rate (None: every rate tried was verified). `disturbed_pps`: the lowest
    disturbed bound (None: none). `trials`: trials recorded.
    """

    pps: float | None
    fail_pps: float | None
    at_cap: bool
    trials: int
    bound: str | None = None
    ceiling_pps: float | None = None
    disturbed_pps: float | None = None

    @property
    def unverifiable(self) -> bool:
        """Nothing passed and nothing failed: not one trial could be verified."""
        return (
            self.pps is None
            and self.fail_pps is None
            and self.disturbed_pps is None
            and self.ceiling_pps is not None
        )


class Criterion:
    """One loss criterion: the highest passing rate, the lowest failing one, the ceiling."""

    __slots__ = (
        "attempts",
        "ceiling",
        "disturbed",
        "disturbed_at",
        "failing",
        "passes",
        "retry",
        "threshold_pct",
        "widen",
    )

    def __init__(self, threshold_pct: float) -> None:
        self.threshold_pct = threshold_pct
        self.passes: list[float] = []
        self.failing: float | None = None
        self.ceiling: float | None = None
        self.disturbed: float | None = None  # the lowest disturbed bound
        self.disturbed_at: set[float] = set()  # rates with a disturbed failure
        self.retry: float | None = None  # an unverified rate to try again
        self.attempts: dict[float, int] = {}
        self.widen = 0  # how often a one-sided bracket has been widened

    def record(self, rate: float, v: Verdict, max_attempts: int) -> None:
        if v is Verdict.PASS:
            self.passes.append(rate)
            self.retry = None
        elif v is Verdict.FAIL:
            if self.failing is None or rate < self.failing:
                self.failing = rate
            self.retry = None
        else:
            if v is Verdict.DISTURBED:
                self.disturbed_at.add(rate)
            n = self.attempts.get(rate, 0) + 1
            self.attempts[rate] = n
            if n < max_attempts:
                self.retry = rate
                return
            self.retry = None
            if rate in self.disturbed_at:
                # The reflector lost packets with our sender clean, each time beside other work.
                if self.disturbed is None or rate < self.disturbed:
                    self.disturbed = rate
            elif self.ceiling is None or rate < self.ceiling:
                self.ceiling = rate

    @property
    def upper(self) -> float | None:
        """The lowest rate known not to pass: a failure, a disturbed bound, or the ceiling."""
        bounds = [b for b in (self.failing, self.disturbed, self.ceiling) if b is not None]
        return min(bounds) if bounds else None

    @property
    def passing(self) -> float | None:
        """The highest passing rate below the lowest failing one (and below the ceiling)."""
        upper = self.upper
        below = [r for r in self.passes if upper is None or r < upper * (1 - _SAME)]
        return max(below) if below else None


class RateSearch:
    """Binary search of the zero-loss and the loss-tolerant rate (see the module docstring)."""

    def __init__(
        self,
        *,
        floor_pps: float,
        cap_pps: float,
        tolerance_pct: float,
        resolution: float = 0.05,
        hint: float | None = None,
        max_trials: int = 40,
        attempts: int = 4,
    ) -> None:
        if not 0 < floor_pps <= cap_pps:
            raise ValueError(f"need 0 < floor ({floor_pps}) <= cap ({cap_pps})")
        if tolerance_pct < 0:
            raise ValueError("the loss tolerance cannot be negative")
        if resolution <= 0:
            raise ValueError("the resolution must be positive")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.floor = float(floor_pps)
        self.cap = float(cap_pps)
        self.resolution = resolution
        self.hint = None if hint is None else min(max(float(hint), self.floor), self.cap)
        self.max_trials = max_trials
        self.attempts = attempts
        self.zero = Criterion(0.0)
        self.tolerant = Criterion(tolerance_pct)
        self.trials = 0
        self.unverified = 0

    def record(
        self,
        rate: float,
        loss_pct: float,
        *,
        offered: bool = True,
        clean: bool = True,
        disturbed: bool = False,
    ) -> None:
        """The outcome of one trial at `rate` (see `verdict` for the flags)."""
        self.trials += 1
        verdicts = []
        for c in (self.zero, self.tolerant):
            v = verdict(
                loss_pct, c.threshold_pct, offered=offered, clean=clean, disturbed=disturbed
            )
            c.record(rate, v, self.attempts)
            verdicts.append(v)
        if Verdict.UNVERIFIED in verdicts or Verdict.DISTURBED in verdicts:
            self.unverified += 1

    def _top(self, c: Criterion) -> float:
        """The highest rate this criterion may still try."""
        return self.cap if c.ceiling is None else min(self.cap, c.ceiling)

    def _done(self, c: Criterion) -> bool:
        if c.retry is not None:
            return False
        passing, upper = c.passing, c.upper
        if passing is not None and passing >= self.cap * (1 - _SAME):
            return True
        if upper is not None and upper <= self.floor * (1 + _SAME):
            return True
        if passing is None or upper is None:
            return False
        return upper / passing <= 1.0 + self.resolution

    def _next_for(self, c: Criterion, hint: float | None) -> float:
        if c.retry is not None:
            return c.retry
        passing, upper = c.passing, c.upper
        if passing is None and upper is None:
            return self.cap if hint is None else hint * (1 + _HINT_STEP)
        if upper is None:
            assert passing is not None
            # Everything so far passed: climb towards the cap.
            c.widen += 1
            return passing * math.pow(1 + _HINT_STEP, 2**c.widen)
        if passing is None:
            low = self.floor
            if upper / low <= 1.0 + self.resolution:
                return low
            if hint is not None and hint < upper:
                c.widen += 1
                return min(upper, hint) / math.pow(1 + _HINT_STEP, 2 ** (c.widen - 1))
            return math.sqrt(low * upper)
        return math.sqrt(passing * upper)

    def next_rate(self) -> float | None:
        """The rate to try next, or None when both criteria are settled."""
        if self.trials >= self.max_trials:
            return None
        for c, hint in ((self.tolerant, self.hint), (self.zero, self.tolerant.passing)):
            if not self._done(c):
                rate = self._next_for(c, hint)
                if c.retry is None:
                    top = self._top(c)
                    if c.ceiling is not None and rate >= top * (1 - _SAME):
                        # Never ask again for what the sender could not hold: just below it.
                        rate = top / (1 + self.resolution / 2)
                    rate = min(top, rate)
                return max(self.floor, rate)
        return None

    def _result(self, c: Criterion) -> SearchResult:
        passing = c.passing
        ceiling, disturbed = c.ceiling, c.disturbed
        if passing is None:
            return SearchResult(None, c.failing, False, self.trials, None, ceiling, disturbed)
        bound: str | None = None
        failing = [b for b in (c.failing, disturbed) if b is not None]
        if passing >= self.cap * (1 - _SAME) and not failing:
            bound = "cap"
        elif ceiling is not None and (not failing or ceiling < min(failing)):
            # The tightest upper bound is a rate our sender could not hold, not a failure.
            bound = "ceiling"
        at_cap = bound is not None
        if not at_cap and disturbed is not None and (c.failing is None or disturbed < c.failing):
            bound = "disturbed"  # a figure all the same, decided beside other work
        return SearchResult(passing, c.failing, at_cap, self.trials, bound, ceiling, disturbed)

    def result(self) -> tuple[SearchResult, SearchResult]:
        """(zero loss, loss-tolerant) as far as the trials so far prove."""
        return self._result(self.zero), self._result(self.tolerant)
