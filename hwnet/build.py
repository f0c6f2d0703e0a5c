"""``hwnet build``: a network on a board, from the model to a bitstream and a report.

:func:`build_board` runs, with progress:

1. auto-folding for the board's part (:func:`hwnet.autofold.auto_fold`), leaving room for the board top (the
   UART bridge of :class:`~hwnet.gateware.board.BoardTop`: :func:`board_top_reserve`);
2. compilation to a design directory (``design/``, as ``hwnet compile`` writes it) and a Verilator run of random
   inputs through it, which gives the cycles per inference and the latency and checks the outputs against the
   golden model;
3. the board top on the board's amaranth-boards platform (:class:`~hwnet.gateware.board.BoardPlatformTop`),
   built with amaranth's own build plan (the yosys script, pin constraints and commands amaranth-boards writes,
   in ``gateware/``), run command by command: yosys (with hwnet's pre-pass, :func:`hwnet.synth.prepass_script`,
   so the report certifies the whole board top multiplier-free), nextpnr (``--report``, seed 1, timing-driven at
   the design clock) and the bitstream packer;
4. the clock: first the board clock; then, unless told otherwise, a PLL (:mod:`hwnet.gateware.pll`) where it
   helps: at about 90% of the achieved Fmax when the design is much faster than the board clock
   (:data:`PLL_GAIN`), or slower than the board clock when it misses timing there. The PLL build is kept when it
   meets timing;
5. the report, ``board.json`` and ``board.md``: resources against the device, Fmax per clock and timing
   pass/fail, cycles per inference, inferences per second and latency at the achieved clock (and what the serial
   link allows), the multiplier count.

The output directory appears whole or not at all. A build that misses timing at every clock tried is written
anyway (its report says FAIL) and :attr:`BoardBuild.timing_met` is False: the CLI exits 1.
"""

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import protocol
from .boards import DEFAULT_BAUD
from .errors import HwnetError

__all__ = ["BoardBuild", "build_board", "build_asic", "board_top_reserve", "BOARD_TOP", "ASIC_TARGET", "PLL_GAIN"]

#: The top module name of a board build (and the bitstream's file name).
BOARD_TOP = "hwnet_board"

#: A PLL is tried when the board clock is at most this fraction of the achieved Fmax... (Fmax >= 1.25 x clock).
PLL_GAIN = 1.25
#: ... at this fraction of the achieved Fmax (nextpnr's Fmax moves a little with the target).
PLL_MARGIN = 0.9

#: The board top's cost beside the network, measured (synth_ice40 / synth_ecp5 of BoardTop less NetworkTop, a
#: 64-input network with ten 7-bit outputs): UART, CRC, frame state machines, the reply queue, the output beat
#: and argmax. The packer's input beat (one flip-flop per input bit) and the payload queue's block RAMs come on top.
_TOP_COST = {"ice40": {"lut4": 750, "ff": 500}, "ecp5": {"lut4": 850, "ff": 450}}
#: Payload bytes one block RAM holds as the 8-bit-wide queue (iCE40 512 x 8, ECP5 2048 x 9).
_QUEUE_BYTES = {"ice40": 512, "ecp5": 2048}


def board_top_reserve(budget, network, input_bits):
    """``budget`` less the board top's cost (:data:`_TOP_COST`, ``input_bits`` packer flip-flops, the payload
    queue's block RAMs and, on a part with SPRAM, the loader of the SPRAM image) for ``network``: what auto-folding
    may give the network."""
    cost = _TOP_COST[budget.family]
    payload = math.ceil(network.input_size * network.input_type.bits / 8) + 8
    ebr = math.ceil(payload / _QUEUE_BYTES[budget.family]) if payload > 64 else 0
    ff = cost["ff"] + input_bits
    if budget.spram:  # the SPRAM loader: its 128-byte chunk queue and the 64-bit word it assembles
        ebr += 1
        ff += 100
    lut4 = cost["lut4"] + (0.85 * ff if budget.family == "ice40" else 0)  # iCE40 logic cells (Budget.logic)
    if budget.lut4 - lut4 < 1 or budget.ebr - ebr < 0:
        raise HwnetError(f"{budget.name} is too small for the board top alone (about {lut4:.0f} LUT4 and {ebr} "
                         f"block RAMs); choose a larger board")
    return replace(budget, lut4=int(budget.lut4 - lut4), ff=int((budget.ff or budget.lut4) - ff),
                   ebr=budget.ebr - ebr, name=f"{budget.name} less the board top")


