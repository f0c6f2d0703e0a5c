# amaranth: UnusedElaboratable=no

import dataclasses
import re

import numpy as np
import pytest
from amaranth.back import rtlil

from hwnet import compiler, golden
from hwnet.errors import HwnetError
from hwnet.gateware import MatrixVectorThresholdUnit
from hwnet.gateware.testing import (assert_equal_vectors, divisors, random_inputs, random_network,
                                    run_vectors)


def _layer(seed, mw, mh, out, folding=None):
    """A one-layer network and its dense stage; ``out`` is "raw" or a thresholded output type."""
    rng = np.random.default_rng(seed)
    net = random_network(rng, input_size=mw, hidden=[], outputs=mh, last_raw=out == "raw",
                         last_out_type="bipolar" if out == "raw" else out, foldings=[folding])
    return rng, net, compiler.plan(net).stages[0]


def _run(stage, x, **kwargs):
    """The unit's outputs for input vectors ``x``, each padded up to whole beats with the stage's pad input
    (the width converter in front of the unit does that in a network)."""
    if stage.pad_lanes:
        pad = stage.in_type.decode(np.array([stage.pad_code]))[0]
        x = np.concatenate([x, np.full((len(x), stage.pad_lanes), pad)], axis=1)
    dut = MatrixVectorThresholdUnit(stage=stage)
    return run_vectors(dut, x, in_type=stage.in_type, in_lanes=stage.simd, out_type=stage.out_type,
                       out_lanes=stage.pe, out_size=stage.out_features, **kwargs)


# (input type, dense layer spec) for every processing element kind, several bitlengths and signednesses
KIND_CASES = [
    ("bipolar", {}),
    ("uint3", {"weight_type": "bipolar"}), ("int8", {"weight_type": "bipolar"}),
    ("ternary", {"weight_type": "bipolar"}), ("uint1", {"weight_type": "bipolar"}),
    ("int4", {"weight_type": "ternary"}), ("bipolar", {"weight_type": "ternary"}),
    ("uint5", {"weight_type": "pot3"}), ("int2", {"weight_type": "pot4"}), ("ternary", {"weight_type": "pot2"}),
    ("uint2", {"weight_type": "uint2", "products": True}), ("int3", {"weight_type": "bipolar", "products": True}),
    ("uint4", {"weight_type": "int4"}), ("int6", {"weight_type": "uint3"}), ("bipolar", {"weight_type": "int8"}),
    ("int3", {"weight_type": "int3", "bit_serial": True}), ("uint4", {"weight_type": "uint2", "bit_serial": True}),
    ("uint3", {"weight_type": "ternary", "weight_storage": "logic"}),
    ("bipolar", {"weight_type": "bipolar", "weight_storage": "logic"}),
]


def _kind_layer(seed, in_type, spec, out, mw=12, mh=6, folding=None, search=None):
    rng = np.random.default_rng(seed)
    net = random_network(rng, input_size=mw, hidden=[], outputs=mh, input_type=in_type, binarize_input=False,
                         last_raw=out == "raw", last_out_type="bipolar" if out == "raw" else out, layers=[spec],
                         foldings=[folding], max_cycles=24)
    return rng, net, compiler.plan(net, threshold_search=search).stages[0]


def _inputs_with_extremes(rng, net, count):
    """Random inputs, then all-max, all-min, and for a few rows the inputs giving that row its largest and its
    smallest accumulator (the accumulator's worst cases)."""
    layer, t = net.layers[0], net.input_type
    x = random_inputs(rng, net, count)
    rows = [np.full(net.input_size, t.max), np.full(net.input_size, t.min)]
    values = t.values()
    for r in rng.choice(layer.out_features, size=min(2, layer.out_features), replace=False):
        if layer.products is not None:
            table = layer.products[layer.weight_type.ranks(layer.weights[r])]  # (lanes, input values)
            rows += [values[np.argmax(table, axis=1)], values[np.argmin(table, axis=1)]]
        else:
            w = layer.weights[r]
            rows += [np.where(w > 0, t.max, t.min), np.where(w > 0, t.min, t.max)]
    return np.vstack([x] + rows)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("out", ["raw", "bipolar", "uint3", "int2", "ternary"])
