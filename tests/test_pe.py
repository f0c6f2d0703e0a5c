"""Every processing element against its numpy twin (:class:`hwnet.compiler.Arithmetic`) in amaranth.sim:
random bitlengths, signedness and SIMD, random lanes and the extremes (every lane at its largest and its
smallest term), and no multiplier in any of them."""

# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hwnet.compiler import Arithmetic
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.gateware import pe as pes

INPUT_TYPES = ["bipolar", "ternary"] + [f"uint{k}" for k in range(1, 9)] + [f"int{k}" for k in range(2, 9)]


def _arith(kind, weight_type, in_type, rng=None):
    weight_type, in_type = parse_type(weight_type), parse_type(in_type)
    products = None
    if kind == "lut":
        table = rng.integers(-20, 21, size=(weight_type.num_values, in_type.num_values))
        products = tuple(tuple(int(v) for v in row) for row in table)
    return Arithmetic(kind, weight_type, in_type, products)


def _random_config(kind, seed):
    """(Arithmetic, simd) for a random configuration of ``kind`` (numpy seed)."""
    rng = np.random.default_rng(seed)
    simd = int(rng.integers(1, 17))
    pick = lambda names: str(rng.choice(names))  # noqa: E731
    if kind == "xnor":
        return _arith(kind, "bipolar", "bipolar"), simd
    multi_bit = [t for t in INPUT_TYPES if t != "bipolar"]
    if kind == "addsub":
        return _arith(kind, "bipolar", pick(multi_bit)), simd
    if kind == "ternary":
        return _arith(kind, "ternary", pick(INPUT_TYPES)), simd
    if kind == "shift":
        return _arith(kind, f"pot{int(rng.integers(2, 7))}", pick(INPUT_TYPES)), simd
    if kind == "lut":  # tables up to 2**8 entries per lane
        wbits = int(rng.integers(1, 4))
        small = [t for t in INPUT_TYPES if parse_type(t).bits <= 8 - wbits]
        return _arith(kind, f"uint{wbits}", pick(small), rng), simd
    weight = pick([f"uint{k}" for k in range(1, 9)] + [f"int{k}" for k in range(2, 9)])
    return _arith(kind, weight, pick(INPUT_TYPES)), simd


def _stimuli(arith, simd, count, rng):
    """(weights, inputs) value arrays (n, simd): random lanes, then every lane at its extremes: the weight and
    input giving the largest term, the smallest term, and all-max / all-min inputs against random weights."""
    wv, xv = arith.weight_type.values(), arith.in_type.values()
    w = rng.choice(wv, size=(count, simd))
    x = rng.choice(xv, size=(count, simd))
    grid = arith.terms(wv[:, None], xv[None, :])
    hi = np.unravel_index(np.argmax(grid), grid.shape)
    lo = np.unravel_index(np.argmin(grid), grid.shape)
    extremes_w = [np.full(simd, wv[hi[0]]), np.full(simd, wv[lo[0]]), rng.choice(wv, simd), rng.choice(wv, simd)]
    extremes_x = [np.full(simd, xv[hi[1]]), np.full(simd, xv[lo[1]]), np.full(simd, xv[-1]), np.full(simd, xv[0])]
    return np.vstack([w, extremes_w]), np.vstack([x, extremes_x])


def _pack(values, dtype, bits):
    codes = dtype.encode(values)
    return [sum(int(c) << (j * bits) for j, c in enumerate(row)) for row in codes]


def _evaluate(dut, settings):
    """Outputs of a combinational ``dut`` for each dict of {port: value} in ``settings``."""
    sim = Simulator(dut)
    out = []

    async def bench(ctx):
        for values in settings:
            for port, value in values.items():
                ctx.set(getattr(dut, port), value)
            await ctx.delay(1e-9)
            out.append(ctx.get(dut.o))

    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["xnor", "addsub", "ternary", "shift", "lut", "bitplane"])
def test_processing_element_matches_its_twin(kind, seed):
    arith, simd = _random_config(kind, 100 * seed + len(kind))
    rng = np.random.default_rng(seed)
    dut = pes.processing_element(simd=simd, arithmetic=arith)
    assert type(dut).kind == kind
    w, x = _stimuli(arith, simd, 40, rng)
    got = _evaluate(dut, [{"w": wi, "x": xi} for wi, xi in zip(_pack(w, arith.weight_type, arith.weight_type.bits),
                                                            _pack(x, arith.in_type, arith.in_type.bits))])
    expected = arith.terms(w, x).sum(axis=1)
    np.testing.assert_array_equal(got, expected, err_msg=f"{kind} {arith.weight_type} x {arith.in_type} "
                                                         f"simd={simd}")
    assert len(dut.o) >= int(expected.max()).bit_length()


