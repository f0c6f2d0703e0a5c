"""Lower a trained model (:class:`~hwnet.train.binarynet.BinarizedMLP`, or the :class:`~hwnet.train.qnet.QuantNet`
of every other method) into the integer IR, exactly by construction.

A :class:`QuantNet` lowers layer by layer: the input quantizer becomes a ``MultiThreshold`` (unless the raw
pixels go in directly); every convolution becomes a ``Conv2d`` (``conv1``, ``conv2``, ...: the latent
``(OC, KH * KW * C)`` weights reshaped to ``(OC, KH, KW, C)``, the model's stride, padding and pad value),
followed by a ``MaxPool2d`` (``pool1``, ...) where the model pools; every dense layer (``fc1``, ...) takes its
quantizer's integer codes (and lookup table, if any), and the thresholds of a hidden layer come from
:func:`fold_thresholds`. That function finds them by bisection on the
model's own eval-mode ``post(acc)`` (scale, batch norm or bias, activation quantizer) over each channel's
reachable accumulators, negates the weight row of a falling channel, and checks every reachable value (or a
large sample). A factorized layer (Fixed-Point Factorized Networks) becomes a raw ternary layer and a
power-of-two layer.

For the BinarizedMLP, no float formula is folded either. Every threshold is found by *enumeration*: the model's own eval-mode function is
evaluated on every value its input can take, and the threshold is the smallest value that gives ``+1``:

- input binarization ``sign(x / input_max - 0.5)`` -> ``MultiThreshold(thresholds=[[t]], out_type="bipolar")``,
  evaluated on every legal value of the input type (``0 .. 2**k - 1``, a superset of ``0 .. input_max``);
- hidden ``BinaryLinear -> BatchNorm -> sign`` with ``N`` inputs -> ``Dense(weights=sign(W), thresholds=T)``:
  the accumulator can only be ``-N, -N + 2, ..., N``; for each channel ``sign(bn(acc))`` is evaluated on all of
  them. A channel whose output rises with ``acc`` gets ``T = `` the smallest ``acc`` giving ``+1``; one whose
  output falls (negative BN scale) gets its weight row negated (``acc' = -acc``) and ``T`` computed on ``acc'``;
  a constant channel gets ``T = -N`` (always ``+1``) or ``T = N + 1`` (never). Anything else (a non-monotone
  channel, e.g. from NaN parameters) raises :class:`HwnetError`.
- the final ``BinaryLinear`` -> ``Dense(weights=sign(W), thresholds=None)``: raw accumulators; the model's
  positive output scale does not change the argmax, so it is dropped.

:func:`check_lowering` then compares the model's :meth:`~BinarizedMLP.integer_trace` with the golden model,
every layer, every element.
"""

import json

import numpy as np
import torch

from .. import golden
from ..datatypes import BIPOLAR, TERNARY, parse_type, type_for_range
from ..errors import HwnetError
from ..ir import Conv2d, Dense, MaxPool2d, MultiThreshold, Network
from .binarynet import BinarizedMLP
from .qnet import FactorizedLinear, QuantConv2d, QuantNet

__all__ = ["lower", "check_lowering", "input_threshold", "fold_hidden_layer", "step_threshold", "fold_thresholds"]

#: Above this many (channel, accumulator value) pairs, :func:`fold_thresholds` checks its thresholds on a random
#: sample of accumulator values instead of on all of them.
ENUMERATE_LIMIT = 1 << 22


def step_threshold(outputs, values, what):
    """The smallest of ``values`` (ascending) where ``outputs`` (``±1``) is ``+1``, for a non-decreasing step.

    Returns ``values[-1] + 1`` when no value gives ``+1``. Raises :class:`HwnetError` if ``outputs`` is not
    non-decreasing (a run of ``-1`` followed by a run of ``+1``).
    """
    outputs = np.asarray(outputs)
    if np.any(np.diff(outputs) < 0) or not np.all((outputs == 1) | (outputs == -1)):
        raise HwnetError(f"{what}: the activation is not a monotone step over its inputs, so it cannot be "
                         f"one threshold")
    on = np.nonzero(outputs == 1)[0]
    return int(values[on[0]]) if on.size else int(values[-1]) + 1


def _as_int(tensor):
    """±1 float tensor -> int64 numpy array."""
    return torch.round(tensor.detach()).to(torch.int64).cpu().numpy()


def input_threshold(model, input_type):
    """Threshold ``t`` with ``model.binarize_input(x) == +1`` exactly when ``x >= t``, over every legal
    ``x`` of ``input_type``."""
    values = input_type.values()
    with torch.no_grad():
        out = _as_int(model.binarize_input(torch.from_numpy(values)[:, None]))[:, 0]
    return step_threshold(out, values, "input binarization")


