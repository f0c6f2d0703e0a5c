"""Shift Attention Layers (``hwnet train --method shift-attention --conv ...``): the quantizer's soft attention and
hard one-position-per-kernel codes, its gradients and temperature schedule; a digits CNN trained with it, lowered
exactly to ternary convolutions with one tap per (output, input) channel, round-tripped through a checkpoint; and
the refusals."""

import math

import numpy as np
import pytest
import torch

from hwnet import golden
from hwnet.cli import main
from hwnet.datatypes import TERNARY, parse_type
from hwnet.errors import HwnetError
from hwnet.train.lower import check_lowering, lower
from hwnet.train.methods import METHODS, reestimate_batchnorm, resolve_options, train
from hwnet.train.qnet import (WEIGHT_QUANTIZERS, BinaryWeights, QuantConv2d, QuantLinear, QuantNet,
                              ShiftAttentionWeights)
from hwnet.train.trainer import load_checkpoint, predict, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# `hwnet train --method shift-attention --conv 16c3p1,16c3p1,mp2 --hidden 32 --epochs 8`. Measured (seed 0, one
# torch thread, torch 2.13 CPU): 0.911 test accuracy; seeds 1, 2: 0.917, 0.894 (BinaryNet's CNN: 0.94).
CONV = [{"channels": 16, "kernel": 3, "padding": 1}, {"channels": 16, "kernel": 3, "padding": 1, "pool": 2}]
HIDDEN = (32,)
EPOCHS = 8
ACCURACY = 0.85


@pytest.fixture(scope="module")
def trained(digits):
    return train(digits, "shift-attention", conv=CONV, hidden=HIDDEN, epochs=EPOCHS, seed=0)


def _layer(kernel=(3, 3), channels=2, out_channels=3, tau=0.5, seed=0):
    torch.manual_seed(seed)
    q = ShiftAttentionWeights(tau=tau)
    layer = QuantConv2d((5, 5, channels), {"channels": out_channels, "kernel": list(kernel), "padding": 1}, q,
                        in_type=parse_type("uint3"), in_step=1 / 7)
    return layer, q


# --- the quantizer ----------------------------------------------------------------------------------------------

def test_registered_and_bound_by_the_conv_layer():
    assert WEIGHT_QUANTIZERS["shift-attention"] is ShiftAttentionWeights
    layer, q = _layer(kernel=(3, 2), channels=4, out_channels=5)
    assert q.kernel == (3, 2) and q.positions == 6 and q.channels == 4
    assert q.logits.shape == (5, 6, 4) and layer.weight.shape == (5, 6 * 4)
    assert q.weight_type == TERNARY
    assert dict(layer.named_parameters()).keys() == {"weight", "quantizer.logits"}
    assert "quantizer.tau" in layer.state_dict()
    assert torch.all((q.logits >= 0) & (q.logits < 1))  # the authors' uniform [0, 1) start


