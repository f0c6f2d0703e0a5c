"""An ASIC-style target: technology-independent Verilog, and a generic gate-level synthesis as an area proxy.

:func:`asic_verilog` turns a compiled design (:class:`hwnet.compiler.DesignPlan`) into one flat Verilog module that
any synthesis tool takes: no vendor primitives, no ``initial`` blocks and no register initial values (ASIC flows
ignore them), every weight and threshold ROM turned into constant logic. :func:`asic_synthesize` maps a Verilog
text to a small library of generic gates with yosys and counts its cells, flip-flops and NAND2 equivalents (an
area proxy, see below), with the same multiplier count as :mod:`hwnet.synth`. Both are cached on disk by content
(``<cache>/asic/`` and ``<cache>/asic-synth/``, see :func:`hwnet.toolchain.cache_dir`), keyed by the input
Verilog, the top, the yosys version and the exact script.

The technology-independent Verilog (:func:`asic_verilog_script`)
------------------------------------------------------------------
The design's FPGA Verilog (:func:`hwnet.sim.cache.cached_verilog`, the same text the FPGA targets build) is read
by yosys and run through ``hierarchy -check -top TOP; proc; flatten -noscopeinfo; opt_expr; opt_clean`` (one
flat module), then ``memory -nomap`` (memories collected, their read registers merged into the read ports) and
``memory_map``, which turns every memory into logic: a ROM (no write port) into a multiplexer tree over its
constant words, a RAM (the matrix-vector unit's input buffer, line buffers, FIFO storage) into one register per
bit with write decoding, each synchronous read port into a read register. Then ``attrmap -remove init`` drops
every register's initial value (the RAMs' initial contents among them) *before* ``opt -full; clean -purge``, so
that no optimization may rely on one, and ``write_verilog -noattr`` writes coarse RTL (``assign`` expressions,
``always @(posedge clk)`` blocks): the ROM contents survive as constants in that logic, not as ``initial``
blocks or ``$readmemh`` files, and registers that only ever hold a constant are folded away.

Initial values are not needed: every register Amaranth generates in the ``sync`` domain (hwnet uses no
``reset_less`` signal) is reset to its initial value while ``rst`` is high (a synchronous reset: yosys sees it as
``$sdff``), so holding ``rst`` high for clock edges at start-up (as the simulation driver does; an ASIC drives it
from a reset pin or a power-on-reset cell, where an FPGA has its configuration) puts the design in its initial
state. Only data registers have no reset: memory read registers, RAM words and FIFO storage, which are always
written before they are read (``rtl_tests/test_rtl_asic.py`` runs the netlist with random power-up contents in
every register to show it).

The area proxy (:func:`asic_synth_script`)
------------------------------------------
``synth -top TOP -flatten -noabc`` (yosys' generic synthesis: coarse optimizations, ``memory_map``, ``techmap``
to single-bit gates), then ``dfflegalize`` to the flip-flop kinds a simple standard-cell library has (a plain
D flip-flop, and D flip-flops with an active-low asynchronous reset or set, and a latch: clock enables and
synchronous resets, which such libraries lack, become gates in front of the D input), then
``abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX`` (:data:`GATES`: two-input gates and a 2:1 multiplexer,
inverters added by abc; yosys' default gate set, named explicitly so that a yosys update cannot change it), then
``stat``. Before that, the same technology-independent pre-pass as :func:`hwnet.synth.yosys_script` counts the
multiplications (``$mul`` cells after ``proc; flatten; opt_expr; opt_clean``): with two variable operands (a
general multiplier) or one constant operand (shift-and-add); the certificate is ``general_multipliers == 0``.

NAND2 equivalents weight each mapped cell by its area relative to a two-input NAND, taken from the SkyWater
SKY130 high-density library ``sky130_fd_sc_hd`` (the open PDK most open ASIC flows use), drive strength 1: the
cell widths in the library's LEF files (``cells/<name>/sky130_fd_sc_hd__<name>_1.lef``, ``SIZE``, in
github.com/google/skywater-pdk-libs-sky130_fd_sc_hd), all cells 2.72 um high, counted in ``unithd`` placement
sites of 0.46 um (:data:`CELL_LIBRARY`); ``nand2_1`` is 3 sites (3.7536 um^2, the Liberty ``area``), so a cell of
``s`` sites weighs ``s / 3``:

=================  ==================  =====  ======
yosys cell         sky130_fd_sc_hd     sites  NAND2
=================  ==================  =====  ======
``$_BUF_``         ``buf_1``           3      1.00
``$_NOT_``         ``inv_1``           3      1.00
``$_NAND_``        ``nand2_1``         3      1.00
``$_NOR_``         ``nor2_1``          3      1.00
``$_AND_``         ``and2_1``          5      1.67
``$_OR_``          ``or2_1``           5      1.67
``$_ANDNOT_``      ``nor2b_1``         5      1.67
``$_ORNOT_``       ``nand2b_1``        5      1.67
``$_XOR_``         ``xor2_1``          7      2.33
``$_XNOR_``        ``xnor2_1``         7      2.33
``$_MUX_``         ``mux2_1``          9      3.00
``$_DFF_P_``       ``dfxtp_1``         16     5.33
``$_DFF_PN0_``     ``dfrtp_1``         20     6.67
``$_DFF_PN1_``     ``dfstp_1``         21     7.00
``$_DLATCH_P_``    ``dlxtp_1``         12     4.00
=================  ==================  =====  ======

(``$_ANDNOT_`` is ``A & ~B``, which ``nor2b`` computes as ``~A & B_N``; ``$_ORNOT_`` is ``A | ~B``, ``nand2b``'s
``A_N | ~B``.) The classic gate-equivalent tables of older libraries are close (AND2/OR2 1.33, XOR2 2-2.33,
MUX2 2.33, DFF 5-6) but count an inverter as 0.67; sky130's ``inv_1`` is as wide as ``nand2_1``. This is a
proxy, not an ASIC area: the gate mapping optimizes for yosys' own cell costs, not sky130's; there is no sizing,
buffering, clock tree, placement density or routing; and memories are counted as flip-flops and gates, where an
ASIC would use SRAM or ROM macros for large ones. It ranks designs of the same flow against each other.
"""

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import HwnetError
from .synth import (MAPPED_STAT, _IGNORED_CELLS, _cache_path, _cells, _check_top, _load_cached, _read_json,
                    _store, _tool, _version, multiplications, prepass_script, run_yosys_script)

