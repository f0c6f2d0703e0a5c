"""The training methods' quantizers against the papers' definitions: forward values, the backward rules, and for
the stochastic ones their distribution (over an even grid of uniform samples, so the checks are exact)."""

import math

import pytest
import torch

from hwnet.errors import HwnetError
from hwnet.train import quantizers as q

K = 1000
GRID = (torch.arange(K, dtype=torch.float64) + 0.5) / K  # evenly spread uniform samples


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def _each_with_grid(w):
    """(w repeated per grid sample, the samples): every weight meets every u."""
    return w[:, None].expand(-1, K).contiguous(), GRID[None, :].expand(len(w), -1).contiguous()


def test_binary_connect_deterministic_and_straight_through():
    w = torch.tensor([-2.0, -0.3, -0.0, 0.0, 0.1, 5.0], dtype=torch.float64)
    assert q.binary_connect(w).tolist() == [-1, -1, 1, 1, 1, 1]
    assert _grad(q.binary_connect, w).tolist() == [1.0] * 6


@pytest.mark.parametrize("H", [1.0, 0.5])
def test_binary_connect_stochastic_follows_the_hard_sigmoid(H):
    w = torch.tensor([-3.0, -1.0, -0.5, -0.2, 0.0, 0.25, 0.7, 1.0, 4.0], dtype=torch.float64) * H
    ww, uu = _each_with_grid(w)
    b = q.binary_connect(ww, H=H, u=uu)
    assert set(b.unique().tolist()) <= {-1.0, 1.0}
    p_up = (b > 0).to(torch.float64).mean(dim=1)
    expected = torch.clamp((w / H + 1) / 2, 0, 1)
    assert torch.all((p_up - expected).abs() <= 1 / K)
    # E[w_b] = clip(w / H, -1, 1): the binarization is unbiased inside [-H, H]
    assert torch.all((b.mean(dim=1) - torch.clamp(w / H, -1, 1)).abs() <= 2 / K)


def test_clip_keeps_weights_in_range():
    w = torch.tensor([-3.0, -0.5, 0.2, 7.0], dtype=torch.float64)
    q.clip_(w, 0.5)
    assert w.tolist() == [-0.5, -0.5, 0.2, 0.5]


def test_linear_quantize_rounds_onto_the_grid_and_gates_the_gradient():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    y = q.linear_quantize(x, step=0.25, lo=-1.0, hi=1.5)
    assert torch.all(torch.remainder(y, 0.25) == 0) and y.min() == -1.0 and y.max() == 1.5
    inside = (x >= -1.0) & (x <= 1.5)
    assert torch.all((y[inside] - x[inside]).abs() <= 0.125)
    assert torch.all(y[x < -1.0] == -1.0) and torch.all(y[x > 1.5] == 1.5)
    assert torch.equal(_grad(lambda v: q.linear_quantize(v, step=0.25, lo=-1.0, hi=1.5), x), inside.double())
    with pytest.raises(HwnetError, match="step > 0"):
        q.linear_quantize(x, step=0, lo=0, hi=1)


def test_log_quantize_gives_signed_powers_of_two():
    x = torch.tensor([0.0, 0.3, -0.7, 1.0, 1.4, 1.5, -6.0, 100.0, 1e-6], dtype=torch.float64)
    y = q.log_quantize(x, min_exponent=-3, max_exponent=4)
    assert y[0] == 0
    nz = y[1:]
    e = torch.log2(nz.abs())
    assert torch.all(e == torch.round(e)) and torch.all(torch.sign(nz) == torch.sign(x[1:]))
    assert e.min() >= -3 and e.max() <= 4
    inner = (x[1:].abs() >= 2.0 ** -3) & (x[1:].abs() <= 2.0 ** 4)
    assert torch.all((e[inner] - torch.log2(x[1:].abs()[inner])).abs() <= 0.5)
    assert y[-2] == 16.0 and y[-1] == 2.0 ** -3
    assert _grad(lambda v: q.log_quantize(v, min_exponent=-3, max_exponent=4), x)[-2] == 0


