"""Quantized networks for every training method: one model, with the quantizers chosen per method.

:class:`QuantNet` is ``raw integer inputs -> input quantizer -> (layer -> [batch norm] -> activation quantizer)
per hidden layer -> final QuantLinear -> exp(log_scale) * accumulators``. The hidden layers are an optional
convolutional front-end (:class:`QuantConv2d`, each optionally followed by a non-overlapping max-pool), then the
dense :class:`QuantLinear` layers. Between layers the model carries *integer codes*: the values of the integer
IR's element types (``±1``, ``0 .. 2**k - 1``, ...), held in float tensors; images stay NHWC ``(N, H, W, C)`` and
are flattened row-major (channels fastest, the IR's order) before the first dense layer. A code ``c`` stands for
the real activation ``step * c``; each layer knows its input's step.

- A **weight quantizer** (:class:`WeightQuantizer`) turns a layer's latent real weights into integer codes of one
  element type and a positive scale (a scalar, or one per output row of a hidden layer): ``W_q = scale * codes``.
  In training mode its forward pass is the method's (stochastic or not, with the method's backward rule); in
  eval mode it gives the exact inference codes.
- An **activation quantizer** (:class:`ActQuantizer`) maps a hidden layer's real pre-activation to output codes.
- In eval mode every hidden layer computes the integer accumulator ``acc = codes_in @ codes_w.T`` exactly
  (float64 sums of integers, or looked-up integer products; a convolution does this on every output pixel's
  im2col patch, one row per pixel), and then ``post(acc)``: an element-wise,
  per-channel function made of correctly rounded float operations and comparisons only (scale, batch norm,
  quantizer). That function is what :mod:`hwnet.train.lower` evaluates to find the thresholds, so the integer
  model and this torch model agree on every input by construction; every op in it is monotone, and so is
  ``post``, which is what makes it a multi-threshold. A convolution's batch norm and activation run on its
  ``(N * OH * OW, OC)`` pixel rows, so its statistics and ``post`` are per channel, as the IR's thresholds are.
- A max-pool after a convolution's activation takes the maximum of the codes (a code rises with its value;
  on ``±1`` codes the maximum is the OR).

The last layer's scale is one positive scalar (per-row scales would change the argmax), so the class is the
argmax of the integer accumulators. For regression (``task="regress"``) the output is
``exp(log_scale) * acc + offset``.

Every quantizer is rebuilt from plain values (:meth:`QuantNet.config`), so checkpoints hold no code.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..datatypes import BIPOLAR, TERNARY, parse_type, type_for_range
from ..errors import HwnetError
from ..ir import default_pad_value, window_out_shape
from . import quantizers as Q
from .binarynet import BinaryBatchNorm, binary_sign, mlp_sizes, sign_ste

#: BitPruning's cost kinds (:meth:`QuantNet.bitlength_cost`).
BIT_COSTS = ("bits", "memory", "macs", "lut")

#: iCE40 LUT4 per lane per bit product of hwnet's bit-plane PE (``weight bits x input bits`` AND terms
#: compressed): 3.1 for int2 x uint2, 2.8 for int4 x int4, 2.7 for uint8 x uint8 at SIMD 32 (docs/benchmarks.md).
LUT4_PER_BIT_PRODUCT = 2.8

__all__ = ["QuantNet", "QuantLinear", "QuantConv2d", "conv_spec", "FactorizedLinear", "WeightQuantizer",
           "ActQuantizer", "InputQuantizer", "WEIGHT_QUANTIZERS", "ACT_QUANTIZERS", "INPUT_QUANTIZERS", "BIT_COSTS",
           "LUT4_PER_BIT_PRODUCT", "round_ste", "ShiftAttentionWeights"]


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


def round_ste(x):
    """``round(x)`` (halves to even) with a straight-through gradient."""
    return _RoundSTE.apply(x)


def _bits(value, what, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise HwnetError(f"{what} must be an integer between {lo} and {hi}, got {value!r}")
    return int(value)


def _positive(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise HwnetError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _choice(value, options, what):
    if value not in options:
        raise HwnetError(f"{what} must be one of {', '.join(map(repr, options))}, not {value!r}")
    return value


# --- weight quantizers -----------------------------------------------------------------------------------------

class WeightQuantizer(nn.Module):
    """Base class: latent real weights ``w`` (out, in) -> ``(codes, scale)``.

    ``codes`` is a float tensor of the same shape (with the method's gradient in training mode, exact legal
    values of :attr:`weight_type` in eval mode); ``scale`` is a positive float32 tensor of shape ``(out,)``.
    ``per_row`` is False for the final layer, whose scale must be one number.
    """

    kind = None

    def __init__(self, *, per_row=True):
        super().__init__()
        self.per_row = per_row

    @property
    def weight_type(self):
        raise NotImplementedError

    def quantize(self, w):
        raise NotImplementedError

    def _rows(self, w, value):
        return torch.full((w.shape[0],), float(value), dtype=w.dtype, device=w.device)

    @torch.no_grad()
    def codes(self, w):
        """The eval-mode codes as an int64 numpy array."""
        was = self.training
        self.eval()
        try:
            c = self.quantize(w)[0]
        finally:
            self.train(was)
        return torch.round(c).to(torch.int64).cpu().numpy()

    @torch.no_grad()
    def init_(self, w):
        """Initialize the latent weights: uniform in ``±1/sqrt(fan_in)`` unless the quantizer's own range needs
        another start."""
        bound = 1 / math.sqrt(w.shape[1])
        nn.init.uniform_(w, -bound, bound)

    def clip_(self, w):
        """Called after every optimizer step (e.g. BinaryConnect's clip to ``[-H, H]``)."""

    def penalty(self, w):
        """A term added to the loss (e.g. BNN+'s regularizer); 0 by default."""
        return 0.0

    def update_(self, w):
        """Called after every optimizer step with the layer's weights (dynamic fixed point's bit update)."""

    def products(self, w, in_type, in_step):
        """Lookup-table products (int64, (weight values, input values)) and the scale ``S`` they carry
        (``acc / S`` is the real pre-activation), or ``(None, None)`` for ``codes * x`` arithmetic."""
        return None, None

    def bind_conv(self, *, kernel, channels, out_channels):
        """Called by :class:`QuantConv2d` before its weights are initialized, with the layer's ``kernel``
        ``(KH, KW)``, input ``channels`` and ``out_channels``: a quantizer whose parameters depend on the kernel's
        geometry (Shift Attention's per-kernel attention) creates them here. No-op by default."""


class BinaryWeights(WeightQuantizer):
    """``±1`` weights. ``mode``: ``"ste"`` (BinaryNet, gated straight-through), ``"det"``/``"stochastic"``
    (BinaryConnect, clipped to ``[-H, H]``), ``"swish"`` (BNN+'s SwishSign backward). ``scale``: ``"none"``,
    ``"mean"`` (HWGQ's ``alpha = mean|w|`` per output row), or ``"alpha"`` (BNN+'s trainable per-layer alpha,
    with its ``l1``/``l2`` regularizer weighted by ``reg``)."""

    kind = "binary"

    def __init__(self, *, mode="ste", H=1.0, scale="none", beta=5.0, reg_kind="l1", reg=0.0, per_row=True):
        super().__init__(per_row=per_row)
        self.mode = _choice(mode, ("ste", "det", "stochastic", "swish"), "binary weight mode")
        self.H = _positive(H, "H")
        self.scale = _choice(scale, ("none", "mean", "alpha"), "binary weight scale")
        self.beta = _positive(beta, "beta")
        self.reg_kind = _choice(reg_kind, ("l1", "l2"), "BNN+ regularizer")
        self.reg = float(reg)
        if self.scale == "alpha":
            self.alpha = nn.Parameter(torch.tensor(0.1))

    @property
    def weight_type(self):
        return BIPOLAR

    def quantize(self, w):
        if not self.training:
            codes = binary_sign(w.detach())
        elif self.mode == "ste":
            codes = sign_ste(w)
        elif self.mode == "swish":
            codes = Q.swish_sign(w, beta=self.beta)
        else:
            u = torch.rand_like(w) if self.mode == "stochastic" else None
            codes = Q.binary_connect(w, H=self.H, u=u)
        if self.scale == "none":
            scale = self._rows(w, 1.0)
        elif self.scale == "mean":
            a = w.detach().abs()
            scale = a.mean(dim=1) if self.per_row else a.mean().expand(w.shape[0])
        else:
            alpha = self.alpha.abs()
            scale = (alpha if self.training else alpha.detach()).expand(w.shape[0])
        return codes, scale

    @torch.no_grad()
    def init_(self, w):
        if self.mode in ("det", "stochastic"):  # BinaryConnect: uniform over the clip range (Glorot's H)
            nn.init.uniform_(w, -self.H, self.H)
        else:
            super().init_(w)

    def clip_(self, w):
        if self.mode in ("det", "stochastic"):
            Q.clip_(w, self.H)
        elif self.mode == "ste":
            Q.clip_(w, 1.0)

    def penalty(self, w):
        if self.scale != "alpha" or not self.reg:
            return 0.0
        return self.reg * Q.bnn_plus_regularizer(w, self.alpha.abs(), kind=self.reg_kind) / w.numel()


class TernaryWeights(WeightQuantizer):
    """Ternary connect (Few Multiplications): ``W0 * sign(w) * Bernoulli(|w| / W0)`` in training (or the
    inference rule with ``stochastic=False``), ``|w| >= W0 / 2`` at inference; codes ``{-1, 0, +1}``, scale
    ``W0``; latent weights clipped to ``[-W0, W0]``."""

    kind = "ternary"

    def __init__(self, *, W0=1.0, stochastic=True, per_row=True):
        super().__init__(per_row=per_row)
        self.W0 = _positive(W0, "W0")
        self.stochastic = bool(stochastic)

    @property
    def weight_type(self):
        return TERNARY

    def quantize(self, w):
        if not self.training:
            w = w.detach()
        u = torch.rand_like(w) if self.training and self.stochastic else None
        return Q.ternary_connect(w, W0=self.W0, u=u) / self.W0, self._rows(w, self.W0)

    @torch.no_grad()
    def init_(self, w):
        nn.init.uniform_(w, -self.W0, self.W0)

    def clip_(self, w):
        Q.clip_(w, self.W0)


class IntWeights(WeightQuantizer):
    """QNN's linear quantization on a symmetric (narrow-range) grid: codes ``-m .. m``, ``m = 2**(bits-1) - 1``,
    step ``H / m``; ``int<bits>`` weights; latent weights clipped to ``[-H, H]``."""

    kind = "int"

    def __init__(self, *, bits=4, H=1.0, per_row=True):
        super().__init__(per_row=per_row)
        self.bits = _bits(bits, "weight bits", 2, 16)
        self.H = _positive(H, "H")

    @property
    def weight_type(self):
        return parse_type(f"int{self.bits}")

    @property
    def step(self):
        return self.H / ((1 << (self.bits - 1)) - 1)

    def quantize(self, w):
        if not self.training:
            w = w.detach()
        step = self.step
        q = Q.linear_quantize(w, step=step, lo=-self.H, hi=self.H)
        return round_ste(q / step), self._rows(w, step)

    @torch.no_grad()
    def init_(self, w):
        nn.init.uniform_(w, -self.H, self.H)

    def clip_(self, w):
        Q.clip_(w, self.H)


class Pow2Weights(WeightQuantizer):
    """QNN's logarithmic quantization: ``sign(w) * 2**round(log2|w|)``, exponents ``-E .. 0`` with
    ``E = 2**(bits-1) - 2``; ``pot<bits>`` codes ``±2**(e + E)``, scale ``2**-E``; latent weights clipped to
    ``[-1, 1]``."""

    kind = "pow2"

    def __init__(self, *, bits=3, per_row=True):
        super().__init__(per_row=per_row)
        self.bits = _bits(bits, "power-of-two weight bits", 2, 6)

    @property
    def weight_type(self):
        return parse_type(f"pot{self.bits}")

    def quantize(self, w):
        if not self.training:
            w = w.detach()
        e = self.weight_type.max_exponent
        q = Q.log_quantize(w, min_exponent=-e, max_exponent=0)
        return q * float(2 ** e), self._rows(w, 2.0 ** -e)

    def clip_(self, w):
        Q.clip_(w, 1.0)


class FixedWeights(WeightQuantizer):
    """Dynamic fixed point: ``bits``-bit signed weights with ``integer_bits`` above the point (a buffer, updated
    from the overflow rate after every step by :meth:`update_`); narrow-range codes ``-m .. m``, scale
    ``2**(integer_bits - bits + 1)``."""

    kind = "fixed"

    def __init__(self, *, bits=8, integer_bits=0, per_row=True):
        super().__init__(per_row=per_row)
        self.bits = _bits(bits, "fixed-point weight bits", 2, 16)
        self.register_buffer("integer_bits", torch.tensor(int(integer_bits)))

    @property
    def weight_type(self):
        return parse_type(f"int{self.bits}")

    def quantize(self, w):
        if not self.training:
            w = w.detach()
        step = 2.0 ** (int(self.integer_bits) - self.bits + 1)
        m = (1 << (self.bits - 1)) - 1
        q = Q.linear_quantize(w, step=step, lo=-m * step, hi=m * step)
        return round_ste(q / step), self._rows(w, step)

    def update_(self, w):
        self.integer_bits.fill_(Q.update_integer_bits(w, int(self.integer_bits)))


class CodebookWeights(WeightQuantizer):
    """Weights clustered to a codebook of ``clusters`` values ("No Multiplication? ..."): real weights in
    training, clustered now and then by :meth:`cluster_` (optimal 1-D k-means, ``ckwrap``, the Ckmeans.1d.dp
    algorithm); codes are cluster indices (``uint<ceil(log2 clusters)>``), and the products of every centre with
    every input level are an integer lookup table of ``product_bits``-bit signed entries."""

    kind = "codebook"

    def __init__(self, *, clusters=16, product_bits=8, per_row=True):
        super().__init__(per_row=per_row)
        self.clusters = _bits(clusters, "codebook clusters", 2, 256)
        self.product_bits = _bits(product_bits, "product bits", 2, 16)
        self.register_buffer("centers", torch.zeros(self.clusters))

    @property
    def weight_type(self):
        return parse_type(f"uint{max(1, math.ceil(math.log2(self.clusters)))}")

    @torch.no_grad()
    def cluster_(self, w):
        """Cluster ``w`` with optimal 1-D k-means; the centres become the codebook and every weight its centre."""
        from .ckmeans import ckmeans
        centers, labels = ckmeans(w.detach().cpu().double().numpy().ravel(), self.clusters)
        self.centers.copy_(torch.from_numpy(centers).to(self.centers.dtype))
        w.copy_(self.centers[torch.from_numpy(labels).reshape(w.shape)])

    def _indices(self, w):
        return torch.argmin((w.detach()[..., None] - self.centers).abs(), dim=-1)

    def quantize(self, w):
        if self.training:
            return w, self._rows(w, 1.0)
        return self._indices(w).to(w.dtype), self._rows(w, 1.0)

    def products(self, w, in_type, in_step):
        levels = in_type.values().astype(np.float64) * in_step
        centers = self.centers.detach().double().cpu().numpy()
        real = centers[:, None] * levels[None, :]
        peak = float(np.abs(real).max())
        if peak == 0:
            raise HwnetError("codebook layer: every product is zero (the codebook was never clustered?)")
        scale = ((1 << (self.product_bits - 1)) - 1) / peak
        table = np.zeros((self.weight_type.num_values, len(levels)), dtype=np.int64)
        table[:self.clusters] = np.rint(real * scale).astype(np.int64)
        return table, scale


def _interpolated(x, n, quantize):
    """BitPruning's quantizer at a real bitlength ``n``: ``(1 - a) * Q_floor(n)(x) + a * Q_ceil(n)(x)`` with
    ``a = n - floor(n)``, so ``dQ/dn = Q_ceil - Q_floor``; straight-through in ``x``."""
    low = torch.floor(n.detach())
    a = n - low
    q_low, q_high = quantize(x, int(low)), quantize(x, int(low) + 1)
    return (1 - a) * q_low + a * q_high


def _symmetric(w, bits):
    m = (1 << (bits - 1)) - 1
    return w + (torch.round(torch.clamp(w, -1, 1) * m) / m - w).detach()


def _unsigned(x, bits):
    m = (1 << bits) - 1
    inside = ((x >= 0) & (x <= 1)).to(x.dtype)
    q = torch.round(torch.clamp(x, 0, 1) * m) / m
    return x * inside + (q - x * inside).detach()


class _LearnedBits(nn.Module):
    """A learnable real bitlength ``n`` in ``[min_bits, max_bits]`` (BitPruning)."""

    def _init_bits(self, init_bits, min_bits, max_bits):
        self.min_bits, self.max_bits = int(min_bits), int(max_bits)
        if not self.min_bits <= init_bits <= self.max_bits:
            raise HwnetError(f"initial bitlength {init_bits} is outside {self.min_bits} .. {self.max_bits}")
        self.n = nn.Parameter(torch.tensor(float(init_bits)))

    @property
    def rounded_bits(self):
        """The bitlength rounded up, as BitPruning fixes it after training."""
        return int(math.ceil(float(self.n.detach()) - 1e-6))

    @torch.no_grad()
    def clamp_bits_(self):
        self.n.clamp_(self.min_bits, self.max_bits)


class LearnedBitsWeights(WeightQuantizer, _LearnedBits):
    """BitPruning's weights: symmetric linear quantization of ``clip(w, -1, 1)`` at a learnable real bitlength
    (interpolated between the floor and ceiling bitlengths). For training only: after training the bitlength
    is rounded up and the layer becomes :class:`IntWeights` (:meth:`fixed`)."""

    kind = "learned-bits"

    def __init__(self, *, init_bits=8, min_bits=2, max_bits=8, per_row=True):
        WeightQuantizer.__init__(self, per_row=per_row)
        self._init_bits(_bits(init_bits, "initial weight bits", 2, 16), _bits(min_bits, "min weight bits", 2, 16),
                        _bits(max_bits, "max weight bits", 2, 16))

    @property
    def weight_type(self):
        return parse_type(f"int{self.rounded_bits}")

    def quantize(self, w):
        return _interpolated(w, self.n, _symmetric), self._rows(w, 1.0)

    @torch.no_grad()
    def init_(self, w):
        nn.init.uniform_(w, -1.0, 1.0)

    def clip_(self, w):
        Q.clip_(w, 1.0)
        self.clamp_bits_()

    def fixed(self):
        """The fixed-bitlength quantizer this one becomes: :class:`IntWeights` with the rounded-up bits."""
        return {"kind": "int", "bits": self.rounded_bits, "H": 1.0}


class RealWeights(WeightQuantizer):
    """Unquantized real weights: the full-precision network Fixed-Point Factorized Networks start from. Not
    lowerable (there is no integer weight type); the factorization replaces every layer before lowering."""

    kind = "real"

    @property
    def weight_type(self):
        raise HwnetError("real-valued weights have no integer type: this is a full-precision model (the first "
                         "phase of a factorized network), not a lowerable one")

    def quantize(self, w):
        return (w if self.training else w.detach()), self._rows(w, 1.0)


def _ternary_ste(x):
    """``sign(x)`` where ``|x| >= 1/2``, else 0 (ternary rounding of values in [-1, 1]); straight through."""
    t = torch.where(x.detach().abs() >= 0.5, torch.sign(x.detach()), torch.zeros_like(x))
    return x + (t - x).detach() if x.requires_grad else t


class FactorWeights(WeightQuantizer):
    """The outer factor of a Fixed-Point Factorized layer, ``X @ diag(d)``: a real shadow of the ternary ``X``
    (the layer's weights, rounded to ``{-1, 0, 1}`` at ``±1/2``) and the positive reals ``d`` (one per column),
    each rounded to a power of two. The largest exponent ``e_max`` and the ``E = 2**(bits-1) - 2`` below it are
    kept (smaller ``d`` are raised to ``2**(e_max - E)``), so the weights ``X * 2**e`` are ``pot<bits>`` codes
    times the scale ``2**(e_max - E)``: shifts, no multiplier. Straight-through gradients to ``X`` and ``d``."""

    kind = "factor"

    def __init__(self, *, columns, bits=4, per_row=True):
        super().__init__(per_row=per_row)
        self.columns = _bits(columns, "factor columns", 1, 1 << 20)
        self.bits = _bits(bits, "power-of-two factor bits", 2, 6)
        self.d = nn.Parameter(torch.ones(self.columns))

    @property
    def weight_type(self):
        return parse_type(f"pot{self.bits}")

    def _exponents(self):
        e = torch.round(torch.log2(self.d.detach().abs().clamp_min(1e-30)))
        top = e.max()
        return torch.clamp(e, top - self.weight_type.max_exponent, top), top - self.weight_type.max_exponent

    def quantize(self, w):
        e, low = self._exponents()
        d = self.d if self.training else self.d.detach()
        dq = d + (torch.exp2(e) - d).detach()
        x = _ternary_ste(w if self.training else w.detach())
        return x * (dq / torch.exp2(low))[None, :], self._rows(w, float(torch.exp2(low)))

    @torch.no_grad()
    def init_(self, w):
        nn.init.uniform_(w, -1.0, 1.0)

    def clip_(self, w):
        Q.clip_(w, 1.0)
        with torch.no_grad():
            self.d.clamp_(min=1e-12)


class ShiftAttentionWeights(WeightQuantizer):
    """Shift Attention Layers ("Attention Based Pruning for Shift Networks", Hacene, Lassance, Gripon, Courbariaux,
    Bengio 2019): a convolution whose every kernel (one per output channel ``oc`` and input channel ``ic``) keeps
    one of its ``KH * KW`` positions, so that the layer is a shift of each input channel followed by a 1x1
    convolution. Conv layers only (:class:`QuantConv2d` calls :meth:`bind_conv`).

    Parameters: the latent weights ``w`` ``(OC, KH * KW * C)`` in the layer's patch order ``(ky, kx, ic)``, and
    the attention logits :attr:`logits` ``(OC, KH * KW, C)`` (one vector over the positions per ``(oc, ic)``;
    reshaped to ``(OC, KH * KW * C)`` they line up with ``w``), initialized uniform in ``[0, 1)`` as in the
    authors' code.

    - **Training** (``tau > 0``): ``sign(w)`` (BinaryNet's gated straight-through estimator) times the attention
      ``softmax(a / (std(a) * tau))`` over each kernel's positions, ``a`` the kernel's logits: they are divided by
      their standard deviation over the positions (as the authors' code does), so that ``tau`` alone sets how
      peaked the attention is. Gradients reach both ``w`` and the logits.
    - **Hard** (``tau == 0``, the last epochs of the method) and **eval** (and lowering): exactly one position per
      ``(oc, ic)``, the argmax of the logits (the argmax of the attention at every temperature; ties to the lowest
      position index), with weight ``sign(w)`` there and 0 at every other position: ``ternary`` codes, scale 1.
      In hard training the gradient reaches ``w`` at the kept positions only.

    ``tau`` is a buffer (it round-trips with the checkpoint); the method's ``after_epoch`` hook anneals it
    (:meth:`temperature`).
    """

    kind = "shift-attention"

    def __init__(self, *, tau=1.0, per_row=True):
        super().__init__(per_row=per_row)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
            raise HwnetError(f"shift-attention temperature tau must be a number >= 0 (0: the hard one-hot "
                             f"attention), got {tau!r}")
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.kernel = self.channels = None
        self.register_parameter("logits", None)

    @property
    def weight_type(self):
        return TERNARY

    @property
    def positions(self):
        """Kernel positions ``KH * KW`` (None before :meth:`bind_conv`)."""
        return None if self.kernel is None else self.kernel[0] * self.kernel[1]

    def bind_conv(self, *, kernel, channels, out_channels):
        self.kernel, self.channels = (int(kernel[0]), int(kernel[1])), int(channels)
        self.logits = nn.Parameter(torch.empty(int(out_channels), self.positions, self.channels))
        with torch.no_grad():
            self.logits.uniform_(0.0, 1.0)

    def _check(self, w):
        if self.logits is None:
            raise HwnetError("shift-attention weights are for convolutional layers only (each kernel keeps one of "
                             "its positions); a dense layer cannot have them")
        expected = (self.logits.shape[0], self.positions * self.channels)
        if tuple(w.shape) != expected:
            raise HwnetError(f"shift-attention weights: the layer's weights have shape {tuple(w.shape)}, not "
                             f"{expected} (OC, KH * KW * C)")

    def attention(self, tau=None):
        """The soft attention ``(OC, KH * KW, C)`` at temperature ``tau`` (default :attr:`tau`, which must then be
        positive): a softmax over each kernel's positions, summing to 1."""
        tau = float(self.tau) if tau is None else float(tau)
        if not tau > 0:
            raise HwnetError(f"the soft attention needs a positive temperature, got {tau}")
        a = self.logits
        if self.positions > 1:  # the authors' normalization: unit spread over each kernel's positions
            a = a / a.std(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.softmax(a / tau, dim=1)

    @torch.no_grad()
    def kept(self):
        """The kept position of every kernel, ``(OC, C)`` int64 (``ky * KW + kx``): the argmax of the logits over
        the positions, ties to the lowest index."""
        return torch.argmax(self.logits.detach(), dim=1)

    def mask(self):
        """The hard attention: one-hot ``(OC, KH * KW, C)`` float, 1 at each kernel's :meth:`kept` position."""
        return torch.zeros_like(self.logits).scatter_(1, self.kept()[:, None, :], 1.0).detach()

    def quantize(self, w):
        self._check(w)
        if not self.training:
            return binary_sign(w.detach()) * self.mask().reshape(w.shape), self._rows(w, 1.0)
        attention = self.mask() if float(self.tau) == 0 else self.attention()
        return sign_ste(w) * attention.reshape(w.shape), self._rows(w, 1.0)

    @torch.no_grad()
    def init_(self, w):
        self._check(w)
        super().init_(w)

    def clip_(self, w):
        Q.clip_(w, 1.0)

    @staticmethod
    def temperature(epoch, epochs, *, tau0, tau_final, hard_epochs):
        """The temperature of (1-based) ``epoch`` of ``epochs``: ``min(hard_epochs, epochs - 1)`` hard epochs
        (0) at the end; before them, geometric from ``tau0`` (the first epoch) to ``tau_final`` (the last soft
        epoch)."""
        hard = min(int(hard_epochs), int(epochs) - 1)
        soft = int(epochs) - hard
        if epoch > soft:
            return 0.0
        if soft == 1:
            return float(tau0)
        return float(tau0) * (float(tau_final) / float(tau0)) ** ((min(epoch, soft) - 1) / (soft - 1))


WEIGHT_QUANTIZERS = {q.kind: q for q in (BinaryWeights, TernaryWeights, IntWeights, Pow2Weights, FixedWeights,
                                          CodebookWeights, LearnedBitsWeights, RealWeights, ShiftAttentionWeights)}


# --- activation quantizers -------------------------------------------------------------------------------------

class ActQuantizer(nn.Module):
    """Base class: real pre-activations (batch, C) -> codes of :attr:`out_type`, standing for ``step * code``."""

    kind = None

    def update_(self):
        """Called after every optimizer step (dynamic fixed point's bit update)."""


class SignAct(ActQuantizer):
    """``sign`` activations (``±1``): BinaryNet's gated straight-through (``"ste"``) or BNN+'s SwishSign."""

    kind = "sign"

    def __init__(self, *, mode="ste", beta=5.0):
        super().__init__()
        self.mode = _choice(mode, ("ste", "swish"), "sign activation mode")
        self.beta = _positive(beta, "beta")

    out_type = BIPOLAR
    step = 1.0

    def forward(self, z):
        if not self.training:
            return binary_sign(z)
        return sign_ste(z) if self.mode == "ste" else Q.swish_sign(z, beta=self.beta)


class UniformAct(ActQuantizer):
    """QNN's linear activation quantization ``Clip(round(z / step) * step, 0, hi)``, ``step = hi / (2**bits - 1)``:
    ``uint<bits>`` codes, straight-through gradient inside ``[0, hi]``."""

    kind = "uniform"

    def __init__(self, *, bits=2, hi=1.0):
        super().__init__()
        self.bits = _bits(bits, "activation bits", 1, 16)
        self.hi = _positive(hi, "activation range")

    @property
    def out_type(self):
        return parse_type(f"uint{self.bits}")

    @property
    def step(self):
        return self.hi / ((1 << self.bits) - 1)

    def forward(self, z):
        step = self.step
        if not self.training:
            return torch.round(torch.clamp(z, 0, self.hi) / step)
        return round_ste(Q.linear_quantize(z, step=step, lo=0.0, hi=self.hi) / step)


class HWGQAct(ActQuantizer):
    """HWGQ's half-wave Gaussian quantizer (after a batch norm without affine parameters): codes
    ``0 .. 2**bits - 1`` for the levels ``i * Delta``; backward ``"clipped"`` or ``"log-tailed"``."""

    kind = "hwgq"

    def __init__(self, *, bits=2, backward="clipped"):
        super().__init__()
        self.bits = _bits(bits, "HWGQ bits", 1, 4)
        self.backward_kind = _choice(backward, ("clipped", "log-tailed"), "HWGQ backward")

    @property
    def out_type(self):
        return parse_type(f"uint{self.bits}")

    @property
    def step(self):
        return Q.hwgq_levels(self.bits)[0]

    def forward(self, z):
        delta, n = Q.hwgq_levels(self.bits)
        if not self.training:
            return torch.where(z > 0, torch.clamp(torch.ceil(z / delta - 0.5), 1, n), torch.zeros_like(z))
        return Q.hwgq(z, bits=self.bits, backward=self.backward_kind) / delta


class _GradientQuantizer(torch.autograd.Function):
    """Identity forward; backward rounds the gradient to dynamic fixed point and records it for the update."""

    @staticmethod
    def forward(ctx, x, owner):
        ctx.owner = owner
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        owner = ctx.owner
        owner.last_gradient = grad_output.detach()
        step = 2.0 ** (int(owner.gradient_integer_bits) - owner.gradient_bits + 1)
        m = (1 << (owner.gradient_bits - 1)) - 1
        return torch.clamp(torch.round(grad_output / step), -m - 1, m) * step, None


class FixedAct(ActQuantizer):
    """Dynamic fixed point activations: ReLU, then ``bits``-bit signed fixed point with ``integer_bits`` above
    the point. After the ReLU the sign bit is always 0, so the codes are ``uint<bits - 1>``. The gradients
    flowing back through this layer are rounded to ``gradient_bits``-bit fixed point. All three integer-bit
    counts are buffers updated by :meth:`update_` from the overflow rate."""

    kind = "fixed"

    def __init__(self, *, bits=8, gradient_bits=16, integer_bits=1, gradient_integer_bits=-4):
        super().__init__()
        self.bits = _bits(bits, "fixed-point activation bits", 2, 16)
        self.gradient_bits = _bits(gradient_bits, "fixed-point gradient bits", 2, 32)
        self.register_buffer("integer_bits", torch.tensor(int(integer_bits)))
        self.register_buffer("gradient_integer_bits", torch.tensor(int(gradient_integer_bits)))
        self.last_input = None
        self.last_gradient = None

    @property
    def out_type(self):
        return parse_type(f"uint{self.bits - 1}")

    @property
    def step(self):
        return 2.0 ** (int(self.integer_bits) - self.bits + 1)

    def forward(self, z):
        step, top = self.step, float((1 << (self.bits - 1)) - 1)
        if not self.training:
            return torch.clamp(torch.round(torch.relu(z) / step), 0, top)
        self.last_input = z.detach()
        z = _GradientQuantizer.apply(z, self)
        return round_ste(Q.linear_quantize(torch.relu(z), step=step, lo=0.0, hi=top * step) / step)

    def update_(self):
        if self.last_input is not None:
            self.integer_bits.fill_(Q.update_integer_bits(self.last_input, int(self.integer_bits)))
        if self.last_gradient is not None:
            self.gradient_integer_bits.fill_(Q.update_integer_bits(self.last_gradient,
                                                                   int(self.gradient_integer_bits)))
        self.last_input = self.last_gradient = None


class LevelsAct(ActQuantizer):
    """"No Multiplication? ...": the non-linearity's output range cut into levels, backward through the
    continuous function. ``"tanh"``: ``2**bits - 1`` levels on ``[-1, 1]`` (``int<bits>`` codes ``-m .. m``);
    ``"relu6"``: ``2**bits`` levels on ``[0, 6]`` (``uint<bits>`` codes). At inference ``tanh`` is never
    evaluated: the code is the number of bin boundaries ``atanh((c - 1/2) * step)`` at or below ``z``."""

    kind = "levels"

    def __init__(self, *, fn="tanh", bits=3):
        super().__init__()
        self.fn = _choice(fn, ("tanh", "relu6"), "activation function")
        self.bits = _bits(bits, "activation bits", 2 if fn == "tanh" else 1, 8)

    @property
    def _m(self):
        return (1 << (self.bits - 1)) - 1

    @property
    def out_type(self):
        return parse_type(f"int{self.bits}" if self.fn == "tanh" else f"uint{self.bits}")

    @property
    def step(self):
        return 1.0 / self._m if self.fn == "tanh" else 6.0 / ((1 << self.bits) - 1)

    def boundaries(self):
        """The ``tanh`` bin boundaries in ``z`` (float32, ascending): code ``>= c`` where ``z >= b[c + m - 1]``."""
        m = self._m
        return torch.tensor([math.atanh((c - 0.5) / m) for c in range(-m + 1, m + 1)], dtype=torch.float32)

    def forward(self, z):
        step = self.step
        if self.fn == "relu6":
            if not self.training:
                return torch.round(torch.clamp(z, 0, 6) / step)
            return round_ste(torch.clamp(z, 0, 6) / step)
        if not self.training:
            b = self.boundaries().to(z.device)
            return (z[..., None] >= b).sum(dim=-1).to(z.dtype) - self._m
        return round_ste(torch.tanh(z) / step)


class LearnedBitsAct(ActQuantizer, _LearnedBits):
    """BitPruning's activations: linear quantization of ``clip(z, 0, 1)`` at a learnable real bitlength. Its codes
    are the quantized real values (step 1); after training it becomes :class:`UniformAct` (:meth:`fixed`)."""

    kind = "learned-bits"
    step = 1.0

    def __init__(self, *, init_bits=8, min_bits=1, max_bits=8):
        ActQuantizer.__init__(self)
        self._init_bits(_bits(init_bits, "initial activation bits", 1, 16),
                        _bits(min_bits, "min activation bits", 1, 16), _bits(max_bits, "max activation bits", 1, 16))

    @property
    def out_type(self):
        return parse_type(f"uint{self.rounded_bits}")

    def forward(self, z):
        return _interpolated(z, self.n, _unsigned)

    def update_(self):
        self.clamp_bits_()

    def fixed(self):
        """The fixed-bitlength quantizer this one becomes: :class:`UniformAct` with the rounded-up bits."""
        return {"kind": "uniform", "bits": self.rounded_bits, "hi": 1.0}


ACT_QUANTIZERS = {q.kind: q for q in (SignAct, UniformAct, HWGQAct, FixedAct, LevelsAct, LearnedBitsAct)}


# --- input quantizers ------------------------------------------------------------------------------------------

class InputQuantizer(nn.Module):
    """Raw integer pixels ``0 .. input_max`` -> codes. ``"binary"``: BinaryNet's ``sign(x / input_max - 0.5)``;
    ``"levels"``: ``round(x * (2**bits - 1) / input_max)``, ``uint<bits>`` codes; ``"raw"``: the pixels
    themselves (no IR layer; the first dense layer takes the raw input type), step ``1 / input_max``."""

    def __init__(self, *, input_max, kind="raw", bits=None):
        super().__init__()
        self.kind = _choice(kind, ("binary", "levels", "raw"), "input quantizer")
        self.input_max = int(input_max)
        self.bits = None if kind != "levels" else _bits(bits, "input bits", 1, 16)

    @property
    def out_type(self):
        if self.kind == "binary":
            return BIPOLAR
        if self.kind == "levels":
            return parse_type(f"uint{self.bits}")
        return type_for_range(0, self.input_max)

    @property
    def step(self):
        if self.kind == "binary":
            return 1.0
        if self.kind == "levels":
            return 1.0 / ((1 << self.bits) - 1)
        return 1.0 / self.input_max

    def forward(self, x):
        x = torch.as_tensor(x).to(torch.float32)
        if self.kind == "binary":
            return binary_sign(x / self.input_max - 0.5)
        if self.kind == "levels":
            top = float((1 << self.bits) - 1)
            return torch.clamp(torch.round(x * top / self.input_max), 0, top)
        return x


INPUT_QUANTIZERS = ("binary", "levels", "raw")


# --- layers and the model --------------------------------------------------------------------------------------

class _PowerOfTwoBackprop(torch.autograd.Function):
    """``x @ w.T``; the weight gradient uses the inputs rounded stochastically to powers of two (Few
    Multiplications' quantized back-propagation), the input gradient is exact."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w.T

    @staticmethod
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        xq = Q.quantize_pow2_stochastic(x, torch.rand_like(x))
        return grad_output @ w, grad_output.T @ xq


class QuantLinear(nn.Module):
    """One layer: latent weights, a weight quantizer, the input's element type and step, an optional bias.

    Training: ``z = (x_codes @ codes_w.T) * (in_step * scale)`` (+ bias). Eval: ``z = scale_acc(accumulate(x))``.
    """

    def __init__(self, in_features, out_features, quantizer, *, in_type, in_step, bias=False,
                 quantized_backprop=False):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.quantizer = quantizer
        self.in_type, self.in_step = in_type, float(in_step)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        quantizer.init_(self.weight)
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None
        self.quantized_backprop = bool(quantized_backprop)

    def lookup(self):
        """``(products, S)`` of a lookup-table layer, else ``(None, None)``."""
        return self.quantizer.products(self.weight, self.in_type, self.in_step)

    def accumulate(self, x):
        """Eval-mode integer accumulators: a float64 tensor of exact integers (float64 holds every integer below
        2**53, so wide layers, e.g. 8-bit pixels into 8-bit weights, stay exact)."""
        codes = self.quantizer.quantize(self.weight)[0].detach()
        table, _ = self.lookup()
        if table is None:
            return x.to(torch.float64) @ codes.to(torch.float64).T
        ranks = torch.from_numpy(self.in_type.ranks(torch.round(x).to(torch.int64).cpu().numpy()))
        w_ranks = torch.from_numpy(self.quantizer.weight_type.ranks(codes.to(torch.int64).cpu().numpy()))
        # One masked matrix product per input value. Every partial sum is an integer below
        # in_features * max|product|; under 2**24 float32 sums them exactly (and fast), else int64 does.
        exact32 = self.in_features * int(np.abs(table).max()) < (1 << 24)
        dtype = torch.float32 if exact32 else torch.int64
        table = torch.from_numpy(table).to(dtype)
        acc = torch.zeros(x.shape[0], self.out_features, dtype=dtype)
        for j in range(table.shape[1]):
            acc += (ranks == j).to(dtype) @ table[w_ranks, j].T
        return acc.to(torch.float64)

    def acc_factor(self):
        """The per-row float32 factor ``f`` with ``z = acc * f`` (+ bias) in eval mode."""
        _, s = self.lookup()
        if s is not None:
            return torch.full((self.out_features,), 1.0 / s, dtype=torch.float32)
        scale = self.quantizer.quantize(self.weight)[1].detach()
        return (scale * self.in_step).to(torch.float32)

    def scale_acc(self, acc):
        z = acc * self.acc_factor()
        return z if self.bias is None else z + self.bias

    def forward(self, x):
        if not self.training:
            return self.scale_acc(self.accumulate(x))
        codes, scale = self.quantizer.quantize(self.weight)
        y = _PowerOfTwoBackprop.apply(x, codes) if self.quantized_backprop else x @ codes.T
        z = y * (scale * self.in_step)
        return z if self.bias is None else z + self.bias

    def real_forward(self, x):
        """``(x @ W.T) * in_step`` (+ bias) with the *latent real* weights ``W``: BinaryConnect's evaluation."""
        z = (x @ self.weight.T) * self.in_step
        return z if self.bias is None else z + self.bias

    @property
    def out_size(self):
        """Output values per sample: ``out_features``."""
        return self.out_features

    @property
    def macs(self):
        """Multiply-accumulates per sample: ``in_features * out_features``."""
        return self.in_features * self.out_features


def _int_pair(value, count, what, form, minimum):
    """An int (repeated ``count`` times) or ``count`` ints, each ``>= minimum`` -> list of ints."""
    items = [value] * count if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if (not isinstance(items, (list, tuple)) or len(items) != count
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum
                       for v in items)):
        raise HwnetError(f"{what} must be {form}, got {value!r}")
    return [int(v) for v in items]


def conv_spec(spec, what="conv layer"):
    """One convolutional layer's spec, checked and normalized: ``{"channels": OC, "kernel": [kh, kw],
    "stride": [sh, sw], "padding": [top, bottom, left, right], "pool": None or [ph, pw]}``.

    ``spec`` is a dict with ``channels`` and ``kernel`` (an int or ``[kh, kw]``), and optionally ``stride`` (an
    int or ``[sh, sw]``, default 1), ``padding`` (an int or ``[top, bottom, left, right]``, default 0) and
    ``pool`` (None, or an int or ``[ph, pw]``: a non-overlapping max-pool after the activation).
    """
    if not isinstance(spec, dict):
        raise HwnetError(f"{what} must be a dict like {{'channels': 16, 'kernel': 3}}, got {spec!r}")
    unknown = sorted(set(spec) - {"channels", "kernel", "stride", "padding", "pool"})
    if unknown:
        raise HwnetError(f"{what}: unknown key {unknown[0]!r} (the keys are channels, kernel, stride, padding, "
                         f"pool)")
    for key in ("channels", "kernel"):
        if key not in spec:
            raise HwnetError(f"{what} needs {key!r}, got {spec!r}")
    pool = spec.get("pool")
    return {"channels": _int_pair(spec["channels"], 1, f"{what} channels", "a positive integer", 1)[0],
            "kernel": _int_pair(spec["kernel"], 2, f"{what} kernel", "a positive integer or [kh, kw]", 1),
            "stride": _int_pair(spec.get("stride", 1), 2, f"{what} stride", "a positive integer or [sh, sw]", 1),
            "padding": _int_pair(spec.get("padding", 0), 4, f"{what} padding",
                                 "a non-negative integer or [top, bottom, left, right]", 0),
            "pool": None if pool is None else _int_pair(pool, 2, f"{what} pool", "None, a positive integer or "
                                                        "[ph, pw]", 1)}


def _max_pool(h, kernel):
    """Non-overlapping max-pool of NHWC codes ``h`` (the output size rounded down)."""
    return F.max_pool2d(h.permute(0, 3, 1, 2), kernel_size=tuple(kernel)).permute(0, 2, 3, 1)


class QuantConv2d(QuantLinear):
    """A 2-D convolution over NHWC code images: a :class:`QuantLinear` applied to every output pixel's patch.

    The latent weight is ``(OC, KH * KW * C)`` in the IR's patch order, ``(ky, kx, ic)`` row-major with ``ic``
    fastest (:class:`hwnet.ir.Conv2d`'s ``matmul`` weights). :meth:`patches` pads the image with
    ``pad_value`` (:func:`hwnet.ir.default_pad_value` of the input type, in code space: the padded element is a
    legal input value) and flattens every patch (im2col), one row per output pixel; training, the exact eval-mode
    accumulators, lookup tables, batch norm and the activation then all work on those ``(N * OH * OW, OC)``
    rows, per channel, exactly as for a dense layer.

    Parameters
    ----------
    in_shape : (H, W, C)
    spec : dict
        The layer (:func:`conv_spec`): ``channels``, ``kernel``, ``stride``, ``padding``, ``pool``.
    quantizer, in_type, in_step, bias, quantized_backprop
        As :class:`QuantLinear`.
    what : str
        The layer's name in error messages.

    Members
    -------
    in_shape, out_shape : tuple of int
        ``(H, W, C)`` in, ``(OH, OW, OC)`` out of the convolution (before any pool).
    kernel, stride, padding, pool : tuple of int or None
    pad_value : int
    pooled_shape : tuple of int
        The shape after the pool (``out_shape`` when there is none): what the next layer takes.
    """

    #: Patch elements per block of :meth:`accumulate` (float64: 32 MiB).
    BLOCK = 1 << 22

    def __init__(self, in_shape, spec, quantizer, *, in_type, in_step, bias=False, quantized_backprop=False,
                 what="conv layer"):
        spec = conv_spec(spec, what)
        h, w, c = (int(v) for v in in_shape)
        kh, kw = spec["kernel"]
        oh, ow, _ = window_out_shape((h, w, c), spec["kernel"], spec["stride"], spec["padding"])
        if oh < 1 or ow < 1:
            raise HwnetError(f"{what}: a {kh}x{kw} kernel with stride {spec['stride']} does not fit the {h}x{w} "
                             f"input padded by (top, bottom, left, right) = {spec['padding']}; use a smaller "
                             f"kernel or more padding")
        pool = spec["pool"]
        if pool is not None and (pool[0] > oh or pool[1] > ow):
            raise HwnetError(f"{what}: the {pool[0]}x{pool[1]} max-pool does not fit the layer's {oh}x{ow} output; "
                             f"use a smaller pool")
        quantizer.bind_conv(kernel=(kh, kw), channels=c, out_channels=spec["channels"])
        super().__init__(kh * kw * c, spec["channels"], quantizer, in_type=in_type, in_step=in_step, bias=bias,
                         quantized_backprop=quantized_backprop)
        self.kernel, self.stride, self.padding = tuple(spec["kernel"]), tuple(spec["stride"]), tuple(spec["padding"])
        self.pool = None if pool is None else tuple(pool)
        self.in_shape, self.out_shape = (h, w, c), (oh, ow, spec["channels"])
        self.pooled_shape = self.out_shape if pool is None else (oh // pool[0], ow // pool[1], spec["channels"])
        self.pad_value = default_pad_value(in_type)

    def spec(self):
        """The layer's normalized spec (:func:`conv_spec`), as plain values."""
        return {"channels": self.out_features, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.padding), "pool": None if self.pool is None else list(self.pool)}

    def patches(self, x):
        """The im2col rows ``(N * OH * OW, KH * KW * C)`` of NHWC images ``x`` (``(N, H, W, C)``, or flattened
        ``(N, H * W * C)``), padded with :attr:`pad_value`; rows in output pixel order, patches ``(ky, kx, ic)``."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        x = self._padded(x).unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, OH, OW, KH, KW)
        return x.permute(0, 2, 3, 4, 5, 1).reshape(-1, self.in_features)

    def accumulate(self, x):
        """Eval-mode integer accumulators of every output pixel, ``(N * OH * OW, OC)`` float64 (exact integers,
        as :meth:`QuantLinear.accumulate`), computed in blocks of images."""
        x = x.reshape(-1, *self.in_shape)
        pixels = self.out_shape[0] * self.out_shape[1]
        block = max(1, self.BLOCK // (pixels * self.in_features))
        parts = [super(QuantConv2d, self).accumulate(self.patches(x[i:i + block])) for i in range(0, len(x), block)]
        return torch.cat(parts) if parts else torch.zeros(0, self.out_features, dtype=torch.float64)

    def _padded(self, x):
        """NHWC images -> padded NCHW images."""
        top, bottom, left, right = self.padding
        x = x.reshape(-1, *self.in_shape).permute(0, 3, 1, 2)
        return F.pad(x, (left, right, top, bottom), value=float(self.pad_value)) if any(self.padding) else x

    def forward(self, x):
        """Pre-activations of every output pixel, ``(N * OH * OW, OC)``. Training computes the patch products
        with ``conv2d`` (the same sums, faster than im2col; Few Multiplications' quantized back-propagation
        takes the im2col rows)."""
        if not self.training:
            return self.scale_acc(self.accumulate(x))
        if self.quantized_backprop:
            return super().forward(self.patches(x))
        codes, scale = self.quantizer.quantize(self.weight)
        kernel = codes.reshape(self.out_features, *self.kernel, self.in_shape[2]).permute(0, 3, 1, 2)
        y = F.conv2d(self._padded(x), kernel, stride=self.stride).permute(0, 2, 3, 1).reshape(-1, self.out_features)
        z = y * (scale * self.in_step)
        return z if self.bias is None else z + self.bias

    def real_forward(self, x):
        return super().real_forward(self.patches(x))

    @property
    def out_size(self):
        """Output values per sample (before any pool): ``OH * OW * OC``."""
        return int(np.prod(self.out_shape))

    @property
    def macs(self):
        """Multiply-accumulates per sample: ``OH * OW * OC * KH * KW * C``."""
        return self.out_size * self.in_features


class FactorizedLinear(nn.Module):
    """A Fixed-Point Factorized layer ``W ~ X diag(d) Y^T``: an inner layer ``Y^T`` (``rank x in``, ternary,
    deterministic rounding at ``±1/2`` of a real shadow) whose raw integer accumulators feed the outer layer
    ``X diag(d)`` (:class:`FactorWeights`). Exposes the outer layer's interface (``quantizer``, ``weight``,
    ``scale_acc`` ...) to :class:`QuantNet`; :meth:`inner_codes` is the raw middle layer."""

    def __init__(self, in_features, out_features, rank, *, bits, in_type, in_step, bias=False, per_row=True):
        super().__init__()
        self.rank = int(rank)
        self.inner = QuantLinear(in_features, self.rank, TernaryWeights(W0=1.0, stochastic=False, per_row=False),
                                 in_type=in_type, in_step=in_step)
        self.outer = QuantLinear(self.rank, out_features, FactorWeights(columns=self.rank, bits=bits,
                                                                        per_row=per_row),
                                 in_type=None, in_step=in_step, bias=bias)
        self.in_features, self.out_features = self.inner.in_features, self.outer.out_features
        self.in_type, self.in_step = in_type, in_step

    @property
    def quantizer(self):
        return self.outer.quantizer

    @property
    def weight(self):
        return self.outer.weight

    @property
    def bias(self):
        return self.outer.bias

    def inner_codes(self, x):
        """The middle layer's integer accumulators ``x @ Y`` (exact in eval mode; straight-through in training)."""
        if not self.training:
            return self.inner.accumulate(x)
        return x @ self.inner.quantizer.quantize(self.inner.weight)[0].T

    def lookup(self):
        return None, None

    def accumulate(self, x):
        return self.outer.accumulate(self.inner_codes(x))

    def acc_factor(self):
        return self.outer.acc_factor()

    def scale_acc(self, acc):
        return self.outer.scale_acc(acc)

    def forward(self, x):
        return self.outer(self.inner_codes(x))