__all__ = ["GATES", "CELL_LIBRARY", "NAND2_WEIGHTS", "AsicReport", "asic_verilog", "asic_synthesize",
           "asic_verilog_script", "asic_synth_script"]

#: The gate types ``abc -g`` maps the logic to (it adds ``$_NOT_`` itself).
GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"

#: Mapped yosys cell -> (its ``sky130_fd_sc_hd`` counterpart, drive strength 1; its width in 0.46 um ``unithd``
#: sites, from the cell's LEF ``SIZE``).
CELL_LIBRARY = {
    "$_BUF_": ("buf_1", 3), "$_NOT_": ("inv_1", 3), "$_NAND_": ("nand2_1", 3), "$_NOR_": ("nor2_1", 3),
    "$_AND_": ("and2_1", 5), "$_OR_": ("or2_1", 5), "$_ANDNOT_": ("nor2b_1", 5), "$_ORNOT_": ("nand2b_1", 5),
    "$_XOR_": ("xor2_1", 7), "$_XNOR_": ("xnor2_1", 7), "$_MUX_": ("mux2_1", 9),
    "$_DFF_P_": ("dfxtp_1", 16), "$_DFF_PN0_": ("dfrtp_1", 20), "$_DFF_PN1_": ("dfstp_1", 21),
    "$_DLATCH_P_": ("dlxtp_1", 12),
}
_NAND2_SITES = 3
_SITE_UM2 = 0.46 * 2.72
#: Mapped yosys cell -> its area in NAND2 equivalents (sky130_fd_sc_hd ``nand2_1`` = 1).
NAND2_WEIGHTS = {cell: sites / _NAND2_SITES for cell, (_, sites) in CELL_LIBRARY.items()}
_SEQUENTIAL = ("$_DFF_P_", "$_DFF_PN0_", "$_DFF_PN1_", "$_DLATCH_P_")

