# amaranth: UnusedElaboratable=no
"""Auto-folding: the fastest design within a budget, by the resource model. Never over budget, monotone in the
budget, a throughput goal met at the least cost, and one clear error when nothing fits."""

import numpy as np
import pytest

from hwnet import compiler, ir
from hwnet.autofold import BOARDS, Budget, auto_fold, parse_budget
from hwnet.errors import HwnetError
from hwnet.estimate import estimate_design
from hwnet.gateware.testing import random_cnn, random_layer_specs, random_network


def _mlp(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.choice([16, 32, 48, 64])) for _ in range(int(rng.integers(1, 3)))]
    specs = random_layer_specs(rng, len(sizes) + 1, logic_ok=[False] * (len(sizes) + 1))
    for spec in specs:
        spec.pop("bit_serial", None)
    net = random_network(rng, input_size=int(rng.choice([64, 96, 128])), hidden=sizes, outputs=10,
                         input_type="uint4", layers=specs)
    return net.replace_layers([l.replace(pe=None, simd=None) if isinstance(l, ir.Dense) else l for l in net.layers])


def _unfold(net):
    return net.replace_layers([l.with_folding(None, None) if isinstance(l, (ir.Dense, ir.Conv2d)) else l
                               for l in net.layers])


def _fits(choice):
    total, _ = estimate_design(choice.plan, choice.budget.family)
    assert total == choice.resources
    assert not choice.budget.over(total), choice.report
    return total


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_never_over_budget_and_monotone_in_it(seed, family):
    net = _mlp(seed)
    rng = np.random.default_rng(seed + 50)
    cycles = []
    for lut4 in sorted(int(v) for v in rng.integers(600, 6000, size=4)):
        budget = Budget(family, lut4, int(rng.integers(2, 12)) if not cycles else 40)
        try:
            choice = auto_fold(net, budget)
        except HwnetError as exc:
            assert str(exc).startswith("nothing fits") and not cycles, exc
            continue
        _fits(choice)
        assert choice.plan.cycles_per_inference == compiler.plan(choice.network).cycles_per_inference
        cycles.append(choice.plan.cycles_per_inference)
    assert cycles == sorted(cycles, reverse=True)  # more budget, never slower


@pytest.mark.parametrize("seed", range(3))
def test_monotone_in_each_resource(seed):
    net = _mlp(seed + 10)
    base = Budget("ice40", 2500, 6)
    try:
        slow = auto_fold(net, base).plan.cycles_per_inference
    except HwnetError:
        slow = None
    for more in (Budget("ice40", 5000, 6), Budget("ice40", 2500, 20), Budget("ice40", 5000, 20)):
        fast = auto_fold(net, more).plan.cycles_per_inference
        assert slow is None or fast <= slow


def test_a_throughput_goal_is_met_at_the_least_cost():
    net = _mlp(3)
    budget = BOARDS["ecp5-25f"]
    fastest = auto_fold(net, budget)
    goal = fastest.plan.cycles_per_inference * 4
    cheap = auto_fold(net, budget, target_cycles=goal)
    _fits(cheap)
    assert fastest.plan.cycles_per_inference <= cheap.plan.cycles_per_inference <= goal
    assert cheap.resources.lut4_equivalent < fastest.resources.lut4_equivalent


def test_cnn_is_folded_within_budget():
    rng = np.random.default_rng(4300)
    net = _unfold(random_cnn(rng))
    choice = auto_fold(net, Budget("ecp5", 6000, 20))
    _fits(choice)
    assert all(l.pe and l.simd for l in choice.network.layers if isinstance(l, (ir.Dense, ir.Conv2d)))


def test_report_says_what_and_why():
    choice = auto_fold(_mlp(1), Budget("ice40", 3000, 8, name="small"))
    text = "\n".join(choice.report)
    assert text.startswith("budget: small (ice40: 3000 LUT4 (filled to 85%), 8 block RAMs)")
    assert "cycles per inference" in text and "limited by: " in text
    for layer in choice.network.dense_layers():
        assert f"  {layer.name}: pe={layer.pe} simd={layer.simd}" in text


def test_nothing_fits_is_one_line():
    with pytest.raises(HwnetError, match=r"^nothing fits tiny \(ice40: 50 LUT4 \(filled to 85%\), 0 block RAMs\); "
                                         r"the most folded design needs about \d+ LUT4, ") as exc:
        auto_fold(_mlp(2), Budget("ice40", 50, 0, name="tiny"))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("text,match", [
    ("lut4=5000", r"the budget needs ebr"),
    ("lut4=5000,ebr=x", r"'x' is not a number"),
    ("luts=5000,ebr=3", r"must be KEY=VALUE with KEY one of lut4, ebr, spram, ff, fill"),
    ("lut4=5000,ebr=3,spram=2", r"budget spram must be 0 or 4"),
])
def test_bad_budgets(text, match):
    with pytest.raises(HwnetError, match=match):
        parse_budget(text, "ice40")
    assert parse_budget("lut4=5000,ebr=30,spram=4", "ice40") == Budget("ice40", 5000, 30, 4)


def test_splits_a_layer_between_spram_and_block_ram():
    # 256-128-64-10 binarized: with 10 block RAMs the fastest design streams one PE of fc0 from SPRAM and keeps
    # the other in block RAM; fewer block RAMs stream more, and are never faster
    rng = np.random.default_rng(12)
    layers, n = [], 256
    for k, h in enumerate((128, 64)):
        layers.append(ir.Dense(weights=rng.choice([-1, 1], size=(h, n)), thresholds=rng.integers(-4, 5, size=(h, 1)),
                               out_type="bipolar", name=f"fc{k}"))
        n = h
    net = ir.Network(input_type="bipolar", input_size=256,
                     layers=layers + [ir.Dense(weights=rng.choice([-1, 1], size=(10, n)), name="out")])
    cycles = []
    for ebr in (4, 6, 10):
        choice = auto_fold(net, Budget("ice40", 3000, ebr, 4))
        _fits(choice)
        assert choice.plan.cycles_per_inference == compiler.plan(choice.network).cycles_per_inference
        cycles.append(choice.plan.cycles_per_inference)
    assert cycles == sorted(cycles, reverse=True)
    fc0 = choice.plan.stages[0]
    assert 0 < fc0.spram_pes < fc0.pe and choice.network.layers[0].spram_pes == fc0.spram_pes
    assert choice.plan.spram_words == fc0.depth == choice.plan.cycles_per_inference < cycles[1]
    assert f"  fc0: pe={fc0.pe} simd={fc0.simd}, {fc0.cycles} cycles, weights in SPRAM (PEs 0..{fc0.spram_pes - 1}) " \
           f"and block RAM (PEs {fc0.spram_pes}..{fc0.pe - 1})" in choice.report
