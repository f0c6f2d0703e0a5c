"""Processing elements: the multiplier-free arithmetic of one folded dense layer, one kind per weight type.

Each processing element is a combinational :class:`amaranth.lib.wiring.Component` that takes one memory word of
``simd`` weight codes and one stream beat of ``simd`` input codes and gives the unsigned sum over the lanes of
the per-lane terms of :class:`hwnet.compiler.Arithmetic` (its numpy twin): ``o = sum_j term(w_j, x_j)``. The
matrix-vector unit registers ``o`` and accumulates it over the beats of a row. No lane multiplies: a term is
a wire, an inversion, a multiplexer, a shift by a constant, or a small lookup table, and all lanes' terms are
summed by one compressor tree over their bits (:func:`~hwnet.gateware.popcount.heap_sum`).

Inputs enter as ranks ``r`` (the wire code minus the code of the type's smallest value, so ``0 .. 2**bits - 1``
for ``uint<k>``/``int<k>``, ``0 .. 2`` for ternary, the bit itself for bipolar), and ``~r`` (all input bits
inverted) stands for ``M - r``:

=====================  ============================  ==================================================
class                  weights x inputs              term per lane
=====================  ============================  ==================================================
:class:`XnorPopcount`  bipolar x bipolar             ``xnor(w, x)``
:class:`AddSubtract`   bipolar x k-bit               ``w ? r : ~r``
:class:`AddSubtractSkip` ternary x k-bit             ``w == 0 ? 0 : w > 0 ? r : ~r``
:class:`ShiftAdd`      ``pot<k>`` x k-bit            ``(w < 0 ? ~r : r) << e`` (0 for a zero weight)
:class:`LookupProduct` products table (codes)        ``table[w][x]``, a logic lookup
:class:`BitPlane`      ``uint<k>``/``int<k>`` x k-bit  ``sum_a 2**a * (w_a & r)``, the sign plane as ``w_a & ~r``
:class:`BitSerial`     one weight bit plane          ``w_a & r`` (or ``w_a & ~r`` on the sign plane)
=====================  ============================  ==================================================
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..compiler import Arithmetic
from ..errors import HwnetError
from ._common import check_positive_int, first_code, validating
try:
    from .popcount import heap_sum
except ImportError:  # TEMPORARY until the compressor tree lands
    from .popcount import balanced_sum

    def heap_sum(m, columns, *, name=None):
        return balanced_sum([b << c for c, col in enumerate(columns) for b in col])

__all__ = ["ProcessingElement", "XnorPopcount", "AddSubtract", "AddSubtractSkip", "ShiftAdd", "LookupProduct",
           "BitPlane", "BitSerial", "processing_element"]


def _input_rank(code, in_type):
    """The rank ``r`` of an input code: ``(code - first_code) mod 2**bits`` (the code itself for uint)."""
    first = first_code(in_type)
    if first == 0:
        return code
    return (code - first)[:in_type.bits]


class ProcessingElement(wiring.Component):
    """Base of the processing elements: ports, parameter checks and the per-lane loop.

    Parameters
    ----------
    simd : int
        Lanes per beat.
    arithmetic : :class:`hwnet.compiler.Arithmetic`
        Kind, weight type and input type (and products table); must be this class's kind.

    Members
    -------
    w : ``In(simd * lane_bits)``
        Weight codes, lane ``j`` at bits ``[j * lane_bits, (j + 1) * lane_bits)``.
    x : ``In(simd * arithmetic.in_type.bits)``
        Input codes, lane ``j`` at bits ``[j * in_type.bits, (j + 1) * in_type.bits)``.
    o : ``Out(unsigned(...))``
        Sum of the lanes' terms, wide enough for ``simd`` times the largest term.
    """

    #: The :data:`hwnet.compiler.PE_KINDS` entry this class implements.
    kind = None

    def __init__(self, *, simd, arithmetic, extra_ports=None):
        with validating(self):
            self._simd = check_positive_int(simd, "simd")
            if not isinstance(arithmetic, Arithmetic) or arithmetic.kind != self.kind:
                raise HwnetError(f"{type(self).__name__} needs an Arithmetic of kind {self.kind!r}, "
                                 f"not {arithmetic!r}")
            if arithmetic.in_type.kind == "pot":
                raise HwnetError(f"{arithmetic.in_type} inputs have no processing element")
            self._arith = arithmetic
            self._max_sum = self._simd * self.max_lane_sum()
        ports = {
            "w": In(unsigned(self._simd * self.lane_bits)),
            "x": In(unsigned(self._simd * arithmetic.in_type.bits)),
            "o": Out(unsigned(max(1, self._max_sum.bit_length()))),
        }
        ports.update(extra_ports or {})
        super().__init__(ports)

    @property
    def simd(self):
        return self._simd

    @property
    def arithmetic(self):
        return self._arith

    @property
    def lane_bits(self):
        return self._arith.weight_type.bits

    def max_lane_sum(self):
        """Largest value one lane adds to ``o``."""
        return self._arith.max_term

    def lane_columns(self, m, w, x):
        """The bit-heap columns of one lane's term, from its weight code ``w`` and input code ``x``."""
        raise NotImplementedError  # pragma: no cover

    def elaborate(self, platform):
        m = Module()
        wb, xb = self.lane_bits, self._arith.in_type.bits
        columns = []
        for j in range(self._simd):
            lane = self.lane_columns(m, self.w[j * wb:(j + 1) * wb], self.x[j * xb:(j + 1) * xb])
            for c, bits in enumerate(lane):
                while len(columns) <= c:
                    columns.append([])
                columns[c].extend(bits)
        m.d.comb += self.o.eq(heap_sum(m, columns))
        return m


