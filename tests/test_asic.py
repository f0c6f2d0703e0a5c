"""The ASIC-style target: technology-independent Verilog (ROMs as logic, no initial values) and the generic
synthesis area proxy (cells, flip-flops, NAND2 equivalents, multipliers). yosys only, no Verilator."""

# amaranth: UnusedElaboratable=no

import functools
import json
import re

import numpy as np
import pytest

from hwnet import asic, compiler, ir, synth
from hwnet.errors import HwnetError
from hwnet.gateware.testing import random_cnn, random_network
from hwnet.sim.cache import cached_verilog

# Widths in um of the sky130_fd_sc_hd drive-1 cells (their LEF SIZE; every cell is 2.72 um high) that yosys'
# generic cells stand for: NAND2 equivalents are widths over nand2_1's.
SKY130_WIDTH_UM = {"$_BUF_": 1.38, "$_NOT_": 1.38, "$_NAND_": 1.38, "$_NOR_": 1.38, "$_AND_": 2.30, "$_OR_": 2.30,
                   "$_ANDNOT_": 2.30, "$_ORNOT_": 2.30, "$_XOR_": 3.22, "$_XNOR_": 3.22, "$_MUX_": 4.14,
                   "$_DFF_P_": 7.36, "$_DFF_PN0_": 9.20, "$_DFF_PN1_": 9.66, "$_DLATCH_P_": 5.52}
NAND2_WIDTH_UM, HEIGHT_UM = 1.38, 2.72
SEQUENTIAL = {"$_DFF_P_", "$_DFF_PN0_", "$_DFF_PN1_", "$_DLATCH_P_"}

VENDOR = ("SB_", "TRELLIS_", "DP16KD", "PDPW16KD", "EHXPLLL", "MULT18X18D", "MULT9X9D", "ALU54B", "CCU2C", "LUT4")
# A memory (array) declaration as yosys writes it: ``reg [2:0] weights0 [15:0];``
MEMORY_RE = re.compile(r"^\s*reg\s+(\[\d+:\d+\]\s+)?(\\\S+|[A-Za-z_][\w$]*)\s+\[\d+:\d+\]\s*;", re.MULTILINE)
INITIAL_RE = re.compile(r"^\s*initial\b", re.MULTILINE)
INIT_VALUE_RE = re.compile(r"^\s*reg\b[^;]*=", re.MULTILINE)


def _ports(verilog, top="hwnet_top"):
    """The port names of module ``top``, sorted."""
    header = re.search(rf"^module {top}\((.*?)\);", verilog, re.MULTILINE | re.DOTALL).group(1)
    return sorted(name.strip() for name in header.split(","))


def _dense_net(n_in, *, seed=0, name="dense"):
    """One bipolar dense layer, 8 outputs of ``n_in`` inputs, folded PE 2 x SIMD 4 (raw accumulators out)."""
    rng = np.random.default_rng(seed)
    return ir.Network(input_type="bipolar", input_size=n_in, name=name, layers=[
        ir.Dense(weights=rng.choice([-1, 1], size=(8, n_in)), pe=2, simd=4, name="fc0")])


def _networks():
    rng = np.random.default_rng(5)
    mlp = random_network(rng, input_size=12, hidden=[8], outputs=4, input_type="uint4", max_cycles=16)
    cnn = random_cnn(np.random.default_rng(21), max_cycles=16)
    return {"mlp": mlp, "cnn": cnn, "ternary": random_network(
        np.random.default_rng(6), input_size=8, hidden=[6], outputs=3, input_type="int3", binarize_input=False,
        layers=[{"weight_type": "ternary", "out_type": "uint2"}, {}], max_cycles=12)}


@functools.cache
def _plan(name):
    return compiler.plan(_networks()[name])


@functools.cache
def _report(name):
    return asic.asic_synthesize(asic.asic_verilog(_plan(name)))