@dataclass
class BoardBuild:
    """The outcome of :func:`build_board`.

    Members
    -------
    board : :class:`hwnet.boards.Board`
    out_dir : Path
    bitstream : Path
    plan : :class:`~hwnet.compiler.DesignPlan`
    clock_hz : float
        The design clock of the build kept.
    pll : object or None
        The PLL's parameters (:mod:`hwnet.gateware.pll`), None when the board clock drives the design.
    timing_met : bool
    report : dict
        ``board.json``.
    """
    board: object
    out_dir: Path
    bitstream: Path
    plan: object
    clock_hz: float
    pll: object
    timing_met: bool
    report: dict = field(repr=False)


def _tool_path(name):
    """The executable amaranth's build would run for ``name``: ``$NAME`` (e.g. ``$NEXTPNR_ICE40``) or ``name``; the
    YoWASP tools are found beside this Python too (:func:`hwnet.synth._tool`)."""
    from amaranth._toolchain import tool_env_var
    from .synth import _tool
    from .toolchain import YOWASP_TOOLS
    var = tool_env_var(name)
    if var in YOWASP_TOOLS:
        return _tool(var)
    return shutil.which(os.environ.get(var, name))


_STEPS = {"yosys": "synthesis", "nextpnr-ice40": "place and route", "nextpnr-ecp5": "place and route",
          "icepack": "bitstream packing", "ecppack": "bitstream packing", "dfu-suffix": "DFU suffix"}
#: Commands a build may go without (the bitstream works; programming may warn).
_OPTIONAL = {"dfu-suffix"}


def _run_platform_build(board, plan, *, clock_hz, pll, baud, build_dir, progress):
    """One amaranth-boards build of the board top at ``clock_hz`` (a PLL with ``pll`` parameters, or the board
    clock); returns ``(nextpnr report dict, SynthReport, notes)``."""
    from amaranth._toolchain import tool_env_var
    from .gateware.board import BoardPlatformTop
    from .synth import MAPPED_STAT, _packing, _run, _version, prepass_script, read_synth_report
    from .toolchain import setup_environment
    setup_environment()
    divisor = uart_divisor(clock_hz, baud)
    clock = None
    if pll is not None:
        from .gateware.pll import PllClock
        clock = PllClock(family=board.family, f_in_hz=board.pll_in_hz, f_out_hz=clock_hz)
    top = BoardPlatformTop(plan=plan, board=board, divisor=divisor, clock=clock)
    platform = board.make_platform()
    overrides = {"script_after_read": "\n".join(prepass_script(BOARD_TOP)), "script_after_synth": MAPPED_STAT,
                 "nextpnr_opts": "--report report.json --timing-allow-fail --seed 1"}
    build_plan = platform.prepare(top, name=BOARD_TOP, **overrides)
    build_dir = Path(build_plan.extract(str(build_dir)))
    commands = json.loads((build_dir / f"build_{BOARD_TOP}.json").read_text())["commands"]
    notes = []
    for argv in commands:
        name = argv[0]
        exe = _tool_path(name)
        if exe is None:
            if name in _OPTIONAL:
                notes.append(f"{name} not found: the bitstream has no DFU suffix (dfu-util warns and still "
                             f"programs it; install dfu-util's dfu-suffix to add one)")
                continue
            raise HwnetError(f"{name} not found (set ${tool_env_var(name)} or install it; `make install` installs "
                             f"the YoWASP tools)")
        what = _STEPS.get(name, name)
        progress(f"  {what} ({name})...")
        t0 = time.monotonic()
        error = _run([exe, *argv[1:]], str(build_dir), name)
        if error:  # nextpnr's log goes to its .tim file: its utilisation after packing says what did not fit
            log = build_dir / f"{BOARD_TOP}.tim"
            lines = [" ".join(line.split()) for line in log.read_text().splitlines()] if log.exists() else []
            packed = _packing(lines) if "nextpnr" in name else ""
            raise HwnetError(f"{what} failed for {board.title}: {error}" + (f" (packed: {packed}; fold further "
                             f"with --target-cycles or choose a larger board)" if packed else ""))
        progress(f"  {what} done in {time.monotonic() - t0:.1f} s")
    report = json.loads((build_dir / "report.json").read_text())
    synth = read_synth_report(build_dir, top=BOARD_TOP, family=board.family, yosys=_version(_tool_path("yosys")))
    return report, synth, notes


