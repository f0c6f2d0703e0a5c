# amaranth: UnusedElaboratable=no
"""Convolutional networks through the compiler and the whole-network gateware (amaranth.sim): random CNNs
(kernels, strides, padding, pad values, every processing element kind, pooling, random foldings) against the
golden model under random stalls, the planned throughput, and the folding choice for convolutions."""

import numpy as np
import pytest

from hwnet import compiler, golden, ir
from hwnet.compiler import WindowStage
from hwnet.errors import HwnetError
from hwnet.gateware import NetworkTop
from hwnet.gateware.testing import assert_equal_vectors, random_cnn, random_conv, random_inputs, run_plan


def _check(net, data_rng, vectors, **kwargs):
    plan = compiler.plan(net)
    x = random_inputs(data_rng, net, vectors)
    got, source, sink = run_plan(NetworkTop(plan=plan), plan, x, **kwargs)
    assert_equal_vectors(got, golden.execute(net, x))
    assert len(source.cycles) == vectors * plan.input_beats
    return plan, sink


@pytest.mark.parametrize("seed", range(16))
def test_random_cnns_with_stalls(seed):
    rng = np.random.default_rng(seed + 4100)
    net = random_cnn(rng, max_cycles=24)
    _check(net, rng, 3, rng=seed, valid_prob=float(rng.uniform(0.3, 1.0)), ready_prob=float(rng.uniform(0.2, 1.0)))


def test_plan_of_a_conv_pool_dense_chain():
    rng = np.random.default_rng(3)
    c1 = random_conv(rng, (6, 6, 1), 4, name="c1", kernel=3, padding=1, in_type="uint4", pe=2, simd=3)
    p1 = ir.MaxPool2d(in_shape=(6, 6, 4), kernel=2, name="p1")
    c2 = random_conv(rng, (3, 3, 4), 4, name="c2", kernel=2, pe=4, simd=8)
    net = ir.Network(input_type="uint4", input_size=36, layers=[
        c1, p1, c2, ir.Dense(weights=rng.choice([-1, 1], size=(3, 16)), pe=1, simd=4, name="fc")])
    plan = compiler.plan(net)
    kinds = [type(s).__name__ for s in plan.stages]
    assert kinds == ["WindowStage", "DenseStage", "PoolStage", "WindowStage", "DenseStage", "DenseStage"]
    w1, d1, pool, w2, d2, fc = plan.stages
    assert (w1.lanes_in, d1.simd, d1.vectors, d1.cycles) == (1, 3, 36, 36 * 2 * 3)
    # one pixel (1 element) is 9 beats per patch, more than the MVAU's 6 cycles: a kernel row (3 positions) per beat
    assert (w1.geometry.positions, w1.lanes_out, w1.cycles) == (3, 3, 36 * 3)
    assert pool.simd == 2 and pool.cycles == 36 * 4 // 2
    assert w2.lanes_in == 4 and d2.vectors == 4     # the pool's 2 lanes are widened to the window's 4
    assert (w2.geometry.positions, w2.lanes_out) == (2, 8)  # 2 cycles per 16-element patch: 2 pixels per beat
    assert plan.cycles_per_inference == max(s.cycles for s in plan.stages) == d1.cycles == 216
    assert plan.output_size == 3 and plan.input_lanes == 1
    summary = plan.summary()
    assert [s["kind"] for s in summary["stages"]] == ["window", "dense", "maxpool", "window", "dense", "dense"]
    blocks = [name for name, _, _ in NetworkTop(plan=plan).blocks()]
    assert blocks == ["s0_c1_window", "s1_fifo", "s1_c1", "s2_p1", "s2_to_s3_width", "s3_c2_window", "s4_fifo",
                      "s4_c2", "s5_fifo", "s5_fc"]
    _check(net, rng, 3, rng=1, valid_prob=0.6, ready_prob=0.5)


@pytest.mark.parametrize("seed", range(4))
def test_throughput_matches_plan(seed):
    rng = np.random.default_rng(seed + 4200)
    net = random_cnn(rng, max_cycles=16)
    plan, sink = _check(net, rng, 6)
    ends = [c for (_, last), c in zip(sink.beats, sink.cycles) if last]
    measured = np.diff(ends)[-3:]
    assert measured.max() <= plan.cycles_per_inference * 1.25, (measured, plan.summary())
    assert measured.min() >= plan.cycles_per_inference, (measured, plan.summary())


def test_a_network_ending_in_a_conv_marks_the_end_of_each_image():
    rng = np.random.default_rng(5)
    conv = random_conv(rng, (4, 4, 2), 3, name="c", kernel=3, padding=1, raw=True, pe=3, simd=2)
    net = ir.Network(input_type="bipolar", input_size=32, layers=[conv])
    plan, sink = _check(net, rng, 3, rng=2, valid_prob=0.7, ready_prob=0.6)
    assert [last for _, last in sink.beats].count(1) == 3      # run_plan also checks where they fall


def test_overlapping_pool_is_refused_by_the_compiler():
    net = ir.Network(input_type="uint4", input_size=32, layers=[
        ir.MaxPool2d(in_shape=(4, 4, 2), kernel=2, stride=1, name="p"),
        ir.Dense(weights=np.ones((2, 18), int), pe=1, simd=1, name="fc")])
    with pytest.raises(HwnetError, match=r"^layer 'p': overlapping max-pooling \(stride \(1, 1\) < kernel "
                                         r"\(2, 2\)\) has no hardware yet; use stride >= kernel$"):
        compiler.plan(net)


