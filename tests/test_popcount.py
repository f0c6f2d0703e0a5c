# amaranth: UnusedElaboratable=no

import random

import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hwnet.errors import HwnetError
from hwnet.gateware import PopCount
from hwnet.gateware.popcount import balanced_sum, count_bits


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


@pytest.mark.parametrize("width", range(1, 11))
def test_exhaustive_small_widths(width):
    dut = PopCount(width=width)
    assert len(dut.o) == count_bits(width) == width.bit_length()
    values = list(range(1 << width))
    assert _simulate(dut, values) == [bin(v).count("1") for v in values]


@pytest.mark.parametrize("width", [16, 63, 64, 65, 100, 257, 784])
def test_random_wide(width):
    rng = random.Random(width)
    all_ones = (1 << width) - 1
    values = [0, all_ones, 1, 1 << (width - 1), all_ones ^ 1, all_ones ^ (1 << (width - 1))]
    values += [rng.getrandbits(width) for _ in range(60)]
    # words with a chosen number of ones, so every count region is visited
    for ones in rng.sample(range(width + 1), min(width + 1, 20)):
        bits = rng.sample(range(width), ones)
        values.append(sum(1 << b for b in bits))
    dut = PopCount(width=width)
    assert len(dut.o) == width.bit_length()
    assert _simulate(dut, values) == [bin(v).count("1") for v in values]


def test_wide_elaborates_without_recursion():
    # a linear chain of 4096 adders would overflow Python's recursion limit in the backend
    text = rtlil.convert(PopCount(width=4096))
    assert "$mul" not in text


def test_tree_depth_is_logarithmic():
    from amaranth.hdl import Signal
    bits = [Signal(name=f"b{k}") for k in range(1000)]
    total = balanced_sum(bits)
    # each level of the balanced tree adds exactly one bit of width: ceil(log2(1000)) = 10 levels
    assert len(total) == 1 + 10


def test_balanced_sum_empty():
    assert len(balanced_sum([])) == 1


@pytest.mark.parametrize("width", [0, -3, True, 2.5, "8", None])
def test_bad_width(width):
    with pytest.raises(HwnetError, match=r"^popcount width must be a positive integer, not "):
        PopCount(width=width)


def test_signature():
    dut = PopCount(width=9)
    assert dut.width == 9
    assert len(dut.i) == 9
    assert len(dut.o) == 4
