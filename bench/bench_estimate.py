"""Resource model benchmark: hwnet.estimate against yosys on whole networks it was not fitted to, and the fit.

Validation (the default): held-out networks (binarized MLPs 64-128-128-10 and 784-64-64-64-10 at several foldings,
int2 weights x uint2 activations all planes at once and bit-serial, ternary weights, a layer's weights in logic,
a TFC streaming its first layer's weights from SPRAM, a CNN, a network mixing processing element kinds), each built
from a random IR network (fixed seeds) with hwnet.compiler.choose_folding and plan, estimated with
hwnet.estimate.estimate_design and synthesized whole with hwnet.synth.synthesize (``synth_ice40`` / ``synth_ecp5``,
top ``hwnet_top``; SPRAM pools from ``SB_SPRAM256KA`` on iCE40, as hwnet.flow builds them). For every design,
family and resource: the estimate, the measurement and the relative error; then the median and largest absolute
relative error per resource and family; block RAM, SPRAM and distributed RAM counts compared for equality. Two
designs are also placed and routed (hwnet.synth.place_and_route, iCE40UP5K and LFE5U-25F) inside a wrapper with
six pins (the input payload shifted in from one pin, the output XOR-reduced onto one), to compare the logic
cells after packing with the synthesized LUT4 count.

Fit (``--fit``): synthesizes the training samples (:func:`training_samples`: the blocks of other random networks
and single width converters, queues, sliding windows and max-pools, synthesized alone; processing elements
between registers; SPRAM streamers; and the training networks whole, none of them a validation design or part of
one), takes their features from hwnet.estimate (``block_features``, ``design_features``, ``pe_features``) and fits
the coefficients of each family and resource by non-negative least squares (each sample weighted by
1/sqrt(size), whole networks twice); ``--update`` writes them into hwnet/estimate.py (the ``COEFFICIENTS``
table), otherwise they are printed. Memory LUT4s and flip-flops (``mem_lut``, ``mem_ff``) keep coefficient 1:
they are measured on single memories, not fitted. The fit also reports every sample whose block RAM, SPRAM or
distributed RAM count the model gets wrong.

Synthesis results are cached on disk by hwnet.synth, and the counts of each sample under
build/bench/estimate_cache (keyed by the sample and the digest of the gateware and compiler sources), so that a
refit after a change of the model runs no tool. Prints a table and writes build/bench/estimate.{md,json,png}
(estimated against measured). Usage:

    python bench/bench_estimate.py [--quick] [--no-pnr] [--jobs 1] [--out build/bench]
    python bench/bench_estimate.py --fit [--update] [--family ecp5] [--jobs 1]
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amaranth.back import verilog  # noqa: E402

from hwnet import compiler, estimate, synth  # noqa: E402
from hwnet.datatypes import parse_type  # noqa: E402
from hwnet.gateware.network import BeatFIFO, NetworkTop, generate_verilog  # noqa: E402
from hwnet.gateware.pool import MaxPool  # noqa: E402
from hwnet.gateware.testing import random_conv, random_dense, random_layer_specs, random_network  # noqa: E402
from hwnet.gateware.width import WidthConverter  # noqa: E402
from hwnet.gateware.window import SlidingWindow  # noqa: E402
from hwnet.ir import Dense, MaxPool2d, MultiThreshold, Network  # noqa: E402

FAMILIES = ("ice40", "ecp5")
TOP = "hwnet_top"
RESOURCES = ("lut4", "ff", "carry", "ebr", "spram", "lutram")
# The features fitted for each resource (the others enter that resource with coefficient 0).
FITTED = {
    "lut4": ("fa", "tree_chain_bit", "tree_narrow_bit", "lane2", "lane", "lane2_lrom", "lane_lrom", "inv", "lane_cin",
             "wrom_lut", "wrom1_lut", "add_bit", "cmp_bit", "cmpc_lut", "cmpc_bit", "sum_bit", "mux_bit", "count_bit",
             "wc_slot_bit", "wc_mux_bit", "wc_sel", "ctl_mvau", "ctl_threshold", "ctl_width", "ctl_fifo", "ctl_window",
             "ctl_pool", "ctl_spram", "crit_fa", "crit_bit", "crit_lane"),
    "carry": ("tree_carry", "add_carry", "cmp_carry", "cmpc_carry", "count_carry", "sum_bit"),
    "ff": ("reg",),
}
FIXED = {"lut4": {"mem_lut": 1.0}, "carry": {}, "ff": {"mem_ff": 1.0}}
# Whole training networks count this much more than single blocks in the fit (they are what the model is for).
NETWORK_WEIGHT = 2.0
# Validation designs also placed and routed (small enough for an iCE40UP5K).
PNR_DESIGNS = ("digits 64-128-128-10 w1a1, 256 cycles", "TFC 784-64-64-64-10 w1a1, 512 cycles")


# ---------------------------------------------------------------------------------------------------------------
# Networks

def network(seed, sizes, *, input_type="uint4", target=None, layers=None, last_raw=True, binarize=True,
            last_out_type="bipolar", logic=(), bit_serial=(), spram=(), fold=None):
    """A random network of dense layers ``sizes[0] -> ... -> sizes[-1]`` (hwnet.gateware.testing.random_network,
    seed ``seed``), folded by hwnet.compiler.choose_folding for ``target`` cycles per inference; layers named in
    ``logic`` keep their weights in logic, those in ``bit_serial`` run bit-serially, those in ``spram`` stream their
    weights from the iCE40UP's SPRAMs; ``fold`` gives some layers their (pe, simd) by name."""
    rng = np.random.default_rng(seed)
    net = random_network(rng, input_size=sizes[0], hidden=list(sizes[1:-1]), outputs=sizes[-1],
                         input_type=input_type, layers=layers, last_raw=last_raw, binarize_input=binarize,
                         last_out_type=last_out_type, foldings=[(1, 1)] * (len(sizes) - 1))
    first = net.layers[0]
    if isinstance(first, MultiThreshold):
        # random_network may draw an input threshold that every input passes (or none): the whole network's input
        # is then a constant and yosys folds the first layer away; draw one that decides something
        t = parse_type(input_type)
        if not t.min < int(first.thresholds[0, 0]) <= t.max:
            first = MultiThreshold(thresholds=[[int(rng.integers(t.min + 1, t.max + 1))]], out_type="bipolar",
                                   name=first.name)
            net = net.replace_layers([first, *net.layers[1:]])
    fold = fold or {}
    net = net.replace_layers([layer.replace(pe=fold.get(layer.name, (None, None))[0],
                                            simd=fold.get(layer.name, (None, None))[1])
                              if isinstance(layer, Dense) else layer for layer in net.layers])
    if logic or bit_serial or spram:
        net = compiler.set_hardware_choices(net, weights_in_logic=logic, bit_serial=bit_serial, spram=spram)
    return compiler.choose_folding(net, target or compiler.DEFAULT_TARGET_CYCLES)


