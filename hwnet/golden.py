"""The golden model: executes the integer IR in numpy, exactly. The reference for every other stage.

Each op has a numpy twin here (FINN's ``execute_node``): :func:`multithreshold` and :func:`dense_accumulate`.
Bipolar x bipolar layers run bit-packed: the inputs and weights are packed 64 lanes to a word,
``p = popcount(xnor(w, x))`` and ``acc = 2p - N`` (:func:`xnor_popcount`); layers with a products table sum
looked-up products (:func:`lookup_accumulate`); every other weight type (ternary, power-of-two, k-bit integer)
runs as an exact int64 matrix product.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .datatypes import BIPOLAR
from .errors import HwnetError
from .ir import Dense, MultiThreshold

__all__ = ["execute", "multithreshold", "dense_accumulate", "pack_bipolar", "xnor_popcount", "lookup_accumulate",
           "classify"]

_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_ROWS_PER_THREAD = 256

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


def _run_layers(network, x, trace):
    """Every layer's output (None for the intermediate ones unless ``trace``). Between bipolar layers the
    comparison bits go straight into the packing; the ±1 values are only built where they are returned."""
    outputs = []
    bits = None
    count = len(network.layers)
    for index, layer in enumerate(network.layers):
        if isinstance(layer, MultiThreshold):
            pre = x
        elif isinstance(layer, Dense):
            pre = dense_accumulate(layer, x, bits=bits)
        else:  # pragma: no cover - Network validates ops
            raise HwnetError(f"golden model has no executor for {layer!r}")
        needed = trace or index == count - 1
        if layer.thresholds is None:
            x, bits = pre, None
        elif layer.out_type == BIPOLAR:
            bits = _passes(pre, layer.thresholds)
            x = _two_valued(bits, BIPOLAR) if needed else None
        else:
            x, bits = multithreshold(pre, layer.thresholds, layer.out_type), None
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
