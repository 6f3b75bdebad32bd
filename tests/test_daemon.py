"""`twamp server` / `twamp reflect` as services: TOML config files (round trip, command line
wins), privileges dropped after binding (root), the pid file, JSON log lines."""

from __future__ import annotations

import json
import os
import pwd
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import require
from ops_helpers import free_port, stop, twamp, wait_listening
from twamp.cli.daemon import PidFile
from twamp.cli.reflect import reflect
from twamp.cli.server import server
from twamp.ping import PingOptions, run_light_ping, run_ping

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]

SERVER_SETTINGS: dict[str, Any] = {
    "listen": ["127.0.0.1:8620", "[::1]:8620"],
    "modes": "open,authenticated",
    "keyfile": "/etc/twamp/keys.pfs",
    "port-range": "30000-30099",
    "servwait": 60.0,
    "refwait": 30.0,
    "max-connections": 10,
    "max-sessions": 20,
    "max-sessions-per-client": 3,
    "allow": ["192.0.2.0/24", "2001:db8::/32"],
    "batch": 16,
    "busy-poll": True,
    "metrics": "127.0.0.1:9862",
    "verbose": 1,
    "quiet": False,
    "user": "nobody",
    "group": "nogroup",
    "pid-file": "/run/twamp/server.pid",
    "log-format": "json",
}
REFLECT_SETTINGS: dict[str, Any] = {
    "listen": ["127.0.0.1:8862"],
    "stateful": True,
    "allow": ["198.51.100.0/24"],
    "stamp": True,
    "dscp": 46,
    "workers": 1,
    "batch": 8,
    "busy-poll": False,
    "stats-interval": 5.0,
    "metrics": ":9863",
    "verbose": 2,
    "quiet": False,
    "user": "nobody",
    "pid-file": "/run/twamp/reflect.pid",
    "log-format": "text",
}


def toml_text(section: str, settings: dict[str, Any]) -> str:
    lines = [f"[{section}]"]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars and arrays are valid TOML
    return "\n".join(lines) + "\n"


