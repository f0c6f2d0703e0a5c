"""The user-level flow the command-line tool is a thin shell over: load a model, compile it to a design
directory, simulate a design directory. Every function raises :class:`HwnetError` for bad input and writes
nothing partial: output directories and files appear whole (written aside, then renamed) or not at all.

A design directory holds:

``network.npz``
    The IR that was compiled, with its folding (docs/ir.md).
``hwnet_top.v``
    The Verilog of the whole network, top module ``hwnet_top``.
``design.json`` / ``design.md``
    The design summary: per-stage folding, types and widths, cycles per inference, memory bits.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import compiler, golden, ir
from .errors import HwnetError

__all__ = ["load_model", "compile_design", "load_design", "simulate_design", "load_inputs", "save_array",
           "TOP_NAME"]

TOP_NAME = "hwnet_top"
DESIGN_FILES = ("network.npz", f"{TOP_NAME}.v", "design.json", "design.md")


def load_model(path):
    """A network from an IR file (``.npz``) or an hwnet training checkpoint (``.pt``, lowered on the fly)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise HwnetError(f"{path}: no such file")
    if os.path.isdir(path):
        raise HwnetError(f"{path}: is a directory; give a checkpoint (.pt) or an IR file (.npz)")
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return ir.load(path)
    if suffix in (".pt", ".pth"):
        from .train.lower import lower
        from .train.trainer import load_checkpoint
        model, meta = load_checkpoint(path)
        return lower(model, name=Path(path).stem, metadata=meta)
    raise HwnetError(f"{path}: unknown model file type {suffix or '(none)'!r}; give a checkpoint from "
                     f"`hwnet train` (.pt) or an IR file (.npz, docs/ir.md)")


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
             "| stage | kind | shape | types (in/w/out) | PE | SIMD | NF x SF | cycles | popcount bits | "
             "memory bits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary["stages"]:
        if s["kind"] == "dense":
            lines.append(f"| {s['name']} | dense | {s['in']}->{s['out']} | {s['in_type']}/{s['weight_type']}/"
                         f"{s['out_type']} | {s['pe']} | {s['simd']} | {s['nf']} x {s['sf']} | {s['cycles']} | "
                         f"{s['popcount_bits']} | {s['weight_bits'] + s['threshold_bits']} |")
        else:
            lines.append(f"| {s['name']} | threshold | {s['size']} | {s['in_type']}/-/{s['out_type']} | - | "
                         f"{s['lanes']} | - | {s['cycles']} | - | 0 |")
    return "\n".join(lines) + "\n"


def compile_design(network, out_dir, *, target_cycles=None, force=False, progress=None):
    """Compile ``network`` into the design directory ``out_dir``; returns the :class:`DesignPlan`.

    Dense layers without a folding get one from :func:`hwnet.compiler.choose_folding` (``target_cycles`` per
    vector, default :data:`hwnet.compiler.DEFAULT_TARGET_CYCLES`); layers with one keep it.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise HwnetError(f"{out_dir}: already exists; choose another --out or pass --force to replace it")
    network = compiler.choose_folding(network, target_cycles or compiler.DEFAULT_TARGET_CYCLES)
    plan = compiler.plan(network)
    from .sim.cache import cached_verilog
    if progress:
        progress(f"generating Verilog for {len(plan.stages)} stages")
    verilog = cached_verilog(plan, top=TOP_NAME)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent)
    try:
        ir.save(network, os.path.join(tmp, "network.npz"))
        Path(tmp, f"{TOP_NAME}.v").write_text(verilog)
        summary = plan.summary()
        Path(tmp, "design.json").write_text(json.dumps(summary, indent=1) + "\n")
        Path(tmp, "design.md").write_text(_design_markdown(summary))
        _replace_dir(tmp, out_dir, force)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
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
    """Input vectors from a ``.npy`` file: shape (n, input_size) (or (input_size,)), legal input values."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise HwnetError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            x = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise HwnetError(f"{path}: not a readable .npy array ({exc})") from None
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
    result = run_stream(verilog, fmt, inputs, top=TOP_NAME, stall_in=stall_in, stall_out=stall_out, seed=seed,
                        cycles_hint=summary["cycles_per_inference"], progress=progress)
    return result.outputs, expected, result
