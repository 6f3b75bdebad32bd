"""`--medium`: the theoretical maximum frame rate of an Ethernet caps the search.

RFC 2544 Appendix A: the maximum frame rate used for LAN tests SHOULD be the theoretical maximum
for the frame size on the medium; Appendix B lists it for 10 Mb/s Ethernet, RFC 5180 Appendix
A.1 for 10 Mb/s to 10 Gb/s. Known answers below are those tables, typed in from the RFCs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from twamp.bench import engine, trial
from twamp.bench.conditions import cpu_plan
from twamp.bench.config import (
    MEDIA,
    RFC2544_SIZES,
    BenchSettings,
    PacketSize,
    ethernet_max_fps,
    frame_octets,
    parse_medium,
    rfc2544_settings,
)
from twamp.bench.engine import run_benchmark
from twamp.bench.report import CSV_HEADER, csv_rows, validate
from twamp.bench.tables import format_tables
from twamp.bench.targets import LocalReflector, SessionOptions
from twamp.cli import bench as cli

# RFC 2544 Appendix B (10 Mb/s Ethernet) and RFC 5180 Appendix A.1 (100 Mb/s - 10 Gb/s):
# frame octets -> frames per second.
RFC_TABLE = {
    64: (14_880, 148_809, 1_488_095, 14_880_952),
    128: (8_445, 84_459, 844_594, 8_445_945),
    256: (4_528, 45_289, 452_898, 4_528_985),
    512: (2_349, 23_496, 234_962, 2_349_624),
    1024: (1_197, 11_973, 119_731, 1_197_318),
    1280: (961, 9_615, 96_153, 961_538),
    1518: (812, 8_127, 81_274, 812_743),
}
COLUMNS = ("10M", "100M", "1G", "10G")


@pytest.mark.parametrize("frame", sorted(RFC_TABLE))
def test_frame_rates_are_the_rfc_tables(frame: int) -> None:
    for medium, expected in zip(COLUMNS, RFC_TABLE[frame], strict=True):
        assert ethernet_max_fps(frame, MEDIA[medium][1]) == expected, (frame, medium)


@pytest.mark.parametrize("frame", sorted(RFC_TABLE))
def test_udp_payloads_map_to_the_rfc_frames(frame: int) -> None:
    # A 64-octet frame carries 18 octets of UDP payload over IPv4; shorter ones are padded.
    payload4 = max(1, frame - 46)
    l2, l1 = frame_octets(((payload4, 1),), ipv6=False)
    assert (l2, l1) == (frame, frame + 20)
    if frame - 66 >= 1:
        assert frame_octets(((frame - 66, 1),), ipv6=True)[0] == frame
    assert ethernet_max_fps(l2, MEDIA["10M"][1]) == RFC_TABLE[frame][0]


def test_a_short_payload_is_padded_to_the_minimum_frame() -> None:
    assert frame_octets(((1, 1),), ipv6=False) == (64.0, 84.0)
    assert ethernet_max_fps(frame_octets(((1, 1),), ipv6=False)[0], 10_000_000) == 14_880


def test_a_mix_shares_the_line_by_its_mean_frame() -> None:
    # 7 x 64 + 4 x 594 + 1 x 1518 octets: 12 frames take 7 x 84 + 4 x 614 + 1538 line octets.
    pattern = ((18, 7), (548, 4), (1472, 1))
    l2, l1 = frame_octets(pattern, ipv6=False)
    assert l1 == pytest.approx((7 * 84 + 4 * 614 + 1538) / 12)
    fps = ethernet_max_fps(l2, 1_000_000_000)
    assert fps == int(1e9 / (8 * l1))
    # Sending that many frames of the mix per second fills the line and no more.
    assert fps * l1 * 8 <= 1e9 < (fps + 1) * l1 * 8


def test_medium_names() -> None:
    assert parse_medium("1g") == parse_medium("1GbE") == parse_medium(" 1G ") == "1G"
    assert parse_medium("10mbe") == "10M"
    with pytest.raises(ValueError, match="not one of"):
        parse_medium("3G")
    with pytest.raises(ValueError):
        ethernet_max_fps(0, 10_000_000)
    with pytest.raises(ValueError):
        BenchSettings(medium="3G")


def test_without_a_medium_the_report_lists_a_deviation() -> None:
    full = rfc2544_settings(BenchSettings())
    assert full.sizes == RFC2544_SIZES
    (deviation,) = full.deviations()
    assert "--medium" in deviation and "Appendix A" in deviation
    capped = rfc2544_settings(BenchSettings(medium="1G"))
    assert capped.deviations() == []
    assert capped.record()["medium"] == "1G"
    assert capped.record()["medium_bps"] == 1_000_000_000


def test_an_unknown_medium_is_one_sentence() -> None:
    result = CliRunner().invoke(cli.bench, ["--medium", "3G"], prog_name="twamp-bench")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "medium '3G'" in errors[0], result.output


# -- a real search on loopback stops at the cap and says so -------------------------------------

# 1472-octet payloads are 1518-octet frames: 812 fps on 10 Mb/s Ethernet (RFC 2544 Appendix B),
# below the default --min-rate of 1000 pps (the floor follows the cap down) and far below what
# our reflector answers on loopback, so the search passes at the cap.
CAPPED = BenchSettings(
    sizes=("1472",),
    trials=2,
    trial_duration_s=0.2,
    latency_fractions_pct=(50.0,),
    resolution_pct=10.0,
    medium="10M",
)


@pytest.fixture(scope="module")
def capped_run() -> dict[str, Any]:
    reflector_cpu, sender_cpu = cpu_plan(True)
    target = LocalReflector("fast", SessionOptions(), impl="fast", cpu=reflector_cpu)
    return run_benchmark([target], CAPPED, sender_cpu=sender_cpu)


def test_the_search_stops_at_the_medium_maximum(capped_run: dict[str, Any]) -> None:
    validate(capped_run)
    assert capped_run["settings"]["medium"] == "10M"
    assert capped_run["settings"]["medium_bps"] == 10_000_000
    (t,) = capped_run["targets"]
    assert t["error"] is None
    (size,) = t["sizes"]
    assert size["medium_max_pps"] == 812
    assert size["l2_octets"] == 1518
    runs = size["throughput"]["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["cap_pps"] == 812 and run["cap_source"] == "medium"
        # Never a trial above the medium's maximum frame rate.
        assert all(tr["offered_pps"] <= 812 * (1 + 1e-9) for tr in run["trials"])
    zero = size["throughput"]["zero_loss"]
    assert zero["status"] == "at_medium_max", zero
    assert zero["pps"] is None  # not the reflector's figure
    assert zero["lower_bound_pps"] == pytest.approx(812)
    assert zero["setup_limit_pps"] == pytest.approx(812)
    # Latency is measured at a fraction of the bound, as for any lower bound.
    (point,) = size["latency"]
    assert point["offered_pps"] == pytest.approx(406)


def test_the_table_says_the_figure_is_the_medium_s(capped_run: dict[str, Any]) -> None:
    text = format_tables(capped_run)
    assert "the medium's maximum frame rate (812 fps" in text
    assert "the reflector's own limit may be higher" in text
    assert "10 Mb/s Ethernet" in text
    assert ">= 812 pps, the medium's max" in text
    # Never as the reflector's figure: no "812 pps (812 pps-812 pps)" median cell.
    assert "812 pps (" not in text
    rows = [r for r in csv_rows(capped_run) if r[3] == "zero_loss_rate"]
    assert rows and rows[0][CSV_HEADER.index("status")] == "at_medium_max"


def test_a_fixed_rate_above_the_medium_is_refused() -> None:
    result = CliRunner().invoke(
        cli.bench,
        ["--medium", "10M", "--sizes", "1472", "--rate", "900", "--duration", "0.2"],
        prog_name="twamp-bench",
    )
    assert result.exit_code != 0
    assert "812 fps" in result.output and "10 Mb/s Ethernet" in result.output, result.output
    assert "Traceback" not in result.output


def test_packet_size_mean_frame_for_imix() -> None:
    size = PacketSize("imix", ((41, 7), (576, 4), (1472, 1)))
    l2, _ = frame_octets(size.pattern, ipv6=False)
    assert ethernet_max_fps(l2, MEDIA["100G"][1]) > ethernet_max_fps(l2, MEDIA["10G"][1])


# -- which limit sets the cap ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "medium", "cap", "source"),
    [
        ("ours", None, 9e6, "sender"),  # 90 % of the calibrated 10 Mpps
        ("c", None, 200_000_000 / 120.0, "sender"),  # c_sender's packets per 120 s trial
        ("c", "10G", 812_743, "medium"),  # 1518-octet frames on 10 Gb/s Ethernet
        ("ours", "400G", 9e6, "sender"),  # 32.5 M fps on 400 Gb/s: the sender is lower
    ],
)
def test_the_lowest_limit_sets_the_cap(
    monkeypatch: pytest.MonkeyPatch, sender: str, medium: str | None, cap: float, source: str
) -> None:
    monkeypatch.setattr(engine, "calibrate", lambda *_: 10e6)
    settings = rfc2544_settings(BenchSettings(sender=sender, medium=medium))
    target: Any = type("T", (), {"name": "t", "fmt": None, "options": None})()
    ctx = engine._Context(target, settings, trial.Thresholds(1, 1), lambda _: None, [None])
    size = PacketSize("1472", ((1472, 1),))
    result = engine._new_size(size, False, medium)
    got, why = engine._first_cap(ctx, size, result)
    assert got == pytest.approx(cap) and why == source
    assert result["cap_pps"] == pytest.approx(cap)


def test_a_report_from_before_medium_still_validates(capped_run: dict[str, Any]) -> None:
    """`twamp-bench plot OLD.json` keeps working: the --medium fields are optional."""
    old = json.loads(json.dumps(capped_run))
    del old["settings"]["medium"], old["settings"]["medium_bps"]
    for t in old["targets"]:
        for size in t["sizes"]:
            del size["medium_max_pps"]
    validate(old)
    assert "medium" not in format_tables(old).splitlines()[1]
