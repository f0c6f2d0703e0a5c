# amaranth: UnusedElaboratable=no

import dataclasses
import random
import zlib

import numpy as np
import pytest

from hwnet import compiler, golden
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.gateware import ThresholdSearch, ThresholdUnit
from hwnet.gateware.testing import assert_equal_vectors, run_simulation, run_vectors, simulate_stream
from hwnet.ir import MultiThreshold, Network


def _network(rng, in_type, out_type, size, thresholds=None):
    in_type, out_type = parse_type(in_type), parse_type(out_type)
    if thresholds is None:
        levels = out_type.num_values - 1
        thresholds = np.sort(rng.integers(in_type.min - 3, in_type.max + 4, size=(1, levels)), axis=1)
    layer = MultiThreshold(thresholds=np.asarray(thresholds).reshape(1, -1), out_type=out_type, name="quant")
    return Network(input_type=in_type, input_size=size, layers=[layer])


def _stage(net, lanes):
    return dataclasses.replace(compiler.plan(net).stages[0], lanes=lanes)


def _inputs(rng, net, count):
    t = net.input_type
    return rng.integers(t.min, t.max + 1, size=(count, net.input_size))


def _run(stage, x, **kwargs):
    return run_vectors(ThresholdUnit(stage=stage), x, in_type=stage.in_type, in_lanes=stage.lanes,
                       out_type=stage.out_type, out_lanes=stage.lanes, out_size=stage.size, **kwargs)


@pytest.mark.parametrize("in_type", ["uint1", "uint4", "uint8", "int2", "int4", "int8"])
@pytest.mark.parametrize("out_type", ["bipolar", "uint2", "int2", "ternary", "uint3"])
@pytest.mark.parametrize("lanes", [1, 4])
def test_matches_golden(in_type, out_type, lanes):
    seed = zlib.crc32(f"{in_type} {out_type} {lanes}".encode())
    rng = np.random.default_rng(seed)
    net = _network(rng, in_type, out_type, 8)
    x = _inputs(rng, net, 6)
    got, _, _ = _run(_stage(net, lanes), x, rng=seed, valid_prob=0.7, ready_prob=0.6)
    assert_equal_vectors(got, golden.execute(net, x))


@pytest.mark.parametrize("in_type", ["uint4", "int4"])
def test_thresholds_outside_the_input_range(in_type):
    t = parse_type(in_type)
    rng = np.random.default_rng(3)
    cases = [[t.min - 5], [t.min], [t.max], [t.max + 1], [t.max + 9]]
    for thresholds in cases:
        net = _network(rng, in_type, "bipolar", 32, thresholds=thresholds)
        x = np.tile(t.values(), 2)[None, :]  # every input value, twice
        got, _, _ = _run(_stage(net, 2), x)
        assert_equal_vectors(got, golden.execute(net, x), f"thresholds {thresholds}")


@pytest.mark.parametrize("seed", range(3))
def test_last_passes_through_one_beat_per_beat(seed):
    rng = np.random.default_rng(seed)
    net = _network(rng, "uint4", "bipolar", 12)
    stage = _stage(net, 3)
    prng = random.Random(seed)
    beats = [(prng.getrandbits(12), prng.getrandbits(1)) for _ in range(40)]
    source, sink = simulate_stream(ThresholdUnit(stage=stage), beats, len(beats), rng=seed, valid_prob=0.6,
                                   ready_prob=0.5)
    assert [last for _, last in sink.beats] == [last for _, last in beats]
    x = np.array([[(d >> (4 * j)) & 15 for j in range(3)] for d, _ in beats]).reshape(-1, 12)
    expected = golden.execute(net, x).reshape(-1, 3)
    got = np.array([[1 if (d >> j) & 1 else -1 for j in range(3)] for d, _ in sink.beats])
    assert_equal_vectors(got, expected)


