"""Every training method end to end on digits: train briefly, lower, and the integer model equals the torch
model in eval mode on every test sample, every layer (compared as integers)."""

import numpy as np
import pytest
import torch

from hwnet import golden
from hwnet.errors import HwnetError
from hwnet.train.lower import check_lowering, lower
from hwnet.train.methods import METHODS, resolve_options, train
from hwnet.train.qnet import CodebookWeights, QuantNet
from hwnet.train.trainer import load_checkpoint, predict, save_checkpoint

# Short runs: enough for the quantizers, batch norms and codebooks to leave their initial state. Stochastic
# binary weights start as coin flips and need more steps to pass the sanity bar below.
BRIEF = {"hidden": (32, 24), "epochs": 4, "batch_size": 64}
BRIEF_EPOCHS = {"binaryconnect": 12}
# Methods that need convolutional layers (Shift Attention) get one small conv layer in front of the dense ones.
BRIEF_CONV = [{"channels": 8, "kernel": 3, "stride": 2, "padding": 1}]


@pytest.fixture(scope="module")
def trained(digits):
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            conv = BRIEF_CONV if METHODS[name].needs_conv else None
            cache[name] = train(digits, name, seed=1, conv=conv, **{**BRIEF, "epochs": BRIEF_EPOCHS.get(name, 4)})
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(METHODS))
def test_lowering_is_exact_on_the_whole_test_split(digits, trained, name):
    model, history, results = trained(name)
    assert not model.training
    network = lower(model, name=name.replace("+", "p"))
    assert check_lowering(model, network, digits.test_x) == 0
    assert check_lowering(model, network, digits.train_x) == 0
    # worst-case inputs: all pixels off, all on, and the largest legal value of the input type
    t = network.input_type
    corners = np.array([[0] * 64, [digits.input_max] * 64, [t.max] * 64, np.arange(64) % (t.max + 1)])
    assert check_lowering(model, network, corners) == 0
    out = golden.execute(network, digits.test_x)
    if METHODS[name].task == "classify":
        assert network.output_size == 10
        np.testing.assert_array_equal(golden.classify(out), predict(model, digits.test_x))
        accuracy = float(np.mean(golden.classify(out) == digits.test_y))
        assert accuracy == results["test_accuracy"]
        assert accuracy > 0.5, f"{name}: {accuracy:.3f} after a brief run"
    else:
        assert network.output_size == 64
        assert results["test_mse"] < 0.07  # always answering the training mean gives 0.074 on digits
        # the reconstruction from the integer outputs is the torch model's, bit for bit
        with torch.no_grad():
            assert torch.equal(model.output(out), model(torch.from_numpy(digits.test_x)))
    assert len(history) >= BRIEF["epochs"]


@pytest.mark.parametrize("name", [n for n in METHODS if n != "binarynet"])
def test_checkpoint_round_trip_gives_the_same_integer_network(tmp_path, digits, trained, name):
    model, _, _ = trained(name)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, meta={"method": name})
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, QuantNet) and meta == {"method": name}
    a = lower(model, name="a")
    b = lower(loaded, name="a")
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.thresholds if la.thresholds is not None else 0,
                                      lb.thresholds if lb.thresholds is not None else 0)
        if hasattr(la, "weights"):
            np.testing.assert_array_equal(la.weights, lb.weights)
    np.testing.assert_array_equal(loaded.integer_trace(digits.test_x)[-1], model.integer_trace(digits.test_x)[-1])


def test_method_hardware_types(trained):
    """What each method lowers to: the weight and activation types the papers prescribe."""
    def types(name):
        net = lower(trained(name)[0], name="n")
        return [(str(getattr(layer, "weight_type", "-")), str(layer.out_type)) for layer in net.layers]
    assert types("binaryconnect")[0] == ("bipolar", "uint2")       # raw pixels in, k-bit activations
    assert types("qnn")[0] == ("int2", "uint2")
    assert types("qnn-log")[0] == ("pot3", "uint2")
    assert types("fewmult")[0] == ("ternary", "uint2")
    assert types("hwgq")[0] == ("bipolar", "uint2")
    assert types("dfp")[0] == ("int8", "uint7")                    # 8-bit fixed point after ReLU
    assert [t[1] for t in types("bnn+")[:3]] == ["bipolar"] * 3
    ffn = types("ffn")  # per layer: a raw ternary Y^T, then X diag(d) as power-of-two weights
    assert [t[0] for t in ffn] == ["ternary", "pot4", "ternary", "pot4", "ternary", "pot4"]
    assert [t[1] for t in ffn][1::2] == ["uint2", "uint2", ffn[-1][1]] and ffn[0][1].startswith("int")
    lut = lower(trained("lutnet")[0], name="n")
    assert [str(layer.out_type) for layer in lut.layers[:3]] == ["uint3", "int3", "int3"]
    assert all(layer.products is not None for layer in lut.dense_layers())


