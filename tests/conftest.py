"""Shared fixtures and policy.

Tests that need an external tool (tshark) or root skip with a stated reason on a developer's
machine, but CI sets TWAMP_CI=1 and there a missing prerequisite is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

# A shell that starts a command in the background without job control (`cmd &` in a script,
# nohup) leaves SIGINT ignored, and an ignored signal stays ignored across exec: the Ctrl-C
# tests (ours, and the subprocesses they start) would then test that environment, not the code.
# Python's own default is what an interactive user has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The perfSONAR captures ship with the tests (tests/vectors/README.md says where they come from).
VECTORS = Path(__file__).resolve().parent / "vectors"
IN_CI = os.environ.get("TWAMP_CI") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (developer machine) or fail (CI) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI prerequisite missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """tests/vectors: part of the repository, so a missing file is a failure, never a skip."""
    assert VECTORS.is_dir(), f"{VECTORS} is missing from this checkout"
    return VECTORS


@pytest.fixture(scope="session")
def tshark() -> str:
    path = shutil.which("tshark")
    require(path is not None, "tshark is not installed (apt-get install tshark)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def root() -> None:
    require(os.geteuid() == 0, "needs root")


# -- the quick subset -----------------------------------------------------------------------
# `pytest -m "not slow"` runs in under a minute; `pytest` runs everything. A test is slow when it
# takes over about a second alone (rate searches, timers such as SERVWAIT/REFWAIT, subprocesses,
# Cython compiles) or when its group adds up (the fuzzers). Listed here by file and test name
# ("*": the whole file) so that marking needs no edit of the test files; a name listed here that
# no longer exists fails the run, so the list cannot rot.
SLOW: dict[str, frozenset[str]] = {
    "test_annotate.py": frozenset({"*"}),
    "test_bench.py": frozenset(
        {
            "test_an_ipv6_light_target",
            "test_control_runs_sessions_in_the_negotiated_mode",
            "test_an_error_in_one_of_several_targets_is_recorded_not_raised",
            "test_a_reflector_answering_garbage",
            "test_our_reflector_in_stamp_format",
            "test_loopback_run_is_internally_consistent",
            "test_reflector_proc_reports_ready_and_counters",
            "test_nothing_listens_on_a_closed_port",
            "test_nothing_answers_a_bound_socket",
            "test_a_command_reflector_that_exits_at_once",
        }
    ),
    "test_bench_cli.py": frozenset({"*"}),
    "test_bench_limited.py": frozenset({"*"}),
    "test_benchmarks_smoke.py": frozenset({"*"}),
    "test_daemon.py": frozenset(
        {
            "test_json_log_lines",
            "test_server_drops_privileges_after_binding",
            "test_reflect_drops_privileges_after_binding",
        }
    ),
    "test_fastpath.py": frozenset({"test_loop_differential"}),
    "test_fastpath_libcrypto.py": frozenset({"test_fallback_to_python_path_in_a_subprocess"}),
    "test_metrics.py": frozenset({"test_percentiles_are_ordered"}),
    "test_metrics_export.py": frozenset(
        {
            "test_server_metrics_scrape",
            "test_reflect_metrics_scrape",
            "test_continuous_ping_metrics_scrape",
            "test_server_metrics_port_in_use_stops_cleanly",
            "test_a_limit_hit_shows_in_the_metrics",
        }
    ),
    "test_kernel_stamps.py": frozenset(
        {
            "test_reflect_t3_diagnostic_end_to_end",
            "test_reflect_t3_diagnostic_with_workers",
            "test_reflect_without_the_diagnostic_says_nothing_of_t3",
            "test_server_t3_diagnostic_end_to_end",
            "test_bench_report_has_kernel_stamps_and_old_reports_validate",
        }
    ),
    "test_ping.py": frozenset({"test_ping_every_mode"}),
    "test_ping_continuous.py": frozenset({"*"}),
    "test_ping_operator.py": frozenset(
        {
            "test_server_going_away_stops_the_ping",
            "test_sigterm_prints_the_summary_and_completes_the_raw_file",
            "test_huge_count_costs_memory_by_what_is_kept",
        }
    ),
    "test_reflect_cli.py": frozenset(
        {"test_allow_list_drops_others", "test_two_workers_share_the_port"}
    ),
    "test_reflector_loop.py": frozenset({"test_reflectors_come_and_go_under_load"}),
    "test_server.py": frozenset(
        {
            "test_individual_session_control",
            "test_stop_sessions_honours_timeout_then_drops_and_frees",
            "test_refwait_drops_idle_session_and_servwait_resumes",
            "test_client_stalling_past_servwait_is_closed",
            "test_stop_ends_connections_and_sessions",
            "test_bad_command_gets_accept_3_and_close",
            "test_cli_server_runs_until_sigint",
        }
    ),
    "test_wire_control_hypothesis.py": frozenset(
        {"test_fuzz_mutated_valid_messages", "test_fuzz_random_octets"}
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    modules: dict[str, object] = {}
    for item in items:
        file = item.path.name
        listed = SLOW.get(file, frozenset())
        if "*" in listed or getattr(item, "originalname", item.name) in listed:
            item.add_marker(pytest.mark.slow)
        module = getattr(item, "module", None)
        if module is not None:
            modules[file] = module
    stale = sorted(
        f"{file}::{name}"
        for file, module in modules.items()
        for name in SLOW.get(file, frozenset()) - {"*"}
        if not hasattr(module, name)
    )
    if stale:
        raise pytest.UsageError(f"tests/conftest.py SLOW names tests that do not exist: {stale}")
