"""BinaryNet building blocks (Courbariaux, Hubara et al., 2016) for fully connected networks.

- :class:`SignSTE`: ``sign(x)`` with ``sign(0) = +1`` (the integer contract's rule) in the forward pass and the
  gated straight-through estimator in the backward pass: ``dL/dx = dL/dy * [|x| <= 1]``.
- :class:`BinaryLinear`: real-valued latent weights, the forward pass uses ``sign(W)``; no bias. The latent
  weights are clipped to ``[-1, 1]`` after every optimizer step (:meth:`BinarizedMLP.clip_weights`).
- :class:`BinaryBatchNorm`: ``BatchNorm1d`` whose eval-mode forward is written as separate elementwise ops, so
  the float result for an accumulator value depends on nothing but that value and its channel (no fused or
  layout-dependent kernel). Lowering enumerates exactly this function.
- :class:`BinarizedMLP`: inputs binarized as the first layer (``sign(x / input_max - 0.5)``), then per hidden
  width ``BinaryLinear -> BinaryBatchNorm -> sign``, then a final ``BinaryLinear`` whose accumulators are
  multiplied by one learnable positive scalar (``exp(log_scale)``). There is deliberately no bias and no
  per-class normalization on the last layer: ``argmax(logits) == argmax(accumulators)``, which is what the
  integer contract's raw-accumulator final layer computes.

In eval mode every intermediate value the integer IR carries is exact in float32 (sums of ``±1`` terms), and
:meth:`BinarizedMLP.integer_trace` returns them as int64 arrays, one per IR layer.
"""

import math

import numpy as np
import torch
from torch import nn

from ..errors import HwnetError

__all__ = ["SignSTE", "sign_ste", "binary_sign", "BinaryLinear", "BinaryBatchNorm", "BinarizedMLP"]

# float32 represents every integer of magnitude <= 2**24 exactly.
_FLOAT32_EXACT = 1 << 24


def binary_sign(x):
    """``+1`` where ``x >= 0`` (so ``sign(0) = sign(-0.0) = +1``), ``-1`` elsewhere (NaN included); same dtype."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class SignSTE(torch.autograd.Function):
    """``sign`` with ``sign(0) = +1``; backward is the gated straight-through estimator ``g * [|x| <= 1]``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x.abs() <= 1).to(grad_output.dtype)


def sign_ste(x):
    """Apply :class:`SignSTE`."""
    return SignSTE.apply(x)