def test_lutnet_weights_are_exactly_the_codebook(trained):
    model, _, _ = trained("lutnet")
    for linear in list(model.hidden_linear) + [model.final]:
        q = linear.quantizer
        assert isinstance(q, CodebookWeights)
        w = linear.weight.detach()
        assert torch.all(torch.isin(w, q.centers))
        assert len(torch.unique(q.centers)) <= q.clusters


def test_binaryconnect_reports_real_weight_accuracy(trained):
    _, _, results = trained("binaryconnect")
    assert 0.0 <= results["real_weight_test_accuracy"] <= 1.0
    assert results["real_weight_test_accuracy"] > 0.3


def test_bitpruning_learns_shorter_bitlengths(digits):
    # a strong bit cost drives every bitlength down from 8; a tiny one leaves them high
    strong, _, r_strong = train(digits, "bitpruning", hidden=(16,), epochs=10, seed=0, options={"reg": 2.0})
    weak, _, r_weak = train(digits, "bitpruning", hidden=(16,), epochs=10, seed=0, options={"reg": 1e-6})
    def total_bits(r):
        return sum(int(t[4:] if t.startswith("uint") else t[3:]) for pair in r["bitlengths"] for t in pair if t)
    assert total_bits(r_strong) < total_bits(r_weak)
    assert r_strong["lut4_estimate_at_128_cycles"] < r_weak["lut4_estimate_at_128_cycles"]
    assert check_lowering(strong, lower(strong, name="s"), digits.test_x) == 0


def test_dynamic_fixed_point_moves_its_integer_bits(trained):
    model, _, _ = trained("dfp")
    # activations start at 1 integer bit and gradients at -4; the overflow-rate rule moves them every step
    # (the rule itself is tested in test_qnet.py), so after a run they are not all where they started
    moved = [(int(a.integer_bits), int(a.gradient_integer_bits)) != (1, -4) for a in model.hidden_act]
    assert any(moved)
    for q in model.hidden_linear:  # and the codes use the grid the final integer bits define
        step = 2.0 ** (int(q.quantizer.integer_bits) - 7)
        codes = q.quantizer.codes(q.weight)
        expected = np.clip(np.rint(q.weight.detach().numpy() / step), -127, 127)
        np.testing.assert_array_equal(codes, expected)


def test_unknown_method_and_bad_options(digits):
    with pytest.raises(HwnetError, match="unknown method 'nope'"):
        train(digits, "nope")
    with pytest.raises(HwnetError, match="has no option 'bogus'"):
        resolve_options(METHODS["hwgq"], {"bogus": 1})
    with pytest.raises(HwnetError, match="must be true or false"):
        resolve_options(METHODS["binaryconnect"], {"stochastic": 3})
    with pytest.raises(HwnetError, match="must be a number"):
        resolve_options(METHODS["qnn"], {"weight_bits": "four"})
    with pytest.raises(HwnetError, match="weight bits must be an integer between 2 and 16"):
        train(digits, "qnn", hidden=(8,), epochs=1, options={"weight_bits": 1})
    with pytest.raises(HwnetError, match="HWGQ bits must be an integer between 1 and 4"):
        train(digits, "hwgq", hidden=(8,), epochs=1, options={"act_bits": 5})


def test_ffn_starts_from_the_decomposition(digits):
    """Before fine-tuning, the factorized layers hold exactly the SDD factors of the trained real weights."""
    from hwnet.train.methods import _ffn_base, _ffn_finish
    from hwnet.train.sdd import sdd
    torch.manual_seed(0)
    options = resolve_options(METHODS["ffn"], {"rank": 0.5})
    base = _ffn_base(digits, (16,), options)
    seen = {}

    def refit(model, epochs):
        seen["model"] = model
        seen["epochs"] = epochs
    refit.epochs = 4
    factored = _ffn_finish(base, digits, options, refit)
    assert seen["model"] is factored and seen["epochs"] == 2
    assert factored.factor["ranks"] == [8, 5]
    for source, target in zip([base.hidden_linear[0], base.final], [factored.hidden_linear[0], factored.final]):
        X, d, Y = sdd(source.weight.detach().double().numpy(), target.rank)
        np.testing.assert_array_equal(target.inner.quantizer.codes(target.inner.weight), Y.T)
        e = np.round(np.log2(d))
        e = np.clip(e, e.max() - 6, e.max())  # pot4: exponents 0..6 below the largest
        np.testing.assert_array_equal(target.quantizer.codes(target.outer.weight), X * 2.0 ** (e - e.max() + 6))
    net = lower(factored, name="f")
    assert check_lowering(factored, net, digits.test_x) == 0
