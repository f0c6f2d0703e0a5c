# amaranth: UnusedElaboratable=no
"""The resource model: memory placement on hand-worked cases, the compressor-tree replay against the gateware,
monotonicity, designs as sums of their blocks, refused inputs, and one small comparison with yosys."""

import math
from dataclasses import replace

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hwnet import compiler, estimate, synth
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.estimate import Resources, estimate_block, estimate_design, memory_blocks
from hwnet.gateware import generate_verilog, popcount
from hwnet.gateware.mvau import MatrixVectorThresholdUnit
from hwnet.gateware.network import BeatFIFO, NetworkTop
from hwnet.gateware.pool import MaxPool
from hwnet.gateware.spram import QUEUE_DEPTH, SpramWeightStreamer
from hwnet.gateware.testing import random_cnn, random_dense, random_network
from hwnet.gateware.threshold import ThresholdUnit
from hwnet.gateware.width import WidthConverter
from hwnet.gateware.window import SlidingWindow
from hwnet.ir import MultiThreshold, Network


# -- memories, worked by hand from memory_libmap's costs (see the module documentation) --------------------------

@pytest.mark.parametrize("depth,width,ports,style,instances,geometry", [
    # ROM: logic costs width*depth/16; a 4 Kbit block 64 + 2 (one read port); 256x16 is the widest geometry
    (64, 16, "rom", "logic", 0, ""),            # 64 < 66
    (66, 16, "rom", "logic", 0, ""),            # 66 is not < 66
    (67, 16, "rom", "ebr", 1, "256x16"),        # 67 > 66
    (128, 16, "rom", "ebr", 1, "256x16"),
    (256, 8, "rom", "ebr", 1, "512x8"),         # 512x8 and 256x16 x2 (slices side by side) cost alike: narrower wins
    (64, 64, "rom", "logic", 0, ""),            # 256 < 4 blocks (258): a 64x64 ROM stays in LUTs
    (64, 65, "rom", "logic", 0, ""),            # 260 < 5 blocks (322)
    (4096, 2, "rom", "ebr", 2, "2048x2"),       # two address slices, 2 + 1 read mux
    (512, 36, "rom", "ebr", 5, "512x8"),        # 5 * 64 + 2 = 322 beats 256x16 (5 blocks + a read mux)
    # RAM (separate ports): logic costs width*depth; emulated read-first and transparency add 2 * 7
    (78, 1, "ram", "logic", 0, ""),             # 78 is not < 64 + 14
    (79, 1, "ram", "ebr", 1, "2048x2"),
    (5, 16, "ram", "ebr", 1, "256x16"),         # 80 > 78
    (33, 5, "ram", "ebr", 1, "512x8"),
    (2, 33, "ram_shared", "logic", 0, ""),      # iCE40 block RAMs have no read-write port: shared is no cheaper
])
def test_ice40_memory_cases(depth, width, ports, style, instances, geometry):
    m = memory_blocks(depth, width, "ice40", ports=ports)
    assert (m.style, m.instances, m.geometry) == (style, instances, geometry)
    assert m.resources.ebr == instances and m.resources.spram == m.resources.lutram == 0


