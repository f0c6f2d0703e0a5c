# amaranth: UnusedElaboratable=no

import re

import numpy as np
import pytest

from hwnet import compiler, golden
from hwnet.errors import HwnetError
from hwnet.gateware import NetworkTop, generate_verilog
from hwnet.gateware.network import BeatFIFO
from hwnet.gateware.testing import (assert_equal_vectors, random_dense, random_inputs, random_layer_specs,
                                    random_network, run_plan)
from hwnet.ir import MultiThreshold, Network


def _random_case(seed, input_type):
    rng = np.random.default_rng(seed)
    hidden = [int(rng.choice([8, 12, 16, 24, 32])) for _ in range(int(rng.integers(0, 3)))]
    last_raw = bool(rng.random() < 0.7)
    net = random_network(rng, input_size=int(rng.choice([16, 24, 32, 48, 64])), hidden=hidden,
                         outputs=int(rng.choice([4, 6, 10])), input_type=input_type, last_raw=last_raw,
                         last_out_type=str(rng.choice(["bipolar", "uint2"])), max_cycles=96)
    return rng, net


def _check(net, data_rng, vectors, **kwargs):
    plan = compiler.plan(net)
    x = random_inputs(data_rng, net, vectors)
    fifos = kwargs.pop("fifos", True)
    got, source, sink = run_plan(NetworkTop(plan=plan, fifos=fifos), plan, x, **kwargs)
    assert_equal_vectors(got, golden.execute(net, x))
    assert len(source.cycles) == vectors * plan.input_beats
    return plan, source, sink


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("input_type", ["bipolar", "uint8", "int4"])
def test_random_networks_with_stalls(seed, input_type):
    rng, net = _random_case(seed * 10 + len(input_type), input_type)
    _check(net, rng, 5, rng=seed, valid_prob=float(rng.uniform(0.3, 1.0)), ready_prob=float(rng.uniform(0.2, 1.0)))


@pytest.mark.parametrize("seed", range(8))
def test_random_mixed_kind_networks_with_stalls(seed):
    # every layer a random processing element kind (weights in logic, bit-serial, lookup tables among them),
    # random multi-bit activations between them
    rng = np.random.default_rng(seed + 700)
    sizes = [int(rng.choice([6, 8, 12])) for _ in range(int(rng.integers(2, 4)))]
    input_type = str(rng.choice(["bipolar", "uint3", "int4", "ternary"]))
    specs = random_layer_specs(rng, len(sizes))
    net = random_network(rng, input_size=int(rng.choice([8, 12, 16])), hidden=sizes[:-1], outputs=sizes[-1],
                         input_type=input_type, binarize_input=False, last_raw=bool(rng.random() < 0.5),
                         last_out_type=str(rng.choice(["bipolar", "uint2", "int3"])), layers=specs, max_cycles=48)
    plan, _, _ = _check(net, rng, 5, rng=seed, valid_prob=float(rng.uniform(0.4, 1.0)),
                        ready_prob=float(rng.uniform(0.3, 1.0)))
    assert [s.kind for s in plan.stages] == [compiler.pe_kind(layer) for layer in net.layers]


@pytest.mark.parametrize("seed", range(3))
def test_random_networks_without_fifos(seed):
    rng, net = _random_case(seed + 300, "uint4")
    _check(net, rng, 4, fifos=False, rng=seed, valid_prob=0.7, ready_prob=0.5)


@pytest.mark.parametrize("seed", range(6))
def test_throughput_matches_plan(seed):
    rng, net = _random_case(seed + 100, "bipolar" if seed % 2 else "uint8")
    plan, source, sink = _check(net, rng, 6)
    ends = [c for (_, last), c in zip(sink.beats, sink.cycles) if last]
    assert np.diff(ends)[-3:].tolist() == [plan.cycles_per_inference] * 3


def test_raw_layer_then_threshold_then_dense():
    # a raw accumulator layer, re-quantized by a threshold stage on its int outputs: multi-bit elements
    # cross a width converter (pe=3 lanes of int6 into 4 lanes)
    rng = np.random.default_rng(11)
    first = random_dense(rng, 24, 12, name="fc0", raw=True, pe=3, simd=8)
    requant = MultiThreshold(thresholds=[[-3]], out_type="bipolar", name="requant")
    second = random_dense(rng, 12, 6, name="fc1", raw=True, pe=2, simd=2)
    net = Network(input_type="bipolar", input_size=24, layers=[first, requant, second])
    plan = compiler.plan(net)
    assert [type(s).__name__ for s in plan.stages] == ["DenseStage", "ThresholdStage", "DenseStage"]
    assert plan.stages[1].in_type.name == "int6" and plan.stages[1].lanes == 2
    for seed in range(2):
        _check(net, rng, 5, rng=seed, valid_prob=0.6, ready_prob=0.6)