def fold_hidden_layer(model, index):
    """Weights (±1 int64, rows of negative-scale channels negated) and thresholds (``(C, 1)`` int64) of
    hidden layer ``index``, found by enumerating every reachable accumulator value through the model's own
    eval-mode ``sign(bn(acc))``."""
    linear = model.hidden_linear[index]
    n = linear.in_features
    what = f"hidden layer {index + 1}"
    bn = model.hidden_bn[index]
    for pname, p in (("weight", bn.weight), ("bias", bn.bias), ("running_mean", bn.running_mean),
                     ("running_var", bn.running_var)):
        if not torch.all(torch.isfinite(p)):
            raise HwnetError(f"{what}: batch norm {pname} holds NaN or infinite values; the model cannot be lowered")
    if torch.any(bn.running_var + bn.eps <= 0):
        raise HwnetError(f"{what}: batch norm running_var + eps is not positive; the model cannot be lowered")
    with torch.no_grad():
        weights = _as_int(linear.binary_weight())
        accs = np.arange(-n, n + 1, 2, dtype=np.int64)  # every reachable value: -N .. N in steps of 2
        grid = torch.from_numpy(accs).to(torch.float32)[:, None].expand(-1, linear.out_features).contiguous()
        outs = _as_int(model.hidden_activation(index, grid))  # (values, channels)
    thresholds = np.empty((linear.out_features, 1), dtype=np.int64)
    for c in range(linear.out_features):
        col = outs[:, c]
        d = np.diff(col)
        if np.all(d >= 0):
            thresholds[c, 0] = step_threshold(col, accs, f"{what} channel {c}")
        elif np.all(d <= 0):
            # Falling step: negate the row, acc' = -acc, and read the step on acc' (ascending = accs reversed).
            weights[c] = -weights[c]
            thresholds[c, 0] = step_threshold(col[::-1], -accs[::-1], f"{what} channel {c}")
        else:
            raise HwnetError(f"{what} channel {c}: sign(batchnorm(acc)) is not monotone in acc, so it cannot be "
                             f"one threshold")
    # A constant channel: -N means always +1, N + 1 never (step_threshold already gives exactly these).
    return weights, thresholds


