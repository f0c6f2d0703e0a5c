"""The user-level flow the command-line tool is a thin shell over: load a model, compile it to a design
directory, simulate a design directory. Every function raises :class:`HwnetError` for bad input and writes
nothing partial: output directories and files appear whole (written aside, then renamed) or not at all.

A design directory holds:

``network.npz``
    The IR that was compiled, with its folding (docs/ir.md).
``hwnet_top.v``
    The Verilog of the whole network, top module ``hwnet_top``.
``design.json`` / ``design.md``
    The design summary: per-stage folding, types and widths, cycles per inference, memory bits; unless
    compiled without synthesis, the iCE40 and ECP5 synthesis counts and the multiplier-free certificate
    (``design.json``'s ``"synthesis"``, see :mod:`hwnet.synth`).
"""

import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import compiler, golden, ir
from .errors import HwnetError

__all__ = ["load_model", "compile_design", "load_design", "simulate_design", "load_inputs", "save_array",
           "TOP_NAME"]

TOP_NAME = "hwnet_top"
DESIGN_FILES = ("network.npz", f"{TOP_NAME}.v", "design.json", "design.md")
#: A design with weights in SPRAM also gets this file: the SPRAM image, one 64-bit hex word per line.
SPRAM_IMAGE = "spram.hex"


