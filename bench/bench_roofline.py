"""Roofline benchmark: auto-folded designs on real parts, against the weight-bandwidth roofline.

For each design:

- ``tfc``: binarized MLP 784-64-64-64-10 on an iCE40UP5K;
- ``sfc``: binarized MLP 784-256-256-256-10 on an iCE40UP5K (needs the SPRAM pool);
- ``cnn``: binarized CNN on an ECP5 LFE5U-25F, 28x28x1 uint8 input: binarize -> Conv2d 16 ch 3x3 pad 1 ->
  MaxPool 2 -> Conv2d 32 ch 3x3 pad 1 -> MaxPool 2 -> Dense 1568 -> 64 -> Dense 64 -> 10 (raw);

the script

1. builds the network from the IR classes: uint8 input binarized by one threshold (128), bipolar layers with one
   threshold per channel, the last layer raw; random +-1 weights and random thresholds (within two standard
   deviations of a random accumulator) from a fixed seed. Resources and cycles do not depend on trained values
   (beyond ROM columns that happen to be constant), so no training is needed;
2. auto-folds it with :func:`hwnet.autofold.auto_fold` for the board (``BOARDS["up5k"]`` / ``BOARDS["ecp5-25f"]``)
   and prints its report;
3. places and routes it with :func:`hwnet.synth.place_and_route` inside :class:`PinTop` (below: the network
   behind a few pins, every port driven and observed through registers) and reports utilisation against the
   budget and the estimate, and the Fmax; a design that nextpnr cannot place is reported with its synthesized
   counts and the cells it needs after packing (``nextpnr --pack-only``);
4. measures cycles per inference in Verilator (:func:`hwnet.sim.run_stream`, random uint8 inputs, no stalls):
   the median interval between output vectors over the later half of the run (the SPRAM queues start full, so
   a design streaming several layers settles only after some vectors), and checks every output against
   :func:`hwnet.golden.execute` (0 mismatches);
5. compares planned and measured cycles with the weight-bandwidth roofline of ../shared/DESIGN.md (section 6):
   cycles per inference >= weight bits read per inference / weight bits readable per cycle:

   - iCE40UP5K: block RAM 30 x 16 = 480 bits per cycle (DESIGN.md's TFC figure, 123 cycles), with the four
     SPRAMs 4 x 16 more = 544 (SFC: 615 cycles); and a *capacity-aware* bound: the block RAMs hold at most
     30 x 4 Kbit = 122,880 bits, so at least ``W - 122,880`` weight bits live in SPRAM, which reads 64 bits per
     cycle: ``max(W / 544, (W - 122,880) / 64)``;
   - ECP5 LFE5U-25F: 56 block RAMs x 36 bits = 2,016 bits per cycle; a convolution re-reads all its weights for
     every output pixel, so the bits read per inference are the sum over layers of ``output pixels x weight
     bits`` (a dense layer: one "pixel"); the weights (105,744 bits) fit the block RAMs many times over, so the
     capacity-aware bound is the same;
   - beside them, the *architecture floor*: the fewest cycles any folding of hwnet's units can reach,
     whatever the resources (for a convolution, its sliding window takes and sends at most ``P`` pixels and
     patches per cycle, ``P`` a common divisor of the input and output widths, so a layer needs ``max(H * W, OH *
     OW) / P`` cycles; a max-pool takes as many whole pixels per cycle as divide its kernel width, stride and
     image width).

When auto_fold finds nothing that fits (as for SFC while hwnet.estimate counted SPRAM-streamed weights as block
RAM) the design is reported as such, and an iCE40UP design is also built by hand the way the SPRAM search folds it
(``--no-fallback`` turns that off): the largest dense layers stream from SPRAM, each at the widest folding whose
weights for one cycle fit the pool's 64-bit word, until the others fit the block RAMs; the others are folded to
the pool's words per inference. That row is labelled as hand-folded. (For SFC it is the folding auto_fold chose
before it could split a layer between SPRAM and block RAM.)

Results are cached by content (hwnet.synth for yosys/nextpnr, hwnet.sim for Verilog and Verilator builds; a
failed place-and-route and its packing under ``<hwnet cache>/bench-roofline/``), so a rerun takes a couple of
minutes; a first run about 20 (2 cores: nextpnr on a nearly full iCE40UP5K takes ~6 minutes).
Prints progress and a table, writes build/bench/roofline.{md,json,png} (and with ``--docs FILE`` the markdown for
docs/benchmarks.md's "Auto-folded designs against the weight-bandwidth roofline" section). Usage:

    python bench/bench_roofline.py [--quick] [--designs tfc,sfc,cnn] [--no-pnr] [--no-fallback] [--fill F]
"""

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amaranth.back import verilog as amaranth_verilog  # noqa: E402
from amaranth.hdl import Cat, Module, Signal  # noqa: E402
from amaranth.lib import wiring  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402

from hwnet import compiler, golden, synth  # noqa: E402
from hwnet.autofold import BOARDS, auto_fold  # noqa: E402
from hwnet.errors import HwnetError  # noqa: E402
from hwnet.gateware.network import NetworkTop  # noqa: E402
from hwnet.ir import Conv2d, Dense, MaxPool2d, MultiThreshold, Network  # noqa: E402
from hwnet.sim import StreamFormat, run_stream  # noqa: E402
from hwnet.sim.cache import cached_verilog  # noqa: E402
from hwnet.toolchain import cache_dir  # noqa: E402

SEED = 0
TOP = "hwnet_top"
PNR_TOP = "pnr_top"

