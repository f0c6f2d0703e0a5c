"""Lowering: every threshold is checked against the torch model on every value it can see.

Expected values come from the torch model (its eval-mode forward) and from the integer contract's semantics
(``y = +1 iff acc >= T``), evaluated here independently of :mod:`hwnet.train.lower`; the network itself is run
by :mod:`hwnet.golden`.
"""

import numpy as np
import pytest
import torch

from hwnet import golden, ir
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.train.binarynet import BinarizedMLP
from hwnet.train.data import load_dataset, mnist_available
from hwnet.train.lower import check_lowering, lower, step_threshold
from hwnet.train.trainer import evaluate, train_binarynet


def _adversarial_model(seed, input_size=23, hidden=(40, 17), classes=5, input_max=16):
    """Random BN parameters covering every corner: negative, zero and tiny gamma, tiny and huge variance,
    means far outside [-N, N] (thresholds outside the reachable range), exact ties on reachable values."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = BinarizedMLP(input_size, hidden, classes, input_max)
    with torch.no_grad():
        for lin, bn in zip(model.hidden_linear, model.hidden_bn):
            n, c = lin.in_features, lin.out_features
            gamma = rng.normal(0, 1.5, c)
            beta = rng.normal(0, 1, c)
            mean = rng.uniform(-n - 3, n + 3, c)
            var = 10.0 ** rng.uniform(-3, 3, c)
            kinds = rng.integers(0, 9, c)
            gamma[kinds == 0] = 0.0                                   # constant channel: sign(beta)
            gamma[kinds == 1] = rng.choice([-1, 1]) * 1e-30           # tiny gamma: nearly constant
            var[kinds == 2] = 1e-12                                   # tiny variance: steep step
            var[kinds == 3] = 1e12                                    # huge variance: flat, beta decides
            mean[kinds == 4] = rng.choice([-1, 1], (kinds == 4).sum()) * (3 * n + 7)  # step far outside [-N, N]
            tie = kinds == 5                                          # y == 0 exactly on a reachable acc
            mean[tie] = rng.choice(np.arange(-n, n + 1, 2), tie.sum())
            beta[tie] = 0.0
            gamma[kinds == 6] = -np.abs(gamma[kinds == 6])            # surely negative
            bn.weight.copy_(torch.from_numpy(gamma).float())
            bn.bias.copy_(torch.from_numpy(beta).float())
            bn.running_mean.copy_(torch.from_numpy(mean).float())
            bn.running_var.copy_(torch.from_numpy(var).float())
    return model.eval()


def _torch_hidden_outputs(model, index, accs):
    """The torch model's own eval-mode ``sign(bn(acc))`` for every channel, shape (len(accs), C)."""
    c = model.hidden_linear[index].out_features
    grid = torch.from_numpy(accs.astype(np.float32))[:, None].expand(-1, c).contiguous()
    with torch.no_grad():
        y = model.hidden_bn[index](grid)
    return np.where(y.numpy() >= 0, 1, -1)


@pytest.mark.parametrize("seed", range(6))
def test_bn_folding_on_every_accumulator_value(seed):
    model = _adversarial_model(seed)
    network = lower(model, name="adv")
    dense = network.dense_layers()
    for i, lin in enumerate(model.hidden_linear):
        n = lin.in_features
        accs = np.arange(-n, n + 1, 2)
        expected = _torch_hidden_outputs(model, i, accs)
        w_sign = np.where(lin.weight.detach().numpy() >= 0, 1, -1)
        lowered = dense[i]
        # every lowered row is sign(W) or its negation
        same = np.all(lowered.weights == w_sign, axis=1)
        negated = np.all(lowered.weights == -w_sign, axis=1)
        assert np.all(same | negated)
        s = np.where(same, 1, -1)
        # the contract: output +1 iff (s * acc) >= T, for every reachable acc
        got = np.where(s[None, :] * accs[:, None] >= lowered.thresholds[:, 0][None, :], 1, -1)
        np.testing.assert_array_equal(got, expected)
        # negation happens exactly where the torch output falls with acc
        falls = np.any(np.diff(expected, axis=0) < 0, axis=0)
        np.testing.assert_array_equal(negated & ~same, falls)
        # constant channels get -N (always +1) or N + 1 (never)
        const = np.all(expected == expected[:1], axis=0)
        for ch in np.nonzero(const)[0]:
            assert lowered.thresholds[ch, 0] == (-n if expected[0, ch] == 1 else n + 1)
            assert same[ch]