@pytest.mark.parametrize("name", ["mlp", "cnn", "ternary"])
def test_asic_verilog_is_flat_technology_independent_and_without_initial_values(name):
    plan = _plan(name)
    fpga, text = cached_verilog(plan, top="hwnet_top"), asic.asic_verilog(plan)
    # the FPGA Verilog keeps its weight ROMs (and RAMs) as initialized memories ...
    assert MEMORY_RE.search(fpga) and INITIAL_RE.search(fpga) and INIT_VALUE_RE.search(fpga)
    # ... the ASIC Verilog has none: one module, no memory, no initial block or value, no vendor primitive
    assert re.findall(r"^\s*module\s+(\S+?)\s*\(", text, re.MULTILINE) == ["hwnet_top"]
    assert text.count("endmodule") == 1
    assert not MEMORY_RE.search(text) and not INITIAL_RE.search(text) and not INIT_VALUE_RE.search(text)
    assert "$readmem" not in text
    assert not [v for v in VENDOR if v in text]
    # the same ports, and the registers that matter still reset with rst
    assert _ports(text) == _ports(fpga) and {"clk", "rst"} <= set(_ports(text))
    assert re.search(r"if \(rst\) \S+\s*<=", text)


def test_asic_verilog_synthesizes_without_any_library():
    # yosys' `hierarchy -check` (in `synth`) fails on an instance of a module it does not have: a netlist that
    # synthesizes alone instantiates no primitive. The FPGA Verilog's memories become gates and flip-flops here too.
    r = _report("mlp")
    assert r.cell_count > 0 and r.coarse_cells and not any(c.startswith("$mem") for c in r.coarse_cells)
    fpga = asic.asic_synthesize(cached_verilog(_plan("mlp"), top="hwnet_top"))
    assert any(c.startswith("$mem") for c in fpga.coarse_cells)


@pytest.mark.parametrize("name", ["mlp", "cnn", "ternary"])
def test_report_counts_and_weighs_cells_by_sky130_area(name):
    r = _report(name)
    assert set(r.cells) <= set(SKY130_WIDTH_UM), r.cells
    assert sum(r.cells.values()) == r.cell_count          # yosys' total is the sum over types
    assert r.ffs == sum(n for c, n in r.cells.items() if c in SEQUENTIAL) > 0
    expected = sum(SKY130_WIDTH_UM[c] * n for c, n in r.cells.items()) / NAND2_WIDTH_UM
    assert r.nand2_equivalents == pytest.approx(expected)
    assert r.ff_nand2_equivalents == pytest.approx(
        sum(SKY130_WIDTH_UM[c] * n for c, n in r.cells.items() if c in SEQUENTIAL) / NAND2_WIDTH_UM)
    assert r.logic_nand2_equivalents == pytest.approx(r.nand2_equivalents - r.ff_nand2_equivalents)
    assert r.cell_area_um2 == pytest.approx(expected * NAND2_WIDTH_UM * HEIGHT_UM)
    assert (r.general_multipliers, r.multipliers, r.multiplier_free) == (0, 0, True)
    assert "$mul" not in r.coarse_cells
    summary = json.loads(json.dumps(r.summary()))
    assert (summary["cell_count"], summary["ffs"], summary["multipliers"], summary["multiplier_free"]) == (
        r.cell_count, r.ffs, 0, True)
    assert summary["nand2_equivalents"] == pytest.approx(expected, abs=0.01)
    assert summary["cells"] == r.cells and summary["yosys"].startswith("Yosys ")
    md = r.markdown()
    assert f"| {r.cell_count:,} | {r.ffs:,} | {r.nand2_equivalents:,.1f} |" in md
    assert all(f"`{cell}`" in md for cell in r.cells)


def test_the_weight_table_is_the_documented_one():
    assert set(asic.NAND2_WEIGHTS) == set(SKY130_WIDTH_UM)
    for cell, width in SKY130_WIDTH_UM.items():
        assert asic.NAND2_WEIGHTS[cell] == pytest.approx(width / NAND2_WIDTH_UM)
    assert asic.NAND2_WEIGHTS["$_NAND_"] == 1.0


def test_twice_the_weights_cost_more_area():
    small, large = (asic.asic_synthesize(asic.asic_verilog(compiler.plan(_dense_net(n, seed=n)))) for n in (16, 32))
    # 8 x 16 vs 8 x 32 weights, same folding: twice the ROM words, one accumulator bit more
    assert large.nand2_equivalents > small.nand2_equivalents
    assert large.logic_nand2_equivalents > small.logic_nand2_equivalents
    assert large.cell_count > small.cell_count and large.ffs >= small.ffs


_REGISTERED_ADD = """
module top(input clk, input rst, input [7:0] a, input [7:0] b, output reg [8:0] o);
  reg [7:0] ra, rb;
  always @(posedge clk) begin
    ra <= a; rb <= b;
    if (rst) o <= 9'd0; else o <= ra + rb;
  end
endmodule
"""
_REGISTERED_MUL = _REGISTERED_ADD.replace("[8:0] o", "[15:0] o").replace("9'd0", "16'd0").replace(
    "ra + rb", "ra * rb + ra * 5 + ra * 8")
