# amaranth: UnusedElaboratable=no

import itertools
import random

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnet.errors import HwnetError
from hwnet.gateware import PopCount
from hwnet.gateware.popcount import CompressorTree, balanced_sum, count_bits, heap_sum, sum_unsigned


def _simulate(dut, values):
    """Output of the combinational ``dut`` for each input value."""
    results = []

    async def testbench(ctx):
        for v in values:
            ctx.set(dut.i, v)
            results.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    return results


def _heap_sum(heights, word):
    """Python's sum of the bit heap ``heights`` whose bits (column 0's first) are the bits of ``word``."""
    total, start = 0, 0
    for column, height in enumerate(heights):
        total += bin((word >> start) & ((1 << height) - 1)).count("1") << column
        start += height
    return total


def _check_tree(heights, words):
    dut = CompressorTree(heights=heights)
    max_sum = sum(h << c for c, h in enumerate(heights))
    assert dut.max_sum == max_sum
    assert len(dut.i) == sum(heights)
    assert len(dut.o) == count_bits(max_sum)
    assert _simulate(dut, words) == [_heap_sum(heights, w) for w in words]


def _corner_words(n, rng, count):
    """All-zero, all-one, single-bit, single-hole and random ``n``-bit words, and words with chosen numbers of
    ones, so that every carry of the tree is exercised."""
    ones = (1 << n) - 1
    words = [0, ones]
    words += [1 << b for b in rng.sample(range(n), min(n, 8))]
    words += [ones ^ (1 << b) for b in rng.sample(range(n), min(n, 8))]
    words += [rng.getrandbits(n) for _ in range(count)]
    for k in rng.sample(range(n + 1), min(n + 1, count)):
        words.append(sum(1 << b for b in rng.sample(range(n), k)))
    return words


# -- CompressorTree ------------------------------------------------------------------------------------------


_SMALL_HEAPS = [h for h in itertools.product(range(5), repeat=3) if sum(h) <= 9]
_SMALL_HEAPS += [(1,) * 9, (0, 0, 0, 0, 3), (2, 0, 0, 2, 0, 2), (9,), (0, 9), (5, 0, 4), (1, 2, 3, 3)]


@pytest.mark.parametrize("heights", _SMALL_HEAPS, ids=str)
def test_tree_exhaustive_small_heaps(heights):
    _check_tree(heights, range(1 << sum(heights)))


@pytest.mark.parametrize("heights", [
    [300],
    [64],
    [63, 1],
    [0, 0, 0, 100],
    [40, 0, 33, 7, 0, 1, 19],
    [1, 2, 3, 4, 5, 6, 7, 8, 7, 6, 5, 4, 3, 2, 1],  # a 8x8 multiplier's partial products
    [2, 300, 2],
    [17] * 8,
], ids=str)
def test_tree_random_large_heaps(heights):
    rng = random.Random(str(heights))
    _check_tree(heights, _corner_words(sum(heights), rng, 40))


@pytest.mark.parametrize("heights", [[], [0], [0, 0, 0]], ids=str)
def test_tree_zero_height_heap(heights):
    dut = CompressorTree(heights=heights)
    assert dut.max_sum == 0
    assert len(dut.i) == 0
    assert len(dut.o) == 1
    assert _simulate(dut, [0]) == [0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=7), st.randoms(use_true_random=False))
def test_tree_random_heaps(heights, rng):
    n = sum(heights)
    _check_tree(heights, _corner_words(n, rng, 10) if n else [0])


def test_tree_is_combinational():
    text = rtlil.convert(CompressorTree(heights=[50, 20, 5]))
    assert "clk" not in text


@pytest.mark.parametrize("heights, message", [
    (8, r"^compressor tree heights must be a list of column heights, not 8$"),
    ("8", r"^compressor tree heights must be a list of column heights, not '8'$"),
    (None, r"^compressor tree heights must be a list of column heights, not None$"),
    ([3, -1], r"^compressor tree height of column 1 must be a non-negative integer, not -1$"),
    ([True], r"^compressor tree height of column 0 must be a non-negative integer, not True$"),
    ([0, 0, 2.5], r"^compressor tree height of column 2 must be a non-negative integer, not 2.5$"),
])
def test_tree_bad_heights(heights, message):
    with pytest.raises(HwnetError, match=message):
        CompressorTree(heights=heights)


def test_tree_signature():
    dut = CompressorTree(heights=(3, 0, 2))
    assert dut.heights == (3, 0, 2)
    assert dut.max_sum == 11
    assert len(dut.i) == 5
    assert len(dut.o) == 4


# -- heap_sum / sum_unsigned ------------------------------------------------------------------------------------


