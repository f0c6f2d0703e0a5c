"""Training-methods benchmark: every method in :data:`hwnet.train.methods.METHODS` (or ``--methods``) on the
digits split and, when ../shared/data/mnist is present, the MNIST split, over several seeds, against a Brevitas
baseline trained on the same data in the same run.

For every hwnet model (``hwnet.train.methods.train`` with the method's default options and the data set's
default shape and settings, ``--epochs`` aside):

- the torch model's test accuracy (test mean squared error for regression methods, e.g. ``lutnet-ae``) and
  the method's extra results (e.g. BinaryConnect's real-weight accuracy);
- the model lowered to the integer IR (:func:`hwnet.train.lower.lower`), the lowering checked exact on every
  test sample (:func:`hwnet.train.lower.check_lowering` == 0) and the integer model's test accuracy
  (``golden.classify(golden.execute(network, test_x))``), which must equal the torch model's: a run where it
  does not, or where the lowering is not exact, is reported as a failure and the script exits with status 1;
- the element types of the lowered layers (input quantization, dense weights, hidden activations);
- the training wall time (``train()`` including the method's finishing steps and extras).

The baseline is Brevitas's bnn_pynq ``FC`` network (bench/brevitas_baseline.py), W1A1, trained with the same
loop settings: the shape of hwnet's BinaryNet default for the data set (digits 64-128-128-10, MNIST
784-64-64-64-10), and on digits also 64-64-64-64-10 (the TFC shape).

Seeds 0 .. N-1 (default 3 on digits, 1 on MNIST); medians and min..max over seeds. Prints one line per run on
stderr and writes build/bench/methods.{md,json,png}. Usage:

    python bench/bench_methods.py [--methods a,b] [--datasets digits,mnist] [--seeds N] [--epochs N]
                                  [--no-brevitas] [--out build/bench]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from hwnet import golden  # noqa: E402
from hwnet.ir import Dense, MultiThreshold  # noqa: E402
from hwnet.train.data import load_dataset, mnist_available  # noqa: E402
from hwnet.train.lower import check_lowering, lower  # noqa: E402
from hwnet.train.methods import METHODS, train  # noqa: E402
from hwnet.train.trainer import DEFAULTS, predict  # noqa: E402

DATASETS = ("digits", "mnist", "mnist-full")
DEFAULT_SEEDS = {"digits": 3}  # every other data set: 1
#: Extra Brevitas shapes per data set, besides hwnet's default shape for it.
EXTRA_BREVITAS_SHAPES = {"digits": [(64, 64, 64)]}
RESULT_KEYS = ("test_accuracy", "test_mse")


def log(line):
    print(line, file=sys.stderr, flush=True)


def shape_name(ds, hidden):
    return "-".join(str(n) for n in (ds.input_size, *hidden, ds.classes))


def brevitas_shapes(ds, hidden=None):
    if hidden is not None:  # --hidden: one shape for everything
        return [tuple(hidden)]
    shapes = [tuple(DEFAULTS[ds.name]["hidden"])]
    for s in EXTRA_BREVITAS_SHAPES.get(ds.name, []):
        if tuple(s) not in shapes:
            shapes.append(tuple(s))
    return shapes


# --- one run ---------------------------------------------------------------------------------------------------

def describe_layers(network):
    """The lowered network's layers as plain values: op, name, element types."""
    out = []
    for layer in network.layers:
        if isinstance(layer, MultiThreshold):
            out.append({"op": "multithreshold", "name": layer.name, "out_type": str(layer.out_type)})
        elif isinstance(layer, Dense):
            out.append({"op": "dense", "name": layer.name, "in_features": layer.in_features,
                        "out_features": layer.out_features, "weight_type": str(layer.weight_type),
                        "in_type": str(layer.in_type), "out_type": str(layer.out_type),
                        "thresholds": layer.thresholds is not None, "lookup": layer.products is not None})
        else:
            out.append({"op": type(layer).__name__, "name": getattr(layer, "name", "?")})
    return out


