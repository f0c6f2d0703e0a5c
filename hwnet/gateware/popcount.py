"""Sums of many bits: compressor trees for 4-input-LUT FPGAs, and the population count built on them.

A *bit heap* is a set of one-bit values, each with a weight ``2**c`` (its column ``c``). Every sum in a processing
element is one: a popcount is a heap of one column, a sum of ``k``-bit lane values a heap of ``k`` columns, a
shifted term a heap whose bits start at a higher column. :class:`CompressorTree` sums a bit heap exactly, with
the structure that maps best onto LUT4 FPGAs with carry chains (iCE40, ECP5):

- Columns are summed from the least significant up. In each column, the number carried up from the columns below
  and the column's bits are combined into one number, whose lowest bit is a bit of the result and whose other
  bits are carried up to the next column.
- About three quarters of a column's bits go into full adders (3:2 counters, two LUT4 each: the sum and the
  majority of three bits); the rest are carry inputs. The full adders' 2-bit numbers (and the number carried up)
  are then added pairwise by carry-chain adders (``+``; ``SB_CARRY`` chains on iCE40, ``CCU2C`` on ECP5),
  narrowest first (Huffman order, so that the two operands of an adder have the same width), each adder taking
  one of the remaining bits as its carry input.

On iCE40 a full adder costs 2 LUT4 per bit it removes from the heap, a carry-chain adder 1 LUT4 per bit (one per
sum bit; its carry out and carry in need no LUT4), so the tree costs about 1.25 LUT4 per heap bit, where yosys'
own mapping of a sum (a tree of full adders) costs 1.8 to 2.2. After placement each adder also takes a logic cell
to bring its carry input onto the chain and one to bring its carry out off it, so in iCE40 logic cells the tree
costs about 1.75 per heap bit. A bit that is an inversion or another small function of signals (``~x``,
``~(w ^ x)``) is absorbed into the LUT4 of a full adder at no cost, but takes a LUT4 of its own when it is a
carry input: so list such bits first in a column, and plain signals last, because the carry inputs are taken
from the end of each column.

:func:`heap_sum` and :func:`sum_unsigned` instantiate a tree for a list of columns or of (shifted) unsigned
operands. :class:`PopCount` counts the set bits of a word with one. :func:`balanced_sum` is a plain balanced tree
of ``+`` (yosys maps it as it maps any sum); the multi-threshold logic uses it to count passed comparisons.
"""

import heapq
import itertools
from numbers import Integral

from amaranth.hdl import Cat, Const, Module, Signal, Value, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import HwnetError
from ._common import check_positive_int, validating

__all__ = ["CompressorTree", "PopCount", "heap_sum", "sum_unsigned", "balanced_sum", "count_bits"]


def count_bits(n):
    """Bits needed for a count from 0 to ``n`` inclusive (at least 1)."""
    return max(1, int(n).bit_length())