@pytest.mark.parametrize("beta", [1.0, 5.0, 10.0])
def test_swish_sign_backward_is_the_derivative_of_sign_swish(beta):
    x = torch.linspace(-2, 2, 401, dtype=torch.float64)
    assert torch.equal(q.swish_sign(x, beta=beta), torch.where(x >= 0, 1.0, -1.0).double())
    # SignSwish(x) = 2 sigmoid(beta x) (1 + beta x (1 - sigmoid(beta x))) - 1, differentiated by autograd
    xs = x.clone().requires_grad_(True)
    s = torch.sigmoid(beta * xs)
    (2 * s * (1 + beta * xs * (1 - s)) - 1).sum().backward()
    assert torch.allclose(_grad(lambda v: q.swish_sign(v, beta=beta), x), xs.grad, rtol=1e-9, atol=1e-12)
    assert math.isclose(float(_grad(lambda v: q.swish_sign(v, beta=beta), torch.zeros(1, dtype=torch.float64))),
                        beta)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_bnn_plus_regularizer_pulls_weights_to_plus_minus_alpha(kind):
    w = torch.tensor([-1.0, -0.5, 0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    r = q.bnn_plus_regularizer(w, alpha, kind=kind)
    d = (0.5 - w.detach().abs())
    assert math.isclose(float(r.detach()), float(d.abs().sum() if kind == "l1" else (d ** 2).sum()))
    r.backward()
    step = -w.grad  # a gradient step moves |w| towards alpha
    moved = (w.detach() + 1e-3 * step).abs()
    assert torch.all((moved - 0.5).abs() <= (w.detach().abs() - 0.5).abs())
    with pytest.raises(HwnetError, match="'l1' or 'l2'"):
        q.bnn_plus_regularizer(w, alpha, kind="l3")


def test_ternary_connect_inference_threshold_and_training_bernoulli():
    w = torch.tensor([-1.5, -0.6, -0.4, 0.0, 0.3, 0.5, 0.99], dtype=torch.float64)
    assert q.ternary_connect(w, W0=1.0).tolist() == [-1, -1, 0, 0, 0, 1, 1]
    ww, uu = _each_with_grid(w)
    t = q.ternary_connect(ww, W0=1.0, u=uu)
    assert set(t.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.all((t == 0) | (torch.sign(t) == torch.sign(ww)))
    kept = (t != 0).to(torch.float64).mean(dim=1)
    assert torch.all((kept - torch.clamp(w.abs(), 0, 1)).abs() <= 1 / K)
    assert torch.all((t.mean(dim=1) - torch.clamp(w, -1, 1)).abs() <= 1 / K)  # unbiased inside [-W0, W0]


def test_quantized_backprop_rounds_to_neighbouring_powers_of_two_without_bias():
    x = torch.tensor([0.0, 1.0, -0.75, 3.0, 0.1, -12.5, 2.0 ** -7], dtype=torch.float64)
    xx, uu = _each_with_grid(x)
    y = q.quantize_pow2_stochastic(xx, uu)
    assert torch.all(y[0] == 0)
    nz, xs = y[1:], xx[1:]
    low = torch.exp2(torch.floor(torch.log2(xs.abs())))
    assert torch.all((nz.abs() == low) | (nz.abs() == 2 * low)) and torch.all(torch.sign(nz) == torch.sign(xs))
    assert torch.all(y[1] == 1.0) and torch.all(y[-1] == 2.0 ** -7)  # powers of two stay as they are
    assert torch.all((y.mean(dim=1) - x).abs() <= x.abs() / K + 1e-12)


def test_fixed_point_grid_and_overflow_rule():
    x = torch.tensor([-9.0, -4.0, -0.3, 0.06, 3.99, 5.0], dtype=torch.float64)
    y = q.fixed_point_quantize(x, total_bits=8, integer_bits=2)  # step 2**-5, range [-4, 4 - 2**-5]
    assert y.tolist() == [-4.0, -4.0, round(-0.3 * 32) / 32, 2 / 32, 4 - 1 / 32, 4 - 1 / 32]
    big = torch.cat([torch.full((2,), 10.0), torch.zeros(9998)])        # overflow rate 2e-4 at 3 bits
    assert q.update_integer_bits(big, 3) == 4
    mid = torch.cat([torch.full((5,), 5.0), torch.zeros(9995)])         # fits 3 bits, overflows 2
    assert q.update_integer_bits(mid, 3) == 3
    assert q.update_integer_bits(torch.full((100,), 0.1), 3) == 2      # fits with room: one bit fewer
    assert q.overflow_rate(mid, 2) == 5e-4


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_hwgq_levels_thresholds_and_backward(bits):
    delta, n = q.hwgq_levels(bits)
    assert delta == {1: 0.799, 2: 0.538, 3: 0.3217, 4: 0.185}[bits] and n == 2 ** bits - 1
    x = torch.linspace(-1, (n + 2) * delta, 2001, dtype=torch.float64)
    y = q.hwgq(x, bits=bits)
    assert torch.all(y[x <= 0] == 0)
    levels = torch.round(y[x > 0] / delta)
    assert torch.allclose(y[x > 0], levels * delta) and levels.min() >= 1 and levels.max() <= n
    pos = x[x > 0]
    nearest = torch.clamp(torch.round(pos / delta), 1, n)  # nearest level, ignoring ties
    tie = (pos / delta - 0.5 - torch.floor(pos / delta - 0.5)).abs() < 1e-9
    assert torch.all((levels == nearest) | tie)
    # thresholds midway, each interval closed above: 1.5 Delta -> Delta, just above -> 2 Delta (when n > 1)
    at = torch.tensor([1.5 * delta, 1.5 * delta + 1e-9], dtype=torch.float64)
    assert q.hwgq(at, bits=bits).tolist() == [delta, (2 if n > 1 else 1) * delta]
    q_max = n * delta
    g = _grad(lambda v: q.hwgq(v, bits=bits), x)
    assert torch.equal(g, ((x > 0) & (x <= q_max)).double())
    # log-tailed: the derivative of x on (0, q_max], q_max + log(x - tau) above it (tau = q_max - 1)
    gl = _grad(lambda v: q.hwgq(v, bits=bits, backward="log-tailed"), x)
    above = x > q_max
    assert torch.allclose(gl[above], 1 / (x[above] - (q_max - 1))) and torch.equal(gl[~above], g[~above])
    with pytest.raises(HwnetError, match="HWGQ has steps for"):
        q.hwgq(x, bits=5)


def test_hwgq_binary_weights_scale_by_mean_magnitude_per_row():
    w = torch.tensor([[0.5, -1.5, 0.0], [-0.2, -0.4, 0.3]], dtype=torch.float64)
    b = q.hwgq_binary_weights(w)
    assert torch.allclose(b, torch.tensor([[2 / 3, -2 / 3, 2 / 3], [-0.3, -0.3, 0.3]], dtype=torch.float64))
    assert torch.equal(_grad(q.hwgq_binary_weights, w), torch.ones_like(w))


def test_uniform_samples_must_match_the_input():
    with pytest.raises(HwnetError, match=r"uniform samples have shape \(2,\), the input \(3,\)"):
        q.binary_connect(torch.zeros(3), u=torch.zeros(2))
