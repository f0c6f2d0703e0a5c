"""``hwnet``: train, compile, simulate, demo. See docs/cli.md.

Every command fails on bad input with one line, ``hwnet: error: <what is wrong and what to do>``, and exit
status 2, writing nothing partial.
"""

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from .autofold import BOARDS
from .errors import HwnetError

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


_CONV_ITEM = re.compile(r"(\d+)c(\d+)(?:s(\d+))?(?:p(\d+))?")
_POOL_ITEM = re.compile(r"mp(\d+)")


def _parse_conv(text):
    """``--conv`` items -> conv layer dicts: ``<OC>c<K>[s<S>][p<P>]`` (OC channels, KxK, stride S, padding P on
    every side), ``mp<K>`` (a KxK max-pool after the conv item before it)."""
    form = f"--conv must be comma-separated items <OC>c<K>[s<S>][p<P>] or mp<K> (e.g. 16c3p1,mp2), got {text!r}"
    layers = []
    for item in (v.strip() for v in text.split(",")):
        conv, pool = _CONV_ITEM.fullmatch(item), _POOL_ITEM.fullmatch(item)
        if pool:
            if not layers or layers[-1]["pool"] is not None:
                raise HwnetError(f"--conv: {item!r} must follow a conv item (at most one max-pool per conv), "
                                 f"got {text!r}")
            layers[-1]["pool"] = int(pool.group(1))
        elif conv:
            layers.append({"channels": int(conv.group(1)), "kernel": int(conv.group(2)),
                           "stride": int(conv.group(3) or 1), "padding": int(conv.group(4) or 0), "pool": None})
        else:
            raise HwnetError(form)
    if not layers:
        raise HwnetError(form)
    if any(layer[k] == 0 for layer in layers for k in ("channels", "kernel", "stride", "pool")):
        raise HwnetError(f"--conv: channels, kernel, stride and pool must be at least 1, got {text!r}")
    return layers


