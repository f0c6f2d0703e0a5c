import numpy as np
import pytest
import torch

from hwnet.errors import HwnetError
from hwnet.train.binarynet import BinarizedMLP, BinaryBatchNorm, BinaryLinear, SignSTE, binary_sign, sign_ste


def test_sign_forward_zero_is_plus_one():
    x = torch.tensor([-3.0, -1.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 2.0])
    expected = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert binary_sign(x).tolist() == expected
    assert SignSTE.apply(x).tolist() == expected


def test_ste_backward_is_gated():
    x = torch.tensor([-2.0, -1.0001, -1.0, -0.3, 0.0, 0.7, 1.0, 1.0001, 5.0], requires_grad=True)
    upstream = torch.tensor([0.5, -1.0, 2.0, 3.0, -4.0, 0.25, 7.0, 8.0, 9.0])
    sign_ste(x).backward(upstream)
    # gradient passes where |x| <= 1 (both ends included), zero elsewhere
    expected = [0.0, 0.0, 2.0, 3.0, -4.0, 0.25, 7.0, 0.0, 0.0]
    assert x.grad.tolist() == expected


def test_binary_linear_uses_sign_of_latent_weights():
    torch.manual_seed(1)
    layer = BinaryLinear(13, 5)
    with torch.no_grad():
        layer.weight[0, 0] = 0.0  # sign(0) = +1
    x = torch.randn(7, 13)
    w = layer.weight.detach().numpy().astype(np.float64)
    w_sign = np.where(w >= 0, 1.0, -1.0)
    expected = x.numpy().astype(np.float64) @ w_sign.T
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not any(name == "bias" for name, _ in layer.named_parameters())


def test_binary_linear_gradient_reaches_latent_weights():
    layer = BinaryLinear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.2, 1.0, -1.0], [0.1, 0.0, -0.9, 0.3]]))
    x = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    layer(x).sum().backward()
    # d(sum)/d(sign W[o, i]) = x[i]; the STE passes it through since |W| <= 1
    np.testing.assert_array_equal(layer.weight.grad.numpy(), np.array([[1.0, -1.0, 1.0, 1.0]] * 2))


def test_weight_clipping_after_optimizer_steps():
    torch.manual_seed(0)
    model = BinarizedMLP(10, (8, 6), 3, input_max=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3.0)
    x = torch.randint(0, 17, (32, 10)).float()
    y = torch.randint(0, 3, (32,))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        latent = [m.weight.detach() for m in model.modules() if isinstance(m, BinaryLinear)]
        assert any(float(w.abs().max()) > 1 for w in latent)  # the huge step left the box...
        model.clip_weights()
        for w in latent:  # ...and clipping brought every latent weight back into [-1, 1]
            assert float(w.min()) >= -1.0 and float(w.max()) <= 1.0
    assert any(bool((w.abs() == 1).any()) for w in latent)


def test_batchnorm_eval_matches_torch_batch_norm():
    torch.manual_seed(3)
    bn = BinaryBatchNorm(9)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(9))
        bn.bias.copy_(torch.randn(9))
        bn.running_mean.copy_(torch.randn(9) * 5)
        bn.running_var.copy_(torch.rand(9) * 10 + 0.01)
    bn.eval()
    x = torch.randn(50, 9) * 10
    ref = torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                         training=False, eps=bn.eps)
    torch.testing.assert_close(bn(x), ref, rtol=1e-5, atol=1e-5)
    # training mode is ordinary batch norm (batch statistics)
    bn.train()
    x = torch.randn(50, 9)
    ref = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    torch.testing.assert_close(bn(x), ref)


def test_batchnorm_eval_is_position_independent():
    bn = BinaryBatchNorm(37).eval()
    with torch.no_grad():
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-2, 2)
        bn.running_mean.uniform_(-20, 20)
        bn.running_var.uniform_(0.001, 30)
    values = torch.arange(-41, 42, 2, dtype=torch.float32)
    grid = values[:, None].expand(-1, 37).contiguous()
    full = bn(grid)
    for r in (0, 5, len(values) - 1):
        single = bn(grid[r:r + 1])
        assert torch.equal(single, full[r:r + 1])
    shuffled = torch.randperm(len(values))
    assert torch.equal(bn(grid[shuffled]), full[shuffled])


def _random_model(seed, input_size=20, hidden=(12, 9), classes=4, input_max=16):
    torch.manual_seed(seed)
    model = BinarizedMLP(input_size, hidden, classes, input_max)
    with torch.no_grad():
        for bn in model.hidden_bn:
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
            bn.running_mean.uniform_(-5, 5)
            bn.running_var.uniform_(0.1, 10)
    return model.eval()


def test_integer_trace_against_float64_numpy():
    model = _random_model(5)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 17, size=(300, 20))
    trace = model.integer_trace(x)
    assert [t.dtype for t in trace] == [np.int64] * 4
    assert [t.shape for t in trace] == [(300, 20), (300, 12), (300, 9), (300, 4)]
    # independent float64 recomputation
    h = np.where(x / 16.0 - 0.5 >= 0, 1, -1)
    np.testing.assert_array_equal(trace[0], h)
    for i, (lin, bn) in enumerate(zip(model.hidden_linear, model.hidden_bn)):
        w = np.where(lin.weight.detach().numpy() >= 0, 1, -1)
        acc = h @ w.T
        y = ((acc - bn.running_mean.numpy().astype(np.float64))
             / np.sqrt(bn.running_var.numpy().astype(np.float64) + bn.eps)
             * bn.weight.detach().numpy().astype(np.float64) + bn.bias.detach().numpy().astype(np.float64))
        h = np.where(y >= 0, 1, -1)
        near_tie = np.abs(y) < 1e-4  # float32 vs float64 may differ only right at the step
        assert np.all((trace[i + 1] == h) | near_tie)
        h = trace[i + 1]
    w = np.where(model.final.weight.detach().numpy() >= 0, 1, -1)
    np.testing.assert_array_equal(trace[-1], h @ w.T)
    # the logits are the final accumulators times one positive scalar
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    scale = float(torch.exp(model.log_scale.detach()))
    assert scale > 0
    np.testing.assert_allclose(logits, scale * trace[-1], rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(logits, axis=1), np.argmax(trace[-1], axis=1))


def test_integer_trace_restores_training_mode():
    model = _random_model(1)
    model.train()
    model.integer_trace(np.zeros((2, 20), dtype=np.int64))
    assert model.training


def test_no_hidden_layers():
    model = BinarizedMLP(6, (), 3, input_max=255).eval()
    trace = model.integer_trace(np.array([[0, 127, 128, 255, 200, 1]]))
    np.testing.assert_array_equal(trace[0], [[-1, -1, 1, 1, 1, -1]])
    assert len(trace) == 2


@pytest.mark.parametrize("args, message", [
    ((0, (4,), 3, 16), "input size"),
    ((4, (4, 0), 3, 16), "hidden size"),
    ((4, 5, 3, 16), "hidden sizes"),
    ((4, (4,), 0, 16), "classes"),
    ((4, (4,), 3, 0), "input_max"),
])
def test_bad_architecture(args, message):
    with pytest.raises(HwnetError, match=message):
        BinarizedMLP(*args)


def test_bad_input_shape():
    model = BinarizedMLP(4, (4,), 3, 16)
    with pytest.raises(HwnetError, match=r"shape \(batch, 4\)"):
        model.integer_trace(np.zeros((2, 5), dtype=np.int64))