def cnn(seed, in_shape, convs, outputs, *, input_type="uint4", weight_type="bipolar", target=None):
    """A random convolutional network: ``convs`` = [(channels, kernel, padding, pool)] (stride 1; ``pool``: a 2x2
    max-pool after it), then a raw dense layer of ``outputs``; folded by choose_folding for ``target``."""
    rng = np.random.default_rng(seed)
    layers, t, shape = [], input_type, tuple(in_shape)
    for k, (channels, kernel, padding, pool) in enumerate(convs):
        conv = random_conv(rng, shape, channels, name=f"conv{k}", kernel=kernel, padding=padding, in_type=t,
                           weight_type=weight_type, out_type="bipolar", pe=1, simd=1)
        layers.append(conv.replace(pe=None, simd=None))
        t, shape = "bipolar", conv.out_shape
        if pool:
            layers.append(MaxPool2d(in_shape=shape, kernel=2, name=f"pool{k}"))
            shape = layers[-1].out_shape
    dense = random_dense(rng, int(np.prod(shape)), outputs, name="fc", in_type=t, raw=True, pe=1, simd=1)
    layers.append(dense.replace(pe=None, simd=None))
    net = Network(input_type=input_type, input_size=int(np.prod(in_shape)), layers=layers, name="cnn")
    return compiler.choose_folding(net, target or compiler.DEFAULT_TARGET_CYCLES)


def multibit(hidden_type="uint2", weight_type="int2", n=3):
    return [{"weight_type": weight_type, "out_type": hidden_type} for _ in range(n)]


def heldout_designs(quick=False):
    """The validation designs: ``[(label, DesignPlan)]``. None of them (nor any of their blocks) is in the
    training set."""
    designs = [
        ("digits 64-128-128-10 w1a1, 64 cycles", lambda: network(101, (64, 128, 128, 10), target=64)),
        ("w int2 a uint2 64-64-32-10, 64 cycles",
         lambda: network(106, (64, 64, 32, 10), input_type="uint2", binarize=False, layers=multibit(), target=64)),
    ]
    if quick:
        return [(label, compiler.plan(make())) for label, make in designs]
    designs += [
        ("digits 64-128-128-10 w1a1, 256 cycles", lambda: network(102, (64, 128, 128, 10), target=256)),
        ("digits 64-128-128-10 w1a1, 16 cycles", lambda: network(103, (64, 128, 128, 10), target=16)),
        ("TFC 784-64-64-64-10 w1a1, 128 cycles",
         lambda: network(104, (784, 64, 64, 64, 10), input_type="uint8", target=128)),
        ("TFC 784-64-64-64-10 w1a1, 512 cycles",
         lambda: network(105, (784, 64, 64, 64, 10), input_type="uint8", target=512)),
        ("w int2 a uint2 64-64-32-10, bit-serial, 128 cycles",
         lambda: network(107, (64, 64, 32, 10), input_type="uint2", binarize=False, layers=multibit(),
                         bit_serial=("fc0", "fc1", "fc2"), target=128)),
        ("w ternary a uint3 64-48-32-10, 96 cycles",
         lambda: network(110, (64, 48, 32, 10), input_type="uint3", binarize=False,
                         layers=multibit("uint3", "ternary"), target=96)),
        ("weights in logic: 64-32-32-10 w1a1, fc1 in logic",
         lambda: network(108, (64, 32, 32, 10), logic=("fc1",), target=32)),
        ("TFC 784-64-64-64-10 w1a1, fc0 streamed from SPRAM (pe 1, simd 56)",
         lambda: network(111, (784, 64, 64, 64, 10), input_type="uint8", spram=("fc0",),
                         fold={"fc0": (1, 56)}, target=128)),
        ("CNN 8x8x1 uint4: 16c3p1 mp2 16c3p1 mp2 fc10",
         lambda: cnn(112, (8, 8, 1), [(16, 3, 1, True), (16, 3, 1, True)], 10, target=64)),
        ("mixed kinds 32-24-24-16-10, 48 cycles",
         lambda: network(109, (32, 24, 24, 16, 10), input_type="uint3", binarize=False,
                         layers=random_layer_specs(np.random.default_rng(109), 4, logic_ok=[False] * 4),
                         target=48)),
    ]
    return [(label, compiler.plan(make())) for label, make in designs]


