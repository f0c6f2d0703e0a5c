"""Small pure passes from the integer IR to the hardware plan the gateware is generated from.

:func:`choose_folding` fills in missing PE/SIMD; :func:`plan` lowers a network into a :class:`DesignPlan`: a chain
of stages, each carrying exactly the integers its gateware needs (memory images, thresholds moved into popcount
space, widths) plus the numbers a design summary reports (cycles, memory bits). Nothing here imports Amaranth.

Memory layout of a folded dense layer (FINN's MVAU): row ``r`` goes to PE ``r % pe``; at neuron fold ``nf``
PE ``p`` computes row ``nf * pe + p``. PE ``p``'s weight memory has depth ``NF * SF`` (``NF = MH / pe``,
``SF = ceil(MW / simd)``); the word at ``nf * SF + sf`` holds ``W[nf * pe + p, sf * simd + j]`` in lane ``j``, lane
``j`` at bits ``[j * wbits, (j + 1) * wbits)``. Stream beats carry lanes the same way: beat ``sf`` of an input vector
holds elements ``sf * simd + j``; output beat ``nf`` holds rows ``nf * pe + p``. When ``simd`` does not divide
``MW`` the last beat is padded: lanes ``j >= MW - (SF - 1) * simd`` carry the stage's pad input
(:attr:`DenseStage.pad_code`) and their weights are the pad weight (:meth:`Arithmetic.zero_pair`: a pair whose
term is zero), so padding adds nothing to any row. A bit-serial layer stores its ``k``
weight bit planes one after another: the word at ``(nf * SF + sf) * k + b`` holds bit ``b`` of each weight code.
A layer whose weights stream from the SPRAM pool has the same per-PE images; its streamed PEs (the first
``spram_pes``, all or some) read them from the pool, their words of one address side by side in one pool word
(:meth:`DenseStage.spram_words`), and the other PEs keep their ROMs.

Hardware number space (:class:`Arithmetic`): every processing element adds unsigned per-lane terms
``term(w, x) = prod(w, r) + offset(w)`` where ``r`` is the input's rank among its type's values (its wire code
minus the code of the smallest value) and ``offset(w) >= 0`` makes every term non-negative (a negative weight
takes the bitwise complement ``M - r`` of the rank, ``M = 2**bits - 1``, instead of ``-r``). The unsigned sum
``h`` relates to the IR's accumulator by ``acc = step * h + bias[row]`` with per-row integer constants, so the
thresholds move into ``h`` space once, here, and the hardware never handles a sign until a raw output.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from .datatypes import DataType
from .errors import HwnetError
from .ir import Conv2d, Dense, MaxPool2d, MultiThreshold, window_out_shape

__all__ = ["choose_folding", "set_hardware_choices", "plan", "DesignPlan", "DenseStage", "ThresholdStage", "WindowStage",
           "PoolStage", "WindowGeometry", "feed_lanes", "simd_options", "pixel_options", "pool_lanes", "window_lanes", "window_positions", "window_geometry", "conv_cycles", "Arithmetic", "pe_kind",
           "PE_KINDS", "pack_lanes", "unpack_lanes", "DEFAULT_TARGET_CYCLES",
           "PARALLEL_MAX_THRESHOLDS", "SPRAM_BLOCKS", "SPRAM_BLOCK_WIDTH", "SPRAM_WIDTH", "SPRAM_DEPTH"]

DEFAULT_TARGET_CYCLES = 128

#: The iCE40UP's single-port RAMs as hwnet uses them: four SB_SPRAM256KA (16K x 16) side by side, one pool of
#: ``SPRAM_DEPTH`` words of ``SPRAM_WIDTH`` bits (:mod:`hwnet.gateware.spram`).
SPRAM_BLOCKS = 4
SPRAM_BLOCK_WIDTH = 16
SPRAM_WIDTH = SPRAM_BLOCKS * SPRAM_BLOCK_WIDTH
SPRAM_DEPTH = 16384

#: Processing element kinds, by weight type (and input type): see :func:`pe_kind`.
PE_KINDS = ("xnor", "addsub", "ternary", "shift", "lut", "bitplane", "bitserial")

#: Output thresholds per channel up to which a matrix-vector unit compares them all at once; above, it runs a
#: pipelined binary search over a threshold ROM.
PARALLEL_MAX_THRESHOLDS = 3


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def simd_options(layer):
    """The ``simd`` a dense or convolution layer may take, ascending: any of 1 .. ``in_features`` for a dense
    layer (its input padded to whole beats where ``simd`` does not divide it), the divisors of the patch for a
    convolution (whose sliding window sends whole patches)."""
    if isinstance(layer, Conv2d):
        return _divisors(layer.patch_size)
    return list(range(1, layer.in_features + 1))


def dense_cycles(layer, pe, simd):
    """Cycles per vector of a dense layer at folding (``pe``, ``simd``): ``(MH / pe) * ceil(MW / simd) *
    planes``."""
    return (layer.out_features // pe) * -(-layer.in_features // simd) * layer.planes


def set_hardware_choices(network, *, weights_in_logic=(), bit_serial=(), spram=()):
    """A copy of ``network`` with the named dense layers' weights in logic (fully unrolled), the named
    ``uint<k>``/``int<k>`` layers bit-serial and the named layers' weights streamed from SPRAM. ``spram`` is a
    sequence of names (every PE streams) or a mapping of names to the number of PEs that stream
    (:attr:`hwnet.ir.Dense.spram_pes`; None: every PE). Unknown names are refused with the list of dense
    layers."""
    dense = {layer.name: layer for layer in network.dense_layers()}
    spram = dict(spram) if isinstance(spram, Mapping) else dict.fromkeys(spram)
    both = sorted(set(weights_in_logic) & set(spram))
    if both:
        raise HwnetError(f"layer {both[0]!r}: its weights cannot be both in logic and in SPRAM; choose one")
    for names in (weights_in_logic, bit_serial, spram):
        unknown = [n for n in names if n not in dense]
        if unknown:
            raise HwnetError(f"no dense layer named {', '.join(map(repr, unknown))}; the dense layers are "
                             f"{', '.join(dense) or 'none'}")
    layers = []
    for layer in network.layers:
        if isinstance(layer, Dense) and layer.name in (*weights_in_logic, *bit_serial, *spram):
            changes = {"bit_serial": layer.name in bit_serial or layer.bit_serial}
            if layer.name in weights_in_logic:
                changes.update(pe=layer.out_features, simd=layer.in_features, weight_storage="logic")
            if layer.name in spram:
                changes.update(weight_storage="spram", spram_pes=spram[layer.name])
            layer = layer.replace(**changes)
        layers.append(layer)
    return network.replace_layers(layers)


def choose_folding(network, target_cycles=DEFAULT_TARGET_CYCLES):
    """Fill in PE/SIMD of dense and convolution layers that have none: the fewest lanes (``pe * simd``) that
    reach ``target_cycles`` per inference (a dense layer's input padded to whole beats if that takes fewer:
    :func:`simd_options`), at equal lanes no padding, then wide SIMD (one input word feeds every PE). A layer that
    cannot reach the target gets the fewest lanes that reach its own best (a convolution is also bound by its
    sliding window, which sends one beat of at most ``C`` elements per cycle: :func:`conv_cycles`). Layers with
    weights in logic are unrolled fully; a layer with only some PEs streaming from SPRAM (``spram_pes``) gets
    at least that many PEs. Layers with a folding keep it. Returns a new network."""
    if isinstance(target_cycles, bool) or not isinstance(target_cycles, (int, np.integer)) or target_cycles < 1:
        raise HwnetError(f"target cycles must be a positive integer, got {target_cycles!r}")
    layers = []
    for layer in network.layers:
        if isinstance(layer, Dense) and layer.weight_storage == "logic":
            layer = layer.with_folding(layer.out_features, layer.in_features)
        elif isinstance(layer, (Dense, Conv2d)) and (layer.pe is None or layer.simd is None):
            dense = layer.matmul if isinstance(layer, Conv2d) else layer
            fewest = (layer.spram_pes or 1) if isinstance(layer, Dense) else 1
            pes = [layer.pe] if layer.pe else [d for d in _divisors(dense.out_features) if d >= fewest]
            simds = [layer.simd] if layer.simd else simd_options(layer)
            options = []
            for pe in pes:
                for simd in simds:
                    if isinstance(layer, Conv2d):
                        cycles = conv_cycles(layer, pe, simd)
                    else:
                        cycles = dense_cycles(layer, pe, simd)
                    options.append((cycles, pe, simd))
            target = max(target_cycles, min(o[0] for o in options))
            _, pe, simd = min((o for o in options if o[0] <= target),
                              key=lambda o: (o[1] * o[2], dense.in_features % o[2] != 0, o[1]))
            layer = layer.with_folding(pe, simd)
        layers.append(layer)
    return network.replace_layers(layers)


def window_positions(kernel):
    """Kernel positions a sliding-window beat may carry (besides 1): the divisors of the kernel width ``KW``, and
    the multiples of ``KW`` that are whole kernel rows (``r * KW`` with ``r | KH``), ascending."""
    kh, kw = kernel
    return sorted(set(_divisors(kw)) | {kw * r for r in _divisors(kh)})


def window_lanes(layer, pe=None, simd=None):
    """``(simd, positions)`` of the sliding window feeding the :class:`~hwnet.ir.Conv2d` ``layer`` at folding
    (``pe``, ``simd``; default the layer's): the fewest elements per output beat that keep up with the
    matrix-vector unit (a patch in no more beats than the unit's cycles per patch). First ``simd`` channels of one
    kernel position (``simd`` a divisor of ``C``); when whole pixels are not enough, whole pixels of several kernel
    positions per beat (:func:`window_positions`: a few-channel layer, e.g. the image input, then sends up to a
    whole patch per cycle)."""
    pe, simd = pe or layer.pe, simd or layer.simd
    per_patch = (layer.out_channels // pe) * (layer.patch_size // simd) * layer.matmul.planes
    channels = layer.in_channels
    options = [(d, 1) for d in _divisors(channels)]
    options += [(channels, m) for m in window_positions((layer.kernel_h, layer.kernel_w))[1:]]
    return next((o for o in options if layer.patch_size // (o[0] * o[1]) <= per_patch), options[-1])


def window_geometry(layer, pe=None, simd=None, pixels=None):
    """The :class:`WindowGeometry` of the sliding window feeding ``layer`` at folding (``pe``, ``simd``,
    ``pixels``; default the layer's). With ``pixels`` > 1 the window sends that many whole patches per beat."""
    pixels = pixels or layer.pixels
    if pixels > 1:
        lanes, positions = layer.in_channels, layer.kernel_h * layer.kernel_w
    else:
        lanes, positions = window_lanes(layer, pe, simd)
    return WindowGeometry(in_shape=layer.in_shape, kernel=(layer.kernel_h, layer.kernel_w), stride=layer.stride,
                          padding=layer.padding, simd=lanes, positions=positions, pixels=pixels)


def pixel_options(layer):
    """The ``pixels`` (output pixels per cycle) a :class:`~hwnet.ir.Conv2d` can take, ascending: the common
    divisors of its input and output widths (more than 1 only at ``pe = OC``, ``simd = patch``)."""
    return _divisors(math.gcd(layer.in_shape[1], layer.out_shape[1]))


def conv_cycles(layer, pe, simd, pixels=1):
    """Cycles per image of a :class:`~hwnet.ir.Conv2d` at folding (``pe``, ``simd``, ``pixels``): the slower of
    its matrix-vector unit (``OH * OW * nf * sf * planes / pixels``) and its sliding window
    (:attr:`WindowGeometry.cycles`)."""
    oh, ow, _ = layer.out_shape
    mvau = oh * ow * (layer.out_channels // pe) * (layer.patch_size // simd) * layer.matmul.planes // pixels
    return max(mvau, window_geometry(layer, pe, simd, pixels).cycles)


def pe_kind(layer):
    """The processing element a dense layer needs, from its element types (raises :class:`HwnetError` for a
    combination with none):

    ``"lut"``       a products table (any weight type x any input type but ``pot<k>``): look up and add.
    ``"xnor"``      bipolar weights x bipolar inputs: XNOR-popcount.
    ``"addsub"``    bipolar weights x k-bit inputs: add or subtract.
    ``"ternary"``   ternary weights: add, subtract or skip.
    ``"shift"``     ``pot<k>`` weights: shift, then add or subtract (or skip for 0).
    ``"bitplane"``  ``uint<k>``/``int<k>`` weights: AND of every weight bit with every input bit, all planes
                    summed at once with their shifts.
    ``"bitserial"`` the same, one weight bit plane per cycle (``bit_serial`` layers).
    """
    w, x = layer.weight_type, layer.in_type
    if x is None or x.kind == "pot":
        raise HwnetError(f"layer {layer.name!r}: {x} inputs have no processing element; a layer's input must be "
                         f"bipolar, ternary, uint<k> or int<k>")
    if layer.products is not None:
        return "lut"
    if w.kind == "bipolar":
        return "xnor" if x.kind == "bipolar" else "addsub"
    if w.kind == "ternary":
        return "ternary"
    if w.kind == "pot":
        return "shift"
    return "bitserial" if layer.bit_serial else "bitplane"


@dataclass(frozen=True)
class Arithmetic:
    """The hardware number space of one processing element kind (see the module docstring): the numpy twin of
    what a processing element adds per lane.

    Parameters
    ----------
    kind : str
        One of :data:`PE_KINDS`.
    weight_type, in_type : DataType
    products : tuple of tuple of int, or None
        The layer's products table (``"lut"`` only), indexed by value ranks.
    """
    kind: str
    weight_type: DataType
    in_type: DataType
    products: tuple = None

    def __post_init__(self):
        if self.kind not in PE_KINDS:
            raise HwnetError(f"unknown processing element kind {self.kind!r}; one of {', '.join(PE_KINDS)}")
        if (self.kind == "lut") != (self.products is not None):
            raise HwnetError("a products table goes with the 'lut' kind, and only with it")

    @property
    def input_mask(self):
        """``M = 2**bits - 1`` of the input type: the complement of a rank ``r`` is ``M - r``."""
        return (1 << self.in_type.bits) - 1

    @property
    def step(self):
        """Input value per rank: ``x = step * r + min`` (2 for bipolar, else 1; 1 for a products table)."""
        return 2 if self.in_type.kind == "bipolar" and self.kind != "lut" else 1

    def _table(self):
        return np.array(self.products, dtype=np.int64)

    def lane_offset(self, w):
        """``offset(w)``, per weight value (int64 array like ``w``)."""
        w = np.asarray(w, dtype=np.int64)
        if self.kind == "lut":
            return np.full(w.shape, -int(self._table().min()), dtype=np.int64)
        if self.kind in ("bitplane", "bitserial"):
            if not self.weight_type.signed:
                return np.zeros(w.shape, dtype=np.int64)
            return (w < 0) * (self.input_mask << (self.weight_type.bits - 1))
        return (w < 0) * self.input_mask * np.abs(w)

    def terms(self, w, x):
        """Per-lane hardware terms ``term(w, x) >= 0`` for weight values ``w`` and input values ``x``
        (broadcast)."""
        w, x = np.asarray(w, dtype=np.int64), np.asarray(x, dtype=np.int64)
        r = self.in_type.ranks(x)
        if self.kind == "lut":
            t = self._table()
            return t[self.weight_type.ranks(w), r] - t.min()
        return w * r + self.lane_offset(w)

    def plane_terms(self, w, x, plane):
        """Bit-serial terms of weight bit ``plane``: ``h = sum over planes of 2**plane * plane_terms``."""
        if self.kind != "bitserial":
            raise HwnetError("plane terms belong to bit-serial processing elements")
        w, x = np.asarray(w, dtype=np.int64), np.asarray(x, dtype=np.int64)
        r = self.in_type.ranks(x)
        bit = (self.weight_type.encode(w) >> plane) & 1
        if self.weight_type.signed and plane == self.weight_type.bits - 1:
            return bit * (self.input_mask - r)
        return bit * r

    def term_range(self, w):
        """(lowest, highest) term of each weight value in ``w`` over every legal input."""
        w = np.asarray(w, dtype=np.int64)
        t = self.terms(w[..., None], self.in_type.values())
        return t.min(axis=-1), t.max(axis=-1)

    @property
    def max_term(self):
        """The largest term over all legal weights and inputs: sets a processing element's output width."""
        return int(self.term_range(self.weight_type.values())[1].max())

    def zero_pair(self):
        """``(w, x)``: a legal weight value and input value whose term is zero (every plane's, bit-serial), the
        smallest input value first; the lanes that pad a vector up to a whole number of beats carry them, so
        padding changes no row's ``h``. None if the kind has no such pair (then ``simd`` must divide the
        inputs)."""
        ws, xs = self.weight_type.values(), self.in_type.values()
        for x in xs:
            for w in ws:
                zero = int(self.terms(w, x)) == 0
                if zero and self.kind == "bitserial":
                    zero = all(int(self.plane_terms(w, x, b)) == 0 for b in range(self.weight_type.bits))
                if zero:
                    return int(w), int(x)
        return None

    def row_bias(self, weights):
        """``bias`` per row of ``weights`` (rows, n): ``acc = step * h + bias``."""
        w = np.asarray(weights, dtype=np.int64)
        off = self.lane_offset(w).sum(axis=-1)
        if self.kind == "lut":
            return -off
        return self.in_type.min * w.sum(axis=-1) - self.step * off


def pack_lanes(values, dtype, lanes):
    """Values (..., lanes * k) -> integer words (..., k): ``lanes`` elements of ``dtype`` per word, lane ``j`` at
    bits ``[j * bits, (j + 1) * bits)``. Returns Python ints (object array) so any width works."""
    v = np.asarray(values)
    codes = dtype.encode(v)
    shape = codes.shape[:-1] + (codes.shape[-1] // lanes, lanes)
    codes = codes.reshape(shape)
    words = np.zeros(shape[:-1], dtype=object)
    for j in range(lanes):
        words = words + (codes[..., j].astype(object) << (j * dtype.bits))
    return words


def unpack_lanes(words, dtype, lanes):
    """Inverse of :func:`pack_lanes`: integer words (..., k) -> values (..., k * lanes), int64."""
    w = np.asarray(words, dtype=object)
    mask = (1 << dtype.bits) - 1
    out = np.empty(w.shape + (lanes,), dtype=np.int64)
    for j in range(lanes):
        out[..., j] = ((w >> (j * dtype.bits)) & mask).astype(np.int64)
    return dtype.decode(out.reshape(w.shape[:-1] + (w.shape[-1] * lanes,)))


@dataclass(frozen=True)
class ThresholdStage:
    """Elementwise multi-threshold on a stream of ``lanes`` elements per beat (e.g. input binarization).

    ``thresholds`` are the per-tensor thresholds (L,), compared ``x >= t`` in the input type's value domain.
    """
    name: str
    size: int
    lanes: int
    in_type: DataType
    out_type: DataType
    thresholds: tuple

    @property
    def beats(self):
        return self.size // self.lanes

    in_size = out_size = property(lambda self: self.size)

    @property
    def lanes_in(self):
        return self.lanes

    @property
    def lanes_out(self):
        return self.lanes

    @property
    def cycles(self):
        return self.beats

    @property
    def memory_bits(self):
        return 0


@dataclass(frozen=True)
class DenseStage:
    """A folded matrix-vector-threshold unit with one kind of processing element.

    Members
    -------
    arithmetic : :class:`Arithmetic`
        The processing element kind and its number space.
    planes : int
        Weight bit planes evaluated one per cycle (bit-serial), else 1.
    weight_words : tuple of tuple of int
        Per PE, the weight memory image (depth ``nf * sf * planes``), ``simd`` lanes of ``lane_bits`` per word.
    weights_in_logic : bool
        The weights are constants in the logic (a fully unrolled layer), not a ROM.
    acc_bits : int
        Width of the unsigned hardware accumulator ``h`` and of the thresholds.
    biases : tuple of tuple of int
        Per PE, per neuron fold: ``acc = arithmetic.step * h + bias`` for that row.
    thresholds : tuple of tuple of tuple of int, or None
        Per PE, per neuron fold, the ascending thresholds in ``h`` space (``h >= t``); None for a raw layer.
    threshold_search : str
        ``"parallel"`` (one comparator per threshold) or ``"binary"`` (a pipelined binary search).
    out_type : DataType
        Output element type: the thresholded type, or ``acc_type`` for a raw layer.
    spram_pes : int
        PEs ``0 .. spram_pes - 1`` take their weights from the SPRAM pool (:attr:`streamed`), the others from a
        ROM each (a layer split by PE); 0: no SPRAM, a ROM per PE (or logic).
    spram_base : int or None
        The first word of the stage's region of the SPRAM pool (set by :func:`plan`): :attr:`depth` words of
        :attr:`word_bits`, the streamed PEs' words of one address side by side, PE ``p`` at bits
        ``[p * simd * lane_bits, (p + 1) * simd * lane_bits)``; None for a stage without streamed PEs.
    vectors : int
        Input vectors per inference: 1 for a dense layer, ``OH * OW`` patches for a convolution (whose output
        pixels then leave one after another, ``nf`` beats of ``pe`` channels each: NHWC).
    pixels : int
        Input vectors per beat, side by side (a convolution's ``pixels``: its output pixels per cycle); then
        ``sf = 1``, ``nf = 1`` and every PE runs once per vector of the beat on the same weight word; the output
        beat carries the vectors' outputs one vector after another (NHWC). ``vectors`` counts beats.
    pad_code : int
        Wire code of the input that pads a vector's last beat (:attr:`pad_lanes` lanes, see the module
        documentation; its weights in :attr:`weight_words` are the pad weight); 0 when ``simd`` divides
        ``in_features``.
    """
    name: str
    in_features: int
    out_features: int
    pe: int
    simd: int
    in_type: DataType
    weight_type: DataType
    out_type: DataType
    acc_type: DataType
    arithmetic: Arithmetic
    planes: int
    weight_words: tuple
    weights_in_logic: bool
    acc_bits: int
    biases: tuple
    thresholds: tuple
    threshold_search: str
    raw: bool
    vectors: int = 1
    spram_pes: int = 0
    spram_base: int = None
    pad_code: int = 0
    pixels: int = 1

    @property
    def kind(self):
        return self.arithmetic.kind

    @property
    def nf(self):
        return self.out_features // self.pe

    @property
    def sf(self):
        """Input beats per vector: ``ceil(in_features / simd)``."""
        return -(-self.in_features // self.simd)

    @property
    def pad_lanes(self):
        """Lanes of a vector's last beat that pad it: ``sf * simd - in_features``."""
        return self.sf * self.simd - self.in_features

    @property
    def depth(self):
        """Words per PE weight memory: ``nf * sf * planes``."""
        return self.nf * self.sf * self.planes

    @property
    def lane_bits(self):
        """Bits per weight lane in a memory word: one plane bit when bit-serial, else the weight code."""
        return 1 if self.planes > 1 else self.weight_type.bits

    @property
    def cycles(self):
        """Cycles per inference: ``vectors * nf * sf * planes``."""
        return self.vectors * self.nf * self.sf * self.planes

    @property
    def in_size(self):
        return self.vectors * self.pixels * self.in_features

    @property
    def out_size(self):
        return self.vectors * self.pixels * self.out_features

    @property
    def levels(self):
        """Thresholds per channel (0 for a raw layer)."""
        return 0 if self.raw else self.out_type.num_values - 1

    @property
    def weight_bits(self):
        return self.in_features * self.out_features * self.weight_type.bits

    @property
    def threshold_bits(self):
        return self.out_features * self.levels * self.acc_bits

    @property
    def streamed(self):
        """Some PEs' weights (:attr:`spram_pes`) come from the SPRAM pool."""
        return self.spram_pes > 0

    @property
    def word_bits(self):
        """Bits of the streamed PEs' weights for one cycle, one SPRAM word: ``spram_pes * simd * lane_bits``."""
        return self.spram_pes * self.simd * self.lane_bits

    @property
    def spram_bits(self):
        """Weight bits streamed from SPRAM per vector: ``depth * word_bits``."""
        return self.depth * self.word_bits

    @property
    def rom_weight_bits(self):
        """Weight bits in the ROMs of the PEs that do not stream (none for weights in logic)."""
        return 0 if self.weights_in_logic else (self.pe - self.spram_pes) * self.depth * self.simd * self.lane_bits

    def spram_words(self):
        """The layer's SPRAM image: per address, the streamed PEs' weight words side by side."""
        width = self.simd * self.lane_bits
        return [sum(words[a] << (p * width) for p, words in enumerate(self.weight_words[:self.spram_pes]))
                for a in range(self.depth)]

    @property
    def memory_bits(self):
        """Bits of ROM the stage needs: the weights of the PEs that do not stream from SPRAM, and the thresholds;
        none for a layer unrolled into logic (one word each: constants)."""
        if self.weights_in_logic:
            return 0
        return self.rom_weight_bits + self.threshold_bits

    @property
    def lanes_in(self):
        return self.simd * self.pixels

    @property
    def lanes_out(self):
        return self.pe * self.pixels


@dataclass(frozen=True)
class WindowGeometry:
    """Shapes and timing of a sliding-window unit (:class:`hwnet.gateware.window.SlidingWindow`, whose module
    documentation explains the line buffer and derives the timing): pure arithmetic, shared by the unit and the
    compiler's cycle model.

    ``rows`` None means the default ``KH + sh`` line buffer rows. ``pixels`` > 1: each input beat carries that
    many whole pixels and each output beat that many whole patches (``positions = KH * KW``, ``simd = C``).
    """
    in_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    simd: int
    rows: int = None
    positions: int = 1
    pixels: int = 1

    def __post_init__(self):
        if self.rows is None:
            object.__setattr__(self, "rows", self.kernel[0] + self.stride[0])

    @property
    def out_shape(self):
        """``(OH, OW, C)``: output pixels (patches) per image, and the channels."""
        return window_out_shape(self.in_shape, self.kernel, self.stride, self.padding)

    @property
    def patch_size(self):
        return self.kernel[0] * self.kernel[1] * self.in_shape[2]

    @property
    def lanes_in(self):
        """Elements per input beat: ``simd`` channels of ``pixels`` pixels."""
        return self.simd * self.pixels

    @property
    def in_beats(self):
        """Input beats per image: ``H * W * C / (simd * pixels)``."""
        h, w, c = self.in_shape
        return h * w * c // self.lanes_in

    @property
    def lanes_out(self):
        """Elements per output beat: ``simd`` channels of each of ``positions`` kernel positions, of each of
        ``pixels`` output pixels."""
        return self.simd * self.positions * self.pixels

    @property
    def out_beats(self):
        """Output beats per image: ``OH * OW * KH * KW * C / lanes_out``."""
        oh, ow, _ = self.out_shape
        return oh * ow * self.patch_size // self.lanes_out

    @property
    def depth(self):
        """Words of the line buffer (each ``lanes_in`` elements): ``rows * W * C / lanes_in``."""
        _, w, c = self.in_shape
        return self.rows * w * c // self.lanes_in

    def row_span(self, oy):
        """``(low, need)``: output row ``oy`` reads the input rows ``low .. need - 1``."""
        h, top, kh, sh = self.in_shape[0], self.padding[0], self.kernel[0], self.stride[0]
        return max(0, min(oy * sh - top, h)), max(1, min(oy * sh + kh - top, h))

    @property
    def min_rows(self):
        """The fewest line buffer rows free of deadlock: the most input rows one output row reads (at least 1)."""
        spans = (self.row_span(oy) for oy in range(self.out_shape[0]))
        return max(1, max(need - low for low, need in spans))

    @property
    def image_gap(self):
        """Cycles the output waits between two images in steady state with no stalls, for an output-bound layer
        (``sh * W <= OW * KH * KW``, ``rows >= KH + sh``): the input beats of the next image's first output row
        that do not fit into the ring while the current image's last output row is read."""
        h, w, c = self.in_shape
        low_last, _ = self.row_span(self.out_shape[0] - 1)
        _, need_first = self.row_span(0)
        return max(0, h + need_first - (low_last + self.rows)) * w * c // self.lanes_in

    @property
    def cycles(self):
        """Cycles per image in steady state with no stalls: ``max(out_beats + image_gap, in_beats)``."""
        return max(self.out_beats + self.image_gap, self.in_beats)


@dataclass(frozen=True)
class WindowStage:
    """A sliding-window (im2col) unit in front of a convolution's matrix-vector unit.

    ``pad_code`` is the wire code of the padding value; elements are ``dtype`` in and out, ``geometry.simd`` per
    beat.
    """
    name: str
    geometry: WindowGeometry
    pad_code: int
    dtype: DataType

    in_type = out_type = property(lambda self: self.dtype)
    lanes_in = property(lambda self: self.geometry.lanes_in)
    lanes_out = property(lambda self: self.geometry.lanes_out)
    cycles = property(lambda self: self.geometry.cycles)

    @property
    def in_size(self):
        return int(np.prod(self.geometry.in_shape))

    @property
    def out_size(self):
        """Elements per image out: every patch, ``OH * OW * KH * KW * C``."""
        oh, ow, _ = self.geometry.out_shape
        return oh * ow * self.geometry.patch_size

    @property
    def memory_bits(self):
        """The line buffer: ``rows * W * C * bits`` (its copies for several read ports not counted)."""
        return self.geometry.depth * self.geometry.lanes_in * self.dtype.bits

    def unit_arguments(self):
        """Keyword arguments of its :class:`~hwnet.gateware.window.SlidingWindow`."""
        g = self.geometry
        return dict(in_shape=g.in_shape, kernel=g.kernel, stride=g.stride, padding=g.padding, pad_code=self.pad_code,
                    pixels=g.pixels,
                    simd=g.simd, bits=self.dtype.bits, rows=g.rows, positions=g.positions)


@dataclass(frozen=True)
class PoolStage:
    """A streaming max-pool over NHWC images, ``simd`` elements per beat (one beat per cycle); with ``pixels`` >
    1 (``simd = C``) each input beat carries that many whole pixels of one window, max-reduced first."""
    name: str
    in_shape: tuple
    kernel: tuple
    stride: tuple
    simd: int
    dtype: DataType
    pixels: int = 1

    in_type = out_type = property(lambda self: self.dtype)
    lanes_out = property(lambda self: self.simd)
    lanes_in = property(lambda self: self.simd * self.pixels)

    @property
    def out_shape(self):
        return window_out_shape(self.in_shape, self.kernel, self.stride)

    @property
    def in_size(self):
        return int(np.prod(self.in_shape))

    @property
    def out_size(self):
        return int(np.prod(self.out_shape))

    @property
    def cycles(self):
        """One input beat per cycle: ``H * W * C / (simd * pixels)``."""
        return self.in_size // self.lanes_in

    @property
    def memory_bits(self):
        """The row accumulator: ``OW * C * bits``."""
        return self.out_shape[1] * self.in_shape[2] * self.dtype.bits

    def unit_arguments(self):
        """Keyword arguments of its :class:`~hwnet.gateware.pool.MaxPool`."""
        return dict(in_shape=self.in_shape, kernel=self.kernel, stride=self.stride, simd=self.simd, dtype=self.dtype,
                    pixels=self.pixels)


@dataclass(frozen=True)
class DesignPlan:
    """The whole design: stages in stream order and the network they implement."""
    name: str
    input_type: DataType
    input_size: int
    stages: tuple
    network: object = field(repr=False, compare=False)

    @property
    def input_lanes(self):
        """Elements per beat of the network's input: the first stage's lanes, or for a dense stage padded to
        whole beats the :func:`feed_lanes` of its input (a width converter then pads it)."""
        first = self.stages[0]
        if isinstance(first, DenseStage):
            return feed_lanes(first.in_features, first.simd, first.in_type.bits, first.in_type.bits)
        return first.lanes_in

    @property
    def input_beats(self):
        return self.input_size // self.input_lanes

    @property
    def output_type(self):
        return self.stages[-1].out_type

    @property
    def output_size(self):
        return self.stages[-1].out_size

    @property
    def output_lanes(self):
        return self.stages[-1].lanes_out

    @property
    def output_beats(self):
        return self.output_size // self.output_lanes

    @property
    def cycles_per_inference(self):
        """Initiation interval in cycles: the slowest stage bounds throughput, and so does the SPRAM pool, which
        reads one word per cycle for all the layers streaming from it (each reads its words once per
        inference)."""
        return max(max(s.cycles for s in self.stages), self.spram_words)

    @property
    def memory_bits(self):
        return sum(s.memory_bits for s in self.stages)

    @property
    def streamed_stages(self):
        """The dense stages whose weights stream from the SPRAM pool, in address order."""
        return tuple(s for s in self.stages if isinstance(s, DenseStage) and s.streamed)

    @property
    def spram_words(self):
        """Words of the SPRAM pool in use (0: the design has no SPRAM)."""
        return sum(s.depth for s in self.streamed_stages)

    def spram_image(self):
        """The words to load into the SPRAM pool at start-up, from address 0 (``SPRAM_WIDTH``-bit integers)."""
        return [w for s in self.streamed_stages for w in s.spram_words()]

    def summary(self):
        """A JSON-serializable design summary."""
        stages = []
        for s in self.stages:
            if isinstance(s, DenseStage):
                stages.append({"name": s.name, "kind": "dense", "pe_kind": s.kind, "in": s.in_features,
                               "out": s.out_features, "pe": s.pe, "simd": s.simd, "nf": s.nf, "sf": s.sf,
                               "pixels": s.pixels, "pad_lanes": s.pad_lanes,
                               "planes": s.planes, "vectors": s.vectors, "cycles": s.cycles,
                               "in_type": s.in_type.name, "weight_type": s.weight_type.name,
                               "out_type": s.out_type.name, "acc_type": s.acc_type.name,
                               "acc_bits": s.acc_bits, "threshold_search": s.threshold_search if not s.raw else None,
                               "weight_bits": s.weight_bits, "threshold_bits": s.threshold_bits,
                               "memory_bits": s.memory_bits, "spram_pes": s.spram_pes,
                               "weights": _weights_text(s)})
            elif isinstance(s, WindowStage):
                g = s.geometry
                stages.append({"name": s.name, "kind": "window", "in_shape": list(g.in_shape),
                               "out_shape": list(g.out_shape), "kernel": list(g.kernel), "stride": list(g.stride),
                               "padding": list(g.padding), "pad_code": s.pad_code, "simd": g.simd,
                               "positions": g.positions, "pixels": g.pixels, "lanes_out": g.lanes_out,
                               "rows": g.rows,
                               "type": s.dtype.name, "cycles": s.cycles, "line_buffer_bits": s.memory_bits})
            elif isinstance(s, PoolStage):
                stages.append({"name": s.name, "kind": "maxpool", "in_shape": list(s.in_shape),
                               "out_shape": list(s.out_shape), "kernel": list(s.kernel), "stride": list(s.stride),
                               "simd": s.simd, "pixels": s.pixels, "type": s.dtype.name, "cycles": s.cycles})
            else:
                stages.append({"name": s.name, "kind": "threshold", "size": s.size, "lanes": s.lanes,
                               "in_type": s.in_type.name, "out_type": s.out_type.name,
                               "thresholds": list(s.thresholds), "cycles": s.cycles})
        return {"name": self.name, "input": {"type": self.input_type.name, "size": self.input_size,
                                             "lanes": self.input_lanes, "beats": self.input_beats},
                "output": {"type": self.output_type.name, "size": self.output_size,
                           "lanes": self.output_lanes, "beats": self.output_beats},
                "cycles_per_inference": self.cycles_per_inference,
                "memory_bits": self.memory_bits, "spram_words": self.spram_words, "stages": stages}


def _weights_text(stage):
    """Where a dense stage's weights live, for the summary: logic, SPRAM words, ROMs, or SPRAM and ROMs."""
    s = stage
    if s.weights_in_logic:
        return "logic"
    roms = f"{s.pe - s.spram_pes} x {s.depth} words x {s.simd * s.lane_bits} bits"
    if not s.streamed:
        return roms
    spram = f"SPRAM words {s.spram_base}..{s.spram_base + s.depth - 1} x {s.word_bits} bits"
    if s.spram_pes == s.pe:
        return spram
    return f"{spram} (PEs 0..{s.spram_pes - 1}), ROMs {roms} (PEs {s.spram_pes}..{s.pe - 1})"


def _per_pe(values, pe, nf):
    """Row-indexed values (MH, ...) -> per PE, per neuron fold (row ``f * pe + p``), as nested tuples."""
    return tuple(tuple(_as_tuple(values[f * pe + p]) for f in range(nf)) for p in range(pe))


def _as_tuple(v):
    return tuple(int(e) for e in v) if np.ndim(v) else int(v)


def _weight_images(layer, planes, pad_weight=None):
    """Per PE weight memory images: word ``(f * sf + s) * planes + b`` (see the module docstring), the columns
    past ``in_features`` holding ``pad_weight``."""
    pe, simd = layer.pe, layer.simd
    nf, sf = layer.out_features // pe, layer.sf
    weights = layer.weights
    if sf * simd > layer.in_features:
        pad = np.full((layer.out_features, sf * simd - layer.in_features), pad_weight, dtype=np.int64)
        weights = np.concatenate([weights, pad], axis=1)
    if planes == 1:
        words = pack_lanes(weights, layer.weight_type, simd)  # (MH, SF)
    else:
        codes = layer.weight_type.encode(weights)
        plane_bit = DataType("uint", 1)
        words = np.stack([pack_lanes((codes >> b) & 1, plane_bit, simd) for b in range(planes)], axis=-1)
    return tuple(tuple(int(w) for w in words[p::pe].reshape(nf * sf * planes)) for p in range(pe))


def _dense_stage(layer, threshold_search=None):
    kind = pe_kind(layer)
    products = None if layer.products is None else tuple(tuple(int(v) for v in row) for row in layer.products)
    arith = Arithmetic(kind, layer.weight_type, layer.in_type, products)
    pe, nf = layer.pe, layer.out_features // layer.pe
    hi = arith.term_range(layer.weights)[1]
    h_max = int(hi.sum(axis=1).max())
    bias = arith.row_bias(layer.weights)
    raw = layer.thresholds is None
    thresholds = None
    levels = 0
    if not raw:
        levels = layer.thresholds.shape[1]
        # acc >= T  <=>  step * h + bias >= T  <=>  h >= ceil((T - bias) / step); clipped to [0, h_max + 1]
        # (0: always passes, h_max + 1: never), which changes no comparison since 0 <= h <= h_max.
        step = arith.step
        t = -((bias[:, None] - layer.thresholds) // step)
        thresholds = _per_pe(np.clip(t, 0, h_max + 1), pe, nf)
    if threshold_search is None:
        threshold_search = "parallel" if levels <= PARALLEL_MAX_THRESHOLDS else "binary"
    pad_weight, pad_code = None, 0
    if layer.in_features % layer.simd:
        pair = arith.zero_pair()
        if pair is None:
            raise HwnetError(f"layer {layer.name!r}: simd={layer.simd} does not divide in_features="
                             f"{layer.in_features} and its {kind} lanes have no weight and input whose product "
                             f"term is zero to pad with; choose a simd that divides {layer.in_features}")
        pad_weight, pad_code = pair[0], int(layer.in_type.encode([pair[1]])[0])
    return DenseStage(name=layer.name, in_features=layer.in_features, out_features=layer.out_features, pe=pe,
                      simd=layer.simd, in_type=layer.in_type, weight_type=layer.weight_type,
                      out_type=layer.out_type, acc_type=layer.acc_type, arithmetic=arith, planes=layer.planes,
                      weight_words=_weight_images(layer, layer.planes, pad_weight), pad_code=pad_code,
                      weights_in_logic=layer.weight_storage == "logic", acc_bits=max(1, (h_max + 1).bit_length()),
                      biases=_per_pe(bias, pe, nf), thresholds=thresholds, threshold_search=threshold_search,
                      raw=raw, spram_pes=layer.streamed_pes)


def _threshold_stage(layer, lanes):
    what = f"layer {layer.name!r}"
    if layer.thresholds.shape[0] != 1:
        raise HwnetError(f"{what}: per-element thresholds have no hardware yet; use one row of thresholds "
                         f"for the whole tensor")
    if layer.in_type.kind not in ("uint", "int"):
        raise HwnetError(f"{what}: a threshold stage takes uint<k>/int<k> inputs, got {layer.in_type}")
    if layer.size % lanes:
        raise HwnetError(f"{what}: {lanes} lanes do not divide its size {layer.size}")
    lo, hi = layer.in_type.min, layer.in_type.max + 1
    t = tuple(int(v) for v in np.clip(layer.thresholds[0], lo, hi))
    return ThresholdStage(name=layer.name, size=layer.size, lanes=lanes, in_type=layer.in_type,
                          out_type=layer.out_type, thresholds=t)


def feed_lanes(size, simd, bits=1, upstream_bits=0):
    """Elements per beat of a stream that feeds a matrix-vector unit taking ``simd`` lanes of ``bits`` bits over
    a vector of ``size`` elements padded up to whole beats (``simd`` not a divisor of ``size``); ``simd`` itself
    when it divides ``size``.

    A divisor ``d`` of ``size`` (a vector is whole beats) that keeps up with the unit, which takes a vector's
    ``sf = ceil(size / simd)`` beats in consecutive cycles during its first neuron fold (``size / d <= sf``); of
    those, the cheapest by a rough count of bits: the :class:`~hwnet.gateware.width.WidthConverter` from ``d``
    to ``simd`` lanes (``a + b - 1`` slots of ``g = gcd(d, simd)`` elements, ``a = d / g``, ``b = simd / g``,
    each written from up to ``min(a, b) + 1`` places) plus ``upstream_bits`` per lane of what feeds it (the
    network's input port, a threshold stage's input and output)."""
    if size % simd == 0:
        return simd
    sf = -(-size // simd)

    def cost(d):
        g = math.gcd(d, simd)
        a, b = d // g, simd // g
        return (a + b - 1) * g * bits * (min(a, b) + 1) + d * upstream_bits

    return min((d for d in _divisors(size) if size // d <= sf), key=lambda d: (cost(d), d))


def _input_lanes(layer, lanes_out, upstream_bits=0):
    """Elements per beat a layer's first stage takes, when the stage before it gives ``lanes_out`` (None at the
    network's input); for a dense layer padded to whole beats, the lanes a stage feeding it should give
    (:func:`feed_lanes`, with ``upstream_bits`` per lane of that stage)."""
    if isinstance(layer, Dense):
        return feed_lanes(layer.in_features, layer.simd, layer.in_type.bits, upstream_bits)
    if isinstance(layer, Conv2d):
        return window_geometry(layer).lanes_in
    if isinstance(layer, MaxPool2d):
        simd, pixels = pool_lanes(layer, lanes_out)
        return simd * pixels
    return lanes_out or 1


def pool_lanes(layer, lanes_out):
    """``(simd, pixels)`` of the max-pool for the :class:`~hwnet.ir.MaxPool2d` ``layer`` behind a stage giving
    ``lanes_out`` elements per beat: when those beats hold several whole pixels, as many of them per beat
    (``simd = C``) as always fall into one window column (the most that divides the beat's pixels, the kernel
    width, the stride and the image width; a width converter splits the beats if fewer), else ``gcd(lanes_out,
    C)`` channels of one pixel."""
    c = layer.in_shape[2]
    if lanes_out and lanes_out > c and lanes_out % c == 0:
        p = math.gcd(lanes_out // c, layer.kernel[1], layer.stride[1], layer.in_shape[1])
        if p > 1:
            return c, p
    return math.gcd(lanes_out or c, c), 1


def plan(network, *, threshold_search=None):
    """Lower ``network`` (with folding set on every dense and convolution layer) into a :class:`DesignPlan`.

    A :class:`~hwnet.ir.Conv2d` becomes a :class:`WindowStage` (:func:`window_lanes` elements per beat) and a
    :class:`DenseStage` over its ``OH * OW`` patches; a :class:`~hwnet.ir.MaxPool2d` a :class:`PoolStage` taking
    the beats of the stage before it (``gcd`` of its lanes and the channels).
    ``threshold_search`` (``"parallel"`` or ``"binary"``) forces how every thresholded dense layer compares;
    None chooses per layer (parallel up to :data:`PARALLEL_MAX_THRESHOLDS` thresholds per channel).
    """
    if threshold_search not in (None, "parallel", "binary"):
        raise HwnetError(f"threshold search must be 'parallel' or 'binary', not {threshold_search!r}")
    for layer in network.layers:  # refused up front: no other stage's error may hide this one
        if isinstance(layer, MaxPool2d) and (layer.stride[0] < layer.kernel[0] or layer.stride[1] < layer.kernel[1]):
            raise HwnetError(f"layer {layer.name!r}: overlapping max-pooling (stride {layer.stride} < kernel "
                             f"{layer.kernel}) has no hardware yet; use stride >= kernel")
        if isinstance(layer, (Dense, Conv2d)) and (layer.pe is None or layer.simd is None):
            raise HwnetError(f"layer {layer.name!r}: no folding; set pe/simd in the IR or let the compiler "
                             f"choose (hwnet compile --target-cycles N)")
    stages = []
    layers = network.layers
    for i, layer in enumerate(layers):
        lanes_out = stages[-1].lanes_out if stages else None
        if isinstance(layer, Dense):
            stages.append(_dense_stage(layer, threshold_search))
        elif isinstance(layer, Conv2d):
            stages.append(WindowStage(name=f"{layer.name}_window", geometry=window_geometry(layer),
                                      pad_code=int(layer.in_type.encode([layer.pad_value])[0]), dtype=layer.in_type))
            oh, ow, _ = layer.out_shape
            stages.append(replace(_dense_stage(layer.matmul, threshold_search), vectors=oh * ow // layer.pixels,
                                  pixels=layer.pixels))
        elif isinstance(layer, MaxPool2d):
            simd, pixels = pool_lanes(layer, lanes_out)
            stages.append(PoolStage(name=layer.name, in_shape=layer.in_shape, kernel=layer.kernel,
                                    stride=layer.stride, simd=simd, dtype=layer.in_type, pixels=pixels))
        elif isinstance(layer, MultiThreshold):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(nxt, MultiThreshold):
                raise HwnetError(f"layer {layer.name!r}: two threshold layers in a row; merge them")
            lanes = 1 if nxt is None else _input_lanes(nxt, None, layer.in_type.bits + layer.out_type.bits)
            stages.append(_threshold_stage(layer, lanes))
        else:  # pragma: no cover - Network validates ops
            raise HwnetError(f"no hardware for layer {layer!r}")
    stages = _allocate_spram(stages)
    return DesignPlan(name=network.name, input_type=network.input_type, input_size=network.input_size,
                      stages=tuple(stages), network=network)


def _allocate_spram(stages):
    """Give each dense stage with PEs streaming from SPRAM (a ``weight_storage="spram"`` layer) its region of the
    SPRAM pool, in stream order; refuse a word wider than the pool or a pool too small."""
    out, base = [], 0
    for stage in stages:
        if isinstance(stage, DenseStage) and stage.streamed:
            if stage.word_bits > SPRAM_WIDTH:
                raise HwnetError(f"layer {stage.name!r}: its streamed weights take {stage.word_bits} bits per cycle "
                                 f"(streamed PEs * simd * weight bits = {stage.spram_pes} * {stage.simd} * "
                                 f"{stage.lane_bits}) but the SPRAM pool gives {SPRAM_WIDTH}; fold it further "
                                 f"(smaller pe or simd) or stream fewer of its PEs (spram_pes)")
            stage = replace(stage, spram_base=base)
            base += stage.depth
        out.append(stage)
    if base > SPRAM_DEPTH:
        raise HwnetError(f"the weights streamed from SPRAM need {base} words but the pool holds {SPRAM_DEPTH} "
                         f"({SPRAM_BLOCKS} x {SPRAM_DEPTH} x {SPRAM_BLOCK_WIDTH} bits); keep some layers in "
                         f"block RAM, or fold them wider so that each word carries more weights")
    return out
