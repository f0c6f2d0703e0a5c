"""Every training method's network in hardware: trained briefly on digits, lowered, compiled, and run under
Verilator over the whole digits test split with random stalls; every output equals the integer model's, and the
classes equal the torch model's."""

import numpy as np
import pytest

from hwnet import compiler, golden
from hwnet.flow import TOP_NAME
from hwnet.sim import StreamFormat, run_stream
from hwnet.sim.cache import cached_verilog
from hwnet.train.methods import METHODS

pytestmark = pytest.mark.rtl

# BinaryNet's own network runs in test_rtl_network.py (test_trained_digits_network_whole_test_split). Methods that
# need convolutional layers (Shift Attention) have their own case below.
NAMES = [n for n in METHODS if n != "binarynet" and not METHODS[n].needs_conv]


@pytest.mark.parametrize("name", NAMES)
def test_method_network_whole_test_split_in_verilator(name):
    from hwnet.train.data import load_dataset
    from hwnet.train.lower import check_lowering, lower
    from hwnet.train.methods import train
    from hwnet.train.trainer import predict
    ds = load_dataset("digits")
    model, _, _ = train(ds, name, hidden=(32, 24), epochs=3, seed=2)
    network = lower(model, name=f"m_{name.replace('+', 'p').replace('-', '_')}")
    assert check_lowering(model, network, ds.test_x) == 0
    network = compiler.choose_folding(network, 32)
    plan = compiler.plan(network)
    verilog = cached_verilog(plan, top=TOP_NAME)
    res = run_stream(verilog, StreamFormat.from_plan(plan), ds.test_x, top=TOP_NAME,
                     cycles_hint=plan.cycles_per_inference, stall_in=0.2, stall_out=0.2, seed=3)
    assert len(res.outputs) == len(ds.test_x) == 360
    np.testing.assert_array_equal(res.outputs, golden.execute(network, ds.test_x))
    if METHODS[name].task == "classify":
        np.testing.assert_array_equal(golden.classify(res.outputs), predict(model, ds.test_x))
    else:
        np.testing.assert_array_equal(res.outputs, model.integer_trace(ds.test_x)[-1])


def test_shift_attention_cnn_whole_test_split_in_verilator():
    """``hwnet train --method shift-attention --conv 16c3p1,16c3p1,mp2 --hidden 32``: raw pixels into a ternary
    convolution with one tap per (output, input) channel, then a ternary convolution on bipolar codes (both on the
    add/subtract/skip PE), OR max-pooling and binary dense layers."""
    import torch
    from hwnet.train.data import load_dataset
    from hwnet.train.lower import check_lowering, lower
    from hwnet.train.methods import train
    from hwnet.train.trainer import predict
    torch.set_num_threads(1)
    ds = load_dataset("digits")
    conv = [{"channels": 16, "kernel": 3, "padding": 1}, {"channels": 16, "kernel": 3, "padding": 1, "pool": 2}]
    model, _, results = train(ds, "shift-attention", conv=conv, hidden=(32,), epochs=8, seed=0)
    assert results["test_accuracy"] >= 0.85
    network = lower(model, name="m_shift_attention")
    assert check_lowering(model, network, ds.test_x) == 0
    for layer in network.layers[:2]:  # one nonzero tap per (oc, ic)
        taps = layer.weights.reshape(layer.weights.shape[0], -1, layer.weights.shape[3])
        assert np.all(np.count_nonzero(taps, axis=1) == 1)
    network = compiler.choose_folding(network, 600)
    plan = compiler.plan(network)
    kinds = [(type(s).__name__, getattr(s, "kind", None)) for s in plan.stages]
    assert kinds[:5] == [("WindowStage", None), ("DenseStage", "ternary"), ("WindowStage", None),
                         ("DenseStage", "ternary"), ("PoolStage", None)]
    verilog = cached_verilog(plan, top=TOP_NAME)
    res = run_stream(verilog, StreamFormat.from_plan(plan), ds.test_x, top=TOP_NAME,
                     cycles_hint=plan.cycles_per_inference, stall_in=0.3, stall_out=0.3, seed=3)
    assert len(res.outputs) == len(ds.test_x) == 360
    np.testing.assert_array_equal(res.outputs, golden.execute(network, ds.test_x))
    np.testing.assert_array_equal(golden.classify(res.outputs), predict(model, ds.test_x))