def balanced_sum(values):
    """The sum of ``values`` (unsigned Amaranth values) as a balanced tree of two-input adders.

    Returns an Amaranth value wide enough for the exact sum (each level of the tree is one bit wider than its
    widest input). An empty list sums to a one-bit zero.
    """
    level = list(values)
    if not level:
        return Const(0, 1)
    while len(level) > 1:
        nxt = [level[k] + level[k + 1] for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class _Number:
    """An unsigned number in the tree: its ``bits`` (least significant first, from the column being summed up)
    and the largest value it can take, which sets how many bits it needs."""

    def __init__(self, bits, max_value):
        self.bits = list(bits)
        self.max_value = max_value

    def carried_up(self):
        """The bits above the lowest one, as a number one column up (None if there are none)."""
        if len(self.bits) == 1:
            return None
        return _Number(self.bits[1:], self.max_value >> 1)


def _full_adder(a, b, c):
    return _Number([a ^ b ^ c, (a & b) | (c & (a ^ b))], 3)


def _add(m, column, x, y, carry_in):
    """``x + y + carry_in`` (``carry_in`` a bit or None) by one adder: a carry chain, or LUT logic where yosys
    finds the result too narrow for one (up to 2 bits on iCE40, 4 on ECP5)."""
    max_value = x.max_value + y.max_value + (carry_in is not None)
    # `keep` stops yosys (alumacc) from merging the tree's adders into one multi-operand $macc cell, which it
    # would map as full adders in LUTs instead of carry chains.
    total = Signal(max_value.bit_length(), name=f"col{column}_sum", attrs={"keep": 1})
    operands = Cat(*x.bits) + Cat(*y.bits)
    if carry_in is not None:
        operands += carry_in
    m.d.comb += total.eq(operands)
    return _Number(total, max_value)


def _sum_column(m, column, carried, bits):
    """One number (None if nothing) for ``carried`` (the number from lower columns, or None) plus ``bits``."""
    numbers = [] if carried is None else [carried]
    # Each full adder turns three bits into a number, and each adder joins two numbers and takes one bit as its
    # carry input: with n_full full adders there are n_full + len(numbers) - 1 adders, and this n_full leaves
    # just about one bit for each.
    n_full = max(0, (len(bits) - len(numbers) + 1) // 4)
    numbers += [_full_adder(*bits[3 * k:3 * k + 3]) for k in range(n_full)]
    carry_ins = bits[3 * n_full:]
    # Bits beyond one carry input per adder become one-bit numbers; each of them adds an adder (and a carry in).
    while carry_ins and len(carry_ins) >= len(numbers):
        numbers.append(_Number([carry_ins.pop()], 1))
    order = itertools.count()  # ties keep their order: deterministic elaboration
    queue = [(len(n.bits), n.max_value, next(order), n) for n in numbers]
    heapq.heapify(queue)
    while len(queue) > 1:
        x = heapq.heappop(queue)[-1]
        y = heapq.heappop(queue)[-1]
        total = _add(m, column, x, y, carry_ins.pop() if carry_ins else None)
        heapq.heappush(queue, (len(total.bits), total.max_value, next(order), total))
    return queue[0][-1] if queue else None


def _check_heights(heights):
    if isinstance(heights, (str, bytes)) or not hasattr(heights, "__len__"):
        raise HwnetError(f"compressor tree heights must be a list of column heights, not {heights!r}")
    for column, height in enumerate(heights):
        if isinstance(height, bool) or not isinstance(height, Integral) or height < 0:
            raise HwnetError(f"compressor tree height of column {column} must be a non-negative integer, "
                             f"not {height!r}")
    return tuple(int(h) for h in heights)


class CompressorTree(wiring.Component):
    """Combinational sum of a bit heap: ``heights[c]`` one-bit inputs of weight ``2**c`` for each column ``c``.

    See the module documentation for the structure. Within a column the first bits go into full adders (LUT
    logic) and the last ones straight into carry inputs, so put bits that are small functions of signals (an
    inversion, an XNOR) first and plain signals last.

    Parameters
    ----------
    heights : list of int
        Number of bits in each column, least significant column first; columns may be empty, and so may the
        whole heap.

    Members
    -------
    i : ``In(sum(heights))``
        The bits of the heap: column 0's ``heights[0]`` bits first, then column 1's, and so on.
    o : ``Out(count_bits(max_sum))``
        The exact sum, ``sum over c of 2**c * (number of set bits of column c)``; ``max_sum`` is its value when
        every bit is set.
    """

    def __init__(self, *, heights):
        with validating(self):
            heights = _check_heights(heights)
        self._heights = heights
        self._max_sum = sum(h << c for c, h in enumerate(heights))
        super().__init__({
            "i": In(unsigned(sum(heights))),
            "o": Out(unsigned(count_bits(self._max_sum))),
        })

    @property
    def heights(self):
        return self._heights

    @property
    def max_sum(self):
        return self._max_sum

    def elaborate(self, platform):
        m = Module()
        columns, start = [], 0
        for height in self._heights:
            columns.append([self.i[k] for k in range(start, start + height)])
            start += height
        result = []
        carried = None
        while len(result) < len(columns) or carried is not None:
            column = len(result)
            total = _sum_column(m, column, carried, columns[column] if column < len(columns) else [])
            result.append(Const(0, 1) if total is None else total.bits[0])
            carried = None if total is None else total.carried_up()
        m.d.comb += self.o.eq(Cat(*result))
        return m


def heap_sum(m, columns, *, name=None):
    """The sum of a bit heap, by a :class:`CompressorTree` added to module ``m``.

    Parameters
    ----------
    m : Module
        The module that gets the tree as a submodule and drives its input.
    columns : list of list of Value
        ``columns[c]`` holds the one-bit values of weight ``2**c`` (order within a column as for
        :class:`CompressorTree`: plain signals last).
    name : str or None
        Submodule name; anonymous if None.

    Returns
    -------
    Value
        The tree's output: the exact unsigned sum, ``count_bits(max_sum)`` bits wide.
    """
    bits = []
    for column, values in enumerate(columns):
        for value in values:
            value = Value.cast(value)
            if len(value) != 1:
                raise HwnetError(f"heap_sum: every bit must be a 1-bit value, not a {len(value)}-bit one "
                                 f"(column {column})")
            bits.append(value)
    tree = CompressorTree(heights=[len(values) for values in columns])
    if name is None:
        m.submodules += tree
    else:
        m.submodules[name] = tree
    m.d.comb += tree.i.eq(Cat(*bits))
    return tree.o


def sum_unsigned(m, operands, *, name=None):
    """The sum of unsigned ``operands``, some of them shifted, by one :class:`CompressorTree` (see
    :func:`heap_sum`).

    Each operand is an unsigned Amaranth value ``v`` (bit ``b`` of weight ``2**b``), or a pair ``(v, shift)``
    standing for ``v * 2**shift`` (bit ``b`` of weight ``2**(b + shift)``), ``shift`` a non-negative integer.
    Returns the exact sum, as wide as its largest value needs.
    """
    columns = []
    for operand in operands:
        value, shift = operand if isinstance(operand, tuple) else (operand, 0)
        value = Value.cast(value)
        if value.shape().signed:
            raise HwnetError(f"sum_unsigned: operands must be unsigned, not {value.shape()}")
        if isinstance(shift, bool) or not isinstance(shift, Integral) or shift < 0:
            raise HwnetError(f"sum_unsigned: a shift must be a non-negative integer, not {shift!r}")
        while len(columns) < len(value) + shift:
            columns.append([])
        for b in range(len(value)):
            columns[b + shift].append(value[b])
    return heap_sum(m, columns, name=name)


class PopCount(wiring.Component):
    """Combinational population count of an ``width``-bit word, by a one-column :class:`CompressorTree`.

    As there, the last bits of ``i`` go straight into carry inputs: put inverted or computed lanes first.

    Parameters
    ----------
    width : int
        Width of the input word, at least 1.

    Members
    -------
    i : ``In(width)``
        The word to count.
    o : ``Out(count_bits(width))``
        Number of bits of ``i`` that are 1 (0 .. ``width``).
    """

    def __init__(self, *, width):
        with validating(self):
            width = check_positive_int(width, "popcount width")
        self._width = width
        super().__init__({
            "i": In(unsigned(width)),
            "o": Out(unsigned(count_bits(width))),
        })

    @property
    def width(self):
        return self._width

    def elaborate(self, platform):
        m = Module()
        m.submodules.tree = tree = CompressorTree(heights=[self._width])
        m.d.comb += [tree.i.eq(self.i), self.o.eq(tree.o)]
        return m
