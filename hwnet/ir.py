"""The integer IR: the single source of truth for what a network computes.

A :class:`Network` is an input declaration (element type and size) followed by a chain of layers. Each layer is
exact integer arithmetic over the element types of :mod:`hwnet.datatypes`:

:class:`MultiThreshold` (op ``"threshold"``)
    Elementwise: ``y[i] = sum_l [x[i] >= T[c, l]]`` with ``c = 0`` (one set of thresholds for the whole tensor)
    or ``c = i`` (one set per element). The output value is the ``y``-th smallest value of ``out_type``.
:class:`Dense` (op ``"dense"``)
    Matrix-vector-threshold: ``acc[o] = sum_i W[o, i] * x[i]``, exact, no overflow. With a ``products`` table
    (lookup-table products, e.g. codebook weights and discretized activations), ``W[o, i] * x[i]`` is replaced
    by ``products[rank(W[o, i]), rank(x[i])]``, where ``rank(v)`` is the index of ``v`` among its type's legal
    values in ascending order. With thresholds, ``y[o] = sum_l [acc[o] >= T[o, l]]`` and the output value is
    the ``y``-th smallest value of ``out_type``; without, the output is the raw accumulator (``out_type`` is
    then the accumulator type).
:class:`Conv2d` (op ``"conv2d"``)
    2-D convolution with multi-thresholds, the convolutional twin of ``dense``: over an NHWC image flattened
    row-major (channels fastest), every output pixel is a ``dense`` row product of one flattened
    ``(ky, kx, ic)`` patch of the padded input, thresholded per output channel.
:class:`MaxPool2d` (op ``"maxpool2d"``)
    2-D max-pooling per channel over an NHWC image, no padding; the output type is the input type.

Thresholds are ascending per channel, compared with ``>=``. The number of thresholds is the number of values
of ``out_type`` minus one (1 for bipolar). Widths are derived from the actual weights and types, never stored
as free parameters. Folding (``pe``, ``simd``) lives with each dense and conv layer: ``pe`` divides the outputs;
``simd`` divides a conv layer's patch, while a dense layer's input may be padded up to ``ceil(in / simd) * simd``
lanes with terms that add nothing (the hardware's business: no result depends on it).

The file format (``.npz``, see docs/ir.md) is written by :func:`save` and read by :func:`load`; it holds one
JSON header and the arrays, so a user can write a network by hand with ``numpy.savez``.
"""

import io
import json
import os
import zipfile

import numpy as np

from .datatypes import parse_type, type_for_range
from .errors import HwnetError

__all__ = ["Network", "Dense", "MultiThreshold", "Conv2d", "MaxPool2d", "window_out_shape", "default_pad_value", "WEIGHT_STORAGES", "save", "load", "FORMAT", "VERSION",
           "HEADER_KEY"]

FORMAT = "hwnet-ir"
VERSION = 1
HEADER_KEY = "__hwnet_ir__"