@pytest.mark.parametrize("case", range(len(KIND_CASES)))
def test_every_kind_matches_golden_with_stalls(case, out, seed):
    in_type, spec = KIND_CASES[case]
    search = None if out == "raw" else ("parallel", "binary")[seed]
    rng, net, stage = _kind_layer(1000 * case + 10 * seed + len(out), in_type, spec, out, search=search)
    x = _inputs_with_extremes(rng, net, 4)
    got, source, _ = _run(stage, x, rng=seed, valid_prob=0.7, ready_prob=0.6)
    assert_equal_vectors(got, golden.execute(net, x))
    assert len(source.cycles) == len(x) * stage.sf


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mw,mh", [(8, 4), (16, 8), (24, 12), (64, 16)])
@pytest.mark.parametrize("out", ["bipolar", "raw"])
def test_matches_golden_with_stalls(seed, mw, mh, out):
    rng, net, stage = _layer(1000 * seed + mw + mh, mw, mh, out)
    x = random_inputs(rng, net, 5)
    got, source, sink = _run(stage, x, rng=seed, valid_prob=0.6, ready_prob=0.5)
    assert_equal_vectors(got, golden.execute(net, x))
    assert len(source.cycles) == 5 * stage.sf


@pytest.mark.parametrize("out", ["uint2", "int3", "ternary", "bipolar", "raw"])
@pytest.mark.parametrize("seed", range(3))
def test_output_types(seed, out):
    rng, net, stage = _layer(seed + 77, 12, 6, out)
    assert stage.out_type == net.output_type
    x = random_inputs(rng, net, 6)
    got, _, _ = _run(stage, x, rng=seed, valid_prob=0.8, ready_prob=0.7)
    assert_equal_vectors(got, golden.execute(net, x))


@pytest.mark.parametrize("pe,simd", [(1, 1), (8, 16), (8, 1), (1, 16), (2, 4), (4, 8)])
def test_folding_extremes(pe, simd):
    rng, net, stage = _layer(pe * 100 + simd, 16, 8, "bipolar", (pe, simd))
    x = random_inputs(rng, net, 4)
    got, _, _ = _run(stage, x, rng=pe + simd, valid_prob=0.5, ready_prob=0.5)
    assert_equal_vectors(got, golden.execute(net, x))


def test_thresholds_that_always_and_never_fire():
    rng = np.random.default_rng(5)
    mw, mh = 16, 8
    net = random_network(rng, input_size=mw, hidden=[], outputs=mh, last_raw=False, foldings=[(2, 4)])
    t = net.layers[0].thresholds.copy()
    t[0::4] = -mw - 1 - rng.integers(0, 50, size=t[0::4].shape)   # below every accumulator: always +1
    t[1::4] = mw + 1 + rng.integers(0, 50, size=t[1::4].shape)    # above every accumulator: always -1
    t[2::4] = -mw                                                 # lowest accumulator: always +1
    t[3::4] = mw                                                  # highest: only an exact match
    layer = net.layers[0]
    from hwnet.ir import Dense, Network
    dense = Dense(weights=layer.weights, thresholds=t, out_type="bipolar", pe=2, simd=4)
    net = Network(input_type="bipolar", input_size=mw, layers=[dense])
    x = random_inputs(rng, net, 6)
    x[0] = np.where(net.layers[0].weights[3] > 0, 1, -1)  # row 3 reaches its maximum on vector 0
    stage = compiler.plan(net).stages[0]
    got, _, _ = _run(stage, x, rng=1, valid_prob=0.7, ready_prob=0.7)
    expected = golden.execute(net, x)
    assert (expected[:, 0::4] == 1).all() and (expected[:, 1::4] == -1).all() and expected[0, 3] == 1
    assert_equal_vectors(got, expected)


@pytest.mark.parametrize("seed", range(3))
def test_heavy_backpressure(seed):
    rng, net, stage = _layer(seed + 500, 16, 8, "raw", (2, 4))
    x = random_inputs(rng, net, 4)
    got, _, sink = _run(stage, x, rng=seed, valid_prob=0.9, ready_prob=0.08)
    assert_equal_vectors(got, golden.execute(net, x))


@pytest.mark.parametrize("pe,simd", [(1, 1), (2, 4), (4, 16), (8, 2), (8, 16), (1, 16), (8, 1)])
@pytest.mark.parametrize("out,spec", [("bipolar", {}), ("raw", {}), ("int3", {"weight_type": "bipolar"}),
                                      ("uint2", {"weight_type": "int3", "bit_serial": True})])
