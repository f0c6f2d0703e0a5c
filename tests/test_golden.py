"""The golden model against plain, independent integer arithmetic."""

import numpy as np
import pytest

from hwnet import golden, ir
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError


def _reference_dense(w, x):
    # Exact integer sum with Python ints, one row at a time: no packing, no BLAS.
    return np.array([[sum(int(a) * int(b) for a, b in zip(row, xv)) for row in w] for xv in x], dtype=np.int64)


def _reference_threshold(acc, t, values):
    y = np.stack([np.searchsorted(t[c if len(t) > 1 else 0], acc[:, c], side="right")
                  for c in range(acc.shape[1])], axis=1)
    return values[y]


@pytest.mark.parametrize("n", [1, 7, 63, 64, 65, 130, 784])
def test_xnor_popcount_dense_matches_integer_sum(n):
    rng = np.random.default_rng(n)
    w = rng.choice([-1, 1], size=(9, n))
    x = rng.choice([-1, 1], size=(17, n))
    x[0] = w[0]          # all agree: acc = n
    x[1] = -w[0]         # all disagree: acc = -n
    net = ir.Network(input_type="bipolar", input_size=n, layers=[ir.Dense(weights=w)])
    out = golden.execute(net, x)
    np.testing.assert_array_equal(out, _reference_dense(w, x))
    assert out[0, 0] == n and out[1, 0] == -n


def test_generic_integer_path_matches_reference():
    rng = np.random.default_rng(1)
    w = rng.integers(-8, 8, size=(5, 11))
    x = rng.integers(0, 16, size=(6, 11))
    net = ir.Network(input_type="uint4", input_size=11, layers=[ir.Dense(weights=w, weight_type="int4")])
    np.testing.assert_array_equal(golden.execute(net, x), _reference_dense(w, x))


@pytest.mark.parametrize("out_type", ["bipolar", "uint2", "int3", "ternary"])
def test_multithreshold_counts_thresholds_passed(out_type):
    rng = np.random.default_rng(2)
    from hwnet.datatypes import parse_type
    t_out = parse_type(out_type)
    levels = t_out.num_values - 1
    w = rng.choice([-1, 1], size=(6, 20))
    t = np.sort(rng.integers(-24, 24, size=(6, levels)), axis=1)
    t[0] = -100   # always passes every threshold
    t[1] = 100    # never passes
    x = rng.choice([-1, 1], size=(50, 20))
    net = ir.Network(input_type="bipolar", input_size=20,
                     layers=[ir.Dense(weights=w, thresholds=t, out_type=out_type)])
    acc = _reference_dense(w, x)
    expected = _reference_threshold(acc, t, t_out.values())
    np.testing.assert_array_equal(golden.execute(net, x), expected)
    assert np.all(expected[:, 0] == t_out.max) and np.all(expected[:, 1] == t_out.min)


def test_ge_convention_at_the_threshold():
    # acc exactly equal to the threshold passes (>=), one below does not.
    w = np.ones((1, 4), dtype=int)
    net = ir.Network(input_type="bipolar", input_size=4,
                     layers=[ir.Dense(weights=w, thresholds=[[2]], out_type="bipolar")])
    x = np.array([[1, 1, 1, -1], [1, 1, -1, -1]])  # acc = 2, 0
    np.testing.assert_array_equal(golden.execute(net, x)[:, 0], [1, -1])


def test_network_chain_and_trace():
    rng = np.random.default_rng(3)
    w0, w1 = rng.choice([-1, 1], size=(8, 16)), rng.choice([-1, 1], size=(3, 8))
    t0 = rng.integers(-4, 4, size=(8, 1))
    net = ir.Network(input_type="uint8", input_size=16, layers=[
        ir.MultiThreshold(thresholds=[[128]], out_type="bipolar", name="bin"),
        ir.Dense(weights=w0, thresholds=t0, out_type="bipolar", name="fc0"),
        ir.Dense(weights=w1, name="fc1")])
    x = rng.integers(0, 256, size=(30, 16))
    x[0, :] = 127
    x[1, :] = 128
    b = np.where(x >= 128, 1, -1)
    h = np.where(_reference_dense(w0, b) >= t0[:, 0], 1, -1)
    o = _reference_dense(w1, h)
    trace = golden.execute(net, x, trace=True)
    np.testing.assert_array_equal(trace[0], b)
    np.testing.assert_array_equal(trace[1], h)
    np.testing.assert_array_equal(trace[2], o)
    assert np.all(trace[0][0] == -1) and np.all(trace[0][1] == 1)


def test_classify_ties_go_to_lowest_index():
    np.testing.assert_array_equal(golden.classify([[3, 5, 5], [-1, -1, -1], [0, 2, 1]]), [1, 0, 1])


def test_rejects_illegal_inputs():
    net = ir.Network(input_type="bipolar", input_size=4, layers=[ir.Dense(weights=np.ones((2, 4), int))])
    with pytest.raises(HwnetError, match="not legal bipolar"):
        golden.execute(net, [[1, 0, 1, 1]])
    with pytest.raises(HwnetError, match=r"shape \(batch, 4\)"):
        golden.execute(net, np.ones((2, 5)))


def test_golden_is_exact_at_scale():
    # Large random layer and batch (split across threads): packed path against a BLAS-free int64 product.
    rng = np.random.default_rng(4)
    w = rng.choice([-1, 1], size=(64, 784))
    x = rng.choice([-1, 1], size=(1500, 784))
    net = ir.Network(input_type="bipolar", input_size=784, layers=[ir.Dense(weights=w)])
    ref = np.einsum("bi,oi->bo", x.astype(np.int64), w.astype(np.int64))
    np.testing.assert_array_equal(golden.execute(net, x), ref)


@pytest.mark.parametrize("weight_type,in_type", [("uint2", "uint3"), ("bipolar", "int2"), ("pot3", "ternary"),
                                                 ("ternary", "bipolar")])
def test_products_table_is_looked_up_by_value_ranks(weight_type, in_type):
    rng = np.random.default_rng(len(weight_type + in_type))
    wt, xt = parse_type(weight_type), parse_type(in_type)
    table = rng.integers(-50, 50, size=(wt.num_values, xt.num_values))
    w = rng.choice(wt.values(), size=(7, 9))
    net = ir.Network(input_type=xt, input_size=9, layers=[ir.Dense(weights=w, weight_type=wt, products=table)])
    x = rng.choice(xt.values(), size=(40, 9))
    wv, xv = list(wt.values()), list(xt.values())
    expected = [[sum(int(table[wv.index(w[o, i]), xv.index(x[b, i])]) for i in range(9)) for o in range(7)]
                for b in range(40)]
    np.testing.assert_array_equal(golden.execute(net, x), expected)
