"""Board builds: ``hwnet build`` for the demo network (digits BinaryNet 64-128-128-10) on the iCEBreaker and the
ULX3S-85F, and the TFC and SFC MLPs (784-64-64-64-10 and 784-256-256-256-10 W1A1, trained on the MNIST split
when ../shared/data/mnist is present, otherwise random +-1 weights) on the iCEBreaker (SFC's weights stream from
the SPRAM, loaded over the serial link): auto-folded for the board, with the PLL where it helps;
for each the bitstream's report (resources against the device, Fmax per clock, timing, cycles per inference from
Verilator, inferences/s and latency at the achieved clock, multipliers) and the build time; and the ASIC-style
target of the demo network (cells, NAND2 equivalents).

Prints a table and writes build/bench/boards.{md,json} and a plot (clock and inferences/s per build). Usage:

    python bench/bench_boards.py [--out build/bench] [--only demo-icebreaker,demo-ulx3s-85f,tfc-icebreaker,...]

(``--only``: those builds, reported in boards-<names>.md/json.)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwnet.boards import get_board  # noqa: E402
from hwnet.build import build_asic, build_board  # noqa: E402
from hwnet.train.data import load_dataset, mnist_available  # noqa: E402
from hwnet.train.lower import check_lowering, lower  # noqa: E402
from hwnet.train.trainer import evaluate, train_binarynet  # noqa: E402


def _say(msg):
    print(f"   {msg}", flush=True)


def _network(label, ds, hidden):
    model, _ = train_binarynet(ds, hidden=hidden, seed=0, progress=_say)
    network = lower(model, name=label)
    assert check_lowering(model, network, ds.test_x) == 0, "lowering not exact"
    return network, evaluate(model, ds.test_x, ds.test_y)


def _random_mlp(hidden):
    from hwnet.gateware.testing import random_network
    net = random_network(np.random.default_rng(0), input_size=784, hidden=list(hidden), outputs=10,
                         input_type="uint8")
    return net.replace_layers([layer.with_folding(None, None) if hasattr(layer, "with_folding") else layer
                               for layer in net.layers])


#: network key -> (label, data set, hidden sizes; None: the data set's default)
NETWORKS = {"digits-demo": ("demo 64-128-128-10", "digits", None),
            "tfc": ("TFC 784-64-64-64-10", "mnist", (64, 64, 64)),
            "sfc": ("SFC 784-256-256-256-10", "mnist", (256, 256, 256))}
#: build name -> (network key, board)
JOBS = {"demo-icebreaker": ("digits-demo", "icebreaker"), "demo-ulx3s-85f": ("digits-demo", "ulx3s-85f"),
        "tfc-icebreaker": ("tfc", "icebreaker"), "sfc-icebreaker": ("sfc", "icebreaker")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "bench"))
    ap.add_argument("--only", default=None, help="comma-separated builds: " + ", ".join(JOBS))
    args = ap.parse_args()
    only = [j.strip() for j in args.only.split(",")] if args.only else list(JOBS)
    unknown = [j for j in only if j not in JOBS]
    if unknown:
        ap.error(f"unknown builds {unknown}; choose from {', '.join(JOBS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    networks = {}

    def network(key):
        if key not in networks:
            label, dataset, hidden = NETWORKS[key]
            print(f"== {label}: BinaryNet on {dataset}", flush=True)
            if dataset == "digits" or mnist_available():
                networks[key] = (label, *_network(key, load_dataset(dataset), hidden))
            else:
                networks[key] = (label, _random_mlp(hidden), None)
        return networks[key]

    jobs = [(*network(JOBS[j][0]), JOBS[j][1]) for j in only]
    rows = []
    for label, net, acc, board_name in jobs:
        board = get_board(board_name)
        print(f"== {label} on {board.title}", flush=True)
        t0 = time.monotonic()
        result = build_board(net, board, out / f"board-{net.name}-{board_name}", force=True, progress=_say)
        seconds = time.monotonic() - t0
        r = result.report
        rows.append({"network": label, "board": board.title, "accuracy": acc, "build_seconds": seconds,
                     "clock_mhz": result.clock_hz / 1e6, "clock_source": r["clock"]["source"],
                     "fmax_mhz": r["clock"]["fmax_mhz"], "timing_met": result.timing_met,
                     "attempts": r["attempts"], "resources": r["resources"], "multipliers": r["multipliers"],
                     "performance": r["performance"], "autofold": r["autofold"]["report"]})
        print(f"   {seconds:.0f} s, {result.clock_hz / 1e6:.2f} MHz, timing {'met' if result.timing_met else 'FAILED'}",
              flush=True)

    asic = None
    if args.only is None:
        print("== ASIC-style target of the demo network", flush=True)
        asic = build_asic(network("digits-demo")[1], out / "asic-digits", force=True, progress=_say)

    stem = "boards" if args.only is None else "boards-" + "-".join(only)
    (out / f"{stem}.json").write_text(json.dumps({"builds": rows, "asic": asic.summary() if asic else None},
                                                 indent=1, default=str) + "\n")
    md = _markdown(rows, asic)
    (out / f"{stem}.md").write_text(md)
    _plot(rows, out / f"{stem}.png")
    print(md)
    print(f"report: {out / f'{stem}.md'}")


def _markdown(rows, asic):
    lines = ["| network | board | clock | Fmax | timing | cycles / inference | inferences/s | latency | logic "
             "| block RAM | multipliers | build |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res, p = r["resources"], r["performance"]
        logic = next(v for k, v in res.items() if k.startswith(("logic cells", "LUT4")))
        bram = next(v for k, v in res.items() if k.startswith("block RAM"))
        fmax = ", ".join(f"{v:.1f}" for v in r["fmax_mhz"].values())
        lines.append(f"| {r['network']} | {r['board']} | {r['clock_mhz']:.3f} MHz ({r['clock_source']}) | {fmax} MHz "
                     f"| {'met' if r['timing_met'] else 'FAILED'} | {p['cycles_per_inference']:g} | "
                     f"{p['inferences_per_second']:,.0f} | {p['latency_us']:.2f} us ({p['latency_cycles']} cycles) | "
                     f"{logic['used']:,} / {logic['available']:,} | {bram['used']} / {bram['available']} | "
                     f"{r['multipliers']['multipliers']} | {r['build_seconds']:.0f} s |")
    if asic is not None:
        lines += ["", f"ASIC-style target of the demo network: {asic.cell_count:,} cells, {asic.ffs:,} flip-flops, "
                  f"{asic.nand2_equivalents:,.0f} NAND2 equivalents ({asic.ff_nand2_equivalents:,.0f} of them "
                  f"flip-flops), {asic.multipliers} multipliers."]
    return "\n".join(lines) + "\n"


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{r['network']}\n{r['board']}" for r in rows]
    ax.bar(range(len(rows)), [r["performance"]["inferences_per_second"] for r in rows], color="tab:blue")
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("inferences/s at the achieved clock")
    for k, r in enumerate(rows):
        ax.annotate(f"{r['clock_mhz']:.1f} MHz", (k, r["performance"]["inferences_per_second"]), ha="center",
                    va="bottom", fontsize=7)
    ax.set_title("hwnet build: compute-bound throughput per board build")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
