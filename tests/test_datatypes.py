import numpy as np
import pytest

from hwnet.datatypes import BIPOLAR, TERNARY, parse_type, type_for_range
from hwnet.errors import HwnetError


@pytest.mark.parametrize("name,lo,hi,bits", [
    ("bipolar", -1, 1, 1), ("ternary", -1, 1, 2), ("uint1", 0, 1, 1), ("uint8", 0, 255, 8),
    ("int2", -2, 1, 2), ("int8", -128, 127, 8), ("uint5", 0, 31, 5),
])
def test_ranges_and_round_trip(name, lo, hi, bits):
    t = parse_type(name)
    assert (t.min, t.max, t.bits, t.name) == (lo, hi, bits, name)
    v = t.values()
    assert v[0] == lo and v[-1] == hi and np.all(np.diff(v) > 0)
    codes = t.encode(v)
    assert codes.min() >= 0 and codes.max() < (1 << bits)
    assert len(set(codes.tolist())) == len(v)
    np.testing.assert_array_equal(t.decode(codes), v)


def test_bipolar_encoding_is_bit_one_for_plus_one():
    np.testing.assert_array_equal(BIPOLAR.encode([-1, 1, 1, -1]), [0, 1, 1, 0])
    assert TERNARY.num_values == 3 and BIPOLAR.num_values == 2


@pytest.mark.parametrize("k", range(2, 7))
def test_power_of_two_values_and_codes(k):
    t = parse_type(f"pot{k}")
    emax = 2 ** (k - 1) - 2
    assert t.max_exponent == emax and t.bits == k and t.name == f"pot{k}"
    mags = [2 ** e for e in range(emax + 1)]
    np.testing.assert_array_equal(t.values(), sorted([-m for m in mags] + [0] + mags))
    assert (t.min, t.max, t.num_values) == (-2 ** emax, 2 ** emax, 2 * emax + 3)
    # sign in the top bit, exponent code c >= 1 meaning 2**(c - 1) below it, 0 for zero
    for v in t.values():
        code = int(t.encode(v))
        c, sign = code & ((1 << (k - 1)) - 1), code >> (k - 1)
        assert (c == 0 and v == 0 and sign == 0) or (c >= 1 and abs(v) == 2 ** (c - 1) and sign == (v < 0))
    np.testing.assert_array_equal(t.decode(np.arange(1 << k)), [0 if (c & ((1 << (k - 1)) - 1)) == 0 else
                                  (-1 if c >> (k - 1) else 1) * 2 ** ((c & ((1 << (k - 1)) - 1)) - 1)
                                  for c in range(1 << k)])
    assert t.is_legal([0, 1, -1, t.max]) and not t.is_legal([3]) and not t.consecutive
    np.testing.assert_array_equal(t.ranks(t.values()), np.arange(t.num_values))
    with pytest.raises(HwnetError, match=r"not legal pot"):
        t.check([0, 3], "weights")


def test_pot2_is_ternary_with_the_same_codes():
    np.testing.assert_array_equal(parse_type("pot2").values(), TERNARY.values())
    np.testing.assert_array_equal(parse_type("pot2").encode([-1, 0, 1]), TERNARY.encode([-1, 0, 1]))


@pytest.mark.parametrize("bad", ["float", "uint0", "int1", "uint33", "", 5, "bipolar2", "pot1", "pot7"])
def test_bad_type_names(bad):
    with pytest.raises(HwnetError):
        parse_type(bad)


def test_check_names_what_is_wrong():
    with pytest.raises(HwnetError, match=r"weights: values \[0\] are not legal bipolar"):
        BIPOLAR.check([1, 0, -1], "weights")
    with pytest.raises(HwnetError, match="not legal uint4"):
        parse_type("uint4").check([3, 16], "x")
    with pytest.raises(HwnetError):
        parse_type("int4").check([0.5], "x")


@pytest.mark.parametrize("lo,hi", [(0, 0), (0, 1), (0, 255), (0, 256), (-1, 0), (-1, 1), (-128, 127),
                                   (-129, 127), (-128, 128), (-784, 784), (5, 9)])
def test_type_for_range_is_narrowest(lo, hi):
    t = type_for_range(lo, hi)
    assert t.min <= lo and hi <= t.max
    if t.bits > 1 and t.kind == "uint":
        assert hi > (1 << (t.bits - 1)) - 1
    if t.kind == "int" and t.bits > 2:
        narrower = parse_type(f"int{t.bits - 1}")
        assert lo < narrower.min or hi > narrower.max


@pytest.mark.parametrize("name", ["bipolar", "ternary", "uint1", "uint3", "int2", "int5"])
def test_codes_order_like_the_values(name):
    # the comparators of the max-pool and the board top's argmax compare codes: as two's complement or unsigned
    t = parse_type(name)
    values = t.values()
    codes = t.encode(values)
    if t.codes_order_signed:
        codes = np.where(codes >= 1 << (t.bits - 1), codes - (1 << t.bits), codes)
    assert np.array_equal(np.argsort(codes, kind="stable"), np.argsort(values, kind="stable"))
    assert not parse_type("pot3").codes_order_signed