def _per_layer(spec, count, what):
    """A dict (same for every layer) or a list of ``count`` dicts -> list of dicts."""
    if isinstance(spec, dict):
        return [dict(spec) for _ in range(count)]
    if isinstance(spec, (list, tuple)) and len(spec) == count and all(isinstance(s, dict) for s in spec):
        return [dict(s) for s in spec]
    raise HwnetError(f"{what} must be a dict or a list of {count} dicts, got {spec!r}")


def _build(registry, spec, what, **extra):
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in registry:
        raise HwnetError(f"unknown {what} kind {kind!r}; available: {', '.join(registry)}")
    try:
        return registry[kind](**spec, **extra)
    except TypeError as exc:
        raise HwnetError(f"{what} {kind!r}: {exc}") from None


class QuantNet(nn.Module):
    """A quantized network ``input_size -> [conv...] -> hidden... -> outputs`` (see the module docstring).

    Parameters
    ----------
    input_size, hidden, outputs, input_max
        As :class:`~hwnet.train.binarynet.BinarizedMLP` (``outputs`` = classes, or features for regression);
        ``hidden`` are the dense layers after any convolutional ones.
    input : dict
        ``{"kind": "binary" | "levels" | "raw", "bits": k}``.
    weight : dict or list of dicts
        Weight quantizer per hidden layer, convolutional ones first (``{"kind": "binary", "mode": "ste"}``, see
        :data:`WEIGHT_QUANTIZERS`).
    act : dict or list of dicts
        Activation quantizer per hidden layer, convolutional ones first (see :data:`ACT_QUANTIZERS`).
    final_weight : dict, optional
        The last layer's weight quantizer; default the last hidden layer's (or ``weight``).
    norm : ``"affine"``, ``"plain"`` or ``"none"``
        Batch norm after every hidden layer, with or without affine parameters, or none.
    bias : bool
        A real bias on every hidden layer.
    quantized_backprop : bool
        Few Multiplications' power-of-two inputs in the weight gradients.
    task : ``"classify"`` or ``"regress"``
    bit_cost : dict, optional
        BitPruning's cost term, ``{"kind": one of BIT_COSTS, "weight": lambda}`` (:meth:`bitlength_cost`).
    factor : dict, optional
        Fixed-Point Factorized layers everywhere, ``{"ranks": [one per layer], "bits": k}``
        (:class:`FactorizedLinear`); ``weight``/``final_weight`` are then not used. Dense layers only.
    image : (H, W, C), optional
        The input's image shape: the raw input vector is the image flattened row-major, channels fastest
        (NHWC), so ``input_size`` must be ``H * W * C``. Needed by ``conv``.
    conv : list of dicts, optional
        Convolutional layers before the dense ones (:class:`QuantConv2d`, :func:`conv_spec`), each
        ``{"channels": OC, "kernel": k or [kh, kw], "stride": s or [sh, sw] (1), "padding": p or [top, bottom,
        left, right] (0), "pool": None or k}``; ``pool`` is a non-overlapping ``k x k`` max-pool after that
        layer's activation (output size rounded down).

    Members
    -------
    hidden_linear, hidden_norm, hidden_act : nn.ModuleList
        Per hidden layer (the :class:`QuantConv2d` layers first, then the dense ones): the layer, its batch norm
        (or identity) and its activation quantizer.
    final : QuantLinear or FactorizedLinear
    """

    def __init__(self, input_size, hidden, outputs, input_max, *, input, weight, act, final_weight=None,
                 norm="affine", bias=False, quantized_backprop=False, task="classify", bit_cost=None,
                 factor=None, image=None, conv=None):
        super().__init__()
        self.input_size, self.hidden, self.outputs, self.input_max = mlp_sizes(input_size, hidden, outputs,
                                                                               input_max, "number of outputs")
        self.norm = _choice(norm, ("affine", "plain", "none"), "norm")
        self.task = _choice(task, ("classify", "regress"), "task")
        self.use_bias = bool(bias)
        self.quantized_backprop = bool(quantized_backprop)
        self.image = None if image is None else tuple(_int_pair(image, 3, "image shape",
                                                                "(H, W, C), three positive integers", 1))
        if self.image is not None and int(np.prod(self.image)) != self.input_size:
            raise HwnetError(f"an image of shape {self.image} has {int(np.prod(self.image))} values, but the input "
                             f"size is {self.input_size}; the input must be the image flattened (H * W * C)")
        if conv is not None and not isinstance(conv, (list, tuple)):
            raise HwnetError(f"conv must be a list of conv layer dicts, got {conv!r}")
        conv = [conv_spec(c, f"conv layer {i + 1}") for i, c in enumerate(conv or [])]
        if conv and self.image is None:
            raise HwnetError("convolutional layers need the input's image shape (image=(H, W, C))")
        if conv and factor is not None:
            raise HwnetError("factorized layers (Fixed-Point Factorized Networks) are dense only; a model with "
                             "convolutional layers cannot be factorized")
        input = dict(input)
        self.input_quant = InputQuantizer(input_max=self.input_max, kind=input.get("kind", "raw"),
                                          bits=input.get("bits"))
        n = len(conv) + len(self.hidden)
        weights = _per_layer(weight, n, "weight") if n else []
        acts = _per_layer(act, n, "act") if n else []
        if final_weight is None:
            final_weight = weights[-1] if weights else weight
        in_type, in_step = self.input_quant.out_type, self.input_quant.step
        self.hidden_linear = nn.ModuleList()
        self.hidden_norm = nn.ModuleList()
        self.hidden_act = nn.ModuleList()
        self.factor = None if factor is None else {"ranks": [int(r) for r in factor["ranks"]],
                                                    "bits": int(factor.get("bits", 4))}
        if self.factor is not None and bit_cost is not None:
            raise HwnetError("a factorized model cannot also learn its bitlengths")
        if self.factor is not None and len(self.factor["ranks"]) != n + 1:
            raise HwnetError(f"factor ranks must give one rank per layer ({n + 1}), got {self.factor['ranks']}")

        def add(layer, width, i):
            self.hidden_linear.append(layer)
            self.hidden_norm.append(nn.Identity() if self.norm == "none" else
                                    BinaryBatchNorm(width, affine=self.norm == "affine"))
            aq = _build(ACT_QUANTIZERS, acts[i], "activation quantizer")
            self.hidden_act.append(aq)
            return aq.out_type, aq.step

        shape = self.image
        for i, spec in enumerate(conv):
            wq = _build(WEIGHT_QUANTIZERS, weights[i], "weight quantizer")
            layer = QuantConv2d(shape, spec, wq, in_type=in_type, in_step=in_step, bias=self.use_bias,
                                quantized_backprop=self.quantized_backprop, what=f"conv layer {i + 1}")
            in_type, in_step = add(layer, layer.out_features, i)
            shape = layer.pooled_shape
        widths = (int(np.prod(shape)) if conv else self.input_size,) + self.hidden
        for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            i = len(conv) + j
            if self.factor is not None:
                layer = FactorizedLinear(a, b, self.factor["ranks"][i], bits=self.factor["bits"], in_type=in_type,
                                         in_step=in_step, bias=self.use_bias)
            else:
                wq = _build(WEIGHT_QUANTIZERS, weights[i], "weight quantizer")
                layer = QuantLinear(a, b, wq, in_type=in_type, in_step=in_step, bias=self.use_bias,
                                    quantized_backprop=self.quantized_backprop)
            in_type, in_step = add(layer, b, i)
        if self.factor is not None:
            self.final = FactorizedLinear(widths[-1], self.outputs, self.factor["ranks"][-1],
                                          bits=self.factor["bits"], in_type=in_type, in_step=in_step, per_row=False)
        else:
            fq = _build(WEIGHT_QUANTIZERS, final_weight, "final weight quantizer", per_row=False)
            self.final = QuantLinear(widths[-1], self.outputs, fq, in_type=in_type, in_step=in_step,
                                     quantized_backprop=self.quantized_backprop)
        self.log_scale = nn.Parameter(torch.tensor(0.0))
        self.offset = nn.Parameter(torch.tensor(0.0)) if self.task == "regress" else None
        self.conv = [layer.spec() for layer in self.conv_layers]
        self._config = {"input_size": self.input_size, "hidden": list(self.hidden), "outputs": self.outputs,
                        "input_max": self.input_max, "input": input,
                        "weight": weights,
                        "act": acts, "final_weight": final_weight,
                        "norm": self.norm, "bias": self.use_bias, "quantized_backprop": self.quantized_backprop,
                        "task": self.task, "bit_cost": None if bit_cost is None else dict(bit_cost),
                        "factor": self.factor, "image": None if self.image is None else list(self.image),
                        "conv": self.conv or None}
        self.bit_cost = None if bit_cost is None else dict(bit_cost)
        if self.bit_cost is not None:
            _choice(self.bit_cost.get("kind"), BIT_COSTS, "bit cost")
            _positive(self.bit_cost.get("weight", 0) or 1e-300, "bit cost weight")

    @property
    def conv_layers(self):
        """The :class:`QuantConv2d` layers (the first hidden layers)."""
        return [q for q in self.hidden_linear if isinstance(q, QuantConv2d)]

    def config(self):
        """Plain values that rebuild this architecture: ``QuantNet.from_config(model.config())`` (a copy)."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config):
        c = dict(config)
        args = [c.pop(k) for k in ("input_size", "hidden", "outputs", "input_max")]
        return cls(*args, **c)

    @property
    def classes(self):
        return self.outputs

    # --- the pieces lowering evaluates --------------------------------------------------------------------

    def post(self, index, acc):
        """Hidden layer ``index``'s eval-mode function of its integer accumulators ``acc`` (batch, C) -> codes
        (element-wise per channel; for a convolution the batch is its output pixels)."""
        z = self.hidden_linear[index].scale_acc(acc)
        return self.hidden_act[index](self.hidden_norm[index](z))

    # --- forward ------------------------------------------------------------------------------------------

    def _layers(self, x, *, real_weights=False):
        """(every IR layer's values, flattened per sample, and the output). ``real_weights``: the hidden layers
        and the final layer use their latent real weights (:meth:`real_weight_logits`)."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise HwnetError(f"inputs must have shape (batch, {self.input_size}), got {tuple(x.shape)}")
        h = self.input_quant(x)
        values = [h]
        for linear, norm, act in zip(self.hidden_linear, self.hidden_norm, self.hidden_act):
            if isinstance(linear, QuantConv2d):
                z = linear.real_forward(h) if real_weights else linear(h)
                h = act(norm(z)).reshape(-1, *linear.out_shape)  # pixel rows -> NHWC images
                values.append(h.flatten(1))
                if linear.pool is not None:
                    h = _max_pool(h, linear.pool)
                    values.append(h.flatten(1))
                continue
            h = h.flatten(1)  # an image is flattened NHWC before the first dense layer
            if isinstance(linear, FactorizedLinear):  # the raw middle layer is an IR layer of its own
                mid = linear.inner_codes(h)
                values.append(mid)
                z = linear.outer(mid)
            else:
                z = linear.real_forward(h) if real_weights else linear(h)
            h = act(norm(z))
            values.append(h)
        h = h.flatten(1)
        final = self.final
        if real_weights:
            return values, final.real_forward(h)
        if isinstance(final, FactorizedLinear):
            h = final.inner_codes(h)
            values.append(h)
            final = final.outer
        if self.training:
            values.append(None)
            return values, self._output_affine(final(h))
        acc = final.accumulate(h)
        values.append(acc)
        return values, self.output(acc)

    def _output_affine(self, z):
        out = z * torch.exp(self.log_scale)
        return out + self.offset if self.offset is not None else out

    def output(self, acc):
        """The eval-mode output (logits, or an autoencoder's reconstruction) for the final layer's integer
        accumulators ``acc``: ``acc * factor * exp(log_scale)`` (``+ offset`` for regression)."""
        final = self.final.outer if isinstance(self.final, FactorizedLinear) else self.final
        return self._output_affine(torch.as_tensor(acc).to(torch.float64) * final.acc_factor())

    def forward(self, x):
        return self._layers(x)[1]

    def real_weight_logits(self, x):
        """Logits computed with every layer's *latent real* weights, activations still quantized (positively
        scaled, so their argmax is the class): how BinaryConnect's stochastic runs were evaluated."""
        if self.factor is not None:
            raise HwnetError("a factorized model has no single real weight matrix per layer to evaluate")
        return self._layers(x, real_weights=True)[1]

    @torch.no_grad()
    def integer_trace(self, x):
        """Every IR layer's output as int64 arrays ``(N, size)``, computed by this torch model in eval mode: the
        input codes (unless the input is raw), each hidden layer's codes (a convolution's output image and then
        its pool's, each flattened NHWC), the final accumulators."""
        from .binarynet import _to_int64
        was_training = self.training
        self.eval()
        try:
            values, _ = self._layers(x)
        finally:
            self.train(was_training)
        out = [_to_int64(v, f"IR layer {i}") for i, v in enumerate(values)]
        return out if self.input_quant.kind != "raw" else out[1:]

    # --- training hooks -----------------------------------------------------------------------------------

    def _linears(self):
        """Every QuantLinear, convolutions included (both halves of a factorized layer)."""
        out = []
        for q in list(self.hidden_linear) + [self.final]:
            out += [q.inner, q.outer] if isinstance(q, FactorizedLinear) else [q]
        return out

    def penalty(self):
        """Method regularizers (BNN+'s, BitPruning's bit cost), added to the loss."""
        total = sum((q.quantizer.penalty(q.weight) for q in self._linears()), torch.tensor(0.0))
        if self.bit_cost is not None:
            total = total + self.bit_cost["weight"] * self.bitlength_cost(self.bit_cost["kind"])
        return total

    def _bit_groups(self):
        """Per layer: (weight bits, input bits, weights, output values, MACs); bits are tensors (learnable or
        fixed). A convolution's output values and MACs count every output pixel (:attr:`QuantConv2d.macs`)."""
        def bits_of(q, fixed_type):
            return q.n if isinstance(q, _LearnedBits) else torch.tensor(float(fixed_type.bits))
        groups = []
        in_bits = torch.tensor(float(self.input_quant.out_type.bits))
        for i, q in enumerate(self._linears()):
            wb = bits_of(q.quantizer, q.quantizer.weight_type)
            groups.append((wb, in_bits, q.in_features * q.out_features, q.out_size, q.macs))
            if i < len(self.hidden_act):
                act = self.hidden_act[i]
                in_bits = bits_of(act, act.out_type)
        return groups

    def bitlength_cost(self, kind):
        """BitPruning's cost of the current bitlengths, a weighted average bitlength (differentiable in the
        learnable bitlengths):

        ``"bits"``    the mean over groups (every layer's weights and outputs) of the group's bitlength;
        ``"memory"``  groups weighted by their element count (weights, activations);
        ``"macs"``    groups weighted by the multiply-accumulates they take part in;
        ``"lut"``     hwnet's LUT model of its bit-plane PEs: ``sum(MACs * weight bits * input bits) / sum(MACs)``,
                      proportional to the LUT4 a design needs at a fixed throughput (:meth:`lut_estimate`).
        """
        groups = self._bit_groups()
        if kind == "lut":
            macs = sum(g[4] for g in groups)
            return sum(g[4] * g[0] * g[1] for g in groups) / macs
        terms = []  # (bits, weight)
        for i, (wb, _, count, outputs, macs) in enumerate(groups):
            ab = groups[i + 1][1] if i + 1 < len(groups) else None
            if kind == "bits":
                terms += [(wb, 1.0)] + ([(ab, 1.0)] if ab is not None else [])
            elif kind == "memory":
                terms += [(wb, float(count))] + ([(ab, float(outputs))] if ab is not None else [])
            else:  # macs: a layer's output activations take part in the next layer's MACs
                terms += [(wb, float(macs))] + ([(ab, float(groups[i + 1][4]))] if ab is not None else [])
        return sum(b * w for b, w in terms) / sum(w for _, w in terms)

    @torch.no_grad()
    def lut_estimate(self, target_cycles):
        """Estimated LUT4 of the bit-plane processing elements at ``target_cycles`` per inference:
        ``LUT4_PER_BIT_PRODUCT * sum(MACs * weight bits * input bits) / target_cycles``."""
        return LUT4_PER_BIT_PRODUCT * sum(float(g[4] * g[0] * g[1]) for g in self._bit_groups()) / target_cycles

    @torch.no_grad()
    def clip_weights(self):
        for q in self._linears():
            q.quantizer.clip_(q.weight)

    @torch.no_grad()
    def after_step(self):
        """Clip, then update dynamic fixed point's integer bits (every step)."""
        self.clip_weights()
        for q in self._linears():
            q.quantizer.update_(q.weight)
        for a in self.hidden_act:
            a.update_()

    @torch.no_grad()
    def cluster_(self):
        """Cluster every codebook layer's weights (no-op without one); True if any was clustered."""
        done = False
        for q in self._linears():
            if isinstance(q.quantizer, CodebookWeights):
                q.quantizer.cluster_(q.weight)
                done = True
        return done
