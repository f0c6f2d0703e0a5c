"""Small pure passes from the integer IR to the hardware plan the gateware is generated from.

:func:`choose_folding` fills in missing PE/SIMD; :func:`plan` lowers a network into a :class:`DesignPlan`: a chain
of stages, each carrying exactly the integers its gateware needs (memory images, thresholds moved into popcount
space, widths) plus the numbers a design summary reports (cycles, memory bits). Nothing here imports Amaranth.

Memory layout of a folded dense layer (FINN's MVAU): row ``r`` goes to PE ``r % pe``; at neuron fold ``nf``
PE ``p`` computes row ``nf * pe + p``. PE ``p``'s weight memory has depth ``NF * SF`` (``NF = MH / pe``,
``SF = MW / simd``); the word at ``nf * SF + sf`` holds ``W[nf * pe + p, sf * simd + j]`` in lane ``j``, lane ``j``
at bits ``[j * wbits, (j + 1) * wbits)``. Stream beats carry lanes the same way: beat ``sf`` of an input vector holds
elements ``sf * simd + j``; output beat ``nf`` holds rows ``nf * pe + p``.
"""

from dataclasses import dataclass, field

import numpy as np

from .datatypes import BIPOLAR, DataType
from .errors import HwnetError
from .ir import Dense, MultiThreshold

__all__ = ["choose_folding", "plan", "DesignPlan", "DenseStage", "ThresholdStage", "popcount_thresholds",
           "pack_lanes", "unpack_lanes", "DEFAULT_TARGET_CYCLES"]