class BinaryLinear(nn.Module):
    """``y = x @ sign(W).T`` with real-valued latent weights ``W`` (shape ``(out_features, in_features)``), no bias.

    Gradients reach ``W`` through :class:`SignSTE`; keep ``W`` in ``[-1, 1]`` with :meth:`clip_`.
    """

    def __init__(self, in_features, out_features):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def binary_weight(self):
        """``sign(W)`` as a float tensor of ``±1`` (gradient via the STE)."""
        return sign_ste(self.weight)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.binary_weight())

    @torch.no_grad()
    def clip_(self):
        """Clip the latent weights to ``[-1, 1]`` in place."""
        self.weight.clamp_(-1.0, 1.0)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class BinaryBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` (training mode unchanged) whose eval-mode forward is
    ``(x - running_mean) * (weight / sqrt(running_var + eps)) + bias``, one elementwise op at a time.

    Each op is a single IEEE-rounded float32 operation per element, so the output for a given accumulator value
    and channel is the same whatever the batch size or the element's position; lowering relies on that.
    """

    def channel_scale(self):
        """Per-channel multiplier ``weight / sqrt(running_var + eps)`` (float32, shape ``(C,)``); without
        affine parameters, ``1 / sqrt(running_var + eps)``."""
        root = torch.sqrt(self.running_var + self.eps)
        return 1 / root if self.weight is None else self.weight / root

    def forward(self, x):
        if self.training:  # (float64 accumulators arrive here when batch norm is re-estimated in eval mode)
            return super().forward(x.to(self.running_mean.dtype))
        out = (x - self.running_mean) * self.channel_scale()
        return out if self.bias is None else out + self.bias


def _to_int64(tensor, what):
    """Float tensor holding integers -> int64 numpy array; raise if any entry is not an exact integer (or is
    beyond the integers its dtype represents exactly: 2**24 for float32, 2**53 for float64)."""
    limit = (1 << 53) if tensor.dtype == torch.float64 else _FLOAT32_EXACT
    a = tensor.detach().to(torch.float64).cpu().numpy()
    r = np.rint(a)
    if not np.all(np.isfinite(a)) or np.any(a != r) or (a.size and np.abs(a).max() > limit):
        raise HwnetError(f"{what}: values are not exact integers; the model is not a binarized network "
                         f"in eval mode")
    return r.astype(np.int64)


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise HwnetError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def mlp_sizes(input_size, hidden, outputs, input_max, outputs_what):
    """An MLP's sizes, checked: ``(input_size, hidden tuple, outputs, input_max)``, each a positive integer."""
    try:
        hidden = tuple(hidden)
    except TypeError:
        raise HwnetError(f"hidden sizes must be a sequence of positive integers, got {hidden!r}") from None
    return (_positive_int(input_size, "input size"), tuple(_positive_int(h, "every hidden size") for h in hidden),
            _positive_int(outputs, outputs_what), _positive_int(input_max, "input_max"))


class BinarizedMLP(nn.Module):
    """A fully connected BinaryNet: ``input_size -> hidden... -> classes``.

    Parameters
    ----------
    input_size : int
        Number of raw integer inputs.
    hidden : sequence of int
        Hidden widths (may be empty: then the input binarization feeds the final layer directly).
    classes : int
    input_max : int
        Largest raw input value; inputs are binarized as ``sign(x / input_max - 0.5)``.

    Members
    -------
    hidden_linear : nn.ModuleList of BinaryLinear
    hidden_bn : nn.ModuleList of BinaryBatchNorm
    final : BinaryLinear
    log_scale : nn.Parameter
        Scalar; the logits are ``exp(log_scale) * accumulators``.
    """

    def __init__(self, input_size, hidden, classes, input_max):
        super().__init__()
        self.input_size, self.hidden, self.classes, self.input_max = mlp_sizes(input_size, hidden, classes,
                                                                               input_max, "number of classes")
        widths = (self.input_size,) + self.hidden
        self.hidden_linear = nn.ModuleList(BinaryLinear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.hidden_bn = nn.ModuleList(BinaryBatchNorm(b) for b in self.hidden)
        self.final = BinaryLinear(widths[-1], self.classes)
        # Start with logits of order one: the accumulators' spread is about sqrt(fan-in).
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(widths[-1])))

    def config(self):
        """Plain values that rebuild this architecture: ``BinarizedMLP(**model.config())``."""
        return {"input_size": self.input_size, "hidden": list(self.hidden), "classes": self.classes,
                "input_max": self.input_max}

    # --- the pieces lowering enumerates -------------------------------------------------------------------

    def binarize_input(self, x):
        """The first layer: ``sign(x / input_max - 0.5)`` on raw integer inputs, ``±1`` float32."""
        x = torch.as_tensor(x).to(torch.float32)
        return binary_sign(x / self.input_max - 0.5)

    def hidden_activation(self, index, acc):
        """Hidden layer ``index``'s activation, ``sign(bn(acc))``, applied to accumulators ``acc`` (batch, C)."""
        return sign_ste(self.hidden_bn[index](acc))

    # --- forward ------------------------------------------------------------------------------------------

    def _layers(self, x):
        """(list of every IR layer's float values, logits): [binarized input, hidden outputs..., final acc]."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise HwnetError(f"inputs must have shape (batch, {self.input_size}), got {tuple(x.shape)}")
        h = self.binarize_input(x)
        values = [h]
        for i, linear in enumerate(self.hidden_linear):
            h = self.hidden_activation(i, linear(h))
            values.append(h)
        acc = self.final(h)
        values.append(acc)
        return values, acc * torch.exp(self.log_scale)

    def forward(self, x):
        """Logits, ``exp(log_scale) * final accumulators``."""
        return self._layers(x)[1]

    @torch.no_grad()
    def integer_trace(self, x):
        """Every IR layer's output as exact int64 arrays, computed by this torch model in eval mode.

        Returns ``[binarized input (±1), hidden 1 output (±1), ..., final accumulators]``, the final accumulators
        taken before the scale. The model is put in eval mode for the call and restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            values, _ = self._layers(x)
        finally:
            self.train(was_training)
        names = ["binarized input"] + [f"hidden layer {i + 1}" for i in range(len(self.hidden))] + ["final layer"]
        return [_to_int64(v, n) for v, n in zip(values, names)]

    def penalty(self):
        """No regularizer: 0 (the trainer adds every model's ``penalty()`` to the loss)."""
        return torch.tensor(0.0)

    def after_step(self):
        """Called by the trainer after every optimizer step: clip the latent weights."""
        self.clip_weights()

    @torch.no_grad()
    def clip_weights(self):
        """Clip every :class:`BinaryLinear`'s latent weights to ``[-1, 1]`` (call after each optimizer step)."""
        for module in self.modules():
            if isinstance(module, BinaryLinear):
                module.clip_()