# ---------------------------------------------------------------------------------------------------------------
# Training blocks

def training_networks():
    """Networks whose blocks are training samples (other seeds and shapes than the validation designs)."""
    nets = [
        ("w1a1 32-48-24-6", network(201, (32, 48, 24, 6), target=32)),
        ("w1a1 256-64-32-10", network(202, (256, 64, 32, 10), input_type="uint8", target=64)),
        ("w1a1 128-96-10", network(203, (128, 96, 10), target=16)),
        ("w1a1 96-200-40", network(213, (96, 200, 40), target=400, last_raw=False)),
        ("w1a1 588-48-16", network(220, (588, 48, 16), input_type="uint8", target=96)),
        ("w int3 a uint3 48-40-20-8", network(204, (48, 40, 20, 8), input_type="uint3", binarize=False,
                                              layers=multibit("uint3", "int3"), target=40)),
        ("w int4 a uint2 24-16-12-8 bit-serial", network(205, (24, 16, 12, 8), input_type="uint2", binarize=False,
                                                         layers=multibit("uint2", "int4"),
                                                         bit_serial=("fc0", "fc1", "fc2"), target=48)),
        ("w int2 a uint2 96-48-12 bit-serial", network(214, (96, 48, 12), input_type="uint2", binarize=False,
                                                       layers=multibit("uint2", "int2", 2),
                                                       bit_serial=("fc0",), target=24)),
        ("w1a1 32-16-8, fc0 in logic", network(206, (32, 16, 8), logic=("fc0",), target=16)),
        ("ternary 48-24-8, fc1 in logic", network(215, (48, 24, 8), input_type="uint2", binarize=False,
                                                   layers=multibit("ternary", "ternary", 2), logic=("fc1",),
                                                   target=24)),
        ("w ternary a ternary 40-30-10", network(216, (40, 30, 10), input_type="ternary", binarize=False,
                                                 layers=multibit("ternary", "ternary", 2), target=40)),
        ("w1a1 256-64-32-10, fc0 in SPRAM", network(217, (256, 64, 32, 10), input_type="uint8", spram=("fc0",),
                                                    fold={"fc0": (2, 32)}, target=64)),
        ("CNN 10x10x2 uint3: 8c3 mp2 12c2 fc6", cnn(218, (10, 10, 2), [(8, 3, 0, True), (12, 2, 0, False)], 6,
                                                  input_type="uint3", target=32)),
        ("CNN 12x12x1 ternary w: 6c3p1 mp2 fc8", cnn(219, (12, 12, 1), [(6, 3, 1, True)], 8, input_type="uint2",
                                                    weight_type="ternary", target=48)),
    ]
    # several output pixels per cycle: the first conv unrolled per pixel, 2 pixels per cycle
    pixels = cnn(226, (12, 12, 1), [(8, 3, 1, True), (8, 3, 1, False)], 10, input_type="uint2", target=96)
    conv0 = pixels.layers[0]
    layers = [conv0.replace(pe=conv0.out_channels, simd=conv0.patch_size, pixels=2)] + list(pixels.layers[1:])
    nets.append(("CNN 12x12x1 uint2: 8c3p1 x2 pixels mp2 8c3p1 fc10", pixels.replace_layers(layers)))
    for seed in (207, 208, 209, 210):
        rng = np.random.default_rng(seed)
        specs = random_layer_specs(rng, 3, logic_ok=[False, True, False])
        nets.append((f"mixed kinds seed {seed}", network(seed, (16, 12, 12, 8), input_type="uint3", binarize=False,
                                                         layers=specs, target=24, last_raw=seed % 2 == 0)))
    for kind, wt, it, seed in (("addsub", "bipolar", "uint4", 220), ("shift", "pot3", "uint4", 221),
                               ("shift", "pot4", "uint2", 222), ("lut", "uint2", "uint2", 223),
                               ("lut", "uint1", "uint3", 224), ("bitplane", "uint3", "uint3", 225)):
        spec = {"weight_type": wt, "out_type": "uint2", "products": kind == "lut"}
        nets.append((f"{kind} {wt} x {it} 64-32-8", network(seed, (64, 32, 8), input_type=it, binarize=False,
                                                             layers=[spec, dict(spec)], target=32)))
    return nets


