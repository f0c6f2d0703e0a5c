"""Simulation helpers for stream gateware, shared by the tests (``amaranth.sim`` async testbenches).

- :class:`StreamSource` drives beats into a component's ``i`` stream with random ``valid`` gaps (and garbage on
  the payload while ``valid`` is low), recording the cycle of every transfer.
- :class:`StreamSink` takes beats from an ``o`` stream with random ``ready`` drops, records them with their
  cycles, and checks the stream rules: once ``valid`` is up it stays up, with the same payload, until the beat
  is taken.
- :func:`run_simulation` runs testbenches under a cycle budget (a hung design fails instead of hanging) and
  :func:`simulate_stream` wires a source and a sink around a component in one call.
- :func:`vectors_to_beats` / :func:`beats_to_vectors` convert between element vectors and stream beats, the
  latter checking that ``last`` is set exactly on each vector's final beat; :func:`run_vectors` and
  :func:`run_plan` stream whole vectors through a component and give back its output vectors, and
  :func:`assert_equal_vectors` compares them with the golden model's, naming the first difference.
- :func:`random_network`, :func:`random_dense`, :func:`random_folding`, :func:`random_layer_specs` and
  :func:`random_inputs` build random networks (:class:`~hwnet.ir.Network`) of any element types and their inputs for tests.

Cycles are counted in clock edges from the start of the simulation, the same in every testbench.
"""

import random

import numpy as np
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from ..compiler import pack_lanes, unpack_lanes
from ..datatypes import parse_type
from ..ir import Conv2d, Dense, MaxPool2d, MultiThreshold, Network

__all__ = ["SimulationTimeout", "StreamSource", "StreamSink", "run_simulation", "simulate_stream", "run_with_output_held",
           "vectors_to_beats", "beats_to_vectors", "run_vectors", "run_plan", "assert_equal_vectors",
           "random_network", "random_dense", "random_conv", "random_cnn", "random_folding", "random_layer_specs", "random_inputs", "divisors"]

CLOCK_PERIOD = 1e-6


class SimulationTimeout(AssertionError):
    """The design did not finish within the cycle budget of :func:`run_simulation`."""


def _as_rng(rng):
    if rng is None or isinstance(rng, random.Random):
        return rng
    return random.Random(rng)


