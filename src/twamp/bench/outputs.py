"""Where a run's results go: checked before anything is measured, written after the table.

A run can take minutes (hours with `--rfc2544`); an output path that cannot be written must not
throw it away at the end. `check_outputs` therefore tries every path before the first packet:
the directory exists and is writable, the path is not a directory, at most one output goes to
standard output. `Outputs.write` then writes them in a fixed order after the table has been
printed, so that even a file that fails late (disk full) leaves the table on the screen.

`--raw FILE|-`: one JSON line per trial (throughput and latency), with the target, size and
phase added, in the order they ran; `-` is standard output, as for `--json -`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .report import to_json, write_csv

__all__ = ["OutputError", "Outputs", "check_outputs", "raw_lines"]

STDOUT = "-"


class OutputError(Exception):
    """An output that cannot be written, as one sentence."""


@dataclass(frozen=True, slots=True)
class Outputs:
    json: str | None = None
    csv: str | None = None
    raw: str | None = None
    plot: str | None = None

    @property
    def to_stdout(self) -> bool:
        """Does a machine-readable output take standard output (then no table is printed)?"""
        return STDOUT in (self.json, self.csv, self.raw)

    def items(self) -> Iterator[tuple[str, str]]:
        for option, path in (
            ("--json", self.json),
            ("--csv", self.csv),
            ("--raw", self.raw),
            ("--plot", self.plot),
        ):
            if path is not None:
                yield option, path


def _check_path(option: str, path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{option} {path}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{option} {path}: the directory {parent} does not exist")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise OutputError(f"{option} {path}: not writable")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot create files in {parent}")


def check_outputs(outputs: Outputs) -> None:
    """Raise OutputError if any output cannot be written (see the module docstring)."""
    stdout = [option for option, path in outputs.items() if path == STDOUT]
    if outputs.plot == STDOUT:
        raise OutputError("--plot needs a file name, not '-'")
    if len(stdout) > 1:
        raise OutputError(f"only one output can go to standard output, not {' and '.join(stdout)}")
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path == STDOUT:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise OutputError(f"{seen[key]} and {option} name the same file {path}")
        seen[key] = option
        _check_path(option, path)


def raw_lines(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every trial of the report, flattened, with where it belongs."""
    for target in doc["targets"]:
        for size in target.get("sizes") or []:
            for n, run in enumerate(size["throughput"]["runs"]):
                for trial in run["trials"]:
                    yield {
                        "target": target["name"],
                        "size": size["size"],
                        "phase": "throughput",
                        "run": n,
                        **trial,
                    }
            for point in size["latency"]:
                for trial in point["trials"]:
                    yield {
                        "target": target["name"],
                        "size": size["size"],
                        "phase": "latency",
                        "fraction_pct": point["fraction_pct"],
                        **trial,
                    }
        fixed = target.get("fixed_rate")
        if fixed:
            for interval in fixed["intervals"]:
                yield {"target": target["name"], "phase": "interval", **interval}


def _open(path: str, stdout: IO[str]) -> tuple[IO[str], bool]:
    if path == STDOUT:
        return stdout, False
    return open(path, "w", newline=""), True


def write_files(doc: dict[str, Any], outputs: Outputs, stdout: IO[str]) -> None:
    """JSON, CSV and raw lines (the plot is drawn by the caller: it needs matplotlib)."""
    if outputs.json is not None:
        f, close = _open(outputs.json, stdout)
        try:
            f.write(to_json(doc) + "\n")
        finally:
            if close:
                f.close()
    if outputs.csv is not None:
        f, close = _open(outputs.csv, stdout)
        try:
            write_csv(doc, f)
        finally:
            if close:
                f.close()
    if outputs.raw is not None:
        f, close = _open(outputs.raw, stdout)
        try:
            for line in raw_lines(doc):
                f.write(json.dumps(line, allow_nan=False) + "\n")
        finally:
            if close:
                f.close()