def test_full_rate_and_latency():
    rng = np.random.default_rng(0)
    net = _network(rng, "uint8", "bipolar", 16)
    x = _inputs(rng, net, 4)
    got, source, sink = _run(_stage(net, 4), x)
    assert_equal_vectors(got, golden.execute(net, x))
    assert source.cycles == list(range(source.cycles[0], source.cycles[0] + 16))
    assert sink.cycles == [c + 1 for c in source.cycles]


def test_rejects_bad_stages():
    rng = np.random.default_rng(0)
    stage = _stage(_network(rng, "uint4", "uint2", 8), 2)
    with pytest.raises(HwnetError, match=r"^ThresholdUnit needs a ThresholdStage from hwnet\.compiler\.plan, "
                                         r"not str$"):
        ThresholdUnit(stage="stage")
    with pytest.raises(HwnetError, match=r"^stage 'quant': uint2 output needs 3 threshold\(s\), got 1$"):
        ThresholdUnit(stage=dataclasses.replace(stage, thresholds=(1,)))
    with pytest.raises(HwnetError, match=r"^stage 'quant': a threshold unit takes uint<k>/int<k> inputs, "
                                         r"not bipolar$"):
        ThresholdUnit(stage=dataclasses.replace(stage, in_type=parse_type("bipolar")))


def test_ports():
    rng = np.random.default_rng(0)
    stage = _stage(_network(rng, "int8", "uint2", 8), 4)
    dut = ThresholdUnit(stage=stage)
    assert dut.stage is stage
    assert len(dut.i.payload.data) == 32
    assert len(dut.o.payload.data) == 8


def _search(thresholds, width, search, rows_values):
    """Drive a ThresholdSearch with (row, value) pairs, one per cycle, and collect y at its latency."""
    dut = ThresholdSearch(thresholds=thresholds, width=width, search=search)
    got = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        pending = []
        for cycle in range(len(rows_values) + dut.latency + 2):
            if cycle < len(rows_values):
                ctx.set(dut.row, rows_values[cycle][0])  # the row goes one cycle ahead of its value
            if 1 <= cycle <= len(rows_values):
                ctx.set(dut.value, rows_values[cycle - 1][1])
                pending.append(cycle + dut.latency)
            await ctx.delay(1e-9)
            if pending and pending[0] == cycle:
                got.append(ctx.get(dut.y))
                pending.pop(0)
            await ctx.tick()

    run_simulation(dut, [bench], max_cycles=10 * len(rows_values) + 50)
    return got


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 7, 8, 15])
@pytest.mark.parametrize("search", ["parallel", "binary"])
def test_threshold_search_counts_thresholds_passed(levels, search):
    # y = sum_l [value >= T[row][l]] for every row and every value, including exact hits and both ends
    rng = np.random.default_rng(levels)
    width, rows = 6, 5
    t = np.sort(rng.integers(0, 1 << width, size=(rows, levels)), axis=1)
    t[0] = 0                       # always pass
    t[1] = (1 << width) - 1        # pass only at the top value
    pairs = [(r, int(v)) for r in range(rows) for v in list(t[r]) + list(t[r] - 1) + [0, (1 << width) - 1]
             if 0 <= v < (1 << width)]
    pairs += [(int(rng.integers(rows)), int(rng.integers(1 << width))) for _ in range(60)]
    got = _search(t.tolist(), width, search, pairs)
    expected = [int(np.sum(v >= t[r])) for r, v in pairs]
    assert got == expected


def test_threshold_search_rejects_bad_parameters():
    with pytest.raises(HwnetError, match=r"must ascend within 0 \.\. 15"):
        ThresholdSearch(thresholds=[[3, 1]], width=4, search="binary")
    with pytest.raises(HwnetError, match=r"must ascend within 0 \.\. 15"):
        ThresholdSearch(thresholds=[[3, 16]], width=4, search="binary")
    with pytest.raises(HwnetError, match=r"threshold search must be 'parallel' or 'binary', not 'linear'"):
        ThresholdSearch(thresholds=[[1]], width=4, search="linear")
    with pytest.raises(HwnetError, match=r"one or more rows of the same non-zero length"):
        ThresholdSearch(thresholds=[[1], [1, 2]], width=4, search="parallel")