class _ShiftedSum(wiring.Component):
    """``o = sum_k a_k * 2**shift_k`` through :func:`sum_unsigned`, the ``a_k`` side by side in ``i``."""

    def __init__(self, widths, shifts):
        self.widths, self.shifts = widths, shifts
        max_sum = sum(((1 << w) - 1) << s for w, s in zip(widths, shifts))
        super().__init__({"i": In(unsigned(sum(widths))), "o": Out(unsigned(count_bits(max_sum)))})

    def elaborate(self, platform):
        m = Module()
        operands, start = [], 0
        for width, shift in zip(self.widths, self.shifts):
            value = self.i[start:start + width]
            operands.append(value if shift == 0 else (value, shift))
            start += width
        total = sum_unsigned(m, operands, name="adder")
        assert total.shape() == self.o.shape()
        m.d.comb += self.o.eq(total)
        return m


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 5)), min_size=1, max_size=24),
       st.randoms(use_true_random=False))
def test_sum_unsigned_random_shifts(operands, rng):
    widths = [w for w, _ in operands]
    shifts = [s for _, s in operands]
    dut = _ShiftedSum(widths, shifts)
    words = _corner_words(len(dut.i), rng, 15)

    def expected(word):
        total, start = 0, 0
        for width, shift in zip(widths, shifts):
            total += ((word >> start) & ((1 << width) - 1)) << shift
            start += width
        return total

    assert _simulate(dut, words) == [expected(w) for w in words]


def test_sum_unsigned_many_wide_operands():
    rng = random.Random(7)
    widths = [4] * 64 + [2] * 64
    dut = _ShiftedSum(widths, [rng.randrange(4) for _ in widths])
    words = [0, (1 << len(dut.i)) - 1] + [rng.getrandbits(len(dut.i)) for _ in range(40)]
    results = _simulate(dut, words)
    for word, result in zip(words, results):
        total, start = 0, 0
        for width, shift in zip(dut.widths, dut.shifts):
            total += ((word >> start) & ((1 << width) - 1)) << shift
            start += width
        assert result == total


def test_heap_sum_submodule_and_width():
    m = Module()
    a = Signal(4)
    total = heap_sum(m, [[a[0], ~a[1]], [], [a[2], a[3] ^ a[0]]], name="adder")
    assert isinstance(m.submodules.adder, CompressorTree)
    assert m.submodules.adder.heights == (2, 0, 2)
    assert total.shape() == unsigned(4)  # 2 + 2 * 4 = 10
    heap_sum(m, [[a[0]]])  # anonymous
    Fragment.get(m, None)


def test_heap_sum_empty():
    m = Module()
    assert len(heap_sum(m, [])) == 1
    Fragment.get(m, None)


def test_heap_sum_rejects_wide_bits():
    with pytest.raises(HwnetError, match=r"^heap_sum: every bit must be a 1-bit value, not a 2-bit one "
                                         r"\(column 1\)$"):
        heap_sum(Module(), [[Signal()], [Signal(2)]])


def test_sum_unsigned_rejects_signed():
    with pytest.raises(HwnetError, match=r"^sum_unsigned: operands must be unsigned, not signed\(4\)$"):
        sum_unsigned(Module(), [Signal(4), (Signal(signed(4)), 1)])


@pytest.mark.parametrize("shift", [-1, 1.0, True, "2"])
def test_sum_unsigned_rejects_bad_shift(shift):
    with pytest.raises(HwnetError, match=r"^sum_unsigned: a shift must be a non-negative integer, not "):
        sum_unsigned(Module(), [(Signal(4), shift)])


# -- PopCount ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", range(1, 11))
def test_exhaustive_small_widths(width):
    dut = PopCount(width=width)
    assert len(dut.o) == count_bits(width) == width.bit_length()
    values = list(range(1 << width))
    assert _simulate(dut, values) == [bin(v).count("1") for v in values]


@pytest.mark.parametrize("width", [16, 63, 64, 65, 100, 257, 784])
def test_random_wide(width):
    rng = random.Random(width)
    values = _corner_words(width, rng, 60)
    dut = PopCount(width=width)
    assert len(dut.o) == width.bit_length()
    assert _simulate(dut, values) == [bin(v).count("1") for v in values]


def test_wide_elaborates_without_recursion():
    # a linear chain of 4096 adders would overflow Python's recursion limit in the backend
    text = rtlil.convert(PopCount(width=4096))
    assert "$mul" not in text


@pytest.mark.parametrize("width", [0, -3, True, 2.5, "8", None])
def test_bad_width(width):
    with pytest.raises(HwnetError, match=r"^popcount width must be a positive integer, not "):
        PopCount(width=width)


def test_signature():
    dut = PopCount(width=9)
    assert dut.width == 9
    assert len(dut.i) == 9
    assert len(dut.o) == 4


# -- balanced_sum -----------------------------------------------------------------------------------------------


def test_tree_depth_is_logarithmic():
    bits = [Signal(name=f"b{k}") for k in range(1000)]
    total = balanced_sum(bits)
    # each level of the balanced tree adds exactly one bit of width: ceil(log2(1000)) = 10 levels
    assert len(total) == 1 + 10


def test_balanced_sum_empty():
    assert len(balanced_sum([])) == 1