@pytest.mark.parametrize("seed", range(4))
def test_random_inputs_integer_model_equals_torch_model(seed):
    model = _adversarial_model(100 + seed)
    network = lower(model, name="adv")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 32, size=(400, 23))  # every legal uint5 value, also above input_max
    expected = model.integer_trace(x)
    got = golden.execute(network, x, trace=True)
    assert len(expected) == len(got) == 4
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        np.testing.assert_array_equal(e, g)
    assert check_lowering(model, network, x) == 0


def test_exact_ties_hand_derived():
    # N = 8 inputs; y = gamma * (acc - mean) / sqrt(var + eps) + 0 with mean on a reachable value
    model = BinarizedMLP(8, (4,), 2, input_max=16)
    with torch.no_grad():
        model.hidden_bn[0].weight.copy_(torch.tensor([1.0, -1.0, 0.0, 0.0]))
        model.hidden_bn[0].bias.copy_(torch.tensor([0.0, 0.0, 0.5, -0.5]))
        model.hidden_bn[0].running_mean.copy_(torch.tensor([2.0, 2.0, 0.0, 0.0]))
        model.hidden_bn[0].running_var.copy_(torch.ones(4))
    network = lower(model.eval(), name="ties")
    layer = network.layers[1]
    w = np.where(model.hidden_linear[0].weight.detach().numpy() >= 0, 1, -1)
    # gamma > 0: +1 iff acc >= 2 (y = 0 at acc = 2 counts as +1)
    assert layer.thresholds[0, 0] == 2 and np.array_equal(layer.weights[0], w[0])
    # gamma < 0: +1 iff acc <= 2 (y = -0.0 at acc = 2 counts as +1) iff -acc >= -2: row negated, T = -2
    assert layer.thresholds[1, 0] == -2 and np.array_equal(layer.weights[1], -w[1])
    # gamma = 0: constant sign(beta): always (-N) and never (N + 1)
    assert layer.thresholds[2, 0] == -8 and layer.thresholds[3, 0] == 9


@pytest.mark.parametrize("input_max, type_name, threshold", [(16, "uint5", 8), (255, "uint8", 128),
                                                             (1, "uint1", 1), (15, "uint4", 8)])
def test_input_threshold_hand_derived(input_max, type_name, threshold):
    model = BinarizedMLP(3, (2,), 2, input_max=input_max).eval()
    network = lower(model, name="in")
    assert network.input_type == parse_type(type_name)
    assert isinstance(network.layers[0], ir.MultiThreshold)
    assert network.layers[0].thresholds.tolist() == [[threshold]]
    values = parse_type(type_name).values()
    x = np.stack([values, values, values], axis=1)
    expected = np.where(values.astype(np.float64) / input_max >= 0.5, 1, -1)
    np.testing.assert_array_equal(golden.execute(network, x, trace=True)[0][:, 0], expected)
    np.testing.assert_array_equal(model.integer_trace(x)[0][:, 0], expected)


def test_wider_input_type():
    model = BinarizedMLP(3, (2,), 2, input_max=16).eval()
    network = lower(model, name="wide", input_type="uint8")
    assert network.input_type == parse_type("uint8")
    x = np.arange(256)[:, None].repeat(3, axis=1)
    assert check_lowering(model, network, x) == 0
    with pytest.raises(HwnetError, match="cannot carry raw inputs 0 .. 16"):
        lower(model, name="narrow", input_type="uint4")
    with pytest.raises(HwnetError, match="cannot carry"):
        lower(model, name="signed", input_type="int8")


def test_step_threshold():
    values = np.array([-3, -1, 1, 3])
    assert step_threshold([-1, -1, 1, 1], values, "x") == 1
    assert step_threshold([1, 1, 1, 1], values, "x") == -3
    assert step_threshold([-1, -1, -1, -1], values, "x") == 4
    with pytest.raises(HwnetError, match="x: the activation is not a monotone step"):
        step_threshold([-1, 1, -1, 1], values, "x")


def test_non_monotone_activation_is_refused(monkeypatch):
    model = BinarizedMLP(6, (3,), 2, input_max=16).eval()

    def wavy(index, acc):
        return torch.where(torch.cos(acc) >= 0, 1.0, -1.0)

    monkeypatch.setattr(model, "hidden_activation", wavy)
    with pytest.raises(HwnetError, match="hidden layer 1 channel 0: .* not monotone"):
        lower(model, name="bad")