# Instances of FPGA primitives, initial blocks and values: what the ASIC Verilog must not hold (a last check on
# what yosys wrote).
_VENDOR_RE = re.compile(r"^\s*(SB_\w+|TRELLIS_\w+|DP16KD|PDPW16KD|EHXPLLL|MULT18X18D|MULT9X9D|ALU54B|ALU24B|CCU2C|"
                        r"PFUMX|L6MUX21|LUT4)\s", re.MULTILINE)
_INITIAL_RE = re.compile(r"^\s*initial\b|\$readmem[hb]\b|^\s*reg\b[^;]*=", re.MULTILINE)


@dataclass(frozen=True)
class AsicReport:
    """What a Verilog design costs after yosys generic synthesis to simple gates, and its multiplier count.

    Members
    -------
    top : str
        The top module synthesized.
    yosys : str
        The yosys version line.
    gates : str
        The gate types ``abc -g`` mapped to (:data:`GATES`).
    cells : dict
        Cell counts by type after mapping (``$_NAND_``, ``$_DFF_P_``, ...; keys of :data:`CELL_LIBRARY`).
    coarse_cells : dict
        Cell counts by type after the technology-independent pre-pass (``$mul``, ``$add``, ``$sdff``, ...).
    cell_count : int
        All cells after mapping, as yosys ``stat`` counts them.
    ffs : int
        Flip-flops (and latches) after mapping.
    nand2_equivalents : float
        Cell area in NAND2 equivalents: ``sum(NAND2_WEIGHTS[type] * count)`` over ``cells``.
    ff_nand2_equivalents : float
        The part of ``nand2_equivalents`` in flip-flops (and latches).
    general_multipliers : int
        ``$mul`` cells with two variable operands before mapping.
    constant_multiplications : int
        ``$mul`` cells with a constant operand (not a power of two, which ``opt_expr`` turns into a shift) before
        mapping: shift-and-add, not counted as multipliers.
    """
    top: str
    yosys: str
    gates: str
    cells: dict
    coarse_cells: dict
    cell_count: int
    ffs: int
    nand2_equivalents: float
    ff_nand2_equivalents: float
    general_multipliers: int
    constant_multiplications: int

    @property
    def multipliers(self):
        """General multipliers before mapping (after it everything is gates)."""
        return self.general_multipliers

    @property
    def multiplier_free(self):
        """The certificate: no multiplier of two variables."""
        return self.multipliers == 0

    @property
    def logic_nand2_equivalents(self):
        """The combinational part of ``nand2_equivalents``."""
        return self.nand2_equivalents - self.ff_nand2_equivalents

    @property
    def cell_area_um2(self):
        """``nand2_equivalents`` in square micrometres of sky130_fd_sc_hd cells (NAND2 = 3.7536 um^2): cell area
        only, before placement density, buffering and routing."""
        return self.nand2_equivalents * _NAND2_SITES * _SITE_UM2

    def summary(self):
        """A JSON-ready dictionary."""
        return {"script": f"synth -top {self.top} -flatten -noabc; dfflegalize; abc -g {self.gates}",
                "yosys": " ".join(self.yosys.split()[:2]),
                "library": "sky130_fd_sc_hd drive-1 cell areas, NAND2 = 3.7536 um^2",
                "cell_count": self.cell_count, "ffs": self.ffs,
                "nand2_equivalents": round(self.nand2_equivalents, 2),
                "ff_nand2_equivalents": round(self.ff_nand2_equivalents, 2),
                "logic_nand2_equivalents": round(self.logic_nand2_equivalents, 2),
                "cell_area_um2": round(self.cell_area_um2, 1),
                "general_multipliers": self.general_multipliers,
                "constant_multiplications": self.constant_multiplications,
                "multipliers": self.multipliers, "multiplier_free": self.multiplier_free, "cells": dict(self.cells)}

    def markdown(self):
        """A short Markdown section: the totals, then the cells by type with their weights."""
        mult = "0" if self.multiplier_free else f"**{self.multipliers}** (`$mul` of two variables)"
        lines = ["## ASIC area proxy", "",
                 f"yosys generic synthesis (`synth -flatten`, `abc -g {self.gates}`); NAND2 equivalents from "
                 "sky130_fd_sc_hd drive-1 cell areas. A proxy: no sizing, buffering, clock tree or routing, "
                 "memories as flip-flops and gates.", "",
                 "| cells | flip-flops | NAND2 equivalents | of which flip-flops | cell area (sky130 HD) | "
                 "multipliers |", "|---:|---:|---:|---:|---:|---:|",
                 f"| {self.cell_count:,} | {self.ffs:,} | {self.nand2_equivalents:,.1f} | "
                 f"{self.ff_nand2_equivalents:,.1f} | {self.cell_area_um2:,.0f} um^2 | {mult} |", "",
                 "| cell | sky130_fd_sc_hd | count | NAND2 each | NAND2 total |", "|---|---|---:|---:|---:|"]
        for cell, n in sorted(self.cells.items(), key=lambda kv: -kv[1] * NAND2_WEIGHTS[kv[0]]):
            lines.append(f"| `{cell}` | `{CELL_LIBRARY[cell][0]}` | {n:,} | {NAND2_WEIGHTS[cell]:.2f} | "
                         f"{n * NAND2_WEIGHTS[cell]:,.1f} |")
        return "\n".join(lines) + "\n"