# Processing elements between registers (as bench_pe.py builds them): (kind, weight type, input type, simd, weights)
PE_CONFIGS = (("xnor", "bipolar", "bipolar", 64, "rom"), ("xnor", "bipolar", "bipolar", 64, "const"),
              ("xnor", "bipolar", "bipolar", 160, "rom"), ("addsub", "bipolar", "uint2", 32, "rom"),
              ("addsub", "bipolar", "int5", 24, "rom"), ("addsub", "bipolar", "uint3", 32, "const"),
              ("ternary", "ternary", "uint2", 32, "rom"), ("ternary", "ternary", "int4", 16, "const"),
              ("shift", "pot3", "uint4", 32, "rom"), ("shift", "pot4", "uint2", 24, "rom"),
              ("shift", "pot3", "uint3", 24, "const"), ("lut", "uint1", "uint3", 32, "rom"),
              ("lut", "uint2", "uint2", 40, "rom"), ("lut", "uint2", "uint4", 16, "rom"),
              ("lut", "uint2", "uint3", 24, "const"), ("bitplane", "int2", "uint2", 32, "rom"),
              ("bitplane", "int4", "int4", 16, "rom"), ("bitplane", "uint3", "uint2", 24, "const"),
              ("bitserial", "int4", "uint4", 32, "rom"), ("bitserial", "uint3", "uint2", 48, "rom"))


def pe_samples():
    """``[(label, identity, make_verilog, features)]`` for the processing elements of :data:`PE_CONFIGS`, each
    between registers (bench_pe.Registered: weight and input codes registered, output registered)."""
    import bench_pe
    from hwnet.gateware.pe import processing_element
    samples = []
    for kind, wt, it, simd, weights in PE_CONFIGS:
        cfg = bench_pe.Config(kind, wt, it, simd, weights)
        arith = bench_pe.arithmetic(cfg)
        word = None
        if weights == "const":
            values = np.random.default_rng(bench_pe.SEED).choice(arith.weight_type.values(), simd)
            word = bench_pe.pack(arith.weight_type.encode(values), arith.weight_type.bits)

        def make(family, arith=arith, simd=simd, word=word):
            dut = processing_element(simd=simd, arithmetic=arith, weights=word)
            top = bench_pe.Registered(dut, weights=word)
            return verilog.convert(top, name=TOP, ports=top.ports, emit_src=False)

        def features(family, arith=arith, simd=simd, word=word, kind=kind):
            counts, out_bits = estimate.pe_features(arith, simd, family, word)
            lane_bits = 1 if kind == "bitserial" else arith.weight_type.bits
            counts = counts.copy()
            counts["reg"] += (0 if word is not None else simd * lane_bits) + simd * arith.in_type.bits + out_bits \
                + (kind == "bitserial")
            return counts, []

        samples.append((f"pe {cfg.name}", f"pe {cfg!r} {word}", make, features))
    return samples


def training_samples():
    """Every training sample: ``[(label, identity, make_verilog, features)]``, ``features(family)`` giving
    ``(Counter, memories)``."""
    samples = []
    for label, cls, kwargs in training_blocks():
        def make(family, cls=cls, kwargs=kwargs):
            return block_verilog(cls, kwargs)

        def features(family, cls=cls, kwargs=kwargs):
            return estimate.block_features(cls, kwargs, family)

        samples.append((label, f"{cls.__module__}.{cls.__qualname__} {sorted(kwargs.items())!r}", make, features))
    return samples + pe_samples() + spram_samples() + network_samples()


def network_samples():
    """The training networks whole (``generate_verilog``): the blocks in their places, where yosys optimizes
    across block boundaries (flags nobody reads, constants)."""
    samples = []
    for label, net in training_networks():
        plan = compiler.plan(net)

        def make(family, plan=plan):
            return design_verilog(plan, family)

        def features(family, plan=plan):
            return estimate.design_features(plan, family)

        samples.append((f"network {label}", f"design {plan.stages!r}", make, features))
    return samples


def spram_samples():
    """SPRAM weight streamers alone (hwnet.gateware.spram): SB_SPRAM256KA primitives on iCE40, a memory on ECP5."""
    from hwnet.gateware.spram import SpramWeightStreamer
    samples = []
    for regions in ([(0, 98, 64)], [(0, 256, 32), (256, 64, 16)], [(0, 40, 60), (40, 40, 8), (80, 30, 24)]):
        def make(family, regions=regions):
            return block_verilog(SpramWeightStreamer, dict(regions=regions, primitive=family == "ice40"))

        def features(family, regions=regions):
            return estimate.block_features(SpramWeightStreamer, dict(regions=regions, primitive=family == "ice40"),
                                           family)

        samples.append((f"spram streamer {regions}", f"spram {regions}", make, features))
    return samples


def design_verilog(plan, family):
    """The design's Verilog as hwnet.flow synthesizes it: SPRAM pools from SB_SPRAM256KA primitives on iCE40."""
    return generate_verilog(plan, name=TOP, spram_primitive=bool(plan.spram_words) and family == "ice40")


