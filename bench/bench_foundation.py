"""Foundation benchmark: for the demo network (digits, 64-128-128-10) and an MNIST TFC-shaped network
(784-64-64-64-10, when ../shared/data/mnist is present):

- golden model inferences/s against the same network in torch (eval mode, no_grad), both on the whole test
  split as one batch; medians over --repeats runs, and the ratio measured in the same run;
- compile time (folding, plan, Verilog generation; no cache);
- Verilator build time (fresh cache) and simulation speed over the whole test split (inferences/s, cycles/s);
- cycles per inference (planned and measured), latency;
- accuracy of torch, the integer model and the hardware, and the mismatch count.

Prints a table and writes build/bench/foundation.{md,json} and a plot. Usage:

    python bench/bench_foundation.py [--repeats 15] [--target-cycles 128] [--mnist-epochs N]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwnet import compiler, golden  # noqa: E402
from hwnet.flow import TOP_NAME, compile_design, simulate_design  # noqa: E402
from hwnet.gateware import generate_verilog  # noqa: E402
from hwnet.train.data import load_dataset, mnist_available  # noqa: E402
from hwnet.train.lower import check_lowering, lower  # noqa: E402
from hwnet.train.trainer import evaluate, train_binarynet  # noqa: E402


def _interleaved_medians(fns, repeats):
    """Median seconds of each function, the runs interleaved (a, b, a, b, ...) so load on a shared machine
    falls on both alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def bench_network(label, ds, *, hidden, epochs, repeats, target_cycles, workdir):
    import torch
    print(f"== {label}: training {ds.name} {ds.input_size}-{'-'.join(map(str, hidden))}-{ds.classes}", flush=True)
    t0 = time.perf_counter()
    model, history = train_binarynet(ds, hidden=hidden, epochs=epochs, seed=0,
                                     progress=lambda m: print(f"   {m}", flush=True))
    train_s = time.perf_counter() - t0
    network = lower(model, name=label)
    assert check_lowering(model, network, ds.test_x) == 0, "lowering not exact"
    x = ds.test_x

    xt = torch.as_tensor(np.asarray(x))
    model.eval()

    def run_torch():
        with torch.no_grad():
            model(xt)

    torch_s, golden_s = _interleaved_medians([run_torch, lambda: golden.execute(network, x)], repeats)

    t0 = time.perf_counter()
    folded = compiler.choose_folding(network, target_cycles)
    plan = compiler.plan(folded)
    generate_verilog(plan, name=TOP_NAME)
    compile_s = time.perf_counter() - t0

    cache = tempfile.mkdtemp(prefix="hwnet-bench-cache-", dir=workdir)
    os.environ["HWNET_CACHE_DIR"] = cache
    design = Path(workdir) / f"{label}-design"
    compile_design(folded, design, force=True, synth=False)
    from hwnet.sim import build_verilator
    t0 = time.perf_counter()
    build_verilator((design / f"{TOP_NAME}.v").read_text(), top=TOP_NAME)
    build_s = time.perf_counter() - t0
    hw, expected, res = simulate_design(design, x)
    mismatches = int(np.count_nonzero(hw != expected))

    r = {
        "network": label, "shape": f"{ds.input_size}-{'-'.join(map(str, hidden))}-{ds.classes}",
        "test_samples": len(x), "train_seconds": round(train_s, 1), "epochs": len(history),
        "torch_inferences_per_s": len(x) / torch_s, "golden_inferences_per_s": len(x) / golden_s,
        "golden_over_torch": torch_s / golden_s,
        "compile_seconds": compile_s, "verilator_build_seconds": build_s,
        "sim_inferences_per_s": len(x) / res.wall_seconds, "sim_cycles_per_s": res.cycles / res.wall_seconds,
        "cycles_per_inference": plan.cycles_per_inference, "measured_interval": res.interval,
        "latency_cycles": res.latency, "memory_bits": plan.memory_bits,
        "folding": [(s.name, s.pe, s.simd) for s in plan.stages if isinstance(s, compiler.DenseStage)],
        "accuracy_torch": evaluate(model, x, ds.test_y),
        "accuracy_integer": float(np.mean(golden.classify(expected) == ds.test_y)),
        "accuracy_hardware": float(np.mean(golden.classify(hw) == ds.test_y)),
        "mismatches": mismatches,
    }
    for k, v in r.items():
        print(f"   {k}: {v:.4g}" if isinstance(v, float) else f"   {k}: {v}", flush=True)
    return r


def _markdown(results, repeats):
    lines = ["| network | golden inf/s | torch inf/s | golden / torch | compile s | Verilator build s | "
             "sim inf/s | sim cycles/s | cycles/inf (plan / measured) | latency | accuracy torch / int / hw | "
             "mismatches |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['network']} ({r['shape']}) | {r['golden_inferences_per_s']:,.0f} | "
            f"{r['torch_inferences_per_s']:,.0f} | {r['golden_over_torch']:.2f}x | {r['compile_seconds']:.2f} | "
            f"{r['verilator_build_seconds']:.1f} | {r['sim_inferences_per_s']:,.0f} | "
            f"{r['sim_cycles_per_s']:,.0f} | {r['cycles_per_inference']} / {r['measured_interval']:g} | "
            f"{r['latency_cycles']} | {100 * r['accuracy_torch']:.2f} / {100 * r['accuracy_integer']:.2f} / "
            f"{100 * r['accuracy_hardware']:.2f}% | {r['mismatches']} |")
    lines.append("")
    lines.append(f"Throughputs are medians of {repeats} interleaved runs over the whole test split as one batch; golden/torch is "
                 "measured in the same run. Simulation speed excludes the Verilator build.")
    return "\n".join(lines) + "\n"


def _plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [r["network"] for r in results]
    xs = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(xs - 0.2, [r["golden_inferences_per_s"] for r in results], 0.4, label="golden model (numpy)")
    ax.bar(xs + 0.2, [r["torch_inferences_per_s"] for r in results], 0.4, label="torch (eval)")
    ax.set_xticks(xs, labels)
    ax.set_yscale("log")
    ax.set_ylabel("inferences / s")
    ax.legend()
    ax.set_title("Golden model vs torch, same network, same batch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--target-cycles", type=int, default=compiler.DEFAULT_TARGET_CYCLES)
    p.add_argument("--digits-epochs", type=int, default=None, help="default: the trainer's")
    p.add_argument("--mnist-epochs", type=int, default=None, help="default: the trainer's")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [bench_network("digits", load_dataset("digits"), hidden=(128, 128), epochs=args.digits_epochs,
                             repeats=args.repeats, target_cycles=args.target_cycles, workdir=out)]
    if mnist_available():
        results.append(bench_network("mnist-tfc", load_dataset("mnist"), hidden=(64, 64, 64),
                                     epochs=args.mnist_epochs, repeats=args.repeats,
                                     target_cycles=args.target_cycles, workdir=out))
    else:
        print("MNIST not found (../shared/data/mnist or $HWNET_MNIST_DIR): skipping the TFC network")
    md = _markdown(results, args.repeats)
    print(md)
    (out / "foundation.md").write_text(md)
    (out / "foundation.json").write_text(json.dumps(results, indent=1) + "\n")
    _plot(results, out / "foundation.png")
    print(f"report: {out / 'foundation.md'}")


if __name__ == "__main__":
    main()