def load_model(path):
    """A network from an IR file (``.npz``), an hwnet training checkpoint (``.pt``, lowered on the fly) or a
    QONNX graph (``.onnx``, imported on the fly: :func:`hwnet.qonnx_import.import_qonnx`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise HwnetError(f"{path}: no such file")
    if os.path.isdir(path):
        raise HwnetError(f"{path}: is a directory; give a checkpoint (.pt) or an IR file (.npz)")
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return ir.load(path)
    if suffix == ".onnx":
        from .qonnx_import import import_qonnx
        return import_qonnx(path)
    if suffix in (".pt", ".pth"):
        from .train.lower import lower
        from .train.trainer import load_checkpoint
        model, meta = load_checkpoint(path)
        return lower(model, name=Path(path).stem, metadata=meta)
    raise HwnetError(f"{path}: unknown model file type {suffix or '(none)'!r}; give a checkpoint from "
                     f"`hwnet train` (.pt), an IR file (.npz, docs/ir.md) or a QONNX graph (.onnx, "
                     f"docs/interop.md)")


def _replace_dir(tmp, out_dir, force):
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not force:
            raise HwnetError(f"{out_dir}: already exists; choose another --out or pass --force to replace it")
        if not out_dir.is_dir():
            raise HwnetError(f"{out_dir}: exists and is not a directory")
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)


def _design_markdown(summary):
    lines = [f"# Design summary: {summary['name']}", "",
             f"- input: {summary['input']['size']} x {summary['input']['type']}, "
             f"{summary['input']['lanes']} per beat, {summary['input']['beats']} beats per vector",
             f"- output: {summary['output']['size']} x {summary['output']['type']}, "
             f"{summary['output']['lanes']} per beat, {summary['output']['beats']} beats per vector",
             f"- cycles per inference (initiation interval): {summary['cycles_per_inference']}",
             f"- memory: {summary['memory_bits']} bits (weights and thresholds)", "",
             "| stage | kind | shape | types (in/w/out) | PE | SIMD | NF x SF x planes | cycles | acc bits | "
             "weights | memory bits |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary["stages"]:
        if s["kind"] == "dense":
            vectors = (f" x {s['vectors'] * s['pixels']} pixels" if s["vectors"] > 1 else "") + (
                f", {s['pixels']} per cycle" if s["pixels"] > 1 else "")
            simd = f"{s['simd']} ({s['pad_lanes']} lanes of the last beat padding)" if s["pad_lanes"] else s["simd"]
            lines.append(f"| {s['name']} | dense ({s['pe_kind']}) | {s['in']}->{s['out']}{vectors} | {s['in_type']}/"
                         f"{s['weight_type']}/{s['out_type']} | {s['pe']} | {simd} | "
                         f"{s['nf']} x {s['sf']} x {s['planes']} | {s['cycles']} | {s['acc_bits']} | "
                         f"{s['weights']} | {s['memory_bits']} |")
        elif s["kind"] == "window":
            shape = f"{'x'.join(map(str, s['in_shape']))} -> {'x'.join(map(str, s['out_shape'][:2]))} patches"
            lines.append(f"| {s['name']} | sliding window {'x'.join(map(str, s['kernel']))} | {shape} | "
                         f"{s['type']} | - | {s['simd']}{' x ' + str(s['pixels']) + ' pixels' if s['pixels'] > 1 else ''} | "
                         f"- | {s['cycles']} | - | line buffer {s['rows']} rows | "
                         f"{s['line_buffer_bits']} |")
        elif s["kind"] == "maxpool":
            shape = f"{'x'.join(map(str, s['in_shape']))} -> {'x'.join(map(str, s['out_shape']))}"
            pixels = f" x {s['pixels']} pixels" if s["pixels"] > 1 else ""
            lines.append(f"| {s['name']} | max-pool {'x'.join(map(str, s['kernel']))} | {shape} | {s['type']} | - | "
                         f"{s['simd']}{pixels} | - | {s['cycles']} | - | - | 0 |")
        else:
            lines.append(f"| {s['name']} | threshold | {s['size']} | {s['in_type']}/-/{s['out_type']} | - | "
                         f"{s['lanes']} | - | {s['cycles']} | - | - | 0 |")
    return "\n".join(lines) + "\n"


_FAMILY_NAMES = {"ice40": "iCE40", "ecp5": "ECP5"}


def _synthesize(verilogs, progress):
    """Synthesize the top for every family at once (one yosys process each), from ``verilogs[family]``;
    {family: SynthReport}."""
    from . import synth

    def run(family):
        t0 = time.monotonic()
        return synth.synthesize(verilogs[family], top=TOP_NAME, family=family), time.monotonic() - t0

    for family in synth.FAMILIES:
        progress(f"synthesizing for {family} (yosys synth_{family})...")
    with ThreadPoolExecutor(max_workers=len(synth.FAMILIES)) as pool:
        done = dict(zip(synth.FAMILIES, pool.map(run, synth.FAMILIES)))
    for family, (r, seconds) in done.items():
        progress(f"{family}: {r.luts} LUT4, {r.ffs} FF, {r.carries} carry, {r.brams} block RAM, "
                 f"{r.multipliers} multipliers ({seconds:.1f} s)")
    return {family: r for family, (r, _) in done.items()}


def _synthesis_markdown(reports):
    carry = {"ice40": "SB_CARRY", "ecp5": "CCU2C"}
    bram = {"ice40": "SB_RAM40_4K", "ecp5": "DP16KD"}
    bad = {family: r for family, r in reports.items() if not r.multiplier_free}
    families = " and ".join(_FAMILY_NAMES[f] for f in reports)
    lines = ["", "## Multiplier-free certificate", ""]
    if bad:
        lines += ["**WARNING: NOT multiplier-free.** " + "; ".join(
            f"{_FAMILY_NAMES[f]}: {r.general_multipliers} `$mul` of two variables before mapping, {r.dsp} "
            f"multiplier/DSP cells after" for f, r in bad.items()) + ". hwnet's gateware never multiplies: this is "
            "a bug in hwnet, please report it with this design directory.", ""]
    else:
        lines += [f"0 multipliers on {families}: no `$mul` of two variables before technology mapping (yosys "
                  "`proc; flatten; opt_expr`), no multiplier or DSP cell after it (`SB_MAC16`; `MULT18X18D`, "
                  "`MULT9X9D`, `ALU54B`).", ""]
    lines += ["| target | LUT4 | FF | carry | block RAM | other | multipliers |", "|---|---|---|---|---|---|---|"]
    for family, r in reports.items():
        other = [f"{n} {what}" for n, what in ((r.lut_muxes, "PFUMX/L6MUX21"), (r.lutrams, "TRELLIS_DPR16X4"),
                                               (r.sprams, "SB_SPRAM256KA"),
                                               (r.constant_multiplications, "constant multiplications"))
                 if n]
        mult = (f"**{r.multipliers}** ({r.general_multipliers} `$mul`, {r.dsp} DSP)" if r.multipliers else "0")
        lines.append(f"| {_FAMILY_NAMES[family]} (`synth_{family}`) | {r.luts} | {r.ffs} | {r.carries} "
                     f"{carry[family]} | {r.brams} {bram[family]} | {', '.join(other) or '-'} | {mult} |")
    return "\n".join(lines) + "\n"


def compile_design(network, out_dir, *, target_cycles=None, force=False, synth=True, progress=None, budget=None):
    """Compile ``network`` into the design directory ``out_dir``; returns the :class:`DesignPlan`.

    Dense and conv layers without a folding get one from :func:`hwnet.compiler.choose_folding` (``target_cycles``
    per inference, default :data:`hwnet.compiler.DEFAULT_TARGET_CYCLES`); layers with one keep it. With a
    ``budget`` (an :class:`hwnet.autofold.Budget`), :func:`hwnet.autofold.auto_fold` chooses instead: the fastest
    design that fits (``target_cycles`` is then a throughput goal), its report in ``design.md`` and
    ``design.json`` (``"autofold"``); nothing is written when nothing fits.

    With ``synth`` (the default) the Verilog is synthesized for iCE40 and ECP5 (:func:`hwnet.synth.synthesize`,
    both at once, cached by content) and the counts and the multiplier-free certificate go into ``design.json``
    (``"synthesis"``) and ``design.md``. A design that is not multiplier-free is still written (it computes the
    right results), with a warning in ``design.md`` and on stderr: hwnet's gateware never multiplies, so that is
    a bug in hwnet, not in the user's model.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise HwnetError(f"{out_dir}: already exists; choose another --out or pass --force to replace it")
    choice = None
    if budget is not None:
        from .autofold import auto_fold
        choice = auto_fold(network, budget, target_cycles=target_cycles, progress=progress)
        network = choice.network
        if progress:
            for line in choice.report:
                progress(line)
    network = compiler.choose_folding(network, target_cycles or compiler.DEFAULT_TARGET_CYCLES)
    plan = compiler.plan(network)
    from .sim.cache import cached_verilog
    if progress:
        progress(f"generating Verilog for {len(plan.stages)} stages")
    verilog = cached_verilog(plan, top=TOP_NAME)
    synthesis = None
    if synth:  # iCE40 with its SPRAM primitives where weights stream from SPRAM; ECP5 keeps them in block RAM
        ice40 = cached_verilog(plan, top=TOP_NAME, spram_primitive=True) if plan.spram_words else verilog
        synthesis = _synthesize({"ice40": ice40, "ecp5": verilog}, progress or (lambda msg: None))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent)
    try:
        ir.save(network, os.path.join(tmp, "network.npz"))
        Path(tmp, f"{TOP_NAME}.v").write_text(verilog)
        if plan.spram_words:  # the image to load into SPRAM at start-up, one hex word per line
            Path(tmp, SPRAM_IMAGE).write_text("".join(f"{w:016x}\n" for w in plan.spram_image()))
        summary = plan.summary()
        markdown = _design_markdown(summary)
        if choice is not None:
            summary["autofold"] = {"budget": choice.budget.text(), "estimate": choice.resources.summary(),
                                   "report": list(choice.report)}
            markdown += "\n## Auto-folding\n\n" + "".join(f"    {line}\n" for line in choice.report)
        if synthesis:
            summary["synthesis"] = {family: r.summary() for family, r in synthesis.items()}
            markdown += _synthesis_markdown(synthesis)
        Path(tmp, "design.json").write_text(json.dumps(summary, indent=1) + "\n")
        Path(tmp, "design.md").write_text(markdown)
        _replace_dir(tmp, out_dir, force)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    bad = [family for family, r in (synthesis or {}).items() if not r.multiplier_free]
    if bad:
        print(f"hwnet: warning: the design is NOT multiplier-free on {' and '.join(bad)} (see "
              f"{out_dir / 'design.md'}); this is a bug in hwnet, please report it", file=sys.stderr, flush=True)
    return plan