def training_blocks():
    """``[(label, cls, kwargs)]``: every block of the training networks, and single blocks of the kinds the
    networks do not build (sliding windows, max-pooling) or build few of (width converters, queues)."""
    blocks = []
    for label, net in training_networks():
        top = NetworkTop(plan=compiler.plan(net))
        for name, cls, kwargs in top.blocks():
            blocks.append((f"{label} | {name}", cls, kwargs))
        top._MustUse__silence = True  # only listed, never built
    for a, b, bits in ((3, 4, 1), (8, 3, 2), (16, 64, 1), (64, 8, 1), (5, 2, 3)):
        blocks.append((f"width {a}->{b} x{bits}", WidthConverter, dict(in_lanes=a, out_lanes=b, bits=bits)))
    for a, b, bits, vector in ((16, 56, 1, 784), (14, 42, 1, 784), (24, 100, 1, 1200), (8, 27, 2, 64),
                               (32, 120, 1, 1568)):  # padding, and converters of little common chunk
        blocks.append((f"width {a}->{b} x{bits} padding {vector}", WidthConverter,
                       dict(in_lanes=a, out_lanes=b, bits=bits, vector=vector)))
    for lanes, bits, depth in ((16, 1, 66), (4, 2, 130), (32, 1, 18), (8, 3, 6), (2, 1, 258)):
        blocks.append((f"fifo {lanes}x{bits} depth {depth}", BeatFIFO, dict(lanes=lanes, bits=bits, depth=depth)))
    for shape, k, s, p, simd, bits in (((8, 8, 4), 3, 1, 1, 4, 1), ((12, 12, 8), 3, 1, 0, 8, 2),
                                       ((16, 16, 3), 5, 2, 2, 3, 8), ((10, 10, 16), 3, 1, 1, 4, 1)):
        blocks.append((f"window {shape} k{k} s{s} p{p} simd {simd} x{bits}", SlidingWindow,
                       dict(in_shape=shape, kernel=k, stride=s, padding=p, pad_code=0, simd=simd, bits=bits)))
    for shape, k, p, positions, pixels, bits in (((10, 10, 1), 3, 1, 9, 1, 3), ((16, 16, 1), 3, 1, 9, 2, 1),
                                                 ((12, 12, 2), 3, 0, 9, 2, 1), ((16, 16, 1), 3, 1, 3, 1, 1)):
        blocks.append((f"window {shape} k{k} p{p} {positions} positions {pixels} pixels x{bits}", SlidingWindow,
                       dict(in_shape=shape, kernel=k, stride=1, padding=p, pad_code=0, simd=shape[2], bits=bits,
                            positions=positions, pixels=pixels)))
    for shape, k, simd, dtype, pixels in (((8, 8, 4), 2, 4, "bipolar", 1), ((12, 12, 16), 2, 8, "uint2", 1),
                                          ((6, 6, 8), 3, 2, "int4", 1), ((16, 16, 8), 2, 8, "bipolar", 2),
                                          ((12, 12, 4), 4, 4, "uint2", 4)):
        blocks.append((f"maxpool {shape} k{k} simd {simd} {dtype} {pixels} pixels", MaxPool,
                       dict(in_shape=shape, kernel=k, simd=simd, dtype=parse_type(dtype), pixels=pixels)))
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# Measuring

def measured(report):
    return {"lut4": report.luts, "ff": report.ffs, "carry": report.carries, "ebr": report.brams,
            "lutram": report.lutrams, "spram": report.sprams, "lut_muxes": report.lut_muxes}


def block_verilog(cls, kwargs):
    return verilog.convert(cls(**kwargs), name=TOP, emit_src=False)


def _sources_digest():
    """Digest of what shapes the generated Verilog and its synthesis: the gateware and compiler sources, the
    Amaranth version and hwnet.synth's yosys scripts."""
    import amaranth
    h = hashlib.sha256(amaranth.__version__.encode())
    for path in sorted((ROOT / "hwnet" / "gateware").glob("*.py")) + [ROOT / "hwnet" / "compiler.py"]:
        h.update(path.read_bytes())
    for family in FAMILIES:
        h.update(synth.yosys_script(top=TOP, family=family).encode())
    return h.hexdigest()


def synthesize_all(jobs, items):
    """``items``: [(key, identity, verilog_fn, family)]; returns {(key, family): measured counts}, printing
    progress. Counts are kept under build/bench/estimate_cache by ``identity`` (a text that determines the
    Verilog) and the sources digest, so that a refit after a change of the model only needs no tool and no
    Verilog generation; hwnet.synth's own cache keeps the reports."""
    results = {}
    digest = _sources_digest()
    cache = ROOT / "build" / "bench" / "estimate_cache"
    cache.mkdir(parents=True, exist_ok=True)

    def one(item):
        key, identity, make, family = item
        path = cache / (hashlib.sha256(f"{digest}\0{identity}\0{family}".encode()).hexdigest()[:32] + ".json")
        if path.exists():
            return (key, family), json.loads(path.read_text())
        t0 = time.perf_counter()
        report = synth.synthesize(make(family), top=TOP, family=family)
        print(f"   {key} | {family}: {report.luts} LUT4, {report.ffs} FF, {report.carries} carry, "
              f"{report.brams} EBR, {report.lutrams} LUTRAM ({time.perf_counter() - t0:.0f} s)", flush=True)
        counts = {**measured(report), "yosys": report.yosys}
        path.write_text(json.dumps(counts))
        return (key, family), counts

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for k, r in pool.map(one, items):
            results[k] = r
    return results


# ---------------------------------------------------------------------------------------------------------------
# Fitting

