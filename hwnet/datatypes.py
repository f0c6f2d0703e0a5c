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
"""

import re

import numpy as np

from .errors import HwnetError

__all__ = ["DataType", "BIPOLAR", "TERNARY", "parse_type"]

_MAX_BITS = 32


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
        if kind not in ("bipolar", "ternary", "uint", "int"):
            raise HwnetError(f"unknown element type kind {kind!r}")
        if kind in ("uint", "int") and not (1 <= bits <= _MAX_BITS):
            raise HwnetError(f"{kind}{bits}: bitlength must be between 1 and {_MAX_BITS}")
        if kind == "int" and bits < 2:
            raise HwnetError("int1 is not a type: use bipolar for a one-bit signed value")
        self.kind = kind
        self.bits = {"bipolar": 1, "ternary": 2}.get(kind, bits)
        self.name = kind if kind in ("bipolar", "ternary") else f"{kind}{bits}"
        if kind == "bipolar":
            self.min, self.max = -1, 1
        elif kind == "ternary":
            self.min, self.max = -1, 1
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

    def values(self):
        """All legal values, ascending, as an int64 array."""
        if self.kind == "bipolar":
            return np.array([-1, 1], dtype=np.int64)
        return np.arange(self.min, self.max + 1, dtype=np.int64)

    @property
    def num_values(self):
        return 2 if self.kind == "bipolar" else self.max - self.min + 1

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
        return f"{self.min} .. {self.max}"

    def encode(self, values):
        """Values -> unsigned wire codes (int64), ``bits`` wide each."""
        v = np.asarray(values, dtype=np.int64)
        if self.kind == "bipolar":
            return (v > 0).astype(np.int64)
        return v & ((1 << self.bits) - 1)

    def decode(self, codes):
        """Unsigned wire codes -> values (int64)."""
        c = np.asarray(codes, dtype=np.int64) & ((1 << self.bits) - 1)
        if self.kind == "bipolar":
            return 2 * c - 1
        if self.signed:
            return np.where(c >= (1 << (self.bits - 1)), c - (1 << self.bits), c)
        return c


def _legal_mask(dtype, a):
    if dtype.kind == "bipolar":
        return (a == 1) | (a == -1)
    return (a >= dtype.min) & (a <= dtype.max) & (np.mod(a, 1) == 0)


BIPOLAR = DataType("bipolar", 1)
TERNARY = DataType("ternary", 2)

_TYPE_RE = re.compile(r"^(u?int)(\d+)$")


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
        raise HwnetError(f"unknown element type {name!r}: use bipolar, ternary, uint<k> or int<k>")
    return DataType(m.group(1), int(m.group(2)))


def type_for_range(lo, hi):
    """The narrowest ``uint<k>``/``int<k>`` that holds every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return DataType("uint", max(1, int(hi).bit_length()))
    bits = max((-lo - 1).bit_length(), hi.bit_length() if hi > 0 else 0) + 1
    return DataType("int", max(2, bits))