# Parts: the budget (hwnet.autofold.BOARDS), nextpnr's device, and the weight-bandwidth numbers of DESIGN.md 6.
PARTS = {
    "up5k": {"board": "up5k", "family": "ice40", "device": "up5k", "ebr": 30, "ebr_port_bits": 16,
             "ebr_bits": 4096, "spram_port_bits": compiler.SPRAM_WIDTH},
    "ecp5-25f": {"board": "ecp5-25f", "family": "ecp5", "device": "25k", "ebr": 56, "ebr_port_bits": 36,
                 "ebr_bits": 18432, "spram_port_bits": 0},
}
DESIGNS = {"tfc": ("TFC 784-64-64-64-10", "up5k"), "sfc": ("SFC 784-256-256-256-10", "up5k"),
           "cnn": ("CNN 28x28x1: c16-p2-c32-p2-fc64-fc10", "ecp5-25f")}
# nextpnr's name for a logic cell / LUT4 slot, flip-flop, block RAM and SPRAM, per family.
BELS = {"ice40": {"logic": "ICESTORM_LC", "ebr": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM", "io": "SB_IO"},
        "ecp5": {"logic": "TRELLIS_COMB", "ff": "TRELLIS_FF", "ebr": "DP16KD", "io": "TRELLIS_IO"}}


def progress(message):
    print(f"   {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Networks

def _thresholds(rng, channels, n):
    """One random threshold per channel, within two standard deviations of a random +-1 dot product of n terms."""
    spread = 2 * math.isqrt(n)
    return rng.integers(-spread, spread + 1, size=(channels, 1))


def binarized_mlp(name, hidden, *, seed=SEED):
    """784-hidden-10: uint8 input -> one threshold to bipolar -> bipolar dense layers (one threshold each), the
    last raw. Every layer unfolded (pe/simd None)."""
    rng = np.random.default_rng(seed)
    layers = [MultiThreshold(thresholds=[[128]], out_type="bipolar", name="binarize")]
    n = 784
    for k, h in enumerate(hidden):
        layers.append(Dense(weights=rng.choice([-1, 1], size=(h, n)), weight_type="bipolar",
                            thresholds=_thresholds(rng, h, n), out_type="bipolar", name=f"fc{k}"))
        n = h
    layers.append(Dense(weights=rng.choice([-1, 1], size=(10, n)), weight_type="bipolar", name="out"))
    return Network(input_type="uint8", input_size=784, layers=layers, name=name)


def binarized_cnn(name="cnn", *, seed=SEED):
    """28x28x1 uint8 -> binarize -> conv 16 3x3 pad 1 -> maxpool 2 -> conv 32 3x3 pad 1 -> maxpool 2 ->
    dense 1568 -> 64 -> dense 64 -> 10 (raw). Bipolar padding (-1), every layer unfolded."""
    rng = np.random.default_rng(seed)
    layers = [
        MultiThreshold(thresholds=[[128]], out_type="bipolar", name="binarize"),
        Conv2d(weights=rng.choice([-1, 1], size=(16, 3, 3, 1)), in_shape=(28, 28, 1), padding=1,
               thresholds=_thresholds(rng, 16, 9), out_type="bipolar", name="conv0"),
        MaxPool2d(in_shape=(28, 28, 16), kernel=2, name="pool0"),
        Conv2d(weights=rng.choice([-1, 1], size=(32, 3, 3, 16)), in_shape=(14, 14, 16), padding=1,
               thresholds=_thresholds(rng, 32, 144), out_type="bipolar", name="conv1"),
        MaxPool2d(in_shape=(14, 14, 32), kernel=2, name="pool1"),
        Dense(weights=rng.choice([-1, 1], size=(64, 7 * 7 * 32)), thresholds=_thresholds(rng, 64, 1568),
              out_type="bipolar", name="fc0"),
        Dense(weights=rng.choice([-1, 1], size=(10, 64)), name="out"),
    ]
    return Network(input_type="uint8", input_size=784, layers=layers, name=name)


def build_network(key):
    if key == "tfc":
        return binarized_mlp("tfc", (64, 64, 64))
    if key == "sfc":
        return binarized_mlp("sfc", (256, 256, 256))
    return binarized_cnn()


def hand_fold_spram(network, part):
    """The fold auto_fold's SPRAM search aims at, built by hand (used only when auto_fold fails): the largest
    dense layers stream from SPRAM until the other layers' weights fit the block RAMs; each streamed layer takes
    the widest folding whose weights for one cycle fit the pool's word (fewest words); the other layers are
    folded with compiler.choose_folding to reach the pool's words per inference."""
    capacity = part["ebr"] * part["ebr_bits"]
    dense = sorted((layer for layer in network.layers if isinstance(layer, Dense)),
                   key=lambda layer: -layer.weights.size * layer.weight_type.bits)
    rest = sum(layer.weights.size * layer.weight_type.bits for layer in dense)
    folds = {}
    for layer in dense:
        if rest <= capacity:
            break
        bits = layer.weight_type.bits
        pairs = [(pe, simd) for pe in compiler._divisors(layer.out_features)
                 for simd in compiler._divisors(layer.in_features) if pe * simd * bits <= compiler.SPRAM_WIDTH]
        folds[layer.name] = max(pairs, key=lambda p: (p[0] * p[1], p[1]))
        rest -= layer.weights.size * bits
    layers = [layer.replace(pe=folds[layer.name][0], simd=folds[layer.name][1], weight_storage="spram")
              if layer.name in folds else layer for layer in network.layers]
    streamed = network.replace_layers(layers)
    words = compiler.plan(compiler.choose_folding(streamed, 10 ** 9)).spram_words
    folded = compiler.choose_folding(streamed, words)
    return folded, compiler.plan(folded), words


# ---------------------------------------------------------------------------------------------------------------
# Rooflines

def weight_bits_read(network):
    """(weight bits, weight bits read per inference, per-layer rows): a convolution re-reads its weights for
    every output pixel."""
    rows, total, read = [], 0, 0
    for layer in network.layers:
        if isinstance(layer, (Dense, Conv2d)):
            bits = int(layer.weights.size) * layer.weight_type.bits
            times = layer.out_shape[0] * layer.out_shape[1] if isinstance(layer, Conv2d) else 1
            rows.append({"layer": layer.name, "weight_bits": bits, "reads": times, "bits_read": bits * times})
            total += bits
            read += bits * times
    return total, read, rows


def _min_cycles(layer):
    dense = layer.matmul if isinstance(layer, Conv2d) else layer
    if isinstance(layer, Conv2d):
        pixels = compiler.pixel_options(layer)[-1]
        return compiler.conv_cycles(layer, dense.out_features, dense.in_features, pixels)
    return dense.planes


def architecture_floor(network):
    """``(cycles, layer, why)``: the fewest cycles per inference any folding reaches, whatever the resources, and
    the layer that sets it: the slowest layer at its fastest (a convolution is bound by its sliding window, which
    takes and sends at most ``pixels`` pixels and patches per cycle, ``pixels`` a common divisor of the input and
    output widths; a max-pool takes at most as many whole pixels per cycle as divide its kernel width, stride and
    image width)."""
    floor, name, why = 1, None, "a fully unrolled layer takes one cycle"
    for layer in network.layers:
        if isinstance(layer, (Dense, Conv2d)):
            cycles = _min_cycles(layer)
            if cycles > floor:
                floor, name = cycles, layer.name
                if isinstance(layer, Conv2d):
                    oh, ow, _ = layer.out_shape
                    h, w, _ = layer.in_shape
                    p = compiler.pixel_options(layer)[-1]
                    why = (f"its sliding window takes at most {p} pixels per cycle ({h} x {w} per image) and sends "
                           f"at most {p} patches per cycle ({oh} x {ow} per image)")
                else:
                    why = f"{layer.planes} weight bit planes, one per cycle"
        elif isinstance(layer, MaxPool2d):
            p = math.gcd(layer.kernel[1], layer.stride[1], layer.in_shape[1])
            cycles = layer.in_size // (layer.in_shape[2] * p)
            if cycles > floor:
                floor, name, why = cycles, layer.name, f"one beat of at most {p} whole pixels per cycle"
    return floor, name, why


def rooflines(network, part):
    w, read, rows = weight_bits_read(network)
    ebr_bw = part["ebr"] * part["ebr_port_bits"]
    capacity = part["ebr"] * part["ebr_bits"]
    r = {"weight_bits": w, "weight_bits_read": read, "layers": rows, "ebr_bits_per_cycle": ebr_bw,
         "ebr_capacity_bits": capacity, "ebr_only": math.ceil(read / ebr_bw)}
    r["architecture_floor"], r["floor_layer"], r["floor_why"] = architecture_floor(network)
    if part["spram_port_bits"]:
        total_bw = ebr_bw + part["spram_port_bits"]
        r["spram_bits_per_cycle"] = part["spram_port_bits"]
        r["bandwidth"] = math.ceil(read / total_bw)
        r["capacity_aware"] = max(r["bandwidth"], math.ceil(max(0, w - capacity) / part["spram_port_bits"]))
        # DESIGN.md's figure: block RAM alone when the weights fit it, block RAM + SPRAM when they do not.
        r["design_md"] = r["ebr_only"] if w <= capacity else r["bandwidth"]
        r["design_md_text"] = (f"{read:,} / {ebr_bw} (EBR)" if w <= capacity
                               else f"{read:,} / {total_bw} (EBR + SPRAM)")
        r["capacity_text"] = (f"max({read:,} / {total_bw}, ({w:,} - {capacity:,}) / {part['spram_port_bits']})")
    else:
        r["bandwidth"] = r["design_md"] = r["ebr_only"]
        r["capacity_aware"] = r["ebr_only"] if w <= capacity else None  # larger weights do not fit at all
        r["design_md_text"] = f"{read:,} / {ebr_bw} (EBR)"
        r["capacity_text"] = f"= bandwidth (weights {w:,} <= {capacity:,} bits of EBR)"
    return r


# ---------------------------------------------------------------------------------------------------------------
# The network behind a few pins, for place-and-route

def _next_prime(n):
    n = max(n, 2)
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def shift_length(width, lanes, bits, max_shift=1024):
    """Flip-flops of the shift register driving a ``width``-bit payload of ``lanes`` lanes of ``bits`` bits.

    Up to ``max_shift`` bits the register is the payload. A wider payload (an input beat of hundreds of byte
    lanes) would take more flip-flops than the part has to spare, so payload bit ``k`` comes from register bit
    ``k mod n`` with ``n`` a prime above the lane count and the lane width: then no two lanes ever see the same
    bits (``bits * (j - j') mod n != 0``), so no two lanes' logic is alike and nothing downstream can be merged
    by synthesis; lanes only share some bits."""
    if width <= max_shift:
        return width
    return _next_prime(max(lanes + 1, bits + 1, 127))


class PinTop(wiring.Component):
    """A :class:`~hwnet.gateware.network.NetworkTop` behind a few pins, for place-and-route: every port of the
    network is driven from and observed through registers, so nothing is optimized away and its paths stay
    register to register.

    - ``i.payload`` (and ``load.payload`` for a design with weights in SPRAM) comes from a shift register fed by
      one pin (``din``, ``load_din``); see :func:`shift_length` for a payload wider than ``max_shift``.
    - ``i.valid``, ``load.valid`` and ``o.ready`` are pins, registered once.
    - ``o.payload`` is XOR-reduced into a flip-flop on ``dout``; ``i.ready``, ``o.valid``, ``load.ready`` are
      registered onto pins.

    Parameters
    ----------
    plan : DesignPlan
    spram_primitive : bool
        As for :class:`NetworkTop` (True for iCE40UP synthesis).
    max_shift : int
        Payload bits up to which a shift register holds the whole payload.
    """

    def __init__(self, *, plan, spram_primitive, max_shift=1024):
        self._plan, self._spram_primitive, self._max_shift = plan, bool(spram_primitive), max_shift
        members = {"din": In(1), "i_valid": In(1), "i_ready": Out(1), "o_valid": Out(1), "o_ready": In(1),
                   "dout": Out(1)}
        if plan.spram_words:
            members.update(load_din=In(1), load_valid=In(1), load_ready=Out(1))
        super().__init__(members)

    def shift_bits(self):
        """Flip-flops of the shift registers the wrapper adds (input, and load)."""
        p = self._plan
        n = shift_length(p.input_lanes * p.input_type.bits + 1, p.input_lanes, p.input_type.bits, self._max_shift)
        if p.spram_words:
            n += shift_length(compiler.SPRAM_WIDTH, 1, compiler.SPRAM_WIDTH, self._max_shift)
        return n

    def elaborate(self, platform):
        m = Module()
        m.submodules.net = net = NetworkTop(plan=self._plan, spram_primitive=self._spram_primitive)
        p = self._plan

        def shifted(pin, width, lanes, bits, name):
            n = shift_length(width, lanes, bits, self._max_shift)
            reg = Signal(n, name=f"{name}_shift")
            m.d.sync += reg.eq(Cat(pin, reg[:-1]) if n > 1 else pin)
            return Cat(*(reg[k % n] for k in range(width)))

        def registered(value, name):
            reg = Signal(name=name)
            m.d.sync += reg.eq(value)
            return reg

        m.d.comb += [
            net.i.payload.eq(shifted(self.din, len(net.i.payload.as_value()), p.input_lanes, p.input_type.bits,
                                     "i")),
            net.i.valid.eq(registered(self.i_valid, "i_valid_r")),
            net.o.ready.eq(registered(self.o_ready, "o_ready_r")),
        ]
        m.d.sync += [self.i_ready.eq(net.i.ready), self.o_valid.eq(net.o.valid),
                     self.dout.eq(net.o.payload.as_value().xor())]
        if p.spram_words:
            m.d.comb += [
                net.load.payload.eq(shifted(self.load_din, compiler.SPRAM_WIDTH, 1, compiler.SPRAM_WIDTH,
                                            "load")),
                net.load.valid.eq(registered(self.load_valid, "load_valid_r")),
            ]
            m.d.sync += self.load_ready.eq(net.load.ready)
        return m


def pin_top_verilog(plan, family):
    """Verilog of the :class:`PinTop` of ``plan`` for ``family`` (module ``pnr_top``)."""
    return amaranth_verilog.convert(PinTop(plan=plan, spram_primitive=(family == "ice40")), name=PNR_TOP,
                                    emit_src=False)


def _synth_counts(report, family):
    counts = {"lut4": report.luts, "ff": report.ffs, "carry": report.carries, "ebr": report.brams,
              "spram": report.sprams, "lutram": report.lutrams, "lut_muxes": report.lut_muxes,
              "multipliers": report.multipliers}
    if family == "ecp5":
        counts["lut4_equivalent"] = report.luts + 2 * report.carries
    return counts


def _bench_cache(kind, *parts):
    """A file under ``<hwnet cache>/bench-roofline/<kind>/`` named by the hash of ``parts``."""
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return cache_dir() / "bench-roofline" / kind / f"{key}.json"


def packed_utilisation(text, family, device):
    """nextpnr's utilisation after packing, before placement (``--pack-only``) of the ``pnr_top`` in ``text``:
    what a design that fails to place needs. hwnet.synth.place_and_route reports only nextpnr's last error line
    when it fails, so this runs yosys and nextpnr itself (the same script and device as place_and_route), cached
    by content under ``<hwnet cache>/bench-roofline/pack/``."""
    yosys, nextpnr = synth._tool("YOSYS"), synth._tool(synth._PNR_TOOLS[family])
    package = synth._PNR_DEFAULTS[family][1] if device == synth._PNR_DEFAULTS[family][0] else ""
    script = synth.yosys_script(top=PNR_TOP, family=family, netlist="netlist.json")
    args = [f"--{device}", *(["--package", package] if package else []), "--pack-only", "--json", "netlist.json",
            "--report", "report.json", "--top", PNR_TOP, "-q"]
    path = _bench_cache("pack", text, script, synth._version(yosys), synth._version(nextpnr), " ".join(args))
    if path.exists():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory(prefix="hwnet-pack-") as work:
        Path(work, "design.v").write_text(text)
        Path(work, "synth.ys").write_text(script)
        for cmd in ([yosys, "-q", "-s", "synth.ys"], [nextpnr, *args]):
            res = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if res.returncode:
                return {"error": res.stdout.strip().splitlines()[-1:]}
        used = json.loads(Path(work, "report.json").read_text()).get("utilization", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(used))
    return used


def place(plan, part, budget):
    """Place and route the :class:`PinTop` of ``plan`` on ``part``; when nextpnr fails (a design too big), the
    synthesized counts and the error instead."""
    family = part["family"]
    wrapper = PinTop(plan=plan, spram_primitive=(family == "ice40"))
    t0 = time.perf_counter()
    text = amaranth_verilog.convert(wrapper, name=PNR_TOP, emit_src=False)
    gen_s = time.perf_counter() - t0
    default_device, default_package, _ = synth._PNR_DEFAULTS[family]
    out = {"device": part["device"], "package": default_package if part["device"] == default_device else "",
           "verilog_seconds": gen_s, "wrapper_shift_ffs": wrapper.shift_bits(),
           "budget": {"lut4": budget.lut4, "ff": budget.max_ff, "ebr": budget.ebr, "spram": budget.spram,
                      "fill": budget.fill}}
    progress(f"place and route ({family} {part['device']}; the wrapper adds {wrapper.shift_bits()} shift-register "
             f"flip-flops); cached by content")
    t0 = time.perf_counter()
    # hwnet.synth caches successes only; a failed place-and-route (minutes of nextpnr) is remembered here
    failed = _bench_cache("failed-pnr", text, family, part["device"],
                          synth._version(synth._tool(synth._PNR_TOOLS[family])))
    try:
        if failed.exists():
            raise HwnetError(json.loads(failed.read_text())["error"])
        r = synth.place_and_route(text, top=PNR_TOP, family=family, device=part["device"])
    except HwnetError as exc:
        out["pnr_seconds"] = time.perf_counter() - t0
        out["error"] = str(exc)
        if not failed.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(json.dumps({"error": str(exc)}))
        out["fits"] = False
        progress(f"place and route failed ({out['pnr_seconds']:.0f} s): {exc}")
        progress("synthesizing alone for the counts, and packing (nextpnr --pack-only) for the cells it needs")
        out["synth"] = _synth_counts(synth.synthesize(text, top=PNR_TOP, family=family), family)
        out["packed"] = packed_utilisation(text, family, part["device"])
        bels = BELS[family]
        out["placed"] = {k: out["packed"].get(bel, {}).get("used") for k, bel in bels.items()}
        out["available"] = {k: out["packed"].get(bel, {}).get("available") for k, bel in bels.items()}
        progress(f"packed (before placement): {_placed_text(out, family)}")
        return out
    out["pnr_seconds"] = time.perf_counter() - t0
    bels = BELS[family]
    use = {k: r.utilisation.get(bel, {}) for k, bel in bels.items()}
    out.update({"package": r.package, "target_mhz": r.target_mhz, "fmax_mhz": r.fmax_mhz,
                "synth": _synth_counts(r.synth, family),
                "placed": {k: v.get("used") for k, v in use.items()},
                "available": {k: v.get("available") for k, v in use.items()},
                "utilisation": r.utilisation, "nextpnr": r.nextpnr,
                "fits": all(v.get("used", 0) <= v.get("available", 0) for v in r.utilisation.values())})
    progress(f"placed: {_placed_text(out, family)}; Fmax {r.fmax_mhz:.1f} MHz ({out['pnr_seconds']:.0f} s)")
    return out


def _placed_text(p, family):
    u, a = p["placed"], p["available"]
    if family == "ice40":
        parts = [f"{u['logic']}/{a['logic']} LC", f"{u['ebr']}/{a['ebr']} EBR", f"{u['spram']}/{a['spram']} SPRAM"]
    else:
        parts = [f"{u['logic']}/{a['logic']} LUT4", f"{u['ff']}/{a['ff']} FF", f"{u['ebr']}/{a['ebr']} EBR"]
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Cycles in Verilator

def measure_cycles(network, plan, vectors, seed=SEED):
    rng = np.random.default_rng(seed + 1)
    x = rng.integers(0, 256, size=(vectors, network.input_size))
    t0 = time.perf_counter()
    text = cached_verilog(plan, top=TOP)
    gen_s = time.perf_counter() - t0
    load = plan.spram_image() if plan.spram_words else None
    t0 = time.perf_counter()
    res = run_stream(text, StreamFormat.from_plan(plan), x, top=TOP, load=load,
                     cycles_hint=plan.cycles_per_inference, progress=progress)
    sim_s = time.perf_counter() - t0
    expected = golden.execute(network, x)
    mismatches = int(np.count_nonzero(np.any(res.outputs != expected, axis=1)))
    ends = np.array(res.out_cycles[res.out_beats - 1::res.out_beats])
    gaps = np.diff(ends)
    later = gaps[len(gaps) // 2:]
    out = {"vectors": vectors, "interval": float(np.median(later)), "interval_mean": float(later.mean()),
           "interval_min": int(later.min()),
           "interval_max": int(later.max()), "intervals": [int(g) for g in gaps], "first_output": int(ends[0]),
           "latency": int(res.latency), "cycles": int(res.cycles), "mismatched_vectors": mismatches,
           "verilog_seconds": gen_s, "sim_seconds": sim_s, "sim_wall_seconds": res.wall_seconds}
    progress(f"measured {out['interval']:g} cycles per inference (later half: median; mean "
             f"{out['interval_mean']:.1f}, {out['interval_min']}...{out['interval_max']}), {mismatches} mismatched "
             f"vectors of {vectors} ({sim_s:.0f} s)")
    return out


# ---------------------------------------------------------------------------------------------------------------

def _folding(plan):
    out = []
    for s in plan.stages:
        if isinstance(s, compiler.DenseStage):
            where = ("logic" if s.weights_in_logic else "EBR" if not s.streamed else "SPRAM" if s.spram_pes == s.pe
                     else "SPRAM+EBR")
            out.append({"layer": s.name, "pe": s.pe, "simd": s.simd, "cycles": s.cycles, "weights": where,
                        "spram_pes": s.spram_pes})
    return out


def _streamed_text(plan):
    """What streams from SPRAM: ``fc0 (whole), 1 of fc1's 2 PEs``."""
    return ", ".join(f"{s.name} (whole)" if s.spram_pes == s.pe else f"{s.spram_pes} of {s.name}'s {s.pe} PEs"
                     for s in plan.streamed_stages)


def bench_design(key, *, vectors, pnr, fallback, fill=None):
    label, part_name = DESIGNS[key]
    part = PARTS[part_name]
    budget = BOARDS[part["board"]]
    if fill is not None:
        budget = dataclasses.replace(budget, fill=fill, name=f"{budget.name} (fill {fill:g})")
    print(f"== {key}: {label} on {budget.name}", flush=True)
    t_start = time.perf_counter()
    network = build_network(key)
    roof = rooflines(network, part)
    r = {"design": key, "label": label, "part": part_name, "board": budget.name, "seed": SEED,
         "roofline": roof}
    progress(f"weight bits {roof['weight_bits']:,}, read per inference {roof['weight_bits_read']:,}; rooflines: "
             f"DESIGN.md {roof['design_md']}, capacity-aware {roof['capacity_aware']}, architecture floor "
             f"{roof['architecture_floor']} cycles")
    t0 = time.perf_counter()
    try:
        choice = auto_fold(network, budget)
    except HwnetError as exc:
        r["auto_fold_error"] = str(exc)
        r["auto_fold_seconds"] = time.perf_counter() - t0
        progress(f"auto_fold failed ({r['auto_fold_seconds']:.1f} s): {exc}")
        if not (fallback and part["spram_port_bits"]):
            r["seconds"] = time.perf_counter() - t_start
            return r
        folded, plan, words = hand_fold_spram(network, part)
        r["hand_folded"] = True
        r["estimate"] = None
        from hwnet.estimate import estimate_design
        est, _ = estimate_design(plan, part["family"])
        r["estimate_of_hand_fold"] = est.summary()
        progress(f"hand-folded instead (labelled as such): {plan.cycles_per_inference} cycles per inference, "
                 f"SPRAM words {words}; the estimate of that design: {round(est.lut4_equivalent)} LUT4, "
                 f"{round(est.ff)} FF, {est.ebr} block RAMs, {est.spram} SPRAMs")
        network = folded
    else:
        r["auto_fold_seconds"] = time.perf_counter() - t0
        r["hand_folded"] = False
        plan = choice.plan
        network = choice.network
        r["report"] = list(choice.report)
        r["estimate"] = choice.resources.summary()
        if hasattr(budget, "logic"):  # logic cells (iCE40) / LUT4 equivalents (ECP5) as auto_fold counts them
            r["estimate"]["logic"] = float(budget.logic(choice.resources))
        for line in choice.report:
            progress(f"auto_fold | {line}")
    r["planned"] = plan.cycles_per_inference
    r["folding"] = _folding(plan)
    r["spram_words"] = plan.spram_words
    r["limited_by"] = [s.name for s in plan.stages if s.cycles == plan.cycles_per_inference] + (
        ["the SPRAM pool"] if plan.spram_words == plan.cycles_per_inference else [])
    r["streamed_layers"] = [s.name for s in plan.streamed_stages]
    r["streamed_text"] = _streamed_text(plan)
    r["streamed_bits"] = sum(s.spram_bits * s.vectors for s in plan.streamed_stages)
    if pnr:
        try:
            r["pnr"] = place(plan, part, budget)
        except HwnetError as exc:  # yosys itself failed: reported, not fatal
            r["pnr"] = {"error": str(exc), "fits": False}
            progress(f"synthesis failed: {exc}")
    r["sim"] = measure_cycles(network, plan, vectors)
    r["seconds"] = time.perf_counter() - t_start
    return r


# ---------------------------------------------------------------------------------------------------------------
# Report

def _ratio(measured, bound):
    return measured / bound if bound else None


def _within(ratio):
    return "yes" if ratio is not None and ratio <= 1.25 else "no"


def verdict(r):
    """Which roofline the design is within 25% of, which not, and why (from the plan's limits)."""
    roof = r["roofline"]
    if "sim" not in r:
        return (f"**{r['design'].upper()}**: not measured: auto_fold found no design for {r['board']} "
                f"({r.get('auto_fold_error', '')}).")
    m = r["sim"]["interval"]
    dm, ca, fl = roof["design_md"], roof["capacity_aware"], roof["architecture_floor"]
    head = f"**{r['design'].upper()}**{' (hand-folded)' if r['hand_folded'] else ''}: {m:g} cycles measured"
    parts = [f"{m / dm:.2f}x the DESIGN.md roofline ({dm}: {'within' if m <= 1.25 * dm else 'not within'} 25%)",
             f"{m / ca:.2f}x the capacity-aware one ({ca}: {'within' if m <= 1.25 * ca else 'not within'} 25%)"]
    if fl > 1:
        parts.append(f"{m / fl:.2f}x the architecture floor ({fl})")
    text = head + ", " + ", ".join(parts) + "."
    limit = ", ".join(r["limited_by"])
    if fl > 1.25 * ca and m <= 1.25 * fl:
        text += (f" Bound by the architecture, not by weight bandwidth: layer {roof['floor_layer']} needs {fl} cycles "
                 f"at any folding ({roof['floor_why']}), while the weights could be read in {ca}.")
    elif r["streamed_layers"] and roof["weight_bits"] <= roof["ebr_capacity_bits"]:
        streamed = r.get("streamed_text") or ", ".join(r["streamed_layers"])
        text += (f" Limited by {limit}: the weights ({roof['weight_bits']:,} bits) would fit the block RAMs "
                 f"({roof['ebr_capacity_bits']:,} bits) but not their read ports at this interval, so {streamed} "
                 f"stream from SPRAM ({r['streamed_bits']:,} bits, {r['spram_words']:,} words of "
                 f"{compiler.SPRAM_WIDTH} bits per inference) beside them for bandwidth.")
    elif r["streamed_layers"]:
        need = max(0, roof["weight_bits"] - roof["ebr_capacity_bits"])
        streamed = r.get("streamed_text") or ", ".join(r["streamed_layers"])
        kept = roof["weight_bits"] - r["streamed_bits"]
        text += (f" Bound by {limit}: {streamed} stream from SPRAM ({r['streamed_bits']:,} bits, "
                 f"{r['spram_words']:,} words of {compiler.SPRAM_WIDTH} bits per inference), where the "
                 f"capacity-aware bound moves only weight bits - EBR capacity = {need:,} there "
                 f"({r['streamed_bits'] / need:.2f}x as many): the block RAMs keep {kept:,} weight bits of their "
                 f"{roof['ebr_capacity_bits']:,}, the rest of them going to input buffers, queues, thresholds and "
                 f"ROMs not filled to the brim. The DESIGN.md figure ({dm}) assumes block RAM "
                 f"and SPRAM both busy every cycle, which would need {dm * roof['ebr_bits_per_cycle']:,} weight bits "
                 f"in block RAM; it holds {roof['ebr_capacity_bits']:,}.")
    else:
        why = next((line for line in r.get("report", []) if line.startswith("why not faster")), "")
        text += f" Limited by {limit}" + (f"; {why}." if why else ".")
    if "pnr" in r:
        p = r["pnr"]
        if p["fits"]:
            text += " It fits the part (nextpnr)."
        else:
            cells = f" ({_placed_text(p, PARTS[r['part']]['family'])} after packing)" if p.get("placed") else ""
            text += f" It does NOT fit the part{cells}: {p.get('error', '').rstrip('.')}."
    return text


def markdown(results, args, seconds):
    lines = []
    lines.append("| design | part | folding (pe x simd per dense layer; S = weights in SPRAM, Sk = k PEs' weights "
                 "in SPRAM, the others' in EBR) | planned | measured "
                 "(later half) | DESIGN.md roofline | capacity-aware roofline | architecture floor | measured / "
                 "DESIGN.md | measured / capacity-aware | mismatches |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        roof = r["roofline"]
        name = r["label"] + (" (hand-folded)" if r.get("hand_folded") else "")
        if "sim" not in r:
            lines.append(f"| {name} | {r['board']} | auto_fold: nothing fits | - | - | {roof['design_md']} | "
                         f"{roof['capacity_aware']} | {roof['architecture_floor']} | - | - | - |")
            continue
        marks = {"SPRAM": lambda f: " S", "SPRAM+EBR": lambda f: f" S{f['spram_pes']}"}
        fold = ", ".join(f"{f['layer']} {f['pe']}x{f['simd']}" + marks.get(f["weights"], lambda f: "")(f)
                         for f in r["folding"])
        s = r["sim"]
        m = s["interval"]
        spread = f" ({s['interval_min']}..{s['interval_max']})" if s["interval_min"] != s["interval_max"] else ""
        lines.append(f"| {name} | {r['board']} | {fold} | {r['planned']} | {m:g}{spread} | {roof['design_md']} | "
                     f"{roof['capacity_aware']} | {roof['architecture_floor']} | {m / roof['design_md']:.2f}x | "
                     f"{m / roof['capacity_aware']:.2f}x | {s['mismatched_vectors']} / {s['vectors']} |")
    lines.append("")
    lines.append("Rooflines (cycles per inference >= weight bits read / weight bits readable per cycle):")
    lines.append("")
    for r in results:
        roof = r["roofline"]
        lines.append(f"- {r['label']}: {roof['weight_bits']:,} weight bits, {roof['weight_bits_read']:,} read per "
                     f"inference. DESIGN.md: {roof['design_md_text']} = {roof['design_md']}; capacity-aware: "
                     f"{roof['capacity_text']} = {roof['capacity_aware']}.")
        if any(row["reads"] > 1 for row in roof["layers"]):
            per = "; ".join(f"{row['layer']} {row['reads']} x {row['weight_bits']:,}" for row in roof["layers"])
            lines.append(f"  Bits read per layer (output pixels x weight bits): {per}.")
    lines.append("")
    placed = [r for r in results if "pnr" in r]
    if placed:
        lines.append("Place and route (nextpnr, inside the few-pin wrapper `PinTop`; the synthesized counts are of the "
                     "whole wrapper, which adds the shift-register flip-flops listed and a few more):")
        lines.append("")
        lines.append("| design | device | budget LUT4 (x fill) / EBR / SPRAM | estimate LUT4 / FF / EBR / SPRAM | "
                     "synthesized LUT4 / FF / carry / EBR / SPRAM | placed | wrapper shift FFs | Fmax (MHz) | "
                     "fits |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in placed:
            p, fam = r["pnr"], PARTS[r["part"]]["family"]
            b = p.get("budget")
            e = r.get("estimate") or r.get("estimate_of_hand_fold")
            est = "-"
            if e:
                est = (f"{round(e['lut4_equivalent'] if fam == 'ecp5' else e['lut4']):,} / {round(e['ff']):,} / "
                       f"{e['ebr']} / {e['spram']}")
                if fam == "ice40" and "logic" in e:
                    est += f" ({round(e['logic']):,} LC)"
                if r.get("hand_folded"):
                    est += " (of the hand fold)"
            sy = p.get("synth")
            if sy:
                lut = (f"{sy['lut4']:,} (+{sy['carry']:,} CCU2C = {sy['lut4_equivalent']:,} LUT4 eq.)"
                       if fam == "ecp5" else f"{sy['lut4']:,}")
                syn = f"{lut} / {sy['ff']:,} / {sy['carry']:,} / {sy['ebr']} / {sy['spram']}"
            else:
                syn = "-"
            where = _placed_text(p, fam) if "placed" in p else f"failed: {p.get('error', '')}"
            fmax = f"{p['fmax_mhz']:.1f}" if p.get("fmax_mhz") else "-"
            bud = (f"{b['lut4']:,} (x {b['fill']:.2f} = {round(b['lut4'] * b['fill']):,}) / {b['ebr']} / "
                   f"{b['spram']}") if b else "-"
            lines.append(f"| {r['design']} | {p.get('device', '')} {p.get('package', '')} | {bud} | {est} | {syn} | "
                         f"{where} | {p.get('wrapper_shift_ffs', '-')} | {fmax} | {'yes' if p['fits'] else 'no'} |")
        lines.append("")
    lines.append("Verdicts:")
    lines.append("")
    for r in results:
        lines.append(f"- {verdict(r)}")
    lines.append("")
    failed = [r for r in results if "auto_fold_error" in r]
    for r in failed:
        lines.append(f"- auto_fold on {r['design'].upper()} raised: `{r['auto_fold_error']}`")
    if failed:
        lines.append("")
    lines.append(f"Networks: random +-1 weights and random thresholds from seed {SEED} (resources and cycles do not "
                 f"depend on trained values beyond constant ROM columns). Measured: Verilator, "
                 f"{', '.join(str(r['sim']['vectors']) + ' vectors (' + r['design'] + ')' for r in results if 'sim' in r)}"
                 f", random uint8 inputs, no stalls; the median interval between output vectors over the later "
                 f"half of the run; outputs checked against the golden model. Run time {seconds / 60:.1f} min "
                 f"({'quick' if args.quick else 'full'}; nextpnr, yosys and Verilator builds cached by content).")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rs = [r for r in results if "sim" in r]
    if not rs:
        return
    labels = []
    for r in rs:
        label = r["design"].upper() + (" (hand-folded)" if r["hand_folded"] else "") + f"\n{r['board']}"
        if "pnr" in r and not r["pnr"]["fits"]:
            label += "\ndoes not place"
        labels.append(label)
    series = [("planned", [r["planned"] for r in rs]), ("measured (Verilator)", [r["sim"]["interval"] for r in rs]),
              ("DESIGN.md roofline", [r["roofline"]["design_md"] for r in rs]),
              ("capacity-aware roofline", [r["roofline"]["capacity_aware"] for r in rs]),
              ("architecture floor", [r["roofline"]["architecture_floor"] if r["roofline"]["architecture_floor"] > 1
                                      else float("nan") for r in rs])]
    xs = np.arange(len(rs))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, (name, values) in enumerate(series):
        bars = ax.bar(xs + (k - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, labels=["" if v != v else f"{v:g}" for v in values], fontsize=6, rotation=90,
                     padding=2)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_yscale("log")
    top = max(v for _, values in series for v in values if v == v)  # some series may be all NaN (no floor)
    ax.set_ylim(top=top * 4)
    ax.set_ylabel("cycles per inference")
    ax.set_title("Auto-folded designs: cycles per inference against the weight-bandwidth roofline", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer simulated vectors (MLPs 16, CNN 6)")
    p.add_argument("--designs", default="tfc,sfc,cnn", help="comma-separated subset of tfc, sfc, cnn")
    p.add_argument("--vectors", type=int, default=None, help="vectors per MLP (default 30; CNN: a third)")
    p.add_argument("--no-pnr", dest="pnr", action="store_false", help="skip place-and-route")
    p.add_argument("--fill", type=float, default=None,
                   help="the budget's LUT4/flip-flop fill for auto_fold (default: the board's, 0.85)")
    p.add_argument("--no-fallback", dest="fallback", action="store_false",
                   help="when auto_fold fails, do not hand-fold the SPRAM design")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"))
    p.add_argument("--docs", default=None, help="also write the markdown results for the docs to this file")
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.designs.split(",") if k.strip()]
    unknown = [k for k in keys if k not in DESIGNS]
    if unknown:
        p.error(f"unknown design(s) {', '.join(unknown)}; choose from {', '.join(DESIGNS)}")
    mlp_vectors = args.vectors or (16 if args.quick else 30)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = []
    for key in keys:
        vectors = mlp_vectors if key != "cnn" else max(6, mlp_vectors // 3)
        results.append(bench_design(key, vectors=vectors, pnr=args.pnr, fallback=args.fallback, fill=args.fill))
    seconds = time.perf_counter() - t0
    md = markdown(results, args, seconds)
    print(md)
    meta = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "machine": platform.machine(), "seconds": seconds, "quick": args.quick}
    (out / "roofline.md").write_text(md)
    (out / "roofline.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str) + "\n")
    plot(results, out / "roofline.png")
    if args.docs:
        Path(args.docs).write_text(docs_text(md, meta))
    print(f"report: {out / 'roofline.md'}" + (f", {args.docs}" if args.docs else ""))


def docs_text(md, meta):
    return (f"## Auto-folded designs against the weight-bandwidth roofline (bench/bench_roofline.py)\n\n"
            f"```sh\n.venv/bin/python bench/bench_roofline.py   # or: make bench-roofline; writes "
            f"build/bench/roofline.{{md,json,png}}\n```\n\nRun of {meta['date']}:\n\n" + md)


if __name__ == "__main__":
    main()
