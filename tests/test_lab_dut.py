"""DUT adapters without running them: rendered configs, timer profiles, quirks, clear errors."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import require
from twamp.lab.dut import (
    PROFILES,
    BirdDut,
    DutPort,
    FrrDut,
    external_dut,
    parse_bird_version,
    parse_frr_spf,
    parse_frr_timeval,
    parse_frr_version,
)
from twamp.lab.errors import LabError, check_root, need_program

PORTS = [DutPort("eth-gen", "192.0.2.1/30"), DutPort("eth-col", "198.51.100.1/30")]


def _frr(profile_name: str, tmp_path: Path) -> FrrDut:
    require(os.access("/usr/lib/frr/ospfd", os.X_OK), "FRR is not installed (apt-get install frr)")
    return FrrDut(
        router_id="192.0.2.129",
        ports=PORTS,
        profile=PROFILES[profile_name],
        ns="twol-unit-dut",
        state_dir=tmp_path,
        stubs=["192.0.2.129/32"],
    )


def _bird(profile_name: str, tmp_path: Path) -> BirdDut:
    require(shutil.which("bird") is not None, "BIRD 2 is not installed (apt-get install bird2)")
    return BirdDut(
        router_id="192.0.2.129",
        ports=PORTS,
        profile=PROFILES[profile_name],
        ns="twol-unit-dut",
        state_dir=tmp_path,
    )


def test_frr_tuned_renders_the_notes_config(tmp_path: Path) -> None:
    text = _frr("tuned", tmp_path).render()
    lines = text.splitlines()
    for expected in [
        "log timestamp precision 6",
        "no zebra nexthop kernel enable",
        "zebra work-queue 0",
        "interface eth-gen",
        " ip ospf network point-to-point",
        " ip ospf hello-interval 1",
        " ip ospf dead-interval 4",
        " ip ospf retransmit-interval 5",
        " ospf router-id 192.0.2.129",
        " network 192.0.2.0/30 area 0",
        " network 198.51.100.0/30 area 0",
        " network 192.0.2.129/32 area 0",
        " timers throttle spf 0 50 5000",
        " timers throttle lsa all 0",
        " timers lsa min-arrival 0",
    ]:
        assert expected in lines, expected
    assert f"log file {tmp_path / 'frr.log'} debugging" in lines


def test_frr_defaults_render_no_timers(tmp_path: Path) -> None:
    text = _frr("defaults", tmp_path).render()
    for absent in ("hello-interval", "dead-interval", "throttle", "min-arrival", "work-queue"):
        assert absent not in text
    assert "no zebra nexthop kernel enable" not in text


def test_profile_replace_and_quirks_quote_configured_values(tmp_path: Path) -> None:
    prof = PROFILES["defaults"].replace(hello_s=1, dead_s=4, retransmit_s=2)
    assert prof.name.startswith("defaults+") and prof.hello_s == 1
    dut = _frr("defaults", tmp_path)
    dut.profile = prof
    q = {x.name: x for x in dut.quirks()}
    assert q["lsr-stall"].value_ms == 2000.0 and q["lsr-stall"].configurable
    assert q["delayed-ack"].value_ms == 1000.0 and not q["delayed-ack"].configurable
    assert q["ase-timer"].value_ms == 1000.0
    assert q["zebra-work-queue"].value_ms == 10.0  # FRR's default when not configured
    assert " ip ospf hello-interval 1" in dut.render().splitlines()


def test_rfc_profile_values() -> None:
    rfc = PROFILES["rfc"]
    assert (rfc.hello_s, rfc.dead_s, rfc.retransmit_s, rfc.transmit_delay_s) == (10, 40, 5, 1)
    assert (rfc.lsa_throttle_ms, rfc.min_arrival_ms) == (5000, 1000)


def test_bird_renders_tick_and_interfaces(tmp_path: Path) -> None:
    dut = _bird("tuned", tmp_path)
    text = dut.render()
    assert "router id 192.0.2.129;" in text
    assert "  tick 1;" in text
    assert 'interface "eth-gen" { type ptp; hello 1; dead 4; retransmit 5; };' in text
    assert 'interface "lo" { stub yes; };' in text
    assert {q.name: q.value_ms for q in dut.quirks()}["tick"] == 1000.0


def test_external_creates_nothing() -> None:
    dut = external_dut("10.0.0.1", [DutPort("eth1", "192.0.2.2/30")])
    dut.start()
    dut.wait_ready()
    assert dut.alive() and dut.neighbors() == {} and dut.stop() == []
    assert dut.log_path is None and dut.quirks()[0].name == "unknown-timers"


def test_missing_program_is_one_sentence() -> None:
    with pytest.raises(
        LabError, match=r"twol-no-such-daemon is not installed: .*apt-get install x"
    ):
        need_program("twol-no-such-daemon", "x")


def test_not_root_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        check_root()


def test_interface_cost_renders_for_both_daemons(tmp_path: Path) -> None:
    """T4's link 2 is the backup (`DUT_COSTS`): FRR and BIRD both get its cost."""
    ports = [DutPort("eth-gen", "192.0.2.1/30"), DutPort("eth-gen2", "192.0.2.5/30", cost=100)]
    frr = FrrDut(
        router_id="192.0.2.129", ports=ports, profile=PROFILES["tuned"], ns="twol-unit-dut",
        state_dir=tmp_path,
    )  # fmt: skip
    lines = frr.render().splitlines()
    at = lines.index("interface eth-gen2")
    assert " ip ospf cost 100" in lines[at : at + 8]
    assert sum(" ip ospf cost" in ln for ln in lines) == 1
    bird = BirdDut(
        router_id="192.0.2.129", ports=ports, profile=PROFILES["tuned"], ns="twol-unit-dut",
        state_dir=tmp_path,
    )  # fmt: skip
    text = bird.render()
    assert 'interface "eth-gen2" { type ptp; hello 1; dead 4; retransmit 5; cost 100; };' in text
    assert 'interface "eth-gen" { type ptp; hello 1; dead 4; retransmit 5; };' in text