@pytest.mark.parametrize("seed", range(6))
def test_bit_serial_matches_its_plane_twin(seed):
    arith, simd = _random_config("bitserial", seed)
    rng = np.random.default_rng(seed)
    dut = pes.BitSerial(simd=simd, arithmetic=arith)
    w, x = _stimuli(arith, simd, 20, rng)
    wt, planes = arith.weight_type, arith.weight_type.bits
    codes = wt.encode(w)
    xs = _pack(x, arith.in_type, arith.in_type.bits)
    settings, expected = [], []
    for b in range(planes):
        words = [sum(int((c >> b) & 1) << j for j, c in enumerate(row)) for row in codes]
        sign = int(wt.signed and b == planes - 1)
        settings += [{"w": wi, "x": xi, "sign_plane": sign} for wi, xi in zip(words, xs)]
        expected.append(arith.plane_terms(w, x, b).sum(axis=1))
    got = np.array(_evaluate(dut, settings)).reshape(planes, -1)
    np.testing.assert_array_equal(got, np.array(expected))
    # and the planes, weighted by their place, give the parallel terms
    np.testing.assert_array_equal((np.array(expected) << np.arange(planes)[:, None]).sum(axis=0),
                                  arith.terms(w, x).sum(axis=1))


@pytest.mark.parametrize("kind", ["xnor", "addsub", "ternary", "shift", "lut", "bitplane", "bitserial"])
def test_no_multiplier(kind):
    arith, _ = _random_config(kind, 7)
    text = rtlil.convert(pes.processing_element(simd=8, arithmetic=arith))
    assert "$mul" not in text and "$macc" not in text and "$div" not in text


def test_lookup_table_is_indexed_by_codes():
    # int2 inputs: codes 0, 1, 2, 3 are values 0, 1, -2, -1 (ranks 2, 3, 0, 1)
    table = ((1, 2, 3, 4), (-5, 6, -7, 8))
    arith = Arithmetic("lut", parse_type("uint1"), parse_type("int2"), table)
    assert pes.LookupProduct.code_table(arith) == [[3 + 7, 4 + 7, 1 + 7, 2 + 7], [-7 + 7, 8 + 7, -5 + 7, 6 + 7]]


def test_rejects_a_mismatched_arithmetic():
    arith = _arith("addsub", "bipolar", "uint3")
    with pytest.raises(HwnetError, match=r"^XnorPopcount needs an Arithmetic of kind 'xnor'"):
        pes.XnorPopcount(simd=4, arithmetic=arith)
    with pytest.raises(HwnetError, match=r"^simd must be a positive integer, not 0$"):
        pes.AddSubtract(simd=0, arithmetic=arith)
    with pytest.raises(HwnetError, match=r"^processing_element needs an Arithmetic"):
        pes.processing_element(simd=4, arithmetic="xnor")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["xnor", "addsub", "ternary", "shift", "lut", "bitplane"])
def test_constant_weights_specialize_to_the_same_sums(kind, seed):
    # weights in logic: no w port, the element built for these weights gives the twin's sums
    arith, simd = _random_config(kind, 300 * seed + len(kind))
    rng = np.random.default_rng(seed + 50)
    w, x = _stimuli(arith, simd, 12, rng)
    word = _pack(w[:1], arith.weight_type, arith.weight_type.bits)[0]
    dut = pes.processing_element(simd=simd, arithmetic=arith, weights=word)
    assert not hasattr(dut, "w") and dut.weights == word
    got = _evaluate(dut, [{"x": xi} for xi in _pack(x, arith.in_type, arith.in_type.bits)])
    np.testing.assert_array_equal(got, arith.terms(w[:1], x).sum(axis=1))


def test_constant_weights_are_checked():
    arith = _arith("xnor", "bipolar", "bipolar")
    with pytest.raises(HwnetError, match=r"^constant weights must be a 4-bit word \(an int\), not 16$"):
        pes.XnorPopcount(simd=4, arithmetic=arith, weights=16)
    with pytest.raises(HwnetError, match=r"takes no constant weights$"):
        pes.processing_element(simd=4, arithmetic=_arith("bitserial", "int3", "uint2"), weights=0)