@pytest.mark.parametrize("depth,width,ports,style,primitive,instances", [
    (116, 18, "rom", "logic", None, 0),             # 130 is not < 128 + 2
    (117, 18, "rom", "ebr", "DP16KD", 1),           # 1024x18
    (58, 36, "rom", "logic", None, 0),
    (59, 36, "rom", "ebr", "PDPW16KD", 1),          # 512x36
    (256, 64, "rom", "ebr", "PDPW16KD", 2),
    (4096, 8, "rom", "ebr", "DP16KD", 2),           # 4096x4 twice
    (16, 4, "ram", "lutram", "TRELLIS_DPR16X4", 1),
    (2, 33, "ram", "lutram", "TRELLIS_DPR16X4", 9),
    # 20 slices of 16 words: 20 * 4 + 19 * 4 / 2 + 20 / 2 + 2 = 130 < 128 + 2 * 3 (one read-write port, read
    # enable emulated); 21 slices: 136.5 > 134
    (305, 4, "ram_shared", "lutram", "TRELLIS_DPR16X4", 20),
    (321, 4, "ram_shared", "ebr", "DP16KD", 1),
    (321, 4, "ram", "lutram", "TRELLIS_DPR16X4", 21),  # separate ports: 128 + 14 = 142 > 136.5
    (1, 64, "ram", "logic", None, 0),               # one word: flip-flops
])
def test_ecp5_memory_cases(depth, width, ports, style, primitive, instances):
    m = memory_blocks(depth, width, "ecp5", ports=ports)
    assert (m.style, m.primitive, m.instances) == (style, primitive, instances)
    assert (m.resources.ebr, m.resources.lutram) == ((instances, 0) if style == "ebr" else
                                                     (0, instances) if style == "lutram" else (0, 0))


def test_unused_columns():
    # yosys places a memory on its whole width, then drops the primitives that hold only unused columns
    m = memory_blocks(100, 33, "ice40", ports="ram", unused=1)     # 256x16 x 3: the third holds only column 32
    assert (m.instances, m.stored) == (2, 32)
    m = memory_blocks(5, 17, "ice40", ports="ram", unused=1)       # 85 bits: logic; the unused column's flip-flops go
    assert (m.style, m.resources.ff) == ("logic", 5 * 16 + 16)
    m = memory_blocks(100, 20, "ice40", ports="ram", unused=1)     # column 19 shares the second block with 16..18
    assert (m.instances, m.stored) == (2, 20)
    sp = memory_blocks(16384, 64, "ice40", ports="ram_exclusive", style="spram", unused=32)
    assert (sp.instances, sp.resources.spram) == (2, 2)


def test_memory_special_cases():
    for family in estimate.FAMILIES:
        assert memory_blocks(1, 32, family).style == "none"            # a one-word ROM is a constant
        assert memory_blocks(100, 0, family).style == "none"           # every column constant
        assert memory_blocks(4096, 8, family, ports="rom", style="logic").style == "logic"
        forced = memory_blocks(8, 8, family, ports="rom", style="ebr")
        assert forced.style == "ebr" and forced.instances == 1
        with pytest.raises(HwnetError, match=r"^an SPRAM holds no initial contents: a ROM cannot live in one$"
                           if family == "ice40" else r"^SPRAM is an iCE40UP primitive; ECP5 has none$"):
            memory_blocks(16384, 16, family, style="spram")
    # ROMs never go to ECP5 distributed RAM; an asynchronous read never to block RAM
    assert memory_blocks(64, 4, "ecp5").style == "logic"
    assert memory_blocks(4096, 16, "ice40", ports="ram_async").style == "logic"
    assert memory_blocks(4096, 16, "ecp5", ports="ram_async").style == "lutram"
    sp = memory_blocks(32768, 32, "ice40", ports="ram", style="spram")
    assert (sp.style, sp.instances, sp.resources.spram) == ("spram", 4, 4)


@pytest.mark.parametrize("family", estimate.FAMILIES)
@pytest.mark.parametrize("ports", estimate.PORTS)
@pytest.mark.parametrize("width", [1, 3, 8, 16, 17, 36, 64, 130])
def test_more_depth_never_fewer_block_rams(family, ports, width):
    last = 0
    for depth in range(1, 3000, 7):
        ebr = memory_blocks(depth, width, family, ports=ports).resources.ebr
        assert ebr >= last, (depth, width)
        last = ebr


# -- the compressor tree, replayed without Amaranth ---------------------------------------------------------------

