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
    dut = MatrixVectorThresholdUnit(stage=stage)
    return run_vectors(dut, x, in_type="bipolar", in_lanes=stage.simd, out_type=stage.out_type,
                       out_lanes=stage.pe, out_size=stage.out_features, **kwargs)


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
@pytest.mark.parametrize("out", ["bipolar", "raw"])
def test_steady_state_interval(pe, simd, out):
    rng, net, stage = _layer(pe + simd, 16, 8, out, (pe, simd))
    plan = compiler.plan(net)
    x = random_inputs(rng, net, 6)
    got, source, sink = _run(stage, x)
    assert_equal_vectors(got, golden.execute(net, x))
    nf, sf = stage.nf, stage.sf
    interval = plan.cycles_per_inference
    assert interval == nf * sf
    # inputs: every beat of a vector in consecutive cycles, vectors exactly nf * sf cycles apart
    starts = source.cycles[::sf]
    assert np.diff(starts).tolist() == [interval] * (len(x) - 1)
    for v, start in enumerate(starts):
        assert source.cycles[v * sf:(v + 1) * sf] == list(range(start, start + sf))
    # outputs: fold f of vector v leaves LATENCY cycles after its last beat was issued
    first = source.cycles[0]
    expected = [first + v * interval + f * sf + sf - 1 + MatrixVectorThresholdUnit.LATENCY
                for v in range(len(x)) for f in range(nf)]
    assert sink.cycles == expected
    ends = [c for (_, last), c in zip(sink.beats, sink.cycles) if last]
    assert np.diff(ends).tolist() == [interval] * (len(x) - 1)


@pytest.mark.parametrize("pe,simd,out", [(2, 4, "bipolar"), (4, 16, "raw"), (1, 2, "uint2"), (8, 16, "bipolar")])
def test_memories_and_no_multiplier(pe, simd, out):
    _, _, stage = _layer(3, 16, 8, out, (pe, simd))
    text = rtlil.convert(MatrixVectorThresholdUnit(stage=stage))
    assert "$mul" not in text
    # one memory per PE for weights, one per PE for thresholds, the input buffer when there are folds to
    # re-read it for; each with one read port, and every read port synchronous (so it maps to block RAM)
    read_ports = re.findall(r"cell \$memrd_v2 .*?\n  end", text, re.S)
    expected = stage.pe * (1 if stage.raw else 2) + (1 if stage.nf > 1 else 0)
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
                                         r"depth nf\*sf=4$"):
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
