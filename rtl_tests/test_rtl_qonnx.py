"""Brevitas-trained QONNX graphs of each bit width (binary, ternary, 2-bit, 4-bit per-channel and float-scaled)
imported, compiled and run in Verilator over the whole digits test split with
stalls: every output of every sample equals the golden model's, which equals qonnx's execution of the graph
(tests/test_qonnx.py checks that link on the same kind of graphs)."""

import warnings

import numpy as np
import pytest

from hwnet import compiler, golden
from hwnet.flow import TOP_NAME
from hwnet.qonnx_import import import_qonnx, integer_outputs, quantize_inputs
from hwnet.sim import StreamFormat, run_stream
from hwnet.sim.cache import cached_verilog

pytestmark = [pytest.mark.rtl, pytest.mark.usefixtures("one_torch_thread")]
pytest.importorskip("brevitas")


@pytest.mark.parametrize("arch, quant, target_cycles", [("mlp", "binary", 64), ("mlp", "ternary", 64),
                                                       ("mlp", "w4a4-float", 64), ("cnn", "w2a2", 400),
                                                       ("cnn", "w4a4-channel", 400)])
def test_brevitas_graph_in_verilator_whole_test_split_with_stalls(arch, quant, target_cycles, digits, tmp_path):
    from hwnet.qonnx_testing import brevitas_net, digits_float, export, qonnx_outputs, train_briefly
    model, _ = train_briefly(brevitas_net(arch, quant, seed=2), digits, epochs=2)
    path = export(model, tmp_path / f"{arch}.onnx")
    network = compiler.choose_folding(import_qonnx(path), target_cycles)
    plan = compiler.plan(network)
    x = digits_float(digits, "test")
    codes = quantize_inputs(network, x)
    expected = golden.execute(network, codes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(integer_outputs(network, qonnx_outputs(path, x)), expected)
    res = run_stream(cached_verilog(plan, top=TOP_NAME), StreamFormat.from_plan(plan), codes, top=TOP_NAME,
                     stall_in=0.3, stall_out=0.3, seed=4, cycles_hint=plan.cycles_per_inference)
    np.testing.assert_array_equal(res.outputs, expected)
    assert len(res.outputs) == len(digits.test_x) == 360