def fit(jobs, update, families=FAMILIES):
    from scipy.optimize import nnls
    blocks = training_samples()
    print(f"== {len(blocks)} training samples x {len(families)} families", flush=True)
    cache = {}

    def once(label, make):
        def build(family):
            key = (label, family if "spram" in label.lower() else None)
            if key not in cache:
                cache[key] = make(family)
            return cache[key]
        return build

    items = [(label, identity, once(label, make), family) for label, identity, make, _ in blocks
             for family in families]
    reports = synthesize_all(jobs, items)
    # a family not refitted keeps its coefficients
    table, rows = {family: estimate.COEFFICIENTS[family] for family in FAMILIES}, []
    for family in families:
        feats = [features(family) for _, _, _, features in blocks]
        meas = [reports[(label, family)] for label, _, _, _ in blocks]
        for (label, _, _, _), (counts, memories), m in zip(blocks, feats, meas):
            model = {r: sum(getattr(mm.resources, r) for _, mm in memories) for r in ("ebr", "lutram", "spram")}
            rows.append({"block": label, "family": family, "features": dict(counts), "measured": m,
                         **{f"{r}_model": n for r, n in model.items()}})
            if any(model[r] != m[r] for r in model):
                print(f"   MEMORY MISMATCH {label} | {family}: model {model}, yosys "
                      f"{ {r: m[r] for r in model} }", flush=True)
        table[family] = {}
        for res, names in FITTED.items():
            y = np.array([m[res] for m in meas], dtype=float)
            fixed = np.array([sum(c * counts.get(f, 0) for f, c in FIXED[res].items()) for counts, _ in feats])
            x = np.array([[counts.get(f, 0) for f in names] for counts, _ in feats], dtype=float)
            used = x.any(axis=0)
            weight = 1 / np.sqrt(np.maximum(y, 1) + 10)
            weight *= np.array([NETWORK_WEIGHT if label.startswith("network ") else 1.0
                                for label, _, _, _ in blocks])
            coef = np.zeros(len(names))
            coef[used], _ = nnls(x[:, used] * weight[:, None], (y - fixed) * weight)
            table[family][res] = {**{f: round(float(c), 4) for f, c in zip(names, coef) if c > 0}, **FIXED[res]}
            pred = x @ coef + fixed
            err = np.abs(pred - y) / np.maximum(y, 1)
            print(f"   {family} {res}: median |error| {np.median(err):.1%}, max {err.max():.1%} "
                  f"(block {blocks[int(err.argmax())][0]}: {pred[err.argmax()]:.0f} vs {y[err.argmax()]:.0f})")
            for k in np.argsort(-err)[:8]:
                print(f"      {blocks[k][0]}: {pred[k]:.0f} vs {y[k]:.0f} ({(pred[k] - y[k]) / max(y[k], 1):+.0%})")
    text = coefficients_source(table)
    print(text)
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "estimate_fit.json").write_text(json.dumps({"coefficients": table, "blocks": rows}, indent=1) + "\n")
    if update:
        path = ROOT / "hwnet" / "estimate.py"
        src = path.read_text()
        new, n = re.subn(r"^COEFFICIENTS = \{\n.*?^\}\n", text, src, count=1, flags=re.M | re.S)
        if n != 1:
            raise SystemExit("could not find the COEFFICIENTS table in hwnet/estimate.py")
        path.write_text(new)
        print(f"updated {path}")
    return table


def coefficients_source(table):
    lines = ["COEFFICIENTS = {"]
    for family, per_res in table.items():
        lines.append(f"    {family!r}: {{")
        for res, coefs in per_res.items():
            items = [f"{f!r}: {c:g}" for f, c in coefs.items()]
            body, line = [], f"        {res!r}: {{"
            for item in items:
                if len(line) + len(item) + 2 > 116:
                    body.append(line.rstrip())
                    line = " " * (len(res) + 11)
                line += item + ", "
            body.append(line.rstrip(", ") + "},")
            lines += body
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Validation

def wrapper_verilog(plan, inner):
    """``inner`` (the hwnet_top Verilog) inside a top with six pins for place-and-route: the input payload is a
    shift register loaded from ``din``, the output payload and handshakes are XOR-reduced into a flip-flop on
    ``dout``."""
    w_in = plan.input_lanes * plan.input_type.bits + 1
    w_out = plan.output_lanes * plan.output_type.bits + 1
    return inner + f"""
module pnr_top(input clk, input rst, input din, input in_valid, input out_ready, output reg dout);
  reg [{w_in - 1}:0] shift;
  wire in_ready, out_valid;
  wire [{w_out - 1}:0] out_payload;
  always @(posedge clk) shift <= {{shift[{max(w_in - 2, 0)}:0], din}};
  {TOP} dut(.clk(clk), .rst(rst), .i__valid(in_valid), .i__ready(in_ready), .i__payload(shift),
            .o__valid(out_valid), .o__ready(out_ready), .o__payload(out_payload));
  always @(posedge clk) dout <= ^out_payload ^ out_valid ^ in_ready;
endmodule
"""


