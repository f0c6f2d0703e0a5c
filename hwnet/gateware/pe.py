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

- :class:`XnorPopcount`, bipolar x bipolar: ``xnor(w, x)``;
- :class:`AddSubtract`, bipolar x k-bit: ``w ? r : ~r``;
- :class:`AddSubtractSkip`, ternary x k-bit: ``w == 0 ? 0 : w > 0 ? r : ~r``;
- :class:`ShiftAdd`, ``pot<k>`` x k-bit: ``(w < 0 ? ~r : r) << e``, 0 for a zero weight;
- :class:`LookupProduct`, a products table: ``table[w][x]``, a lookup in logic by the two codes;
- :class:`BitPlane`, ``uint<k>``/``int<k>`` x k-bit: ``sum_a 2**a * (w_a & r)``, the sign plane as ``w_a & ~r``;
- :class:`BitSerial`, one weight bit plane per cycle: ``w_a & r`` (``w_a & ~r`` on the sign plane).

With constant weights (a layer whose weights live in logic) the element is built for them: each lane becomes
its input bits, their inverse, a constant shift of either, or nothing.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.hdl._ast import Slice  # no public way to tell a bare port bit from logic (amaranth 0.5 is pinned)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..compiler import Arithmetic
from ..errors import HwnetError
from ._common import check_positive_int, first_code, validating
from .popcount import heap_sum

__all__ = ["ProcessingElement", "XnorPopcount", "AddSubtract", "AddSubtractSkip", "ShiftAdd", "LookupProduct",
           "BitPlane", "BitSerial", "processing_element"]


def _input_rank(code, in_type):
    """The rank ``r`` of an input code: ``(code - first_code) mod 2**bits`` (the code itself for uint, the code
    with its top bit inverted for int)."""
    first = first_code(in_type)
    if first == 0:
        return code
    if first == 1 << (in_type.bits - 1):
        return Cat(code[:-1], ~code[-1])
    return (code - first)[:in_type.bits]


def _is_plain(bit):
    """A bit that is a port bit as it is (no logic): the compressor tree takes these as carry inputs."""
    while isinstance(bit, Slice):
        bit = bit.value
    return isinstance(bit, Signal)


class ProcessingElement(wiring.Component):
    """Base of the processing elements: ports, parameter checks and the per-lane loop.

    Parameters
    ----------
    simd : int
        Lanes per beat.
    arithmetic : :class:`hwnet.compiler.Arithmetic`
        Kind, weight type and input type (and products table); must be this class's kind.
    weights : int or None
        Constant weights (a fully unrolled layer's weights in logic): the word of ``simd`` weight codes, lane
        ``j`` at bits ``[j * lane_bits, (j + 1) * lane_bits)``. The element is then specialized to them (a lane
        with weight +1 adds its input as it is, one with -1 its inverted bits, one with 0 nothing) and has no
        ``w`` port. None: the weights come in on ``w`` (from a ROM).

    Members
    -------
    w : ``In(simd * lane_bits)``
        Weight codes, lane ``j`` at bits ``[j * lane_bits, (j + 1) * lane_bits)`` (without constant ``weights``).
    x : ``In(simd * arithmetic.in_type.bits)``
        Input codes, lane ``j`` at bits ``[j * in_type.bits, (j + 1) * in_type.bits)``.
    o : ``Out(unsigned(...))``
        Sum of the lanes' terms, wide enough for ``simd`` times the largest term.
    """

    #: The :data:`hwnet.compiler.PE_KINDS` entry this class implements.
    kind = None

    def __init__(self, *, simd, arithmetic, weights=None, extra_ports=None):
        with validating(self):
            self._simd = check_positive_int(simd, "simd")
            if not isinstance(arithmetic, Arithmetic) or arithmetic.kind != self.kind:
                raise HwnetError(f"{type(self).__name__} needs an Arithmetic of kind {self.kind!r}, "
                                 f"not {arithmetic!r}")
            if arithmetic.in_type.kind == "pot":
                raise HwnetError(f"{arithmetic.in_type} inputs have no processing element")
            self._arith = arithmetic
            self._max_sum = self._simd * self.max_lane_sum()
            width = self._simd * self.lane_bits
            if weights is not None and (isinstance(weights, bool) or not isinstance(weights, int)
                                        or not 0 <= weights < (1 << width)):
                raise HwnetError(f"constant weights must be a {width}-bit word (an int), not {weights!r}")
            self._weights = weights
        ports = {
            "x": In(unsigned(self._simd * arithmetic.in_type.bits)),
            "o": Out(unsigned(max(1, self._max_sum.bit_length()))),
        }
        if weights is None:
            ports["w"] = In(unsigned(width))
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

    @property
    def weights(self):
        """The constant weight word, or None when the weights come in on ``w``."""
        return self._weights

    def max_lane_sum(self):
        """Largest value one lane adds to ``o``."""
        return self._arith.max_term

    def lane_columns(self, m, w, x):
        """The bit-heap columns of one lane's term, from its weight code ``w`` and input code ``x``."""
        raise NotImplementedError  # pragma: no cover

    def constant_lane_columns(self, m, code, x):
        """:meth:`lane_columns` for a constant weight ``code`` (an int); kinds with a simpler form override it."""
        return self.lane_columns(m, Const(code, self.lane_bits), x)

    def elaborate(self, platform):
        m = Module()
        wb, xb = self.lane_bits, self._arith.in_type.bits
        columns = []
        for j in range(self._simd):
            x = self.x[j * xb:(j + 1) * xb]
            if self._weights is None:
                lane = self.lane_columns(m, self.w[j * wb:(j + 1) * wb], x)
            else:
                lane = self.constant_lane_columns(m, (self._weights >> (j * wb)) & ((1 << wb) - 1), x)
            for c, bits in enumerate(lane):
                while len(columns) <= c:
                    columns.append([])
                columns[c].extend(bits)
        # Bits that need logic first, port bits as they are last: the tree takes its carry inputs from the end
        # of each column, where an inverted bit would cost a LUT of its own.
        columns = [sorted(col, key=_is_plain) for col in columns]
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

    def constant_lane_columns(self, m, code, x):
        return [[x[0] if code else ~x[0]]]


