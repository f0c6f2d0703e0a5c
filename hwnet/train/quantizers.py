"""Quantizers of the training methods hwnet is built on, forward and backward as the papers define them.

Each is a pure torch function (a :class:`torch.autograd.Function` where the backward pass is not the forward's
own derivative). Randomness is explicit: the stochastic quantizers take the uniform samples ``u`` in ``[0, 1)``
as an argument (draw them with ``torch.rand_like(x, generator=...)``), so every result is reproducible and
testable exactly.

- BinaryConnect (Courbariaux et al., 2015): :func:`binary_connect` -- ``+1`` where ``w >= 0``, else ``-1``; or,
  stochastic, ``+1`` with probability ``p = clip((w / H + 1) / 2, 0, 1)``. Backward: straight through
  (``dL/dw = dL/dw_b``); the real weights are clipped to ``[-H, H]`` after each step (:func:`clip_`).
- BinaryNet / QNN (Hubara et al., 2016): :func:`hwnet.train.binarynet.sign_ste` (sign, gated STE ``|x| <= 1``);
  :func:`linear_quantize` ``Clip(round(x / step) * step, lo, hi)`` and :func:`log_quantize`
  ``Clip(sign(x) * 2**round(log2|x|), ...)``, both with the straight-through estimator gated to the clip range.
- BNN+ (Darabi et al., 2018): :func:`swish_sign` -- sign forward, backward
  ``beta * (2 - beta * x * tanh(beta * x / 2)) / (1 + cosh(beta * x))``; :func:`bnn_plus_regularizer`, the L1
  (``|alpha - |w||``) or L2 (``(alpha - |w|)**2``) pull of the weights towards ``±alpha``.
- Neural Networks with Few Multiplications (Lin et al., 2016): :func:`ternary_connect` -- in training
  ``W0 * sign(w) * Bernoulli(|w| / W0)``, at inference ``W0 * sign(w) * [|w| >= W0 / 2]``; :func:`quantize_pow2_stochastic`,
  the quantized back-propagation's ``sign(x) * 2**(floor(log2|x|) + Bernoulli(|x| / 2**floor(log2|x|) - 1))``,
  ``0 -> 0``.
- Dynamic fixed point (Courbariaux et al., 2014): :func:`fixed_point_quantize` with ``total_bits`` of which
  ``integer_bits`` above the point, and :func:`update_integer_bits`, the overflow-rate rule.
- HWGQ (Cai et al., 2017): :func:`hwgq` -- the half-wave Gaussian quantizer (0 for ``x <= 0``, else the nearest
  level ``i * Delta``, ``i = 1 .. 2**bits - 1``), backward the clipped ReLU or the log-tailed ReLU;
  :data:`HWGQ_STEPS` the paper's ``Delta``; :func:`hwgq_binary_weights` ``alpha * sign(w)`` with
  ``alpha = mean|w|`` per output channel.
"""

import torch

from ..errors import HwnetError

__all__ = ["binary_connect", "clip_", "linear_quantize", "log_quantize", "swish_sign", "bnn_plus_regularizer",
           "ternary_connect", "quantize_pow2_stochastic", "fixed_point_quantize", "overflow_rate",
           "update_integer_bits",
           "hwgq", "hwgq_levels", "hwgq_binary_weights", "HWGQ_STEPS", "OVERFLOW_RATE"]


def _plus_minus(mask, like):
    return torch.where(mask, torch.ones_like(like), -torch.ones_like(like))


class _StraightThrough(torch.autograd.Function):
    """Forward: a precomputed value; backward: the incoming gradient times a precomputed gate."""

    @staticmethod
    def forward(ctx, x, value, gate):
        ctx.save_for_backward(gate)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):
        (gate,) = ctx.saved_tensors
        return grad_output * gate, None, None


def _straight_through(x, value, gate=None):
    """``value`` in the forward pass; ``dL/dx = dL/dy * gate`` (1 everywhere when ``gate`` is None)."""
    gate = torch.ones_like(x) if gate is None else gate.to(x.dtype)
    return _StraightThrough.apply(x, value.detach(), gate.detach())


def _check_uniform(u, x, what):
    if u is None:
        return
    if u.shape != x.shape:
        raise HwnetError(f"{what}: the uniform samples have shape {tuple(u.shape)}, the input {tuple(x.shape)}")


# --- BinaryConnect ---------------------------------------------------------------------------------------------

def binary_connect(w, *, H=1.0, u=None):
    """BinaryConnect's binarization of real weights ``w``: ``±1``.

    Deterministic (``u`` None): ``+1`` where ``w >= 0``. Stochastic: ``+1`` where ``u < p``,
    ``p = clip((w / H + 1) / 2, 0, 1)`` (hard sigmoid), ``u`` uniform in ``[0, 1)``. Backward: straight through.
    """
    _check_uniform(u, w, "binary_connect")
    if u is None:
        value = _plus_minus(w >= 0, w)
    else:
        p = torch.clamp((w / H + 1) / 2, 0, 1)
        value = _plus_minus(u < p, w)
    return _straight_through(w, value)


