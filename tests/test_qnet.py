"""QuantNet's quantizer modules (forward and backward), its bit costs, and exact threshold folding."""

import math

import numpy as np
import pytest
import torch

from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.train import quantizers as Q
from hwnet.train.lower import fold_thresholds
from hwnet.train.qnet import (LUT4_PER_BIT_PRODUCT, BinaryWeights, CodebookWeights, FixedAct, FixedWeights,
                              HWGQAct, LearnedBitsAct, LearnedBitsWeights, LevelsAct, QuantLinear, QuantNet)


# --- fold_thresholds ------------------------------------------------------------------------------------------

def _step_fn(thresholds, lo_code, negate):
    """A per-channel staircase: code = lo + #{T <= acc} (or of -acc for negated channels), as a torch fn."""
    t = torch.from_numpy(thresholds.astype(np.float32))
    sign = torch.from_numpy(np.where(negate, -1.0, 1.0).astype(np.float32))

    def fn(acc):
        a = acc * sign
        return (a[..., None] >= t).sum(-1).to(torch.float32) + lo_code
    return fn


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("out", ["bipolar", "uint2", "int3", "ternary"])
def test_fold_thresholds_recovers_random_staircases(seed, out):
    rng = np.random.default_rng(seed)
    out_type = parse_type(out)
    channels, levels = 12, out_type.num_values - 1
    lo = rng.integers(-50, 0, channels)
    hi = lo + rng.integers(0, 80, channels)
    # thresholds anywhere in lo - 3 .. hi + 3 (some always/never passed), ascending
    t = np.sort(rng.integers(lo[:, None] - 3, hi[:, None] + 4, (channels, levels)), axis=1)
    negate = rng.random(channels) < 0.4
    lo_code = -1 if out == "bipolar" else out_type.min
    if out == "bipolar":
        fn0 = _step_fn(t, 0, negate)
        fn = lambda a: fn0(a) * 2 - 1  # noqa: E731
    else:
        fn = _step_fn(t, lo_code, negate)
    got_negate, got_t = fold_thresholds(fn, np.where(negate, -hi, lo), np.where(negate, -lo, hi), out_type, "x")
    # on every reachable accumulator the folded thresholds give the same code
    for c in range(channels):
        accs = np.arange(lo[c], hi[c] + 1) if not negate[c] else -np.arange(lo[c], hi[c] + 1)
        expected = fn(torch.from_numpy(np.repeat(accs[:, None], channels, 1).astype(np.float32)))[:, c].numpy()
        a = -accs if got_negate[c] else accs
        count = (a[:, None] >= got_t[c]).sum(1)
        np.testing.assert_array_equal(out_type.values()[count], expected)
    # a channel that is not constant over its range is negated exactly when its staircase falls
    for c in range(channels):
        accs = np.arange(lo[c], hi[c] + 1)
        codes = ((accs[:, None] >= t[c]).sum(1))
        if codes.min() != codes.max():
            assert got_negate[c] == negate[c]


def test_fold_thresholds_refuses_non_monotone_and_unnegatable():
    def bump(acc):  # 1 only at acc == 0: not a staircase
        return (acc == 0).to(torch.float32)
    with pytest.raises(HwnetError, match="not monotone"):
        fold_thresholds(bump, np.array([-3]), np.array([3]), parse_type("uint1"), "layer x")

    def falling(acc):
        return (acc < 0).to(torch.float32)
    with pytest.raises(HwnetError, match="cannot be negated"):
        fold_thresholds(falling, np.array([-3]), np.array([3]), parse_type("uint1"), "layer x", can_negate=False)
    with pytest.raises(HwnetError, match="outside uint1"):
        fold_thresholds(lambda a: a * 0 + 2, np.array([-3]), np.array([3]), parse_type("uint1"), "layer x")


# --- activation quantizers --------------------------------------------------------------------------------------