class AddSubtract(ProcessingElement):
    """Binary weights x k-bit inputs: each lane adds ``r`` or its complement ``~r``."""
    kind = "addsub"

    def lane_columns(self, m, w, x):
        r = _input_rank(x, self._arith.in_type)
        return _value_columns(Mux(w[0], r, ~r))

    def constant_lane_columns(self, m, code, x):
        r = _input_rank(x, self._arith.in_type)
        return _value_columns(r if code else ~r)


class AddSubtractSkip(ProcessingElement):
    """Ternary weights x k-bit inputs: each lane adds ``r``, its complement ``~r``, or nothing."""
    kind = "ternary"

    def lane_columns(self, m, w, x):
        r = _input_rank(x, self._arith.in_type)
        negative, nonzero = w[1], w[0]  # two's complement: +1 = 01, -1 = 11, 0 = 00
        return _value_columns(Mux(nonzero, Mux(negative, ~r, r), 0))

    def constant_lane_columns(self, m, code, x):
        if code == 0:
            return []
        r = _input_rank(x, self._arith.in_type)
        return _value_columns(~r if code >> 1 else r)


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

    def constant_lane_columns(self, m, code, x):
        wt = self._arith.weight_type
        exponent_code, negative = code & ((1 << (wt.bits - 1)) - 1), code >> (wt.bits - 1)
        if exponent_code == 0:
            return []
        r = _input_rank(x, self._arith.in_type)
        return _value_columns(~r if negative else r, shift=exponent_code - 1)


class LookupProduct(ProcessingElement):
    """Codebook weights x codebook inputs: each lane looks its term up in a constant table indexed by the
    weight code and the input code (with ``wbits + xbits <= 4`` every term bit is one LUT4)."""
    kind = "lut"

    def __init__(self, *, simd, arithmetic, weights=None):
        with validating(self):
            if isinstance(arithmetic, Arithmetic) and arithmetic.kind == "lut":
                self._table = self.code_table(arithmetic)
        super().__init__(simd=simd, arithmetic=arithmetic, weights=weights)

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

    def constant_lane_columns(self, m, code, x):
        wt = self._arith.weight_type
        r = _input_rank(x, self._arith.in_type)
        columns = []
        for a in range(wt.bits):
            if (code >> a) & 1:
                operand = ~r if wt.signed and a == wt.bits - 1 else r
                columns += [[] for _ in range(a + len(r) - len(columns))]
                for b in range(len(r)):
                    columns[a + b].append(operand[b])
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


def processing_element(*, simd, arithmetic, weights=None):
    """The processing element for ``arithmetic.kind`` (:data:`hwnet.compiler.PE_KINDS`), with constant
    ``weights`` or (None) a ``w`` port."""
    if not isinstance(arithmetic, Arithmetic):
        raise HwnetError(f"processing_element needs an Arithmetic, not {arithmetic!r}")
    if weights is None:
        return _CLASSES[arithmetic.kind](simd=simd, arithmetic=arithmetic)
    if arithmetic.kind == "bitserial":
        raise HwnetError("a bit-serial processing element reads one weight plane per cycle; it takes no "
                         "constant weights")
    return _CLASSES[arithmetic.kind](simd=simd, arithmetic=arithmetic, weights=weights)