DEFAULT_TARGET_CYCLES = 128


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_folding(network, target_cycles=DEFAULT_TARGET_CYCLES):
    """Fill in PE/SIMD of dense layers that have none: the fewest lanes (``pe * simd``) that reach
    ``target_cycles`` per vector, preferring wide SIMD (one input word feeds every PE). Layers with a folding
    keep it. Returns a new network."""
    if isinstance(target_cycles, bool) or not isinstance(target_cycles, (int, np.integer)) or target_cycles < 1:
        raise HwnetError(f"target cycles must be a positive integer, got {target_cycles!r}")
    layers = []
    for layer in network.layers:
        if isinstance(layer, Dense) and (layer.pe is None or layer.simd is None):
            best = None
            pes = [layer.pe] if layer.pe else _divisors(layer.out_features)
            simds = [layer.simd] if layer.simd else _divisors(layer.in_features)
            for pe in pes:
                for simd in simds:
                    cycles = (layer.out_features // pe) * (layer.in_features // simd)
                    key = (cycles > target_cycles, pe * simd if cycles <= target_cycles else cycles, pe)
                    if best is None or key < best[0]:
                        best = (key, pe, simd)
            layer = layer.with_folding(best[1], best[2])
        layers.append(layer)
    return network.replace_layers(layers)


def popcount_thresholds(thresholds, n):
    """Move accumulator-space thresholds of a bipolar x bipolar layer into popcount space.

    With ``acc = 2p - n``: ``acc >= T  <=>  p >= ceil((T + n) / 2)``. The result is clipped to ``[0, n + 1]``
    (0: always passes, n + 1: never), which keeps every comparison unchanged since ``0 <= p <= n``.
    """
    t = np.asarray(thresholds, dtype=np.int64)
    return np.clip(-((-(t + n)) // 2), 0, n + 1)


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
    """A folded XNOR-popcount matrix-vector-threshold unit.

    Members
    -------
    weight_words : tuple of tuple of int
        Per PE, the weight memory image (depth ``nf * sf``), ``simd`` lanes of ``weight_type.bits`` per word.
    thresholds : tuple of tuple of tuple of int, or None
        Per PE, per neuron fold, the ascending popcount-space thresholds (``p >= t``); None for a raw layer.
    count_bits : int
        Width of the popcount ``p`` (0 .. in_features) and of the thresholds (0 .. in_features + 1).
    out_type : DataType
        Output element type: the thresholded type, or ``acc_type`` for a raw layer (``acc = 2p - N``).
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
    count_bits: int
    weight_words: tuple
    thresholds: tuple
    raw: bool

    @property
    def nf(self):
        return self.out_features // self.pe

    @property
    def sf(self):
        return self.in_features // self.simd

    @property
    def cycles(self):
        return self.nf * self.sf

    @property
    def weight_bits(self):
        return self.in_features * self.out_features * self.weight_type.bits

    @property
    def threshold_bits(self):
        if self.raw:
            return 0
        return self.out_features * (self.out_type.num_values - 1) * self.count_bits

    @property
    def memory_bits(self):
        return self.weight_bits + self.threshold_bits

    @property
    def lanes_in(self):
        return self.simd

    @property
    def lanes_out(self):
        return self.pe


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
        return self.stages[0].lanes_in

    @property
    def input_beats(self):
        return self.input_size // self.input_lanes

    @property
    def output_type(self):
        return self.stages[-1].out_type

    @property
    def output_size(self):
        s = self.stages[-1]
        return s.size if isinstance(s, ThresholdStage) else s.out_features

    @property
    def output_lanes(self):
        return self.stages[-1].lanes_out

    @property
    def output_beats(self):
        return self.output_size // self.output_lanes

    @property
    def cycles_per_inference(self):
        """Initiation interval in cycles: the slowest stage bounds throughput."""
        return max(s.cycles for s in self.stages)

    @property
    def memory_bits(self):
        return sum(s.memory_bits for s in self.stages)

    def summary(self):
        """A JSON-serializable design summary."""
        stages = []
        for s in self.stages:
            if isinstance(s, DenseStage):
                stages.append({"name": s.name, "kind": "dense", "in": s.in_features, "out": s.out_features,
                               "pe": s.pe, "simd": s.simd, "nf": s.nf, "sf": s.sf, "cycles": s.cycles,
                               "in_type": s.in_type.name, "weight_type": s.weight_type.name,
                               "out_type": s.out_type.name, "acc_type": s.acc_type.name,
                               "popcount_bits": s.count_bits, "weight_bits": s.weight_bits,
                               "threshold_bits": s.threshold_bits,
                               "memories": f"{s.pe} x {s.nf * s.sf} words x {s.simd * s.weight_type.bits} bits"})
            else:
                stages.append({"name": s.name, "kind": "threshold", "size": s.size, "lanes": s.lanes,
                               "in_type": s.in_type.name, "out_type": s.out_type.name,
                               "thresholds": list(s.thresholds), "cycles": s.cycles})
        return {"name": self.name, "input": {"type": self.input_type.name, "size": self.input_size,
                                             "lanes": self.input_lanes, "beats": self.input_beats},
                "output": {"type": self.output_type.name, "size": self.output_size,
                           "lanes": self.output_lanes, "beats": self.output_beats},
                "cycles_per_inference": self.cycles_per_inference,
                "memory_bits": self.memory_bits, "stages": stages}


def _dense_stage(layer):
    what = f"layer {layer.name!r}"
    if layer.pe is None or layer.simd is None:
        raise HwnetError(f"{what}: no folding; set pe/simd in the IR or let the compiler choose "
                         f"(hwnet compile --target-cycles N)")
    if not (layer.weight_type == BIPOLAR and layer.in_type == BIPOLAR):
        raise HwnetError(f"{what}: {layer.weight_type} weights x {layer.in_type} inputs have no processing "
                         f"element yet; this hwnet builds bipolar x bipolar (XNOR-popcount) layers")
    n = layer.in_features
    nf, sf = layer.out_features // layer.pe, n // layer.simd
    count_bits = max(1, (n + 1).bit_length())
    words = pack_lanes(layer.weights, layer.weight_type, layer.simd)  # (MH, SF)
    weight_words = tuple(
        tuple(int(w) for w in words[p::layer.pe].reshape(nf * sf)) for p in range(layer.pe))
    raw = layer.thresholds is None
    thresholds = None
    if not raw:
        t = popcount_thresholds(layer.thresholds, n)  # (MH, L)
        thresholds = tuple(tuple(tuple(int(v) for v in t[nfi * layer.pe + p]) for nfi in range(nf))
                           for p in range(layer.pe))
    return DenseStage(name=layer.name, in_features=n, out_features=layer.out_features, pe=layer.pe,
                      simd=layer.simd, in_type=layer.in_type, weight_type=layer.weight_type,
                      out_type=layer.out_type, acc_type=layer.acc_type, count_bits=count_bits,
                      weight_words=weight_words, thresholds=thresholds, raw=raw)


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


def plan(network):
    """Lower ``network`` (with folding set on every dense layer) into a :class:`DesignPlan`."""
    stages = []
    layers = network.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            stages.append(_dense_stage(layer))
        elif isinstance(layer, MultiThreshold):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(nxt, MultiThreshold):
                raise HwnetError(f"layer {layer.name!r}: two threshold layers in a row; merge them")
            lanes = nxt.simd if isinstance(nxt, Dense) and nxt.simd else 1
            stages.append(_threshold_stage(layer, lanes))
        else:  # pragma: no cover - Network validates ops
            raise HwnetError(f"no hardware for layer {layer!r}")
    return DesignPlan(name=network.name, input_type=network.input_type, input_size=network.input_size,
                      stages=tuple(stages), network=network)