def test_levels_tanh_boundaries_equal_rounded_tanh_and_backward_is_tanh():
    act = LevelsAct(fn="tanh", bits=3)  # 7 levels, step 1/3
    z = torch.linspace(-4, 4, 20001, dtype=torch.float32)
    act.eval()
    eval_codes = act(z)
    reference = torch.round(torch.tanh(z.double()) * 3)
    near_tie = (torch.tanh(z.double()) * 3 - torch.floor(torch.tanh(z.double()) * 3) - 0.5).abs() < 1e-5
    assert torch.equal(eval_codes[~near_tie].double(), reference[~near_tie])
    assert eval_codes.min() == -3 and eval_codes.max() == 3
    act.train()
    zg = z.clone().requires_grad_(True)
    act(zg).sum().backward()
    torch.testing.assert_close(zg.grad, (1 - torch.tanh(z) ** 2) * 3)


def test_levels_relu6():
    act = LevelsAct(fn="relu6", bits=2)  # codes 0..3, step 2
    z = torch.tensor([-1.0, 0.0, 0.9, 1.1, 3.0, 5.5, 9.0], requires_grad=True)
    act.train()
    out = act(z)
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0]  # round(1.5) = 2 (halves to even)
    out.sum().backward()
    assert z.grad.tolist() == [0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]  # d clamp(z, 0, 6) / 2


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_hwgq_eval_codes_equal_the_training_quantizer(bits):
    act = HWGQAct(bits=bits)
    z = torch.randn(5000) * 2
    act.eval()
    codes = act(z)
    delta, _ = Q.hwgq_levels(bits)
    torch.testing.assert_close(codes, torch.round(Q.hwgq(z, bits=bits) / delta), rtol=0, atol=0)
    assert act.out_type == parse_type(f"uint{bits}")


def test_fixed_point_activation_quantizes_gradients_and_updates_its_bits():
    act = FixedAct(bits=6, gradient_bits=4, integer_bits=1, gradient_integer_bits=-2)
    act.train()
    z = torch.tensor([-1.0, 0.1, 0.3, 0.7, 1.9, 5.0], requires_grad=True)
    out = act(z)
    step = 2.0 ** (1 - 6 + 1)  # 1/16
    assert torch.equal(out, torch.clamp(torch.round(torch.relu(z.detach()) / step), 0, 31))
    g = torch.tensor([0.013, -0.2, 0.07, 0.031, -0.5, 0.3])
    out.backward(g * step)  # codes are z / step: the gradient reaching z before rounding is g where it passes
    inside = ((z.detach() > 0) & (z.detach() <= 31 * step)).float()  # ReLU, then the clip range
    gstep = 2.0 ** (-2 - 4 + 1)  # 1/32: a 4-bit signed grid with -2 integer bits
    torch.testing.assert_close(z.grad, torch.clamp(torch.round(g * inside / gstep), -8, 7) * gstep)
    torch.testing.assert_close(act.last_gradient, g * inside)
    assert act.last_gradient is not None
    before = int(act.integer_bits), int(act.gradient_integer_bits)
    expected = (Q.update_integer_bits(z.detach(), before[0]), Q.update_integer_bits(g * inside, before[1]))
    act.update_()
    assert (int(act.integer_bits), int(act.gradient_integer_bits)) == expected
    assert act.out_type == parse_type("uint5")


def test_fixed_point_weights_follow_the_overflow_rule():
    q = FixedWeights(bits=8, integer_bits=3)
    w = torch.full((4, 4), 0.3)
    q.update_(w)  # nothing reaches 2**2 or 2**1 or... at 3 bits: no overflow at 2 -> lower to 2
    assert int(q.integer_bits) == 2
    w[0, 0] = 5.0  # 1/16 of the weights overflow 2**2: raise
    q.update_(w)
    assert int(q.integer_bits) == 3
    codes = q.codes(w)
    assert codes.max() <= 127 and codes.min() >= -127
    assert codes[0, 0] == 80 and codes[1, 1] == round(0.3 * 16)  # step 2**(3 - 7)


# --- weight quantizers ------------------------------------------------------------------------------------------