def _value_columns(value, shift=0):
    """Columns holding the bits of an unsigned ``value``, bit ``b`` at column ``b + shift``."""
    return [[] for _ in range(shift)] + [[value[b]] for b in range(len(value))]


class XnorPopcount(ProcessingElement):
    """Binary weights x binary inputs: ``o = popcount(xnor(w, x))``. See :class:`ProcessingElement`."""
    kind = "xnor"

    def lane_columns(self, m, w, x):
        return [[~(w[0] ^ x[0])]]


class AddSubtract(ProcessingElement):
    """Binary weights x k-bit inputs: each lane adds ``r`` or its complement ``~r``."""
    kind = "addsub"

    def lane_columns(self, m, w, x):
        r = _input_rank(x, self._arith.in_type)
        return _value_columns(Mux(w[0], r, ~r))


class AddSubtractSkip(ProcessingElement):
    """Ternary weights x k-bit inputs: each lane adds ``r``, its complement ``~r``, or nothing."""
    kind = "ternary"

    def lane_columns(self, m, w, x):
        r = _input_rank(x, self._arith.in_type)
        negative, nonzero = w[1], w[0]  # two's complement: +1 = 01, -1 = 11, 0 = 00
        return _value_columns(Mux(nonzero, Mux(negative, ~r, r), 0))


class ShiftAdd(ProcessingElement):
    """Power-of-two weights (``pot<k>``) x k-bit inputs: each lane adds ``r`` or ``~r`` shifted left by the
    weight's exponent, or nothing for a zero weight. The shift is a multiplexer over constant shifts."""
    kind = "shift"

    def lane_columns(self, m, w, x):
        wt = self._arith.weight_type
        r = _input_rank(x, self._arith.in_type)
        code, negative = w[:wt.bits - 1], w[wt.bits - 1]
        v = Mux(negative, ~r, r)
        shifted = Signal(len(v) + wt.max_exponent)
        m.d.comb += shifted.eq(Array([Const(0, 1)] + [v << e for e in range(wt.max_exponent + 1)])[code])
        return _value_columns(shifted)


