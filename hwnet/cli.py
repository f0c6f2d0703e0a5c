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
        from .boards import BOARD_TARGETS
        budget = BOARDS[args.board] if args.board in BOARDS else BOARD_TARGETS[args.board].budget
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


def _build(args):
    from .boards import get_board
    from .build import ASIC_TARGET, build_asic, build_board
    from .flow import load_model
    out = Path(args.out or f"build/{args.board}")
    if out.exists() and not args.force:
        raise HwnetError(f"{out}: already exists; choose another --out or pass --force to replace it")
    board = None if args.board == ASIC_TARGET else get_board(args.board)
    network = load_model(args.model)
    t0 = time.monotonic()
    if board is None:
        if args.clock_mhz is not None or args.no_pll:
            raise HwnetError("--clock-mhz and --no-pll are for FPGA boards, not the ASIC target")
        report = build_asic(network, out, force=args.force, target_cycles=args.target_cycles, progress=_say)
        print(Path(out, "asic.md").read_text(), end="")
        _say(f"ASIC target of {network.name} in {time.monotonic() - t0:.1f} s: {report.cell_count:,} cells, "
             f"{report.nand2_equivalents:,.0f} NAND2 equivalents, {report.multipliers} multipliers; Verilog in "
             f"{out / 'hwnet_asic.v'}")
        return 0
    result = build_board(network, board, out, force=args.force, target_cycles=args.target_cycles,
                         clock_mhz=args.clock_mhz, pll=not args.no_pll, baud=args.baud, progress=_say)
    print(Path(out, "board.md").read_text(), end="")
    perf = result.report["performance"]
    _say(f"built {network.name} for {board.title} in {time.monotonic() - t0:.1f} s: {result.bitstream}, "
         f"{result.clock_hz / 1e6:.3f} MHz, timing {'met' if result.timing_met else 'FAILED'}, "
         f"{perf['cycles_per_inference']:g} cycles per inference ({perf['inferences_per_second']:,.0f}/s)")
    if not result.timing_met:
        print(f"hwnet: error: the design misses timing on {board.title} at every clock tried (see "
              f"{out / 'board.md'}); fold it further (--target-cycles) or give a lower --clock-mhz", file=sys.stderr)
        return 1
    return 0


def _program(args):
    from .boards import program
    program(args.bitstream, args.board, progress=_say)
    return 0