def uart_divisor(clock_hz, baud):
    """Clock cycles per UART bit at ``clock_hz`` for ``baud``, or one :class:`HwnetError` line when the rate it
    gives is more than 2% off (the receiver samples each bit in its middle)."""
    if not baud or baud <= 0:
        raise HwnetError(f"the baud rate must be positive, got {baud}")
    divisor = round(clock_hz / baud)
    if divisor < 4:
        raise HwnetError(f"{baud} baud is too fast for a {clock_hz / 1e6:g} MHz clock (at least 4 cycles per bit); "
                         f"choose a lower --baud")
    error = abs(clock_hz / divisor - baud) / baud
    if error > 0.02:
        raise HwnetError(f"{baud} baud at {clock_hz / 1e6:g} MHz is {error:.1%} off (divisor {divisor}); choose a "
                         f"--baud that divides the clock more closely")
    return divisor


def _timing(report):
    """{clock: (achieved MHz, constraint MHz)} and whether every clock meets its constraint."""
    clocks = {c: (float(v["achieved"]), float(v["constraint"])) for c, v in report.get("fmax", {}).items()}
    return clocks, bool(clocks) and all(a >= c for a, c in clocks.values())


def _measure(design_dir, network, vectors, seed, progress):
    """Cycles per inference and latency from a Verilator run of ``vectors`` random inputs (checked)."""
    from .flow import simulate_design
    from .gateware.testing import random_inputs
    x = random_inputs(np.random.default_rng(seed), network, vectors)
    progress(f"simulating {vectors} random inputs in Verilator for the cycles per inference...")
    hw, expected, res = simulate_design(design_dir, x, progress=None)
    bad = int(np.sum(np.any(hw != expected, axis=1)))
    if bad:
        raise HwnetError(f"the design's Verilog disagrees with the golden model on {bad} of {vectors} random inputs; "
                         f"this is a bug in hwnet, please report it with {design_dir}")
    return {"vectors": vectors, "mismatches": 0, "latency_cycles": int(res.latency),
            "cycles_per_inference": float(res.interval) if res.interval is not None else None}


def _resources(board, report, synth):
    """Resource use against the device, from nextpnr's utilisation (and yosys's flip-flop count)."""
    util = report.get("utilization", {})

    def bel(*names):
        for n in names:
            if n in util:
                return {"used": int(util[n]["used"]), "available": int(util[n]["available"])}
        return {"used": 0, "available": 0}

    if board.family == "ice40":
        rows = {"logic cells (LUT4 + FF)": bel("ICESTORM_LC"), "block RAM (4 Kbit)": bel("ICESTORM_RAM"),
                "SPRAM (256 Kbit)": bel("ICESTORM_SPRAM"), "DSP (SB_MAC16)": bel("ICESTORM_DSP"),
                "PLL": bel("ICESTORM_PLL"), "IO": bel("SB_IO")}
    else:
        rows = {"LUT4 (TRELLIS_COMB)": bel("TRELLIS_COMB"), "flip-flops (TRELLIS_FF)": bel("TRELLIS_FF"),
                "block RAM (DP16KD, 18 Kbit)": bel("DP16KD"), "DSP (MULT18X18D)": bel("MULT18X18D"),
                "PLL (EHXPLLL)": bel("EHXPLLL"), "IO": bel("TRELLIS_IO")}
    rows["synthesized LUT4 / FF"] = {"used": f"{synth.luts} / {synth.ffs}", "available": ""}
    return rows


