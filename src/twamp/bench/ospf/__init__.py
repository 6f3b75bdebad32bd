"""`twamp-bench ospf`: the eleven RFC 4061 procedures, computed from one event log, with verdicts.

Layers (design/layers.md): `trials` (the driver's marks and packet queries), `procedures` (one
pure function per RFC 4061 figure), `verdicts` (measured / timer-dominated / meaningless),
`analysis` (log in, report document out) are sans-I/O; `report` and `plot` format a document;
`drivers` use the lab and the speaker to produce the log. `synth` builds logs by hand with
known answers (tests, and a report to look at without root).
"""

from __future__ import annotations

from .procedures import (
    BENCH_TAG,
    PROCEDURES,
    SCHEMA,
    LogIndex,
    Marker,
    Procedure,
    TrialResult,
    analyse,
)

__all__ = [
    "BENCH_TAG",
    "PROCEDURES",
    "SCHEMA",
    "LogIndex",
    "Marker",
    "Procedure",
    "TrialResult",
    "analyse",
]
