"""Export an hwnet network to QONNX, for qonnx's executor, FINN and other QONNX readers.

The graph computes exactly what the integer IR computes, in float32 on integer values (every value the graph
holds is an integer below 2^24 in magnitude, so float32 is exact; larger accumulators are refused):

- input ``x``: (1, input_size) float, the IR's input values in the IR's order (NHWC for an image), through a
  ``Quant`` (scale 1) or ``BipolarQuant`` that states its type;
- ``dense``: ``MatMul`` with the integer weights behind a ``Quant``/``BipolarQuant`` of scale 1; then, with
  thresholds, a ``MultiThreshold`` (qonnx domain) whose ``out_scale``/``out_bias`` map the count to the values
  of the output type (bipolar: ``2 * count - 1``);
- ``conv2d``: images travel NCHW inside the graph (a ``Reshape`` + ``Transpose`` from the IR's NHWC vector);
  ``Conv`` (a ``Pad`` node first when the pad value is not 0), ``MultiThreshold`` per channel;
- ``maxpool2d``: ``MaxPool``; ``threshold``: ``MultiThreshold``;
- output: (1, output_size), the IR's outputs in the IR's order.

Tensor datatypes are annotated (``BIPOLAR``, ``INT4``...), as FINN expects. A lookup-table layer (a products
table that is not the plain product of weight and input values) becomes a plain product with a one-hot input
(``Unsqueeze``, ``Equal`` against every input value, ``Cast``) and the table's entries as weights
(:func:`_lookup_weights`): exact, but a reader sees a wider MatMul/Conv, not a table.
"""

from pathlib import Path

import numpy as np

from .errors import HwnetError
from .ir import Conv2d, Dense, MaxPool2d, MultiThreshold

__all__ = ["export_qonnx", "qonnx_type_name"]

_DOMAIN = "qonnx.custom_op.general"
_FLOAT32_EXACT = 2 ** 24


def qonnx_type_name(dtype):
    """The qonnx ``DataType`` name of an hwnet element type."""
    if dtype.kind in ("bipolar", "ternary"):
        return dtype.kind.upper()
    if dtype.kind == "pot":
        return f"INT{max(2, (int(dtype.max)).bit_length() + 1)}"
    return f"{dtype.kind.upper()}{dtype.bits}"


class _Builder:
    def __init__(self, network):
        self.network = network
        self.nodes, self.inits, self.types = [], [], {}
        self.count = 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem, value, dtype=np.float32):
        from onnx import numpy_helper
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, domain="", **attrs):
        from onnx import helper
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), domain=domain, **attrs))
        return out

    def quant(self, tensor, dtype, stem):
        """Mark ``tensor`` (integer values of ``dtype``) with a scale-1 quantizer stating its type."""
        if dtype.kind == "bipolar":
            out = self.node("BipolarQuant", [tensor, self.const(f"{stem}_scale", 1.0)], domain=_DOMAIN)
        else:
            if dtype.kind == "pot":
                bits, signed, narrow = max(2, int(dtype.max).bit_length() + 1), 1, 1
            else:
                bits, signed, narrow = dtype.bits, int(dtype.kind in ("int", "ternary")), int(dtype.kind == "ternary")
            out = self.node("Quant", [tensor, self.const(f"{stem}_scale", 1.0), self.const(f"{stem}_zeropt", 0.0),
                                      self.const(f"{stem}_bitwidth", float(bits))], domain=_DOMAIN,
                            signed=signed, narrow=narrow, rounding_mode="ROUND")
        self.types[out] = qonnx_type_name(dtype)
        return out

    def weights(self, layer, array):
        """The layer's weights as a constant behind their quantizer."""
        w = self.const(f"{layer.name}_weights", array)
        return self.quant(w, layer.weight_type, f"{layer.name}_wq")

    def one_hot(self, tensor, dtype, ndim):
        """``[x == v]`` for every value ``v`` of ``dtype``, as 0.0/1.0 on a new axis 2 of the ``ndim``-D tensor
        (after the features of a vector, after the channels of an NCHW image)."""
        values = dtype.values().astype(np.float32).reshape([-1] + [1] * (ndim - 2))
        unsq = self.node("Unsqueeze", [tensor], axes=[2])
        return self.node("Cast", [self.node("Equal", [unsq, self.const("values", values)])], to=1)

    def table(self, layer, q):
        """A lookup-table layer's one-hot weights (the table's entries), behind a scale-1 quantizer."""
        from .datatypes import type_for_range
        w = self.const(f"{layer.name}_table", q)
        return self.quant(w, type_for_range(int(q.min()), int(q.max())), f"{layer.name}_tq")

    def thresholds(self, tensor, layer, thresholds):
        out_type = layer.out_type
        if np.abs(thresholds).max(initial=0) >= _FLOAT32_EXACT:
            raise HwnetError(f"layer {layer.name!r}: thresholds reach {int(np.abs(thresholds).max())}, beyond "
                             f"float32's exact integers (2^24); QONNX executes in float32, so it cannot be exported")
        scale, bias = (2.0, -1.0) if out_type.kind == "bipolar" else (1.0, float(out_type.min))
        out = self.node("MultiThreshold", [tensor, self.const(f"{layer.name}_thresholds", thresholds)],
                        domain=_DOMAIN, out_dtype=qonnx_type_name(out_type), out_scale=scale, out_bias=bias,
                        data_layout="NCHW")
        self.types[out] = qonnx_type_name(out_type)
        return out


def _is_plain_product(layer, in_type):
    """The layer's products table is just ``w * x`` (or it has none)."""
    return layer.products is None or np.array_equal(layer.products,
                                                     np.outer(layer.weight_type.values(), in_type.values()))


