"""The multiplier-free certificate (yosys ``synth_ice40``/``synth_ecp5``): zero multipliers for every processing
element kind at several bitlengths, and for compiled networks that hold every kind."""

# amaranth: UnusedElaboratable=no

import json

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from hwnet import compiler, flow, synth
from hwnet.compiler import Arithmetic
from hwnet.datatypes import parse_type
from hwnet.gateware.pe import processing_element
from hwnet.gateware.testing import random_network

# (kind, weight type, input type): the widest of each kind that stays quick to synthesize
PE_CASES = [("xnor", "bipolar", "bipolar"), ("addsub", "bipolar", "int8"), ("ternary", "ternary", "uint4"),
            ("shift", "pot4", "int5"), ("lut", "uint2", "uint2"), ("bitplane", "int4", "uint4"),
            ("bitplane", "uint8", "int8"), ("bitserial", "int6", "uint6")]


class _Registered(wiring.Component):
    """A processing element between input and output registers (so synthesis keeps all of it)."""

    def __init__(self, unit):
        self._unit = unit
        ports = {"w": wiring.In(len(unit.w)), "x": wiring.In(len(unit.x)), "o": wiring.Out(len(unit.o))}
        if hasattr(unit, "sign_plane"):
            ports["sign_plane"] = wiring.In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = unit = self._unit
        for name in ("w", "x", "sign_plane"):
            if hasattr(self, name):
                reg = Signal(len(getattr(self, name)))
                m.d.sync += reg.eq(getattr(self, name))
                m.d.comb += getattr(unit, name).eq(reg)
        m.d.sync += self.o.eq(unit.o)
        return m


@pytest.mark.parametrize("family", synth.FAMILIES)
@pytest.mark.parametrize("kind,weight_type,in_type", PE_CASES)
def test_every_processing_element_is_multiplier_free(kind, weight_type, in_type, family):
    wt, xt = parse_type(weight_type), parse_type(in_type)
    products = None
    if kind == "lut":
        table = np.random.default_rng(0).integers(-8, 9, size=(wt.num_values, xt.num_values))
        products = tuple(tuple(int(v) for v in row) for row in table)
    unit = processing_element(simd=8, arithmetic=Arithmetic(kind, wt, xt, products))
    report = synth.synthesize(verilog.convert(_Registered(unit), name="pe_top"), top="pe_top", family=family)
    assert report.luts > 0
    assert (report.general_multipliers, report.dsp, report.multipliers) == (0, 0, 0), report.cells


def test_compiled_networks_of_every_kind_are_multiplier_free(tmp_path):
    rng = np.random.default_rng(9)
    specs = [{"weight_type": "bipolar", "out_type": "uint3"}, {"weight_type": "ternary", "out_type": "int2"},
             {"weight_type": "pot3", "out_type": "uint2"}, {"weight_type": "uint2", "products": True,
                                                            "out_type": "int3"},
             {"weight_type": "int3", "out_type": "ternary"},
             {"weight_type": "uint2", "bit_serial": True, "out_type": "bipolar"},
             {"weight_type": "ternary", "weight_storage": "logic", "out_type": "bipolar"}, {}]
    net = random_network(rng, input_size=12, hidden=[8] * 7, outputs=4, input_type="int4", binarize_input=False,
                         layers=specs, max_cycles=24)
    plan = flow.compile_design(net, tmp_path / "d")
    assert sorted({s.kind for s in plan.stages}) == sorted(compiler.PE_KINDS)
    summary = json.loads((tmp_path / "d" / "design.json").read_text())
    for family in synth.FAMILIES:
        r = summary["synthesis"][family]
        assert (r["multipliers"], r["general_multipliers"], r["dsp"]) == (0, 0, 0)
        assert r["multiplier_free"] is True