def build_board(network, board, out_dir, *, force=False, target_cycles=None, clock_mhz=None, pll=True,
                baud=DEFAULT_BAUD, vectors=16, seed=0, progress=None):
    """Build ``network`` for ``board`` (a :class:`hwnet.boards.Board`) into ``out_dir``; returns a
    :class:`BoardBuild` (module documentation).

    ``clock_mhz``: the design clock (a PLL makes it unless it is the board clock); None: the board clock, then a PLL
    where it helps (unless ``pll`` is False).
    """
    from .autofold import auto_fold
    from .flow import _replace_dir, compile_design
    progress = progress or (lambda msg: None)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise HwnetError(f"{out_dir}: already exists; choose another --out or pass --force to replace it")
    if clock_mhz is not None and not clock_mhz > 0:
        raise HwnetError(f"--clock-mhz must be positive, got {clock_mhz}")
    uart_divisor(board.clock_hz if clock_mhz is None else clock_mhz * 1e6, baud)  # a bad baud fails first
    requested = None if clock_mhz is None else _pll_or_board(board, clock_mhz * 1e6, baud)
    if requested is not None:
        uart_divisor(requested[0], baud)  # the clock the PLL makes must make the baud rate too

    # 1. auto-folding, with room for the board top (its input beat depends on the folding: fold again if needed)
    input_bits = network.input_type.bits
    for _ in range(3):
        budget = board_top_reserve(board.budget, network, input_bits)
        progress(f"auto-folding for {board.title} ({budget.text()})...")
        choice = auto_fold(network, budget, target_cycles=target_cycles)
        needed = choice.plan.input_lanes * choice.plan.input_type.bits
        if needed <= input_bits:
            break
        input_bits = needed
    for line in choice.report:
        progress(f"  {line}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        plan = compile_design(choice.network, work / "design", synth=False, progress=progress)
        measured = _measure(work / "design", choice.network, vectors, seed, progress)

        # 2. the board builds: the requested clock, or the board clock and then a PLL where it helps
        attempts = []

        def attempt(clock_hz, pll_params, label):
            build_dir = work / f"gateware-{len(attempts)}"
            how = (f"PLL {board.pll_in_hz / 1e6:g} -> {clock_hz / 1e6:.3f} MHz" if pll_params is not None
                   else f"board clock {clock_hz / 1e6:g} MHz")
            progress(f"building {board.title} ({label}: {how})...")
            report, synth, notes = _run_platform_build(board, plan, clock_hz=clock_hz, pll=pll_params, baud=baud,
                                                      build_dir=build_dir, progress=progress)
            clocks, met = _timing(report)
            progress("  Fmax " + ", ".join(f"{c}: {a:.1f} MHz (needs {n:.1f})" for c, (a, n) in clocks.items())
                     + f": timing {'met' if met else 'FAILED'}")
            attempts.append({"clock_hz": clock_hz, "pll": pll_params, "build_dir": build_dir, "report": report,
                             "synth": synth, "notes": notes, "clocks": clocks, "met": met, "label": label})
            return attempts[-1]

        if requested is not None:
            attempt(requested[0], requested[1], "requested clock")
        else:
            first = attempt(board.clock_hz, None, "board clock")
            fmax = min(a for a, _ in first["clocks"].values()) * 1e6 if first["clocks"] else None
            if pll and fmax and (not first["met"] or fmax >= PLL_GAIN * board.clock_hz):
                target = _pll_or_board(board, PLL_MARGIN * fmax, baud, below=True)
                if target is not None and target[1] is not None:
                    second = attempt(target[0], target[1], "PLL" if first["met"] else "PLL, slower")
                    if not second["met"] and not first["met"]:
                        fmax2 = min(a for a, _ in second["clocks"].values()) * 1e6
                        third = _pll_or_board(board, PLL_MARGIN * fmax2, baud, below=True)
                        if third is not None and third[1] is not None:
                            attempt(third[0], third[1], "PLL, slower")
        met = [a for a in attempts if a["met"]]
        kept = max(met, key=lambda a: a["clock_hz"]) if met else attempts[0]
        gateware = work / "gateware"
        os.rename(kept["build_dir"], gateware)
        for a in attempts:
            if a is not kept:
                shutil.rmtree(a["build_dir"], ignore_errors=True)
        bitstream_name = f"{BOARD_TOP}.{board.bitstream}"
        shutil.copyfile(gateware / bitstream_name, work / bitstream_name)

        summary = _summary(board, plan, choice, measured, kept, attempts, baud)
        (work / "board.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        (work / "board.md").write_text(board_markdown(summary))
        _replace_dir(work, out_dir, force)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return BoardBuild(board=board, out_dir=out_dir, bitstream=out_dir / bitstream_name, plan=plan,
                      clock_hz=kept["clock_hz"], pll=kept["pll"], timing_met=kept["met"], report=summary)


def _pll_or_board(board, f_hz, baud, below=False):
    """(achieved Hz, PLL parameters or None) for a design clock of ``f_hz``: the board clock when it is that, else
    the PLL's closest frequency (with ``below``: the closest not above ``f_hz`` that makes ``baud``; None when
    there is none)."""
    if abs(f_hz - board.clock_hz) < 1e3:
        return board.clock_hz, None
    from .gateware.pll import ecp5_pll_params, ice40_pll_params
    search = ice40_pll_params if board.family == "ice40" else ecp5_pll_params
    want = f_hz
    for _ in range(50):
        try:
            params = search(board.pll_in_hz, want)
        except HwnetError:
            if below:
                return None
            raise
        if not below or params.f_out_hz <= f_hz:
            if below:  # a clock tried on the way must still make the baud rate
                try:
                    uart_divisor(params.f_out_hz, baud)
                except HwnetError:
                    return None
            return params.f_out_hz, params
        want *= 0.99
    return None


def _summary(board, plan, choice, measured, kept, attempts, baud):
    clock_hz = kept["clock_hz"]
    cycles = measured["cycles_per_inference"] or plan.cycles_per_inference
    info = protocol.DesignInfo.of_plan(plan)
    frame_bytes = info.input_payload + info.output_payload + 2 * 9  # two frames of header (7) and CRC (2)
    link_rate = baud / 10 / frame_bytes
    synth = kept["synth"]
    return {
        "board": board.name, "title": board.title, "part": board.part, "family": board.family,
        "platform": board.platform, "bitstream": f"{BOARD_TOP}.{board.bitstream}", "programmer": board.programmer,
        "uart": {"baud": baud, "divisor": uart_divisor(clock_hz, baud),
                 "pins": board.uart_pins[4] if board.uart_pins else "the board's USB serial bridge"},
        "leds": len(board.leds),
        "clock": {"hz": clock_hz, "source": "pll" if kept["pll"] is not None else "board",
                  "board_hz": board.clock_hz, "pll": _pll_dict(kept["pll"]),
                  "fmax_mhz": {c: a for c, (a, _) in kept["clocks"].items()},
                  "constraint_mhz": {c: n for c, (_, n) in kept["clocks"].items()}, "timing_met": kept["met"]},
        "attempts": [{"label": a["label"], "clock_hz": a["clock_hz"], "timing_met": a["met"],
                      "fmax_mhz": {c: v[0] for c, v in a["clocks"].items()}} for a in attempts],
        "resources": _resources(board, kept["report"], synth),
        "multipliers": {"general_multipliers": synth.general_multipliers, "dsp": synth.dsp,
                        "multipliers": synth.multipliers, "multiplier_free": synth.multiplier_free},
        "performance": {**measured, "cycles_per_inference_planned": plan.cycles_per_inference,
                        "inferences_per_second": clock_hz / cycles,
                        "latency_us": measured["latency_cycles"] / clock_hz * 1e6,
                        "link_inferences_per_second": link_rate, "frame_bytes": frame_bytes},
        "autofold": {"budget": choice.budget.text(), "report": list(choice.report)},
        "notes": kept["notes"],
    }


def _pll_dict(params):
    if params is None:
        return None
    from dataclasses import asdict
    return {k: v for k, v in asdict(params).items()}


def board_markdown(s):
    """``board.md`` from a ``board.json`` summary."""
    c, p = s["clock"], s["performance"]
    verdict = "met" if c["timing_met"] else "**FAILED**"
    source = (f"PLL from the {c['board_hz'] / 1e6:g} MHz board clock" if c["source"] == "pll"
              else "the board clock")
    lines = [f"# {s['title']}: {s['bitstream']}", "",
             f"- design clock: {c['hz'] / 1e6:.3f} MHz ({source}); timing {verdict}: " + ", ".join(
                 f"`{k}` Fmax {v:.1f} MHz (constraint {c['constraint_mhz'][k]:.1f})" for k, v in c["fmax_mhz"].items()),
             f"- cycles per inference (Verilator, {p['vectors']} random inputs, no stalls): "
             f"{p['cycles_per_inference']:g} (planned {p['cycles_per_inference_planned']}); latency "
             f"{p['latency_cycles']} cycles",
             f"- at {c['hz'] / 1e6:.3f} MHz: {p['inferences_per_second']:,.0f} inferences/s, latency "
             f"{p['latency_us']:.2f} us; over the serial link at {s['uart']['baud']} baud "
             f"({p['frame_bytes']} bytes per inference, request and reply): {p['link_inferences_per_second']:,.1f} "
             f"inferences/s",
             f"- multipliers: {s['multipliers']['multipliers']} ({s['multipliers']['general_multipliers']} `$mul` of "
             f"two variables before mapping, {s['multipliers']['dsp']} DSP cells after)",
             f"- UART: {s['uart']['baud']} baud 8N1 (divisor {s['uart']['divisor']}) on {s['uart']['pins']}; the "
             f"class on {s['leds']} LEDs (binary, least significant first)",
             f"- program it: `hwnet program {s['bitstream']} --board {s['board']}` ({s['programmer']})", "",
             "| resource | used | available |", "|---|---|---|"]
    for name, r in s["resources"].items():
        lines.append(f"| {name} | {r['used']} | {r['available']} |")
    lines += ["", "Builds tried:", ""]
    for a in s["attempts"]:
        lines.append(f"- {a['label']}: {a['clock_hz'] / 1e6:.3f} MHz, Fmax "
                     + ", ".join(f"{v:.1f}" for v in a["fmax_mhz"].values()) + " MHz, timing "
                     + ("met" if a["timing_met"] else "failed"))
    lines += ["", "## Auto-folding", "", f"Budget: {s['autofold']['budget']}", ""]
    lines += [f"    {line}" for line in s["autofold"]["report"]]
    if s["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"


#: The ``--board`` name of the ASIC-style target.
ASIC_TARGET = "asic"
ASIC_VERILOG = "hwnet_asic.v"


def build_asic(network, out_dir, *, force=False, target_cycles=None, progress=None):
    """The ASIC-style target (:mod:`hwnet.asic`): ``out_dir`` gets the compiled design (``design/``), its
    technology-independent Verilog (``hwnet_asic.v``, ROMs as logic, no vendor primitives, no initial values) and
    the generic synthesis report (``asic.json``, ``asic.md``: cells, flip-flops, NAND2 equivalents, multipliers).
    Returns the :class:`hwnet.asic.AsicReport`."""
    from .asic import asic_synthesize, asic_verilog
    from .flow import TOP_NAME, _replace_dir, compile_design
    progress = progress or (lambda msg: None)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise HwnetError(f"{out_dir}: already exists; choose another --out or pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        plan = compile_design(network, work / "design", target_cycles=target_cycles, synth=False, progress=progress)
        progress("technology-independent Verilog (yosys: memories to logic, no initial values)...")
        text = asic_verilog(plan, top=TOP_NAME)
        (work / ASIC_VERILOG).write_text(text)
        progress("generic synthesis (yosys synth -flatten; abc to simple gates)...")
        report = asic_synthesize(text, top=TOP_NAME)
        summary = {"target": ASIC_TARGET, "verilog": ASIC_VERILOG, "top": TOP_NAME,
                   "cycles_per_inference": plan.cycles_per_inference, **report.summary()}
        (work / "asic.json").write_text(json.dumps(summary, indent=1) + "\n")
        (work / "asic.md").write_text(f"# ASIC-style target: {ASIC_VERILOG} (top `{TOP_NAME}`)\n\n"
                                      f"- cycles per inference: {plan.cycles_per_inference}\n- ports: `clk`, "
                                      f"`rst` (synchronous, active high: hold it for a few cycles after power-up), "
                                      f"the input and output streams as in the FPGA design (docs/architecture.md)"
                                      f"\n\n" + report.markdown())
        _replace_dir(work, out_dir, force)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return report
