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


@pytest.mark.parametrize("bad", ["float", "uint0", "int1", "uint33", "", 5, "bipolar2"])
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
