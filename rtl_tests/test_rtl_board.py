"""``hwnet build`` for real: bitstreams for an iCE40UP5K board (iCEBreaker) and an ECP5 board (ULX3S-85F) of the
digits MLP, auto-folded for each, with the PLL where it helps; their reports; ``hwnet run`` against the simulated
board top of the build; the ASIC-style target through the CLI.

Each build runs once per session (module fixtures) and the tests read it."""

import json

import numpy as np
import pytest

from hwnet import golden, ir
from hwnet.cli import main

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="module")
def digits_model(trained_digits, tmp_path_factory):
    _, network, ds = trained_digits
    path = tmp_path_factory.mktemp("model") / "digits.npz"
    ir.save(network, path)
    return path, network, ds


def _build(tmp_path_factory, model, board):
    out = tmp_path_factory.mktemp(board) / board
    # the cheapest design reaching 64 cycles per inference: small and quick to place, with room to spare on the
    # iCEBreaker whatever the trained weights (at 32 cycles this network sits within 1% of the UP5K's budget by
    # estimate; the fastest design for the ULX3S-85F, one cycle per inference in 21,000 LUT4s, takes nextpnr ten
    # minutes; bench/bench_boards.py builds it)
    rc = main(["build", str(model), "--board", board, "--out", str(out), "--target-cycles", "64"])
    return rc, out, json.loads((out / "board.json").read_text())


@pytest.fixture(scope="module")
def icebreaker(digits_model, tmp_path_factory):
    return _build(tmp_path_factory, digits_model[0], "icebreaker")


@pytest.fixture(scope="module")
def ulx3s(digits_model, tmp_path_factory):
    return _build(tmp_path_factory, digits_model[0], "ulx3s-85f")


@pytest.mark.parametrize("which", ["icebreaker", "ulx3s"])
def test_build_writes_a_bitstream_that_meets_timing(which, request, digits_model):
    rc, out, report = request.getfixturevalue(which)
    _, network, _ = digits_model
    assert rc == 0
    data = (out / report["bitstream"]).read_bytes()
    if report["family"] == "ice40":
        assert data[:8] == bytes.fromhex("ff0000ff7eaa997e")  # icepack's preamble
    else:
        assert b"Part: LFE5U-85F" in data[:64] and bytes.fromhex("41113043") in data  # the LFE5U-85F IDCODE
    clock = report["clock"]
    assert clock["timing_met"]
    assert all(clock["fmax_mhz"][c] >= clock["constraint_mhz"][c] for c in clock["fmax_mhz"])
    assert all(abs(n - clock["hz"] / 1e6) < 0.01 for n in clock["constraint_mhz"].values())  # timed at its clock
    for name, r in report["resources"].items():
        if isinstance(r["used"], int):
            assert r["used"] <= r["available"], name
    assert report["multipliers"]["multiplier_free"] and report["multipliers"]["multipliers"] == 0
    perf = report["performance"]
    assert perf["mismatches"] == 0
    assert perf["cycles_per_inference"] == perf["cycles_per_inference_planned"]
    assert perf["inferences_per_second"] == pytest.approx(clock["hz"] / perf["cycles_per_inference"])
    assert perf["latency_us"] == pytest.approx(perf["latency_cycles"] / clock["hz"] * 1e6)
    # the compiled design beside the bitstream is the network, folded
    built = ir.load(out / "design" / "network.npz")
    x = ds_inputs(digits_model)
    np.testing.assert_array_equal(golden.execute(built, x), golden.execute(network, x))
    md = (out / "board.md").read_text()
    assert report["bitstream"] in md and "timing met" in md


def ds_inputs(digits_model):
    return digits_model[2].test_x[:20]


def test_the_pll_is_used_where_it_helps(icebreaker, ulx3s):
    # the MLP is much faster than both board clocks: the kept build runs from a PLL, above the board clock and
    # within the first build's Fmax, and the UART divisor follows the clock
    for _, _, report in (icebreaker, ulx3s):
        clock, attempts = report["clock"], report["attempts"]
        assert attempts[0]["label"] == "board clock" and attempts[0]["timing_met"]
        first_fmax = min(attempts[0]["fmax_mhz"].values())
        assert clock["source"] == "pll" and clock["pll"] is not None
        assert clock["board_hz"] < clock["hz"] <= first_fmax * 1e6
        assert report["uart"]["divisor"] == round(clock["hz"] / report["uart"]["baud"])


