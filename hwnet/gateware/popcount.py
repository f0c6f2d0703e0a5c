"""Population count: how many bits of a word are set.

:class:`PopCount` is the counting half of every XNOR-popcount processing element. It is a balanced tree of
adders: the ``N`` one-bit inputs are added pairwise, then the sums pairwise, and so on, each level one bit wider
than the one below, so the depth is ``ceil(log2(N))`` adders and elaboration never recurses deeper than that (a
Python ``sum()`` over many signals would build a linear chain of ``N`` adders and overflow the recursion limit).

:func:`balanced_sum` builds the same tree over arbitrary unsigned values; the multi-threshold logic uses it to
count how many comparisons passed.
"""

from amaranth.hdl import Const, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ._common import check_positive_int, validating

__all__ = ["PopCount", "balanced_sum", "count_bits"]


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


class PopCount(wiring.Component):
    """Combinational population count of an ``width``-bit word.

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
        total = balanced_sum([self.i[k] for k in range(self._width)])
        m.d.comb += self.o.eq(total)
        return m
