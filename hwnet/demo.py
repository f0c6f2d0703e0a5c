"""The main job (``hwnet demo``/``make demo``): train a binarized MLP on the embedded digits data, lower it to
the integer IR (checked equal to the torch model on every test sample), compile it, run the whole test split
through the generated Verilog under Verilator (once with random stalls on both streams, once without, for
timing), and write a report.

Outputs in ``out_dir``: ``model.pt``, ``design/`` (see :mod:`hwnet.flow`), ``report.md``, ``report.json``,
``training.png``, ``hw_outputs.npy``.
"""

import json
import os
import time
from pathlib import Path

import numpy as np

from . import golden
from .errors import HwnetError
from .flow import compile_design, save_array, simulate_design

STALL = 0.25


def _plot_training(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [100 * h["train_accuracy"] for h in history], label="train")
    ax.plot(epochs, [100 * h["test_accuracy"] for h in history], label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("BinaryNet MLP, eval-mode (binarized) accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(*, out_dir, dataset="digits", epochs=None, seed=0, mnist_dir=None, target_cycles=None,
             progress=print):
    from .train.data import load_dataset
    from .train.lower import check_lowering, lower
    from .train.trainer import evaluate, save_checkpoint, train_binarynet

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HwnetError(f"{out_dir}: exists and is not a directory")
    ds = load_dataset(dataset, mnist_dir=mnist_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress(f"data: {ds.name}, {len(ds.train_x)} train / {len(ds.test_x)} test samples of "
             f"{ds.input_size} x {ds.input_type}")

    t0 = time.monotonic()
    model, history = train_binarynet(ds, epochs=epochs, seed=seed, progress=progress)
    train_seconds = time.monotonic() - t0
    torch_acc = evaluate(model, ds.test_x, ds.test_y)
    save_checkpoint(model, out_dir / "model.pt", meta={"method": "binarynet", "dataset": ds.name,
                                                       "seed": seed, "test_accuracy": torch_acc})
    _plot_training(history, out_dir / "training.png")

    network = lower(model, name=f"{ds.name}-binarynet",
                    metadata={"dataset": ds.name, "test_accuracy": torch_acc})
    lowering_mismatches = check_lowering(model, network, ds.test_x)
    progress(f"lowered to the integer IR: {lowering_mismatches} mismatches against the torch model over "
             f"{len(ds.test_x)} test samples, every layer")
    if lowering_mismatches:
        raise HwnetError(f"lowering is not exact: {lowering_mismatches} mismatching elements (a bug; please report)")

    t0 = time.monotonic()
    plan = compile_design(network, out_dir / "design", target_cycles=target_cycles, force=True, progress=progress)
    compile_seconds = time.monotonic() - t0
    network = plan.network  # with the folding the compiler chose
    for line in network.summary_lines():
        progress(line)

    expected = golden.execute(network, ds.test_x)
    int_acc = float(np.mean(golden.classify(expected) == ds.test_y))

    runs = {}
    for label, stall in (("stalls", STALL), ("no stalls", 0.0)):
        progress(f"Verilator: whole test split, {label}")
        hw, _, res = simulate_design(out_dir / "design", ds.test_x, stall_in=stall, stall_out=stall, seed=seed,
                                     progress=progress)
        runs[label] = {"hw": hw, "res": res, "mismatches": int(np.count_nonzero(hw != expected)),
                       "bad_vectors": int(np.count_nonzero(np.any(hw != expected, axis=1)))}
    hw = runs["stalls"]["hw"]
    save_array(out_dir / "hw_outputs.npy", hw)
    hw_acc = float(np.mean(golden.classify(hw) == ds.test_y))
    timing = runs["no stalls"]["res"]
    mismatches = sum(r["mismatches"] for r in runs.values())

    report = {
        "dataset": ds.name, "test_samples": len(ds.test_x), "seed": seed,
        "network": network.summary_lines(), "training_seconds": round(train_seconds, 1),
        "epochs": len(history),
        "accuracy": {"torch": torch_acc, "integer_model": int_acc, "hardware": hw_acc},
        "lowering_mismatches": lowering_mismatches,
        "hardware_mismatches": {label: r["mismatches"] for label, r in runs.items()},
        "stall_probability": STALL,
        "cycles_per_inference": {"planned": plan.cycles_per_inference, "measured_interval": timing.interval},
        "latency_cycles": timing.latency,
        "memory_bits": plan.memory_bits,
        "compile_seconds": round(compile_seconds, 2),
        "verilator": {label: {"cycles": r["res"].cycles, "seconds": round(r["res"].wall_seconds, 2),
                              "cycles_per_second": round(r["res"].cycles / max(r["res"].wall_seconds, 1e-9))}
                      for label, r in runs.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "report.md").write_text(_report_markdown(report, (out_dir / "design" / "design.md").read_text()))

    progress(f"accuracy on {len(ds.test_x)} test samples: torch {100 * torch_acc:.2f}%, integer model "
             f"{100 * int_acc:.2f}%, hardware (Verilator) {100 * hw_acc:.2f}%")
    progress(f"mismatches Verilator vs golden model: {runs['stalls']['mismatches']} with random stalls "
             f"(p={STALL}), {runs['no stalls']['mismatches']} without, over every output of every sample")
    progress(f"cycles per inference: {plan.cycles_per_inference} (measured interval {timing.interval:g}), "
             f"latency {timing.latency} cycles")
    progress(f"report: {os.fspath(out_dir / 'report.md')}")
    return 0 if mismatches == 0 else 1


def _demote_headings(markdown):
    """Every heading one level deeper, so a design summary nests under the report's own headings."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.split("\n"))


def _report_markdown(r, design_md):
    acc = r["accuracy"]
    lines = [
        f"# hwnet demo report ({r['dataset']})", "",
        "BinaryNet MLP trained on the embedded data set, lowered to the integer IR, compiled to Verilog and "
        "simulated under Verilator over the whole test split.", "",
        "```", *r["network"], "```", "",
        "| | value |", "|---|---|",
        f"| test samples | {r['test_samples']} |",
        f"| training | {r['epochs']} epochs, {r['training_seconds']} s |",
        f"| accuracy: torch (eval, binarized) | {100 * acc['torch']:.2f}% |",
        f"| accuracy: integer model (golden) | {100 * acc['integer_model']:.2f}% |",
        f"| accuracy: hardware (Verilator) | {100 * acc['hardware']:.2f}% |",
        f"| lowering mismatches (torch vs integer, every layer) | {r['lowering_mismatches']} |",
        f"| Verilator vs golden mismatches, random stalls p={r['stall_probability']} | "
        f"{r['hardware_mismatches']['stalls']} |",
        f"| Verilator vs golden mismatches, no stalls | {r['hardware_mismatches']['no stalls']} |",
        f"| cycles per inference (planned / measured interval) | {r['cycles_per_inference']['planned']} / "
        f"{r['cycles_per_inference']['measured_interval']:g} |",
        f"| latency (first input beat to last output beat) | {r['latency_cycles']} cycles |",
        f"| weight + threshold memory | {r['memory_bits']} bits |",
        f"| Verilator speed (no stalls) | {r['verilator']['no stalls']['cycles_per_second']} cycles/s |",
        "", "![training curves](training.png)", "", _demote_headings(design_md),
    ]
    return "\n".join(lines) + "\n"