def test_run_against_the_simulated_board_top_of_the_build(icebreaker, digits_model, tmp_path, capsys):
    _, out, _ = icebreaker
    _, network, ds = digits_model
    x = ds.test_x[:6]
    np.save(tmp_path / "x.npy", x)
    rc = main(["run", str(tmp_path / "x.npy"), "--board", "icebreaker", "--port", "sim", "--build", str(out),
               "--outputs", str(tmp_path / "y.npy")])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), golden.execute(network, x))
    assert "0 elements in 0 of 6 vectors" in capsys.readouterr().out


def test_run_refuses_a_build_for_another_board(ulx3s, tmp_path, capsys):
    _, out, _ = ulx3s
    np.save(tmp_path / "x.npy", np.zeros((1, 64)))
    assert main(["run", str(tmp_path / "x.npy"), "--board", "icebreaker", "--port", "sim", "--build", str(out)]) == 2
    assert "was built for 'ulx3s-85f', not 'icebreaker'" in capsys.readouterr().err


def test_build_refuses_an_existing_directory_and_writes_nothing_on_bad_input(icebreaker, digits_model, tmp_path,
                                                                              capsys):
    _, out, _ = icebreaker
    assert main(["build", str(digits_model[0]), "--board", "icebreaker", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["build", str(digits_model[0]), "--board", "icebreaker", "--out", str(tmp_path / "b"),
                 "--baud", "4000000"]) == 2
    assert "too fast" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp-*"))


def test_asic_target_through_the_cli(digits_model, tmp_path, capsys):
    out = tmp_path / "asic"
    assert main(["build", str(digits_model[0]), "--board", "asic", "--out", str(out)]) == 0
    text = (out / "hwnet_asic.v").read_text()
    assert "SB_" not in text and "TRELLIS" not in text and "initial" not in text
    report = json.loads((out / "asic.json").read_text())
    assert report["multipliers"] == 0 and report["nand2_equivalents"] > report["ffs"] > 0
    assert "NAND2 equivalents" in capsys.readouterr().out


def test_a_design_too_large_for_the_part_fails_in_place_and_route_with_its_packing(digits_model, tmp_path):
    # auto-folding would refuse it; forced onto the iCEstick's HX1K, nextpnr fails and says what was packed
    from hwnet import compiler
    from hwnet.boards import get_board
    from hwnet.build import _run_platform_build
    from hwnet.errors import HwnetError
    plan = compiler.plan(compiler.choose_folding(digits_model[1], 16))
    with pytest.raises(HwnetError, match=r"place and route failed for iCEstick: .*\(packed: ICESTORM_LC \d+/1280 "
                                         r"\(\d+%\).*fold further with --target-cycles"):
        _run_platform_build(get_board("icestick"), plan, clock_hz=12e6, pll=None, baud=115200,
                            build_dir=tmp_path / "b", progress=lambda msg: None)


def test_build_at_a_requested_clock(digits_model, tmp_path):
    # --clock-mhz: one build, its PLL at the closest frequency it makes, timed there
    out = tmp_path / "b"
    assert main(["build", str(digits_model[0]), "--board", "icebreaker", "--out", str(out), "--target-cycles", "64",
                 "--clock-mhz", "20"]) == 0
    report = json.loads((out / "board.json").read_text())
    clock = report["clock"]
    assert [a["label"] for a in report["attempts"]] == ["requested clock"]
    assert clock["source"] == "pll" and abs(clock["hz"] - 20e6) < 0.5e6
    assert all(abs(n - clock["hz"] / 1e6) < 0.01 for n in clock["constraint_mhz"].values()) and clock["timing_met"]
    assert report["uart"]["divisor"] == round(clock["hz"] / 115200)
