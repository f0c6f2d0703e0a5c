"""Element types of the integer contract.

Every tensor that crosses a layer boundary in hwnet has one of these element types. A type knows its legal
values (in ascending order), how many bits one element takes on a wire, and how to encode values into those
bits and back. The encodings are part of the contract (docs/ir.md):

``bipolar``
    values {-1, +1}; one bit, 1 means +1 and 0 means -1.
``uint<k>``
    values 0 .. 2**k - 1; k bits, plain binary.
``int<k>``
    values -2**(k-1) .. 2**(k-1) - 1; k bits, two's complement.
``ternary``
    values {-1, 0, +1}; two bits, two's complement (``int2`` without the value -2).
``pot<k>``
    power-of-two weights: 0 and ``±2**e`` for ``e`` in ``0 .. 2**(k-1) - 2``; k bits (2 <= k <= 6), sign in the top
    bit, exponent code ``c`` in the low ``k - 1`` bits with ``c = 0`` meaning zero and ``c >= 1`` meaning
    ``2**(c - 1)``. ``pot2`` holds the same values as ``ternary``, with the same codes. A weight type only:
    its values are not consecutive, so nothing thresholds into it.
"""

import re

import numpy as np

from .errors import HwnetError

__all__ = ["DataType", "BIPOLAR", "TERNARY", "parse_type"]

_MAX_BITS = 32
_POT_BITS = (2, 6)


class DataType:
    """One element type. Build with :func:`parse_type` (``parse_type("uint4")``) or the module constants.

    Members
    -------
    name : str
        Canonical name: ``bipolar``, ``ternary``, ``uint<k>`` or ``int<k>``.
    bits : int
        Bits per element on a wire.
    min, max : int
        Smallest and largest legal value.
    """

    __slots__ = ("name", "kind", "bits", "min", "max")

    def __init__(self, kind, bits):
        if kind not in ("bipolar", "ternary", "uint", "int", "pot"):
            raise HwnetError(f"unknown element type kind {kind!r}")
        if kind in ("uint", "int") and not (1 <= bits <= _MAX_BITS):
            raise HwnetError(f"{kind}{bits}: bitlength must be between 1 and {_MAX_BITS}")
        if kind == "int" and bits < 2:
            raise HwnetError("int1 is not a type: use bipolar for a one-bit signed value")
        if kind == "pot" and not (_POT_BITS[0] <= bits <= _POT_BITS[1]):
            raise HwnetError(f"pot{bits}: a power-of-two type takes {_POT_BITS[0]} to {_POT_BITS[1]} bits "
                             f"(sign and exponent code)")
        self.kind = kind
        self.bits = {"bipolar": 1, "ternary": 2}.get(kind, bits)
        self.name = kind if kind in ("bipolar", "ternary") else f"{kind}{bits}"
        if kind == "bipolar":
            self.min, self.max = -1, 1
        elif kind == "ternary":
            self.min, self.max = -1, 1
        elif kind == "pot":
            self.min, self.max = -(1 << self.max_exponent), 1 << self.max_exponent
        elif kind == "uint":
            self.min, self.max = 0, (1 << bits) - 1
        else:
            self.min, self.max = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def __repr__(self):
        return f"DataType({self.name})"

    def __str__(self):
        return self.name

    def __eq__(self, other):
        return isinstance(other, DataType) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    @property
    def signed(self):
        return self.min < 0

    @property
    def codes_order_signed(self):
        """True when the wire codes order like the values compared as two's complement (``int<k>``, ternary);
        ``uint<k>`` and bipolar codes (0 is -1, 1 is +1) order like the values compared unsigned; ``pot<k>``
        codes (sign and exponent) do not order like the values at all."""
        return self.kind in ("int", "ternary")

    @property
    def max_exponent(self):
        """Largest exponent ``e`` of a ``pot<k>`` value ``±2**e``: ``2**(k-1) - 2``."""
        if self.kind != "pot":
            raise HwnetError(f"{self.name} is not a power-of-two type")
        return (1 << (self.bits - 1)) - 2

    @property
    def consecutive(self):
        """True when the legal values are consecutive integers (every type but bipolar and pot<k>)."""
        return self.kind not in ("bipolar", "pot")

    def values(self):
        """All legal values, ascending, as an int64 array."""
        if self.kind == "bipolar":
            return np.array([-1, 1], dtype=np.int64)
        if self.kind == "pot":
            mags = 1 << np.arange(self.max_exponent + 1, dtype=np.int64)
            return np.concatenate([-mags[::-1], [0], mags])
        return np.arange(self.min, self.max + 1, dtype=np.int64)

    @property
    def num_values(self):
        if self.kind == "bipolar":
            return 2
        if self.kind == "pot":
            return 2 * self.max_exponent + 3
        return self.max - self.min + 1

    def ranks(self, values):
        """Index of each value in :meth:`values` (0 for the smallest), int64."""
        v = np.asarray(values, dtype=np.int64)
        if self.consecutive:
            return v - self.min
        return np.searchsorted(self.values(), v).astype(np.int64)

    def is_legal(self, array):
        """True where every element of ``array`` is a legal value of this type."""
        a = np.asarray(array)
        if a.size == 0:
            return True
        if not np.issubdtype(a.dtype, np.integer):
            if not (np.issubdtype(a.dtype, np.number) and np.all(np.equal(np.mod(a, 1), 0))):
                return False
        if self.kind == "bipolar":
            return bool(np.all(np.abs(a) == 1))
        if self.kind == "pot":
            return bool(np.all(np.isin(a, self.values())))
        return bool(a.min() >= self.min and a.max() <= self.max)

    def check(self, array, what):
        """Raise a one-line :class:`HwnetError` naming ``what`` unless every element is legal."""
        a = np.asarray(array)
        if not self.is_legal(a):
            bad = a[~_legal_mask(self, a)].ravel()[:3]
            raise HwnetError(f"{what}: values {bad.tolist()} are not legal {self.name} values "
                             f"(legal: {self._legal_text()})")
        return a.astype(np.int64, copy=False)

    def _legal_text(self):
        if self.kind == "bipolar":
            return "-1 or +1"
        if self.kind == "pot":
            return f"0 or ±2**e for e in 0 .. {self.max_exponent}"
        return f"{self.min} .. {self.max}"

    def encode(self, values):
        """Values -> unsigned wire codes (int64), ``bits`` wide each."""
        v = np.asarray(values, dtype=np.int64)
        if self.kind == "bipolar":
            return (v > 0).astype(np.int64)
        if self.kind == "pot":
            mag = np.abs(v)
            code = np.where(mag > 0, _log2(mag) + 1, 0)
            return np.where(v < 0, 1 << (self.bits - 1), 0) | code
        return v & ((1 << self.bits) - 1)

    def decode(self, codes):
        """Unsigned wire codes -> values (int64)."""
        c = np.asarray(codes, dtype=np.int64) & ((1 << self.bits) - 1)
        if self.kind == "bipolar":
            return 2 * c - 1
        if self.kind == "pot":
            code = c & ((1 << (self.bits - 1)) - 1)
            mag = np.where(code > 0, np.left_shift(1, np.maximum(code - 1, 0)), 0)
            return np.where(c >> (self.bits - 1), -mag, mag)
        if self.signed:
            return np.where(c >= (1 << (self.bits - 1)), c - (1 << self.bits), c)
        return c


