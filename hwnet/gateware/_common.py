"""Pieces every gateware block shares: the stream beat layout, parameter checks, value codes."""

import contextlib
import numbers

from amaranth.hdl import Const, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory

from ..errors import HwnetError

__all__ = ["beat_layout", "beat_signature", "check_positive_int", "first_code", "rom_read", "validating"]


@contextlib.contextmanager
def validating(component):
    """Context for a component constructor's parameter checks: if one raises, the half-built component is
    marked so that Amaranth does not also warn that it was created but never used."""
    try:
        yield
    except BaseException:
        component._MustUse__silence = True
        raise


def check_positive_int(value, what):
    """``value`` as an ``int`` if it is a positive integer (not a bool); else a one-line :class:`HwnetError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise HwnetError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


def beat_layout(lanes, bits):
    """Payload of one stream beat: ``lanes`` elements of ``bits`` bits and a ``last`` flag.

    Lane ``j`` of ``data`` is at bits ``[j * bits, (j + 1) * bits)``; ``last`` marks the final beat of a vector.
    Seen as a flat word (e.g. a Verilog port), ``data`` takes the low ``lanes * bits`` bits and ``last`` the
    top bit.
    """
    return data.StructLayout({"data": unsigned(lanes * bits), "last": unsigned(1)})


def beat_signature(lanes, bits):
    """``stream.Signature`` carrying :func:`beat_layout` payloads (the producer's view)."""
    return stream.Signature(beat_layout(lanes, bits))


def first_code(dtype):
    """Wire code of the smallest value of ``dtype``.

    Every element type's legal values have consecutive wire codes modulo ``2 ** bits``, so the ``y``-th
    smallest value is encoded as ``(first_code(dtype) + y) mod 2 ** bits``; this is how threshold counts are
    turned into output codes without a lookup table. Raises :class:`HwnetError` for a type where that fails.
    """
    values = dtype.values()
    codes = [int(c) for c in dtype.encode(values)]
    mask = (1 << dtype.bits) - 1
    if any(c != (codes[0] + y) & mask for y, c in enumerate(codes)):  # pragma: no cover - no such type yet
        raise HwnetError(f"{dtype.name}: values do not have consecutive wire codes; no threshold output "
                         f"encoder for it")
    return codes[0]


def rom_read(m, name, *, shape, words, addr, en):
    """A synchronous ROM read of ``words`` (a :class:`~amaranth.lib.memory.Memory` named ``name`` in ``m``,
    addressed by ``addr``, moving when ``en`` is high: the data of an address appears in the next such cycle),
    or, when there is one word, that word as a constant."""
    if len(words) == 1:
        return Const(words[0], shape)
    rom = Memory(shape=shape, depth=len(words), init=list(words))
    m.submodules[name] = rom
    port = rom.read_port()
    m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
    return port.data
