"""Brevitas-trained QONNX graphs and qonnx execution, for the interchange tests (tests/test_qonnx.py and
rtl_tests/test_rtl_qonnx.py). Needs the test extra (brevitas, onnxoptimizer).

:func:`brevitas_net` builds a small MLP or CNN for the 8x8 digits with one of :data:`QUANTIZERS` (binary,
ternary, full-range 2-bit, 4-bit per-channel weights with power-of-two or float scales), batch norm after every hidden
layer and a biased last layer; :func:`train_briefly` trains it for a few epochs on the digits training split and
:func:`export` writes it with Brevitas's own QONNX export. :func:`qonnx_outputs` runs a QONNX file in qonnx
(``execute_onnx``) on a whole batch at once.
"""

import warnings
from pathlib import Path

import numpy as np

__all__ = ["QUANTIZERS", "brevitas_net", "bnn_pynq_fc", "train_briefly", "export", "qonnx_outputs", "digits_float"]


def _quantizers():
    with warnings.catch_warnings():  # brevitas warns about its own deprecations on import
        warnings.simplefilter("ignore")
        return _quantizer_table()


def _quantizer_table():
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerChannelFloat,
                                Int8WeightPerTensorFixedPoint, SignedBinaryActPerTensorConst,
                                SignedBinaryWeightPerTensorConst, SignedTernaryWeightPerTensorConst,
                                Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat)

    class Int8WeightPerChannelFixedPoint(Int8WeightPerTensorFixedPoint):
        scaling_per_output_channel = True

    class FullRangeWeightPerTensorFixedPoint(Int8WeightPerTensorFixedPoint):
        narrow_range = False  # at 2 bits: -2 .. 1 (int2), not Brevitas's default -1 .. 1

    # name: (weight quantizer, weight bits, activation quantizer, activation bits, input quantizer)
    return {
        "binary": (SignedBinaryWeightPerTensorConst, 1, SignedBinaryActPerTensorConst, 1, Int8ActPerTensorFixedPoint),
        "ternary": (SignedTernaryWeightPerTensorConst, 2, Uint8ActPerTensorFixedPoint, 2, Int8ActPerTensorFixedPoint),
        "w2a2": (FullRangeWeightPerTensorFixedPoint, 2, Uint8ActPerTensorFixedPoint, 2, Int8ActPerTensorFixedPoint),
        "w4a4-channel": (Int8WeightPerChannelFixedPoint, 4, Uint8ActPerTensorFixedPoint, 4, Int8ActPerTensorFixedPoint),
        "w4a4-float": (Int8WeightPerChannelFloat, 4, Uint8ActPerTensorFloat, 4, Int8ActPerTensorFloat),
    }


#: The quantizer sets of :func:`brevitas_net`.
QUANTIZERS = ("binary", "ternary", "w2a2", "w4a4-channel", "w4a4-float")


def brevitas_net(arch, quantizers, *, seed=0):
    """A Brevitas MLP (``arch="mlp"``: 64-32-32-10) or CNN (``"cnn"``: 8x8x1 -> conv 3x3 pad 1 x8 -> max-pool 2 ->
    conv 3x3 x16 -> 10) for flat 64-pixel inputs in [0, 1], quantized as :data:`QUANTIZERS` names."""
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import brevitas.nn as qnn
    wq, wbits, aq, abits, iq = _quantizers()[quantizers]
    torch.manual_seed(seed)
    w = dict(weight_quant=wq, weight_bit_width=wbits)

    def act():
        if abits == 1:
            return qnn.QuantIdentity(act_quant=aq, bit_width=1, return_quant_tensor=True)
        return qnn.QuantReLU(act_quant=aq, bit_width=abits, return_quant_tensor=True)

    head = [qnn.QuantIdentity(act_quant=iq, bit_width=8, return_quant_tensor=True)]
    if arch == "mlp":
        body = [qnn.QuantLinear(64, 32, bias=False, **w), torch.nn.BatchNorm1d(32), act(),
                qnn.QuantLinear(32, 32, bias=False, **w), torch.nn.BatchNorm1d(32), act(),
                qnn.QuantLinear(32, 10, bias=True, bias_quant=None, **w)]
        return torch.nn.Sequential(*head, *body)
    if arch == "cnn":
        body = [qnn.QuantConv2d(1, 8, 3, padding=1, bias=False, **w), torch.nn.BatchNorm2d(8), act(),
                torch.nn.MaxPool2d(2),
                qnn.QuantConv2d(8, 16, 3, bias=False, **w), torch.nn.BatchNorm2d(16), act(),
                torch.nn.Flatten(), qnn.QuantLinear(16 * 2 * 2, 10, bias=True, bias_quant=None, **w)]
        return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), *head, *body)
    raise ValueError(f"unknown arch {arch!r}")


def bnn_pynq_fc(*, hidden=(32, 32), seed=0):
    """FINN's binarized MLP as Brevitas's ``bnn_pynq`` example builds it (``CommonActQuant``/``CommonWeightQuant``
    at 1 bit, batch norm, a ``TensorNorm`` after the last layer), on flat 64-pixel inputs in [0, 1] mapped to
    ``2 x - 1`` inside the model: the graph has float ops before its input quantizer and after its last layer."""
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brevitas.nn import QuantIdentity, QuantLinear
        from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
        from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
    torch.manual_seed(seed)
    layers, width = [QuantIdentity(act_quant=CommonActQuant, bit_width=1)], 64
    for out in hidden:
        layers += [QuantLinear(width, out, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant),
                   torch.nn.BatchNorm1d(out), QuantIdentity(act_quant=CommonActQuant, bit_width=1)]
        width = out
    layers += [QuantLinear(width, 10, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant), TensorNorm()]

    class FC(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.features(2.0 * x - 1.0)

    return FC()


def digits_float(ds, split):
    """The digits split's pixels as float32 in [0, 1] (the Brevitas nets' input)."""
    x = ds.train_x if split == "train" else ds.test_x
    return (np.asarray(x, np.float32) / np.float32(ds.input_max)).astype(np.float32)


def train_briefly(model, ds, *, epochs=2, batch=64, lr=1e-2, seed=0):
    """Train ``model`` with Adam and cross-entropy on the digits training split; returns it in eval mode with its
    test accuracy."""
    import torch
    rng = np.random.default_rng(seed)
    x, y = torch.tensor(digits_float(ds, "train")), torch.tensor(np.asarray(ds.train_y, np.int64))
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for i in range(0, len(x) - 1, batch):
                idx = order[i:i + batch]
                if len(idx) < 2:
                    continue
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor(digits_float(ds, "test")))
    return model, float((logits.argmax(1).numpy() == np.asarray(ds.test_y)).mean())


def export(model, path):
    """Brevitas's own QONNX export of ``model`` (for one flat 64-pixel input) to ``path``."""
    import logging

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brevitas.export import export_qonnx
        logging.disable(logging.WARNING)
        try:
            export_qonnx(model, torch.zeros(1, 64), str(path))
        finally:
            logging.disable(logging.NOTSET)
    return path


def qonnx_outputs(model, x):
    """qonnx's execution (``execute_onnx``) of the QONNX ``model`` (a path or ModelProto) on the batch ``x``."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cleanup_model(ModelWrapper(str(model) if isinstance(model, (str, Path)) else model)).transform(ChangeBatchSize(len(x))).transform(InferShapes())
        return execute_onnx(m, {m.graph.input[0].name: np.asarray(x, np.float32)})[m.graph.output[0].name]
