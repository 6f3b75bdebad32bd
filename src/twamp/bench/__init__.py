"""`twamp-bench` as a library: measure a TWAMP reflector's throughput and latency honestly.

The methodology is RFC 2544 §26.1 (throughput by binary search over fixed-length trials) in the
spirit of RFC 8219: every figure is measured several times and reported as min / median / max,
latency as distributions at fixed fractions of the throughput found, the conditions are
recorded with the results, and no figure is reported that the test setup itself limited: our
sender's capacity is measured first and every trial it could not hold is marked
sender-limited: repeated, never counted against the reflector. See `search` and `engine` for
the theory of operation.

Modules: `config` (sizes, settings, profiles), `search` (the sans-I/O rate search and its
verdicts), `stats` (spreads), `conditions` (what the run ran on, CPU taken by others), `targets`
(reflectors started or reached, test sessions), `cprogs` (the C reference programs, built on
first use), `trial` (one schedule sent, checked and judged), `probe` (probe and sender
calibration), `engine` (the searches and latency points of a run), `fixed` (fixed-rate mode),
`aggregate` (trials to figures), `report` (CSV, comparison, schema), `tables` (the human
report), `outputs` (output paths checked first, written last), `plot` (matplotlib),
`reflector_proc` (our reflector as a process of its own).
"""

from __future__ import annotations

from .config import BenchSettings, PacketSize, parse_sizes, resolve_sizes
from .engine import SCHEMA_VERSION, finalize_size, run_benchmark
from .report import CSV_HEADER, compare, validate, write_csv
from .search import RateSearch, SearchResult
from .tables import format_tables
from .targets import (
    BenchError,
    CommandReflector,
    ControlTarget,
    CReflector,
    LightTarget,
    LocalReflector,
    SessionOptions,
    Target,
)

__all__ = [
    "CSV_HEADER",
    "SCHEMA_VERSION",
    "BenchError",
    "BenchSettings",
    "CReflector",
    "CommandReflector",
    "ControlTarget",
    "LightTarget",
    "LocalReflector",
    "PacketSize",
    "RateSearch",
    "SearchResult",
    "SessionOptions",
    "Target",
    "compare",
    "finalize_size",
    "format_tables",
    "parse_sizes",
    "resolve_sizes",
    "run_benchmark",
    "validate",
    "write_csv",
]
