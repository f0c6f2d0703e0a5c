"""The hardware-lowering passes, each against an independent statement of what it must preserve."""

import numpy as np
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from hwnet import compiler, golden, ir
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.gateware.testing import random_dense


# Every processing element kind, with the weight and input types it takes.
KIND_TYPES = [("xnor", "bipolar", ["bipolar"]),
              ("addsub", "bipolar", ["ternary", "uint1", "uint3", "uint8", "int2", "int5", "int8"]),
              ("ternary", "ternary", ["bipolar", "ternary", "uint2", "int4", "uint7"]),
              ("shift", "pot2", ["bipolar", "uint3"]), ("shift", "pot3", ["int3", "ternary"]),
              ("shift", "pot5", ["uint4", "int6"]),
              ("lut", "uint2", ["uint2", "int3", "bipolar"]), ("lut", "bipolar", ["uint3"]),
              ("bitplane", "uint3", ["uint4", "int2", "bipolar"]), ("bitplane", "int4", ["int3", "ternary", "uint5"]),
              ("bitserial", "int5", ["uint3", "int2"]), ("bitserial", "uint2", ["int4"])]


def _layer_of_kind(kind, weight_type, in_type, seed, out_type="uint3"):
    rng = np.random.default_rng(seed)
    mh, mw = int(rng.integers(1, 9)), int(rng.integers(1, 13))
    layer = random_dense(rng, mw, mh, name="fc", in_type=in_type, weight_type=weight_type,
                         out_type=out_type, raw=out_type is None, products=kind == "lut",
                         bit_serial=kind == "bitserial")
    net = ir.Network(input_type=in_type, input_size=mw, layers=[layer])
    return rng, net, compiler.plan(net).stages[0]


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from([(k, w, x) for k, w, xs in KIND_TYPES for x in xs]), seed=st.integers(0, 2**32 - 1),
       out_type=st.sampled_from(["bipolar", "uint3", "int2", "ternary", None]))