def load_design(design_dir):
    """(network, summary dict, Verilog text) of a design directory written by :func:`compile_design`."""
    d = Path(design_dir)
    if not d.is_dir():
        raise HwnetError(f"{d}: not a design directory (make one with `hwnet compile MODEL --out {d}`)")
    missing = [f for f in DESIGN_FILES if not (d / f).exists()]
    if missing:
        raise HwnetError(f"{d}: not a complete design directory, missing {', '.join(missing)}; recompile it")
    network = ir.load(d / "network.npz")
    try:
        summary = json.loads((d / "design.json").read_text())
    except json.JSONDecodeError as exc:
        raise HwnetError(f"{d / 'design.json'}: not valid JSON ({exc}); recompile the design") from None
    return network, summary, (d / f"{TOP_NAME}.v").read_text()


def load_inputs(path, network):
    """Input vectors from a ``.npy`` file: shape (n, input_size) (or (input_size,)), legal input values; for a
    network imported from QONNX also the graph's float inputs (n, *graph input shape), quantized as the graph's
    first quantizer does (:func:`hwnet.qonnx_import.quantize_inputs`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise HwnetError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            x = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise HwnetError(f"{path}: not a readable .npy array ({exc})") from None
    if "qonnx" in network.metadata and np.issubdtype(x.dtype, np.floating) and x.ndim > 1 and \
            list(x.shape[1:]) == network.metadata["qonnx"]["input_shape"]:
        from .qonnx_import import quantize_inputs
        x = quantize_inputs(network, x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != network.input_size:
        raise HwnetError(f"{path}: inputs must have shape (n, {network.input_size}), got {x.shape}")
    if x.shape[0] == 0:
        raise HwnetError(f"{path}: holds no input vectors")
    return network.input_type.check(x, path)


def save_array(path, array):
    """Write ``array`` to ``path`` (.npy) atomically."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise HwnetError(f"{path}: directory {parent} does not exist")
    tmp = f"{path}.tmp-{os.getpid()}.npy"
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def simulate_design(design_dir, inputs, *, stall_in=0.0, stall_out=0.0, seed=0, progress=None):
    """Run ``inputs`` through the design's Verilog under Verilator.

    Returns ``(hardware outputs, golden outputs, SimResult)``; the caller compares the first two.
    """
    from .sim import StreamFormat, run_stream
    network, summary, verilog = load_design(design_dir)
    fmt = StreamFormat.from_summary(summary)
    expected = golden.execute(network, inputs)
    load = compiler.plan(network).spram_image() if summary.get("spram_words") else None
    result = run_stream(verilog, fmt, inputs, top=TOP_NAME, stall_in=stall_in, stall_out=stall_out, seed=seed,
                        cycles_hint=summary["cycles_per_inference"], progress=progress, load=load)
    return result.outputs, expected, result