def fold_thresholds(fn, lo, hi, out_type, what, *, can_negate=True, rng=0):
    """Thresholds turning a monotone per-channel function of the accumulator into a multi-threshold, exactly.

    ``fn`` maps an accumulator tensor (batch, C) of float64 integers to codes of ``out_type`` (batch, C),
    element-wise per channel; ``lo``, ``hi`` (int64, (C,)) bound the reachable accumulator values per channel.
    A channel whose codes fall as the accumulator rises is *negated*: its thresholds are on ``acc' = -acc`` and
    the caller negates its weight row (``can_negate=False`` makes that an error).

    Each threshold ``T[c, l]`` is the smallest accumulator in ``lo .. hi + 1`` whose code has rank ``>= l + 1``,
    found by bisection on all channels and levels at once. Then ``rank(fn(a)) == sum_l [a >= T[c, l]]`` is
    checked on every ``a`` in ``lo .. hi`` (on a random sample when that is more than :data:`ENUMERATE_LIMIT`
    values); a mismatch (a non-monotone channel) raises :class:`HwnetError`.

    Returns ``(negate, thresholds)``: booleans (C,) and int64 (C, L).
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    channels, levels = len(lo), out_type.num_values - 1
    if max(np.abs(lo).max(), np.abs(hi).max()) >= 1 << 53:
        raise HwnetError(f"{what}: accumulators reach {max(np.abs(lo).max(), np.abs(hi).max())}, beyond "
                         f"float64's exact integers (2**53); the torch model cannot be evaluated exactly")

    def ranks(acc, negate):  # acc: int64 (k, C) on the (possibly negated) axis
        real = np.where(negate, -acc, acc)
        with torch.no_grad():
            codes = fn(torch.from_numpy(real.astype(np.float64)))
        codes = _as_int(codes)
        if not out_type.is_legal(codes):
            raise HwnetError(f"{what}: the activation gives values outside {out_type}")
        return out_type.ranks(codes)

    ends = ranks(np.stack([lo, hi]), np.zeros(channels, dtype=bool))
    negate = ends[1] < ends[0]
    if negate.any() and not can_negate:
        c = int(np.nonzero(negate)[0][0])
        raise HwnetError(f"{what} channel {c}: the activation falls as the accumulator rises, and this layer's "
                         f"weights cannot be negated to turn it around")
    a_lo = np.where(negate, -hi, lo)
    a_hi = np.where(negate, -lo, hi)
    need = np.arange(1, levels + 1)[:, None]  # (L, 1): rank needed per level
    t_lo = np.broadcast_to(a_lo, (levels, channels)).copy()
    t_hi = np.broadcast_to(a_hi + 1, (levels, channels)).copy()
    while np.any(t_lo < t_hi):
        active = t_lo < t_hi
        mid = np.clip((t_lo + t_hi) // 2, a_lo, a_hi)
        passed = ranks(mid, negate) >= need
        t_hi = np.where(active & passed, mid, t_hi)
        t_lo = np.where(active & ~passed, mid + 1, t_lo)
    thresholds = np.ascontiguousarray(t_lo.T)

    span = a_hi - a_lo + 1
    generator = np.random.default_rng(rng)
    if int(span.sum()) <= ENUMERATE_LIMIT:  # every value (a channel with a shorter range repeats its last)
        steps = [np.arange(i, min(i + 4096, int(span.max())))[:, None] for i in range(0, int(span.max()), 4096)]
    else:  # 4096 random values per channel, plus both ends and every threshold and the value below it
        edges = np.concatenate([np.zeros((1, channels)), span[None, :] - 1, thresholds.T - a_lo,
                                thresholds.T - a_lo - 1])
        steps = [np.floor(generator.random((4096, channels)) * span[None, :]).astype(np.int64),
                 np.clip(edges, 0, span - 1).astype(np.int64)]
    for offsets in steps:
        acc = np.minimum(a_lo[None, :] + offsets, a_hi[None, :])
        expected = (acc[:, :, None] >= thresholds[None, :, :]).sum(axis=2)
        got = ranks(acc, negate)
        if np.any(got != expected):
            row, c = (int(v[0]) for v in np.nonzero(got != expected))
            raise HwnetError(f"{what} channel {c}: the activation is not monotone in the accumulator (at "
                             f"{int(acc[row, c])}), so it cannot be a multi-threshold")
    return negate, thresholds


def _fold_layer(model, index, layer, in_type, weights, table):
    """Thresholds of hidden layer ``index`` (its IR layer ``layer`` without them) from the model's own
    ``post``; returns ``(weights with falling channels' rows negated, thresholds, out_type)``."""
    lo, hi = layer.row_acc_ranges(in_type)
    act = model.hidden_act[index]
    negate, thresholds = fold_thresholds(lambda a: model.post(index, a), lo, hi, act.out_type,
                                         f"layer {layer.name}", can_negate=table is None)
    weights = np.where(negate.reshape((-1,) + (1,) * (weights.ndim - 1)), -weights, weights)
    return weights, thresholds, act.out_type


def _lower_quant_mlp(model, input_type):
    """The layers of a :class:`QuantNet` in eval mode (see :func:`lower`)."""
    layers = []
    iq = model.input_quant
    in_type = input_type
    if iq.kind != "raw":
        values = input_type.values()
        _, t = fold_thresholds(lambda a: iq(a), values[:1], values[-1:], iq.out_type, "input quantizer",
                               can_negate=False)
        layers.append(MultiThreshold(thresholds=t, out_type=iq.out_type, name="quantize"))
        in_type = iq.out_type
    count = len(model.hidden_linear)
    convs = pools = dense = 0
    for i, linear in enumerate(list(model.hidden_linear) + [model.final]):
        if isinstance(linear, QuantConv2d):  # always a hidden layer: the final layer is dense
            convs += 1
            wq = linear.quantizer
            weights = wq.codes(linear.weight).reshape(linear.out_features, *linear.kernel, linear.in_shape[2])
            table, _ = linear.lookup()
            geometry = dict(weight_type=wq.weight_type, products=table, in_shape=linear.in_shape,
                            stride=linear.stride, padding=linear.padding, pad_value=linear.pad_value,
                            name=f"conv{convs}")
            weights, thresholds, out_type = _fold_layer(model, i, Conv2d(weights=weights, **geometry), in_type,
                                                        weights, table)
            layers.append(Conv2d(weights=weights, thresholds=thresholds, out_type=out_type, **geometry))
            in_type = out_type
            if linear.pool is not None:
                pools += 1
                layers.append(MaxPool2d(in_shape=linear.out_shape, kernel=linear.pool, name=f"pool{pools}"))
            continue
        dense += 1
        name = f"fc{dense}"
        if isinstance(linear, FactorizedLinear):  # Y^T: a raw ternary layer, then X diag(d) as the layer itself
            inner = Dense(weights=linear.inner.quantizer.codes(linear.inner.weight), weight_type=TERNARY,
                          name=f"{name}y")
            layers.append(inner)
            lo, hi = inner.row_acc_ranges(in_type)
            in_type = type_for_range(int(lo.min()), int(hi.max()))
            linear = linear.outer
        wq = linear.quantizer
        weights = wq.codes(linear.weight)
        table, _ = linear.lookup()
        layer = Dense(weights=weights, weight_type=wq.weight_type, products=table, name=name)
        if i < count:
            weights, thresholds, out_type = _fold_layer(model, i, layer, in_type, weights, table)
            layer = layer.replace(weights=weights, thresholds=thresholds, out_type=out_type)
            in_type = out_type
        layers.append(layer)
    return layers


def lower(model, *, name="binarynet", input_type=None, metadata=None):
    """Lower ``model`` (a :class:`BinarizedMLP` or a :class:`QuantNet`) into an :class:`hwnet.ir.Network`,
    exactly.

    Parameters
    ----------
    model : BinarizedMLP or QuantNet
    name : str
        Network name.
    input_type : DataType or str, optional
        Element type of the raw inputs; default the narrowest ``uint<k>`` holding ``model.input_max``
        (``uint5`` for digits, ``uint8`` for MNIST). Must be unsigned and hold ``input_max``.
    metadata : dict, optional
        JSON-serializable extras (e.g. ``{"dataset": "digits", "test_accuracy": 0.95}``), merged over the
        defaults ``method``, ``hidden``, ``input_max``, ``classes``.
    """
    if not isinstance(model, (BinarizedMLP, QuantNet)):
        raise HwnetError(f"can only lower a BinarizedMLP or a QuantNet, got {type(model).__name__}")
    if input_type is None:
        input_type = type_for_range(0, model.input_max)
    input_type = parse_type(input_type)
    if input_type.kind != "uint" or input_type.max < model.input_max:
        raise HwnetError(f"input type {input_type} cannot carry raw inputs 0 .. {model.input_max}; use uint<k> "
                         f"with 2**k > {model.input_max}")
    if isinstance(model, QuantNet) and model.input_quant.kind == "raw" and input_type != model.input_quant.out_type:
        raise HwnetError(f"this model takes its raw inputs as {model.input_quant.out_type}, not {input_type}")
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, QuantNet):
            layers = _lower_quant_mlp(model, input_type)
        else:
            layers = _lower_binarized_mlp(model, input_type)
    finally:
        model.train(was_training)
    meta = {"method": "binarynet" if isinstance(model, BinarizedMLP) else "quantized",
            "hidden": list(model.hidden), "input_max": model.input_max,
            "classes": model.classes}
    if getattr(model, "conv", None):
        meta.update(image=list(model.image), conv=model.config()["conv"])
    meta.update(metadata or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise HwnetError(f"network metadata must be JSON-serializable ({exc})") from None
    return Network(input_type=input_type, input_size=model.input_size, layers=layers, name=name, metadata=meta)


def _lower_binarized_mlp(model, input_type):
    layers = [MultiThreshold(thresholds=[[input_threshold(model, input_type)]], out_type=BIPOLAR, name="binarize")]
    for i in range(len(model.hidden)):
        weights, thresholds = fold_hidden_layer(model, i)
        layers.append(Dense(weights=weights, weight_type=BIPOLAR, thresholds=thresholds, out_type=BIPOLAR,
                            name=f"fc{i + 1}"))
    with torch.no_grad():
        final = _as_int(model.final.binary_weight())
    layers.append(Dense(weights=final, weight_type=BIPOLAR, thresholds=None, name=f"fc{len(model.hidden) + 1}"))
    return layers


def check_lowering(model, network, x):
    """Number of mismatching elements between ``model.integer_trace(x)`` and the golden model's trace of
    ``network`` on ``x``, summed over every layer (0 means the lowering is exact on ``x``).

    Hidden outputs are compared as ``±1`` values (a negated row changes a channel's accumulator sign, never its
    output); the final layer compares raw accumulators.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    expected = model.integer_trace(x)
    got = golden.execute(network, x, trace=True)
    if len(expected) != len(got):
        raise HwnetError(f"the model has {len(expected)} IR layers but the network has {len(got)}")
    mismatches = 0
    for layer, e, g in zip(network.layers, expected, got):
        if e.shape != g.shape:
            raise HwnetError(f"layer {layer.name!r}: model gives shape {e.shape}, network gives {g.shape}")
        mismatches += int(np.count_nonzero(e != g))
    return mismatches