def test_unfolded_conv_is_refused_by_plan():
    rng = np.random.default_rng(0)
    conv = random_conv(rng, (4, 4, 2), 3, name="c", kernel=3, raw=True, pe=3, simd=2).with_folding(None, None)
    net = ir.Network(input_type="bipolar", input_size=32, layers=[conv])
    with pytest.raises(HwnetError, match=r"^layer 'c': no folding; "):
        compiler.plan(net)


def _brute_force_folding(layer, target):
    options = [(compiler.conv_cycles(layer, pe, simd), pe, simd) for pe in range(1, layer.out_channels + 1)
               if layer.out_channels % pe == 0 for simd in range(1, layer.patch_size + 1)
               if layer.patch_size % simd == 0]
    best = min(c for c, _, _ in options)
    feasible = [o for o in options if o[0] <= max(target, best)]
    return min(o[1] * o[2] for o in feasible), best


@pytest.mark.parametrize("target", [1, 64, 300, 1000, 5000])
@pytest.mark.parametrize("channels", [1, 4])
def test_choose_folding_for_convs(target, channels):
    rng = np.random.default_rng(channels)
    conv = random_conv(rng, (8, 8, channels), 8, name="c", kernel=3, padding=1, raw=True).with_folding(None, None)
    net = ir.Network(input_type="bipolar", input_size=64 * channels, layers=[conv])
    chosen = compiler.choose_folding(net, target).layers[0]
    cycles = compiler.conv_cycles(chosen, chosen.pe, chosen.simd)
    lanes, best = _brute_force_folding(conv, target)
    assert cycles <= max(target, best)
    assert chosen.pe * chosen.simd == lanes
    # the window bound: one beat per cycle of up to a whole patch, one pixel in per cycle ("same" padding: one
    # patch per input pixel)
    assert best == 64
    plan = compiler.plan(compiler.choose_folding(net, target))
    assert plan.cycles_per_inference == cycles
    window = plan.stages[0]
    assert isinstance(window, WindowStage) and channels % window.lanes_in == 0
    assert window.cycles <= max(target, best)


@pytest.mark.parametrize("seed", range(6))
def test_several_pixels_per_cycle(seed):
    # a first conv unrolled per pixel computing P output pixels per cycle (its window takes P input pixels per
    # beat), a pool taking the P pixels per beat, a second conv and a dense layer: exact under stalls, and at
    # the planned interval without
    rng = np.random.default_rng(seed + 4300)
    in_type = str(rng.choice(["bipolar", "uint3", "int4"]))
    c = int(rng.choice([1, 2]))
    p = int(rng.choice([2, 4]))
    spec = dict(weight_type=str(rng.choice(["bipolar", "ternary", "int2"])),
                out_type=str(rng.choice(["bipolar", "uint2", "int3"])))
    conv0 = random_conv(rng, (6, 8, c), 4, name="c0", kernel=3, padding=1, in_type=in_type, pixels=p, **spec)
    pool = ir.MaxPool2d(in_shape=(6, 8, 4), kernel=2, name="p0")
    conv1 = random_conv(rng, (3, 4, 4), 3, name="c1", kernel=2, in_type=spec["out_type"], pe=3, simd=4)
    fc = ir.Dense(weights=rng.choice([-1, 1], size=(5, 2 * 3 * 3)), pe=5, simd=6, name="fc")
    net = ir.Network(input_type=in_type, input_size=6 * 8 * c, layers=[conv0, pool, conv1, fc])
    plan = compiler.plan(net)
    window, dense, pooled = plan.stages[:3]
    assert (window.lanes_in, window.lanes_out, dense.pixels, dense.vectors) == (p * c, p * 9 * c, p, 48 // p)
    assert (pooled.pixels, pooled.lanes_in, pooled.cycles) == (2, 8, 24)   # 2 | the pool's width: 2 per beat
    assert window.cycles == 48 // p and dense.cycles == 48 // p
    _check(net, rng, 3, rng=seed, valid_prob=float(rng.uniform(0.3, 1.0)), ready_prob=float(rng.uniform(0.3, 1.0)))
    plan, sink = _check(net, rng, 6)
    ends = [c for (_, last), c in zip(sink.beats, sink.cycles) if last]
    assert np.diff(ends)[-3:].tolist() == [plan.cycles_per_inference] * 3


def test_pixels_need_a_layer_unrolled_per_pixel():
    rng = np.random.default_rng(1)
    with pytest.raises(HwnetError, match=r"^layer 'c': pixels=2 needs the layer unrolled per pixel \(pe=4, "
                                         r"simd=9\), got pe=2 simd=9$"):
        random_conv(rng, (4, 4, 1), 4, name="c", kernel=3, padding=1, pe=2, simd=9).replace(pixels=2)
    with pytest.raises(HwnetError, match=r"^layer 'c': pixels=3 must divide the input width 4 and the output "
                                         r"width 4; choose a common divisor, or leave pixels out$"):
        random_conv(rng, (4, 4, 1), 4, name="c", kernel=3, padding=1, pixels=3)
