"""The ASIC Verilog (technology-independent, ROMs as logic, no initial values) under Verilator (cocotb) against the
golden model, with stalls, from random power-up contents of every register."""

import random
import re

import numpy as np
import pytest

from hwnet import asic, compiler, golden
from hwnet.flow import TOP_NAME
from hwnet.gateware.testing import random_cnn, random_inputs, random_network
from hwnet.sim import StreamFormat, run_stream

pytestmark = pytest.mark.rtl

# A register declaration as yosys writes it: ``reg [8:0] \s2_fifo.queue.storage[0] ;``, ``reg o__valid;``
_REG_RE = re.compile(r"^(\s*reg\s+(?:\[(\d+):(\d+)\]\s+)?(?:\\\S+ |[A-Za-z_][\w$]*))\s*;$", re.MULTILINE)


def _random_power_up(verilog, seed):
    """``verilog`` with a random initial value on every register, as an ASIC's flip-flops come up; returns it and
    the number of registers."""
    rng = random.Random(seed)

    def init(m):
        bits = abs(int(m.group(2)) - int(m.group(3))) + 1 if m.group(2) else 1
        return f"{m.group(1)} = {bits}'h{rng.getrandbits(bits):x};"

    return _REG_RE.subn(init, verilog)


def _network(kind, rng):
    if kind == "cnn":
        return random_cnn(rng, max_cycles=16)
    # ternary weights on uint3 inputs (add/subtract/skip), a uint2 hidden layer, int3 weights (bit planes) last
    return random_network(rng, input_size=12, hidden=[8], outputs=4, input_type="uint3", binarize_input=False,
                          layers=[{"weight_type": "ternary", "out_type": "uint2"}, {"weight_type": "int3"}],
                          max_cycles=16)


@pytest.mark.parametrize("kind, seed", [("mlp", 41), ("cnn", 22)])
def test_asic_verilog_bit_exact_with_stalls_from_any_power_up_state(kind, seed):
    rng = np.random.default_rng(seed)
    net = _network(kind, rng)
    plan = compiler.plan(net)
    x = random_inputs(rng, net, 40)
    expected = golden.execute(net, x)
    text = asic.asic_verilog(plan, top=TOP_NAME)
    # every register starts from garbage (Verilator would start them at zero): the reset and the data flow alone
    # must bring the design to a correct state
    verilog, registers = _random_power_up(text, seed)
    assert registers > 10 and "initial" not in text
    for stall_in, stall_out in ((0.0, 0.0), (0.5, 0.5)):
        res = run_stream(verilog, StreamFormat.from_plan(plan), x, top=TOP_NAME, stall_in=stall_in,
                         stall_out=stall_out, seed=seed, cycles_hint=plan.cycles_per_inference)
        np.testing.assert_array_equal(res.outputs, expected, err_msg=f"stalls {stall_in}/{stall_out}")
        if stall_in == stall_out == 0.0:
            assert res.interval == plan.cycles_per_inference

