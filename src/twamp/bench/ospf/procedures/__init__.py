"""The RFC 4061 analysis layer: every figure computed from an event log, with its verdict.

Sans-I/O (design/layers.md "analysis"): events in, figures out; no sockets, no clock, no
threads. `trials` reads the driver's marks and answers packet queries within a trial's window;
`figures` defines the eleven procedures (start and end events, proxies, validity) as pure
functions of one trial; `verdicts` says whether a figure measures the DUT or one of its timers;
`analysis` turns a whole log into the report document; `synth` builds logs by hand with known
answers (tests, and a report to look at without root).
"""

from __future__ import annotations

from .analysis import SCHEMA, analyse, precision_text
from .figures import LAG_NS, PROCEDURES, Procedure, TrialResult, dataplane, evaluate, evaluate_all
from .trials import BENCH_TAG, LogIndex, Marker, Trial, lsa_type
from .verdicts import PRECISION_NS, TIMER_NAMES, Timer, Verdict, judge, stats, timers_from_config

__all__ = [
    "BENCH_TAG",
    "LAG_NS",
    "PRECISION_NS",
    "PROCEDURES",
    "SCHEMA",
    "TIMER_NAMES",
    "LogIndex",
    "Marker",
    "Procedure",
    "Timer",
    "Trial",
    "TrialResult",
    "Verdict",
    "analyse",
    "dataplane",
    "evaluate",
    "evaluate_all",
    "judge",
    "lsa_type",
    "precision_text",
    "stats",
    "timers_from_config",
]
