"""Verdicts on RFC 4061 figures: timer extraction from profiles and quirks, and the rules."""

from __future__ import annotations

import pytest

from twamp.bench.ospf.procedures.verdicts import Timer, judge, stats, timers_from_config

MS = 1_000_000


def test_timers_from_profile_and_quirks() -> None:
    timers = timers_from_config(
        {
            "hello_s": 1,
            "dead_s": 4,
            "retransmit_s": 5,
            "spf": {"delay_ms": 0, "hold_ms": 50},
            "lsa_min_arrival_ms": 1000,
            "tick_s": 1,
            "name": "defaults",
            "nexthop_kernel": True,
            "mystery": 7,
        },
        [
            {"name": "delayed-ack", "period_ms": 1000},
            {"name": "LSR stall", "seconds": 5},
            {"name": "no number here"},
        ],
    )
    assert {k: (t.seconds, t.origin) for k, t in timers.items()} == {
        "hello": (1.0, "profile:hello_s"),
        "dead": (4.0, "profile:dead_s"),
        "retransmit": (5.0, "quirk:LSR stall"),
        "spf-delay": (0.0, "profile:spf_delay_ms"),
        "spf-hold": (0.05, "profile:spf_hold_ms"),
        "min-ls-arrival": (1.0, "profile:lsa_min_arrival_ms"),
        "tick": (1.0, "profile:tick_s"),
        "delayed-ack": (1.0, "quirk:delayed-ack"),
    }


def test_values_without_units_are_not_guessed() -> None:
    assert timers_from_config({"hello": 1, "dead": 4}, None) == {}


def test_stats() -> None:
    st = stats([1 * MS, 2 * MS, 3 * MS, 4 * MS, 10 * MS])
    assert st == {"min": 1.0, "median": 3.0, "p90": pytest.approx(7.6), "max": 10.0, "n": 5}
    assert stats([]) is None


ACK = {"delayed-ack": Timer("delayed-ack", 1.0, "quirk:x"), "hello": Timer("hello", 1.0, "p")}


def _judge(values: list[int], **kw: object) -> str:
    args: dict[str, object] = {
        "proc_timers": ("delayed-ack",),
        "design_timer": None,
        "values_ns": values,
        "shared": 0,
        "valid": len(values),
        "timers": ACK,
    }
    args.update(kw)
    return judge(**args).kind  # type: ignore[arg-type]


def test_near_a_timer_or_its_multiple() -> None:
    assert _judge([990 * MS, 1000 * MS, 1010 * MS]) == "timer-dominated"
    assert _judge([1990 * MS, 2005 * MS, 2010 * MS]) == "timer-dominated"
    assert _judge([4000 * MS, 4000 * MS, 4000 * MS]) == "measured"  # 4 × is beyond a multiple
    assert _judge([700 * MS, 702 * MS, 705 * MS]) == "measured"


def test_spread_over_a_timer_period() -> None:
    assert _judge([350 * MS, 500 * MS, 620 * MS, 800 * MS, 1050 * MS]) == "timer-dominated"
    assert _judge([350 * MS, 360 * MS, 380 * MS, 370 * MS, 365 * MS]) == "measured"
    # two trials are too few to call a spread a phase
    assert _judge([100 * MS, 600 * MS]) == "measured"


def test_too_few_trials_within_a_periodic_timer_say_so() -> None:
    """BIRD's §6.7 in one trial: 509 ms, its next 1 s tick (without `quantum`, which now
    names the tick for the procedures ending on BIRD's own LSA). Fewer than 3 trials below one
    period of a periodic timer stay "measured" but carry the timer and say they may be its
    phase; 3 trials, a figure beyond the period or below 5 % of it (FRR's 0.78 ms §5.1 beside
    its 1 s delayed ack), or a timer that is not periodic, do not."""
    tick = {"tick": Timer("tick", 1.0, "quirk:tick")}
    kw = {"proc_timers": ("min-ls-interval", "tick"), "timers": tick}
    v = judge(design_timer=None, values_ns=[509 * MS], shared=0, valid=1, **kw)  # type: ignore[arg-type]
    assert v.kind == "measured" and v.timer is not None and v.timer.name == "tick"
    assert "as far as 1 trial can tell" in v.text and "BIRD tick" in v.text, v.text
    for values in ([509 * MS, 520 * MS, 515 * MS], [1400 * MS], [int(0.78 * MS)]):
        v = judge(design_timer=None, values_ns=values, shared=0, valid=len(values), **kw)  # type: ignore[arg-type]
        assert v.kind == "measured" and v.timer is None, v.text
    hold = {"spf-hold": Timer("spf-hold", 1.0, "profile:spf_hold_ms")}
    v = judge(
        proc_timers=("spf-hold",), design_timer=None, values_ns=[509 * MS], shared=0, valid=1,
        timers=hold,
    )  # fmt: skip
    assert v.timer is None


def test_a_figure_the_dut_issues_on_its_tick_is_the_ticks_phase() -> None:
    """BIRD originates its router- and network-LSAs only on its tick (`ospf_disp`): a figure
    ending on one and below one tick is the tick's phase, however tightly the trials agree
    (§6.6: five within 25 ms, the trigger being BIRD's own Hello). A figure beyond one tick
    is judged as before; with the dead interval in the definition the text names the tick."""
    tick = Timer("tick", 1.0, "quirk:tick")
    base = {"proc_timers": ("min-ls-interval", "tick"), "shared": 0, "timers": {"tick": tick}}
    tight = [756 * MS, 771 * MS, 778 * MS, 781 * MS, 760 * MS]
    v = judge(design_timer=None, values_ns=tight, valid=5, quantum=tick, **base)  # type: ignore[arg-type]
    assert v.kind == "timer-dominated" and v.timer == tick, v.text
    assert "only when a periodic timer fires, the BIRD tick" in v.text, v.text
    v = judge(design_timer=None, values_ns=tight, valid=5, **base)  # type: ignore[arg-type]
    assert v.kind == "measured", v.text  # without the quantum: tight trials, no timer near
    late = [3057 * MS, 3115 * MS, 3820 * MS]
    v = judge(design_timer=None, values_ns=late, valid=3, quantum=tick, **base)  # type: ignore[arg-type]
    assert v.kind != "timer-dominated" or v.timer != tick, v.text
    dead = {"tick": tick, "dead": Timer("dead", 4.0, "hello")}
    v = judge(
        proc_timers=("dead",), design_timer="dead", values_ns=[4453 * MS], shared=0, valid=1,
        timers=dead, quantum=tick,
    )  # fmt: skip
    assert v.kind == "includes-timer" and "quantised to it" in v.text, v.text


def test_only_the_procedures_timers_count() -> None:
    assert _judge([1000 * MS] * 3, proc_timers=("spf-hold",)) == "measured"


def test_below_precision_and_failed_and_meaningless() -> None:
    assert _judge([10_000, 20_000, 30_000]) == "below-precision"
    assert _judge([], valid=0, invalid_reasons=["x"]) == "failed"
    assert _judge([1 * MS], failed="never Full") == "failed"
    assert _judge([500 * MS] * 3, shared=3) == "meaningless"
    assert _judge([5 * MS] * 3, shared=1) == "measured"


def test_design_timer_wins_over_measured() -> None:
    timers = {"dead": Timer("dead", 4.0, "hello")}
    v = judge(
        proc_timers=("dead",),
        design_timer="dead",
        values_ns=[4001 * MS],
        shared=0,
        valid=1,
        timers=timers,
    )
    assert v.kind == "includes-timer" and v.timer is not None and v.timer.seconds == 4.0
    assert "4 s" in v.text
