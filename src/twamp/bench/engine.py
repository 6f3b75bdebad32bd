"""Running the benchmark: probe, sender calibration, throughput searches, latency trials.

Theory of operation
-------------------
Per target, in this order (RFC 2544 §26, RFC 8219 §7-8 in spirit):

1. **Probe** (`probe.run_probe`): 20 packets at 100 pps; no usable reply ends the run for this
   target with one sentence. Its median round trip sets the loss threshold.
2. **Sender calibration, per size, all sizes first** (`probe.calibrate`): what our sender
   reaches into a discard sink, times the sender cores; the search is capped at 90 % of it.
3. **Throughput, per size, `trials` times,** round-robin over the sizes (`_measure_sizes`: a
   slow spell of the machine then costs one run of several sizes, not every run of one).
   `search.RateSearch` picks offered rates; each trial
   (`trial.throughput_trial`) sends `rate x trial_duration` packets on a fixed schedule and
   waits for stragglers. Loss counts every packet whose reflection did not come back within the
   loss threshold (RFC 7680 §2.4: loss is "not received within Tmax"): short trials would
   otherwise hide an overloaded reflector whose backlog still sits in its socket buffer when
   the trial ends. A trial our sender could not hold, or that lost packets because other work
   had the CPU (`trial`: "A busy machine"), is repeated and never moves the search (`search`
   module docstring); the first repetition searches from the cap down, the later ones start
   from the previous answer.
4. **Latency, per size,** at fixed fractions of the zero-loss rate found (or the tolerant one),
   `trials` times: RTT, one-way delays (valid only when both clocks report synchronisation, the
   S bits), reflector residence (T3 - T2), RFC 5481 IPDV, loss, reordering and duplicates, via
   `metrics.summarize`; the spread of every statistic over the trials is reported. A trial the
   sender did not hold cleanly, or that ran beside other work (`trial.disturbance`), is run
   once more (a catch-up burst queues in the reflector and inflates its delays; so does a
   reflector waiting for its core).

IMIX is sent as consecutive runs of one size (7k small, 4k medium, k large, k = 8) in a fixed
cycle, each run by its own Sender on one socket and one sequence space; the mix holds over every
cycle of a few milliseconds.

Everything is appended to the report as it is measured, so an interrupted run (Ctrl-C, SIGTERM)
still has every trial done so far; `aggregate.finalize_size` aggregates whatever is there.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import __version__, clock, dataplane
from ..dataplane.sockets import buffer_sizes, open_test_socket
from .aggregate import (
    finalize_size,
    latency_base,
    latency_trials_used,
    lost_to_a_disturbance,
)
from .conditions import collect_conditions, finish_conditions
from .config import (
    C_SENDER_MAX_PACKETS,
    MEDIA,
    BenchSettings,
    PacketSize,
    ethernet_max_fps,
    frame_octets,
    resolve_sizes,
)
from .fixed import run_fixed
from .probe import ProbeResult, calibrate, wait_ready
from .search import RateSearch
from .stats import quantiles
from .targets import BenchError, Target, TestSession, hostport
from .trial import Thresholds, latency_trial, pinned, throughput_trial

__all__ = [
    "SCHEMA_VERSION",
    "Progress",
    "finalize_size",
    "measure_target",
    "new_document",
    "run_benchmark",
    "run_fixed_rate",
    "search_run",
]

SCHEMA_VERSION = 3

_NS = 1_000_000_000
_CALIBRATION_HEADROOM = 0.9  # the cap: this share of what the sender reaches into a sink
_BASE_THRESHOLD_NS = 20_000_000
_LATENCY_ATTEMPTS = 2  # a latency trial the sender did not hold cleanly is run once more
_S_BIT = 0x8000

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class _Context:
    """The state of measuring one target: settings, thresholds, sessions, sender cores."""

    def __init__(
        self,
        target: Target,
        settings: BenchSettings,
        thresholds: Thresholds,
        progress: Progress,
        sender_cpus: Sequence[int | None],
    ) -> None:
        self.target = target
        self.settings = settings
        self.thresholds = thresholds
        self.progress = progress
        self.cpus = list(sender_cpus) or [None]
        self.size_sessions: list[TestSession] | None = None

    @contextlib.contextmanager
    def sessions(self, size: PacketSize) -> Iterator[list[TestSession]]:
        if self.size_sessions is not None:
            yield self.size_sessions
            return
        sessions = self.target.open_sessions(size, len(self.cpus))
        try:
            yield sessions
        finally:
            for session in sessions:
                self.target.close_session(session)

    def trial(self, size: PacketSize, rate: float, duration_s: float) -> dict[str, Any]:
        with self.sessions(size) as sessions:
            return throughput_trial(
                sessions, self.target, size, rate, duration_s, self.thresholds, self.cpus
            )


def _thresholds(settings: BenchSettings, probe: ProbeResult) -> Thresholds:
    if settings.max_delay_ms is not None:
        max_delay = int(settings.max_delay_ms * 1e6)
    else:
        max_delay = _BASE_THRESHOLD_NS + 2 * probe.total_rtt_median_ns
    if settings.wait_s is not None:
        wait = int(settings.wait_s * _NS)
    else:
        wait = max(int(1.5 * max_delay), 50_000_000)
    return Thresholds(max_delay_ns=max_delay, wait_ns=wait)


def _new_run(cap: float, cap_source: str) -> dict[str, Any]:
    run: dict[str, Any] = {"cap_pps": cap, "cap_source": cap_source, "complete": False}
    for key in ("zero_loss", "tolerant"):
        run.update(
            {
                f"{key}_pps": None,
                f"{key}_fail_pps": None,
                f"{key}_at_cap": False,
                f"{key}_bound": None,
                f"{key}_ceiling_pps": None,
                f"{key}_disturbed_pps": None,
            }
        )
    run["unverified_trials"] = 0
    run["trials"] = []
    return run


def search_run(
    ctx: _Context,
    size_result: dict[str, Any],
    size: PacketSize,
    cap: float,
    cap_source: str,
    hint: float | None,
) -> dict[str, Any]:
    """One repetition of the throughput search, recorded into `size_result` as it goes.

    `cap_source` is "sender" (what our sender can offer), "max_rate" (--max-rate) or "medium"
    (--medium's theoretical maximum frame rate for this size).
    """
    s = ctx.settings
    search = RateSearch(
        floor_pps=min(s.min_rate_pps, cap),
        cap_pps=cap,
        tolerance_pct=s.loss_tolerance_pct,
        resolution=s.resolution_pct / 100.0,
        hint=hint,
        attempts=s.attempts,
    )
    runs = size_result["throughput"]["runs"]
    run = _new_run(cap, cap_source)
    runs.append(run)
    while (rate := search.next_rate()) is not None:
        ctx.progress(
            f"{ctx.target.name} size {size.label}: run {len(runs)}/{s.trials}, "
            f"trial at {rate:,.0f} pps"
        )
        trial = ctx.trial(size, rate, s.trial_duration_s)
        run["trials"].append(trial)
        search.record(
            rate,
            trial["loss_pct"],
            offered=trial["offered"],
            clean=not trial["sender_limited"],
            disturbed=lost_to_a_disturbance(trial),
        )
    for key, res in zip(("zero_loss", "tolerant"), search.result(), strict=True):
        run.update(
            {
                f"{key}_pps": res.pps,
                f"{key}_fail_pps": res.fail_pps,
                f"{key}_at_cap": res.at_cap,
                f"{key}_bound": res.bound,
                f"{key}_ceiling_pps": res.ceiling_pps,
                f"{key}_disturbed_pps": res.disturbed_pps,
            }
        )
    run["unverified_trials"] = search.unverified
    run["complete"] = True
    return run


def _new_size(size: PacketSize, ipv6: bool, medium: str | None) -> dict[str, Any]:
    l2, l1 = frame_octets(size.pattern, ipv6)
    return {
        "medium_max_pps": None if medium is None else ethernet_max_fps(l2, MEDIA[medium][1]),
        "size": size.label,
        "pattern": [[o, n] for o, n in size.pattern],
        "mean_octets": size.mean_octets,
        "l2_octets": l2,
        "l1_octets": l1,
        "sender_capacity_pps": None,
        "cap_pps": None,
        "reflector_cpu_us_per_packet": None,
        "throughput": {"runs": []},
        "latency": [],
        "latency_base": None,
        "complete": False,
    }


def _first_cap(ctx: _Context, size: PacketSize, size_result: dict[str, Any]) -> tuple[float, str]:
    s = ctx.settings
    ctx.progress(f"{ctx.target.name} size {size.label}: measuring the sender")
    capacity = calibrate(ctx.target.fmt, size, ctx.target.options) * len(ctx.cpus)
    size_result["sender_capacity_pps"] = capacity
    cap, source = capacity * _CALIBRATION_HEADROOM, "sender"
    if s.max_rate_pps is not None and s.max_rate_pps <= cap:
        cap, source = s.max_rate_pps, "max_rate"
    if s.sender == "c":
        # c_sender's packet bound per trial (its duplicate bitmap): a limit of our sender.
        most = C_SENDER_MAX_PACKETS / max(s.trial_duration_s, s.latency_s)
        if most < cap:
            cap, source = most, "sender"
    cap = max(cap, s.min_rate_pps)
    medium = size_result["medium_max_pps"]
    if medium is not None and medium <= cap:
        # RFC 2544 Appendix A: never above the medium's theoretical maximum frame rate, not
        # even to reach --min-rate (the search's floor follows the cap down).
        cap, source = float(medium), "medium"
    size_result["cap_pps"] = cap
    return cap, source


@contextlib.contextmanager
def _size_sessions(ctx: _Context, size: PacketSize) -> Iterator[None]:
    """The sessions a target keeps open across a size's trials ("run" and "size" scopes)."""
    target = ctx.target
    with contextlib.ExitStack() as stack:
        if target.session_scope in ("run", "size"):
            ctx.size_sessions = target.open_sessions(size, len(ctx.cpus))
            for session in ctx.size_sessions:
                stack.callback(target.close_session, session)
            stack.callback(setattr, ctx, "size_sessions", None)
        yield


def _measure_sizes(
    ctx: _Context, sizes: Sequence[PacketSize], record: dict[str, Any], our_synced: bool
) -> None:
    """Every size's searches, then every size's latency.

    The searches go round-robin over the sizes (run 1 of each size, then run 2 of each, ...),
    not all runs of one size back to back. A shared machine drifts: on this 2-core VM our
    sender or the reflector ran ~15 % slower for ten seconds or so at a time, with no other
    process on its cores to show for it (issue 13: all three consecutive runs of one size
    ending at 214-237 kpps while the runs around it passed 265-271). Spread over the whole
    search phase, one slow period costs one run of several sizes instead of every run of one,
    and the figure (the highest verified pass, `aggregate`) comes from a run outside it. A
    size's later runs still start from its previous answer (`hint`)."""
    s = ctx.settings
    plans: list[tuple[PacketSize, dict[str, Any], float, str]] = []
    try:
        for size in sizes:
            size_result = _new_size(size, is_ipv6(ctx.target.address[0]), s.medium)
            record["sizes"].append(size_result)
            cap, cap_source = _first_cap(ctx, size, size_result)
            plans.append((size, size_result, cap, cap_source))
        hints: list[float | None] = [None] * len(plans)
        for _ in range(s.trials):
            for i, (size, size_result, cap, cap_source) in enumerate(plans):
                with _size_sessions(ctx, size):
                    run = search_run(ctx, size_result, size, cap, cap_source, hints[i])
                hints[i] = run["tolerant_pps"] or run["zero_loss_pps"] or hints[i]
        for size, size_result, _, _ in plans:
            finalize_size(size_result, s.trials)
            base, which = latency_base(size_result)
            size_result["latency_base"] = which
            if base is not None:
                with _size_sessions(ctx, size):
                    _measure_latency(ctx, size, size_result, base, our_synced)
            size_result["complete"] = True
    finally:
        for size_result in record["sizes"]:
            finalize_size(size_result, s.trials)


def _latency_point(
    ctx: _Context, size: PacketSize, point: dict[str, Any], our_synced: bool
) -> None:
    s = ctx.settings
    rate = point["offered_pps"]
    samples: list[npt.NDArray[np.int64]] = []  # one per trial in point["trials"]
    for i in range(s.latency_repeats):
        for _ in range(_LATENCY_ATTEMPTS):
            ctx.progress(
                f"{ctx.target.name} size {size.label}: latency at {point['fraction_pct']:g} % "
                f"({rate:,.0f} pps), trial {i + 1}/{s.latency_repeats}"
            )
            with ctx.sessions(size) as sessions:
                trial, rtt = latency_trial(
                    sessions,
                    ctx.target,
                    size,
                    rate,
                    s.latency_s,
                    ctx.thresholds,
                    our_synced,
                    ctx.cpus,
                )
            point["trials"].append(trial)
            samples.append(rtt)
            if not trial["sender_limited"] and not trial["disturbed"]:
                break
    # The CDF of the same trials `aggregate` summarises (undisturbed clean ones first).
    used = [samples[k] for k in latency_trials_used(point["trials"])]
    if used:
        point["rtt_quantiles_ns"] = quantiles(np.concatenate(used))


def _measure_latency(
    ctx: _Context, size: PacketSize, size_result: dict[str, Any], base: float, our_synced: bool
) -> None:
    for fraction in ctx.settings.latency_fractions_pct:
        point: dict[str, Any] = {
            "fraction_pct": fraction,
            "offered_pps": base * fraction / 100.0,
            "trials": [],
            "rtt_quantiles_ns": None,
        }
        size_result["latency"].append(point)
        _latency_point(ctx, size, point, our_synced)


def measure_target(
    target: Target,
    settings: BenchSettings,
    record: dict[str, Any],
    *,
    progress: Progress = _quiet,
    our_synced: bool = False,
    sender_cpus: Sequence[int | None] = (),
) -> None:
    """Measure one started target into `record` (its report object), step by step."""
    try:
        sizes = resolve_sizes(settings.sizes, target.fmt)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    record["sizes"] = []
    progress(f"{target.name}: probing {hostport(target.address)}")
    first = sizes[0]
    probe_size = first if not first.is_mix else PacketSize("probe", ((first.octets[0], 1),))
    with contextlib.ExitStack() as stack:
        session = target.open_session(probe_size)
        stack.callback(target.close_session, session)
        probe = wait_ready(target, session, probe_size)
    thresholds = _thresholds(settings, probe)
    record["probe"] = {
        "sent": probe.sent,
        "received": probe.received,
        "round_trip_median_ns": probe.total_rtt_median_ns,
        "reflector_synced": probe.reflector_synced,
        "loss_threshold_ns": thresholds.max_delay_ns,
        "wait_ns": thresholds.wait_ns,
    }
    ctx = _Context(target, settings, thresholds, progress, sender_cpus)
    _measure_sizes(ctx, sizes, record, our_synced)


# -- a whole run ---------------------------------------------------------------------------------


def new_document(command: str, settings: BenchSettings) -> dict[str, Any]:
    return {
        "tool": "twamp-bench",
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "settings": settings.record(),
        "conditions": None,
        "targets": [],
        "comparison": None,
        "interrupted": False,
        "complete": False,
    }


def sender_implementation(settings: BenchSettings) -> str:
    """What the sender really is: c_sender, or the twin `dataplane` selected (TWAMP_PURE_PYTHON
    included)."""
    if settings.sender == "c":
        return "c"
    return str(getattr(dataplane.Sender, "IMPLEMENTATION", dataplane.IMPLEMENTATION))


def _conditions(
    doc: dict[str, Any], settings: BenchSettings, argv: list[str] | None, cpus: list[int | None]
) -> bool:
    our_synced = bool(clock.error_estimate() & _S_BIT)
    doc["conditions"] = collect_conditions(
        argv=argv,
        sender={
            "implementation": sender_implementation(settings),
            "batch": settings.sender_batch,
            "busy_poll": settings.busy_poll,
            "cpu": cpus[0] if cpus else None,
            "cpus": list(cpus),
            "rcvbuf": None,
            "sndbuf": None,
        },
        clock_synced=our_synced,
        started=datetime.datetime.now(datetime.timezone.utc),
    )
    return our_synced


def _one_target(
    target: Target,
    settings: BenchSettings,
    doc: dict[str, Any],
    progress: Progress,
    our_synced: bool,
    cpus: list[int | None],
) -> dict[str, Any]:
    record: dict[str, Any] = {"name": target.name, "error": None, "sizes": [], "probe": None}
    doc["targets"].append(record)
    try:
        progress(f"{target.name}: starting")
        target.start()
        record.update(target.describe(), error=None)
        _sender_buffers(doc, target)
        measure_target(
            target, settings, record, progress=progress, our_synced=our_synced, sender_cpus=cpus
        )
    except BenchError as exc:
        record["error"] = str(exc)
        raise
    finally:
        target.stop()
        desc = target.describe()
        record["reflector"] = desc["reflector"]
        record["sessions"] = desc["sessions"]
        for key, value in desc.items():
            record.setdefault(key, value)
    return record


def run_benchmark(
    targets: list[Target],
    settings: BenchSettings,
    *,
    command: str = "bench",
    argv: list[str] | None = None,
    progress: Progress = _quiet,
    sender_cpu: int | None = None,
    sender_cpus: Sequence[int | None] | None = None,
    document: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure each target in turn (started, measured, stopped) into the report document.

    BenchError from a target is recorded on that target (`error`) and re-raised when it is the
    only target; KeyboardInterrupt stops the run and returns what was measured, marked
    `interrupted`. The document is filled in place, so a caller holding `document` also has
    the partial results if anything else escapes.
    """
    doc = document if document is not None else new_document(command, settings)
    cpus = list(sender_cpus) if sender_cpus is not None else [sender_cpu]
    our_synced = _conditions(doc, settings, argv, cpus)
    try:
        with pinned(cpus[0]):
            for target in targets:
                try:
                    _one_target(target, settings, doc, progress, our_synced, cpus)
                except BenchError:
                    if len(targets) == 1:
                        raise
        doc["complete"] = True
    except KeyboardInterrupt:
        doc["interrupted"] = True
    finally:
        finish_conditions(doc["conditions"])
    return doc


def _sender_buffers(doc: dict[str, Any], target: Target) -> None:
    """Record the socket buffers the kernel granted our sender (once per run)."""
    sender = doc["conditions"]["sender"]
    if sender["rcvbuf"] is not None:
        return
    o = target.options
    sock = open_test_socket("127.0.0.1", 0, rcvbuf=o.rcvbuf, sndbuf=o.rcvbuf)
    try:
        sender["rcvbuf"], sender["sndbuf"] = buffer_sizes(sock)
    finally:
        sock.close()


def is_ipv6(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address)
    except ValueError:
        return False


def run_fixed_rate(
    target: Target,
    settings: BenchSettings,
    doc: dict[str, Any],
    *,
    rate: float,
    duration_s: float,
    interval_s: float,
    report: Callable[[str], None],
    argv: list[str] | None = None,
    progress: Progress = _quiet,
    sender_cpus: Sequence[int | None] = (None,),
) -> dict[str, Any]:
    """Fixed-rate mode (`fixed` module) into the report document; Ctrl-C keeps the intervals."""
    cpus = list(sender_cpus) or [None]
    doc["command"] = "fixed_rate"
    our_synced = _conditions(doc, settings, argv, cpus)
    try:
        with pinned(cpus[0]):
            record: dict[str, Any] = {
                "name": target.name,
                "error": None,
                "sizes": [],
                "probe": None,
            }
            doc["targets"].append(record)
            try:
                progress(f"{target.name}: starting")
                target.start()
                record.update(target.describe(), error=None)
                run_fixed(
                    target,
                    settings,
                    record,
                    rate=rate,
                    duration_s=duration_s,
                    interval_s=interval_s,
                    report=report,
                    our_synced=our_synced,
                    sender_cpus=cpus,
                )
            except BenchError as exc:
                record["error"] = str(exc)
                raise
            finally:
                target.stop()
                desc = target.describe()
                record.update(reflector=desc["reflector"], sessions=desc["sessions"])
                for key, value in desc.items():
                    record.setdefault(key, value)
        doc["complete"] = True
    except KeyboardInterrupt:
        doc["interrupted"] = True
    finally:
        finish_conditions(doc["conditions"])
    return doc
