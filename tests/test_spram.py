# amaranth: UnusedElaboratable=no
"""Weights streamed from the SPRAM pool: the streamer alone, and whole networks with some layers' weights in
SPRAM, whole or split by PE with block RAM, against the golden model under stalls (the image is loaded while
inputs already arrive), and their steady-state interval against the plan's."""

import numpy as np
import pytest

from hwnet import compiler, golden, ir
from hwnet.compiler import SPRAM_DEPTH, SPRAM_WIDTH
from hwnet.errors import HwnetError
from hwnet.gateware import NetworkTop, generate_verilog
from hwnet.gateware.spram import SpramWeightStreamer
from hwnet.gateware.testing import (StreamSource, assert_equal_vectors, random_inputs, random_layer_specs,
                                    random_network, run_plan, run_simulation)


@pytest.mark.parametrize("seed", range(3))
def test_streamer_sends_each_region_round_and_round(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(1, 9)) for _ in range(int(rng.integers(1, 4)))]
    widths = [int(rng.integers(1, SPRAM_WIDTH + 1)) for _ in sizes]
    regions, base = [], 0
    for depth, width in zip(sizes, widths):
        regions.append((base, depth, width))
        base += depth
    image = [int(v) for v in rng.integers(0, 1 << 62, size=base)]
    dut = SpramWeightStreamer(regions=regions)
    repeats = 3
    source = StreamSource(dut.load, [(w, 0) for w in image], rng=seed, valid_prob=0.6)

    def drain(k, count, out):  # a sink of plain words, dropping ready at random
        async def bench(ctx):
            w, drops = getattr(dut, f"w{k}"), np.random.default_rng(seed * 10 + k)
            while len(out) < count:
                ctx.set(w.ready, int(drops.random() < 0.5))
                _, _, valid, ready, data = await ctx.tick().sample(w.valid, w.ready, w.payload)
                if valid and ready:
                    out.append(int(data))
        return bench

    outs = [[] for _ in regions]
    benches = [source.testbench] + [drain(k, r[1] * repeats, outs[k]) for k, r in enumerate(regions)]
    run_simulation(dut, benches, max_cycles=5000)
    for (start, depth, width), out in zip(regions, outs):
        assert out == [w & ((1 << width) - 1) for w in image[start:start + depth]] * repeats


def test_streamer_refuses_bad_regions():
    with pytest.raises(HwnetError, match=r"^region 1 starts at word 5, not right after the region before it \(4\)$"):
        SpramWeightStreamer(regions=[(0, 4, 8), (5, 2, 8)])
    with pytest.raises(HwnetError, match=r"^region 0: 65-bit words do not fit the 64-bit SPRAM pool$"):
        SpramWeightStreamer(regions=[(0, 4, 65)])
    with pytest.raises(HwnetError, match=rf"^the regions need {SPRAM_DEPTH + 1} words but the SPRAM pool holds "):
        SpramWeightStreamer(regions=[(0, SPRAM_DEPTH, 8), (SPRAM_DEPTH, 1, 8)])


