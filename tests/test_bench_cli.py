"""`twamp-bench` on the command line (click's CliRunner): defaults, options, outputs, errors.

Real runs are tiny (one size, two short trials, a low --max-rate) against our own reflector
started on loopback by the command itself.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import require
from twamp.bench import cprogs, engine
from twamp.bench.conditions import collect_conditions, cpu_plan
from twamp.bench.config import BenchSettings
from twamp.bench.report import CSV_HEADER, validate
from twamp.bench.targets import CReflector, LightTarget, LocalReflector, SessionOptions
from twamp.cli import bench as cli

# The header documented in the README and in report.CSV_HEADER, written out independently.
DOCUMENTED_CSV_HEADER = (
    "target,size,mean_octets,figure,fraction_pct,unit,min,median,max,n,status,disturbed"
)

TINY = [
    "--sizes",
    "min",
    "--trials",
    "2",
    "--trial-duration",
    "0.05",
    "--latency-fractions",
    "50",
    "--max-rate",
    "20000",
    "--resolution",
    "20",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.bench, list(args), prog_name="twamp-bench")


def assert_one_sentence_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], result.output


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A bound UDP socket that never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


# -- help and defaults ------------------------------------------------------------------------


def test_help_says_what_a_size_is() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "UDP payload octets" in text
    assert "min,128,512,1024,1472,imix" in text
    assert "compare" in text
    sub = invoke("compare", "--help")
    assert sub.exit_code == 0 and "--reflector" in sub.output


class Captured:
    targets: list[Any]
    settings: Any
    sender_cpu: int | None


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Captured:
    """Replace the measurement by a recorder of what the command asked for."""
    seen = Captured()

    def fake_run(targets: list[Any], settings: Any, **kw: Any) -> dict[str, Any]:
        seen.targets, seen.settings = targets, settings
        seen.sender_cpu = kw["sender_cpus"][0]
        doc: dict[str, Any] = kw["document"]
        doc["conditions"] = collect_conditions(
            argv=kw["argv"],
            sender={
                "implementation": "python",
                "batch": settings.sender_batch,
                "busy_poll": False,
                "cpu": seen.sender_cpu,
                "cpus": kw["sender_cpus"],
                "rcvbuf": None,
                "sndbuf": None,
            },
            clock_synced=False,
        )
        doc["complete"] = True
        return doc

    monkeypatch.setattr(cli, "run_benchmark", fake_run)
    return seen


def test_no_arguments_means_our_fast_reflector_and_the_default_suite(captured: Captured) -> None:
    result = invoke()
    assert result.exit_code == 0, result.output
    (target,) = captured.targets
    assert isinstance(target, LocalReflector)
    assert target.kind == "local" and "--impl" in target._argv and "fast" in target._argv
    reflector_cpu, sender_cpu = cpu_plan(True)
    assert captured.sender_cpu == sender_cpu
    assert target._argv[target._argv.index("--cpu") + 1] == str(
        -1 if reflector_cpu is None else reflector_cpu
    )
    s = captured.settings
    assert s.sizes == ("min", "128", "512", "1024", "1472", "imix")
    assert s.trials == 3 and s.loss_tolerance_pct == 0.1
    assert s.latency_fractions_pct == (10.0, 50.0, 90.0)
    assert 0 < s.trial_duration_s <= 0.5  # short: the default suite takes a few minutes
    assert "twamp-bench" in result.output  # the table's heading


def test_options_reach_the_settings(captured: Captured, silent_port: int) -> None:
    result = invoke(
        "--target",
        f"127.0.0.1:{silent_port}",
        "--sizes",
        "64,imix,64",
        "--trials",
        "5",
        "--loss-tolerance",
        "1.5",
        "--latency-fractions",
        "25,75",
        "--no-pin",
        "--stamp",
    )
    assert result.exit_code == 0, result.output
    (target,) = captured.targets
    assert isinstance(target, LightTarget) and target.fmt.stamp
    assert target.address == ("127.0.0.1", silent_port)
    s = captured.settings
    assert s.sizes == ("64", "imix") and s.trials == 5 and s.loss_tolerance_pct == 1.5
    assert s.latency_fractions_pct == (25.0, 75.0) and not s.pin
    assert captured.sender_cpu is None


def test_target_port_defaults_to_862(captured: Captured) -> None:
    assert invoke("--target", "127.0.0.1").exit_code == 0
    assert captured.targets[0].address == ("127.0.0.1", 862)


def test_compare_builds_each_kind_of_reflector(captured: Captured) -> None:
    result = invoke(
        "compare",
        "-r",
        "fast",
        "-r",
        "pure",
        "-r",
        "c",
        "-r",
        "cmd:my-reflector --port {port}",
        "-r",
        "addr:127.0.0.1:9",
        "-r",
        "fast",
    )
    assert result.exit_code == 0, result.output
    kinds = [t.kind for t in captured.targets]
    assert kinds == ["local", "local", "c", "command", "light", "local"]
    assert [t.name for t in captured.targets][-1].endswith("#2")  # names stay distinct
    assert isinstance(captured.targets[2], CReflector)


# -- bad options: a usage error, one sentence ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--sizes", "huge"], "--sizes"),
        (["--sizes", "0"], "--sizes"),
        (["--trials", "0"], "--trials"),
        (["--trial-duration", "-1"], "--trial-duration"),
        (["--latency-fractions", "0,150"], "--latency-fractions"),
        (["--latency-fractions", "a,b"], "--latency-fractions"),
        (["--loss-tolerance", "100"], "--loss-tolerance"),
        (["--target", "127.0.0.1:99999"], "--target"),
        (["--target", "[::1"], "--target"),
        (["--target", "127.0.0.1", "--control", "127.0.0.1"], "not both"),
        (["-A", "E"], "--control only"),
        (["--session", "trial"], "--control only"),
        (["--stamp", "--control", "127.0.0.1"], "--stamp"),
        (["--min-rate", "5000", "--max-rate", "100"], "maximum rate"),
        (["--control", "127.0.0.1", "-A", "X"], "unknown mode letter"),
        (["--bogus"], "--bogus"),
        (["--sizes", "min", "compare", "-r", "fast"], "after it"),
        (["compare"], "--reflector"),
        (["compare", "-r", "nonsense"], "nonsense"),
        (["compare", "-r", "cmd:no-placeholder"], "{port}"),
        (["compare", "-r", "addr:127.0.0.1:0"], "--reflector"),
        (["compare", "-r", "c", "--stamp"], "STAMP"),
    ],
)
def test_bad_options(args: list[str], fragment: str) -> None:
    assert_one_sentence_error(invoke(*args), fragment)


def test_key_id_without_key_file() -> None:
    assert_one_sentence_error(invoke("--control", "127.0.0.1", "-u", "alice"), "key file")


def test_missing_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pfs"
    assert_one_sentence_error(invoke("--control", "127.0.0.1", "-k", str(missing)), "nope.pfs")


# -- bad targets: one sentence, exit 2 ----------------------------------------------------------


def test_nothing_listening(silent_port: int) -> None:
    result = invoke("--target", f"127.0.0.1:{silent_port}", *TINY)
    assert_one_sentence_error(result, f"no reply from 127.0.0.1:{silent_port}")


def test_size_below_the_mode_minimum(silent_port: int) -> None:
    result = invoke("--target", f"127.0.0.1:{silent_port}", "--sizes", "20")
    assert_one_sentence_error(result, "below the 41-octet minimum")


def test_plot_without_matplotlib_fails_before_measuring(
    monkeypatch: pytest.MonkeyPatch, silent_port: int, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "plot_available", lambda: False)
    measured: list[bool] = []
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: measured.append(True))
    result = invoke("--target", f"127.0.0.1:{silent_port}", "--plot", str(tmp_path / "p.png"))
    assert_one_sentence_error(result, "matplotlib")
    assert not measured


def test_c_reflector_without_a_compiler_fails_before_measuring(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cprogs, "compiler", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached
    measured: list[bool] = []
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: measured.append(True))
    result = invoke("compare", "-r", "fast", "-r", "c", *TINY)
    assert_one_sentence_error(result, "C compiler", "gcc")
    assert not measured


# -- real runs: outputs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path, Path]:
    out = tmp_path_factory.mktemp("bench")
    json_path, csv_path = out / "report.json", out / "report.csv"
    result = invoke(*TINY, "--json", str(json_path), "--csv", str(csv_path))
    return result, json_path, csv_path


def test_real_run_prints_a_table(real_run: tuple[Result, Path, Path]) -> None:
    result, _, _ = real_run
    assert result.exit_code == 0, result.output
    assert "zero-loss rate" in result.output
    assert "RTT p50 µs" in result.output or "sender-limited" in result.output
    assert "local reflector" in result.output
    # the quick profile says where it departs from RFC 2544
    assert "deviates from RFC 2544" in result.output and "§24" in result.output


def test_real_run_json_validates(real_run: tuple[Result, Path, Path]) -> None:
    _, json_path, _ = real_run
    doc = json.loads(json_path.read_text())
    validate(doc)
    assert doc["tool"] == "twamp-bench" and doc["command"] == "bench"
    assert doc["complete"] and not doc["interrupted"]
    assert doc["settings"]["trials"] == 2 and doc["settings"]["sizes"] == ["min"]
    assert doc["targets"][0]["sizes"][0]["size"] == "41"
    expected = " ".join(["twamp-bench", *TINY, "--json", str(json_path), "--csv"])
    assert doc["conditions"]["command_line"].startswith(expected)


def test_real_run_csv_has_the_documented_header(real_run: tuple[Result, Path, Path]) -> None:
    _, json_path, csv_path = real_run
    text = csv_path.read_text()
    assert text.splitlines()[0] == DOCUMENTED_CSV_HEADER
    assert ",".join(CSV_HEADER) == DOCUMENTED_CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and all(len(r) == 12 for r in rows)
    figures = {r["figure"] for r in rows}
    assert {"zero_loss_rate", "tolerant_rate"} <= figures
    doc = json.loads(json_path.read_text())
    zero = doc["targets"][0]["sizes"][0]["throughput"]["zero_loss"]
    (row,) = [r for r in rows if r["figure"] == "zero_loss_rate"]
    assert row["status"] == zero["status"] and row["unit"] == "pps"
    if zero["pps"] is not None:
        assert float(row["median"]) == pytest.approx(zero["pps"]["median"])
    for r in rows:
        if r["unit"] == "ns" and r["min"]:
            assert float(r["min"]) <= float(r["median"]) <= float(r["max"])


def test_json_to_stdout_is_only_json() -> None:
    result = invoke(*TINY, "--trials", "1", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc)
    assert len(doc["targets"]) == 1


def test_ctrl_c_keeps_and_writes_partial_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    # Ctrl-C during the first latency trial: the throughput searches are done by then.
    monkeypatch.setattr(engine, "latency_trial", interrupted)
    json_path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
    result = invoke(*TINY, "--json", str(json_path), "--csv", str(csv_path))
    assert result.exit_code == 130, result.output
    assert "partial" in result.output
    doc = json.loads(json_path.read_text())
    validate(doc)
    assert doc["interrupted"] and not doc["complete"]
    (size,) = doc["targets"][0]["sizes"]
    assert not size["complete"]
    assert len(size["throughput"]["runs"]) == 2  # both searches were kept
    assert size["throughput"]["zero_loss"]["status"] != "not_measured"
    assert size["latency"][0]["trials"] == []
    assert "zero_loss_rate" in csv_path.read_text()
    # The reflector process was stopped all the same.
    pid = doc["targets"][0]["reflector"]["pid"]
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_compare_fails_when_a_reflector_cannot_be_measured(silent_port: int) -> None:
    result = invoke("compare", "-r", "pure", "-r", f"addr:127.0.0.1:{silent_port}", *TINY)
    assert_one_sentence_error(result, "1 of 2 reflectors", f"no reply from 127.0.0.1:{silent_port}")
    assert "== pure" in result.output  # the table of the one that worked is still printed


def test_compare_runs_reflectors_side_by_side() -> None:
    require(cprogs.compiler() is not None, "no C compiler: the C reflector cannot be built")
    result = invoke("compare", "-r", "fast", "-r", "c", *TINY, "--trials", "1", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc)
    assert doc["command"] == "compare"
    names = [t["name"] for t in doc["targets"]]
    assert names[0].startswith("fast (") and names[1] == "c"
    assert doc["targets"][1]["reflector"]["implementation"] == "c"
    (row,) = doc["comparison"]
    assert row["baseline"] == names[0] and [e["target"] for e in row["entries"]] == names
    first = row["entries"][0]
    assert first["zero_loss_ratio"] in (None, 1.0)
    for t in doc["targets"]:
        assert t["error"] is None
        assert t["reflector"]["counters"] is not None  # stopped by PID, counters collected


def test_plot_draws_a_png(real_run: tuple[Result, Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from twamp.bench.plot import plot_report

    _, json_path, _ = real_run
    out = tmp_path / "bench.png"
    plot_report(json.loads(json_path.read_text()), str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- outputs: checked before measuring, SIGTERM, plot from a saved report --------------------------


@pytest.mark.parametrize(
    ("option", "path", "fragment"),
    [
        ("--json", "{tmp}/no/such/dir/r.json", "does not exist"),
        ("--csv", "{tmp}", "is a directory"),
        ("--raw", "{tmp}/no/r.raw", "does not exist"),
        ("--plot", "{tmp}/missing/p.png", "does not exist"),
        ("--plot", "-", "file name"),
    ],
)
def test_bad_output_paths_fail_before_measuring(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, option: str, path: str, fragment: str
) -> None:
    measured: list[bool] = []
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: measured.append(True))
    result = invoke(*TINY, option, path.format(tmp=tmp_path))
    assert_one_sentence_error(result, fragment)
    assert not measured


def test_two_outputs_to_stdout_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[bool] = []
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: measured.append(True))
    assert_one_sentence_error(invoke(*TINY, "--json", "-", "--raw", "-"), "standard output")
    assert not measured


def test_a_path_under_a_file_fails_before_measuring(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "plain").write_text("")
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: pytest.fail("measured"))
    result = invoke(*TINY, "--csv", str(tmp_path / "plain" / "r.csv"))
    assert_one_sentence_error(result, "does not exist")


def test_raw_to_stdout_is_only_json_lines() -> None:
    result = invoke(*TINY, "--trials", "1", "--raw", "-")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and {line["phase"] for line in lines} <= {"throughput", "latency"}
    assert all("offered_pps" in line and "limit_reason" in line for line in lines)
    assert not Path("-").exists()


def test_sigterm_writes_the_json(tmp_path: Path) -> None:
    """SIGTERM mid-run: the table and the JSON of what was measured, exit status 143."""
    json_path = tmp_path / "r.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twamp.cli.bench",
            *TINY,
            "--trials",
            "6",
            "--trial-duration",
            "0.3",
            "--sizes",
            "min,128,512,1024,1472",
            "--json",
            str(json_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until it measures (the reflector process it started is up), then terminate.
        while time.monotonic() < deadline and not _children(proc.pid):
            time.sleep(0.1)
        time.sleep(4.0)  # the probe and the first size's calibration and trials
        assert proc.poll() is None, "the run ended before it could be terminated"
        proc.send_signal(signal.SIGTERM)  # by PID: the process this test started
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "interrupted" in out
    doc = json.loads(json_path.read_text())
    validate(doc)
    assert doc["interrupted"] and not doc["complete"]
    assert doc["targets"] and doc["targets"][0]["sizes"], "nothing measured was kept"


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_plot_subcommand_redraws_a_saved_report(
    real_run: tuple[Result, Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    _, json_path, _ = real_run
    out = tmp_path / "again.png"
    result = invoke("plot", str(json_path), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.json"
    bad.write_text('{"tool": "something else"}')
    assert_one_sentence_error(invoke("plot", str(bad), "-o", str(out)), "schema")


def test_pure_python_labels_the_fast_reflector_honestly(monkeypatch: pytest.MonkeyPatch) -> None:
    from twamp import dataplane

    monkeypatch.setattr(dataplane, "IMPLEMENTATION", "python")
    target = cli._reflector_target("fast", _defaults(), SessionOptions(), None)
    assert target.name == "fast (python)"


def _defaults() -> dict[str, Any]:
    return {"reflector_batch": 64, "busy_poll": False, "rcvbuf": 1 << 20, "stamp": False}


def test_netns_runs_in_a_fresh_namespace_and_removes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    require(os.geteuid() == 0, "--netns needs root")
    require(importlib.util.find_spec("pyroute2") is not None, "--netns needs pyroute2")
    monkeypatch.setenv("TWAMP_BENCH_NETNS_PREFIX", "twbn-test")
    ours = os.readlink("/proc/self/ns/net")
    json_path = tmp_path / "r.json"
    result = invoke(*TINY, "--trials", "1", "--netns", "--json", str(json_path))
    assert result.exit_code == 0, result.output
    doc = json.loads(json_path.read_text())
    validate(doc)
    c = doc["conditions"]
    assert c["net_namespace"] != ours  # measured elsewhere ...
    assert os.readlink("/proc/self/ns/net") == ours  # ... and back home afterwards
    assert c["conntrack_entries_end"] in (None, 0)  # nothing tracked in a fresh namespace
    assert doc["targets"][0]["sizes"][0]["throughput"]["runs"]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert "twbn-test" not in left.stdout


def test_netns_refuses_a_remote_target() -> None:
    assert_one_sentence_error(invoke("--netns", "--target", "192.0.2.1"), "--netns")


def test_sender_cores_deal_the_schedule_out(tmp_path: Path) -> None:
    """Two sender threads, each with its own socket: one sequence space in the report."""
    json_path = tmp_path / "r.json"
    result = invoke(*TINY, "--trials", "1", "--sender-cores", "2", "--json", str(json_path))
    assert result.exit_code == 0, result.output
    doc = json.loads(json_path.read_text())
    validate(doc)
    sender = doc["conditions"]["sender"]
    assert len(sender["cpus"]) == 2 and doc["settings"]["sender_cores"] == 2
    (size,) = doc["targets"][0]["sizes"]
    trials = [t for run in size["throughput"]["runs"] for t in run["trials"]]
    assert trials
    for t in trials:
        assert t["sent"] == t["packets"]  # both halves of every schedule were sent
        assert t["received"] <= t["sent"]
    assert doc["targets"][0]["reflector"]["counters"]["received"] >= sum(
        t["received"] for t in trials
    )


def test_rfc2544_profile_applies_the_rfcs_trial_rules(captured: Captured) -> None:
    result = invoke("--rfc2544")
    assert result.exit_code == 0, result.output
    s = captured.settings
    assert s.profile == "rfc2544"
    assert s.trial_duration_s == 60.0 and s.latency_s == 120.0 and s.latency_repeats == 20
    assert s.wait_s == 2.0 and s.latency_fractions_pct == (100.0,)
    # RFC 2544 §9.1's Ethernet frames as UDP payloads (frame - 18 - 20 - 8); 64 -> the minimum
    assert s.sizes == ("min", "82", "210", "466", "978", "1234", "1472")
    # On loopback there is no medium to cap the rate at: the one deviation left, said so.
    (deviation,) = s.deviations()
    assert "--medium" in deviation
    result = invoke("--rfc2544", "--medium", "10G")
    assert result.exit_code == 0, result.output
    assert captured.settings.medium == "10G" and captured.settings.deviations() == []
    assert "deviates" not in result.output
    # the quick default lists every deviation
    quick = BenchSettings()
    assert len(quick.deviations()) == 6 and any("§24" in d for d in quick.deviations())


def test_rfc2544_keeps_explicit_sizes(captured: Captured) -> None:
    assert invoke("--rfc2544", "--sizes", "min,512").exit_code == 0
    assert captured.settings.sizes == ("min", "512")


def test_fixed_rate_reports_every_interval(tmp_path: Path) -> None:
    json_path = tmp_path / "f.json"
    result = invoke(
        "--reflector-impl",
        "pure",
        "--sizes",
        "min",
        "--rate",
        "2000",
        "--duration",
        "1.0",
        "--interval",
        "0.5",
        "--json",
        str(json_path),
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and "pps" in lines[0] and "Mbit/s L1" in lines[0]
    doc = json.loads(json_path.read_text())
    validate(doc)
    fixed = doc["targets"][0]["fixed_rate"]
    assert doc["command"] == "fixed_rate" and fixed["rate_pps"] == 2000.0
    assert [i["start_s"] for i in fixed["intervals"]] == [0.0, 0.5]
    for interval in fixed["intervals"]:
        assert interval["sent"] == 1000
        assert interval["received"] <= interval["sent"]
        assert interval["l1_mbps"] == pytest.approx(
            interval["achieved_pps"] * (41 + 46 + 20) * 8 / 1e6
        )
    total = fixed["total"]
    assert total["sent"] == 2000 and total["received"] == sum(
        i["received"] for i in fixed["intervals"]
    )
