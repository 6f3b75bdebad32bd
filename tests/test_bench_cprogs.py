"""The C reference programs shipped in the package: built on first use, and correct.

`c_reflector` (what `twamp-bench compare -r c` measures) and `c_sender` (`--sender c`) are
package data, compiled with the system compiler into a cache. Their correctness is checked here
end to end on 127.0.0.1: `c_sender` against `c_reflector` and against our pure twin (every
counter of a clean run, padding truncation, TTLs, timestamps), and, with OpenSSL, an encrypted
session against the pure twin: `c_sender`'s OpenSSL protection and our `TestPacketCrypto`
agree both ways (RFC 4656 §4.1.2, RFC 5357 §4.1.2). In CI the suite runs against the installed
wheel, so these tests also show that the C programs work from a wheel, with no source checkout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import twamp
from conftest import require
from twamp.bench import cprogs
from twamp.bench.config import C_SENDER_MAX_TRIAL_S, BenchSettings
from twamp.bench.csender import RAW_DTYPE
from twamp.bench.engine import run_benchmark
from twamp.bench.report import validate
from twamp.bench.targets import LightTarget, SessionOptions

RATE = 2000
SECONDS = 1.0
PADDING = 40  # 54-octet requests: the reply keeps 13 of the 40 padding octets (RFC 5357 §4.2.1)
REPO_SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    require(cprogs.compiler() is not None, "no C compiler: the C programs cannot be built")
    return {name: cprogs.build(name) for name in ("c_reflector", "c_sender")}


def test_the_sources_ship_in_the_package() -> None:
    for name in cprogs.PROGRAMS:
        assert "int main(" in cprogs.source(name)
    if os.environ.get("TWAMP_CI"):
        # CI runs the suite against the installed wheel: the sources came from there.
        assert REPO_SRC not in Path(twamp.__file__).resolve().parents


def test_build_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require(cprogs.compiler() is not None, "no C compiler: the C programs cannot be built")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cprogs.build("c_reflector")
    assert first.parent == tmp_path / "twamp" / "bench" and os.access(first, os.X_OK)
    mtime = first.stat().st_mtime_ns
    assert cprogs.build("c_reflector") == first and first.stat().st_mtime_ns == mtime
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_without_a_compiler_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cprogs, "compiler", lambda: None)
    with pytest.raises(cprogs.BuildError, match=r"C compiler.*gcc"):
        cprogs.build("c_reflector")


def test_a_broken_compiler_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    with pytest.raises(cprogs.BuildError, match="could not build c_reflector"):
        cprogs.build("c_reflector")


class _Reflector:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), self.proc.stderr.read() if self.proc.stderr else line
        self.ready: dict[str, Any] = json.loads(line[6:])

    def stop(self) -> dict[str, Any]:
        self.proc.terminate()  # by PID: the process this test started
        out, _ = self.proc.communicate(timeout=10)
        counters: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return counters


@pytest.fixture
def reflector() -> Iterator[Any]:
    started: list[_Reflector] = []

    def start(argv: list[str]) -> _Reflector:
        started.append(_Reflector(argv))
        return started[-1]

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.communicate()


def _pure(*extra: str) -> list[str]:
    return [sys.executable, "-m", "twamp.bench.reflector_proc", "--impl", "pure", *extra]


def _send(
    sender: Path, port: int, raw: Path, *extra: str, addr: str = "127.0.0.1", rate: int = RATE
) -> dict[str, Any]:
    argv = [str(sender), "-a", addr, "-p", str(port), "-r", str(rate)]
    argv += ["-d", f"{SECONDS:g}", "-w", "300", "-B", "1", "-o", str(raw), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(("impl", "ttl"), [("c", 99), ("python", 77)])
def test_c_sender_against_a_reflector(
    built: dict[str, Path], reflector: Any, tmp_path: Path, impl: str, ttl: int
) -> None:
    argv = [str(built["c_reflector"]), "--", "0", "-1"] if impl == "c" else _pure("--port", "0")
    refl = reflector(argv)
    raw = tmp_path / "raw"
    result = _send(built["c_sender"], refl.ready["port"], raw, "-s", str(PADDING), "-t", str(ttl))
    counters = refl.stop()
    sent, received = result["sent"], result["received"]
    assert sent == result["planned"] == RATE * SECONDS
    # loopback at 2 kpps with megabyte buffers: anything lost means a broken reflector
    assert received >= 0.99 * sent, result
    for counter in ("duplicates", "unexpected", "malformed", "auth_failed", "send_errors"):
        assert result[counter] == 0, counter
    assert result["length"] == 14 + PADDING  # reply length max(54, 41), padding kept in order
    assert result["padding_mismatch"] == 0
    # Sender TTL = the TTL the request arrived with; replies leave with 255 (RFC 5357 §4.2.1)
    assert result["sender_ttl"] == ttl and result["sender_ttl_mismatch"] == 0
    assert result["reply_ttl_not_255"] == 0 and result["no_timestamp"] == 0
    assert result["negative_residence"] == 0
    records = np.fromfile(raw, dtype=RAW_DTYPE)
    assert records.size == received
    assert set(records["sender_ttl"].tolist()) == {ttl}
    assert set(records["reply_ttl"].tolist()) == {255}
    t1, t2, t3, t4 = (records[f].astype(np.int64) for f in ("t1", "t2", "t3", "t4"))
    assert np.all(t3 >= t2)  # residence is never negative
    assert np.all(t4 - t1 >= t3 - t2)  # the round trip contains the residence
    assert np.all(t4 - t1 < 1_000_000_000)  # under a second on loopback
    assert counters["received"] >= received and counters["reflected"] >= received


def test_encrypted_session_against_the_pure_twin(reflector: Any, tmp_path: Path) -> None:
    """c_sender's OpenSSL protection and our TestPacketCrypto agree both ways."""
    require(cprogs.compiler() is not None, "no C compiler: the C programs cannot be built")
    require(
        Path("/usr/include/openssl/evp.h").exists(),
        "OpenSSL headers missing: apt-get install libssl-dev",
    )
    sender = cprogs.build("c_sender_ssl")
    keys = (bytes(range(16)), bytes(range(100, 132)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        src_port = s.getsockname()[1]
    refl = reflector(
        _pure(
            "--port",
            "0",
            "--mode",
            "enc",
            "--peer",
            f"127.0.0.1:{src_port}",
            "--aes-key",
            keys[0].hex(),
            "--hmac-key",
            keys[1].hex(),
        )
    )
    raw = tmp_path / "raw"
    result = _send(
        sender,
        refl.ready["port"],
        raw,
        "-m",
        "enc",
        "-P",
        str(src_port),
        "-K",
        keys[0].hex(),
        "-H",
        keys[1].hex(),
    )
    counters = refl.stop()
    assert counters["auth_failed"] == 0 and result["auth_failed"] == 0
    assert result["received"] >= 0.99 * result["sent"] > 0
    assert result["length"] == 112  # 48 + the default 64 octets of padding
    assert result["padding_mismatch"] == 0


def test_a_header_change_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache key covers bench_common.h, which both programs include."""
    require(cprogs.compiler() is not None, "no C compiler: the C programs cannot be built")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert "bench_common.h" in cprogs.headers("c_sender")
    assert '#include "bench_common.h"' in cprogs.source("c_reflector")
    first = cprogs.build("c_reflector")
    real = cprogs.headers

    def changed(name: str) -> dict[str, str]:
        return {h: t + "\n/* changed */\n" for h, t in real(name).items()}

    monkeypatch.setattr(cprogs, "headers", changed)
    second = cprogs.build("c_reflector")
    assert second != first and os.access(second, os.X_OK)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("impl", ["c", "python"])
def test_c_programs_over_ipv6(
    built: dict[str, Path], reflector: Any, tmp_path: Path, impl: str
) -> None:
    if impl == "c":
        argv = [str(built["c_reflector"]), "-a", "::1", "--", "0", "-1"]
    else:
        argv = _pure("--addr", "::1", "--port", "0")
    refl = reflector(argv)
    raw = tmp_path / "raw"
    result = _send(built["c_sender"], refl.ready["port"], raw, "-t", "99", addr="::1")
    refl.stop()
    assert result["sent"] == RATE * SECONDS
    assert result["received"] >= 0.99 * result["sent"], result
    # The Hop Limit stands for the TTL (RFC 5357 §4.2.1): the request's, and 255 back.
    assert result["sender_ttl_mismatch"] == 0 and result["reply_ttl_not_255"] == 0
    assert result["padding_mismatch"] == 0 and result["no_timestamp"] == 0
    records = np.fromfile(raw, dtype=RAW_DTYPE)
    assert records.size == result["received"]
    assert set(records["reply_ttl"].tolist()) == {255}


@pytest.mark.parametrize(
    ("family", "addr"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_c_sender_sets_the_dscp_at_the_socket(
    built: dict[str, Path], tmp_path: Path, family: int, addr: str
) -> None:
    if family == socket.AF_INET6 and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    with socket.socket(family, socket.SOCK_DGRAM) as sink:
        if family == socket.AF_INET:
            sink.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        else:
            sink.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
        sink.bind((addr, 0))
        sink.settimeout(10)
        argv = [str(built["c_sender"]), "-a", addr, "-p", str(sink.getsockname()[1])]
        argv += ["-r", "20", "-d", "0.1", "-w", "0", "-D", "46"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        _, ancillary, _, _ = sink.recvmsg(2048, 256)
    values = [
        data[0] if len(data) == 1 else struct.unpack("@i", data[:4])[0]
        for level, kind, data in ancillary
        if (level, kind)
        in ((socket.IPPROTO_IP, socket.IP_TOS), (socket.IPPROTO_IPV6, socket.IPV6_TCLASS))
    ]
    assert values == [46 << 2]  # DSCP EF, ECN Not-ECT


def test_c_sender_streams_its_records(
    built: dict[str, Path], reflector: Any, tmp_path: Path
) -> None:
    """More reflections than one write chunk (8192): every one is in the file, once."""
    refl = reflector([str(built["c_reflector"]), "--", "0", "-1"])
    raw = tmp_path / "raw"
    result = _send(built["c_sender"], refl.ready["port"], raw, rate=20_000)
    refl.stop()
    records = np.fromfile(raw, dtype=RAW_DTYPE)
    assert result["received"] > 8192, result  # loopback at 20 kpps: not more than 1 % lost
    assert records.size == result["received"] == result["raw_records"]
    assert np.unique(records["seq"]).size == records.size


def test_c_sender_runs_past_thirty_seconds_and_saves_on_sigterm(
    built: dict[str, Path], reflector: Any, tmp_path: Path
) -> None:
    """A 45 s run is accepted (the old bound was 30 s); SIGTERM ends it with its records."""
    refl = reflector([str(built["c_reflector"]), "--", "0", "-1"])
    raw = tmp_path / "raw"
    argv = [str(built["c_sender"]), "-p", str(refl.ready["port"]), "-r", "1000", "-d", "45"]
    argv += ["-w", "100", "-o", str(raw)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()  # still sending: not refused
    proc.send_signal(signal.SIGTERM)  # by PID: the process this test started
    out, err = proc.communicate(timeout=30)
    refl.stop()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] is True and result["planned"] == 45_000
    assert 100 < result["sent"] < 45_000
    records = np.fromfile(raw, dtype=RAW_DTYPE)
    assert records.size == result["received"] > 0


def test_sender_c_settings_allow_rfc2544_trials() -> None:
    # RFC 2544 §24 and §26.2: 60 s throughput and 120 s latency trials.
    BenchSettings(sender="c", trial_duration_s=60.0, latency_duration_s=120.0)
    with pytest.raises(ValueError, match="at most"):
        BenchSettings(sender="c", trial_duration_s=C_SENDER_MAX_TRIAL_S + 1)


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_sender_c_measures_an_ipv6_target(built: dict[str, Path]) -> None:
    proc = subprocess.Popen(
        _pure("--addr", "::1", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), line
        port = int(json.loads(line[6:])["port"])
        settings = BenchSettings(
            sizes=("min",),
            trials=1,
            trial_duration_s=0.1,
            latency_fractions_pct=(50.0,),
            resolution_pct=20.0,
            max_rate_pps=5000.0,
            sender="c",
        )
        options = SessionOptions(sender="c", dscp=10)
        doc = run_benchmark([LightTarget(f"[::1]:{port}", "::1", port, options)], settings)
    finally:
        proc.terminate()  # by PID: the process this test started
        proc.communicate(timeout=10)
    validate(doc)
    (t,) = doc["targets"]
    assert t["error"] is None, t["error"]
    trials = [tr for r in t["sizes"][0]["throughput"]["runs"] for tr in r["trials"]]
    assert trials and all(tr["received"] > 0 for tr in trials)
