"""The hardware-lowering passes, each against an independent statement of what it must preserve."""

import numpy as np
import pytest

from hwnet import compiler, ir
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError


@pytest.mark.parametrize("n", [1, 2, 5, 64, 65])
def test_popcount_thresholds_preserve_every_comparison(n):
    # For every threshold in a wide range and every reachable popcount p: acc >= T <=> p >= T'.
    t = np.arange(-n - 5, n + 6)[:, None]
    tp = compiler.popcount_thresholds(t, n)
    assert tp.min() >= 0 and tp.max() <= n + 1
    for p in range(n + 1):
        np.testing.assert_array_equal((2 * p - n) >= t, p >= tp)


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
    t = compiler.popcount_thresholds(net.layers[0].thresholds, 20)
    for p in range(st.pe):
        for nf in range(st.nf):
            assert st.thresholds[p][nf] == tuple(t[nf * st.pe + p])


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
        assert 32 % a.pe == 0 and 64 % a.simd == 0
        # brute force: no divisor pair with fewer lanes meets the target
        best = min(p * s for p in range(1, 33) for s in range(1, 65) if 32 % p == 0 and 64 % s == 0
                   and (32 // p) * (64 // s) <= target)
        assert a.cycles <= target and a.pe * a.simd == best
        assert (folded.layers[1].pe, folded.layers[1].simd) == (1, 1)  # set by hand: kept


def test_plan_errors():
    rng = np.random.default_rng(3)
    net = ir.Network(input_type="bipolar", input_size=4, layers=[ir.Dense(weights=np.ones((2, 4), int))])
    with pytest.raises(HwnetError, match="no folding"):
        compiler.plan(net)
    net = ir.Network(input_type="uint4", input_size=4, layers=[
        ir.Dense(weights=np.ones((2, 4), int), weight_type="int2", pe=1, simd=1)])
    with pytest.raises(HwnetError, match="no processing element yet"):
        compiler.plan(net)
    with pytest.raises(HwnetError, match="target cycles"):
        compiler.choose_folding(net, 0)
    net = ir.Network(input_type="uint4", input_size=4, layers=[
        ir.MultiThreshold(thresholds=rng.integers(0, 9, size=(4, 1)), out_type="bipolar"),
        ir.Dense(weights=np.ones((2, 4), int), pe=1, simd=4)])
    with pytest.raises(HwnetError, match="per-element thresholds"):
        compiler.plan(net)