def test_version_parsers_on_what_the_daemons_print() -> None:
    # FRR 8.4.4 `vtysh -c 'show version'` and `ospfd --version`; BIRD 2.0.12 `birdc show
    # status` and `bird --version` (the Debian 12 packages' exact first lines)
    show = "FRRouting 8.4.4 (vm) on Linux(6.1.0-13-amd64).\nCopyright 1996-2005 Kunihiro Ishiguro"
    assert parse_frr_version(show) == "frr 8.4.4"
    assert parse_frr_version("ospfd version 8.4.4\nCopyright 1996-2005") == "frr 8.4.4"
    assert parse_frr_version("FRRouting 10.1-dev-my (h) on Linux") == "frr 10.1-dev-my"
    assert parse_frr_version("vtysh: unrecognized option '--version'") is None
    status = "BIRD 2.0.12\nRouter ID is 192.0.2.129\nCurrent server time is 2026-12-07"
    assert parse_bird_version(status) == "bird 2.0.12"
    assert parse_bird_version("BIRD version 2.0.12\n") == "bird 2.0.12"
    assert parse_bird_version("Unable to connect to server control socket") is None


def test_version_of_an_installed_daemon_not_running(tmp_path: Path) -> None:
    """Without a running daemon the binary's own --version answers (never "unknown")."""
    assert re.fullmatch(r"frr \d+\.\d+\S*", _frr("tuned", tmp_path).version())
    assert re.fullmatch(r"bird \d+\.\d+\S*", _bird("tuned", tmp_path).version())


FRR_SHOW_IP_OSPF = """\
 OSPF Routing Process, Router ID: 192.0.2.129
 Initial SPF scheduling delay 0 millisec(s)
 Minimum hold time between consecutive SPFs 50 millisec(s)
 SPF algorithm last executed 2.161s ago
 Last SPF duration 33 usecs
 SPF timer is inactive
 Area ID: 0.0.0.0 (Backbone)
   SPF algorithm executed 7 times
 Area ID: 0.0.0.1
   SPF algorithm executed 2 times
"""


def test_frr_spf_report_parser() -> None:
    """FRR 8.4.4's `show ip ospf` text (its JSON rounds the duration down to whole ms)."""
    r = parse_frr_spf(FRR_SHOW_IP_OSPF)
    assert r is not None
    assert (r["duration_us"], r["precision_us"], r["text"]) == (33, 1, "33 usecs")
    assert (r["ago_us"], r["ago_precision_us"], r["runs"]) == (2_161_000, 1_000, 9)
    longer = FRR_SHOW_IP_OSPF.replace("33 usecs", "1.250s").replace("2.161s ago", "1m05s ago")
    r = parse_frr_spf(longer)
    assert r is not None
    assert (r["duration_us"], r["precision_us"]) == (1_250_000, 1_000)
    assert (r["ago_us"], r["ago_precision_us"]) == (65_000_000, 1_000_000)
    assert parse_frr_timeval("2h03m04s") == (7_384_000_000, 1_000_000)
    assert parse_frr_timeval("1d02h03m") is None  # beyond what a §5.3 reading needs
    assert parse_frr_spf(" SPF algorithm has not been run\n") is None