def asic_verilog_script(*, top):
    """The yosys script :func:`asic_verilog` runs on ``design.v`` in its working directory; it writes ``asic.v``."""
    _check_top(top)
    return "\n".join([
        "read_verilog design.v",
        f"hierarchy -check -top {top}", "proc", "flatten -noscopeinfo", "opt_expr", "opt_clean",
        "memory -nomap", "memory_map",   # every memory into logic: ROMs into constant tables, RAMs into registers
        "attrmap -remove init",          # no register initial values (before opt, so nothing relies on one)
        "opt -full", "clean -purge",
        "check -assert",
        "write_verilog -noattr asic.v"]) + "\n"


def asic_verilog(plan, *, top="hwnet_top"):
    """Technology-independent Verilog of ``plan`` (a :class:`hwnet.compiler.DesignPlan`), top module ``top``.

    One flat module with the same ports as the FPGA Verilog (``clk``, ``rst``, the ``i``/``o`` streams), no
    vendor primitive, no ``initial`` block, no register initial value; weight and threshold ROMs are logic.
    Hold ``rst`` high for a few clock edges at start-up (verified with 3, as :mod:`hwnet.sim` does, from random
    register contents). Cached by content; raises :class:`HwnetError` for a plan that keeps weights in SPRAM, or
    if yosys is missing or fails.
    """
    from .compiler import DesignPlan
    if not isinstance(plan, DesignPlan):
        raise HwnetError(f"plan must be a DesignPlan (hwnet.compiler.plan(network)), got {type(plan).__name__}")
    if plan.spram_words:
        raise HwnetError("the ASIC target keeps weights in ROM logic; compile without --spram "
                         f"({', '.join(s.name for s in plan.streamed_stages)} stream weights from SPRAM)")
    script = asic_verilog_script(top=top)
    from .sim.cache import cached_verilog
    verilog = cached_verilog(plan, top=top)
    yosys = _tool("YOSYS")
    path = _cache_path("asic", verilog, top, _version(yosys), script)
    cached = _load_cached(path, lambda data: data["verilog"])
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="hwnet-asic-") as work:
        error = run_yosys_script(yosys, verilog, script, work)
        if error:
            raise HwnetError(f"yosys could not make technology-independent Verilog of top {top!r}: {error} (a bug "
                             f"in hwnet, please report it)")
        try:
            text = Path(work, "asic.v").read_text()
        except OSError as exc:
            raise HwnetError(f"yosys wrote no asic.v ({exc}); a bug in hwnet, please report it") from None
    leftover = _VENDOR_RE.search(text) or _INITIAL_RE.search(text)
    if leftover:
        raise HwnetError(f"the ASIC Verilog still holds {leftover.group(0).strip()!r}; a bug in hwnet, please "
                         f"report it")
    _store(path, {"verilog": text})
    return text