def _lookup_weights(layer, in_type):
    """A lookup-table layer as a plain product with a one-hot input: ``acc[o] = sum over i, v of Q[o, i, v] *
    [x[i] == v-th value]`` with ``Q[o, i, v] = P[rank(W[o, i]), v]``. For a convolution ``i`` is the input
    channel at each kernel position. Returns ``Q`` in the IR's weight layout with a value axis after the input
    axis."""
    ranks = layer.weight_type.ranks(layer.weights)
    return layer.products[ranks]  # (..., in, V)


def _check_acc(layer):
    lo, hi = (layer.matmul if isinstance(layer, Conv2d) else layer).acc_range()
    if max(-lo, hi) >= _FLOAT32_EXACT:
        raise HwnetError(f"layer {layer.name!r}: accumulators reach {max(-lo, hi)}, beyond float32's exact "
                         f"integers (2^24); QONNX executes in float32, so it cannot be exported exactly")


def to_model(network):
    """The QONNX ``onnx.ModelProto`` of ``network``."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model
    b = _Builder(network)
    tensor = b.quant("x", network.input_type, "input")
    image = None  # (C, H, W) while the tensor is an NCHW image, None while it is the IR's flat vector

    def to_image(shape):
        nonlocal tensor, image
        if image is None:
            h, w, c = shape
            tensor = b.node("Reshape", [tensor, b.const("shape", [-1, h, w, c], np.int64)])
            tensor = b.node("Transpose", [tensor], perm=[0, 3, 1, 2])
            image = (c, h, w)

    def to_flat():
        nonlocal tensor, image
        if image is not None:
            tensor = b.node("Transpose", [tensor], perm=[0, 2, 3, 1])
            tensor = b.node("Flatten", [tensor], axis=1)
            image = None

    in_type = network.input_type
    for layer in network.layers:
        if isinstance(layer, Dense):
            to_flat()
            _check_acc(layer)
            if _is_plain_product(layer, in_type):
                tensor = b.node("MatMul", [tensor, b.weights(layer, layer.weights.T)])
            else:
                q = _lookup_weights(layer, in_type)  # (O, I, V)
                tensor = b.node("Flatten", [b.one_hot(tensor, in_type, 2)], axis=1)  # (N, I * V)
                tensor = b.node("MatMul", [tensor, b.table(layer, q.reshape(len(q), -1).T)])
            if layer.thresholds is not None:
                tensor = b.thresholds(tensor, layer, layer.thresholds)
        elif isinstance(layer, Conv2d):
            to_image(layer.in_shape)
            _check_acc(layer)
            top, bottom, left, right = layer.padding
            pads = [top, left, bottom, right]
            plain = _is_plain_product(layer, in_type)
            if any(pads) and (layer.pad_value != 0 or not plain):
                tensor = b.node("Pad", [tensor, b.const("pads", [0, 0, top, left, 0, 0, bottom, right], np.int64),
                                        b.const("pad_value", float(layer.pad_value))], mode="constant")
                pads = [0, 0, 0, 0]
            if plain:
                weights = b.weights(layer, layer.weights.transpose(0, 3, 1, 2))
            else:  # one-hot channels (N, C * V, H, W); Q (OC, KH, KW, C, V) -> (OC, C * V, KH, KW)
                c, (h, w) = layer.in_channels, layer.in_shape[:2]
                v = len(in_type.values())
                tensor = b.node("Reshape", [b.one_hot(tensor, in_type, 4),
                                            b.const("shape", [-1, c * v, h + top + bottom, w + left + right],
                                                    np.int64)])
                q = _lookup_weights(layer, in_type)
                weights = b.table(layer, q.transpose(0, 3, 4, 1, 2).reshape(layer.out_channels, c * v,
                                                                            layer.kernel_h, layer.kernel_w))
            tensor = b.node("Conv", [tensor, weights], kernel_shape=[layer.kernel_h, layer.kernel_w],
                            strides=list(layer.stride), pads=pads)
            c, h, w = layer.out_channels, *layer.out_shape[:2]
            image = (c, h, w)
            if layer.thresholds is not None:
                tensor = b.thresholds(tensor, layer, layer.thresholds)
        elif isinstance(layer, MaxPool2d):
            to_image(layer.in_shape)
            tensor = b.node("MaxPool", [tensor], kernel_shape=list(layer.kernel), strides=list(layer.stride))
            h, w, c = layer.out_shape
            image = (c, h, w)
        elif isinstance(layer, MultiThreshold):
            if layer.thresholds.shape[0] != 1:
                to_flat()
            tensor = b.thresholds(tensor, layer, layer.thresholds)
        else:  # pragma: no cover - Network validates ops
            raise HwnetError(f"layer {layer.name!r}: no QONNX form for op {layer.op!r}")
        in_type = layer.out_type
    to_flat()
    tensor = b.node("Identity", [tensor])
    graph = helper.make_graph(
        b.nodes, network.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, network.input_size])],
        [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, [1, network.output_size])], b.inits)
    model = ModelWrapper(qonnx_make_model(graph, producer_name="hwnet"))
    model.set_tensor_datatype("x", DataType[qonnx_type_name(network.input_type)])
    for name, t in b.types.items():
        model.set_tensor_datatype(name, DataType[t])
    model.set_tensor_datatype(tensor, DataType[qonnx_type_name(network.output_type)])
    from qonnx.transformation.infer_shapes import InferShapes
    return model.transform(InferShapes()).model


def export_qonnx(network, path):
    """Write ``network`` as a QONNX file at ``path`` (written whole or not at all)."""
    import onnx
    model = to_model(network)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
