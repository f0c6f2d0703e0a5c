"""The golden model: executes the integer IR in numpy, exactly. The reference for every other stage.

Each op has a numpy twin here (FINN's ``execute_node``): :func:`multithreshold` and :func:`dense_accumulate`.
Bipolar x bipolar layers run bit-packed: the inputs and weights are packed 64 lanes to a word,
``p = popcount(xnor(w, x))`` and ``acc = 2p - N`` (:func:`xnor_popcount`); layers with a products table sum
looked-up products (:func:`lookup_accumulate`); every other weight type (ternary, power-of-two, k-bit integer)
runs as an exact int64 matrix product.

Convolutions reuse all of that: :func:`conv2d_patches` gathers every output pixel's flattened ``(ky, kx, ic)``
patch of the padded NHWC input (im2col) and :func:`conv2d_accumulate` runs them through :func:`dense_accumulate`
with the layer's :class:`~hwnet.ir.Dense` view (``layer.matmul``); bipolar images stay bit-packed end to end.
:func:`maxpool2d` takes the windowed maximum per channel.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .datatypes import BIPOLAR
from .errors import HwnetError
from .ir import Conv2d, Dense, MaxPool2d, MultiThreshold

__all__ = ["execute", "multithreshold", "dense_accumulate", "conv2d_patches", "conv2d_accumulate", "maxpool2d",
           "pack_bipolar", "xnor_popcount", "lookup_accumulate", "classify"]

_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_ROWS_PER_THREAD = 256
_PATCH_ELEMENTS = 1 << 22  # im2col block size of conv2d_accumulate (32 MiB of int64)

def multithreshold(values, thresholds, out_type):
    """``y = sum_l [values >= T[:, l]]`` mapped to the ``y``-th value of ``out_type``.

    ``values`` has shape (batch, channels); ``thresholds`` (channels or 1, L), ascending.
    """
    v = np.asarray(values)
    t = np.asarray(thresholds, dtype=np.int64)
    if t.shape[1] == 1:  # two output values: [min, max] (bipolar, uint1)
        return _two_valued(_passes(v, t), out_type)
    counts = np.zeros(v.shape, dtype=np.int64)
    for level in range(t.shape[1]):
        counts += v >= t[:, level]
    # Types with more than two values (uint, int, ternary) are the consecutive integers from their minimum.
    return counts + out_type.min


def _passes(values, thresholds):
    """The one comparison of a single-threshold channel: ``values >= T[:, 0]`` (booleans)."""
    return np.greater_equal(values, thresholds[:, 0])


def _two_valued(passed, out_type):
    """Booleans from :func:`_passes` -> ``out_type.max`` where passed, ``out_type.min`` elsewhere."""
    return np.array([out_type.min, out_type.max], dtype=np.int64)[passed.view(np.uint8)]


def pack_bipolar(values):
    """±1 array (..., N) -> uint64 words (..., ceil(N/64)); bit 1 = +1. Padding bits are 0."""
    return _pack_bits(np.asarray(values) > 0)


def _pack_bits(bits):
    """Boolean array (..., N), True = +1 -> uint64 words (..., ceil(N/64)), lane i at bit i % 64."""
    n = bits.shape[-1]
    words = -(-n // 64)
    if n != words * 64:
        padded = np.zeros(bits.shape[:-1] + (words * 64,), dtype=bool)
        padded[..., :n] = bits
        bits = padded
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64).reshape(bits.shape[:-1] + (words,))


def xnor_popcount(x_packed, w_packed, n):
    """Popcount of XNOR between every input row and every weight row, over ``n`` valid lanes.

    ``x_packed`` (batch, words), ``w_packed`` (rows, words); returns (batch, rows) int64. Padding lanes are 0
    in both, so they never disagree: ``p = n - sum over words of popcount(x ^ w)``.
    """
    diff = np.zeros((x_packed.shape[0], w_packed.shape[0]), dtype=np.uint16 if n < (1 << 16) else np.int64)
    for k in range(x_packed.shape[1]):
        diff += np.bitwise_count(x_packed[:, k, None] ^ w_packed[None, :, k])
    return n - diff.astype(np.int64)


def lookup_accumulate(products, weight_ranks, x_ranks):
    """``acc[b, o] = sum_i products[weight_ranks[o, i], x_ranks[b, i]]``, int64: one masked matrix product per
    input value."""
    acc = np.zeros((x_ranks.shape[0], weight_ranks.shape[0]), dtype=np.int64)
    for j in range(products.shape[1]):
        acc += (x_ranks == j).astype(np.int64) @ products[weight_ranks, j].T
    return acc


def dense_accumulate(layer, x, *, bits=None):
    """``acc[b, o] = sum_i W[o, i] * x[b, i]`` (or the products table's entries), exact, int64.

    For a bipolar input, ``bits`` (``x > 0`` as booleans) may be given instead of ``x`` (then ``x`` may be None).
    """
    if layer.products is None and layer.weight_type == BIPOLAR and layer.in_type == BIPOLAR:
        n = layer.in_features
        xp = _pack_bits(bits) if bits is not None else pack_bipolar(x)
        p = xnor_popcount(xp, pack_bipolar(layer.weights), n)
        return 2 * p - n
    if x is None:
        x = np.where(bits, 1, -1)
    if layer.products is not None:
        return lookup_accumulate(layer.products, layer.weight_type.ranks(layer.weights), layer.in_type.ranks(x))
    return np.asarray(x, dtype=np.int64) @ layer.weights.T


def _windows(image, kernel, stride, out_hw):
    """Per kernel offset ``(ky, kx)`` in row-major order, the strided view of ``image`` (batch, H, W, C) that the
    offset contributes to every output pixel: (batch, OH, OW, C)."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    return [image[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :]
            for ky in range(kh) for kx in range(kw)]