def asic_synth_script(*, top):
    """The yosys script :func:`asic_synthesize` runs on ``design.v`` in its working directory.

    It writes ``coarse.json`` (``stat -json`` after the pre-pass), ``muls.json`` (the pre-pass's ``$mul`` cells)
    and ``mapped.json`` (``stat -json`` after mapping to :data:`GATES`).
    """
    _check_top(top)
    ffs = " ".join(f"-cell {cell} 01" for cell in _SEQUENTIAL)
    return "\n".join([
        "read_verilog design.v", *prepass_script(top),
        f"synth -top {top} -flatten -noabc",
        f"dfflegalize {ffs}",
        f"abc -g {GATES}",
        "opt_clean", f"delete t:{' t:'.join(_IGNORED_CELLS)}",
        MAPPED_STAT]) + "\n"


def asic_synthesize(verilog, *, top="hwnet_top"):
    """Synthesize ``verilog`` (text) to generic gates; returns an :class:`AsicReport`.

    Takes any technology-independent Verilog (the output of :func:`asic_verilog`, or the FPGA Verilog of a design
    without vendor primitives). Cached by content; raises :class:`HwnetError` if yosys is missing or fails.
    """
    script = asic_synth_script(top=top)
    yosys = _tool("YOSYS")
    path = _cache_path("asic-synth", verilog, top, _version(yosys), script)
    cached = _load_cached(path, lambda data: AsicReport(**data))
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="hwnet-asic-synth-") as work:
        error = run_yosys_script(yosys, verilog, script, work)
        if error:
            hint = (" (the ASIC target takes technology-independent Verilog: make it with hwnet.asic.asic_verilog)"
                    if "is not part of the design" in error else
                    " (fix the Verilog; if hwnet generated it, this is a bug in hwnet, please report it)")
            raise HwnetError(f"yosys generic synthesis of top {top!r} failed: {error}{hint}")
        coarse = _cells(_read_json(Path(work, "coarse.json"), "yosys stat"))
        stat = _read_json(Path(work, "mapped.json"), "yosys stat")
        general, constant = multiplications(_read_json(Path(work, "muls.json"), "yosys write_json"))
    cells = _cells(stat)
    unknown = sorted(set(cells) - set(NAND2_WEIGHTS))
    if unknown:
        raise HwnetError(f"generic synthesis left cells without a NAND2 weight: {', '.join(unknown)}; the design "
                         f"needs flip-flops or latches a simple standard-cell library lacks (or this is a bug in "
                         f"hwnet, please report it)")
    sequential = {cell: n for cell, n in cells.items() if cell in _SEQUENTIAL}
    report = AsicReport(
        top=top, yosys=_version(yosys), gates=GATES, cells=cells, coarse_cells=coarse,
        cell_count=int(stat["design"]["num_cells"]), ffs=sum(sequential.values()),
        nand2_equivalents=_nand2(cells), ff_nand2_equivalents=_nand2(sequential),
        general_multipliers=general, constant_multiplications=constant)
    _store(path, dataclasses.asdict(report))
    return report


def _nand2(cells):
    return sum(CELL_LIBRARY[cell][1] * n for cell, n in cells.items()) / _NAND2_SITES