def _run(args):
    from .boards import get_board
    from .flow import load_inputs, save_array
    from .host import BoardClient
    from . import golden
    board = get_board(args.board)
    build_dir = Path(args.build or f"build/{args.board}")
    network, plan, built = _load_build(build_dir, board)
    x = load_inputs(args.inputs, network)
    if args.outputs and not Path(args.outputs).resolve().parent.is_dir():
        raise HwnetError(f"{args.outputs}: directory {Path(args.outputs).parent} does not exist")
    baud = args.baud or built["uart"]["baud"]
    if args.port == "sim":
        from .gateware.board import BoardTop
        from .host import SimTransport
        transport = SimTransport(BoardTop(plan=plan, divisor=4, leds=len(board.leds)))
        _say("port 'sim': the board top simulated bit by bit (Amaranth), its UART at 4 cycles per bit")
    else:
        from .host import SerialTransport
        transport = SerialTransport(args.port, baud=baud)
    client = BoardClient(transport, plan, timeout=args.timeout)
    info = client.check()
    _say(f"{board.title} on {args.port} holds design {info.design_id:#010x} ({network.name}); {len(x)} inputs")
    if plan.spram_words:
        t0 = time.monotonic()
        frames = client.load(progress=lambda n, total: _say(f"  SPRAM image: {n}/{total} words loaded"))
        _say(f"SPRAM image of {plan.spram_words} words loaded in {time.monotonic() - t0:.1f} s ({frames} frames)")
    expected = golden.execute(network, x)
    t0 = time.monotonic()
    rows = []
    for k, row in enumerate(x):
        rows.append(client.infer(row))
        if (k + 1) % max(1, len(x) // 10) == 0 or k + 1 == len(x):
            _say(f"  {k + 1}/{len(x)} inferences ({(k + 1) / max(time.monotonic() - t0, 1e-9):.1f}/s)")
    hw = np.stack(rows)
    if args.outputs:
        save_array(args.outputs, hw)
    bad_rows = np.nonzero(np.any(hw != expected, axis=1))[0]
    _say(f"mismatches against the golden model: {int(np.sum(hw != expected))} elements in {len(bad_rows)} of "
         f"{len(x)} vectors" + (f" (first at vector {bad_rows[0]})" if len(bad_rows) else "")
         + (f"; {len(client.errors)} frames resent after error replies" if client.errors else ""))
    if args.outputs:
        _say(f"board outputs written to {args.outputs}")
    return 1 if len(bad_rows) else 0


def _load_build(build_dir, board):
    """(network, plan, board.json) of a ``hwnet build`` directory for ``board``."""
    import json
    from . import compiler, ir
    summary = build_dir / "board.json"
    if not summary.exists():
        raise HwnetError(f"{build_dir}: not a board build (no board.json); build it with "
                         f"`hwnet build MODEL --board {board.name} --out {build_dir}` or give --build")
    try:
        built = json.loads(summary.read_text())
    except json.JSONDecodeError as exc:
        raise HwnetError(f"{summary}: not valid JSON ({exc}); rebuild it") from None
    if built.get("board") != board.name:
        raise HwnetError(f"{build_dir} was built for {built.get('board')!r}, not {board.name!r}; give the build of "
                         f"this board with --build")
    network = ir.load(build_dir / "design" / "network.npz")
    return network, compiler.plan(network), built


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
    from .boards import BOARD_TARGETS as _targets
    c.add_argument("--board", default=None, choices=[*sorted(BOARDS), *_targets], metavar="PART",
                   help=f"fold for this part ({', '.join(sorted(BOARDS))}) or board ({', '.join(_targets)}): the "
                        f"fastest design that fits its LUT4s, block RAMs and SPRAMs")
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

    from .boards import BOARD_TARGETS, DEFAULT_BAUD
    boards = ", ".join(BOARD_TARGETS)
    b = sub.add_parser("build", help="build a network for a board: bitstream and report (docs/boards.md)")
    b.add_argument("model", help="checkpoint (.pt), IR file (.npz) or QONNX graph (.onnx)")
    b.add_argument("--board", required=True, choices=[*BOARD_TARGETS, "asic"], metavar="BOARD",
                   help=f"one of {boards}; or asic (technology-independent Verilog and a generic synthesis report)")
    b.add_argument("--out", default=None, help="build directory to create (default build/BOARD)")
    b.add_argument("--target-cycles", type=int, default=None,
                   help="a throughput goal: the cheapest design reaching it (default: the fastest that fits)")
    b.add_argument("--clock-mhz", type=float, default=None,
                   help="the design clock (a PLL makes it); default: the board clock, then a PLL where it helps")
    b.add_argument("--no-pll", action="store_true", help="run from the board clock only")
    b.add_argument("--baud", type=int, default=DEFAULT_BAUD, help=f"the UART's rate (default {DEFAULT_BAUD})")
    b.add_argument("--force", action="store_true", help="replace --out if it exists")
    b.set_defaults(func=_build)

    g = sub.add_parser("program", help="program a board with a bitstream from `hwnet build`")
    g.add_argument("bitstream", help="the .bin (iCE40) or .bit (ECP5) file")
    g.add_argument("--board", required=True, choices=list(BOARD_TARGETS), metavar="BOARD", help=boards)
    g.set_defaults(func=_program)

    r = sub.add_parser("run", help="run inputs on a programmed board over its serial port, against the golden "
                       "model")
    r.add_argument("inputs", help=".npy array (n, input_size) of input values")
    r.add_argument("--board", required=True, choices=list(BOARD_TARGETS), metavar="BOARD", help=boards)
    r.add_argument("--port", required=True, help="the board's serial port (e.g. /dev/ttyUSB1, COM3), or 'sim' "
                   "for the board top simulated")
    r.add_argument("--build", default=None, help="the board's build directory (default build/BOARD)")
    r.add_argument("--baud", type=int, default=None, help="default: the build's rate")
    r.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for a reply before resending")
    r.add_argument("--outputs", default=None, help=".npy file for the board's outputs")
    r.set_defaults(func=_run)

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