@torch.no_grad()
def clip_(w, H=1.0):
    """Clip real weights to ``[-H, H]`` in place (after every optimizer step, as BinaryConnect does)."""
    return w.clamp_(-H, H)


# --- QNN ---------------------------------------------------------------------------------------------------------

def linear_quantize(x, *, step, lo, hi):
    """QNN's linear quantization ``Clip(round(x / step) * step, lo, hi)``; straight-through gradient where
    ``lo <= x <= hi`` (0 outside). ``round`` is to the nearest, halves to even (torch's rule)."""
    if step <= 0 or lo > hi:
        raise HwnetError(f"linear_quantize needs step > 0 and lo <= hi, got step={step}, lo={lo}, hi={hi}")
    value = torch.clamp(torch.round(x / step) * step, lo, hi)
    return _straight_through(x, value, (x >= lo) & (x <= hi))


def log_quantize(x, *, min_exponent, max_exponent):
    """QNN's logarithmic quantization: ``sign(x) * 2**round(log2|x|)`` with the exponent clipped to
    ``[min_exponent, max_exponent]``; 0 stays 0. Straight-through gradient where ``|x| <= 2**max_exponent``."""
    if min_exponent > max_exponent:
        raise HwnetError(f"log_quantize needs min_exponent <= max_exponent, got {min_exponent} > {max_exponent}")
    mag = x.abs()
    exponent = torch.clamp(torch.round(torch.log2(torch.where(mag > 0, mag, torch.ones_like(mag)))),
                           min_exponent, max_exponent)
    value = torch.where(mag > 0, torch.sign(x) * torch.exp2(exponent), torch.zeros_like(x))
    return _straight_through(x, value, mag <= 2.0 ** max_exponent)


# --- BNN+ --------------------------------------------------------------------------------------------------------

class _SwishSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return _plus_minus(x >= 0, x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        b = ctx.beta
        bx = b * x
        d = b * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))
        return grad_output * d, None


def swish_sign(x, *, beta=5.0):
    """BNN+'s SwishSign: ``sign(x)`` (``sign(0) = +1``) forward; backward the derivative of the SignSwish
    surrogate, ``beta * (2 - beta * x * tanh(beta * x / 2)) / (1 + cosh(beta * x))``."""
    if not beta > 0:
        raise HwnetError(f"swish_sign needs beta > 0, got {beta}")
    return _SwishSign.apply(x, float(beta))


def bnn_plus_regularizer(w, alpha, *, kind="l1"):
    """BNN+'s regularizer pulling weights towards ``±alpha``: ``sum |alpha - |w||`` (``"l1"``) or
    ``sum (alpha - |w|)**2`` (``"l2"``). ``alpha`` (trainable, per layer) also scales the binary weights."""
    if kind == "l1":
        return (alpha - w.abs()).abs().sum()
    if kind == "l2":
        return ((alpha - w.abs()) ** 2).sum()
    raise HwnetError(f"BNN+ regularizer kind must be 'l1' or 'l2', not {kind!r}")


# --- Neural Networks with Few Multiplications -------------------------------------------------------------------

def ternary_connect(w, *, W0=1.0, u=None):
    """Ternary connect: ``W0 * sign(w) * Bernoulli(|w| / W0)`` in training (non-zero where ``u < |w| / W0``, with
    ``u`` uniform in ``[0, 1)``), and with ``u`` None the inference rule ``W0 * sign(w)`` where
    ``|w| >= W0 / 2``, else 0. ``sign(0)`` is taken as 0 here (a zero weight is never kept). Backward: straight
    through."""
    _check_uniform(u, w, "ternary_connect")
    keep = (w.abs() >= W0 / 2) if u is None else (u < torch.clamp(w.abs() / W0, 0, 1))
    value = torch.where(keep, W0 * torch.sign(w), torch.zeros_like(w))
    return _straight_through(w, value)


def quantize_pow2_stochastic(x, u):
    """The quantized back-propagation's stochastic power-of-two rounding:
    ``sign(x) * 2**(floor(log2|x|) + Bernoulli(|x| / 2**floor(log2|x|) - 1))``, ``0 -> 0``; ``u`` uniform in
    ``[0, 1)`` decides the Bernoulli (up where ``u < |x| / 2**k - 1``). Unbiased: its mean is ``x``."""
    _check_uniform(u, x, "quantize_pow2_stochastic")
    mag = x.abs()
    safe = torch.where(mag > 0, mag, torch.ones_like(mag))
    k = torch.floor(torch.log2(safe))
    low = torch.exp2(k)
    up = u < (safe / low - 1)
    return torch.where(mag > 0, torch.sign(x) * low * torch.where(up, 2.0, 1.0), torch.zeros_like(x))