def test_steady_state_interval(pe, simd, out, spec):
    in_type = "uint2" if spec else "bipolar"
    rng, net, stage = _kind_layer(pe + simd, in_type, spec, out, 16, 8, (pe, simd))
    x = random_inputs(rng, net, 6)
    got, source, sink = _run(stage, x)
    assert_equal_vectors(got, golden.execute(net, x))
    nf, sf, planes = stage.nf, stage.sf, stage.planes
    interval = compiler.plan(net).cycles_per_inference
    assert interval == nf * sf * planes
    # inputs: every beat of the first fold taken once per `planes` cycles, vectors exactly `interval` apart
    starts = source.cycles[::sf]
    assert np.diff(starts).tolist() == [interval] * (len(x) - 1)
    for v, start in enumerate(starts):
        assert source.cycles[v * sf:(v + 1) * sf] == list(range(start, start + sf * planes, planes))
    # outputs: fold f of vector v leaves `latency` cycles after its last beat (and plane) was issued
    latency = MatrixVectorThresholdUnit(stage=stage).latency
    assert latency == (4 + 2 if out == "int3" else 4)  # int3: 7 thresholds, a 3-step binary search
    first = source.cycles[0]
    expected = [first + v * interval + (f + 1) * sf * planes - 1 + latency
                for v in range(len(x)) for f in range(nf)]
    assert sink.cycles == expected
    ends = [c for (_, last), c in zip(sink.beats, sink.cycles) if last]
    assert np.diff(ends).tolist() == [interval] * (len(x) - 1)


@pytest.mark.parametrize("pe,simd,out", [(2, 4, "bipolar"), (4, 16, "raw"), (1, 2, "uint2"), (8, 16, "bipolar")])
def test_memories_and_no_multiplier(pe, simd, out):
    _, _, stage = _layer(3, 16, 8, out, (pe, simd))
    text = rtlil.convert(MatrixVectorThresholdUnit(stage=stage))
    assert "$mul" not in text
    # one memory per PE for weights, one per PE for thresholds where there are several folds (constants
    # otherwise), the input buffer when there are folds to re-read it for; each with one read port, and every
    # read port synchronous (so it maps to block RAM)
    read_ports = re.findall(r"cell \$memrd_v2 .*?\n  end", text, re.S)
    expected = stage.pe * (1 + (not stage.raw and stage.nf > 1)) + (1 if stage.nf > 1 else 0)
    assert len(read_ports) == expected
    assert all("parameter \\CLK_ENABLE 1\n" in port for port in read_ports)
    assert len(re.findall(r"cell \$memwr_v2 ", text)) == (1 if stage.nf > 1 else 0)


def test_rejects_other_stages():
    net = random_network(np.random.default_rng(0), input_size=8, hidden=[], outputs=4, input_type="uint4")
    threshold_stage = compiler.plan(net).stages[0]
    with pytest.raises(HwnetError, match=r"^MatrixVectorThresholdUnit needs a DenseStage from "
                                         r"hwnet\.compiler\.plan, not ThresholdStage$"):
        MatrixVectorThresholdUnit(stage=threshold_stage)
    with pytest.raises(HwnetError, match=r"not NoneType$"):
        MatrixVectorThresholdUnit(stage=None)


def test_rejects_inconsistent_stage():
    _, _, stage = _layer(1, 8, 4, "bipolar", (2, 4))
    broken = dataclasses.replace(stage, weight_words=stage.weight_words[:1])
    with pytest.raises(HwnetError, match=r"^stage 'fc0': weight memory images do not match pe=2, "
                                         r"depth nf\*sf\*planes=4$"):
        MatrixVectorThresholdUnit(stage=broken)
    broken = dataclasses.replace(stage, thresholds=stage.thresholds[:1])
    with pytest.raises(HwnetError, match=r"^stage 'fc0': thresholds must be pe x nf x 1"):
        MatrixVectorThresholdUnit(stage=broken)


def test_ports():
    _, _, stage = _layer(2, 24, 12, "raw", (3, 8))
    dut = MatrixVectorThresholdUnit(stage=stage)
    assert dut.stage is stage
    assert len(dut.i.payload.data) == 8
    assert len(dut.o.payload.data) == 3 * stage.acc_type.bits
    assert stage.acc_type.bits == 6
    assert len(dut.o.payload.last) == 1


def test_divisors_helper():
    assert divisors(12) == [1, 2, 3, 4, 6, 12]