def _parse_option(text):
    """``key=value`` -> (key, value); the value read as true/false, a number, or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise HwnetError(f"--option must be KEY=VALUE, got {text!r}")
    value = value.strip()
    if value.lower() in ("true", "false"):
        return key.strip(), value.lower() == "true"
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), value


def _train(args):
    from .train.data import load_dataset
    from .train.methods import METHODS, check_conv, resolve_options, train
    from .train.trainer import save_checkpoint
    if args.method not in METHODS:
        raise HwnetError(f"unknown method {args.method!r}; available: {', '.join(METHODS)}")
    options = dict(_parse_option(o) for o in args.option or [])
    hidden = _parse_hidden(args.hidden) if args.hidden else None
    conv = _parse_conv(args.conv) if args.conv is not None else None
    check_conv(METHODS[args.method], conv)
    if args.epochs is not None and args.epochs < 1:
        raise HwnetError(f"--epochs must be at least 1, got {args.epochs}")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise HwnetError(f"{out}: already exists; choose another --out or pass --force to replace it")
    if not out.parent.is_dir():
        raise HwnetError(f"{out}: directory {out.parent} does not exist")
    resolve_options(METHODS[args.method], options)  # fail on a bad option before loading data or training
    ds = load_dataset(args.dataset, mnist_dir=args.mnist_dir)
    settings = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr") if getattr(args, k) is not None}
    seed = 0 if args.seed is None else args.seed
    _say(f"training {args.method} on {ds.name}: {len(ds.train_x)} train / {len(ds.test_x)} test samples"
         + (f", conv {args.conv}" if conv else "") + (f", hidden {list(hidden)}" if hidden else "")
         + (f", options {options}" if options else ""))
    model, history, results = train(ds, args.method, hidden=hidden, conv=conv, seed=seed, progress=_say,
                                    options=options, **settings)
    meta = {"method": args.method, "dataset": ds.name, "seed": seed, "options": options,
            **{k: v for k, v in results.items() if isinstance(v, (int, float, str, list))}}
    save_checkpoint(model, out, meta=meta)
    result = (f"test accuracy {results['test_accuracy'] * 100:.2f}%" if "test_accuracy" in results
              else f"test mse {results['test_mse']:.4f}")
    extra = {k: v for k, v in results.items() if k not in ("test_accuracy", "test_mse")}
    _say(f"{result}" + (f" ({extra})" if extra else "") + f"; checkpoint written to {out}")
    return 0


def _names(text):
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _spram_layers(text):
    """``--spram`` items -> {layer: PEs streaming (None: every PE)}: ``LAYER`` or ``LAYER:PES``."""
    layers = {}
    for item in _names(text):
        name, sep, pes = (v.strip() for v in item.partition(":"))
        if not name or (sep and not pes.isdigit()):
            raise HwnetError(f"--spram items must be LAYER or LAYER:PES (how many of its PEs stream, e.g. "
                             f"fc0,fc1:4), got {item!r}")
        layers[name] = int(pes) if sep else None
    return layers


def _compile(args):
    from .compiler import set_hardware_choices
    from .flow import compile_design, load_model
    budget = None
    if args.board and args.budget:
        raise HwnetError("give either --board or --budget, not both")
    if args.board:
        budget = BOARDS[args.board]
    elif args.budget:
        from .autofold import parse_budget
        budget = parse_budget(args.budget, args.family)
    network = set_hardware_choices(load_model(args.model), weights_in_logic=_names(args.weights_in_logic),
                                   bit_serial=_names(args.bit_serial), spram=_spram_layers(args.spram))
    t0 = time.monotonic()
    plan = compile_design(network, args.out, target_cycles=args.target_cycles, force=args.force,
                          synth=not args.no_synth, progress=_say, budget=budget)
    print(Path(args.out, "design.md").read_text(), end="")
    _say(f"compiled {network.name} in {time.monotonic() - t0:.1f} s: {plan.cycles_per_inference} cycles per "
         f"inference, {plan.memory_bits} memory bits; design in {args.out}")
    return 0


def _export(args):
    from .flow import load_model
    from .qonnx_export import export_qonnx
    out = Path(args.out)
    if out.exists() and not args.force:
        raise HwnetError(f"{out} exists; give --force to replace it")
    if out.suffix.lower() != ".onnx":
        raise HwnetError(f"{out}: the QONNX file name must end in .onnx")
    network = load_model(args.model)
    export_qonnx(network, out)
    _say(f"exported {network.name} ({len(network.layers)} layers) to {out}; it runs in qonnx "
         f"(qonnx.core.onnx_exec.execute_onnx) with the IR's integer outputs")
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
    t.add_argument("--method", default="binarynet", help="training method (docs/methods.md): binarynet, "
                   "binaryconnect, qnn, qnn-log, bnn+, fewmult, dfp, hwgq, ffn, bitpruning, lutnet, lutnet-ae, "
                   "shift-attention (needs --conv)")
    t.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. --option act_bits=3 (repeatable; docs/methods.md lists them)")
    t.add_argument("--dataset", default="digits", choices=DATASETS)
    t.add_argument("--mnist-dir", default=None, help="folder with the MNIST IDX .gz files")
    t.add_argument("--conv", default=None, metavar="SPEC",
                   help="convolutional layers before the dense ones, comma-separated: <OC>c<K>[s<S>][p<P>] (OC "
                        "channels, KxK kernel, stride S, padding P) and mp<K> (KxK max-pool after the conv before "
                        "it), e.g. 16c3p1,16c3p1,mp2")
    t.add_argument("--hidden", default=None, help="hidden (dense) layer widths, e.g. 128,128")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    t.add_argument("--force", action="store_true", help="replace --out if it exists")
    t.set_defaults(func=_train)

    c = sub.add_parser("compile", help="compile a checkpoint or IR file into a design directory")
    c.add_argument("model", help="checkpoint from `hwnet train` (.pt), IR file (.npz) or QONNX graph (.onnx: "
                   "Brevitas, FINN, QKeras exports; docs/interop.md)")
    c.add_argument("--out", required=True, help="design directory to create")
    c.add_argument("--target-cycles", type=int, default=None,
                   help="cycles per inference to fold unfolded layers to (default 128); with --board or --budget "
                        "a throughput goal: the cheapest design that reaches it")
    c.add_argument("--board", default=None, choices=sorted(BOARDS),
                   help="fold for this part: the fastest design that fits its LUT4s, block RAMs and SPRAMs")
    c.add_argument("--budget", default=None, metavar="KEY=VALUE,...",
                   help="fold for an explicit budget, e.g. lut4=5000,ebr=30,spram=4 (with --family)")
    c.add_argument("--family", default="ice40", choices=("ice40", "ecp5"), help="FPGA family of --budget")
    c.add_argument("--spram", metavar="LAYERS", default=None,
                   help="comma-separated dense layers whose weights stream from the iCE40UP's SPRAM (loaded at "
                        "start-up); LAYER:N streams only N of the layer's PEs, the others keep block RAM")
    c.add_argument("--force", action="store_true", help="replace --out if it exists")
    c.add_argument("--weights-in-logic", metavar="LAYERS", default=None,
                   help="comma-separated dense layers to unroll fully with their weights as constants in the "
                        "logic (one vector per cycle, no ROM)")
    c.add_argument("--bit-serial", metavar="LAYERS", default=None,
                   help="comma-separated uint<k>/int<k> weight layers to evaluate one weight bit plane per cycle")
    c.add_argument("--no-synth", action="store_true",
                   help="skip synthesis for iCE40/ECP5 (resource counts and the multiplier-free certificate)")
    c.set_defaults(func=_compile)

    e = sub.add_parser("export", help="write a network as a QONNX graph (docs/interop.md)")
    e.add_argument("model", help="checkpoint (.pt), IR file (.npz) or QONNX graph (.onnx)")
    e.add_argument("--out", required=True, help="QONNX file to write (.onnx)")
    e.add_argument("--force", action="store_true", help="replace --out if it exists")
    e.set_defaults(func=_export)

    s = sub.add_parser("simulate", help="run a design's Verilog under Verilator against the golden model")
    s.add_argument("design", help="design directory from `hwnet compile`")
    s.add_argument("--inputs", required=True, help=".npy array (n, input_size) of input values; for a network "
                   "imported from QONNX also the graph's float inputs (n, *input shape)")
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