def _spram_network(seed, streamed, split=()):
    """A random 3-layer network with the dense layers ``streamed`` (indices) streaming whole from SPRAM and the
    layers ``split`` split by PE: a random folding with more than one PE, a random number of them streaming."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.choice([8, 12, 16])) for _ in range(3)]
    specs = random_layer_specs(rng, 3, logic_ok=[False] * 3)
    net = random_network(rng, input_size=int(rng.choice([8, 16, 24])), hidden=sizes[:-1], outputs=sizes[-1],
                         input_type="uint4", last_raw=True, layers=specs, max_cycles=32)
    names = [layer.name for layer in net.dense_layers()]
    # fold the streamed layers so that their words fit the pool
    layers = []
    for layer in net.layers:
        bits = (1 if layer.bit_serial else layer.weight_type.bits) if isinstance(layer, ir.Dense) else None
        if layer.name in [names[k] for k in streamed]:
            pe, simd = max((p, s) for p in compiler._divisors(layer.out_features)
                           for s in compiler._divisors(layer.in_features) if p * s * bits <= SPRAM_WIDTH
                           and (layer.out_features // p) * (layer.in_features // s) <= 64)
            layer = layer.replace(pe=pe, simd=simd, weight_storage="spram")
        elif layer.name in [names[k] for k in split]:
            folds = [(p, s) for p in compiler._divisors(layer.out_features)[1:]
                     for s in compiler._divisors(layer.in_features) if s * bits <= SPRAM_WIDTH
                     and (layer.out_features // p) * (layer.in_features // s) <= 48]
            pe, simd = folds[int(rng.integers(len(folds)))]
            k = int(rng.integers(1, min(pe - 1, SPRAM_WIDTH // (simd * bits)) + 1))
            layer = layer.replace(pe=pe, simd=simd, weight_storage="spram", spram_pes=k)
        layers.append(layer)
    return net.replace_layers(layers), rng


@pytest.mark.parametrize("seed", range(6))
def test_networks_with_weights_in_spram_with_stalls(seed):
    streamed = [[0], [1], [0, 2], [0, 1, 2], [2], [1, 2]][seed]
    net, rng = _spram_network(seed + 900, streamed)
    plan = compiler.plan(net)
    assert len(plan.streamed_stages) == len(streamed)
    assert plan.spram_words == sum(s.depth for s in plan.streamed_stages)
    assert [s.spram_base for s in plan.streamed_stages] == list(np.cumsum([0] + [s.depth for s in
                                                                              plan.streamed_stages])[:-1])
    x = random_inputs(rng, net, 4)
    got, _, _ = run_plan(NetworkTop(plan=plan), plan, x, rng=seed, valid_prob=float(rng.uniform(0.4, 1.0)),
                         ready_prob=float(rng.uniform(0.3, 1.0)))
    assert_equal_vectors(got, golden.execute(net, x))


@pytest.mark.parametrize("seed", range(4))
def test_layers_split_between_spram_and_block_ram_with_stalls(seed):
    # some of a layer's PEs stream their weights, the others read their ROMs, all in lockstep
    streamed, split = [([], [1]), ([0], [2]), ([], [0, 2]), ([2], [0, 1])][seed]
    net, rng = _spram_network(seed + 920, streamed, split)
    plan = compiler.plan(net)
    stages = [s for s in plan.stages if isinstance(s, compiler.DenseStage)]
    assert [s.spram_pes for s in stages] == [s.pe if k in streamed else net.dense_layers()[k].spram_pes
                                             if k in split else 0 for k, s in enumerate(stages)]
    assert all(0 < stages[k].spram_pes < stages[k].pe for k in split)
    for s in plan.streamed_stages:  # a pool word holds the streamed PEs' words of one address, PE 0 lowest
        width = s.simd * s.lane_bits
        assert s.word_bits == s.spram_pes * width <= SPRAM_WIDTH
        assert [[(w >> (p * width)) & ((1 << width) - 1) for w in s.spram_words()]
                for p in range(s.spram_pes)] == [list(w) for w in s.weight_words[:s.spram_pes]]
        assert s.memory_bits == (s.pe - s.spram_pes) * s.depth * width + s.threshold_bits
    x = random_inputs(rng, net, 4)
    got, _, _ = run_plan(NetworkTop(plan=plan), plan, x, rng=seed, valid_prob=float(rng.uniform(0.4, 1.0)),
                         ready_prob=float(rng.uniform(0.3, 1.0)))
    assert_equal_vectors(got, golden.execute(net, x))


@pytest.mark.parametrize("streamed,split", [([0], []), ([0, 2], []), ([0, 1, 2], []), ([0], [1, 2])])
def test_throughput_is_the_plan_s(streamed, split):
    # one streamed layer keeps its own pace; several share the pool's one word per cycle
    net, rng = _spram_network(950, streamed, split)
    plan = compiler.plan(net)
    assert plan.cycles_per_inference == max(max(s.cycles for s in plan.stages), plan.spram_words)
    x = random_inputs(rng, net, 60)
    got, _, sink = run_plan(NetworkTop(plan=plan), plan, x)
    assert_equal_vectors(got, golden.execute(net, x))
    ends = [c for (_, last), c in zip(sink.beats, sink.cycles) if last]
    # the steady state: past the start (the queues start full, the layers settle into sharing the pool in
    # about 15 vectors) and before the end (the upstream layers are done and leave the pool to the others). With
    # the pool busy every cycle, the order in which the layers get their words may repeat only every few
    # vectors (e.g. 16, 18, 16, 18 cycles): p vectors every p * plan cycles.
    period = next((p for p in range(1, 9) if all(ends[i + p] - ends[i] == p * plan.cycles_per_inference
                                                 for i in range(25, 45))), None)
    assert period == 1 or (period and plan.spram_words == plan.cycles_per_inference), np.diff(ends)[25:45]


def test_spram_errors_are_one_line():
    rng = np.random.default_rng(0)
    w = rng.choice([-1, 1], size=(8, 128))
    wide = ir.Network(input_type="bipolar", input_size=128, layers=[
        ir.Dense(weights=w, pe=1, simd=128, weight_storage="spram", name="fc")])
    with pytest.raises(HwnetError, match=r"^layer 'fc': its streamed weights take 128 bits per cycle \(streamed PEs "
                                         r"\* simd \* weight bits = 1 \* 128 \* 1\) but the SPRAM pool gives 64; "
                                         r"fold it further \(smaller pe or simd\) or stream fewer of its PEs "
                                         r"\(spram_pes\)$"):
        compiler.plan(wide)
    split = ir.Network(input_type="bipolar", input_size=128, layers=[
        ir.Dense(weights=w, pe=4, simd=32, weight_storage="spram", spram_pes=3, name="fc")])
    with pytest.raises(HwnetError, match=r"^layer 'fc': its streamed weights take 96 bits per cycle \(streamed PEs "
                                         r"\* simd \* weight bits = 3 \* 32 \* 1\)"):
        compiler.plan(split)
    big = ir.Network(input_type="bipolar", input_size=2048, layers=[
        ir.Dense(weights=np.ones((16, 2048), int), pe=1, simd=1, weight_storage="spram", name="fc")])
    with pytest.raises(HwnetError, match=r"^the weights streamed from SPRAM need 32768 words but the pool holds "
                                         r"16384 "):
        compiler.plan(big)
    with pytest.raises(HwnetError, match=r"^layer 'fc': its weights cannot be both in logic and in SPRAM"):
        compiler.set_hardware_choices(wide, weights_in_logic=["fc"], spram=["fc"])


def test_verilog_has_a_load_port_and_spram_primitives():
    net, _ = _spram_network(901, [0])
    plan = compiler.plan(net)
    model = generate_verilog(plan)
    assert "load__payload" in model and "SB_SPRAM256KA" not in model
    primitive = generate_verilog(plan, spram_primitive=True)
    assert primitive.count("SB_SPRAM256KA") == 4