def _log2(magnitudes):
    """Exact log2 of positive powers of two (int64)."""
    return np.frexp(magnitudes.astype(np.float64))[1].astype(np.int64) - 1


def _legal_mask(dtype, a):
    if dtype.kind == "bipolar":
        return (a == 1) | (a == -1)
    if dtype.kind == "pot":
        return np.isin(a, dtype.values())
    return (a >= dtype.min) & (a <= dtype.max) & (np.mod(a, 1) == 0)


BIPOLAR = DataType("bipolar", 1)
TERNARY = DataType("ternary", 2)

_TYPE_RE = re.compile(r"^(u?int|pot)(\d+)$")


def parse_type(name):
    """Parse a type name (``bipolar``, ``ternary``, ``uint8``, ``int4``) into a :class:`DataType`."""
    if isinstance(name, DataType):
        return name
    if not isinstance(name, str):
        raise HwnetError(f"element type must be a string like 'bipolar' or 'uint8', not {name!r}")
    if name == "bipolar":
        return BIPOLAR
    if name == "ternary":
        return TERNARY
    m = _TYPE_RE.match(name)
    if not m:
        raise HwnetError(f"unknown element type {name!r}: use bipolar, ternary, uint<k>, int<k> or pot<k>")
    return DataType(m.group(1), int(m.group(2)))


def type_for_range(lo, hi):
    """The narrowest ``uint<k>``/``int<k>`` that holds every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return DataType("uint", max(1, int(hi).bit_length()))
    bits = max((-lo - 1).bit_length(), hi.bit_length() if hi > 0 else 0) + 1
    return DataType("int", max(2, bits))
