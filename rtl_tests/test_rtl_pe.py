"""Every processing element kind in generated Verilog under Verilator (cocotb), against the golden model:
chains of layers of different kinds with multi-bit activations between them, random and worst-case inputs,
with and without stalls."""

import numpy as np
import pytest

from hwnet import compiler, golden
from hwnet.flow import TOP_NAME
from hwnet.gateware.testing import random_inputs, random_layer_specs, random_network
from hwnet.sim import StreamFormat, run_stream
from hwnet.sim.cache import cached_verilog

pytestmark = pytest.mark.rtl

# Two chains that between them hold every kind, each feeding the next a multi-bit activation.
CHAINS = {
    "addsub-ternary-shift-lut": ("int4", [
        {"weight_type": "bipolar", "out_type": "uint3"},                  # add/subtract, 8 thresholds: search
        {"weight_type": "ternary", "out_type": "int2"},                   # add/subtract/skip
        {"weight_type": "pot4", "out_type": "uint2"},                     # shift-add
        {"weight_type": "uint2", "products": True}]),                     # lookup products, raw
    "bitplane-serial-logic-xnor": ("uint3", [
        {"weight_type": "int3", "out_type": "ternary"},                   # bit planes
        {"weight_type": "uint2", "bit_serial": True, "out_type": "bipolar"},  # bit-serial
        {"weight_type": "ternary", "weight_storage": "logic", "out_type": "bipolar"},  # weights in logic
        {"weight_type": "bipolar"}]),                                     # XNOR-popcount, raw
}


def _run(network, x, **kw):
    plan = compiler.plan(network)
    verilog = cached_verilog(plan, top=TOP_NAME)
    return plan, run_stream(verilog, StreamFormat.from_plan(plan), x, top=TOP_NAME,
                            cycles_hint=plan.cycles_per_inference, **kw)


def _check(net, x, seed):
    expected = golden.execute(net, x)
    for stall_in, stall_out in ((0.0, 0.0), (0.4, 0.4)):
        plan, res = _run(net, x, stall_in=stall_in, stall_out=stall_out, seed=seed)
        np.testing.assert_array_equal(res.outputs, expected, err_msg=f"stalls {stall_in}/{stall_out}")
        if stall_in == stall_out == 0.0:
            assert res.interval == plan.cycles_per_inference
    return plan


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_chain_of_kinds_bit_exact(chain):
    input_type, specs = CHAINS[chain]
    rng = np.random.default_rng(len(chain))
    net = random_network(rng, input_size=16, hidden=[12, 8, 8], outputs=6, input_type=input_type,
                         binarize_input=False, layers=specs, max_cycles=32)
    x = random_inputs(rng, net, 40)
    t = net.input_type
    x[0], x[1] = t.max, t.min
    w = net.layers[0].weights
    x[2:2 + len(w)] = np.where(w > 0, t.max, t.min)   # each first-layer row at its largest accumulator
    plan = _check(net, x, seed=len(chain))
    assert [s.kind for s in plan.stages] == [compiler.pe_kind(layer) for layer in net.layers]


@pytest.mark.parametrize("seed", [21, 22])
def test_random_mixed_network_bit_exact(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.choice([8, 12, 16])) for _ in range(3)]
    net = random_network(rng, input_size=int(rng.choice([12, 16, 24])), hidden=sizes[:-1], outputs=sizes[-1],
                         input_type=str(rng.choice(["uint4", "int3", "ternary"])), binarize_input=False,
                         layers=random_layer_specs(rng, 3), max_cycles=48)
    x = random_inputs(rng, net, 40)
    x[0], x[1] = net.input_type.max, net.input_type.min
    _check(net, x, seed)