def layer_types(network, layers):
    """``(input, weights, activations)``: how the raw input enters the first dense layer (quantized to a type,
    or raw), the distinct dense weight types and the distinct hidden activation types, in layer order."""
    first = layers[0]
    inp = first["out_type"] if first["op"] == "multithreshold" else f"{network.input_type} (raw)"
    dense = [lay for lay in layers if lay["op"] == "dense"]

    def distinct(values):
        return " / ".join(dict.fromkeys(values))

    weights = distinct(lay["weight_type"] + (" (lookup)" if lay["lookup"] else "") for lay in dense)
    acts = distinct(lay["out_type"] for lay in dense if lay["thresholds"])
    return inp, weights, acts or "-"


@torch.no_grad()
def integer_mse(model, network, x):
    """Test MSE of an autoencoder's *integer* model: the golden model's final accumulators through the torch
    model's own eval-mode output map (``QuantNet.output``)."""
    out = model.output(golden.execute(network, x))
    xt = torch.as_tensor(np.asarray(x)).to(torch.float32)
    return float(torch.mean((out - xt / model.input_max) ** 2))


#: The convolutional layers a method that needs them (Shift Attention) gets: the digits CNN of the tests and
#: a MNIST one that pools twice.
CONV = {"digits": [{"channels": 16, "kernel": 3, "padding": 1}, {"channels": 16, "kernel": 3, "padding": 1, "pool": 2}],
        "mnist": [{"channels": 16, "kernel": 3, "padding": 1, "pool": 2},
                  {"channels": 32, "kernel": 3, "padding": 1, "pool": 2}]}


def run_method(ds, method, seed, epochs, verbose, hidden=None):
    """Train, lower and check one hwnet model; returns the run record."""
    m = METHODS[method]
    conv = CONV[ds.name] if m.needs_conv else None
    rec = {"kind": "hwnet", "dataset": ds.name, "method": method, "seed": seed, "task": m.task,
           "hidden": list(hidden or DEFAULTS[ds.name]["hidden"]), "options": dict(m.options), "paper": m.paper,
           "epochs": epochs or DEFAULTS[ds.name]["epochs"], "failure": None}
    t0 = time.perf_counter()
    rec["conv"] = conv
    model, history, results = train(ds, method, hidden=hidden, conv=conv, epochs=epochs, seed=seed,
                                    progress=(lambda line: log(f"      {line}")) if verbose else None)
    rec["seconds"] = time.perf_counter() - t0
    rec["hidden"] = list(model.hidden)
    for key in RESULT_KEYS:
        if key in results:
            rec[key] = results[key]
    rec["extras"] = {k: v for k, v in results.items() if k not in RESULT_KEYS}
    network = lower(model, name=f"{method}-{ds.name}", metadata={"dataset": ds.name})
    rec["mismatches"] = check_lowering(model, network, ds.test_x)
    rec["layers"] = describe_layers(network)
    rec["input"], rec["weights"], rec["activations"] = layer_types(network, rec["layers"])
    problems = []
    if rec["mismatches"]:
        problems.append(f"lowering not exact: {rec['mismatches']} mismatching elements on the test set")
    if m.task == "regress":
        rec["integer_mse"] = integer_mse(model, network, ds.test_x)
        if rec["integer_mse"] != rec["test_mse"]:
            problems.append(f"integer MSE {rec['integer_mse']!r} != torch MSE {rec['test_mse']!r}")
    else:
        integer_pred = golden.classify(golden.execute(network, ds.test_x))
        rec["integer_accuracy"] = float(np.mean(integer_pred == ds.test_y))
        rec["predictions_differ"] = int(np.count_nonzero(integer_pred != predict(model, ds.test_x)))
        if rec["integer_accuracy"] != rec["test_accuracy"] or rec["predictions_differ"]:
            problems.append(f"integer accuracy {rec['integer_accuracy']:.4f} != torch {rec['test_accuracy']:.4f} "
                            f"({rec['predictions_differ']} predictions differ)")
    rec["failure"] = "; ".join(problems) or None
    return rec