def test_non_monotone_input_binarization_is_refused(monkeypatch):
    model = BinarizedMLP(6, (3,), 2, input_max=16).eval()
    monkeypatch.setattr(model, "binarize_input", lambda x: torch.where(x.float() % 2 == 0, 1.0, -1.0))
    with pytest.raises(HwnetError, match="input binarization"):
        lower(model, name="bad")


@pytest.mark.parametrize("param", ["weight", "bias", "running_mean", "running_var"])
def test_non_finite_batch_norm_is_refused(param):
    model = BinarizedMLP(6, (3,), 2, input_max=16).eval()
    with torch.no_grad():
        getattr(model.hidden_bn[0], param)[1] = float("nan")
    with pytest.raises(HwnetError, match=f"batch norm {param} holds NaN"):
        lower(model, name="bad")


def test_metadata_and_structure():
    model = BinarizedMLP(10, (6, 4), 3, input_max=16)
    model.train()
    network = lower(model, name="meta", metadata={"dataset": "digits", "test_accuracy": 0.5})
    assert model.training  # restored
    assert network.name == "meta"
    assert network.metadata == {"method": "binarynet", "hidden": [6, 4], "input_max": 16, "classes": 3,
                                "dataset": "digits", "test_accuracy": 0.5}
    assert [type(layer).__name__ for layer in network.layers] == ["MultiThreshold", "Dense", "Dense", "Dense"]
    assert network.layers[-1].thresholds is None
    assert all(layer.weight_type == parse_type("bipolar") for layer in network.dense_layers())
    assert network.output_size == 3
    with pytest.raises(HwnetError, match="JSON-serializable"):
        lower(model, name="meta", metadata={"bad": object()})
    with pytest.raises(HwnetError, match="can only lower a BinarizedMLP"):
        lower(torch.nn.Linear(2, 2), name="x")


def test_check_lowering_detects_a_wrong_network():
    model = _adversarial_model(7)
    network = lower(model, name="adv")
    x = np.random.default_rng(7).integers(0, 17, size=(500, 23))
    assert check_lowering(model, network, x) == 0
    layers = list(network.layers)
    broken = layers[1].thresholds.copy()
    # move every threshold of layer 1 by one step of the accumulator: somewhere an output must change
    broken[:, 0] += 2
    layers[1] = ir.Dense(weights=layers[1].weights, thresholds=broken, out_type="bipolar", name="fc1")
    assert check_lowering(model, network.replace_layers(layers), x) > 0
    layers = list(network.layers)
    w = layers[-1].weights.copy()
    w[0, 0] = -w[0, 0]
    layers[-1] = ir.Dense(weights=w, name=layers[-1].name)
    assert check_lowering(model, network.replace_layers(layers), x) == len(x)  # class 0's acc moves by ±2
    with pytest.raises(HwnetError, match="IR layers"):
        check_lowering(model, network.replace_layers(network.layers[:-1]), x)


def test_trained_digits_lowering_is_exact(tmp_path):
    ds = load_dataset("digits")
    model, history = train_binarynet(ds, hidden=(64, 32), epochs=4, seed=0)
    network = lower(model, name="digits", metadata={"dataset": "digits",
                                                      "test_accuracy": history[-1]["test_accuracy"]})
    assert network.input_type == parse_type(ds.input_type)
    assert check_lowering(model, network, ds.test_x) == 0
    assert check_lowering(model, network, ds.train_x) == 0
    # classes by the golden model (argmax, ties to the lowest index) == the torch model's accuracy
    golden_acc = float(np.mean(golden.classify(golden.execute(network, ds.test_x)) == ds.test_y))
    assert golden_acc == evaluate(model, ds.test_x, ds.test_y) == history[-1]["test_accuracy"]
    assert golden_acc > 0.6
    # the file format carries it unchanged
    path = tmp_path / "digits.npz"
    ir.save(network, path)
    assert check_lowering(model, ir.load(path), ds.test_x) == 0


@pytest.mark.mnist
@pytest.mark.skipif(not mnist_available(), reason="MNIST IDX files not present (../shared/data/mnist)")
def test_trained_mnist_tfc_lowering_is_exact():
    ds = load_dataset("mnist")
    model, history = train_binarynet(ds, hidden=(64, 64, 64), epochs=1, seed=0)
    network = lower(model, name="tfc")
    assert network.input_type == parse_type("uint8")
    assert [layer.out_size for layer in network.layers] == [784, 64, 64, 64, 10]
    assert check_lowering(model, network, ds.test_x) == 0
    golden_acc = float(np.mean(golden.classify(golden.execute(network, ds.test_x)) == ds.test_y))
    assert golden_acc == history[-1]["test_accuracy"]