def test_hardware_number_space_is_exact(case, seed, out_type):
    # For every kind: the unsigned sum h of the per-lane terms maps back to the IR accumulator by
    # acc = step * h + bias, every term is non-negative and within the accumulator width, and the
    # thresholds moved into h space decide exactly what the IR's thresholds decide.
    kind, weight_type, in_type = case
    rng, net, stage = _layer_of_kind(kind, weight_type, in_type, seed, out_type)
    layer, arith = net.layers[0], stage.arithmetic
    assert stage.kind == kind == compiler.pe_kind(layer)
    t = layer.in_type
    x = rng.choice(t.values(), size=(30, layer.in_features))
    x[0], x[1] = t.max, t.min
    for row in range(layer.out_features):  # and each row's own worst cases
        x = np.vstack([x, [t.values()[np.argmax(arith.terms(w, t.values()))] for w in layer.weights[row]],
                       [t.values()[np.argmin(arith.terms(w, t.values()))] for w in layer.weights[row]]])
    acc = golden.dense_accumulate(layer, x)
    terms = arith.terms(layer.weights[None, :, :], x[:, None, :])  # (batch, rows, lanes)
    assert terms.min() >= 0
    h = terms.sum(axis=2)
    assert h.max() < 2 ** stage.acc_bits
    bias = np.array([stage.biases[r % stage.pe][r // stage.pe] for r in range(layer.out_features)])
    np.testing.assert_array_equal(arith.step * h + bias, acc)
    if layer.thresholds is not None:
        for r in range(layer.out_features):
            moved = np.array(stage.thresholds[r % stage.pe][r // stage.pe])
            assert moved.max() < 2 ** stage.acc_bits
            np.testing.assert_array_equal(acc[:, r, None] >= layer.thresholds[r], h[:, r, None] >= moved)


@pytest.mark.parametrize("n", [1, 2, 5, 64, 65])
def test_xnor_thresholds_move_into_popcount_space(n):
    # For every threshold in a wide range and every reachable popcount p: acc >= T <=> p >= T', and the moved
    # thresholds are those of the foundation's XNOR-popcount rule T' = ceil((T + n) / 2), clipped to [0, n + 1].
    t = np.arange(-n - 5, n + 6)[:, None]
    layer = ir.Dense(weights=np.ones((len(t), n), dtype=int), thresholds=t, out_type="bipolar", pe=1, simd=1)
    stage = compiler.plan(ir.Network(input_type="bipolar", input_size=n, layers=[layer])).stages[0]
    moved = np.array([stage.thresholds[0][f][0] for f in range(len(t))])
    np.testing.assert_array_equal(moved, np.clip(-((-(t[:, 0] + n)) // 2), 0, n + 1))
    for p in range(n + 1):
        np.testing.assert_array_equal((2 * p - n) >= t[:, 0], p >= moved)


@pytest.mark.parametrize("type_name,lanes", [("bipolar", 8), ("uint5", 4), ("int3", 3), ("bipolar", 64),
                                             ("uint8", 64)])
def test_pack_unpack_round_trip_and_lane_order(type_name, lanes):
    t = parse_type(type_name)
    rng = np.random.default_rng(lanes)
    v = rng.choice(t.values(), size=(5, lanes * 3))
    words = compiler.pack_lanes(v, t, lanes)
    assert words.shape == (5, 3)
    np.testing.assert_array_equal(compiler.unpack_lanes(words, t, lanes), v)
    # lane j of word k is element k * lanes + j, at bits [j * bits, (j + 1) * bits)
    w = int(words[1, 2])
    for j in range(lanes):
        code = (w >> (j * t.bits)) & ((1 << t.bits) - 1)
        assert t.decode(code) == v[1, 2 * lanes + j]


def _network(rng, mh=12, mw=20, pe=3, simd=5):
    return ir.Network(input_type="bipolar", input_size=mw, layers=[
        ir.Dense(weights=rng.choice([-1, 1], size=(mh, mw)), thresholds=rng.integers(-30, 30, size=(mh, 1)),
                 out_type="bipolar", pe=pe, simd=simd, name="fc0"),
        ir.Dense(weights=rng.choice([-1, 1], size=(4, mh)), pe=2, simd=6, name="fc1")])


def test_memory_images_follow_the_documented_layout():
    rng = np.random.default_rng(0)
    net = _network(rng)
    st = compiler.plan(net).stages[0]
    w = net.layers[0].weights
    assert (st.nf, st.sf, st.cycles) == (4, 4, 16)
    rebuilt = np.zeros_like(w)
    for p in range(st.pe):
        assert len(st.weight_words[p]) == st.nf * st.sf
        for nf in range(st.nf):
            for sf in range(st.sf):
                word = st.weight_words[p][nf * st.sf + sf]
                for j in range(st.simd):
                    rebuilt[nf * st.pe + p, sf * st.simd + j] = 1 if (word >> j) & 1 else -1
    np.testing.assert_array_equal(rebuilt, w)
    t = np.clip(-((-(net.layers[0].thresholds + 20)) // 2), 0, 21)
    for p in range(st.pe):
        for nf in range(st.nf):
            assert st.thresholds[p][nf] == tuple(t[nf * st.pe + p])


def test_bit_serial_memory_holds_weight_planes_in_order():
    rng = np.random.default_rng(3)
    layer = random_dense(rng, 6, 4, name="fc", in_type="uint2", weight_type="int3", bit_serial=True, pe=2, simd=3)
    net = ir.Network(input_type="uint2", input_size=6, layers=[layer])
    st = compiler.plan(net).stages[0]
    assert (st.planes, st.lane_bits, st.depth, st.cycles) == (3, 1, 2 * 2 * 3, 2 * 2 * 3)
    codes = parse_type("int3").encode(layer.weights)
    for p in range(st.pe):
        for f in range(st.nf):
            for s in range(st.sf):
                for b in range(3):
                    word = st.weight_words[p][(f * st.sf + s) * 3 + b]
                    for j in range(st.simd):
                        assert (word >> j) & 1 == (codes[f * st.pe + p, s * st.simd + j] >> b) & 1


def test_plan_summary_numbers():
    rng = np.random.default_rng(1)
    plan = compiler.plan(_network(rng))
    s = plan.summary()
    assert s["cycles_per_inference"] == max(4 * 4, 2 * 2) == plan.cycles_per_inference
    assert s["memory_bits"] == 12 * 20 + 12 * 5 + 4 * 12  # weights + thresholds (5-bit popcount) + weights
    assert (s["input"]["lanes"], s["input"]["beats"]) == (5, 4)
    assert (s["output"]["type"], s["output"]["lanes"], s["output"]["beats"]) == ("int5", 2, 2)
    assert plan.stages[1].raw and plan.stages[1].acc_type.name == "int5"


def test_choose_folding_fewest_lanes_meeting_target():
    rng = np.random.default_rng(2)
    net = ir.Network(input_type="bipolar", input_size=64, layers=[
        ir.Dense(weights=rng.choice([-1, 1], size=(32, 64)), thresholds=np.zeros((32, 1), int),
                 out_type="bipolar", name="a"),
        ir.Dense(weights=rng.choice([-1, 1], size=(10, 32)), pe=1, simd=1, name="b")])
    for target in (1, 7, 16, 64, 5000):
        folded = compiler.choose_folding(net, target)
        a = folded.layers[0]
        assert 32 % a.pe == 0 and 1 <= a.simd <= 64
        # brute force: no pair with fewer lanes meets the target, the input padded to whole beats or not
        # (cycles (32 / pe) * ceil(64 / simd)); at equal lanes one without padding wins
        pairs = [(p * s, 64 % s != 0) for p in range(1, 33) for s in range(1, 65) if 32 % p == 0
                 and (32 // p) * -(-64 // s) <= target]
        assert a.cycles <= target and (a.pe * a.simd, 64 % a.simd != 0) == min(pairs)
        assert (folded.layers[1].pe, folded.layers[1].simd) == (1, 1)  # set by hand: kept


def test_plan_errors():
    rng = np.random.default_rng(3)
    net = ir.Network(input_type="bipolar", input_size=4, layers=[ir.Dense(weights=np.ones((2, 4), int))])
    with pytest.raises(HwnetError, match="no folding"):
        compiler.plan(net)
    net = ir.Network(input_type="pot3", input_size=4, layers=[
        ir.Dense(weights=np.ones((2, 4), int), weight_type="int2", pe=1, simd=1)])
    with pytest.raises(HwnetError, match=r"^layer 'dense': pot3 inputs have no processing element; a layer's "
                                         r"input must be bipolar, ternary, uint<k> or int<k>$"):
        compiler.plan(net)
    with pytest.raises(HwnetError, match="threshold search must be 'parallel' or 'binary'"):
        compiler.plan(net, threshold_search="linear")
    with pytest.raises(HwnetError, match="target cycles"):
        compiler.choose_folding(net, 0)
    net = ir.Network(input_type="uint4", input_size=4, layers=[
        ir.MultiThreshold(thresholds=rng.integers(0, 9, size=(4, 1)), out_type="bipolar"),
        ir.Dense(weights=np.ones((2, 4), int), pe=1, simd=4)])
    with pytest.raises(HwnetError, match="per-element thresholds"):
        compiler.plan(net)


def test_choose_folding_unrolls_logic_layers_and_counts_planes():
    rng = np.random.default_rng(4)
    logic = random_dense(rng, 12, 6, name="a", in_type="uint3", weight_type="ternary", weight_storage="logic")
    serial = random_dense(rng, 6, 8, name="b", in_type="bipolar", weight_type="int4", bit_serial=True, raw=True,
                          pe=1, simd=1)
    serial = ir.Dense(weights=serial.weights, weight_type="int4", bit_serial=True, name="b")
    net = compiler.choose_folding(ir.Network(input_type="uint3", input_size=12, layers=[logic, serial]), 16)
    a, b = net.layers
    assert (a.pe, a.simd, a.cycles) == (6, 12, 1)
    assert b.cycles == (8 // b.pe) * (6 // b.simd) * 4 <= 16
    assert b.pe * b.simd == min(p * s for p in (1, 2, 4, 8) for s in (1, 2, 3, 6) if (8 // p) * (6 // s) * 4 <= 16)
    stages = compiler.plan(net).stages
    assert stages[0].weights_in_logic and stages[0].memory_bits == 0 and stages[1].planes == 4


@pytest.mark.parametrize("out_type,search", [("bipolar", "parallel"), ("uint2", "parallel"), ("ternary", "parallel"),
                                             ("int3", "binary"), ("uint4", "binary")])
def test_threshold_search_by_count(out_type, search):
    _, _, stage = _layer_of_kind("addsub", "bipolar", "uint3", 5, out_type)
    assert stage.threshold_search == search
    assert stage.levels == parse_type(out_type).num_values - 1


def test_split_layer_plan_and_summary():
    # fc0 streams whole, 3 of fc1's 4 PEs stream (3 * 8 = 24 bits a word), its PE 3 keeps a ROM
    rng = np.random.default_rng(6)
    net = ir.Network(input_type="bipolar", input_size=16, layers=[
        ir.Dense(weights=rng.choice([-1, 1], size=(8, 16)), thresholds=np.zeros((8, 1), int), out_type="bipolar",
                 pe=2, simd=8, name="fc0"),
        ir.Dense(weights=rng.choice([-1, 1], size=(8, 8)), thresholds=np.zeros((8, 1), int), out_type="bipolar",
                 pe=4, simd=8, name="fc1"),
        ir.Dense(weights=rng.choice([-1, 1], size=(4, 8)), pe=1, simd=8, name="fc2")])
    net = compiler.set_hardware_choices(net, spram={"fc0": None, "fc1": 3})
    assert [(l.weight_storage, l.spram_pes) for l in net.layers] == [("spram", None), ("spram", 3), ("rom", None)]
    plan = compiler.plan(net)
    fc0, fc1, fc2 = plan.stages
    assert [(s.spram_pes, s.spram_base, s.word_bits) for s in plan.stages] == [(2, 0, 16), (3, 8, 24), (0, None, 0)]
    assert plan.streamed_stages == (fc0, fc1) and plan.spram_words == 8 + 2 == len(plan.spram_image())
    assert plan.cycles_per_inference == max(8, 4, 10)
    assert plan.spram_image()[8:] == [sum(fc1.weight_words[p][a] << (8 * p) for p in range(3)) for a in range(2)]
    assert (fc1.spram_bits, fc1.rom_weight_bits) == (2 * 24, 2 * 8)
    assert fc1.memory_bits == 2 * 8 + fc1.threshold_bits and fc0.memory_bits == fc0.threshold_bits
    rows = plan.summary()["stages"]
    assert rows[1]["spram_pes"] == 3 and rows[2]["spram_pes"] == 0
    assert rows[1]["weights"] == "SPRAM words 8..9 x 24 bits (PEs 0..2), ROMs 1 x 2 words x 8 bits (PEs 3..3)"
    assert rows[0]["weights"] == "SPRAM words 0..7 x 16 bits" and rows[2]["weights"] == "1 x 4 words x 8 bits"
    # an unfolded layer with some PEs streaming gets at least that many PEs
    loose = net.replace_layers([l.replace(pe=None, simd=None) for l in net.layers])
    assert compiler.choose_folding(loose, 10 ** 6).layers[1].pe == 4
    with pytest.raises(HwnetError, match=r"^no dense layer named 'fc9'; the dense layers are fc0, fc1, fc2$"):
        compiler.set_hardware_choices(net, spram={"fc9": 2})
    with pytest.raises(HwnetError, match=r"^layer 'fc1': spram_pes must be a whole number of PEs from 1 to 4 "
                                         r"\(pe=4\), got 5$"):
        compiler.set_hardware_choices(net, spram={"fc1": 5})