class StreamSource:
    """Drives ``beats`` into ``stream`` (the component's ``i``), one transfer per beat.

    Parameters
    ----------
    stream : stream interface
        The consumer-side stream of the component under test (``dut.i``).
    beats : sequence of (int, int)
        ``(data, last)`` per beat.
    rng : random.Random, int or None
        Source of the gaps (an int seeds a new ``random.Random``); None: no gaps.
    valid_prob : float
        Probability that ``valid`` is offered in a cycle (between gaps).

    Members
    -------
    cycles : list of int
        Cycle of each transfer.
    done : bool
        Every beat has been taken.
    """

    def __init__(self, stream, beats, *, rng=None, valid_prob=1.0):
        self.stream = stream
        self.beats = [(int(d), int(last)) for d, last in beats]
        self.rng = _as_rng(rng)
        self.valid_prob = float(valid_prob)
        self.cycles = []
        self.done = False

    def _set_payload(self, ctx, data, last):
        payload = self.stream.payload
        if hasattr(payload, "last"):   # a beat: data and last
            ctx.set(payload.data, data)
            ctx.set(payload.last, last)
        else:                          # a plain word (e.g. the SPRAM image)
            ctx.set(payload, data)

    async def testbench(self, ctx):
        stream, rng = self.stream, self.rng
        payload = stream.payload
        width = len(payload.data) if hasattr(payload, "last") else len(payload)
        cycle = 0
        for data, last in self.beats:
            while rng is not None and rng.random() >= self.valid_prob:
                ctx.set(stream.valid, 0)
                self._set_payload(ctx, rng.getrandbits(width), rng.getrandbits(1))
                await ctx.tick()
                cycle += 1
            self._set_payload(ctx, data, last)
            ctx.set(stream.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(stream.ready)
                cycle += 1
                if ready:
                    break
            self.cycles.append(cycle - 1)
        ctx.set(stream.valid, 0)
        self.done = True


class StreamSink:
    """Takes ``count`` beats from ``stream`` (the component's ``o``) with random ``ready`` drops.

    Parameters
    ----------
    stream : stream interface
        The producer-side stream of the component under test (``dut.o``).
    count : int
        Beats to take; the testbench ends after the last one.
    rng : random.Random, int or None
        Source of the drops; None: always ready.
    ready_prob : float
        Probability that ``ready`` is high in a cycle.

    Members
    -------
    beats : list of (int, int)
        ``(data, last)`` of every beat taken, in order.
    cycles : list of int
        Cycle of each transfer.
    violations : list of str
        Broken stream rules (``valid`` withdrawn or payload changed before the transfer).
    done : bool
    """

    def __init__(self, stream, count, *, rng=None, ready_prob=1.0):
        self.stream = stream
        self.count = int(count)
        self.rng = _as_rng(rng)
        self.ready_prob = float(ready_prob)
        self.beats = []
        self.cycles = []
        self.violations = []
        self.done = False

    async def testbench(self, ctx):
        stream, rng = self.stream, self.rng
        cycle = 0
        held = None  # payload offered but not taken in the previous cycle
        while len(self.beats) < self.count:
            ready = rng is None or rng.random() < self.ready_prob
            ctx.set(stream.ready, ready)
            _, _, valid, data, last = await ctx.tick().sample(stream.valid, stream.payload.data,
                                                              stream.payload.last)
            if held is not None:
                if not valid:
                    self.violations.append(f"cycle {cycle}: valid dropped before the beat was taken")
                elif (data, last) != held:
                    self.violations.append(f"cycle {cycle}: payload changed from {held} to {(data, last)} "
                                           f"before the beat was taken")
            if valid and ready:
                self.beats.append((data, last))
                self.cycles.append(cycle)
                held = None
            else:
                held = (data, last) if valid else None
            cycle += 1
        ctx.set(stream.ready, 0)
        self.done = True


def run_simulation(dut, testbenches, *, max_cycles, progress=None, vcd=None):
    """Simulate ``dut`` with ``testbenches`` (async functions) until they all return.

    ``dut`` runs in the ``sync`` domain, clocked with :data:`CLOCK_PERIOD`.
    Raises :class:`SimulationTimeout` after ``max_cycles`` clock cycles; ``progress`` (a function returning a
    string) is put in its message. ``vcd`` names a waveform file to write.
    """
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain("sync")  # explicit, so that a purely combinational dut simulates too
    sim = Simulator(top)
    sim.add_clock(CLOCK_PERIOD)
    for bench in testbenches:
        sim.add_testbench(bench)

    async def watchdog(ctx):
        await ctx.delay(max_cycles * CLOCK_PERIOD)
        detail = f": {progress()}" if progress is not None else ""
        raise SimulationTimeout(f"simulation did not finish in {max_cycles} cycles{detail}")

    sim.add_testbench(watchdog, background=True)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()


def simulate_stream(dut, beats, out_count, *, rng=None, valid_prob=1.0, ready_prob=1.0, max_cycles=None,
                    vcd=None, load=None):
    """Feed ``beats`` into ``dut.i`` and take ``out_count`` beats from ``dut.o``; with ``load`` (a list of
    words), feed those into ``dut.load`` at the same time (a design's SPRAM image), with the same gaps.

    ``rng`` (a ``random.Random`` or a seed) drives both the input gaps and the output drops. ``max_cycles``
    (default 100,000) bounds the run. Returns the ``(source, sink)`` pair after the run; raises
    ``AssertionError`` if the sink saw a broken stream rule.
    """
    rng = _as_rng(rng)
    src_rng = random.Random(rng.getrandbits(64)) if rng is not None else None
    sink_rng = random.Random(rng.getrandbits(64)) if rng is not None else None
    source = StreamSource(dut.i, beats, rng=src_rng, valid_prob=valid_prob)
    sink = StreamSink(dut.o, out_count, rng=sink_rng, ready_prob=ready_prob)
    benches = [source.testbench, sink.testbench]
    if load is not None:
        load_rng = random.Random(rng.getrandbits(64)) if rng is not None else None
        benches.append(StreamSource(dut.load, [(w, 0) for w in load], rng=load_rng, valid_prob=valid_prob).testbench)
    if max_cycles is None:
        max_cycles = 100_000

    def progress():
        return (f"{len(source.cycles)} of {len(source.beats)} input beats taken, "
                f"{len(sink.beats)} of {out_count} output beats seen")

    run_simulation(dut, benches, max_cycles=max_cycles, progress=progress, vcd=vcd)
    if sink.violations:
        raise AssertionError("stream rule broken: " + "; ".join(sink.violations[:5]))
    return source, sink


def run_with_output_held(dut, beats, out_count, *, hold=100, rng=3, ready_prob=0.7):
    """Feed ``beats`` into ``dut.i`` with ``dut.o`` held (never ready) for ``hold`` cycles, then take
    ``out_count`` beats with random drops. Returns ``(taken, sink)``: the input beats taken while the output was
    held, and the :class:`StreamSink` (its ``beats`` and ``violations``)."""
    source = StreamSource(dut.i, beats)
    sink = StreamSink(dut.o, out_count, rng=random.Random(rng), ready_prob=ready_prob)
    taken = []

    async def held_sink(ctx):
        ctx.set(dut.o.ready, 0)
        await ctx.tick().repeat(hold)
        taken.append(len(source.cycles))
        await sink.testbench(ctx)

    run_simulation(dut, [source.testbench, held_sink], max_cycles=hold + 50 * (len(beats) + out_count))
    return taken[0], sink


def vectors_to_beats(vectors, dtype, lanes):
    """Element vectors (n, size) of ``dtype`` values -> ``(data, last)`` beats, ``size / lanes`` per vector."""
    dtype = parse_type(dtype)
    v = np.asarray(vectors)
    if v.ndim == 1:
        v = v[None, :]
    words = pack_lanes(v, dtype, lanes)
    beats = []
    for row in words:
        for k, word in enumerate(row):
            beats.append((int(word), int(k == len(row) - 1)))
    return beats


def beats_to_vectors(beats, dtype, lanes, size):
    """``(data, last)`` beats -> vectors (n, size) of ``dtype`` values.

    Raises ``AssertionError`` unless the beats make whole vectors with ``last`` set exactly on the final
    beat of each.
    """
    dtype = parse_type(dtype)
    per_vector = size // lanes
    if len(beats) % per_vector:
        raise AssertionError(f"{len(beats)} beats are not a whole number of {per_vector}-beat vectors")
    for k, (_, last) in enumerate(beats):
        want = int(k % per_vector == per_vector - 1)
        if last != want:
            raise AssertionError(f"beat {k} (beat {k % per_vector} of vector {k // per_vector}): last={last}, "
                                 f"expected {want}")
    words = np.array([d for d, _ in beats], dtype=object).reshape(-1, per_vector)
    return unpack_lanes(words, dtype, lanes)


def run_vectors(dut, vectors, *, in_type, in_lanes, out_type, out_lanes, out_size, rng=None, valid_prob=1.0,
                ready_prob=1.0, max_cycles=None, vcd=None, load=None):
    """Stream element ``vectors`` (n, in_size) through ``dut`` and return its output vectors (n, out_size).

    Input beats carry ``in_lanes`` elements of ``in_type``, output beats ``out_lanes`` of ``out_type``. Checks
    (``AssertionError``) the stream rules, that exactly the expected number of beats came out and that ``last``
    marks each output vector's final beat. Returns ``(outputs, source, sink)``.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    beats = vectors_to_beats(vectors, in_type, in_lanes)
    count = len(vectors) * (out_size // out_lanes)
    source, sink = simulate_stream(dut, beats, count, rng=rng, valid_prob=valid_prob, ready_prob=ready_prob,
                                   max_cycles=max_cycles, vcd=vcd, load=load)
    return beats_to_vectors(sink.beats, out_type, out_lanes, out_size), source, sink


def run_plan(dut, plan, vectors, **kwargs):
    """:func:`run_vectors` with the stream shapes of a :class:`~hwnet.compiler.DesignPlan` (``dut`` is its
    :class:`~hwnet.gateware.network.NetworkTop`; its SPRAM image, if any, is loaded alongside); ``kwargs`` as
    for :func:`run_vectors`."""
    load = plan.spram_image() if plan.spram_words else None
    return run_vectors(dut, vectors, in_type=plan.input_type, in_lanes=plan.input_lanes,
                       out_type=plan.output_type, out_lanes=plan.output_lanes, out_size=plan.output_size,
                       load=load, **kwargs)


def assert_equal_vectors(got, expected, what="output"):
    """``AssertionError`` naming the first differing vector and element unless ``got == expected``."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {expected.shape}")
    bad = np.argwhere(got != expected)
    if len(bad):
        v, e = (int(k) for k in bad[0])
        raise AssertionError(f"{what}: {len(bad)} element(s) differ; first at vector {v} element {e}: "
                             f"got {int(got[v, e])}, expected {int(expected[v, e])}")


