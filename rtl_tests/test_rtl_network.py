"""Generated Verilog under Verilator (cocotb) against the golden model: every output of every vector."""

import numpy as np
import pytest

from hwnet import compiler, golden, ir
from hwnet.flow import TOP_NAME
from hwnet.sim import StreamFormat, run_stream
from hwnet.sim.cache import cached_verilog

pytestmark = pytest.mark.rtl


def _divisor(rng, n):
    return int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))


def _random_network(seed):
    """Random binarized MLP with random sizes, foldings and thresholds (some always/never firing)."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(4, 40)) for _ in range(int(rng.integers(2, 4)))] + [int(rng.integers(2, 12))]
    bits = int(rng.integers(1, 9))
    layers = [ir.MultiThreshold(thresholds=[[int(rng.integers(0, 1 << bits))]], out_type="bipolar", name="bin")]
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w = rng.choice([-1, 1], size=(n_out, n_in))
        last = k == len(sizes) - 2
        t = None
        if not last:
            t = rng.integers(-n_in - 2, n_in + 3, size=(n_out, 1))
            t[0] = -n_in - 5   # always +1
            t[-1] = n_in + 5   # never +1
        simd = _divisor(rng, n_in) if rng.random() < 0.5 else int(rng.integers(1, n_in + 1))  # maybe padded
        layers.append(ir.Dense(weights=w, thresholds=t, out_type=None if last else "bipolar",
                               pe=_divisor(rng, n_out), simd=simd, name=f"fc{k}"))
    return ir.Network(input_type=f"uint{bits}", input_size=sizes[0], layers=layers, name=f"rand{seed}"), rng


def _run(network, x, **kw):
    plan = compiler.plan(network)
    verilog = cached_verilog(plan, top=TOP_NAME)
    return plan, run_stream(verilog, StreamFormat.from_plan(plan), x, top=TOP_NAME,
                            cycles_hint=plan.cycles_per_inference, **kw)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_networks_bit_exact_with_stalls(seed):
    net, rng = _random_network(seed)
    t = net.input_type
    x = rng.integers(t.min, t.max + 1, size=(60, net.input_size))
    x[0], x[1] = t.max, t.min   # worst cases: all inputs +1, all -1
    expected = golden.execute(net, x)
    for stall_in, stall_out in ((0.0, 0.0), (0.4, 0.0), (0.0, 0.4), (0.5, 0.5)):
        plan, res = _run(net, x, stall_in=stall_in, stall_out=stall_out, seed=seed)
        np.testing.assert_array_equal(res.outputs, expected, err_msg=f"stalls {stall_in}/{stall_out}")
        if stall_in == stall_out == 0.0:
            assert res.interval == plan.cycles_per_inference


def test_trained_digits_network_whole_test_split(trained_digits):
    model, network, ds = trained_digits
    network = compiler.choose_folding(network, 64)
    expected = golden.execute(network, ds.test_x)
    plan, res = _run(network, ds.test_x, stall_in=0.3, stall_out=0.3, seed=7)
    np.testing.assert_array_equal(res.outputs, expected)
    assert len(res.outputs) == len(ds.test_x) == 360
    # and what it classifies is what the torch model classifies, sample by sample
    from hwnet.train.trainer import predict
    np.testing.assert_array_equal(golden.classify(res.outputs), predict(model, ds.test_x))


@pytest.mark.parametrize("seed", [21, 22])
def test_random_cnns_bit_exact_with_stalls(seed):
    from hwnet.gateware.testing import random_cnn, random_inputs
    rng = np.random.default_rng(seed)
    net = random_cnn(rng, max_cycles=16)
    x = random_inputs(rng, net, 40)
    expected = golden.execute(net, x)
    for stall_in, stall_out in ((0.0, 0.0), (0.5, 0.5)):
        plan, res = _run(net, x, stall_in=stall_in, stall_out=stall_out, seed=seed)
        np.testing.assert_array_equal(res.outputs, expected, err_msg=f"stalls {stall_in}/{stall_out}")
        if stall_in == stall_out == 0.0:
            assert res.interval == plan.cycles_per_inference


@pytest.mark.parametrize("in_type,pixels", [("uint4", 2), ("bipolar", 4)])
def test_several_pixels_per_cycle_bit_exact_with_stalls(in_type, pixels):
    # a first convolution computing `pixels` output pixels per cycle, the pool taking them two at a time, a
    # second convolution, a dense layer folded with padding
    from hwnet.gateware.testing import random_conv, random_inputs
    rng = np.random.default_rng(pixels)
    conv0 = random_conv(rng, (12, 12, 1), 8, name="c0", kernel=3, padding=1, in_type=in_type, pixels=pixels)
    pool = ir.MaxPool2d(in_shape=(12, 12, 8), kernel=2, name="p0")
    conv1 = random_conv(rng, (6, 6, 8), 8, name="c1", kernel=3, in_type="bipolar", pe=8, simd=24)
    fc = ir.Dense(weights=rng.choice([-1, 1], size=(10, 4 * 4 * 8)), pe=5, simd=10, name="fc")
    net = ir.Network(input_type=in_type, input_size=144, layers=[conv0, pool, conv1, fc])
    x = random_inputs(rng, net, 40)
    expected = golden.execute(net, x)
    for stall_in, stall_out in ((0.0, 0.0), (0.4, 0.4)):
        plan, res = _run(net, x, stall_in=stall_in, stall_out=stall_out, seed=pixels)
        np.testing.assert_array_equal(res.outputs, expected, err_msg=f"stalls {stall_in}/{stall_out}")
        if stall_in == stall_out == 0.0:
            assert plan.stages[1].pixels == pixels and plan.stages[-1].pad_lanes == 2
            assert res.interval == plan.cycles_per_inference == 144 // 2


@pytest.mark.parametrize("streamed", [{"fc0": None, "fc2": None}, {"fc1": 3, "fc2": 2}])
def test_weights_in_spram_bit_exact_with_stalls(streamed):
    # two of three layers stream their weights from the SPRAM pool, whole or only some PEs (3 of fc1's 4, 2 of
    # fc2's 5; the others read block RAM), loaded through the load port while the first inputs already arrive
    rng = np.random.default_rng(31)
    w = [rng.choice([-1, 1], size=(16, 32)), rng.choice([-1, 1], size=(16, 16)), rng.choice([-1, 1], size=(5, 16))]
    net = ir.Network(input_type="uint4", input_size=32, name="spram", layers=[
        ir.MultiThreshold(thresholds=[[8]], out_type="bipolar", name="bin"),
        ir.Dense(weights=w[0], thresholds=rng.integers(-6, 7, size=(16, 1)), out_type="bipolar", pe=2, simd=16,
                 name="fc0"),
        ir.Dense(weights=w[1], thresholds=rng.integers(-4, 5, size=(16, 1)), out_type="bipolar", pe=4, simd=4,
                 name="fc1"),
        ir.Dense(weights=w[2], pe=5, simd=8, name="fc2")])
    net = compiler.set_hardware_choices(net, spram=streamed)
    x = rng.integers(0, 16, size=(40, 32))
    expected = golden.execute(net, x)
    for stall_in, stall_out in ((0.0, 0.0), (0.5, 0.5)):
        plan, res = _run(net, x, stall_in=stall_in, stall_out=stall_out, seed=5, load=compiler.plan(net).spram_image())
        np.testing.assert_array_equal(res.outputs, expected, err_msg=f"stalls {stall_in}/{stall_out}")
        if stall_in == stall_out == 0.0:
            assert res.interval == plan.cycles_per_inference