def test_soft_forward_is_sign_times_the_tempered_softmax_attention():
    layer, q = _layer(tau=0.3)
    layer.train()
    codes, scale = q.quantize(layer.weight)
    a = q.logits.detach().double()
    a = a / a.std(dim=1, keepdim=True)  # normalized over each kernel's positions
    attention = torch.softmax(a / 0.3, dim=1)
    torch.testing.assert_close(attention.float(), q.attention().detach())
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(3, 2, dtype=torch.float64))
    sign = torch.where(layer.weight.detach() >= 0, 1.0, -1.0)
    expected = sign.double() * attention.reshape(3, -1)  # (OC, KH*KW, C) flattens to the (ky, kx, ic) order
    torch.testing.assert_close(codes.detach().double(), expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(scale, torch.ones(3))
    # every kernel's codes: one sign per position, magnitudes summing to 1
    per_kernel = codes.detach().reshape(3, 9, 2).abs().sum(dim=1)
    torch.testing.assert_close(per_kernel, torch.ones(3, 2))
    # a lower temperature sharpens the attention towards the hard one-hot
    assert (q.attention(0.01).max(dim=1).values >= q.attention(1.0).max(dim=1).values).all()
    hard = q.mask()
    assert torch.equal(q.attention(1e-4).detach().round(), hard)


def test_hard_codes_keep_one_position_per_kernel_at_the_argmax():
    layer, q = _layer(channels=2, out_channels=3)
    with torch.no_grad():
        q.logits.copy_(torch.rand(3, 9, 2))
        q.logits[0, :, 0] = 0.5          # all tied: the lowest position, 0
        q.logits[1, :, 1] = 0.0
        q.logits[1, 4, 1] = q.logits[1, 7, 1] = 2.0   # tied between 4 and 7: 4
        layer.weight[0, 0] = 0.0         # sign(0) = +1
        layer.weight[0, 1] = -0.3
    codes = q.codes(layer.weight)
    assert codes.dtype == np.int64 and TERNARY.is_legal(codes)
    kernels = codes.reshape(3, 9, 2)
    assert np.array_equal(np.count_nonzero(kernels, axis=1), np.ones((3, 2)))
    kept = q.kept().numpy()
    assert kept[0, 0] == 0 and kept[1, 1] == 4
    np.testing.assert_array_equal(kept, np.argmax(q.logits.detach().numpy(), axis=1))
    np.testing.assert_array_equal(np.argmax(np.abs(kernels), axis=1), kept)
    sign = np.where(layer.weight.detach().numpy() >= 0, 1, -1).reshape(3, 9, 2)
    np.testing.assert_array_equal(kernels, sign * (np.arange(9)[None, :, None] == kept[:, None, :]))
    assert kernels[0, 0, 0] == 1 and kernels[0, 0, 1] in (-1, 0)
    # hard training (tau = 0) runs exactly the eval codes
    q.tau.fill_(0.0)
    layer.train()
    assert np.array_equal(q.quantize(layer.weight)[0].detach().numpy(), codes)
    # the eval layer computes the codes' integer accumulators, equal to the conv of the one kept tap per kernel
    layer.eval()
    x = torch.randint(0, 8, (2, 5, 5, 2)).float()
    acc = layer.accumulate(x)
    assert torch.equal(acc, layer.patches(x).double() @ torch.from_numpy(codes).double().T)


def test_backward_reaches_the_weights_and_the_attention_logits():
    layer, q = _layer(tau=0.5)
    layer.train()
    x = torch.randint(0, 8, (4, 5, 5, 2)).float()
    (layer(x) * torch.randn(4 * 25, 3)).sum().backward()
    assert layer.weight.grad is not None and q.logits.grad is not None
    assert torch.isfinite(layer.weight.grad).all() and torch.isfinite(q.logits.grad).all()
    assert layer.weight.grad.abs().sum() > 0 and q.logits.grad.abs().sum() > 0
    # hard epochs: the attention is fixed; only the kept taps' weights learn
    layer.zero_grad()
    q.tau.fill_(0.0)
    (layer(x) * torch.randn(4 * 25, 3)).sum().backward()
    assert q.logits.grad is None or not q.logits.grad.any()
    kept = q.mask().reshape(3, -1).bool()
    assert not layer.weight.grad[~kept].any() and layer.weight.grad[kept].abs().sum() > 0


def test_temperature_schedule():
    t = ShiftAttentionWeights.temperature
    taus = [t(e, 8, tau0=0.05, tau_final=0.0143, hard_epochs=2) for e in range(1, 9)]
    assert taus[0] == 0.05 and taus[5] == pytest.approx(0.0143) and taus[6:] == [0.0, 0.0]
    ratios = [b / a for a, b in zip(taus[:5], taus[1:6])]
    assert ratios == pytest.approx([(0.0143 / 0.05) ** 0.2] * 5)  # geometric per epoch
    assert [t(e, 1, tau0=1.0, tau_final=0.1, hard_epochs=2) for e in (1,)] == [1.0]  # at least one soft epoch
    assert [t(e, 3, tau0=1.0, tau_final=0.1, hard_epochs=5) for e in (1, 2, 3)] == [1.0, 0.0, 0.0]
    assert [t(e, 3, tau0=1.0, tau_final=0.1, hard_epochs=0) for e in (1, 2, 3)] == pytest.approx([1.0, 0.1 ** 0.5,
                                                                                                  0.1])


def test_dense_layers_cannot_have_shift_attention_weights():
    with pytest.raises(HwnetError, match="shift-attention weights are for convolutional layers only"):
        QuantLinear(8, 4, ShiftAttentionWeights(), in_type=parse_type("uint3"), in_step=1.0)
    with pytest.raises(HwnetError, match="shift-attention weights are for convolutional layers only"):
        QuantNet(64, (8,), 10, 16, input={"kind": "raw"}, weight={"kind": "shift-attention"},
                 act={"kind": "sign"}, final_weight={"kind": "binary"})
    with pytest.raises(HwnetError, match="temperature tau must be a number >= 0"):
        ShiftAttentionWeights(tau=-1.0)


# --- the method ---------------------------------------------------------------------------------------------------

def test_trained_cnn_lowers_exactly_to_one_tap_per_kernel(digits, trained):
    model, history, results = trained
    assert isinstance(model, QuantNet) and not model.training and len(history) == EPOCHS
    network = lower(model, name="sal")
    assert [layer.name for layer in network.layers] == ["conv1", "conv2", "pool1", "fc1", "fc2"]
    assert check_lowering(model, network, digits.test_x) == 0
    t = network.input_type
    corners = np.array([[0] * 64, [digits.input_max] * 64, [t.max] * 64, np.arange(64) % (t.max + 1)])
    assert check_lowering(model, network, corners) == 0
    types = [(str(getattr(layer, "weight_type", "-")), str(layer.out_type)) for layer in network.layers]
    assert types[:4] == [("ternary", "bipolar"), ("ternary", "bipolar"), ("-", "bipolar"), ("bipolar", "bipolar")]
    assert types[4][0] == "bipolar"
    quantizers = [q.quantizer for q in model.conv_layers]
    for conv, q in zip(network.layers[:2], quantizers):
        w = conv.weights  # (OC, KH, KW, C): one nonzero tap per (oc, ic), where the attention is largest
        taps = w.reshape(w.shape[0], -1, w.shape[3])
        assert np.array_equal(np.count_nonzero(taps, axis=1), np.ones((w.shape[0], w.shape[3])))
        np.testing.assert_array_equal(np.argmax(np.abs(taps), axis=1), q.kept().numpy())
        assert float(q.tau) == 0.0  # ended with the hard epochs
    assert [sum(c) for c in results["kept_positions"]] == [16 * 1, 16 * 16]
    classes = golden.classify(golden.execute(network, digits.test_x))
    np.testing.assert_array_equal(classes, predict(model, digits.test_x))
    assert float(np.mean(classes == digits.test_y)) == results["test_accuracy"] >= ACCURACY, results


def test_checkpoint_round_trip(tmp_path, digits, trained):
    model, _, _ = trained
    path = tmp_path / "sal.pt"
    save_checkpoint(model, path, meta={"method": "shift-attention"})
    loaded, meta = load_checkpoint(path)
    assert meta == {"method": "shift-attention"} and loaded.config() == model.config()
    for a, b in zip(model.conv_layers, loaded.conv_layers):
        assert torch.equal(a.quantizer.logits, b.quantizer.logits) and torch.equal(a.quantizer.tau, b.quantizer.tau)
    network, again = lower(model, name="sal"), lower(loaded, name="sal")
    for a, b in zip(network.layers, again.layers):
        for field in ("weights", "thresholds"):
            np.testing.assert_array_equal(getattr(a, field, None), getattr(b, field, None))
    np.testing.assert_array_equal(golden.execute(again, digits.test_x), golden.execute(network, digits.test_x))


def test_one_by_one_convs_get_binary_weights_and_odd_geometries_lower_exactly(digits):
    """A 1x1 convolution keeps BinaryNet's binary weights; strides, uneven padding and non-square kernels and
    pools lower exactly, k-bit activations too (batch norm estimated, some of its scales negative)."""
    conv = [{"channels": 6, "kernel": [3, 2], "stride": [1, 2], "padding": [1, 0, 0, 1], "pool": [3, 1]},
            {"channels": 5, "kernel": 1},
            {"channels": 4, "kernel": 2, "padding": [1, 1, 0, 1]}]
    method = METHODS["shift-attention"]
    torch.manual_seed(3)
    model = method.build(digits, (12,), resolve_options(method, {"act_bits": 2}), conv=conv)
    assert [type(q.quantizer) for q in model.conv_layers] == [ShiftAttentionWeights, BinaryWeights,
                                                              ShiftAttentionWeights]
    reestimate_batchnorm(model, digits.train_x)
    with torch.no_grad():
        for norm in model.hidden_norm:
            norm.weight.mul_(torch.where(torch.rand_like(norm.weight) < 0.3, -1.0, 1.0))
    model.eval()
    network = lower(model, name="odd")
    assert [str(layer.weight_type) for layer in network.layers if hasattr(layer, "weight_type")] == \
        ["ternary", "bipolar", "ternary", "bipolar", "bipolar"]
    assert str(network.layers[0].out_type) == "uint2"
    assert check_lowering(model, network, digits.test_x) == 0


def test_refused_without_conv_and_bad_options(tmp_path, digits, capsys):
    with pytest.raises(HwnetError) as info:
        train(digits, "shift-attention", hidden=(8,), epochs=1)
    assert "method 'shift-attention' needs convolutional layers" in str(info.value)
    assert "--conv" in str(info.value) and "\n" not in str(info.value)
    assert main(["train", "--method", "shift-attention", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnet: error: method 'shift-attention' needs convolutional layers") and "\n" not in err
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(HwnetError, match="needs a convolution with a kernel larger than 1x1"):
        train(digits, "shift-attention", conv=[{"channels": 4, "kernel": 1}], hidden=(8,), epochs=1)
    for options, match in (({"tau0": 0.0}, "'tau0' must be a positive number"),
                           ({"tau_final": -1}, "'tau_final' must be a positive number"),
                           ({"hard_epochs": 1.5}, "'hard_epochs' must be an integer from 0"),
                           ({"act_bits": 9}, "'act_bits' must be an integer from 1 to 8"),
                           ({"temperature": 1}, "has no option 'temperature'")):
        with pytest.raises(HwnetError, match=match):
            train(digits, "shift-attention", conv=CONV, hidden=(8,), epochs=1, options=options)
    assert math.isclose(METHODS["shift-attention"].options["tau0"], 1 / 20)