# --- Dynamic fixed point -------------------------------------------------------------------------------------

#: Overflow rate above which dynamic fixed point gives a group one more integer bit.
OVERFLOW_RATE = 1e-4


def fixed_point_quantize(x, *, total_bits, integer_bits):
    """``x`` on a signed fixed-point grid of ``total_bits`` bits, ``integer_bits`` of them above the point (the
    sign included): step ``2**(integer_bits - total_bits + 1)``, range ``[-2**(integer_bits), 2**integer_bits -
    step]``, round to nearest; straight-through gradient inside the range."""
    if total_bits < 2:
        raise HwnetError(f"fixed point needs at least 2 bits, got {total_bits}")
    step = 2.0 ** (integer_bits - total_bits + 1)
    lo, hi = -(2.0 ** integer_bits), 2.0 ** integer_bits - step
    return linear_quantize(x, step=step, lo=lo, hi=hi)


def overflow_rate(x, integer_bits):
    """Fraction of ``x`` outside the range of ``integer_bits`` integer bits (``|x| >= 2**integer_bits``)."""
    return float((x.detach().abs() >= 2.0 ** integer_bits).to(torch.float64).mean())


def update_integer_bits(x, integer_bits, *, threshold=OVERFLOW_RATE):
    """Dynamic fixed point's rule for one group (weights, activations or gradients of one layer): one more
    integer bit if the overflow rate at ``integer_bits`` exceeds ``threshold``; the same if it exceeds it at
    ``integer_bits - 1`` (one bit fewer would overflow); one fewer otherwise."""
    if overflow_rate(x, integer_bits) > threshold:
        return integer_bits + 1
    if overflow_rate(x, integer_bits - 1) > threshold:
        return integer_bits
    return integer_bits - 1


# --- HWGQ ----------------------------------------------------------------------------------------------------

#: The paper's quantization steps ``Delta`` of the half-wave Gaussian quantizer, by bits.
HWGQ_STEPS = {1: 0.799, 2: 0.538, 3: 0.3217, 4: 0.185}


def hwgq_levels(bits):
    """``(Delta, n)``: the step and the number of positive levels ``n = 2**bits - 1``."""
    if bits not in HWGQ_STEPS:
        raise HwnetError(f"HWGQ has steps for {sorted(HWGQ_STEPS)} bits, not {bits!r}")
    return HWGQ_STEPS[bits], (1 << bits) - 1


class _HWGQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits, backward):
        delta, n = hwgq_levels(bits)
        ctx.save_for_backward(x)
        ctx.q_max, ctx.backward_kind = n * delta, backward
        # (0, 1.5 Delta] -> Delta; ((i - 0.5) Delta, (i + 0.5) Delta] -> i Delta; above -> n Delta
        level = torch.clamp(torch.ceil(x / delta - 0.5), 1, n)
        return torch.where(x > 0, level * delta, torch.zeros_like(x))

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        q_max = ctx.q_max
        inside = ((x > 0) & (x <= q_max)).to(grad_output.dtype)
        if ctx.backward_kind == "clipped":
            return grad_output * inside, None, None
        tau = q_max - 1  # log-tailed ReLU: q_max + log(x - tau) above q_max, derivative 1 / (x - tau)
        tail = torch.where(x > q_max, 1 / (x - tau).clamp_min(1.0), torch.zeros_like(x))
        return grad_output * (inside + tail), None, None


def hwgq(x, *, bits, backward="clipped"):
    """The half-wave Gaussian quantizer: 0 for ``x <= 0``, else the nearest positive level ``i * Delta``
    (``i = 1 .. 2**bits - 1``; thresholds midway, ``(0, 1.5 Delta]`` -> ``Delta``). Backward ``"clipped"``:
    gradient 1 on ``0 < x <= q_max = n * Delta``, else 0; ``"log-tailed"``: also ``1 / (x - tau)`` above ``q_max``
    (``tau = q_max - 1``)."""
    if backward not in ("clipped", "log-tailed"):
        raise HwnetError(f"HWGQ backward must be 'clipped' or 'log-tailed', not {backward!r}")
    hwgq_levels(bits)
    return _HWGQ.apply(x, bits, backward)


def hwgq_binary_weights(w):
    """HWGQ's binary weights ``alpha * sign(w)``, ``alpha = mean |w|`` per output channel (row), sign(0) = +1;
    gradient straight through to ``w``."""
    alpha = w.detach().abs().mean(dim=1, keepdim=True)
    return _straight_through(w, alpha * _plus_minus(w >= 0, w))