_ASYNC_RESET = """
module top(input clk, input rst, input en, input [3:0] d, output reg [3:0] q);
  always @(posedge clk or posedge rst)
    if (rst) q <= 4'b0101; else if (en) q <= d;
endmodule
"""


def test_known_designs_flip_flops_and_multipliers():
    add = asic.asic_synthesize(_REGISTERED_ADD, top="top")
    assert add.ffs == add.cells["$_DFF_P_"] == 8 + 8 + 9 and add.multiplier_free
    # ra * rb is a general multiplier; ra * 5 a constant multiplication; ra * 8 a shift
    mul = asic.asic_synthesize(_REGISTERED_MUL, top="top")
    assert (mul.general_multipliers, mul.constant_multiplications) == (1, 1)
    assert mul.multipliers == 1 and not mul.multiplier_free and mul.summary()["multiplier_free"] is False
    assert mul.coarse_cells["$mul"] == 2 and mul.nand2_equivalents > 3 * add.nand2_equivalents
    assert "**1**" in mul.markdown()
    # an asynchronous reset (active high, to 0 and to 1) maps to the library's active-low reset/set flip-flops
    # behind an inverter; the clock enable becomes a multiplexer in front of D
    ar = asic.asic_synthesize(_ASYNC_RESET, top="top")
    assert (ar.cells.get("$_DFF_PN0_"), ar.cells.get("$_DFF_PN1_"), ar.ffs) == (2, 2, 4)
    assert ar.cells.get("$_NOT_", 0) >= 1 and ar.cells.get("$_MUX_", 0) == 4


def test_spram_plan_is_refused():
    rng = np.random.default_rng(31)
    net = ir.Network(input_type="bipolar", input_size=32, name="spram", layers=[
        ir.Dense(weights=rng.choice([-1, 1], size=(16, 32)), thresholds=rng.integers(-6, 7, size=(16, 1)),
                 out_type="bipolar", pe=2, simd=16, name="fc0"),
        ir.Dense(weights=rng.choice([-1, 1], size=(4, 16)), pe=4, simd=16, name="fc1")])
    plan = compiler.plan(compiler.set_hardware_choices(net, spram={"fc0": None}))
    assert plan.spram_words > 0
    with pytest.raises(HwnetError, match=r"^the ASIC target keeps weights in ROM logic; compile without --spram "
                                         r"\(fc0 stream") as exc:
        asic.asic_verilog(plan)
    assert "\n" not in str(exc.value)
    asic.asic_verilog(compiler.plan(net))  # the same network with its weights in ROMs is fine


def test_bad_input_is_one_line():
    with pytest.raises(HwnetError, match="plan must be a DesignPlan"):
        asic.asic_verilog(_networks()["mlp"])
    with pytest.raises(HwnetError, match="not a plain Verilog identifier"):
        asic.asic_verilog(_plan("mlp"), top="top; shell rm")
    with pytest.raises(HwnetError, match="syntax error") as exc:
        asic.asic_synthesize("module top(input a; endmodule\n", top="top")
    assert "\n" not in str(exc.value)
    primitive = "module top(input a, output y);\n  SB_LUT4 lut (.I0(a), .O(y));\nendmodule\n"
    with pytest.raises(HwnetError, match=r"is not part of the design.*make it with hwnet\.asic\.asic_verilog"):
        asic.asic_synthesize(primitive, top="top")
    with pytest.raises(HwnetError, match="Module `nope' not found"):
        asic.asic_synthesize(_REGISTERED_ADD, top="nope")


def test_results_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNET_CACHE_DIR", str(tmp_path))
    plan = compiler.plan(_dense_net(16))
    text = asic.asic_verilog(plan)
    report = asic.asic_synthesize(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asic", "asic-synth", "verilog"]

    def no_tools(*args, **kwargs):
        raise AssertionError("ran a tool although the result is cached")

    monkeypatch.setattr(synth.subprocess, "run", no_tools)
    assert asic.asic_verilog(plan) == text
    assert asic.asic_synthesize(text) == report
    with pytest.raises(AssertionError):  # another top is another key
        asic.asic_synthesize(text.replace("hwnet_top", "other"), top="other")