def run_brevitas(ds, hidden, seed, epochs, verbose):
    from brevitas_baseline import train_brevitas_mlp
    d = DEFAULTS[ds.name]
    epochs = epochs or d["epochs"]
    r = train_brevitas_mlp(ds, hidden=hidden, weight_bits=1, act_bits=1, epochs=epochs,
                           batch_size=d["batch_size"], lr=d["lr"], seed=seed,
                           progress=(lambda line: log(f"      {line}")) if verbose else None)
    return {"kind": "brevitas", "dataset": ds.name, "method": f"brevitas W1A1 {shape_name(ds, hidden)}",
            "hidden": list(hidden), "seed": seed, "task": "classify", "epochs": epochs, "weight_bits": 1,
            "act_bits": 1, "test_accuracy": r["test_accuracy"], "train_accuracy": r["train_accuracy"],
            "seconds": r["seconds"], "input": "bipolar", "weights": "bipolar", "activations": "bipolar",
            "failure": None}


def progress_line(rec):
    if rec.get("error"):
        return f"ERROR {rec['error']}"
    if "test_mse" in rec:
        text = f"test mse {rec['test_mse']:.5f}, integer {rec['integer_mse']:.5f}"
    else:
        text = f"test {100 * rec['test_accuracy']:.2f}%"
        if "integer_accuracy" in rec:
            text += f", integer {100 * rec['integer_accuracy']:.2f}%"
    if rec["kind"] == "hwnet":
        text += ", lowering exact" if not rec["failure"] else f", FAILED: {rec['failure']}"
    return f"{text} ({rec['seconds']:.1f} s)"


# --- summaries -------------------------------------------------------------------------------------------------

