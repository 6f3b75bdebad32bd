"""The throughput search: which offered rate to try next, and what the trials so far prove.

Theory of operation
-------------------
RFC 2544 §26.1 defines throughput as the fastest rate at which no offered frame is lost, found by
trials of fixed duration: send at a rate, count; if frames were lost, lower the rate, else raise
it, until the answer is known to a stated resolution. `twamp-bench` reports two such rates per
packet size, one per loss criterion: zero loss, and loss at most `tolerance_pct` (RFC 8219's
spirit of stating the loss a result allows). They share the trials: one trial at rate r with loss
L says, for each criterion, "r passes" (L <= threshold) or "r fails".

`RateSearch` is sans-I/O: `next_rate()` names the rate to try, `record()` takes the outcome, and
`result()` says what is proven. Each criterion keeps the highest passing rate below its lowest
failing rate (results are noisy: a pass above a failure does not count). The search is
geometric (rates span orders of magnitude, and resolution is relative), between `floor_pps` and
`cap_pps`:

1. Without a hint, the first trial is at the cap, as RFC 2544 starts at the maximum rate; with a
   `hint` (the answer of a previous repetition) the first trials bracket the hint and widen
   geometrically until one passes and one fails.
2. Then bisection: the geometric mean of the bracket, until `fail / pass <= 1 + resolution`.
3. A criterion with no passing rate tries the floor once; if the floor fails too, its result is
   None ("no rate passes"). One that passes at the cap, with no failure above, is only a lower
   bound: the test setup could not offer more (`at_cap`). One that passes at the cap below a
   failure is bracketed, if more coarsely than the resolution asked for.

The tolerant criterion is searched first; the zero-loss one then starts from what the shared
trials already show.

A trial whose sender could not hold the offered rate (`sender_limited`) says nothing about the
reflector. The caller retries it; if it is limited again it calls `lower_cap()` with what the
sender did achieve, so that no later trial asks for more and a criterion that passes at the new
cap is reported as a lower bound limited by the sender, never as the reflector's figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Criterion", "RateSearch", "SearchResult"]

# A hint is bracketed first at hint * (1 ± this), widened by doubling the exponent.
_HINT_STEP = 0.15


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What one criterion's search proved.

    `pps`: the highest rate that passed (None: none did, not even the floor). `fail_pps`: the
    lowest rate that failed (None: none did), so the figure lies in [pps, fail_pps). `at_cap`:
    it passed at the highest rate the setup could offer and nothing failed above it, so the
    true figure may be higher.
    """

    pps: float | None
    fail_pps: float | None
    at_cap: bool
    trials: int


class Criterion:
    """One loss criterion's bracket: the highest rate passing, the lowest failing."""

    __slots__ = ("failing", "passes", "threshold_pct", "widen")

    def __init__(self, threshold_pct: float) -> None:
        self.threshold_pct = threshold_pct
        self.passes: list[float] = []
        self.failing: float | None = None
        self.widen = 0  # how often a one-sided bracket has been widened

    def record(self, rate: float, loss_pct: float) -> None:
        if loss_pct <= self.threshold_pct:
            self.passes.append(rate)
        elif self.failing is None or rate < self.failing:
            self.failing = rate

    @property
    def passing(self) -> float | None:
        """The highest passing rate below the lowest failing one."""
        below = [r for r in self.passes if self.failing is None or r < self.failing]
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
        max_trials: int = 30,
    ) -> None:
        if not 0 < floor_pps <= cap_pps:
            raise ValueError(f"need 0 < floor ({floor_pps}) <= cap ({cap_pps})")
        if tolerance_pct < 0:
            raise ValueError("the loss tolerance cannot be negative")
        if resolution <= 0:
            raise ValueError("the resolution must be positive")
        self.floor = float(floor_pps)
        self.cap = float(cap_pps)
        self.resolution = resolution
        self.hint = None if hint is None else min(max(float(hint), self.floor), self.cap)
        self.max_trials = max_trials
        self.zero = Criterion(0.0)
        self.tolerant = Criterion(tolerance_pct)
        self.trials = 0

    def lower_cap(self, pps: float) -> None:
        """The sender cannot offer `pps` or more: never ask for it again."""
        self.cap = max(self.floor, min(self.cap, float(pps)))
        if self.hint is not None:
            self.hint = min(self.hint, self.cap)

    def record(self, rate: float, loss_pct: float) -> None:
        """The outcome of a trial the sender could hold."""
        self.trials += 1
        self.zero.record(rate, loss_pct)
        self.tolerant.record(rate, loss_pct)

    def _done(self, c: Criterion) -> bool:
        passing, failing = c.passing, c.failing
        if passing is not None and passing >= self.cap:
            return True
        if failing is not None and failing <= self.floor:
            return True
        if passing is None or failing is None:
            return False
        return failing / passing <= 1.0 + self.resolution or failing <= self.floor

    def _next_for(self, c: Criterion, hint: float | None) -> float:
        passing, failing = c.passing, c.failing
        if passing is None and failing is None:
            return self.cap if hint is None else hint * (1 + _HINT_STEP)
        if failing is None:
            assert passing is not None
            # Everything so far passed: climb towards the cap.
            c.widen += 1
            return passing * math.pow(1 + _HINT_STEP, 2**c.widen)
        if passing is None:
            low = self.floor
            if failing / low <= 1.0 + self.resolution:
                return low
            if hint is not None:
                c.widen += 1
                return min(failing, hint) / math.pow(1 + _HINT_STEP, 2 ** (c.widen - 1))
            return math.sqrt(low * failing)
        return math.sqrt(passing * failing)

    def next_rate(self) -> float | None:
        """The rate to try next, or None when both criteria are settled."""
        if self.trials >= self.max_trials:
            return None
        for c, hint in ((self.tolerant, self.hint), (self.zero, self.tolerant.passing)):
            if not self._done(c):
                return min(self.cap, max(self.floor, self._next_for(c, hint)))
        return None

    def _result(self, c: Criterion) -> SearchResult:
        passing = c.passing
        if passing is None:
            return SearchResult(None, c.failing, False, self.trials)
        at_cap = passing >= self.cap and c.failing is None
        return SearchResult(passing, c.failing, at_cap, self.trials)

    def result(self) -> tuple[SearchResult, SearchResult]:
        """(zero loss, loss-tolerant) as far as the trials so far prove."""
        return self._result(self.zero), self._result(self.tolerant)