def _int_array(array, what, ndim):
    try:
        a = np.asarray(array)
    except Exception as exc:  # pragma: no cover - numpy raises many kinds here
        raise HwnetError(f"{what}: cannot be read as an array ({exc})") from None
    if a.ndim != ndim:
        raise HwnetError(f"{what}: expected a {ndim}-D array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.number) and np.all(np.isfinite(a)) and np.all(np.mod(a, 1) == 0)):
            raise HwnetError(f"{what}: must hold integers, got dtype {a.dtype} with non-integer values")
    return a.astype(np.int64)


def _check_thresholds(thresholds, channels, out_type, what):
    t = _int_array(thresholds, f"{what} thresholds", 2)
    if t.shape[0] not in channels:
        raise HwnetError(f"{what}: thresholds have {t.shape[0]} rows, expected "
                         f"{' or '.join(str(c) for c in sorted(set(channels)))}")
    need = out_type.num_values - 1
    if t.shape[1] != need:
        raise HwnetError(f"{what}: {out_type.name} output needs {need} threshold(s) per channel, "
                         f"got {t.shape[1]}")
    if t.shape[1] > 1 and np.any(np.diff(t, axis=1) < 0):
        row = int(np.nonzero(np.any(np.diff(t, axis=1) < 0, axis=1))[0][0])
        raise HwnetError(f"{what}: thresholds of channel {row} are not ascending: {t[row].tolist()}")
    return t


class MultiThreshold:
    """Elementwise multi-threshold quantizer (op ``"threshold"``), e.g. the input binarization.

    Parameters
    ----------
    thresholds : array of int, shape (1, L) or (size, L)
        Ascending thresholds; one row for the whole tensor or one per element.
    out_type : DataType or str
        Output element type; ``L`` must equal its number of values minus one.
    name : str
    """

    op = "threshold"

    def __init__(self, *, thresholds, out_type, name="threshold"):
        self.name = str(name)
        self.out_type = parse_type(out_type)
        self.thresholds = _int_array(thresholds, f"layer {self.name!r} thresholds", 2)
        self.in_type = None
        self.size = None

    def bind(self, in_type, size):
        """Attach the input type and size (done by :class:`Network`) and validate against them."""
        self.in_type, self.size = in_type, size
        self.thresholds = _check_thresholds(self.thresholds, (1, size), self.out_type, f"layer {self.name!r}")

    @property
    def in_size(self):
        return self.size

    @property
    def out_size(self):
        return self.size

    def header(self, arrays):
        arrays[f"{self.name}.thresholds"] = self.thresholds
        return {"op": self.op, "name": self.name, "out_type": self.out_type.name,
                "thresholds": f"{self.name}.thresholds"}

    @classmethod
    def from_header(cls, h, arrays):
        return cls(name=h["name"], out_type=h["out_type"], thresholds=_get_array(arrays, h, "thresholds"))


#: Where a dense layer's weights live in hardware (:class:`Dense` ``weight_storage``).
WEIGHT_STORAGES = ("rom", "logic", "spram")


class Dense:
    """Matrix-vector-threshold layer (op ``"dense"``).

    Parameters
    ----------
    weights : array of int, shape (out_features, in_features)
        Legal values of ``weight_type``.
    weight_type : DataType or str
    thresholds : array of int, shape (out_features, L), or None
        None makes this a raw-accumulator layer (normally the last one).
    out_type : DataType or str, or None
        Required with thresholds; must be None (derived) without.
    pe, simd : int or None
        Folding: ``pe`` outputs in parallel, ``simd`` inputs per PE per cycle. ``pe`` must divide
        ``out_features``; ``simd`` is at most ``in_features`` and need not divide it: the hardware then pads the
        input vector to ``sf * simd`` elements (``sf = ceil(in_features / simd)`` beats) with lanes whose terms
        are zero, which changes no result. None leaves the choice to the compiler.
    products : array of int, shape (weight values, input values), or None
        Lookup-table products: entry ``[i, j]`` is the product of the ``i``-th smallest weight value and the
        ``j``-th smallest input value. None: the products are ``W * x``.
    weight_storage : ``"rom"``, ``"logic"`` or ``"spram"``
        Hardware choice: weights in block-RAM ROMs (folded), folded into the logic as constants, or streamed from
        the single-port RAMs of an iCE40UP (loaded at start-up; see :mod:`hwnet.gateware.spram`). ``"logic"``
        needs the layer fully unrolled (``pe = out_features``, ``simd = in_features``: one vector per cycle).
    spram_pes : int or None
        With ``weight_storage="spram"``: how many PEs stream their weights from SPRAM, PEs ``0 .. spram_pes - 1``;
        the others keep their block-RAM ROM (a layer split between SPRAM and block RAM by PE). None: every PE
        (the whole layer). From 1 to ``pe`` (``out_features`` while ``pe`` is unset).
    bit_serial : bool
        Hardware choice for ``uint<k>``/``int<k>`` weights: evaluate one weight bit plane per cycle (``k`` times
        the cycles, a ``k`` times narrower processing element) instead of all planes at once.
    name : str
    """

    op = "dense"

    def __init__(self, *, weights, weight_type="bipolar", thresholds=None, out_type=None, pe=None, simd=None,
                 products=None, weight_storage="rom", spram_pes=None, bit_serial=False, name="dense"):
        self.name = str(name)
        what = f"layer {self.name!r}"
        self.weight_type = parse_type(weight_type)
        self.weights = _int_array(weights, f"{what} weights", 2)
        if self.weights.shape[0] == 0 or self.weights.shape[1] == 0:
            raise HwnetError(f"{what}: zero-width layer (weights have shape {self.weights.shape}); "
                             f"every layer needs at least one input and one output")
        self.weight_type.check(self.weights, f"{what} weights")
        if thresholds is None:
            if out_type is not None:
                raise HwnetError(f"{what}: out_type is derived for a layer without thresholds; leave it out")
            self.thresholds = None
            self.out_type = None
        else:
            if out_type is None:
                raise HwnetError(f"{what}: a layer with thresholds needs an out_type (e.g. 'bipolar')")
            self.out_type = parse_type(out_type)
            self.thresholds = _check_thresholds(thresholds, (self.out_features,), self.out_type, what)
        self.pe = _folding(pe, "pe", self.out_features, "out_features", what)
        self.simd = _folding(simd, "simd", self.in_features, "in_features", what, padded=True)
        self.products = None if products is None else _int_array(products, f"{what} products", 2)
        if self.products is not None and self.products.size == 0:
            raise HwnetError(f"{what}: the products table is empty")
        if weight_storage not in WEIGHT_STORAGES:
            raise HwnetError(f"{what}: weight_storage must be 'rom', 'logic' or 'spram', not {weight_storage!r}")
        self.weight_storage = weight_storage
        self.spram_pes = _spram_pes(spram_pes, weight_storage, self.pe, self.out_features, what)
        if weight_storage == "logic" and ((self.pe is not None and self.pe != self.out_features)
                                          or (self.simd is not None and self.simd != self.in_features)):
            raise HwnetError(f"{what}: weights in logic need the layer fully unrolled (pe={self.out_features}, "
                             f"simd={self.in_features}), got pe={self.pe} simd={self.simd}; use "
                             f"weight_storage='rom' to fold it")
        if not isinstance(bit_serial, (bool, np.bool_)):
            raise HwnetError(f"{what}: bit_serial must be true or false, not {bit_serial!r}")
        self.bit_serial = bool(bit_serial)
        if self.bit_serial and (self.weight_type.kind not in ("uint", "int") or self.products is not None):
            raise HwnetError(f"{what}: bit-serial evaluation is for uint<k>/int<k> weights without a products "
                             f"table, not {self.weight_type} weights")
        if self.bit_serial and weight_storage == "logic":
            raise HwnetError(f"{what}: a bit-serial layer reads one weight plane per cycle from a ROM; it cannot "
                             f"keep its weights in logic")
        self.in_type = None

    @property
    def out_features(self):
        return self.weights.shape[0]

    @property
    def in_features(self):
        return self.weights.shape[1]

    in_size = in_features
    out_size = out_features

    def bind(self, in_type, size):
        what = f"layer {self.name!r}"
        if size != self.in_features:
            raise HwnetError(f"{what}: takes {self.in_features} inputs but the layer before it gives {size}")
        if self.products is not None:
            shape = (self.weight_type.num_values, in_type.num_values)
            if self.products.shape != shape:
                raise HwnetError(f"{what}: products table must have shape {shape} ({self.weight_type} weight "
                                 f"values x {in_type} input values), got {self.products.shape}")
        self.in_type = in_type
        if self.thresholds is None:
            self.out_type = self.acc_type

    def row_acc_ranges(self, in_type=None):
        """Per output row, the lowest and highest accumulator value over all legal inputs: two int64 arrays of
        shape ``(out_features,)``. ``in_type`` defaults to the bound input type."""
        in_type = self.in_type if in_type is None else parse_type(in_type)
        if in_type is None:
            raise HwnetError(f"layer {self.name!r} is not part of a network yet")
        if self.products is not None:
            ranks = self.weight_type.ranks(self.weights)
            return self.products.min(axis=1)[ranks].sum(axis=1), self.products.max(axis=1)[ranks].sum(axis=1)
        lo_x, hi_x = in_type.min, in_type.max
        w = self.weights
        return np.minimum(w * lo_x, w * hi_x).sum(axis=1), np.maximum(w * lo_x, w * hi_x).sum(axis=1)

    def acc_range(self):
        """(lowest, highest) accumulator value over all rows and all legal inputs: the worst case."""
        row_lo, row_hi = self.row_acc_ranges()
        return int(row_lo.min()), int(row_hi.max())

    @property
    def acc_type(self):
        """Narrowest integer type that holds every accumulator value."""
        return type_for_range(*self.acc_range())

    @property
    def planes(self):
        """Weight bit planes evaluated one after another: the weight bits when bit-serial, else 1."""
        return self.weight_type.bits if self.bit_serial else 1

    @property
    def streamed_pes(self):
        """PEs whose weights stream from SPRAM (PEs ``0 .. streamed_pes - 1``): 0 unless ``weight_storage`` is
        ``"spram"``, then ``spram_pes``, or every PE (``pe``; None while ``pe`` is unset)."""
        if self.weight_storage != "spram":
            return 0
        return self.spram_pes if self.spram_pes is not None else self.pe

    @property
    def sf(self):
        """Input beats per vector, ``ceil(in_features / simd)`` (None while unfolded)."""
        return None if self.simd is None else -(-self.in_features // self.simd)

    @property
    def cycles(self):
        """Cycles per input vector: (out_features / pe) * ceil(in_features / simd) * planes."""
        if self.pe is None or self.simd is None:
            return None
        return (self.out_features // self.pe) * self.sf * self.planes

    def replace(self, **changes):
        """A copy of this layer with some constructor arguments changed (validated like a new layer)."""
        args = dict(weights=self.weights, weight_type=self.weight_type, thresholds=self.thresholds,
                    out_type=self.out_type if self.thresholds is not None else None, pe=self.pe, simd=self.simd,
                    products=self.products, weight_storage=self.weight_storage, spram_pes=self.spram_pes,
                    bit_serial=self.bit_serial, name=self.name)
        args.update(changes)
        return Dense(**args)

    def with_folding(self, pe, simd):
        """A copy of this layer with another folding (validated)."""
        return self.replace(pe=pe, simd=simd)

    def header(self, arrays):
        arrays[f"{self.name}.weights"] = self.weights.astype(_narrow_dtype(self.weights))
        h = {"op": self.op, "name": self.name, "weight_type": self.weight_type.name,
             "weights": f"{self.name}.weights"}
        if self.thresholds is not None:
            arrays[f"{self.name}.thresholds"] = self.thresholds
            h["thresholds"] = f"{self.name}.thresholds"
            h["out_type"] = self.out_type.name
        else:
            h["thresholds"] = None
        if self.products is not None:
            arrays[f"{self.name}.products"] = self.products
            h["products"] = f"{self.name}.products"
        if self.in_type is not None:
            h["acc_type"] = self.acc_type.name
        h["pe"] = self.pe
        h["simd"] = self.simd
        if self.weight_storage != "rom":
            h["weight_storage"] = self.weight_storage
        if self.spram_pes is not None:
            h["spram_pes"] = self.spram_pes
        if self.bit_serial:
            h["bit_serial"] = True
        return h

    @classmethod
    def from_header(cls, h, arrays):
        return cls(name=h["name"], **_matmul_fields(h, arrays),
                   weight_storage=h.get("weight_storage", "rom"), spram_pes=h.get("spram_pes"),
                   bit_serial=h.get("bit_serial", False))


def _matmul_fields(h, arrays):
    """The header fields a dense and a conv layer share, as constructor arguments."""
    thresholds = _get_array(arrays, h, "thresholds") if h.get("thresholds") is not None else None
    products = _get_array(arrays, h, "products") if h.get("products") is not None else None
    return dict(weights=_get_array(arrays, h, "weights"), weight_type=h.get("weight_type", "bipolar"),
                thresholds=thresholds, out_type=h.get("out_type") if thresholds is not None else None,
                pe=h.get("pe"), simd=h.get("simd"), products=products)


def _folding(value, what, size, size_name, where, padded=False):
    """``value`` checked as a folding factor of ``size``: a divisor, or with ``padded`` any of 1 .. ``size``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise HwnetError(f"{where}: {what} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise HwnetError(f"{where}: {what} must be a positive integer, got {value}")
    if padded and value > size:
        raise HwnetError(f"{where}: {what}={value} is more than {size_name}={size}; choose 1 to {size}")
    if size % value and not padded:
        divisors = [d for d in range(1, size + 1) if size % d == 0]
        raise HwnetError(f"{where}: {what}={value} does not divide {size_name}={size}; "
                         f"choose one of {divisors}")
    return value


def _spram_pes(value, storage, pe, out_features, where):
    """``spram_pes`` validated: None, or 1 to ``pe`` (``out_features`` while unfolded) PEs of a layer whose
    weights stream from SPRAM."""
    if value is None:
        return None
    if storage != "spram":
        raise HwnetError(f"{where}: spram_pes is for a layer whose weights stream from SPRAM "
                         f"(weight_storage='spram'), not {storage!r}")
    most, of = (pe, f"pe={pe}") if pe is not None else (out_features, f"out_features={out_features}")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= most:
        raise HwnetError(f"{where}: spram_pes must be a whole number of PEs from 1 to {most} ({of}), "
                         f"got {value!r}")
    return int(value)


def _narrow_dtype(a):
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if a.size == 0 or (a.min() >= info.min and a.max() <= info.max):
            return dt
    return np.int64


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_tuple(value, what, form, count, minimum, scalar=True):
    """``value`` (an int, repeated ``count`` times when ``scalar``, or ``count`` ints) -> tuple of ints, each
    ``>= minimum``; anything else is one :class:`HwnetError` saying ``what`` must be ``form``."""
    items = (value,) * count if scalar and _is_int(value) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if items is None or len(items) != count or not all(_is_int(v) for v in items):
        raise HwnetError(f"{what} must be {form}, got {value!r}")
    if any(v < minimum for v in items):
        raise HwnetError(f"{what} must be {form}, got {value!r} (every entry {'>= 1' if minimum else '>= 0'})")
    return tuple(int(v) for v in items)


def _in_shape(value, what):
    return _int_tuple(value, f"{what}: in_shape", "(H, W, C), three positive integers", 3, 1, scalar=False)


def window_out_shape(in_shape, kernel, stride, padding=(0, 0, 0, 0)):
    """``(OH, OW, C)``: the windows a ``kernel`` ``(KH, KW)`` sliding by ``stride`` ``(sh, sw)`` takes over an
    ``in_shape`` ``(H, W, C)`` image padded by ``padding`` ``(top, bottom, left, right)``:
    ``OH = (H + top + bottom - KH) // sh + 1``, ``OW = (W + left + right - KW) // sw + 1`` (the output of a
    :class:`Conv2d` per output channel, of a :class:`MaxPool2d` per channel). Below 1 when the kernel does not
    fit."""
    (h, w, c), (kh, kw), (sh, sw), (top, bottom, left, right) = in_shape, kernel, stride, padding
    return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1, c


def default_pad_value(in_type):
    """The value a convolution pads with when none is given: 0 where 0 is a legal value of ``in_type``
    (``uint<k>``, ``int<k>``, ternary), else the type's minimum (-1 for bipolar)."""
    return 0 if in_type.is_legal(0) else int(in_type.min)


class Conv2d:
    """2-D convolution with multi-thresholds over an NHWC image (op ``"conv2d"``): the conv twin of :class:`Dense`.

    The input vector (size ``H * W * C``) is the ``(H, W, C)`` image flattened row-major, channels fastest; the
    output is the ``(OH, OW, OC)`` image flattened the same way. The image is padded with ``pad_value``
    (``top``/``bottom`` rows, ``left``/``right`` columns), then

        acc[oy, ox, oc] = sum over ky, kx, ic of W[oc, ky, kx, ic] * Xpad[oy * sh + ky, ox * sw + kx, ic]

    with ``OH = (H + top + bottom - KH) // sh + 1`` and ``OW = (W + left + right - KW) // sw + 1``. That is a
    :class:`Dense` product (held as :attr:`matmul`) of every flattened patch with the weights reshaped to
    ``(OC, KH * KW * C)``: the kernel element order (FINN's) flattens a patch as ``(ky, kx, ic)`` row-major,
    ``ic`` fastest, so ``matmul.weights[oc, (ky * KW + kx) * C + ic] = W[oc, ky, kx, ic]``. Products tables,
    thresholds (per output channel, the same at every pixel), the accumulator type and raw outputs are exactly
    :class:`Dense`'s, and so are ``pe`` (output channels in parallel) and ``simd`` (patch elements per PE per
    cycle).

    Parameters
    ----------
    weights : array of int, shape (out_channels, kernel_h, kernel_w, in_channels)
        Legal values of ``weight_type``.
    weight_type : DataType or str
    in_shape : (H, W, C)
        Shape of the input image; ``C`` must equal ``in_channels``.
    stride : int or (sh, sw)
    padding : int or (top, bottom, left, right)
    pad_value : int or None
        The value the padding holds; it must be a legal value of the input type (checked when the layer joins a
        network). None: 0 where 0 is legal (uint<k>, int<k>, ternary), else the input type's minimum (-1 for
        bipolar). A padded value is a legal input, so it never widens the accumulator.
    thresholds : array of int, shape (out_channels, L), or None
        None makes this a raw-accumulator layer.
    out_type : DataType or str, or None
        Required with thresholds; must be None (derived: the accumulator type) without.
    products : array of int, shape (weight values, input values), or None
        Lookup-table products indexed by value ranks, as in :class:`Dense`.
    pe, simd : int or None
        Folding: ``pe`` must divide ``out_channels`` and ``simd`` must divide ``kernel_h * kernel_w *
        in_channels``. None leaves the choice to the compiler.
    pixels : int or None
        Output pixels computed per cycle (FINN's multiple-pixel mode, MMV): the sliding window takes ``pixels``
        input pixels and sends ``pixels`` whole patches per beat, and the matrix-vector unit runs them side by
        side on the same weights. Needs the layer unrolled per pixel (``pe = out_channels``, ``simd =
        kernel_h * kernel_w * in_channels``) and ``pixels`` dividing the input width ``W`` and the output width
        ``OW``. None (or 1): one pixel at a time. A hardware choice: it changes no result.
    name : str

    Once the layer is in a network, ``pad_value`` is the value in use (the default resolved) and ``in_type`` the
    input type; :attr:`matmul` is the :class:`Dense` view bound to ``patch_size`` inputs of that type.
    """

    op = "conv2d"

    def __init__(self, *, weights, weight_type="bipolar", in_shape, stride=1, padding=0, pad_value=None,
                 thresholds=None, out_type=None, products=None, pe=None, simd=None, pixels=None, name="conv2d"):
        self.name = str(name)
        what = f"layer {self.name!r}"
        self.weights = _int_array(weights, f"{what} weights (out_channels, kernel_h, kernel_w, in_channels)", 4)
        if 0 in self.weights.shape:
            raise HwnetError(f"{what}: zero-width layer (weights have shape {self.weights.shape}); a conv layer "
                             f"needs at least one output channel, kernel row, kernel column and input channel")
        self.in_shape = _in_shape(in_shape, what)
        if self.in_shape[2] != self.in_channels:
            raise HwnetError(f"{what}: the input has {self.in_shape[2]} channels (in_shape {self.in_shape}) but "
                             f"the weights {self.weights.shape} take {self.in_channels} (the last weight axis)")
        self.stride = _int_tuple(stride, f"{what}: stride", "a positive integer or (sh, sw)", 2, 1)
        self.padding = _int_tuple(padding, f"{what}: padding",
                                  "a non-negative integer or (top, bottom, left, right)", 4, 0)
        oh, ow, _ = self.out_shape
        if oh < 1 or ow < 1:
            raise HwnetError(f"{what}: a {self.kernel_h}x{self.kernel_w} kernel with stride {self.stride} does "
                             f"not fit the {self.in_shape[0]}x{self.in_shape[1]} input padded by (top, bottom, "
                             f"left, right) = {self.padding} (output {oh}x{ow}); use a smaller kernel or more "
                             f"padding")
        if pad_value is not None and not _is_int(pad_value):
            raise HwnetError(f"{what}: pad_value must be an integer (a legal input value) or None, "
                             f"got {pad_value!r}")
        self._pad_value = None if pad_value is None else int(pad_value)
        self.pad_value = self._pad_value
        _folding(pe, "pe", self.out_channels, "out_channels", what)
        _folding(simd, "simd", self.patch_size, "kernel_h*kernel_w*in_channels", what)
        #: The arithmetic: a Dense layer over flattened patches (weights reshaped to (OC, KH * KW * C)).
        self.matmul = Dense(weights=self.weights.reshape(self.out_channels, self.patch_size),
                            weight_type=weight_type, thresholds=thresholds, out_type=out_type, pe=pe, simd=simd,
                            products=products, name=self.name)
        self.pixels = _pixels(pixels, self, what)
        self.in_type = None

    # -- shapes ---------------------------------------------------------------------------------------------
    @property
    def out_channels(self):
        return self.weights.shape[0]

    @property
    def kernel_h(self):
        return self.weights.shape[1]

    @property
    def kernel_w(self):
        return self.weights.shape[2]

    @property
    def in_channels(self):
        return self.weights.shape[3]

    @property
    def patch_size(self):
        """Elements of one flattened patch: ``kernel_h * kernel_w * in_channels``."""
        return self.kernel_h * self.kernel_w * self.in_channels

    @property
    def out_shape(self):
        """``(OH, OW, OC)`` of the output image."""
        oh, ow, _ = window_out_shape(self.in_shape, (self.kernel_h, self.kernel_w), self.stride, self.padding)
        return oh, ow, self.out_channels

    @property
    def in_size(self):
        return int(np.prod(self.in_shape))

    @property
    def out_size(self):
        return int(np.prod(self.out_shape))

    # -- the arithmetic, all Dense's ---------------------------------------------------------------------------
    weight_type = property(lambda self: self.matmul.weight_type)
    thresholds = property(lambda self: self.matmul.thresholds)
    out_type = property(lambda self: self.matmul.out_type,
                        doc="Output element type: the thresholded type, or the accumulator type when raw.")
    products = property(lambda self: self.matmul.products)
    pe = property(lambda self: self.matmul.pe)
    simd = property(lambda self: self.matmul.simd)

    def row_acc_ranges(self, in_type=None):
        """Per output channel, the lowest and highest accumulator value (see :meth:`Dense.row_acc_ranges`)."""
        return self.matmul.row_acc_ranges(in_type)

    def acc_range(self):
        return self.matmul.acc_range()

    @property
    def acc_type(self):
        return self.matmul.acc_type

    def bind(self, in_type, size):
        what = f"layer {self.name!r}"
        h, w, c = self.in_shape
        if size != self.in_size:
            raise HwnetError(f"{what}: takes a {h}x{w}x{c} image ({self.in_size} values, flattened NHWC) but the "
                             f"layer before it gives {size}")
        pad = default_pad_value(in_type) if self._pad_value is None else self._pad_value
        try:
            in_type.check(np.array([pad]), f"{what}: pad_value")
        except HwnetError as exc:
            raise HwnetError(f"{exc}; pad with a legal input value, or leave pad_value out for the default (0 "
                             f"where legal, else the type's minimum)") from None
        self.matmul.bind(in_type, self.patch_size)
        self.in_type, self.pad_value = in_type, pad

    def replace(self, **changes):
        """A copy of this layer with some constructor arguments changed (validated like a new layer)."""
        args = dict(weights=self.weights, weight_type=self.weight_type, in_shape=self.in_shape, stride=self.stride,
                    padding=self.padding, pad_value=self._pad_value, thresholds=self.thresholds,
                    out_type=self.out_type if self.thresholds is not None else None, products=self.products,
                    pe=self.pe, simd=self.simd, pixels=self.pixels if self.pixels > 1 else None, name=self.name)
        args.update(changes)
        return Conv2d(**args)

    def with_folding(self, pe, simd, pixels=None):
        """A copy of this layer with another folding (validated), ``pixels`` output pixels per cycle (None: 1)."""
        return self.replace(pe=pe, simd=simd, pixels=pixels)

    def header(self, arrays):
        h = self.matmul.header(arrays)  # weight type, thresholds, out_type, products, acc_type, pe, simd
        arrays[f"{self.name}.weights"] = self.weights.astype(_narrow_dtype(self.weights))
        h.update(op=self.op, in_shape=list(self.in_shape), stride=list(self.stride), padding=list(self.padding),
                 pad_value=self.pad_value)
        if self.pixels > 1:
            h["pixels"] = self.pixels
        return h

    @classmethod
    def from_header(cls, h, arrays):
        return cls(name=h["name"], in_shape=h["in_shape"], stride=h.get("stride", 1),
                   padding=h.get("padding", 0), pad_value=h.get("pad_value"), pixels=h.get("pixels"),
                   **_matmul_fields(h, arrays))


def _pixels(value, layer, where):
    """The output pixels per cycle of the :class:`Conv2d` ``layer`` (1 for None), checked."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise HwnetError(f"{where}: pixels must be a positive integer or None, got {value!r}")
    value = int(value)
    if value == 1:
        return 1
    w, ow = layer.in_shape[1], layer.out_shape[1]
    if w % value or ow % value:
        raise HwnetError(f"{where}: pixels={value} must divide the input width {w} and the output width {ow}; "
                         f"choose a common divisor, or leave pixels out")
    if layer.pe != layer.out_channels or layer.simd != layer.patch_size:
        raise HwnetError(f"{where}: pixels={value} needs the layer unrolled per pixel (pe={layer.out_channels}, "
                         f"simd={layer.patch_size}), got pe={layer.pe} simd={layer.simd}")
    return value


class MaxPool2d:
    """2-D max-pooling over an NHWC image (op ``"maxpool2d"``), per channel, no padding.

    ``y[oy, ox, c] = max over ky, kx of x[oy * sh + ky, ox * sw + kx, c]`` with ``OH = (H - KH) // sh + 1`` and
    ``OW = (W - KW) // sw + 1``; input and output are flattened row-major, channels fastest. The output type is
    the input type: bipolar (the max is the OR of +1), ternary, uint<k> or int<k>; pot<k> is refused.

    Parameters
    ----------
    in_shape : (H, W, C)
    kernel : int or (kh, kw)
        The window; it must fit the input.
    stride : int or (sh, sw), or None
        None: the kernel (non-overlapping windows).
    name : str
    """

    op = "maxpool2d"

    def __init__(self, *, in_shape, kernel, stride=None, name="maxpool2d"):
        self.name = str(name)
        what = f"layer {self.name!r}"
        self.in_shape = _in_shape(in_shape, what)
        self.kernel = _int_tuple(kernel, f"{what}: kernel", "a positive integer or (kh, kw)", 2, 1)
        self.stride = self.kernel if stride is None else _int_tuple(
            stride, f"{what}: stride", "a positive integer or (sh, sw)", 2, 1)
        h, w, _ = self.in_shape
        if self.kernel[0] > h or self.kernel[1] > w:
            raise HwnetError(f"{what}: the {self.kernel[0]}x{self.kernel[1]} window does not fit the {h}x{w} "
                             f"input (max-pooling has no padding); use a smaller kernel")
        self.in_type = self.out_type = None

    @property
    def out_shape(self):
        """``(OH, OW, C)`` of the output image."""
        return window_out_shape(self.in_shape, self.kernel, self.stride)

    @property
    def in_size(self):
        return int(np.prod(self.in_shape))

    @property
    def out_size(self):
        return int(np.prod(self.out_shape))

    def bind(self, in_type, size):
        what = f"layer {self.name!r}"
        h, w, c = self.in_shape
        if size != self.in_size:
            raise HwnetError(f"{what}: takes a {h}x{w}x{c} image ({self.in_size} values, flattened NHWC) but the "
                             f"layer before it gives {size}")
        if in_type.kind not in ("bipolar", "ternary", "uint", "int"):
            raise HwnetError(f"{what}: max-pooling takes bipolar, ternary, uint<k> or int<k> inputs, not "
                             f"{in_type}")
        self.in_type = self.out_type = in_type

    def header(self, arrays):
        return {"op": self.op, "name": self.name, "in_shape": list(self.in_shape), "kernel": list(self.kernel),
                "stride": list(self.stride)}

    @classmethod
    def from_header(cls, h, arrays):
        return cls(name=h["name"], in_shape=h["in_shape"], kernel=h["kernel"], stride=h.get("stride"))


_LAYER_OPS = {cls.op: cls for cls in (MultiThreshold, Dense, Conv2d, MaxPool2d)}


class Network:
    """An input declaration and a chain of layers.

    Parameters
    ----------
    input_type : DataType or str
        Element type of the network's input vector.
    input_size : int
    layers : list of layers
    name : str
    metadata : dict
        Free-form, JSON-serializable (training method, data set, accuracy...). Not part of the semantics.
    """

    def __init__(self, *, input_type, input_size, layers, name="network", metadata=None):
        self.name = str(name)
        self.input_type = parse_type(input_type)
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
            raise HwnetError(f"input size must be a positive integer, got {input_size!r}")
        self.input_size = int(input_size)
        self.layers = list(layers)
        self.metadata = dict(metadata or {})
        if not self.layers:
            raise HwnetError("a network needs at least one layer")
        names = [layer.name for layer in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise HwnetError(f"layer names must be unique; repeated: {sorted(dup)}")
        t, n = self.input_type, self.input_size
        for layer in self.layers:
            if not isinstance(layer, tuple(_LAYER_OPS.values())):
                raise HwnetError(f"unsupported layer {layer!r}: supported ops are {sorted(_LAYER_OPS)}")
            layer.bind(t, n)
            t, n = layer.out_type, layer.out_size

    @property
    def output_type(self):
        return self.layers[-1].out_type

    @property
    def output_size(self):
        return self.layers[-1].out_size

    def dense_layers(self):
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def replace_layers(self, layers):
        """A new network with the same input and metadata and other layers."""
        return Network(input_type=self.input_type, input_size=self.input_size, layers=layers,
                       name=self.name, metadata=self.metadata)

    def header(self, arrays):
        return {"format": FORMAT, "version": VERSION, "name": self.name,
                "input": {"type": self.input_type.name, "size": self.input_size},
                "layers": [layer.header(arrays) for layer in self.layers],
                "metadata": self.metadata}

    def summary_lines(self):
        lines = [f"{self.name}: input {self.input_size} x {self.input_type}"]
        for layer in self.layers:
            if isinstance(layer, Dense):
                fold = f"pe={layer.pe} simd={layer.simd}" if layer.pe else "folding unset"
                extra = "".join([" products-table" if layer.products is not None else "",
                                 f" weights-in-{layer.weight_storage}" if layer.weight_storage != "rom" else "",
                                 f"({layer.spram_pes} PEs)" if layer.spram_pes is not None else "",
                                 " bit-serial" if layer.bit_serial else ""])
                lines.append(f"  {layer.name}: dense {layer.in_features}->{layer.out_features} "
                             f"w={layer.weight_type} acc={layer.acc_type} out={layer.out_type} {fold}{extra}")
            elif isinstance(layer, Conv2d):
                fold = f"pe={layer.pe} simd={layer.simd}" if layer.pe else "folding unset"
                fold += f" pixels={layer.pixels}" if layer.pixels > 1 else ""
                extra = " products-table" if layer.products is not None else ""
                lines.append(f"  {layer.name}: conv2d {_shape_text(layer.in_shape)}->{_shape_text(layer.out_shape)} "
                             f"k={layer.kernel_h}x{layer.kernel_w} s={_shape_text(layer.stride)} "
                             f"pad={','.join(map(str, layer.padding))} (value {layer.pad_value}) "
                             f"w={layer.weight_type} acc={layer.acc_type} out={layer.out_type} {fold}{extra}")
            elif isinstance(layer, MaxPool2d):
                lines.append(f"  {layer.name}: maxpool2d {_shape_text(layer.in_shape)}->"
                             f"{_shape_text(layer.out_shape)} k={_shape_text(layer.kernel)} "
                             f"s={_shape_text(layer.stride)} x {layer.in_type}")
            else:
                lines.append(f"  {layer.name}: threshold {layer.size} x {layer.in_type}->{layer.out_type}")
        return lines


def _shape_text(shape):
    return "x".join(str(v) for v in shape)


def _get_array(arrays, header, field):
    key = header.get(field)
    if not isinstance(key, str):
        raise HwnetError(f"layer {header.get('name')!r}: field {field!r} must name an array in the file")
    if key not in arrays:
        raise HwnetError(f"layer {header.get('name')!r}: array {key!r} is missing from the file")
    return arrays[key]


def from_header(header, arrays):
    """Build a :class:`Network` from a parsed JSON header and a mapping of arrays."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise HwnetError(f"not an hwnet IR: the header's 'format' must be {FORMAT!r}")
    if header.get("version") != VERSION:
        raise HwnetError(f"hwnet IR version {header.get('version')!r} is not supported (this hwnet reads "
                         f"version {VERSION})")
    try:
        inp = header["input"]
        layer_headers = header["layers"]
        layers = []
        for h in layer_headers:
            op = h.get("op")
            if op not in _LAYER_OPS:
                raise HwnetError(f"layer {h.get('name')!r}: unsupported op {op!r}; supported ops are "
                                 f"{sorted(_LAYER_OPS)}")
            layers.append(_LAYER_OPS[op].from_header(h, arrays))
        net = Network(input_type=inp["type"], input_size=inp["size"], layers=layers,
                      name=header.get("name", "network"), metadata=header.get("metadata"))
    except (KeyError, TypeError) as exc:
        raise HwnetError(f"malformed hwnet IR header: missing or wrong field {exc}") from None
    for h, layer in zip(layer_headers, net.layers):
        stated = h.get("acc_type")
        if isinstance(layer, (Dense, Conv2d)) and stated is not None and parse_type(stated) != layer.acc_type:
            raise HwnetError(f"layer {layer.name!r}: acc_type {stated} does not match the worst case of its "
                             f"weights and input type ({layer.acc_type}); remove the field or fix it")
    return net


def save(network, path):
    """Write ``network`` to ``path`` (``.npz``), atomically."""
    arrays = {}
    header = network.header(arrays)
    arrays[HEADER_KEY] = np.array(json.dumps(header, indent=1))
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path):
    """Read a network written by :func:`save` (or by hand, see docs/ir.md). Never unpickles."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise HwnetError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise HwnetError(f"{path}: holds a single array (.npy), not an hwnet IR file (.npz archive)")
            with npz:
                arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise HwnetError(f"{path}: not a readable hwnet IR file (.npz): {exc}") from None
    if HEADER_KEY not in arrays:
        raise HwnetError(f"{path}: no {HEADER_KEY!r} entry; an hwnet IR file holds a JSON header under that key")
    try:
        header = json.loads(str(arrays.pop(HEADER_KEY)))
    except json.JSONDecodeError as exc:
        raise HwnetError(f"{path}: the {HEADER_KEY!r} header is not valid JSON ({exc})") from None
    return from_header(header, arrays)


def to_bytes(network):
    """The file contents :func:`save` would write (used for content hashes)."""
    arrays = {}
    header = network.header(arrays)
    arrays[HEADER_KEY] = np.array(json.dumps(header, sort_keys=True))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