def validate(quick, jobs, pnr):
    designs = heldout_designs(quick)
    print(f"== {len(designs)} held-out designs x {len(FAMILIES)} families", flush=True)
    texts = {}

    def make(label, plan):
        def build(family):
            key = (label, family if plan.spram_words else None)
            if key not in texts:
                texts[key] = design_verilog(plan, family)
            return texts[key]
        return build

    items = [(label, f"design {plan.stages!r}", make(label, plan), family) for label, plan in designs
             for family in FAMILIES]
    reports = synthesize_all(jobs, items)
    results = []
    for label, plan in designs:
        entry = {"design": label, "cycles_per_inference": plan.cycles_per_inference,
                 "stages": [_stage_text(s) for s in plan.stages]}
        for family in FAMILIES:
            t0 = time.perf_counter()
            total, blocks = estimate.estimate_design(plan, family)
            seconds = time.perf_counter() - t0
            est = total.summary()
            meas = reports[(label, family)]
            entry[family] = {
                "estimate": est, "measured": meas, "estimate_ms": seconds * 1e3,
                "error": {r: (est[r] - meas[r]) / meas[r] if meas[r] else (0.0 if est[r] == 0 else None)
                          for r in RESOURCES},
                "blocks": [{"name": b.name, "class": b.cls.__name__, **b.resources.summary(),
                            "memories": [{"name": n, "style": m.style, "shape": f"{m.depth}x{m.width}",
                                          "geometry": m.geometry, "instances": m.instances}
                                         for n, m in b.memories]} for b in blocks],
            }
            if family == "ecp5":
                entry[family]["error"]["lut4_equivalent"] = _rel(est["lut4_equivalent"],
                                                                 meas["lut4"] + 2 * meas["carry"])
        results.append(entry)
    placed = []
    if pnr:
        for label, plan in designs:
            if label not in PNR_DESIGNS:
                continue
            for family in FAMILIES:
                wrapped = wrapper_verilog(plan, design_verilog(plan, family))
                print(f"   placing {label} | {family}", flush=True)
                t0 = time.perf_counter()
                try:
                    r = synth.place_and_route(wrapped, top="pnr_top", family=family)
                except Exception as exc:  # a design too big for the device: reported, not fatal
                    placed.append({"design": label, "family": family, "error": str(exc)})
                    continue
                cell = "ICESTORM_LC" if family == "ice40" else "TRELLIS_COMB"
                placed.append({"design": label, "family": family, "device": r.device, "package": r.package,
                               "synth_lut4": r.synth.luts, "synth_carry": r.synth.carries, "synth_ff": r.synth.ffs,
                               "wrapper_ff": plan.input_lanes * plan.input_type.bits + 2,
                               "logic_cells": r.utilisation.get(cell, {}).get("used"), "cell": cell,
                               "utilisation": r.utilisation, "fmax_mhz": r.fmax_mhz,
                               "seconds": time.perf_counter() - t0})
    return results, placed


def _rel(est, meas):
    return (est - meas) / meas if meas else None


def _stage_text(s):
    if isinstance(s, compiler.DenseStage):
        where = "logic" if s.weights_in_logic else "SPRAM" if getattr(s, "streamed", False) else "ROM"
        return (f"{s.name}: {s.kind} {s.weight_type}x{s.in_type}->{s.out_type} {s.in_features}->{s.out_features} "
                f"pe {s.pe} simd {s.simd} ({s.cycles} cycles, weights in {where})")
    if isinstance(s, compiler.ThresholdStage):
        return f"{s.name}: threshold {s.in_type}->{s.out_type} x{s.lanes}"
    args = s.unit_arguments()
    if isinstance(s, compiler.WindowStage):
        return (f"{s.name}: sliding window {args['in_shape']} kernel {args['kernel']} padding {args['padding']} "
                f"simd {args['simd']}")
    return f"{s.name}: max-pool {args['in_shape']} kernel {args['kernel']} simd {args['simd']}"


def summary_stats(results):
    stats = {}
    for family in FAMILIES:
        stats[family] = {}
        keys = [r for r in RESOURCES if r != ("spram" if family == "ecp5" else "lutram")]
        keys += ["lut4_equivalent"] if family == "ecp5" else []
        for r in keys:
            errs = [abs(e[family]["error"][r]) for e in results if e[family]["error"].get(r) is not None]
            exact = sum(1 for e in results if e[family]["estimate"].get(r, None) == e[family]["measured"].get(r))
            stats[family][r] = {"median": statistics.median(errs) if errs else None, "max": max(errs) if errs else None,
                                "n": len(errs), "exact": exact if r in ("ebr", "spram", "lutram") else None}
    return stats


