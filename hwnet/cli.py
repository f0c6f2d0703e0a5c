"""``hwnet``: train, compile, simulate, demo. See docs/cli.md.

Every command fails on bad input with one line, ``hwnet: error: <what is wrong and what to do>``, and exit
status 2, writing nothing partial.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import HwnetError

METHODS = ("binarynet",)
DATASETS = ("digits", "mnist", "mnist-full")


def _say(msg):
    print(f"[hwnet] {msg}", flush=True)


def _parse_hidden(text):
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise HwnetError(f"--hidden must be comma-separated positive integers, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise HwnetError(f"--hidden must be comma-separated positive integers, got {text!r}")
    return sizes


def _check_method(method):
    if method not in METHODS:
        raise HwnetError(f"unknown method {method!r}; available: {', '.join(METHODS)}")


def _train(args):
    from .train.data import load_dataset
    from .train.trainer import DEFAULTS, evaluate, save_checkpoint, train_binarynet
    _check_method(args.method)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise HwnetError(f"{out}: already exists; choose another --out or pass --force to replace it")
    if not out.parent.is_dir():
        raise HwnetError(f"{out}: directory {out.parent} does not exist")
    ds = load_dataset(args.dataset, mnist_dir=args.mnist_dir)
    cfg = dict(DEFAULTS[args.dataset])
    if args.hidden:
        cfg["hidden"] = _parse_hidden(args.hidden)
    for key in ("epochs", "batch_size", "lr", "seed"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if cfg["epochs"] < 1:
        raise HwnetError(f"--epochs must be at least 1, got {cfg['epochs']}")
    _say(f"training {args.method} on {ds.name}: {len(ds.train_x)} train / {len(ds.test_x)} test samples, "
         f"hidden {list(cfg['hidden'])}, {cfg['epochs']} epochs")
    model, history = train_binarynet(ds, progress=_say, **cfg)
    acc = evaluate(model, ds.test_x, ds.test_y)
    save_checkpoint(model, out, meta={"method": args.method, "dataset": ds.name, "test_accuracy": acc,
                                      **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}})
    _say(f"test accuracy {acc * 100:.2f}%; checkpoint written to {out}")
    return 0


def _names(text):
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _compile(args):
    from .compiler import set_hardware_choices
    from .flow import compile_design, load_model
    network = set_hardware_choices(load_model(args.model), weights_in_logic=_names(args.weights_in_logic),
                                   bit_serial=_names(args.bit_serial))
    t0 = time.monotonic()
    plan = compile_design(network, args.out, target_cycles=args.target_cycles, force=args.force,
                          synth=not args.no_synth, progress=_say)
    print(Path(args.out, "design.md").read_text(), end="")
    _say(f"compiled {network.name} in {time.monotonic() - t0:.1f} s: {plan.cycles_per_inference} cycles per "
         f"inference, {plan.memory_bits} memory bits; design in {args.out}")
    return 0


def _simulate(args):
    from .flow import load_design, load_inputs, save_array, simulate_design
    network, _, _ = load_design(args.design)
    x = load_inputs(args.inputs, network)
    if args.outputs and not Path(args.outputs).resolve().parent.is_dir():
        raise HwnetError(f"{args.outputs}: directory {Path(args.outputs).parent} does not exist")
    hw, expected, res = simulate_design(args.design, x, stall_in=args.stall_in, stall_out=args.stall_out,
                                        seed=args.seed, progress=_say)
    if args.outputs:
        save_array(args.outputs, hw)
    bad_rows = np.nonzero(np.any(hw != expected, axis=1))[0]
    _say(f"{len(x)} vectors, {res.cycles} cycles in {res.wall_seconds:.1f} s "
         f"({res.cycles / max(res.wall_seconds, 1e-9):.0f} cycles/s); latency {res.latency} cycles"
         + (f", interval {res.interval:g} cycles" if res.interval is not None else ""))
    _say(f"mismatches against the golden model: {int(np.sum(hw != expected))} elements in {len(bad_rows)} "
         f"of {len(x)} vectors" + (f" (first at vector {bad_rows[0]})" if len(bad_rows) else ""))
    if args.outputs:
        _say(f"hardware outputs written to {args.outputs}")
    return 1 if len(bad_rows) else 0


def _demo(args):
    from .demo import run_demo
    return run_demo(out_dir=Path(args.out), dataset=args.dataset, epochs=args.epochs, seed=args.seed,
                    mnist_dir=args.mnist_dir, progress=_say)


def build_parser():
    p = argparse.ArgumentParser(prog="hwnet", description="Multiplier-free hardware for low-precision neural "
                                "networks: train, lower to integers, generate Verilog, prove it bit-exact.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a network and write a checkpoint")
    t.add_argument("--method", default="binarynet", help=f"quantization method ({', '.join(METHODS)})")
    t.add_argument("--dataset", default="digits", choices=DATASETS)
    t.add_argument("--mnist-dir", default=None, help="folder with the MNIST IDX .gz files")
    t.add_argument("--hidden", default=None, help="hidden layer widths, e.g. 128,128")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    t.add_argument("--force", action="store_true", help="replace --out if it exists")
    t.set_defaults(func=_train)

    c = sub.add_parser("compile", help="compile a checkpoint or IR file into a design directory")
    c.add_argument("model", help="checkpoint from `hwnet train` (.pt) or IR file (.npz)")
    c.add_argument("--out", required=True, help="design directory to create")
    c.add_argument("--target-cycles", type=int, default=None,
                   help="cycles per inference to fold unfolded layers to (default 128)")
    c.add_argument("--force", action="store_true", help="replace --out if it exists")
    c.add_argument("--weights-in-logic", metavar="LAYERS", default=None,
                   help="comma-separated dense layers to unroll fully with their weights as constants in the "
                        "logic (one vector per cycle, no ROM)")
    c.add_argument("--bit-serial", metavar="LAYERS", default=None,
                   help="comma-separated uint<k>/int<k> weight layers to evaluate one weight bit plane per cycle")
    c.add_argument("--no-synth", action="store_true",
                   help="skip synthesis for iCE40/ECP5 (resource counts and the multiplier-free certificate)")
    c.set_defaults(func=_compile)

    s = sub.add_parser("simulate", help="run a design's Verilog under Verilator against the golden model")
    s.add_argument("design", help="design directory from `hwnet compile`")
    s.add_argument("--inputs", required=True, help=".npy array (n, input_size) of input values")
    s.add_argument("--outputs", default=None, help=".npy file for the hardware's outputs (n, output_size)")
    s.add_argument("--stall-in", type=float, default=0.0, help="probability the source withholds valid")
    s.add_argument("--stall-out", type=float, default=0.0, help="probability the sink drops ready")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_simulate)

    d = sub.add_parser("demo", help="train on digits, compile, simulate the whole test split, report")
    d.add_argument("--out", default="build/demo")
    d.add_argument("--dataset", default="digits", choices=DATASETS)
    d.add_argument("--mnist-dir", default=None)
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HwnetError as exc:
        print(f"hwnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
