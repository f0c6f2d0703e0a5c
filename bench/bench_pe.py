"""Processing-element benchmark: what each multiplier-free processing element costs on iCE40 and ECP5, against
the naive reference written with ``*`` and Python ``sum()``.

Every design is registered on both sides: the ``simd`` weight codes and the ``simd`` input codes each in a
register loaded from input ports ("ROM-fed": the weight register stands for a block RAM's output register), the
datapath between them combinational, its output in a register. With "constant weights" there is no weight
register: the weights are random constants in the logic, as in a fully unrolled layer (hwnet's PE is built for
them, ``processing_element(..., weights=word)``; the naive and balanced-tree designs get ``w.eq(constant)`` and
leave the simplification to yosys).
The datapaths compared:

- hwnet: :func:`hwnet.gateware.pe.processing_element` for a :class:`hwnet.compiler.Arithmetic`;
- naive: the same sum written the obvious way in Amaranth: each lane's codes decoded into signed values
  (bipolar ``Mux(b, 1, -1)``, ternary/int ``.as_signed()``, ``pot<k>`` an ``Array`` of its values indexed by
  the code, uint as is) and ``sum(w_j * x_j)``; lookup products ``sum(table[w_j][x_j])`` (no ``*``); bit-serial
  one plane, ``sum(Mux(sign_plane, -b_j, b_j) * x_j)``;
- balanced tree (XNOR only): :func:`hwnet.gateware.popcount.balanced_sum` over the XNOR bits, the plain
  popcount tree of ``+`` that the compressor tree replaces.

Every design is first checked in amaranth.sim on a few random vectors (and the all-min/all-max ones): the PE
against its numpy twin ``Arithmetic.terms`` (``plane_terms`` for bit-serial), the naive one against the true
dot product, the balanced tree against the popcount; a wrong circuit is never measured. Then:

- yosys (:func:`hwnet.synth.synthesize`: ``synth_ice40`` / ``synth_ecp5 -top top``, as amaranth-boards runs
  them) on the design with parallel ports: LUT4 per input lane (LUT4 cells / simd), carry cells, flip-flops,
  and the multiplier count (``SynthReport.multipliers``: ``$mul`` cells with two variable operands before
  mapping, plus DSP blocks after it). An ECP5 ``CCU2C`` carry cell holds two LUT4s of its own, so the ECP5
  figure is LUT4-equivalents ``LUT4 + 2 * CCU2C``; ``PFUMX``/``L6MUX21`` slice muxes are listed apart.
- nextpnr (:func:`hwnet.synth.place_and_route`: iCE40UP5K-SG48 aiming at 48 MHz, LFE5U-25F-CABGA256 aiming at
  100 MHz, placement seed 1, ``--timing-allow-fail``): estimated Fmax of the same registered datapath in a top
  with two pins besides the clock: the weight and input registers form one shift register loaded from pin
  ``din``, and the output register is XOR-reduced into a flip-flop on pin ``dout``. An estimate of nextpnr's
  timing analysis, not a board measurement. A design that cannot fit the device (more LUT4s or DSP blocks
  than it has) is not placed.

Results are cached on disk by hwnet.synth, so a rerun only redoes what changed. Prints a table and writes
build/bench/pe.{md,json,png}. Usage:

    python bench/bench_pe.py [--quick] [--jobs 2] [--out build/bench]
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Array, Cat, ClockDomain, Const, Elaboratable, Module, Mux, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwnet import synth  # noqa: E402
from hwnet.compiler import Arithmetic  # noqa: E402
from hwnet.datatypes import parse_type  # noqa: E402
from hwnet.errors import HwnetError  # noqa: E402
from hwnet.gateware import popcount  # noqa: E402
from hwnet.gateware.pe import processing_element  # noqa: E402

SEED = 2026
TOP = "top"
CHECK_VECTORS = 4
FAMILIES = ("ice40", "ecp5")
# Device capacity, for skipping a place-and-route that cannot fit: iCE40UP5K 5,280 LUT4 and no DSP in use
# (synth_ice40 runs without -dsp); LFE5U-25F 24,288 LUT4 and 28 MULT18X18D.
CAPACITY = {"ice40": {"luts": 5280, "ffs": 5280, "dsp": 0}, "ecp5": {"luts": 24288, "ffs": 24288, "dsp": 28}}


@dataclass(frozen=True)
class Config:
    """One processing-element configuration: kind, weight and input type, lanes, weights from a register
    ("rom") or constants ("const")."""
    kind: str
    weight: str
    inp: str
    simd: int = 32
    weights: str = "rom"
    naive: bool = True

    @property
    def name(self):
        const = ", const w" if self.weights == "const" else ""
        return f"{self.kind} {self.weight} x {self.inp}, simd {self.simd}{const}"


FULL = (
    Config("xnor", "bipolar", "bipolar", 64), Config("xnor", "bipolar", "bipolar", 64, "const"),
    # The naive sum at SIMD 256 (256 multipliers in one chain of adders) alone takes yosys and nextpnr about
    # 25 minutes here; left out of the default run.
    Config("xnor", "bipolar", "bipolar", 256, naive=False),
    Config("xnor", "bipolar", "bipolar", 256, "const", naive=False),
    Config("addsub", "bipolar", "uint2"), Config("addsub", "bipolar", "uint4"), Config("addsub", "bipolar", "int8"),
    Config("ternary", "ternary", "uint2"), Config("ternary", "ternary", "int4"),
    Config("shift", "pot3", "uint4"), Config("shift", "pot4", "uint4"),
    Config("lut", "uint1", "uint3"), Config("lut", "uint2", "uint2"), Config("lut", "uint2", "uint4"),
    Config("bitplane", "int2", "uint2"), Config("bitplane", "int4", "int4"), Config("bitplane", "uint8", "uint8"),
    Config("bitserial", "int4", "uint4"),
)
QUICK = (Config("xnor", "bipolar", "bipolar", 64), Config("lut", "uint2", "uint2"))


def arithmetic(cfg):
    """The :class:`Arithmetic` of ``cfg``; a lookup table gets random products in -8 .. 8 (fixed seed)."""
    wt, xt = parse_type(cfg.weight), parse_type(cfg.inp)
    products = None
    if cfg.kind == "lut":
        table = np.random.default_rng(SEED).integers(-8, 9, size=(wt.num_values, xt.num_values))
        products = tuple(tuple(int(v) for v in row) for row in table)
    return Arithmetic(cfg.kind, wt, xt, products)


def lanes(word, bits, simd):
    return [word[j * bits:(j + 1) * bits] for j in range(simd)]


def decode(code, dtype):
    """A signed Amaranth value of the element type's value for wire ``code``, the obvious way."""
    if dtype.kind == "bipolar":
        return Mux(code[0], 1, -1)
    if dtype.kind == "pot":
        values = dtype.decode(np.arange(1 << dtype.bits))
        shape = Shape.cast(range(int(values.min()), int(values.max()) + 1))
        return Array(Const(int(v), shape) for v in values)[code]
    return code.as_signed() if dtype.signed else code


