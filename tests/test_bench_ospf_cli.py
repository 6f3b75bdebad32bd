"""`twamp-bench ospf` and `twamp-bench ospf report LOG` from the command line (no root needed).

The report is recomputed from a saved log (here a synthetic run with known verdicts); user
mistakes give one sentence and exit status 2, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from twamp.bench.ospf.procedures.synth import frr_like_run
from twamp.bench.ospf.report import CSV_HEADER
from twamp.cli.bench import bench


@pytest.fixture()
def saved_log(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in frr_like_run(trials=5)))
    return path


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(bench, list(args), prog_name="twamp-bench")
    return res.exit_code, res.stdout, res.stderr


def test_group_lists_ospf() -> None:
    code, out, _ = _run("--help")
    assert code == 0 and "ospf" in out
    code, out, _ = _run("ospf", "--help")
    assert code == 0 and "--timers" in out and "report" in out


def test_report_table(saved_log: Path) -> None:
    code, out, err = _run("ospf", "report", str(saved_log))
    assert code == 0, err
    assert "RFC 4061 OSPF convergence: DUT frr 8.4.4, timer profile tuned" in out
    assert "MEANINGLESS: delayed-ack 1 s" in out  # 5.3 with shared LSAcks
    assert "incl. timer: dead 4 s" in out  # 6.4, 6.5, 6.8
    for proc in ("5.1", "5.2", "5.3", "6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7", "6.8"):
        assert f"\n{proc} " in out
    assert "Scaling (median over trials)" in out


def test_report_json_csv_plot(saved_log: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    csv_path, png = tmp_path / "r.csv", tmp_path / "r.png"
    code, out, err = _run(
        "ospf", "report", str(saved_log), "--json", "-", "--csv", str(csv_path), "--plot", str(png)
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "twamp-bench-ospf/1"
    assert "RFC 4061 OSPF convergence" in err  # the table moves to stderr when JSON takes stdout
    e = next(p for p in doc["procedures"] if p["id"] == "6.8")
    assert e["verdict"]["kind"] == "includes-timer" and e["trials_valid"] == 5
    assert e["dataplane"]["window_ms"]["n"] == 5
    rows = list(csv.reader(io.StringIO(csv_path.read_text())))
    assert tuple(rows[0]) == CSV_HEADER and len(rows) == 1 + len(doc["procedures"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such event log"),
        (
            '{"t_ns": 1, "source": "lab", "event": "x"}\nnot json\n{"t_ns": 2, "source": "a", '
            '"event": "b"}\n',
            "is not a twamp-bench ospf event log",
        ),
        ('{"t_ns": 1, "source": "lab", "event": "log-start"}\n', "holds no RFC 4061 trial"),
    ],
)
def test_report_bad_logs_are_one_sentence(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "log.jsonl"
    if content is not None:
        path.write_text(content)
    code, _, err = _run("ospf", "report", str(path))
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_run_mistakes(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _run("ospf", "--tests", "5.1,7.2")
    assert code == 2 and "7.2: not an RFC 4061 procedure" in err
    code, _, err = _run("ospf", "--dut", "external")
    assert code == 2 and "needs --interface" in err
    code, _, err = _run("ospf", "--lsas", "0")
    assert code == 2 and "between 1 and 20,000" in err
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, _, err = _run("ospf", "--tests", "5.1")
    assert code == 2 and "needs root" in err and "Traceback" not in err


def test_default_trials_per_procedure() -> None:
    """Five valid trials by default, three where every trial waits out a dead interval or
    restarts the DUT; --trials N overrides all of them; --help says so."""
    from twamp.bench.ospf.drivers import RunSettings

    default = RunSettings()
    assert default.trials_for(["5.1"]) == 5 and default.trials_for(["6.7"]) == 5
    assert default.trials_for(["6.4"]) == 3 and default.trials_for(["6.8"]) == 3
    assert default.trials_for(["6.5", "6.6"]) == 3
    assert RunSettings(trials=7).trials_for(["6.8"]) == 7
    code, out, _ = _run("ospf", "--help")
    assert code == 0 and "3 for 6.4" in " ".join(out.split())


def test_report_states_trials_asked() -> None:
    from twamp.bench.ospf.report import _header

    doc = {"conditions": {"settings": {"trials": None, "trials_per_procedure": {
        "5.1": 5, "6.4": 3, "6.8": 3}}}}  # fmt: skip
    assert "valid trials asked: 3 for 6.4, 6.8; 5 for 5.1 (defaults)" in _header(doc)