def dump(command: Any, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(command, [*args, "--dump-config"])
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = tomllib.loads(result.output)
    return loaded


@pytest.mark.parametrize(
    ("command", "section", "settings"),
    [(server, "server", SERVER_SETTINGS), (reflect, "reflect", REFLECT_SETTINGS)],
)
def test_config_round_trip(
    tmp_path: Path, command: Any, section: str, settings: dict[str, Any]
) -> None:
    if "keyfile" in settings:  # click checks that it exists
        keys = tmp_path / "keys.pfs"
        keys.write_text(f"alice {b'secret'.hex()}\n")
        settings = {**settings, "keyfile": str(keys)}
    first = tmp_path / "a.toml"
    first.write_text(toml_text(section, settings))
    effective = dump(command, "--config", str(first))[section]
    for key, value in settings.items():
        assert effective[key] == value, key
    # every option of the command that has a value is in the dump (nothing silently dropped)
    names = {p.name for p in command.params if p.name not in ("help", "config_file")}
    names.discard("dump_config")
    shown = {k.replace("-", "_") for k in effective}
    assert {n for n in names if n in {k.replace("-", "_") for k in settings}} <= shown
    # the dump, read back, gives the same settings
    second = tmp_path / "b.toml"
    second.write_text(
        tomllib.loads(toml_text(section, effective)) and toml_text(section, effective)
    )
    assert dump(command, "--config", str(second))[section] == effective


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "twamp.toml"
    path.write_text(toml_text("server", {"max-sessions": 20, "listen": ["127.0.0.1:1"]}))
    out = dump(server, "--config", str(path), "--max-sessions", "5")["server"]
    assert out["max-sessions"] == 5 and out["listen"] == ["127.0.0.1:1"]


def test_one_file_for_both_services(tmp_path: Path) -> None:
    path = tmp_path / "twamp.toml"
    path.write_text(
        toml_text("server", {"max-sessions": 7}) + toml_text("reflect", {"stateful": True})
    )
    assert dump(server, "--config", str(path))["server"]["max-sessions"] == 7
    assert dump(reflect, "--config", str(path))["reflect"]["stateful"] is True


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nbogus = 1\n", "unknown option 'bogus' in [server]; known: "),
        ("[server\n", "is not valid TOML"),
        ("[server]\nmax-sessions = 'many'\n", "'many' is not a valid integer"),
    ],
)
def test_config_errors_are_one_sentence(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = CliRunner().invoke(server, ["--config", str(path)])
    assert result.exit_code != 0
    assert fragment in result.output and "Traceback" not in result.output


def test_missing_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(server, ["--config", str(tmp_path / "none.toml")])
    assert result.exit_code != 0
    assert "cannot read the config file" in result.output and "none.toml" in result.output


def test_pid_file_refuses_a_live_process(tmp_path: Path) -> None:
    path = tmp_path / "twop14-live.pid"
    path.write_text(f"{os.getppid()}\n")  # our parent: alive
    with pytest.raises(Exception, match="which is running"):
        PidFile(path).write()
    path.write_text("999999999\n")  # no such process: stale, replaced
    PidFile(path).write()
    assert path.read_text().strip() == str(os.getpid())
    PidFile(path).remove()
    assert not path.exists()


def test_json_log_lines(tmp_path: Path) -> None:
    port = free_port()
    proc = twamp("server", "--listen", f"127.0.0.1:{port}", "--log-format", "json")
    try:
        wait_listening(port)
        time.sleep(0.2)
    finally:
        _, err = stop(proc)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, err
    records = [json.loads(ln) for ln in lines]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("listening on" in r["message"] for r in records)


def ids(pid: int) -> tuple[list[int], list[int]]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(ln for ln in status if ln.startswith("Uid:")).split()[1:]
    gid = next(ln for ln in status if ln.startswith("Gid:")).split()[1:]
    return [int(x) for x in uid], [int(x) for x in gid]


def wait_uid(pid: int, uid: int, deadline_s: float = 15.0) -> None:
    """The drop follows the bind by a moment: wait for it (bounded)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and ids(pid)[0][0] != uid:
        time.sleep(0.05)


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    require(os.geteuid() == 0, "dropping privileges needs root")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this host")


def test_server_drops_privileges_after_binding(tmp_path: Path, nobody: pwd.struct_passwd) -> None:
    port = free_port()
    pid_file = tmp_path / "twop14-server.pid"
    proc = twamp(
        "server", "--listen", f"127.0.0.1:{port}", "--user", "nobody",
        "--pid-file", str(pid_file),
    )  # fmt: skip
    try:
        wait_listening(port)
        wait_uid(proc.pid, nobody.pw_uid)
        uid, gid = ids(proc.pid)
        assert uid == [nobody.pw_uid] * 4 and gid == [nobody.pw_gid] * 4
        assert int(pid_file.read_text()) == proc.pid
        # still serves: test sessions open new ports after the drop
        result = run_ping(f"127.0.0.1:{port}", PingOptions(count=5, interval=0.005, wait=0.5))
        assert result.summary["counts"]["received"] == 5
    finally:
        _, err = stop(proc)
    assert proc.returncode == 0, err
    assert "privileges dropped to user nobody" in err


def test_reflect_drops_privileges_after_binding(nobody: pwd.struct_passwd) -> None:
    port = free_port(socket.SOCK_DGRAM)
    proc = twamp("reflect", "--listen", f"127.0.0.1:{port}", "--user", "nobody", "-v")
    try:
        wait_uid(proc.pid, nobody.pw_uid)
        uid, _ = ids(proc.pid)
        assert uid == [nobody.pw_uid] * 4
        result = run_light_ping(f"127.0.0.1:{port}", PingOptions(count=5, interval=0.005))
        assert result.summary["counts"]["received"] == 5
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_reflect_workers_parent_drops_privileges_too(nobody: pwd.struct_passwd) -> None:
    """--workers with --metrics: the parent (which serves the metrics and relays signals) must
    not keep root once the workers and the endpoint are bound, and must still stop them."""
    port, mport = free_port(socket.SOCK_DGRAM), free_port()
    proc = twamp(
        "reflect", "--listen", f"127.0.0.1:{port}", "--workers", "2",
        "--metrics", f"127.0.0.1:{mport}", "--user", "nobody",
    )  # fmt: skip
    try:
        wait_listening(mport)
        wait_uid(proc.pid, nobody.pw_uid)
        assert ids(proc.pid)[0] == [nobody.pw_uid] * 4
        children = [
            int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        assert len(children) == 2
        for child in children:
            wait_uid(child, nobody.pw_uid)
            assert ids(child)[0] == [nobody.pw_uid] * 4
        result = run_light_ping(f"127.0.0.1:{port}", PingOptions(count=5, interval=0.005))
        assert result.summary["counts"]["received"] == 5
        with socket.create_connection(("127.0.0.1", mport), timeout=5) as conn:
            conn.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, (out, err)
    assert "2 workers" in out and "stopped" in out, out
    for child in children:
        assert not Path(f"/proc/{child}").exists()


def test_user_without_root_is_one_sentence() -> None:
    if os.geteuid() == 0:
        result = CliRunner().invoke(server, ["--user", "no-such-user-twop14"])
        assert "no such user" in result.output
    else:
        result = CliRunner().invoke(server, ["--user", "nobody"])
        assert "need root" in result.output
    assert result.exit_code != 0 and "Traceback" not in result.output


# -- files shipped for operators ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_file_loads(tmp_path: Path) -> None:
    path = ROOT / "contrib" / "twamp.toml"
    assert dump(server, "--config", str(path))["server"]["user"] == "twamp"
    assert dump(reflect, "--config", str(path))["reflect"]["metrics"] == ":9863"


@pytest.mark.parametrize("unit", ["twamp-server.service", "twamp-reflect.service"])
def test_systemd_units_use_real_options(unit: str) -> None:
    import configparser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((ROOT / "contrib" / "systemd" / unit).read_text())
    exec_start = parser["Service"]["ExecStart"].split()
    command = {"server": server, "reflect": reflect}[exec_start[1]]
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    flags = [word for word in exec_start[2:] if word.startswith("--")]
    assert flags and set(flags) <= options, set(flags) - options
    pid = exec_start[exec_start.index("--pid-file") + 1]
    assert parser["Service"]["PIDFile"] == pid
    assert parser["Service"]["RuntimeDirectory"] == Path(pid).parent.name


def test_grafana_dashboard_uses_exported_metrics() -> None:
    """Every metric the dashboard queries is one our exporters produce."""
    import re

    import numpy as np

    from twamp.metrics_export import PingMetrics, ReflectorCollector, ServerCollector

    stats = {
        "connections": {"open": 0, "total": 0, "refused": 0, "refused_per_address": 0},
        "sessions": {
            "accepted": 0, "running": 0, "stopping": 0, "total": 0, "refused": 0,
            "refwait_expired": 0,
        },
        "test_ports": 0,
        "reflector": {},
    }  # fmt: skip
    ping = PingMetrics("t")
    ping.add(
        {"counts": {"sent": 1, "received": 1, "lost": 0, "duplicates": 0, "loss_pct": 0.0},
         "delay": {"rtt": {"median": 1}}},
        {}, np.array([1], dtype=np.int64), np.array([1], dtype=np.int64),
    )  # fmt: skip
    exported = {
        sample.name
        for collector in (ServerCollector(lambda: stats), ReflectorCollector(dict, "x"), ping)
        for family in collector.collect()
        for sample in family.samples
    } | {family.name for family in ServerCollector(lambda: stats).collect()}
    dashboard = json.loads((ROOT / "contrib" / "grafana" / "twamp-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\btwamp_[a-z_]+", e)}
    used |= set(re.findall(r"\btwamp_[a-z_]+", json.dumps(dashboard["templating"])))
    assert len(exprs) >= 8 and used
    assert used <= exported, used - exported