class NaiveDotProduct(wiring.Component):
    """The naive reference: ``o = sum(w_j * x_j)`` over decoded lane values (see the module docstring), with
    the ports of the processing element it stands beside (``o`` signed, the exact range of the sum)."""

    def __init__(self, *, simd, arithmetic):
        self._simd, self._arith = simd, arithmetic
        wbits = 1 if arithmetic.kind == "bitserial" else arithmetic.weight_type.bits
        lane = naive_lane_products(arithmetic)
        ports = {"w": In(simd * wbits), "x": In(simd * arithmetic.in_type.bits),
                 "o": Out(Shape.cast(range(simd * min(0, lane.min()), simd * max(0, lane.max()) + 1)))}
        if arithmetic.kind == "bitserial":
            ports["sign_plane"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        a, simd = self._arith, self._simd
        xs = [decode(x, a.in_type) for x in lanes(self.x, a.in_type.bits, simd)]
        if a.kind == "lut":
            products = code_products(a)
            shape = Shape.cast(range(min(map(min, products)), max(map(max, products)) + 1))
            table = Array(Array(Const(v, shape) for v in row) for row in products)
            total = sum(table[w][x] for w, x in zip(lanes(self.w, a.weight_type.bits, simd),
                                                    lanes(self.x, a.in_type.bits, simd)))
        elif a.kind == "bitserial":
            ws = [Mux(self.sign_plane, -b, b) if a.weight_type.signed else b for b in lanes(self.w, 1, simd)]
            total = sum(w * x for w, x in zip(ws, xs))
        else:
            ws = [decode(w, a.weight_type) for w in lanes(self.w, a.weight_type.bits, simd)]
            total = sum(w * x for w, x in zip(ws, xs))
        m.d.comb += self.o.eq(total)
        return m


def code_products(arith):
    """The products table indexed by wire codes ``[wcode][xcode]`` (0 for illegal codes)."""
    wt, xt, table = arith.weight_type, arith.in_type, np.array(arith.products)
    rows = []
    for wc in range(1 << wt.bits):
        wv = wt.decode(wc)
        rows.append([int(table[wt.ranks(wv), xt.ranks(xt.decode(xc))])
                     if wt.is_legal([wv]) and xt.is_legal([xt.decode(xc)]) else 0 for xc in range(1 << xt.bits)])
    return rows


def naive_lane_products(arith):
    """Every value one lane of the naive reference can add (an int64 array)."""
    if arith.kind == "lut":
        return np.array(arith.products).ravel()
    xv = arith.in_type.values()
    wv = np.array([-1, 0, 1] if arith.weight_type.signed else [0, 1]) if arith.kind == "bitserial" \
        else arith.weight_type.values()
    return np.outer(wv, xv).ravel()


class BalancedPopCount(wiring.Component):
    """The plain popcount baseline: ``balanced_sum`` (a balanced tree of ``+``) over ``xnor(w_j, x_j)``."""

    def __init__(self, *, simd):
        self._simd = simd
        super().__init__({"w": In(simd), "x": In(simd), "o": Out(popcount.count_bits(simd))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.o.eq(popcount.balanced_sum([~(self.w[j] ^ self.x[j]) for j in range(self._simd)]))
        return m


class Registered(Elaboratable):
    """``dut`` between registers, in clock domain ``sync`` without reset.

    ``weights``: None (``dut.w`` from a register) or an int, the constant weight word. With ``pins`` false the
    registers load in parallel from the ports in :attr:`inputs` and the output register drives ``o``; with
    ``pins`` true they form one shift register loaded from ``din``, and ``dout`` registers the XOR of the
    output register's bits.
    """

    def __init__(self, dut, *, weights=None, pins=False):
        self.dut, self.weights, self.pins = dut, weights, pins
        names = [n for n in ("w", "x", "sign_plane") if hasattr(dut, n) and not (n == "w" and weights is not None)]
        self.inputs = {n: Signal(len(getattr(dut, n)), name=n) for n in names}
        self.cd = ClockDomain("sync", reset_less=True)
        if pins:
            self.din, self.dout = Signal(name="din"), Signal(name="dout")
            self.ports = [self.cd.clk, self.din, self.dout]
        else:
            self.o = Signal(dut.o.shape(), name="o")
            self.ports = [self.cd.clk, *self.inputs.values(), self.o]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.cd
        m.submodules.dut = dut = self.dut
        regs = {n: Signal(len(sig), name=f"{n}_reg") for n, sig in self.inputs.items()}
        if self.pins:
            chain = Cat(*regs.values())
            m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
        else:
            m.d.sync += [regs[n].eq(sig) for n, sig in self.inputs.items()]
        m.d.comb += [getattr(dut, n).eq(reg) for n, reg in regs.items()]
        if self.weights is not None and hasattr(dut, "w"):  # hwnet's PE takes its constant weights itself
            m.d.comb += dut.w.eq(self.weights)
        out = Signal(dut.o.shape(), name="o_reg")
        m.d.sync += out.eq(dut.o)
        if self.pins:
            m.d.sync += self.dout.eq(out.xor())
        else:
            m.d.comb += self.o.eq(out)
        return m


@dataclass(frozen=True)
class Vector:
    """One stimulus: weight and input values (simd,), and the bit-serial plane (None otherwise)."""
    w: np.ndarray
    x: np.ndarray
    plane: int = None


def stimuli(cfg, arith, rng):
    """A few random vectors, then every lane at the four corners (smallest/largest weight x smallest/largest
    input); the same weights throughout for constant weights (the first random ones)."""
    wv, xv = arith.weight_type.values(), arith.in_type.values()
    corners = [(a, b) for a in (wv[0], wv[-1]) for b in (xv[0], xv[-1])]
    ws = [rng.choice(wv, cfg.simd) for _ in range(CHECK_VECTORS)] + [np.full(cfg.simd, a) for a, _ in corners]
    xs = [rng.choice(xv, cfg.simd) for _ in range(CHECK_VECTORS)] + [np.full(cfg.simd, b) for _, b in corners]
    if cfg.weights == "const":
        ws = [ws[0]] * len(ws)
    planes = arith.weight_type.bits if cfg.kind == "bitserial" else None
    return [Vector(w, x, None if planes is None else k % planes) for k, (w, x) in enumerate(zip(ws, xs))]


def pack(codes, bits):
    return sum(int(c) << (j * bits) for j, c in enumerate(codes))


def port_values(arith, v):
    """The datapath's port values for vector ``v``: ``w`` (codes, or plane bits), ``x``, ``sign_plane``."""
    wt, xt = arith.weight_type, arith.in_type
    values = {"x": pack(xt.encode(v.x), xt.bits)}
    if v.plane is None:
        values["w"] = pack(wt.encode(v.w), wt.bits)
    else:
        values["w"] = pack((wt.encode(v.w) >> v.plane) & 1, 1)
        values["sign_plane"] = int(wt.signed and v.plane == wt.bits - 1)
    return values


def pe_expected(arith, v):
    """The numpy twin: the sum of the lanes' hardware terms (of one plane for bit-serial)."""
    if v.plane is None:
        return int(arith.terms(v.w, v.x).sum())
    return int(arith.plane_terms(v.w, v.x, v.plane).sum())


def naive_expected(arith, v):
    """The true dot product (of one weight bit plane, negated on the sign plane, for bit-serial)."""
    wt = arith.weight_type
    if arith.kind == "lut":
        return int(np.array(arith.products)[wt.ranks(v.w), arith.in_type.ranks(v.x)].sum())
    if v.plane is None:
        return int(np.dot(v.w, v.x))
    sign = -1 if wt.signed and v.plane == wt.bits - 1 else 1
    return sign * int(np.dot((wt.encode(v.w) >> v.plane) & 1, v.x))


def check(design, arith, vectors, expected):
    """Simulate the registered ``design`` (parallel ports) on ``vectors``; raise if any output differs."""
    sim = Simulator(design)
    sim.add_clock(1e-6)
    got = []

    async def bench(ctx):
        for v in vectors:
            for name, value in port_values(arith, v).items():
                if name in design.inputs:
                    ctx.set(design.inputs[name], value)
            await ctx.tick().repeat(2)
            got.append(ctx.get(design.o))

    sim.add_testbench(bench)
    sim.run()
    want = [expected(arith, v) for v in vectors]
    if got != want:
        raise AssertionError(f"simulation mismatch: got {got}, expected {want}")


def variants(cfg, arith):
    """(label, datapath factory, expected) of each design measured for ``cfg``."""
    out = [("hwnet", lambda weights: processing_element(simd=cfg.simd, arithmetic=arith, weights=weights),
            pe_expected)]
    if cfg.naive:
        out.append(("naive", lambda weights: NaiveDotProduct(simd=cfg.simd, arithmetic=arith), naive_expected))
    if cfg.kind == "xnor":
        out.append(("balanced tree", lambda weights: BalancedPopCount(simd=cfg.simd), pe_expected))
    return out


def build(cfg, arith, make, expected, rng):
    """Verilog of the design with parallel ports and of its few-pin top, after checking it in simulation."""
    vectors = stimuli(cfg, arith, rng)
    weights = port_values(arith, vectors[0])["w"] if cfg.weights == "const" else None
    check(Registered(make(weights), weights=weights), arith, vectors, expected)
    return tuple(to_verilog(Registered(make(weights), weights=weights, pins=pins)) for pins in (False, True))


def to_verilog(design):
    return verilog.convert(design, name=TOP, ports=design.ports, emit_src=False)


def no_fit(report, family):
    """Why the design cannot fit the place-and-route device ('' if it may)."""
    over = [f"{getattr(report, k)} {k} > {n}" for k, n in CAPACITY[family].items() if getattr(report, k) > n]
    return f"does not fit ({', '.join(over)})" if over else ""


def measure(ports_verilog, pins_verilog, family):
    """Synthesize the design with parallel ports, then place and route its few-pin top if it can fit.

    Returns (SynthReport, PnrReport or None, why not placed or '')."""
    report = synth.synthesize(ports_verilog, top=TOP, family=family)
    why = no_fit(report, family)
    if why:
        return report, None, why
    try:
        return report, synth.place_and_route(pins_verilog, top=TOP, family=family), ""
    except HwnetError as exc:
        return report, None, f"place and route failed: {exc}"


def figures(cfg, family, report, pnr, why):
    """The numbers reported for one design on one family (JSON-ready)."""
    luts = report.luts + (2 * report.carries if family == "ecp5" else 0)
    return {"lut4": luts, "lut4_per_lane": luts / cfg.simd, "luts": report.luts, "carries": report.carries,
            "lut_muxes": report.lut_muxes, "ffs": report.ffs, "dsp": report.dsp,
            "general_multipliers": report.general_multipliers,
            "constant_multiplications": report.constant_multiplications, "multipliers": report.multipliers,
            "fmax_mhz": pnr.fmax_mhz if pnr else None, "not_placed": why,
            "pnr": None if pnr is None else {"device": pnr.device, "package": pnr.package,
                                             "target_mhz": pnr.target_mhz, "utilisation": pnr.utilisation,
                                             "nextpnr": pnr.nextpnr},
            "synthesis": report.summary()}


def run(configs, jobs):
    """Check, build and measure every design of ``configs``; returns one result per design, in order. Tool
    runs start as soon as a design is built."""
    designs, results, futures = [], [], {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for cfg in configs:
            arith = arithmetic(cfg)
            for label, make, expected in variants(cfg, arith):
                print(f"   checking and generating {cfg.name} | {label}", flush=True)
                verilogs = build(cfg, arith, make, expected, np.random.default_rng(SEED))
                for family in FAMILIES:
                    what = f"{cfg.name} | {label} | {family}"
                    futures[pool.submit(timed, what, measure, *verilogs, family)] = (len(designs), family)
                designs.append((cfg, label))
                results.append({"config": cfg.name, **asdict(cfg), "variant": label})
        for done, future in enumerate(as_completed(futures), 1):
            k, family = futures[future]
            cfg, label = designs[k]
            seconds, measured = future.result()
            results[k][family] = figures(cfg, family, *measured)
            print(f"[{done:3}/{len(futures)}] {cfg.name} | {label} | {family}: "
                  f"{progress_line(results[k][family])} ({seconds:.0f} s)", flush=True)
    return results


def timed(what, fn, *args):
    """``fn(*args)`` and the seconds it took, announced as it starts (tool runs take seconds to minutes)."""
    print(f"   synthesizing {what}", flush=True)
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def progress_line(f):
    fmax = f"Fmax {f['fmax_mhz']:.1f} MHz" if f["fmax_mhz"] else f["not_placed"]
    return (f"{f['lut4']} LUT4 ({f['lut4_per_lane']:.2f}/lane), {f['carries']} carry, {f['ffs']} FF, "
            f"{f['multipliers']} multipliers, {fmax}")


def by_config(results):
    """{config name: {variant: result}}, configurations in run order."""
    grouped = {}
    for r in results:
        grouped.setdefault(r["config"], {})[r["variant"]] = r
    return grouped


def fmax_cell(f):
    return f"{f['fmax_mhz']:.1f}" if f["fmax_mhz"] else "-"


def per_lane_cell(f):
    return f"{f['lut4_per_lane']:.2f}"


# The columns of each family's table: (header, cell of one design's figures).
COLUMNS = {
    "ice40": (("LUT4/lane", per_lane_cell), ("SB_CARRY", lambda f: f["carries"]), ("FF", lambda f: f["ffs"]),
              ("Fmax MHz", fmax_cell), ("mult.", lambda f: f["multipliers"])),
    "ecp5": (("LUT4-eq/lane", per_lane_cell), ("LUT4 + 2 x CCU2C", lambda f: f"{f['luts']} + 2 x {f['carries']}"),
             ("PFUMX + L6MUX21", lambda f: f["lut_muxes"]), ("FF", lambda f: f["ffs"]),
             ("DSP", lambda f: f["dsp"]), ("Fmax MHz", fmax_cell), ("mult.", lambda f: f["multipliers"])),
}


def table_lines(header, rows):
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def family_table(grouped, family):
    """hwnet and naive side by side, and the LUT4 ratio; '-' where the naive reference was not measured."""
    columns = COLUMNS[family]
    header = ["configuration", *(h for h, _ in columns), *(f"naive {h}" for h, _ in columns),
              "LUT4 hwnet / naive"]
    rows = []
    for name, v in grouped.items():
        h = v["hwnet"][family]
        n = v["naive"][family] if "naive" in v else None
        rows.append([name, *(cell(h) for _, cell in columns), *(cell(n) if n else "-" for _, cell in columns),
                     f"{h['lut4'] / n['lut4']:.2f}" if n else "-"])
    return table_lines(header, rows)


def xnor_table(grouped):
    labels = ("hwnet", "balanced tree", "naive")
    header = ["configuration"]
    for family in FAMILIES:
        header += [f"{family} {COLUMNS[family][0][0]}: " + " / ".join(labels), f"{family} Fmax MHz"]
    rows = []
    for name, v in grouped.items():
        if "balanced tree" not in v:
            continue
        row = [name]
        for family in FAMILIES:
            fs = [v[k][family] if k in v else None for k in labels]
            row += [" / ".join(per_lane_cell(f) if f else "-" for f in fs),
                    " / ".join(fmax_cell(f) if f else "-" for f in fs)]
        rows.append(row)
    return table_lines(header, rows)


def not_placed(results):
    return [f"- {r['config']} | {r['variant']} | {family}: {r[family]['not_placed']}"
            for r in results for family in FAMILIES if r[family]["not_placed"]]


def markdown(report):
    grouped = by_config(report["results"])
    tools = report["tools"]
    lines = ["# Processing elements against the naive reference (bench/bench_pe.py)", "",
             f"Run of {report['date']} on {report['machine']['platform']} ({report['machine']['cpu_count']} "
             f"cores): {report['elapsed_s']:.0f} s wall, {report['jobs']} tool runs at once, designs already in "
             f"hwnet.synth's disk cache not run again. Tools: {tools['yosys']}, "
             f"{short_version(tools['nextpnr-ice40'])} (ice40), {short_version(tools['nextpnr-ecp5'])} (ecp5).", "",
             "Each design: registered weight codes (none for `const w`: the weights are constants in the logic) "
             "and registered input codes -> datapath -> registered output. LUT4, carries, FF and multipliers from "
             "yosys `synth_ice40` / `synth_ecp5` on that design; LUT4/lane = LUT4 cells / simd. On ECP5 a CCU2C "
             "carry cell holds two LUT4s of its own, so LUT4-eq = LUT4 + 2 x CCU2C; PFUMX/L6MUX21 (slice muxes "
             "that join LUT4s into LUT5/6 functions, no LUT of their own) are listed apart; `synth_ecp5` runs with "
             "its defaults, which build such wide functions (no `-nowidelut`). The naive ECP5 LUT4 figures leave "
             "out its DSP blocks, where its multipliers went. `mult.` = "
             "SynthReport.multipliers (two-variable `$mul` before mapping + DSP blocks after it; 0 is the "
             "multiplier-free certificate; on ECP5 a multiplier that lands in a DSP block is counted at both stages). "
             "DSP = MULT18X18D blocks the naive design takes on ECP5 (the LFE5U-25F has 28).", "",
             "Fmax: the same registered datapath in a top with one input pin (the weight and input registers "
             "form a shift register) and one output pin (the output register XOR-reduced into a flip-flop), "
             "placed and routed by nextpnr on iCE40UP5K-SG48 (target 48 MHz) and LFE5U-25F-CABGA256 (target "
             "100 MHz) with placement seed 1: nextpnr's estimate for the PE between registers, not a board "
             "measurement. `-`: not placed (reasons below).", "",
             "Naive reference: each lane decoded to signed values (`Mux(b, 1, -1)`, `.as_signed()`, an `Array` "
             "for pot<k>) and `sum(w_j * x_j)` with Python `sum()`; lookup products `sum(table[w_j][x_j])`; "
             "bit-serial one plane `sum(Mux(sign_plane, -b_j, b_j) * x_j)`; not measured at XNOR SIMD 256 (its "
             "yosys and nextpnr runs alone take about 25 minutes on these machines). Every design was checked in "
             "amaranth.sim against numpy before synthesis.", "",
             "## iCE40", "", *family_table(grouped, "ice40"), "",
             "## ECP5", "", *family_table(grouped, "ecp5"), "",
             "## XNOR popcount: hwnet vs the balanced tree of `+` vs naive", "", *xnor_table(grouped), ""]
    missing = not_placed(report["results"])
    if missing:
        lines += ["Not placed:", "", *missing, ""]
    return "\n".join(lines)


COLORS = {"hwnet": "tab:blue", "balanced tree": "tab:orange", "naive": "tab:green"}


def plot(report, path):
    """Two panels: iCE40 LUT4 per lane (log scale) and Fmax (iCE40 plain, ECP5 hatched), per configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grouped = list(by_config(report["results"]).values())
    xs = np.arange(len(grouped))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.6 * len(grouped) + 3), 8), sharex=True)
    for k, (variant, label) in enumerate([("hwnet", "hwnet"), ("balanced tree", "balanced tree (XNOR)"),
                                          ("naive", "naive sum(w * x)")]):
        ys = [v[variant]["ice40"]["lut4_per_lane"] if variant in v else np.nan for v in grouped]
        top.bar(xs + (k - 1) * 0.27, ys, 0.27, label=label, color=COLORS[variant])
    top.set_yscale("log")
    top.set_ylabel("iCE40 LUT4 per lane")
    top.legend()
    top.set_title("Processing elements vs the naive reference (registered inputs and output)")
    series = [("hwnet", "ice40"), ("naive", "ice40"), ("hwnet", "ecp5"), ("naive", "ecp5")]
    for k, (variant, family) in enumerate(series):
        ys = [(v[variant][family]["fmax_mhz"] or np.nan) if variant in v else np.nan for v in grouped]
        bottom.bar(xs + (k - 1.5) * 0.2, ys, 0.2, label=f"{variant}, {family}", color=COLORS[variant],
                   hatch="//" if family == "ecp5" else None, edgecolor="white" if family == "ecp5" else None)
    bottom.set_ylabel("Fmax MHz (nextpnr estimate, seed 1)")
    bottom.set_title("Fmax on iCE40UP5K and LFE5U-25F (no bar: not placed)", fontsize="medium")
    bottom.legend(fontsize="small")
    bottom.set_xticks(xs, [short_label(next(iter(v.values()))) for v in grouped], rotation=60, ha="right",
                      fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def short_label(r):
    types = "" if r["kind"] == "xnor" else f" {r['weight']} x {r['inp']}"
    simd = f" /{r['simd']}" if r["kind"] == "xnor" else ""
    return f"{r['kind']}{types}{simd}{' const w' if r['weights'] == 'const' else ''}"


def short_version(line):
    """'nextpnr-0.11.1' out of nextpnr's version line (the line itself if it has no such part)."""
    found = re.search(r"Version ([^)]+)", line or "")
    return found.group(1) if found else line


def tool_versions(results):
    versions = {"yosys": results[0]["ice40"]["synthesis"]["yosys"]}
    for family in FAMILIES:
        placed = [r[family]["pnr"] for r in results if r[family]["pnr"]]
        versions[f"nextpnr-{family}"] = placed[0]["nextpnr"] if placed else None
    return versions


def settings():
    """The exact tool settings: hwnet.synth's yosys scripts, and the nextpnr command line that
    hwnet.synth.place_and_route runs with its defaults (which it does not return; written out here)."""
    out = {}
    for family, (device, package, mhz) in {"ice40": ("up5k", "sg48", 48), "ecp5": ("25k", "CABGA256", 100)}.items():
        out[family] = {"yosys_script": synth.yosys_script(top=TOP, family=family),
                       "yosys_script_pnr": synth.yosys_script(top=TOP, family=family, netlist="netlist.json"),
                       "nextpnr": f"nextpnr-{family} --{device} --package {package} --freq {mhz} "
                                  f"--timing-allow-fail --seed 1 --json netlist.json --report report.json "
                                  f"--top {TOP} -q"}
    return out


def sources():
    """What was measured: digests of the processing-element sources."""
    files = ("hwnet/gateware/pe.py", "hwnet/gateware/popcount.py")
    return {"sha256": {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:16] for f in files}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {len(QUICK)} configurations")
    p.add_argument("--jobs", type=int, default=2, help="tool runs at once (default 2)")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"))
    args = p.parse_args(argv)
    # The naive reference's sum() is a linear chain of adders (256 deep for XNOR SIMD 256): Amaranth walks it
    # recursively (docs: the RecursionError pitfall), so give it the depth.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 50000))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run(QUICK if args.quick else FULL, args.jobs)
    report = {"date": datetime.date.today().isoformat(), "quick": args.quick, "jobs": args.jobs,
              "elapsed_s": time.perf_counter() - t0,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "tools": tool_versions(results), "settings": settings(), "sources": sources(),
              "capacity": CAPACITY, "results": results}
    md = markdown(report)
    print(md)
    (out / "pe.md").write_text(md)
    (out / "pe.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out / "pe.png")
    print(f"report: {out / 'pe.md'}")


if __name__ == "__main__":
    main()