def test_binary_weight_scales():
    w = torch.tensor([[0.5, -0.25, 0.0], [-1.0, 2.0, 0.5]])
    mean = BinaryWeights(mode="ste", scale="mean")
    codes, scale = mean.quantize(w)
    assert codes.tolist() == [[1, -1, 1], [-1, 1, 1]]
    torch.testing.assert_close(scale, torch.tensor([0.25, 3.5 / 3]))
    final = BinaryWeights(mode="ste", scale="mean", per_row=False)
    torch.testing.assert_close(final.quantize(w)[1], torch.full((2,), 4.25 / 6))
    alpha = BinaryWeights(mode="swish", scale="alpha", reg=1.0)
    alpha.alpha.data.fill_(-0.5)  # its magnitude scales, in training and in eval alike
    assert alpha.quantize(w)[1].tolist() == [0.5, 0.5]
    alpha.eval()
    assert alpha.quantize(w)[1].tolist() == [0.5, 0.5]
    torch.testing.assert_close(alpha.penalty(w), Q.bnn_plus_regularizer(w, torch.tensor(0.5)) / 6)


def test_codebook_clusters_and_products():
    torch.manual_seed(0)
    q = CodebookWeights(clusters=4, product_bits=6)
    w = torch.cat([torch.randn(50) * 0.01 + c for c in (-1.0, -0.2, 0.3, 1.2)]).reshape(10, 20)
    q.cluster_(w)
    assert len(torch.unique(w)) == 4 and torch.all(torch.isin(w, q.centers))
    torch.testing.assert_close(q.centers, torch.tensor([-1.0, -0.2, 0.3, 1.2]), atol=0.01, rtol=0)
    in_type = parse_type("int3")
    table, scale = q.products(w, in_type, 1 / 3)
    levels = np.arange(-4, 4) / 3
    real = q.centers.double().numpy()[:, None] * levels[None, :]
    assert np.abs(table).max() == 31  # the largest product uses the full 6-bit signed range
    np.testing.assert_array_equal(table, np.rint(real * 31 / np.abs(real).max()))
    assert scale == pytest.approx(31 / np.abs(real).max())
    q.eval()
    idx = q.codes(w)
    np.testing.assert_array_equal(q.centers.numpy()[idx], w.numpy())


def test_learned_bits_interpolate_between_floor_and_ceiling():
    q = LearnedBitsWeights(init_bits=4, min_bits=2, max_bits=8)
    w = torch.tensor([[0.33, -0.71, 0.05, 1.4]], requires_grad=True)

    def quant(bits):
        m = (1 << (bits - 1)) - 1
        return torch.round(torch.clamp(w.detach(), -1, 1) * m) / m
    q.n.data.fill_(3.25)
    out = q.quantize(w)[0]
    torch.testing.assert_close(out, 0.75 * quant(3) + 0.25 * quant(4))
    out.sum().backward()
    torch.testing.assert_close(q.n.grad, (quant(4) - quant(3)).sum())  # dQ/dn = Q_ceil - Q_floor
    assert w.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]  # straight through
    q.n.data.fill_(9.5)
    q.clip_(w.detach().clone())
    assert float(q.n.detach()) == 8.0 and q.rounded_bits == 8
    q.n.data.fill_(3.0)
    assert q.rounded_bits == 3 and q.fixed() == {"kind": "int", "bits": 3, "H": 1.0}
    q.n.data.fill_(3.01)
    assert q.rounded_bits == 4  # rounded up
    act = LearnedBitsAct(init_bits=2)
    act.n.data.fill_(1.5)
    z = torch.tensor([0.2, 0.6, 1.3])
    torch.testing.assert_close(act(z), 0.5 * torch.tensor([0.0, 1.0, 1.0]) + 0.5 * torch.tensor([1 / 3, 2 / 3, 1.0]))


