"""Stream width conversion: re-chunk ``in_lanes`` elements per beat into ``out_lanes`` per beat.

The converter works on chunks of ``g = gcd(in_lanes, out_lanes)`` elements: an input beat is ``a = in_lanes / g``
chunks, an output beat ``b = out_lanes / g``. It keeps a queue of ``a + b - 1`` chunk slots, the oldest chunk in
slot 0: an output beat is the first ``b`` slots, and an accepted input beat is written right behind the chunks
that remain after this cycle's output. That is the smallest queue that accepts an input beat in every cycle the
output side allows, so the converter runs at the full rate of its slower side. Element order is preserved
(lane 0 first); each chunk carries a flag that is set on the final chunk of an input beat whose ``last`` is set,
and an output beat's ``last`` is the flag of its final chunk. Every vector must hold a multiple of both
``in_lanes`` and ``out_lanes`` elements, so vector ends fall on output beat boundaries, unless the converter pads:

Padding (``vector`` elements per vector, not a multiple of ``out_lanes``): each vector leaves as ``ceil(vector /
out_lanes)`` output beats, the last of them holding the vector's final ``e`` chunks followed by chunks of
``pad_code`` elements (the padding is a whole number of chunks, since ``g`` divides ``in_lanes`` and so
``vector``). An output beat counter knows which beat ends a vector: that beat needs and takes ``e`` chunks
instead of ``b``, so the next vector starts on a fresh output beat. This is how a matrix-vector unit whose
``simd`` does not divide its input gets whole beats (:attr:`hwnet.compiler.DenseStage.pad_lanes`).
"""

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import HwnetError
from ._common import beat_signature, check_positive_int, validating

__all__ = ["WidthConverter"]


class WidthConverter(wiring.Component):
    """Converts a stream of ``in_lanes`` elements per beat into one of ``out_lanes`` elements per beat.

    Parameters
    ----------
    in_lanes : int
        Elements per input beat.
    out_lanes : int
        Elements per output beat. Equal to ``in_lanes``, the converter is a wire.
    bits : int
        Bits per element.
    vector : int or None
        Elements per vector, a multiple of ``in_lanes``; when it is not a multiple of ``out_lanes`` every vector's
        last output beat is padded with ``pad_code`` (see the module documentation). None: vectors are whole
        output beats.
    pad_code : int
        The code of a padding element (``0 .. 2**bits - 1``).

    Members
    -------
    i : ``In(stream.Signature(beat_layout(in_lanes, bits)))``
        Input beats; ``last`` marks the final beat of a vector.
    o : ``Out(stream.Signature(beat_layout(out_lanes, bits)))``
        Output beats, the same elements in the same order; ``last`` on the beat that ends a vector.
    """

    def __init__(self, *, in_lanes, out_lanes, bits, vector=None, pad_code=0):
        with validating(self):
            self._in_lanes = check_positive_int(in_lanes, "in_lanes")
            self._out_lanes = check_positive_int(out_lanes, "out_lanes")
            self._bits = check_positive_int(bits, "bits")
            if vector is not None:
                vector = check_positive_int(vector, "vector")
                if vector % self._in_lanes:
                    raise HwnetError(f"vector={vector} must be a multiple of in_lanes={self._in_lanes}")
            if isinstance(pad_code, bool) or not isinstance(pad_code, int) or not 0 <= pad_code < 1 << self._bits:
                raise HwnetError(f"pad_code must be an integer from 0 to {(1 << self._bits) - 1}, not {pad_code!r}")
            self._vector = None if vector is None or vector % self._out_lanes == 0 else vector
            self._pad_code = pad_code
        super().__init__({
            "i": In(beat_signature(self._in_lanes, self._bits)),
            "o": Out(beat_signature(self._out_lanes, self._bits)),
        })

    @property
    def in_lanes(self):
        return self._in_lanes

    @property
    def out_lanes(self):
        return self._out_lanes

    @property
    def bits(self):
        return self._bits

    @property
    def vector(self):
        """Elements per vector when the converter pads, else None."""
        return self._vector

    @property
    def pad_code(self):
        return self._pad_code

    def elaborate(self, platform):
        m = Module()
        if self._in_lanes == self._out_lanes:
            m.d.comb += [
                self.o.payload.eq(self.i.payload),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            return m

        g = math.gcd(self._in_lanes, self._out_lanes)
        a, b = self._in_lanes // g, self._out_lanes // g
        slots = a + b - 1
        width = g * self._bits
        chunk = [Signal(width, name=f"chunk{k}") for k in range(slots)]
        flag = [Signal(name=f"chunk{k}_last") for k in range(slots)]
        count = Signal(range(slots + 1))  # chunks held
        kept = Signal(range(slots + 1))   # chunks held after this cycle's output beat
        out_fire = Signal()
        in_fire = Signal()

        if self._vector is None:
            m.d.comb += [
                self.o.valid.eq(count >= b),
                self.o.payload.data.eq(Cat(*chunk[:b])),
                self.o.payload.last.eq(flag[b - 1]),
                kept.eq(Mux(out_fire, count - b, count)),
            ]
            with m.If(out_fire):
                for k in range(slots - b):
                    m.d.sync += [chunk[k].eq(chunk[k + b]), flag[k].eq(flag[k + b])]
        else:
            beats = -(-self._vector // self._out_lanes)
            e = b - (beats * self._out_lanes - self._vector) // g  # chunks of a vector's last output beat
            pad = Const(sum(self._pad_code << (j * self._bits) for j in range(g)), width)
            obeat = Signal(range(beats), name="obeat")
            final = Signal()
            m.d.comb += [
                final.eq(obeat == beats - 1),
                self.o.valid.eq(count >= Mux(final, e, b)),
                self.o.payload.data.eq(Cat(*chunk[:e], *(Mux(final, pad, c) for c in chunk[e:b]))),
                self.o.payload.last.eq(Mux(final, flag[e - 1], flag[b - 1])),
                kept.eq(Mux(out_fire, count - Mux(final, e, b), count)),
            ]
            with m.If(out_fire):
                m.d.sync += obeat.eq(Mux(final, 0, obeat + 1))
                for k in range(slots - e):
                    with m.If(final):
                        m.d.sync += [chunk[k].eq(chunk[k + e]), flag[k].eq(flag[k + e])]
                    if k + b < slots:
                        with m.Else():
                            m.d.sync += [chunk[k].eq(chunk[k + b]), flag[k].eq(flag[k + b])]
        m.d.comb += [
            out_fire.eq(self.o.valid & self.o.ready),
            self.i.ready.eq(kept < b),  # kept + a <= slots
            in_fire.eq(self.i.valid & self.i.ready),
        ]
        with m.If(in_fire):
            with m.Switch(kept):
                for pos in range(b):
                    with m.Case(pos):
                        for j in range(a):
                            m.d.sync += [
                                chunk[pos + j].eq(self.i.payload.data[j * width:(j + 1) * width]),
                                flag[pos + j].eq(self.i.payload.last if j == a - 1 else 0),
                            ]
            m.d.sync += count.eq(kept + a)
        with m.Else():
            m.d.sync += count.eq(kept)
        return m
