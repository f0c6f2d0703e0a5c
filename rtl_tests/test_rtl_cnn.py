"""Trained binarized CNNs in Verilator over their whole test sets, with stalls: the digits CNN (conv-conv-pool-dense
on the 8x8 digits) and a small CNN on the MNIST split (skipped when ../shared/data/mnist is absent). Every output
of every test sample equals the golden model's, and the classes equal the torch model's."""

import numpy as np
import pytest
import torch

from hwnet import compiler, golden
from hwnet.flow import TOP_NAME
from hwnet.sim import StreamFormat, run_stream
from hwnet.sim.cache import cached_verilog
from hwnet.train.data import load_dataset, mnist_available
from hwnet.train.lower import check_lowering, lower
from hwnet.train.methods import train
from hwnet.train.trainer import predict

pytestmark = pytest.mark.rtl


def _trained(dataset, conv, hidden, epochs):
    torch.set_num_threads(1)
    ds = load_dataset(dataset)
    model, _, results = train(ds, "binarynet", conv=conv, hidden=hidden, epochs=epochs, seed=0)
    network = lower(model, name=f"{dataset}-cnn")
    assert check_lowering(model, network, ds.test_x) == 0
    return model, network, ds, results


def _run_whole_test_set(model, network, ds, target_cycles, stall):
    network = compiler.choose_folding(network, target_cycles)
    plan = compiler.plan(network)
    expected = golden.execute(network, ds.test_x)
    res = run_stream(cached_verilog(plan, top=TOP_NAME), StreamFormat.from_plan(plan), ds.test_x, top=TOP_NAME,
                     stall_in=stall, stall_out=stall, seed=3, cycles_hint=plan.cycles_per_inference)
    np.testing.assert_array_equal(res.outputs, expected)
    np.testing.assert_array_equal(golden.classify(res.outputs), predict(model, ds.test_x))
    return plan, res


def test_digits_cnn_whole_test_split_with_stalls():
    # hwnet train --conv 16c3p1,16c3p1,mp2 --hidden 32: 8-bit... 5-bit pixels into binary weights (add/subtract),
    # then XNOR-popcount convolutions, OR max-pooling, dense layers
    conv = [{"channels": 16, "kernel": 3, "padding": 1}, {"channels": 16, "kernel": 3, "padding": 1, "pool": 2}]
    model, network, ds, results = _trained("digits", conv, (32,), 8)
    assert results["test_accuracy"] >= 0.85
    plan, res = _run_whole_test_set(model, network, ds, 600, 0.3)
    kinds = [type(s).__name__ for s in plan.stages]
    assert kinds.count("WindowStage") == 2 and kinds.count("PoolStage") == 1
    assert plan.stages[1].kind == "addsub" and plan.stages[3].kind == "xnor"
    assert len(res.outputs) == len(ds.test_x) == 360


@pytest.mark.skipif(not mnist_available(), reason="the MNIST files are not in ../shared/data/mnist")
def test_mnist_cnn_whole_test_split_with_stalls():
    # 28x28 -> 4x4 stride 4 (7x7x8) -> 3x3 pad 1 (7x7x16) -> pool 2 (3x3x16) -> 32 -> 10: about 800 cycles per image
    conv = [{"channels": 8, "kernel": 4, "stride": 4}, {"channels": 16, "kernel": 3, "padding": 1, "pool": 2}]
    model, network, ds, results = _trained("mnist", conv, (32,), 4)
    assert results["test_accuracy"] >= 0.85
    plan, res = _run_whole_test_set(model, network, ds, 800, 0.2)
    assert len(res.outputs) == len(ds.test_x) == 2000