def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(runs):
    """One summary per (dataset, method) in run order: medians and spreads over seeds."""
    groups = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    out = []
    for (dataset, method), rs in groups.items():
        ok = [r for r in rs if not r.get("error")]
        s = {"dataset": dataset, "method": method, "kind": rs[0]["kind"], "task": rs[0]["task"],
             "hidden": rs[0]["hidden"], "epochs": rs[0]["epochs"], "seeds": [r["seed"] for r in rs],
             "errors": [r["error"] for r in rs if r.get("error")],
             "failures": [r["failure"] for r in rs if r.get("failure")]}
        if ok:
            for key in ("test_accuracy", "integer_accuracy", "test_mse", "integer_mse", "seconds"):
                if all(key in r for r in ok):
                    s[key] = spread([r[key] for r in ok])
            for key in ("input", "weights", "activations"):
                s[key] = ok[0].get(key)
            extras = {}
            for r in ok:
                for k, v in r.get("extras", {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        extras.setdefault(k, []).append(v)
            s["extras"] = {k: spread(v) for k, v in extras.items()}
            s["exact"] = sum(1 for r in ok if r["kind"] == "hwnet" and not r["failure"])
        out.append(s)
    return out


def pct(x):
    return f"{100 * x:.2f}"


def spread_cell(sp, value):
    """``median (min..max)`` over seeds (just the median for one seed), each written by ``value``."""
    if sp is None:
        return "-"
    if sp["n"] == 1:
        return value(sp["median"])
    return f"{value(sp['median'])} ({value(sp['min'])}..{value(sp['max'])})"


def acc_cell(sp):
    return spread_cell(sp, lambda v: f"{pct(v)}%")


def mse_cell(sp):
    return spread_cell(sp, lambda v: f"{v:.5f}")


def extras_cell(extras):
    parts = []
    for k, sp in extras.items():
        label = k.replace("_", " ").replace("test accuracy", "acc.")
        parts.append(f"{label} {acc_cell(sp)}" if "accuracy" in k else f"{label} {sp['median']:.4g}")
    return "; ".join(parts) or "-"


def lowering_cell(s):
    if s["kind"] != "hwnet":
        return "-"
    total = len(s["seeds"])
    if s["errors"]:
        return f"ERROR ({len(s['errors'])}/{total})"
    return f"exact {s['exact']}/{total}" if s["exact"] == total else f"FAILED ({total - s['exact']}/{total})"


def table_lines(header, rows):
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def seed_text(seeds):
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"


def markdown(report):
    summary = report["summary"]
    machine = report["machine"]
    lines = ["## Training methods against a Brevitas baseline (bench/bench_methods.py)", "",
             "```sh",
             ".venv/bin/python bench/bench_methods.py      # or: make bench-methods; writes "
             "build/bench/methods.{md,json,png}",
             "```", "",
             f"Run of {report['date']} on {machine['platform']} ({machine['cpu_count']} cores, torch threads "
             f"{report['threads']}): {report['elapsed_s']:.0f} s wall. torch {report['versions']['torch']}, "
             f"Brevitas {report['versions']['brevitas'] or 'not installed'}. Command: `{report['command']}`.", "",
             "Every method with its default options, the data set's default shape and training settings "
             "(`hwnet.train.trainer.DEFAULTS`" + (f", epochs overridden to {report['args']['epochs']}" if
                                                  report['args']['epochs'] else "") + "). Accuracy: median over "
             "seeds (min..max). Integer: the lowered network run by the golden model; `exact k/n`: the lowering "
             "matched the torch model on every element of every layer on the whole test set and the integer "
             "accuracy equals the torch accuracy, in k of n seeds. Types: how the raw pixels enter the first "
             "dense layer, the dense layers' weight types, the hidden layers' output (activation) types. Train s: "
             f"median wall time of `train()` (finishing steps and extras included), {report['threads']} torch "
             f"thread(s).", ""]
    if any(r["kind"] == "brevitas" for r in report["runs"]):
        lines += ["Brevitas: the bnn_pynq `FC` network (bench/brevitas_baseline.py: bipolar input, QuantLinear "
                  "without bias, BatchNorm1d, 1-bit QuantIdentity, dropout 0.2, TensorNorm), W1A1, trained with "
                  "hwnet's loop (Adam, cosine decay, cross-entropy, same batch size, learning rate, epochs and "
                  "seeds; no input noise); train s excludes evaluation.", ""]
    for name in report["datasets"]:
        rows = [s for s in summary if s["dataset"] == name and s["task"] == "classify"]
        if not rows:
            continue
        info = report["dataset_info"][name]
        first = rows[0]
        lines += [f"### {name}: {info['shape']} ({info['train']:,} train / {info['test']:,} test), "
                  f"{seed_text(first['seeds'])}, {first['epochs']} epochs", ""]
        table = []
        for s in rows:
            label = s["method"] if s["kind"] == "hwnet" else s["method"].replace("brevitas", "Brevitas FC", 1)
            if s["errors"] and "test_accuracy" not in s:
                table.append([label, f"ERROR: {s['errors'][0]}", "-", lowering_cell(s), "-", "-", "-", "-", "-"])
                continue
            table.append([label, acc_cell(s.get("test_accuracy")), acc_cell(s.get("integer_accuracy")),
                          lowering_cell(s), s["input"], s["weights"], s["activations"],
                          f"{s['seconds']['median']:.1f}", extras_cell(s.get("extras", {}))])
        lines += table_lines(["method", "test accuracy", "integer accuracy", "lowering", "input", "weights",
                              "activations", "train s", "extras"], table)
        lines.append("")
    regress = [s for s in summary if s["task"] == "regress"]
    if regress:
        lines += ["### Regression methods (test mean squared error against the input scaled to 0..1)", ""]
        table = []
        for s in regress:
            if s["errors"] and "test_mse" not in s:
                table.append([s["method"], s["dataset"], f"ERROR: {s['errors'][0]}", "-", lowering_cell(s),
                              "-", "-", "-", "-"])
                continue
            table.append([s["method"], s["dataset"], mse_cell(s.get("test_mse")), mse_cell(s.get("integer_mse")),
                          lowering_cell(s), s["input"], s["weights"], s["activations"],
                          f"{s['seconds']['median']:.1f}"])
        lines += table_lines(["method", "data set", "test MSE", "integer MSE", "lowering", "input", "weights",
                              "activations", "train s"], table)
        lines.append("")
    methods = [s["method"] for s in summary if s["kind"] == "hwnet"]
    if methods:
        lines += ["Methods: " + "; ".join(f"`{m}`: {METHODS[m].paper}" for m in dict.fromkeys(methods)) + ".", ""]
    if report["skipped"]:
        lines += ["Skipped: " + "; ".join(report["skipped"]) + ".", ""]
    failures = [f"{r['dataset']} {r['method']} seed {r['seed']}: {r.get('error') or r['failure']}"
                for r in report["runs"] if r.get("error") or r.get("failure")]
    if failures:
        lines += ["**Failures:**", "", *(f"- {f}" for f in failures), ""]
    return "\n".join(lines)


def plot(report, path):
    """One panel per data set: every seed's accuracy per method (dots), the median (bar tick) and min..max (error
    bar); the Brevitas baselines' medians as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in report["datasets"]
             if any(s["dataset"] == n and s["task"] == "classify" for s in report["summary"])]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(max(7, 5.5 * len(names)), 5), squeeze=False)
    axes = axes[0]
    if not names:
        axes[0].text(0.5, 0.5, "no classification results", ha="center", va="center")
    styles = ["--", ":", "-."]
    for ax, name in zip(axes, names):
        rows = [s for s in report["summary"]
                if s["dataset"] == name and s["task"] == "classify" and s["kind"] == "hwnet" and "test_accuracy" in s]
        for i, s in enumerate(rows):
            accs = [100 * r["test_accuracy"] for r in report["runs"] if r["dataset"] == name
                    and r["method"] == s["method"] and "test_accuracy" in r]
            jitter = np.linspace(-0.12, 0.12, len(accs)) if len(accs) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), accs, s=14, color="tab:blue", alpha=0.6, zorder=3)
            sp = s["test_accuracy"]
            med = 100 * sp["median"]
            ax.errorbar([i], [med], yerr=[[med - 100 * sp["min"]], [100 * sp["max"] - med]], fmt="_",
                        markersize=18, color="tab:blue", capsize=4, zorder=4)
            if s["failures"] or s["errors"]:
                ax.annotate("FAILED", (i, med), color="red", fontsize="small", ha="center",
                            textcoords="offset points", xytext=(0, 8))
        baselines = [s for s in report["summary"] if s["dataset"] == name and s["kind"] == "brevitas"
                     and "test_accuracy" in s]
        for k, s in enumerate(baselines):
            sp = s["test_accuracy"]
            ax.axhline(100 * sp["median"], color="tab:red", linestyle=styles[k % len(styles)],
                       label=f"{s['method'].replace('brevitas', 'Brevitas FC', 1)}: {pct(sp['median'])}% "
                             f"(median of {sp['n']})")
        ax.set_xticks(range(len(rows)), [s["method"] for s in rows], rotation=45, ha="right")
        ax.set_xlim(-0.6, max(len(rows), 1) - 0.4)
        info = report["dataset_info"][name]
        ax.set_title(f"{name} ({info['shape']}), {seed_text(rows[0]['seeds']) if rows else ''}",
                     fontsize="medium")
        values = [100 * r["test_accuracy"] for r in report["runs"] if r["dataset"] == name and "test_accuracy" in r]
        if values:
            ax.set_ylim(max(0.0, min(values) - 3), min(100.0, max(values) + 2))
        ax.set_ylabel("test accuracy %")
        ax.grid(axis="y", alpha=0.3)
        if baselines:
            ax.legend(fontsize="small", loc="best")
    fig.suptitle("hwnet training methods vs the Brevitas W1A1 baseline\n(dots: seeds; bars: median and "
                 "min..max over seeds; lines: Brevitas medians)", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def warm_up(brevitas):
    """One untimed epoch of BinaryNet (and of the Brevitas model) on digits, so that the first timed run does not
    pay for lazy imports and torch's first calls."""
    ds = load_dataset("digits")
    train(ds, "binarynet", epochs=1, seed=0)
    if brevitas:
        from brevitas_baseline import train_brevitas_mlp
        train_brevitas_mlp(ds, hidden=(16,), epochs=1, batch_size=64, lr=0.01, seed=0)


# --- main ------------------------------------------------------------------------------------------------------

def parse_list(text, allowed, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown or not items:
        raise SystemExit(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join(METHODS)} (default all)")
    p.add_argument("--datasets", default="digits,mnist",
                   help="comma-separated: digits, mnist, mnist-full (default digits,mnist; MNIST skipped when "
                        "its files are missing)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per data set (default 3 on digits, 1 "
                                                           "on the others)")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every run (default: hwnet's per data set)")
    p.add_argument("--no-brevitas", action="store_true", help="leave out the Brevitas baseline")
    p.add_argument("--hidden", default=None, help="hidden widths for every run, hwnet's and Brevitas's, e.g. "
                   "256,256,256 (default: hwnet's per data set, plus the extra Brevitas shapes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--verbose", action="store_true", help="also print every epoch")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"))
    args = p.parse_args(argv)
    methods = parse_list(args.methods, tuple(METHODS), "method") if args.methods else list(METHODS)
    datasets = parse_list(args.datasets, DATASETS, "data set")
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit("--seeds must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        raise SystemExit("--epochs must be at least 1")
    hidden = None
    if args.hidden:
        try:
            hidden = tuple(int(h) for h in args.hidden.split(","))
        except ValueError:
            raise SystemExit(f"--hidden must be comma-separated widths, got {args.hidden!r}") from None
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    skipped = []
    brevitas = not args.no_brevitas
    if brevitas:
        from brevitas_baseline import brevitas_version
        if brevitas_version() is None:
            brevitas = False
            skipped.append("Brevitas baseline (brevitas not installed: `.venv/bin/pip install -c constraints.txt "
                           "-e '.[bench]'`)")
            log(f"skipping: {skipped[-1]}")
    loaded = {}
    for name in datasets:
        if name.startswith("mnist") and not mnist_available(full=name == "mnist-full"):
            skipped.append(f"{name} (MNIST files not found: ../shared/data/mnist or $HWNET_MNIST_DIR)")
            log(f"skipping: {skipped[-1]}")
            continue
        loaded[name] = load_dataset(name)

    plan = []
    for name, ds in loaded.items():
        seeds = range(args.seeds if args.seeds is not None else DEFAULT_SEEDS.get(name, 1))
        plan += [("hwnet", ds, method, seed) for method in methods for seed in seeds]
        if brevitas:
            plan += [("brevitas", ds, shape, seed) for shape in brevitas_shapes(ds, hidden) for seed in seeds]

    if plan:
        warm_up(brevitas)
    t0 = time.perf_counter()
    runs = []
    for k, (kind, ds, what, seed) in enumerate(plan, 1):
        label = what if kind == "hwnet" else f"brevitas W1A1 {shape_name(ds, what)}"
        head = f"[{k}/{len(plan)}] {ds.name} {label} seed {seed}"
        if args.verbose:
            log(f"{head}: training")
        try:
            rec = (run_method(ds, what, seed, args.epochs, args.verbose, hidden) if kind == "hwnet"
                   else run_brevitas(ds, what, seed, args.epochs, args.verbose))
        except Exception as exc:  # a broken method is reported, the other runs go on
            rec = {"kind": kind, "dataset": ds.name, "method": label, "seed": seed,
                   "task": METHODS[what].task if kind == "hwnet" else "classify",
                   "hidden": list((hidden or DEFAULTS[ds.name]["hidden"]) if kind == "hwnet" else what),
                   "epochs": args.epochs or DEFAULTS[ds.name]["epochs"], "failure": None,
                   "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                   "traceback": traceback.format_exc()}
        runs.append(rec)
        log(f"{head}: {progress_line(rec)}")

    report = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "bench/bench_methods.py", *(sys.argv[1:] if argv is None else argv)]),
        "args": vars(args), "threads": args.threads, "elapsed_s": time.perf_counter() - t0,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "brevitas": __import__("brevitas_baseline").brevitas_version()},
        "datasets": list(loaded), "methods": methods, "skipped": skipped,
        "dataset_info": {name: {"shape": shape_name(ds, hidden or DEFAULTS[name]["hidden"]),
                                "train": len(ds.train_x),
                                "test": len(ds.test_x), "defaults": {k: (list(v) if isinstance(v, tuple) else v)
                                                                     for k, v in DEFAULTS[name].items()}}
                         for name, ds in loaded.items()},
        "runs": runs, "summary": summarize(runs),
    }
    md = markdown(report)
    print(md)
    (out / "methods.md").write_text(md)
    (out / "methods.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out / "methods.png")
    log(f"report: {out / 'methods.md'}")
    bad = [r for r in runs if r.get("error") or r.get("failure")]
    if bad:
        log(f"{len(bad)} run(s) failed or were not exact; see the report")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