class LookupProduct(ProcessingElement):
    """Codebook weights x codebook inputs: each lane looks its term up in a constant table indexed by the
    weight code and the input code (with ``wbits + xbits <= 4`` every term bit is one LUT4)."""
    kind = "lut"

    def __init__(self, *, simd, arithmetic):
        with validating(self):
            if isinstance(arithmetic, Arithmetic) and arithmetic.kind == "lut":
                self._table = self.code_table(arithmetic)
        super().__init__(simd=simd, arithmetic=arithmetic)

    @staticmethod
    def code_table(arithmetic):
        """The term of every (weight code, input code) pair, ``[wcode][xcode]``; 0 for illegal codes."""
        wt, xt = arithmetic.weight_type, arithmetic.in_type
        table = []
        for wc in range(1 << wt.bits):
            wv = wt.decode(wc)
            row = []
            for xc in range(1 << xt.bits):
                xv = xt.decode(xc)
                legal = wt.is_legal([wv]) and xt.is_legal([xv])
                row.append(int(arithmetic.terms(wv, xv)) if legal else 0)
            table.append(row)
        return table

    def lane_columns(self, m, w, x):
        flat = [t for row in self._table for t in row]  # index: wcode * 2**xbits + xcode
        term = Signal(max(1, max(flat).bit_length()))
        m.d.comb += term.eq(Array([Const(t, len(term)) for t in flat])[Cat(x, w)])
        return _value_columns(term)


class BitPlane(ProcessingElement):
    """``uint<k>``/``int<k>`` weights x k-bit inputs, every bit pair at once: bit ``b`` of ``w_a & r`` goes to
    column ``a + b`` of the compressor tree; for signed weights the sign plane adds ``w_a & ~r`` instead
    (``-2**a * w_a * r`` plus a constant the compiler folds away)."""
    kind = "bitplane"

    def lane_columns(self, m, w, x):
        wt = self._arith.weight_type
        r = _input_rank(x, self._arith.in_type)
        columns = [[] for _ in range(wt.bits + len(r) - 1)]
        for a in range(wt.bits):
            operand = ~r if wt.signed and a == wt.bits - 1 else r
            for b in range(len(r)):
                columns[a + b].append(w[a] & operand[b])
        return columns


class BitSerial(ProcessingElement):
    """One weight bit plane of ``uint<k>``/``int<k>`` weights x k-bit inputs per cycle: each lane adds ``r``
    where its plane bit is set (``~r`` on the sign plane of signed weights). The matrix-vector unit shifts the
    sum by the plane's weight as it accumulates.

    Members
    -------
    w : ``In(simd)``
        One plane bit per lane.
    sign_plane : ``In(1)``
        The plane is the sign plane (the top bit of an ``int<k>`` weight).
    """
    kind = "bitserial"

    def __init__(self, *, simd, arithmetic):
        super().__init__(simd=simd, arithmetic=arithmetic, extra_ports={"sign_plane": In(1)})

    @property
    def lane_bits(self):
        return 1

    def max_lane_sum(self):
        return self._arith.input_mask

    def lane_columns(self, m, w, x):
        r = _input_rank(x, self._arith.in_type)
        operand = Mux(self.sign_plane, ~r, r) if self._arith.weight_type.signed else r
        return _value_columns(Mux(w[0], operand, 0))


_CLASSES = {cls.kind: cls for cls in (XnorPopcount, AddSubtract, AddSubtractSkip, ShiftAdd, LookupProduct,
                                      BitPlane, BitSerial)}


def processing_element(*, simd, arithmetic):
    """The processing element for ``arithmetic.kind`` (:data:`hwnet.compiler.PE_KINDS`)."""
    if not isinstance(arithmetic, Arithmetic):
        raise HwnetError(f"processing_element needs an Arithmetic, not {arithmetic!r}")
    return _CLASSES[arithmetic.kind](simd=simd, arithmetic=arithmetic)