def markdown(report):
    results, stats = report["results"], report["stats"]
    lines = ["# Resource model against yosys (bench/bench_estimate.py)", "",
             f"Run of {report['date']} on {report['machine']['platform']} ({report['machine']['cpu_count']} cores), "
             f"{report['tools']['yosys']}. Estimates from `hwnet.estimate.estimate_design` (pure arithmetic on the "
             f"design plan, {report['estimate_ms_median']:.1f} ms per design); measurements from "
             f"`hwnet.synth.synthesize` (`synth_ice40` / `synth_ecp5 -top hwnet_top`) of the whole generated "
             f"Verilog. None of these designs, nor any of their blocks, was in the training set of the "
             f"coefficients. Error = (estimate - measured) / measured.", "",
             "## Summary: absolute relative error over the designs", "",
             "| family | resource | median | max | designs | exact |", "|---|---|---|---|---|---|"]
    for family in FAMILIES:
        for r, s in stats[family].items():
            if s["median"] is None:
                continue
            exact = f"{s['exact']}/{len(results)}" if s["exact"] is not None else ""
            lines.append(f"| {family} | {r} | {s['median']:.1%} | {s['max']:.1%} | {s['n']} | {exact} |")
    lines += ["", "Block RAM (EBR), SPRAM and ECP5 distributed RAM counts are compared for equality (`exact`); a "
              "design with none of a resource and none estimated counts as 0% error. On ECP5, `lut4_equivalent` = LUT4 + "
              "2 x CCU2C (a CCU2C carry cell holds two LUT4s).", ""]
    for family in FAMILIES:
        lines += [f"## {family}", "",
                  "| design | LUT4 est / meas (err) | FF est / meas (err) | carry est / meas (err) | EBR est / meas |"
                  + (" LUTRAM est / meas |" if family == "ecp5" else " SPRAM est / meas |"),
                  "|---|---|---|---|---|---|"]
        for e in results:
            f = e[family]
            cells = [e["design"]]
            for r in ("lut4", "ff", "carry"):
                err = f["error"][r]
                cells.append(f"{f['estimate'][r]} / {f['measured'][r]} ({'-' if err is None else f'{err:+.1%}'})")
            cells.append(f"{f['estimate']['ebr']} / {f['measured']['ebr']}")
            other = "lutram" if family == "ecp5" else "spram"
            cells.append(f"{f['estimate'][other]} / {f['measured'][other]}")
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    if report["placed"]:
        lines += ["## After place and route", "",
                  "Two designs inside a six-pin wrapper (the input payload shifted in from one pin: the wrapper's "
                  "flip-flops; the output XOR-reduced onto one), placed by nextpnr (iCE40UP5K-SG48 at 48 MHz, "
                  "LFE5U-25F-CABGA256 at 100 MHz, seed 1); synthesized counts of that wrapped design. Logic cells: "
                  "`ICESTORM_LC` (one LUT4, carry and flip-flop each: a carry or a flip-flop that finds no LUT4 of "
                  "its own takes a cell too) / `TRELLIS_COMB` (one LUT4, or half a CCU2C, each).", "",
                  "| design | family | synthesized LUT4 | carries | FF (of which wrapper) | logic cells placed | "
                  "cells / LUT4 |", "|---|---|---|---|---|---|---|"]
        for p in report["placed"]:
            if "error" in p:
                lines.append(f"| {p['design']} | {p['family']} | not placed: {p['error'][:80]} | | | | |")
                continue
            ratio = p["logic_cells"] / p["synth_lut4"] if p["logic_cells"] and p["synth_lut4"] else None
            lines.append(f"| {p['design']} | {p['family']} | {p['synth_lut4']} | {p['synth_carry']} | "
                         f"{p['synth_ff']} ({p['wrapper_ff']}) | {p['logic_cells']} | "
                         f"{'-' if ratio is None else f'{ratio:.2f}'} |")
        lines.append("")
    lines += ["## Designs", ""]
    for e in results:
        lines.append(f"- {e['design']} ({e['cycles_per_inference']} cycles per inference): "
                     + "; ".join(e["stages"]))
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    markers = {"ice40": "o", "ecp5": "s"}
    for ax, r in zip(axes, ("lut4", "ff", "carry")):
        values = []
        for family in FAMILIES:
            xs = [e[family]["measured"][r] for e in report["results"]]
            ys = [e[family]["estimate"][r] for e in report["results"]]
            ax.scatter(xs, ys, marker=markers[family], label=family)
            values += [v for v in xs + ys if v > 0]
        lo, hi = 0.7 * min(values), 1.3 * max(values)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.plot([lo, hi], [0.85 * lo, 0.85 * hi], "k:", lw=0.6)
        ax.plot([lo, hi], [1.15 * lo, 1.15 * hi], "k:", lw=0.6)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{r} measured (yosys)")
        ax.set_ylabel(f"{r} estimated")
        ax.set_title(f"{r}: estimate vs synthesis (dotted: ±15%)", fontsize="medium")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: two designs, no place and route")
    p.add_argument("--fit", action="store_true", help="fit the coefficients on the training blocks")
    p.add_argument("--update", action="store_true", help="with --fit: write them into hwnet/estimate.py")
    p.add_argument("--family", choices=FAMILIES, action="append",
                   help="with --fit: refit only this family (repeatable; default both), keeping the other's "
                        "coefficients")
    p.add_argument("--no-pnr", action="store_true", help="skip place and route")
    p.add_argument("--jobs", type=int, default=1, help="yosys runs at once (default 1)")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"))
    args = p.parse_args(argv)
    if args.fit:
        fit(args.jobs, args.update, tuple(args.family or FAMILIES))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results, placed = validate(args.quick, args.jobs, pnr=not (args.quick or args.no_pnr))
    ms = [e[f]["estimate_ms"] for e in results for f in FAMILIES]
    report = {"date": datetime.date.today().isoformat(), "quick": args.quick, "elapsed_s": time.perf_counter() - t0,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "tools": {"yosys": synth._version(synth._tool("YOSYS")).split(" (")[0]},
              "estimate_ms_median": statistics.median(ms), "coefficients": estimate.COEFFICIENTS,
              "results": results, "stats": summary_stats(results), "placed": placed}
    md = markdown(report)
    print(md)
    (out / "estimate.md").write_text(md)
    (out / "estimate.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot(report, out / "estimate.png")
    print(f"report: {out / 'estimate.md'}")


if __name__ == "__main__":
    main()