@pytest.mark.parametrize("heights", [[1], [2], [7], [64], [300], [5, 5, 5], [0, 3, 0, 9], [32, 32, 32, 32],
                                     [1, 2, 3, 4, 5, 6, 7, 8], [13, 0, 0, 2]])
def test_compressor_tree_replay_matches_the_gateware(heights, monkeypatch):
    adds, fulls = [], []
    real_add, real_full = popcount._add, popcount._full_adder

    def add(m, column, x, y, carry_in):
        out = real_add(m, column, x, y, carry_in)
        adds.append(len(out.bits))
        return out

    def full(a, b, c):
        fulls.append(1)
        return real_full(a, b, c)

    monkeypatch.setattr(popcount, "_add", add)
    monkeypatch.setattr(popcount, "_full_adder", full)
    Fragment.get(popcount.CompressorTree(heights=heights), None)
    assert estimate.compressor_tree(heights) == (len(fulls), adds)


# -- blocks and designs ---------------------------------------------------------------------------------------------

def _stage(rng, mw, mh, pe, simd, **kwargs):
    layer = random_dense(rng, mw, mh, name="fc", pe=pe, simd=simd, **kwargs)
    return compiler.plan(Network(input_type=kwargs.get("in_type", "bipolar"), input_size=mw,
                                 layers=[layer])).stages[0]


@pytest.mark.parametrize("family", estimate.FAMILIES)
def test_more_lanes_never_fewer_luts(family):
    rng = np.random.default_rng(5)
    # the same fold counts (nf = 2, sf = 2) with more PEs and wider SIMD: more logic, more flip-flops
    last = None
    for pe, simd in [(1, 4), (1, 8), (2, 8), (2, 16), (4, 16), (4, 32), (8, 32), (8, 64)]:
        stage = _stage(rng, 2 * simd, 2 * pe, pe, simd)
        r = estimate.dense_stage(stage, family)
        if last is not None:
            assert r.lut4 >= last.lut4 and r.ff >= last.ff, (pe, simd)
        last = r
    blocks = [(WidthConverter, lambda n: dict(in_lanes=3, out_lanes=n, bits=2)),
              (BeatFIFO, lambda n: dict(lanes=n, bits=2, depth=10)),
              (MaxPool, lambda n: dict(in_shape=(8, 8, n), kernel=2, simd=n, dtype=parse_type("uint2")))]
    for cls, kwargs in blocks:
        values = [estimate_block(cls, kwargs(n), family) for n in (4, 8, 16, 32)]
        assert all(b.lut4 >= a.lut4 and b.ff >= a.ff for a, b in zip(values, values[1:])), cls.__name__


def _plan(seed=3, spram=()):
    rng = np.random.default_rng(seed)
    net = random_network(rng, input_size=32, hidden=[24, 16], outputs=10, input_type="uint4",
                         foldings=[(4, 8), (2, 6), (5, 4)])
    if spram:
        net = compiler.set_hardware_choices(net, spram=spram)
    return compiler.plan(net)