def divisors(n):
    """Divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _random_thresholds(rng, channels, levels, lo, hi):
    """Ascending thresholds (channels, levels) for accumulators in ``[lo, hi]``: mostly inside the range, a few
    rows entirely below it (always fire) and a few entirely above it (never fire)."""
    span = hi - lo + 1
    t = np.sort(rng.integers(lo - 2, hi + 3, size=(channels, levels)), axis=1)
    kind = rng.random(channels)
    below, above = kind < 0.1, kind > 0.9
    t[below] = np.sort(rng.integers(lo - 2 * span - 5, lo + 1, size=(int(below.sum()), levels)), axis=1)
    t[above] = np.sort(rng.integers(hi + 1, hi + 2 * span + 5, size=(int(above.sum()), levels)), axis=1)
    return t


def random_folding(rng, out_features, in_features, *, pe=None, simd=None, planes=1, max_cycles=None,
                   padded=False):
    """A random (pe, simd): ``pe`` a divisor of ``out_features``, ``simd`` a divisor of ``in_features`` or, with
    ``padded``, half the time any of 1 .. ``in_features`` (a dense layer's input padded to whole beats); given
    ``pe``/``simd`` are kept. At most ``max_cycles`` cycles per vector when possible."""
    simds = divisors(in_features)
    if simd is not None:
        simds = [simd]
    elif padded and rng.random() < 0.5:
        simds = list(range(1, in_features + 1))
    pairs = [(p, s) for p in divisors(out_features) for s in simds if pe is None or p == pe]
    if max_cycles is not None:
        pairs = [(p, s) for p, s in pairs
                 if (out_features // p) * -(-in_features // s) * planes <= max_cycles] or pairs[-1:]
    return pairs[int(rng.integers(len(pairs)))]


def random_dense(rng, in_features, out_features, *, name, in_type="bipolar", weight_type="bipolar", raw=False,
                 out_type="bipolar", pe=None, simd=None, max_cycles=None, products=False, weight_storage="rom",
                 bit_serial=False, padded=False):
    """A random :class:`~hwnet.ir.Dense` (``rng``: numpy Generator) taking ``in_type`` inputs: uniformly random
    legal ``weight_type`` weights, random ascending thresholds in the layer's accumulator range (some rows always
    firing, some never), and where ``pe``/``simd`` are None a random folding (:func:`random_folding`).
    ``products=True`` adds a random products table (entries -9 .. 9). ``weight_storage="logic"`` unrolls.
    ``padded`` lets the random folding pad the input to whole beats."""
    in_type, weight_type = parse_type(in_type), parse_type(weight_type)
    weights = rng.choice(weight_type.values(), size=(out_features, in_features))
    table = rng.integers(-9, 10, size=(weight_type.num_values, in_type.num_values)) if products else None
    if weight_storage == "logic":
        pe, simd = out_features, in_features
    elif pe is None or simd is None:
        planes = weight_type.bits if bit_serial else 1
        pe, simd = random_folding(rng, out_features, in_features, pe=pe, simd=simd, planes=planes,
                                  max_cycles=max_cycles, padded=padded)
    common = dict(weights=weights, weight_type=weight_type, pe=pe, simd=simd, products=table,
                  weight_storage=weight_storage, bit_serial=bit_serial, name=name)
    if raw:
        return Dense(**common)
    probe = Dense(**common)
    probe.bind(in_type, in_features)
    lo, hi = probe.acc_range()
    out_type = parse_type(out_type)
    t = _random_thresholds(rng, out_features, out_type.num_values - 1, lo, hi)
    return Dense(thresholds=t, out_type=out_type, **common)


def random_conv(rng, in_shape, out_channels, *, name, kernel, stride=1, padding=0, pad_value=None,
                in_type="bipolar", weight_type="bipolar", raw=False, out_type="bipolar", pe=None, simd=None,
                max_cycles=None, products=False, pixels=None):
    """A random :class:`~hwnet.ir.Conv2d` over ``in_shape`` images: the weights, thresholds, products table and
    folding of a :func:`random_dense` over its patches (``max_cycles`` bounds the cycles per patch). ``pixels``
    > 1 unrolls it per pixel with that many output pixels per cycle."""
    if pixels is not None and pixels > 1:
        kh, kw = (kernel, kernel) if np.ndim(kernel) == 0 else kernel
        pe, simd = out_channels, kh * kw * in_shape[2]
    kh, kw = (kernel, kernel) if np.ndim(kernel) == 0 else kernel
    c = in_shape[2]
    dense = random_dense(rng, kh * kw * c, out_channels, name=name, in_type=in_type, weight_type=weight_type,
                         raw=raw, out_type=out_type, pe=pe, simd=simd, max_cycles=max_cycles, products=products)
    return Conv2d(weights=dense.weights.reshape(out_channels, kh, kw, c), weight_type=dense.weight_type,
                  in_shape=in_shape, stride=stride, padding=padding, pad_value=pad_value,
                  thresholds=dense.thresholds, out_type=None if raw else dense.out_type, products=dense.products,
                  pe=dense.pe, simd=dense.simd, pixels=pixels, name=name)


def random_cnn(rng, *, max_cycles=None, pixels_prob=0.3):
    """A small random convolutional network: an input type, one or two random convolutions (kernel, stride,
    padding, pad value, weight and output types, folding; with probability ``pixels_prob`` unrolled per pixel
    with several output pixels per cycle where the widths allow), a max-pool where it fits, a last dense layer
    (raw or thresholded). Images of 3..7 pixels a side (a width of 4, 6 or 8 more often) and 1..4 channels,
    for simulation."""
    input_type = parse_type(str(rng.choice(["bipolar", "uint3", "int4", "ternary"])))
    width = int(rng.integers(3, 8)) if rng.random() < 0.5 else int(rng.choice([4, 6, 8]))
    shape = (int(rng.integers(3, 8)), width, int(rng.integers(1, 5)))
    layers, t = [], input_type
    for k in range(int(rng.integers(1, 3))):
        spec = random_layer_specs(rng, 1, logic_ok=[False])[0]
        spec.pop("bit_serial", None)  # a convolution's weights are evaluated all planes at once
        out_type = spec.pop("out_type")
        kh, kw = int(rng.integers(1, min(3, shape[0]) + 1)), int(rng.integers(1, min(3, shape[1]) + 1))
        padding = tuple(int(v) for v in rng.integers(0, 2, size=4))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        legal = t.values()
        pad_value = None if rng.random() < 0.5 else int(rng.choice(legal))
        pixels = None
        if rng.random() < pixels_prob:
            ow = (shape[1] + padding[2] + padding[3] - kw) // stride[1] + 1
            common = [d for d in range(2, shape[1] + 1) if shape[1] % d == 0 and ow % d == 0]
            pixels = int(rng.choice(common)) if common else None
        conv = random_conv(rng, shape, int(rng.choice([2, 3, 4])), name=f"conv{k}", kernel=(kh, kw), stride=stride,
                           padding=padding, pad_value=pad_value, in_type=t, out_type=out_type,
                           max_cycles=max_cycles, pixels=pixels, **spec)
        layers.append(conv)
        t, shape = parse_type(out_type), conv.out_shape
        if rng.random() < 0.6 and shape[0] >= 2 and shape[1] >= 2:
            kernel = (2, 2) if rng.random() < 0.7 else (1, 2)
            stride = kernel if rng.random() < 0.7 else (kernel[0] + 1, kernel[1])
            if stride[0] <= shape[0]:
                pool = MaxPool2d(in_shape=shape, kernel=kernel, stride=stride, name=f"pool{k}")
                layers.append(pool)
                shape = pool.out_shape
    size = int(np.prod(shape))
    raw = bool(rng.random() < 0.6)
    layers.append(random_dense(rng, size, int(rng.choice([3, 4, 5])), name="fc", in_type=t, raw=raw,
                               out_type=str(rng.choice(["bipolar", "uint2"])), max_cycles=max_cycles))
    return Network(input_type=input_type, input_size=int(np.prod(layers[0].in_shape)), layers=layers,
                   name="random_cnn")


def random_network(rng, *, input_size, hidden, outputs, input_type="bipolar", last_raw=True,
                   last_out_type="bipolar", foldings=None, max_cycles=None, layers=None, binarize_input=True,
                   padded=True):
    """A random network: an optional input binarization, dense layers, a last layer.

    Parameters
    ----------
    rng : numpy.random.Generator
    input_size : int
    hidden : sequence of int
        Sizes of the hidden (thresholded) layers.
    outputs : int
        Size of the last layer.
    input_type : str
        ``bipolar``, or ``uint<k>``/``int<k>``.
    last_raw : bool
        The last layer gives raw accumulators; otherwise it is thresholded to ``last_out_type``.
    foldings : sequence of (pe, simd) or None
        Per dense layer; None (or a None entry, or None in a pair) picks random divisors.
    max_cycles : int or None
        Bound on the cycles per vector of a randomly folded layer.
    layers : sequence of dict or None
        Per dense layer, keyword arguments of :func:`random_dense` (``weight_type``, ``out_type`` of a hidden
        layer, ``products``, ``bit_serial``, ``weight_storage``); None: bipolar weights, bipolar hidden outputs.
    binarize_input : bool
        Start a network with a ``uint<k>``/``int<k>`` input with a :class:`~hwnet.ir.MultiThreshold` to bipolar
        (default); otherwise the first dense layer takes the input as it is.
    padded : bool
        Random foldings may pad a layer's input to whole beats (:func:`random_folding`; default).
    """
    input_type = parse_type(input_type)
    net_layers = []
    t_in = input_type
    if input_type.kind != "bipolar" and binarize_input:
        t = rng.integers(input_type.min - 1, input_type.max + 2, size=(1, 1))
        net_layers.append(MultiThreshold(thresholds=t, out_type="bipolar", name="binarize"))
        t_in = parse_type("bipolar")
    sizes = [input_size, *hidden, outputs]
    count = len(sizes) - 1
    foldings = list(foldings) if foldings is not None else [None] * count
    specs = list(layers) if layers is not None else [{}] * count
    for k in range(count):
        pe, simd = foldings[k] if foldings[k] is not None else (None, None)
        last = k == count - 1
        spec = dict(specs[k])
        out_type = last_out_type if last else spec.pop("out_type", "bipolar")
        spec.pop("out_type", None)
        layer = random_dense(rng, sizes[k], sizes[k + 1], name=f"fc{k}", in_type=t_in, raw=last and last_raw,
                             out_type=out_type, pe=pe, simd=simd, max_cycles=max_cycles, padded=padded, **spec)
        net_layers.append(layer)
        t_in = parse_type(out_type)
    return Network(input_type=input_type, input_size=input_size, layers=net_layers, name="random")


def random_layer_specs(rng, count, *, logic_ok=None):
    """``count`` random dense layer specs for :func:`random_network`'s ``layers``: a random processing element
    kind (weight type, products table, bit-serial, weights in logic where ``logic_ok[k]``) and a random hidden
    output type, covering every kind the compiler has."""
    specs = []
    for k in range(count):
        choice = int(rng.integers(7))
        spec = {"out_type": str(rng.choice(["bipolar", "ternary", "uint1", "uint2", "uint3", "int2", "int3"]))}
        if choice == 0:
            spec["weight_type"] = "bipolar"
        elif choice == 1:
            spec["weight_type"] = "ternary"
        elif choice == 2:
            spec["weight_type"] = f"pot{int(rng.integers(2, 5))}"
        elif choice == 3:
            spec.update(weight_type=f"uint{int(rng.integers(1, 3))}", products=True)
        elif choice in (4, 5):
            spec.update(weight_type=str(rng.choice(["uint2", "uint3", "int2", "int3", "int4"])), bit_serial=choice == 5)
        else:
            spec.update(weight_type=str(rng.choice(["bipolar", "ternary"])))
            if logic_ok is None or logic_ok[k]:
                spec["weight_storage"] = "logic"
        specs.append(spec)
    return specs


def random_inputs(rng, network, count):
    """``count`` random legal input vectors of ``network`` (numpy Generator ``rng``)."""
    t = network.input_type
    if t.kind == "bipolar":
        return rng.choice(np.array([-1, 1]), size=(count, network.input_size))
    return rng.integers(t.min, t.max + 1, size=(count, network.input_size))