def test_bitlength_costs_by_hand():
    model = QuantNet(4, (3,), 2, 15, input={"kind": "raw"},
                     weight={"kind": "learned-bits", "init_bits": 6},
                     act={"kind": "learned-bits", "init_bits": 5})
    model.hidden_linear[0].quantizer.n.data.fill_(6.0)
    model.final.quantizer.n.data.fill_(3.0)
    model.hidden_act[0].n.data.fill_(2.0)
    # groups: fc1 weights (12 weights, 12 MACs, 6 bits, input uint4), fc1 outputs (3, 2 bits), fc2 (6 MACs, 3 bits)
    assert float(model.bitlength_cost("bits").detach()) == pytest.approx((6 + 2 + 3) / 3)
    assert float(model.bitlength_cost("memory").detach()) == pytest.approx((12 * 6 + 3 * 2 + 6 * 3) / 21)
    assert float(model.bitlength_cost("macs").detach()) == pytest.approx((12 * 6 + 6 * 2 + 6 * 3) / 24)
    assert float(model.bitlength_cost("lut").detach()) == pytest.approx((12 * 6 * 4 + 6 * 3 * 2) / 18)
    assert model.lut_estimate(10) == pytest.approx(LUT4_PER_BIT_PRODUCT * (12 * 6 * 4 + 6 * 3 * 2) / 10)


def test_quantized_backprop_uses_power_of_two_inputs_in_the_weight_gradient():
    torch.manual_seed(0)
    lin = QuantLinear(5, 3, BinaryWeights(mode="ste"), in_type=parse_type("uint4"), in_step=1.0,
                      quantized_backprop=True)
    x = torch.tensor([[3.0, 5.0, 0.0, 7.0, 12.0], [1.0, 6.0, 9.0, 2.0, 15.0]])
    g = torch.randn(2, 3)
    torch.manual_seed(42)
    lin(x).backward(g)
    torch.manual_seed(42)
    xq = Q.quantize_pow2_stochastic(x, torch.rand_like(x))
    codes = torch.where(lin.weight.detach() >= 0, 1.0, -1.0)
    gate = (lin.weight.detach().abs() <= 1).float()
    torch.testing.assert_close(lin.weight.grad, (g.T @ xq) * gate)
    assert set(torch.unique(xq.abs()).tolist()) <= {0.0, 1.0, 2.0, 4.0, 8.0, 16.0}
    x2 = x.clone().requires_grad_(True)
    lin(x2).backward(g)
    torch.testing.assert_close(x2.grad, g @ codes)  # the input gradient is exact


def test_config_round_trip_and_bad_configs():
    model = QuantNet(8, (6, 4), 3, 15, input={"kind": "levels", "bits": 2},
                     weight=[{"kind": "int", "bits": 3}, {"kind": "pow2", "bits": 4}],
                     act=[{"kind": "uniform", "bits": 2}, {"kind": "hwgq", "bits": 3}],
                     final_weight={"kind": "ternary", "W0": 0.5}, norm="plain", bias=True)
    again = QuantNet.from_config(model.config())
    again.load_state_dict(model.state_dict())
    x = torch.randint(0, 16, (20, 8))
    model.eval(), again.eval()
    assert torch.equal(model(x), again(x))
    assert again.config() == model.config()
    with pytest.raises(HwnetError, match="unknown weight quantizer kind 'nope'"):
        QuantNet(8, (6,), 3, 15, input={"kind": "raw"}, weight={"kind": "nope"}, act={"kind": "sign"})
    with pytest.raises(HwnetError, match="weight quantizer 'int'"):
        QuantNet(8, (6,), 3, 15, input={"kind": "raw"}, weight={"kind": "int", "bogus": 1}, act={"kind": "sign"})
    with pytest.raises(HwnetError, match="act must be a dict or a list of 2 dicts"):
        QuantNet(8, (6, 4), 3, 15, input={"kind": "raw"}, weight={"kind": "int"}, act=[{"kind": "sign"}])
    with pytest.raises(HwnetError, match="norm must be one of"):
        QuantNet(8, (6,), 3, 15, input={"kind": "raw"}, weight={"kind": "int"}, act={"kind": "sign"}, norm="x")
    assert math.isfinite(float(model.penalty()))