def _patches(layer, a, fill):
    """im2col of ``a`` (batch, H*W*C), padded with ``fill``: (batch*OH*OW, KH*KW*C), patches in ``(ky, kx, ic)``
    order (``ic`` fastest), rows in ``(b, oy, ox)`` order."""
    a = np.asarray(a)
    image = a.reshape((a.shape[0],) + layer.in_shape)
    top, bottom, left, right = layer.padding
    if top or bottom or left or right:
        image = np.pad(image, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    oh, ow, _ = layer.out_shape
    views = _windows(image, (layer.kernel_h, layer.kernel_w), layer.stride, (oh, ow))
    return np.stack(views, axis=3).reshape(a.shape[0] * oh * ow, layer.patch_size)


def conv2d_patches(layer, x):
    """im2col: input values (batch, H*W*C) of a :class:`~hwnet.ir.Conv2d` -> (batch*OH*OW, KH*KW*C), every
    output pixel's patch of the input padded with ``layer.pad_value``, flattened ``(ky, kx, ic)``."""
    return _patches(layer, x, layer.pad_value)


def conv2d_accumulate(layer, x, *, bits=None):
    """``acc[b, (oy, ox, oc)] = sum over ky, kx, ic of W[oc, ky, kx, ic] * Xpad[b, oy*sh + ky, ox*sw + kx, ic]``
    (or the products table's entries), exact, int64, shape (batch, OH*OW*OC) flattened NHWC.

    For a bipolar input, ``bits`` (``x > 0`` as booleans) may be given instead of ``x``. The patches are built
    a block of images at a time (at most about :data:`_PATCH_ELEMENTS` patch elements), so the im2col copy stays
    small whatever the batch.
    """
    a = np.asarray(bits if bits is not None else x)
    oh, ow, _ = layer.out_shape
    step = max(1, _PATCH_ELEMENTS // (oh * ow * layer.patch_size))
    parts = []
    for start in range(0, len(a), step):
        block = a[start:start + step]
        if bits is not None:
            acc = dense_accumulate(layer.matmul, None, bits=_patches(layer, block, layer.pad_value > 0))
        else:
            acc = dense_accumulate(layer.matmul, _patches(layer, block, layer.pad_value))
        parts.append(acc.reshape(len(block), layer.out_size))
    if not parts:
        return np.zeros((0, layer.out_size), dtype=np.int64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def maxpool2d(layer, x):
    """``y[b, (oy, ox, c)] = max over ky, kx of x[b, oy*sh + ky, ox*sw + kx, c]`` for a
    :class:`~hwnet.ir.MaxPool2d`: (batch, H*W*C) -> (batch, OH*OW*C). Booleans (bipolar bits) give their OR."""
    a = np.asarray(x)
    oh, ow, _ = layer.out_shape
    views = _windows(a.reshape((a.shape[0],) + layer.in_shape), layer.kernel, layer.stride, (oh, ow))
    out = views[0].copy()
    for view in views[1:]:
        np.maximum(out, view, out=out)
    return out.reshape(a.shape[0], layer.out_size)


def _run_layers(network, x, trace):
    """Every layer's output (None for the intermediate ones unless ``trace``). Between bipolar layers the
    comparison bits go straight into the packing; the ±1 values are only built where they are returned."""
    outputs = []
    bits = None
    count = len(network.layers)
    for index, layer in enumerate(network.layers):
        needed = trace or index == count - 1
        if isinstance(layer, MaxPool2d):
            if bits is not None:
                bits = maxpool2d(layer, bits)
                x = _two_valued(bits, BIPOLAR) if needed else None
            else:
                x = maxpool2d(layer, x)
            outputs.append(x)
            continue
        if isinstance(layer, MultiThreshold):
            pre = x if x is not None else _two_valued(bits, BIPOLAR)
        elif isinstance(layer, Dense):
            pre = dense_accumulate(layer, x, bits=bits)
        elif isinstance(layer, Conv2d):
            pre = conv2d_accumulate(layer, x, bits=bits)
        else:  # pragma: no cover - Network validates ops
            raise HwnetError(f"golden model has no executor for {layer!r}")
        if layer.thresholds is None:
            x, bits = pre, None
            outputs.append(x)
            continue
        rows = len(pre)
        if isinstance(layer, Conv2d):  # thresholds per output channel, the same at every pixel
            pre = pre.reshape(-1, layer.out_channels)
        if layer.out_type == BIPOLAR:
            bits = _passes(pre, layer.thresholds).reshape(rows, layer.out_size)
            x = _two_valued(bits, BIPOLAR) if needed else None
        else:
            x, bits = multithreshold(pre, layer.thresholds, layer.out_type).reshape(rows, layer.out_size), None
        outputs.append(x)
    return outputs


def execute(network, inputs, *, trace=False):
    """Run ``network`` on ``inputs`` (batch, input_size) of legal input values.

    Returns the output values (batch, output_size) as int64, or with ``trace=True`` the list of every layer's
    output (the last one being the network's output). Large batches are split across threads (numpy releases
    the GIL in the element-wise kernels); rows are independent, so the result does not depend on the split.
    """
    x = np.asarray(inputs)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != network.input_size:
        raise HwnetError(f"inputs must have shape (batch, {network.input_size}), got {np.asarray(inputs).shape}")
    x = network.input_type.check(x, "inputs")
    workers = min(_THREADS, len(x) // _ROWS_PER_THREAD)
    if workers < 2:
        outputs = _run_layers(network, x, trace)
    else:
        chunks = np.array_split(x, workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda chunk: _run_layers(network, chunk, trace), chunks))
        outputs = [None if layer_parts[0] is None else np.concatenate(layer_parts) for layer_parts in zip(*parts)]
    return outputs if trace else outputs[-1]


def classify(outputs):
    """Class per row: argmax of the outputs, ties going to the lowest index (numpy's argmax rule)."""
    return np.argmax(np.asarray(outputs), axis=1)