@pytest.mark.parametrize("family", estimate.FAMILIES)
@pytest.mark.parametrize("design", ["mlp", "mlp without fifos", "cnn", "spram", "split"])
def test_design_is_the_sum_of_its_blocks(family, design):
    fifos = design != "mlp without fifos"
    plan = {"cnn": lambda: compiler.plan(random_cnn(np.random.default_rng(7))),
            "spram": lambda: _plan(spram=("fc0",)),
            "split": lambda: _plan(spram={"fc0": None, "fc1": 1})}.get(design, _plan)()
    total, blocks = estimate_design(plan, family, fifos=fifos)
    top = NetworkTop(plan=plan, fifos=fifos, spram_primitive=family == "ice40")
    listed = top.blocks() + ([top.spram_block()] if design in ("spram", "split") else [])
    assert [(b.name, b.cls) for b in blocks] == [(name, cls) for name, cls, _ in listed]
    summed = Resources(family)
    for b, (_, cls, kwargs) in zip(blocks, listed):
        assert b.resources == estimate_block(cls, kwargs, family, last_used=b.last_used,
                                             critical_depth=b.critical_depth)
        summed = summed + b.resources
    # the last flag is read at the output, and ignored by matrix-vector units, windows and pools
    chain = [b for b in blocks if b.cls is not SpramWeightStreamer]
    assert chain[-1].last_used
    assert all(not a.last_used for a, b in zip(chain, chain[1:]) if b.cls in (MatrixVectorThresholdUnit, MaxPool,
                                                                               SlidingWindow))
    if design in ("spram", "split"):  # SB_SPRAM256KA on iCE40 (those the widest region's bits need), a memory elsewhere
        assert blocks[-1].cls is SpramWeightStreamer
        needed = -(-max(s.word_bits for s in plan.streamed_stages) // 16)
        assert (total.spram, blocks[-1].resources.spram) == ((needed, needed) if family == "ice40" else (0, 0))
    assert total == summed
    assert total.lut4 > 0 and total.ff > 0 and total.summary()["family"] == family
    assert total.summary()["lut4_equivalent"] == round(total.lut4 + (2 * total.carry if family == "ecp5" else 0))


def test_a_split_layer_prices_the_roms_of_its_other_pes_only():
    # 4 PEs with a 256 x 16 ROM each (one iCE40 block RAM): each PE that streams instead drops its block RAM and
    # takes a 16-bit register for the word from the SPRAM stream
    stage = _stage(np.random.default_rng(8), 256, 64, 4, 16, raw=True)
    assert stage.depth == 256 and stage.weight_bits == 4 * 256 * 16
    est = [estimate.dense_stage(replace(stage, spram_pes=k), "ice40") for k in range(5)]
    assert [r.ebr for r in est] == [est[0].ebr - k for k in range(5)]
    steps = np.diff([r.ff for r in est])
    assert steps[0] > 0 and np.allclose(steps, steps[0]) and len({r.lut4 for r in est}) == 1


def test_spram_streamer():
    assert estimate.SPRAM_QUEUE_DEPTH == QUEUE_DEPTH
    regions = dict(regions=[(0, 100, 64), (100, 20, 16)], primitive=True)
    r = estimate_block(SpramWeightStreamer, regions, "ice40")
    assert (r.spram, r.ebr) == (4, 0) and r.lut4 > 0 and r.ff > 0
    with pytest.raises(HwnetError, match=r"^SB_SPRAM256KA is an iCE40UP primitive"):
        estimate_block(SpramWeightStreamer, regions, "ecp5")
    behavioural = estimate_block(SpramWeightStreamer, {**regions, "primitive": False}, "ecp5")
    assert behavioural.spram == 0 and behavioural.ebr + behavioural.lutram > 0


def test_every_block_class_has_a_model():
    rng = np.random.default_rng(1)
    stage = _stage(rng, 16, 8, 2, 4, out_type="uint3")
    tstage = compiler.plan(Network(input_type="uint4", input_size=8, layers=[
        MultiThreshold(thresholds=[[3, 9, 12]], out_type="uint2", name="q")])).stages[0]
    cases = [(MatrixVectorThresholdUnit, dict(stage=stage)), (ThresholdUnit, dict(stage=tstage)),
             (WidthConverter, dict(in_lanes=4, out_lanes=6, bits=1)), (BeatFIFO, dict(lanes=4, bits=1, depth=6)),
             (SlidingWindow, dict(in_shape=(6, 6, 4), kernel=3, stride=1, padding=1, pad_code=0, simd=2, bits=1)),
             (MaxPool, dict(in_shape=(6, 6, 4), kernel=2, simd=2, dtype=parse_type("bipolar")))]
    for family in estimate.FAMILIES:
        for cls, kwargs in cases:
            r = estimate_block(cls, kwargs, family)
            assert r.family == family and r.lut4 > 0 and r.ff > 0, cls.__name__
    # a width converter between equal lane counts is a wire
    assert estimate_block(WidthConverter, dict(in_lanes=4, out_lanes=4, bits=3), "ice40") == Resources("ice40")


def test_bad_inputs_are_refused_in_one_line():
    plan = _plan()
    cases = [
        (lambda: estimate_design(plan, "gowin"), r"^unknown FPGA family 'gowin'; choose one of ice40, ecp5$"),
        (lambda: memory_blocks(16, 8, "xc7"), r"^unknown FPGA family 'xc7'"),
        (lambda: estimate_block(dict, {}, "ice40"), r"^no resource model for block class dict; the model knows "),
        (lambda: estimate_block(Module, {}, "ice40"), r"^no resource model for block class Module"),
        (lambda: estimate_block(WidthConverter, dict(in_lanes=2, bits=1), "ecp5"),
         r"^WidthConverter needs the keyword argument 'out_lanes'$"),
        (lambda: estimate_block(BeatFIFO, dict(lanes=2, bits=1, depth=1), "ecp5"),
         r"^FIFO depth must be an integer >= 2, not 1$"),
        (lambda: estimate_block(MatrixVectorThresholdUnit, dict(stage=plan), "ice40"),
         r"^MatrixVectorThresholdUnit needs a DenseStage, not DesignPlan$"),
        (lambda: memory_blocks(0, 8, "ice40"), r"^memory depth must be an integer >= 1, not 0$"),
        (lambda: memory_blocks(8, 8, "ice40", ports="rw"), r"^unknown memory ports 'rw'"),
        (lambda: memory_blocks(8, 8, "ice40", style="bram"), r"^unknown memory style 'bram'"),
        (lambda: memory_blocks(8, 8, "ice40", ports="rom", style="lutram"),
         r"^no lutram primitive on ice40 for a rom memory$"),
        (lambda: Resources("ice40") + Resources("ecp5"), r"^cannot add ice40 and ecp5 resources$"),
        (lambda: Resources("xc7"), r"^unknown FPGA family 'xc7'"),
    ]
    for call, pattern in cases:
        with pytest.raises(HwnetError, match=pattern) as exc:
            call()
        assert "\n" not in str(exc.value)


def test_resources_arithmetic():
    a = Resources("ecp5", lut4=10, ff=4, carry=3, ebr=1, lutram=2)
    b = a + 2 * a
    assert (b.lut4, b.ff, b.carry, b.ebr, b.lutram) == (30, 12, 9, 3, 6)
    assert a.lut4_equivalent == 16 and Resources("ice40", lut4=10, carry=3).lut4_equivalent == 10
    assert a.summary() == {"family": "ecp5", "lut4": 10, "ff": 4, "carry": 3, "ebr": 1, "spram": 0, "lutram": 2,
                           "lut4_equivalent": 16}


# -- against yosys ----------------------------------------------------------------------------------------------------

class _Rom(wiring.Component):
    def __init__(self, depth, width):
        self._depth, self._width = depth, width
        super().__init__({"addr": In(range(depth)), "en": In(1), "data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        rng = np.random.default_rng(self._depth)
        init = [int(v) for v in rng.integers(0, 1 << self._width, self._depth)]
        init[0], init[1] = (1 << self._width) - 1, 0  # no constant column
        m.submodules.rom = rom = Memory(shape=self._width, depth=self._depth, init=init)
        port = rom.read_port()
        m.d.comb += [port.addr.eq(self.addr), port.en.eq(self.en), self.data.eq(port.data)]
        return m


@pytest.mark.parametrize("family,depth,width", [("ice40", 66, 16), ("ice40", 67, 16), ("ecp5", 59, 36)])
def test_rom_placement_matches_yosys(family, depth, width):
    report = synth.synthesize(verilog.convert(_Rom(depth, width), name="top", emit_src=False), top="top",
                              family=family)
    m = memory_blocks(depth, width, family)
    assert report.brams == m.resources.ebr
    assert math.isclose(report.luts, m.resources.lut4, rel_tol=0.1, abs_tol=2)


def test_small_design_matches_yosys():
    # a whole network: block RAMs exactly, logic within the model's error
    plan = _plan(seed=4)
    text = generate_verilog(plan)
    for family in estimate.FAMILIES:
        report = synth.synthesize(text, top="hwnet_top", family=family)
        total, _ = estimate_design(plan, family)
        assert (report.brams, report.lutrams) == (total.ebr, total.lutram)
        assert abs(total.lut4 - report.luts) <= 0.25 * report.luts
        assert abs(total.ff - report.ffs) <= 0.15 * report.ffs


@pytest.mark.parametrize("family,kwargs", [
    ("ice40", dict(in_shape=(8, 8, 1), kernel=3, padding=1, simd=1, bits=4, positions=9)),     # 9 ports: logic
    ("ecp5", dict(in_shape=(16, 16, 1), kernel=3, padding=1, simd=1, bits=1, positions=3)),    # 3 LUTRAM copies
    ("ecp5", dict(in_shape=(8, 8, 1), kernel=3, padding=1, simd=1, bits=4, positions=9)),
    ("ice40", dict(in_shape=(12, 12, 2), kernel=3, padding=0, simd=2, bits=1, positions=9, pixels=2)),
    ("ecp5", dict(in_shape=(16, 16, 1), kernel=3, padding=1, simd=1, bits=1, positions=9, pixels=2)),
])
def test_line_buffers_with_several_read_ports_match_yosys(family, kwargs):
    # every read port of a RAM primitive is a copy of it; in logic the memory is there once
    report = synth.synthesize(verilog.convert(SlidingWindow(pad_code=0, **kwargs), name="top", emit_src=False),
                              top="top", family=family)
    est = estimate_block(SlidingWindow, dict(pad_code=0, **kwargs), family)
    assert (report.brams, report.lutrams) == (est.ebr, est.lutram)


def test_read_ports_copy_primitives_not_logic():
    one = memory_blocks(64, 1, "ecp5", ports="ram")
    three = memory_blocks(64, 1, "ecp5", ports="ram", read_ports=3)
    assert (three.style, three.instances, three.resources.lutram) == ("lutram", 3 * one.instances, 3 * one.instances)
    logic = memory_blocks(32, 4, "ice40", ports="ram", read_ports=9)
    assert logic.style == "logic" and logic.resources.ff == 32 * 4 + 9 * 4
    with pytest.raises(HwnetError, match=r"^read ports must be an integer >= 1, not 0$"):
        memory_blocks(32, 4, "ice40", ports="ram", read_ports=0)


@pytest.mark.parametrize("family", estimate.FAMILIES)
def test_padding_and_pixels_cost_more(family):
    # a padding converter has more multiplexers than the same one without; a conv computing 2 pixels per cycle
    # has twice the processing elements of one computing 1
    plain = estimate.width_converter(14, 42, 1, family)
    padded = estimate.width_converter(14, 42, 1, family, vector=784)
    assert padded.lut4 > plain.lut4
    from hwnet.gateware.testing import random_conv
    rng = np.random.default_rng(5)
    conv = random_conv(rng, (8, 8, 1), 8, name="c", kernel=3, padding=1, pe=8, simd=9)
    net1 = Network(input_type="bipolar", input_size=64, layers=[conv])
    net2 = Network(input_type="bipolar", input_size=64, layers=[conv.replace(pixels=2)])
    mvau1 = estimate.dense_stage(compiler.plan(net1).stages[1], family)
    mvau2 = estimate.dense_stage(compiler.plan(net2).stages[1], family)
    assert 1.6 * mvau1.lut4 < mvau2.lut4 < 2.2 * mvau1.lut4