def test_single_threshold_stage():
    rng = np.random.default_rng(4)
    net = Network(input_type="uint4", input_size=8,
                  layers=[MultiThreshold(thresholds=[[2, 7, 9]], out_type="uint2", name="q")])
    _check(net, rng, 4, rng=1, valid_prob=0.5, ready_prob=0.5)


def test_tfc_shaped_network():
    # 784-64-64-64-10 with the input binarized, folded to <= 98 cycles per layer; a few vectors
    rng = np.random.default_rng(2024)
    net = random_network(rng, input_size=784, hidden=[64, 64, 64], outputs=10, input_type="uint8",
                         foldings=[(8, 56), (8, 32), (16, 16), (5, 16)])
    plan, _, sink = _check(net, rng, 3, rng=3, valid_prob=0.8, ready_prob=0.8)
    assert plan.cycles_per_inference == 112


def test_bad_plans():
    with pytest.raises(HwnetError, match=r"^NetworkTop needs a DesignPlan from hwnet\.compiler\.plan, "
                                         r"not Network$"):
        NetworkTop(plan=random_network(np.random.default_rng(0), input_size=8, hidden=[], outputs=2))
    with pytest.raises(HwnetError, match=r"^FIFO depth must be at least 2, not 1$"):
        BeatFIFO(lanes=2, bits=1, depth=1)


def test_generate_verilog():
    rng = np.random.default_rng(8)
    net = random_network(rng, input_size=16, hidden=[8], outputs=4, input_type="uint4",
                         foldings=[(2, 4), (2, 2)])
    plan = compiler.plan(net)
    text = generate_verilog(plan)
    assert re.search(r"^module hwnet_top\(", text, re.M)
    in_width = plan.input_lanes * plan.input_type.bits + 1
    out_width = plan.output_lanes * plan.output_type.bits + 1
    top = re.search(r"^module hwnet_top\(.*?^endmodule", text, re.M | re.S).group(0)
    declared = {name: width for width, name in
                re.findall(r"^\s*(?:input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?(\w+);", top, re.M)}
    assert set(declared) == {"clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready",
                             "o__payload"}
    assert int(declared["i__payload"]) + 1 == in_width
    assert int(declared["o__payload"]) + 1 == out_width
    assert "src = " not in text  # no source locations: the text depends only on the plan
    assert generate_verilog(plan) == text
    assert re.search(r"^module my_net\(", generate_verilog(plan, name="my_net"), re.M)
    with pytest.raises(HwnetError, match=r"^Verilog module name must be a plain identifier, not 'my net'$"):
        generate_verilog(plan, name="my net")


@pytest.mark.parametrize("foldings,cycles", [
    ([(8, 42), (1, 32), (1, 32), (5, 2)], 152),   # 784 = 18 * 42 + 28: 14 lanes of fc0's last beat pad
    ([(4, 88), (4, 9), (2, 22), (10, 7)], 144),
])
def test_tfc_shaped_network_padded(foldings, cycles):
    # the folds between 128 and 196 cycles that the TFC shape has only with padding
    rng = np.random.default_rng(77)
    net = random_network(rng, input_size=784, hidden=[64, 64, 64], outputs=10, input_type="uint8",
                         foldings=foldings)
    plan, _, sink = _check(net, rng, 3, rng=5, valid_prob=0.8, ready_prob=0.8)
    assert plan.cycles_per_inference == cycles
    assert plan.stages[1].pad_lanes == plan.stages[1].sf * plan.stages[1].simd - 784 > 0
    _, _, sink = _check(net, rng, 5)
    ends = [c for (_, last), c in zip(sink.beats, sink.cycles) if last]
    assert np.diff(ends)[-2:].tolist() == [cycles] * 2


@pytest.mark.parametrize("seed", range(4))
def test_padded_first_layer_takes_the_input(seed):
    # no threshold stage in front: the network's input goes through a padding width converter
    rng = np.random.default_rng(seed + 900)
    specs = random_layer_specs(rng, 2, logic_ok=[False, False])
    net = random_network(rng, input_size=int(rng.choice([10, 14, 22])), hidden=[6], outputs=4,
                         input_type=str(rng.choice(["uint3", "int4", "ternary", "bipolar"])), binarize_input=False,
                         layers=specs, foldings=[(None, int(rng.choice([3, 4, 6]))), None])
    plan = compiler.plan(net)
    assert plan.stages[0].pad_lanes > 0 and plan.input_size % plan.input_lanes == 0
    _check(net, rng, 5, rng=seed, valid_prob=0.6, ready_prob=0.6)
