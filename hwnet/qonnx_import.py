"""Import QONNX graphs (Brevitas, FINN, QKeras exports) into the integer IR.

The walk follows the graph's one data path from the input to the output and keeps, for the tensor at hand,
how its real value comes from integers the hardware has:

- *codes*: ``value = a * q + b`` elementwise, ``q`` the integer codes of the network input or of the last
  emitted layer's output (``a``, ``b`` per element, float64);
- *accumulators*: a pending MatMul/Gemm/Conv whose integer weights and accumulator ``acc`` are known; its float
  output is ``scale[o] * acc + offset[o]`` per output channel, followed by the elementwise nodes met since
  (BatchNormalization, Add/Sub/Mul/Div by constants, Relu), which are kept as ONNX nodes.

A quantizer (``Quant``, ``BipolarQuant``, ``MultiThreshold``, ``Sign``, ``Trunc``) closes the pending layer: its
integer output level is a monotone function ``g(acc)`` per channel, so the thresholds are ``T_l = min{acc :
g(acc) >= v_l}``, found by binary search with ``g`` evaluated by qonnx's own execution of those very nodes
(onnxruntime for the standard ones), in float32 as the graph computes them. A decreasing ``g`` (negative
scale) negates the channel's weight row (docs/ir.md). The result equals qonnx's execution of the whole graph
wherever the graph's float MatMul/Conv outputs equal ``scale * acc + offset`` exactly, which holds for
power-of-two scales (Brevitas's ``*FixedPoint`` quantizers, FINN's models); with arbitrary float scales the
graph's float32 sums round, and an accumulator can land on the other side of a threshold than in exact
arithmetic (docs/interop.md).

Layouts: the IR's tensors are NHWC vectors. Every tensor of the walk carries ``index``, an integer array of its
ONNX shape (without the batch axis) giving each element's position in the IR's flat vector; Reshape, Flatten
and Transpose only rearrange ``index``; MatMul weights are permuted by it; Conv and MaxPool need it to be the
NCHW view of an NHWC vector (and the network input's order is chosen so that it is).

The network input is the integer output of the graph's first quantizer; :func:`quantize_inputs` turns the
graph's float inputs into those codes with the same float32 arithmetic as qonnx. The graph's output is
``graph_output_scale * y + graph_output_offset`` of the network's output ``y`` (per element, recorded in the
metadata), after the trailing elementwise nodes the hardware leaves to the host.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datatypes import BIPOLAR, TERNARY, DataType, type_for_range
from .errors import HwnetError
from .ir import Conv2d, Dense, MaxPool2d, MultiThreshold, Network, window_out_shape

__all__ = ["import_qonnx", "quantize_inputs", "graph_outputs", "integer_outputs", "SUPPORTED_OPS", "QUANT_DOMAINS"]

#: Custom-op domains accepted for the quantization ops (the files of each tool use one of these).
QUANT_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
_QONNX_DOMAIN = "qonnx.custom_op.general"
_CUSTOM = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold")
_QUANTIZERS = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold", "Sign")
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "BatchNormalization", "Relu")
_LAYOUT = ("Reshape", "Flatten", "Transpose")
#: Op types the importer takes on the data path.
SUPPORTED_OPS = ("MatMul", "Gemm", "Conv", "MaxPool", "Pad", "Identity") + _QUANTIZERS + _ELEMENTWISE + _LAYOUT


def _supported_text():
    return ", ".join(SUPPORTED_OPS)


@dataclass
class _Codes:
    """``value = a * q + b`` per element; ``index`` maps the ONNX element to its IR position."""
    dtype: DataType
    index: np.ndarray
    a: np.ndarray
    b: np.ndarray
    pad: tuple = None  # a pending Pad node: ((top, bottom, left, right), real pad value)


@dataclass
class _Acc:
    """A pending MatMul/Conv: ``float output = scale[o] * acc + offset[o]``, then ``nodes``."""
    kind: str  # "dense" or "conv"
    name: str
    weights: np.ndarray  # IR layout: (out, in) or (OC, KH, KW, IC)
    weight_type: DataType
    in_type: DataType
    scale: np.ndarray
    offset: np.ndarray
    index: np.ndarray  # ONNX output shape (without batch): (M,) or (OC, OH, OW)
    conv: dict = None
    nodes: list = field(default_factory=list)
    pools: list = field(default_factory=list)


def _cleanup(model):
    """qonnx's cleanup (:func:`qonnx.util.cleanup.cleanup_model`) without its renaming of nodes and tensors, so
    that messages and layers carry the file's names: shapes inferred, constants folded (quantizers kept),
    transposes folded into weight quantizers."""
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (GiveUniqueParameterTensors, RemoveStaticGraphInputs,
                                              RemoveUnusedTensors)
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit
    for t in (InferShapes(), GiveUniqueParameterTensors(), FoldConstants(exclude_op_types=list(_CUSTOM)),
              FoldTransposeIntoQuantInit(), RemoveUnusedTensors(), RemoveStaticGraphInputs()):
        model = model.transform(t)
    return model


def _canonical_nchw(c, h, w):
    """The NCHW view (shape (C, H, W)) of NHWC positions."""
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1)


class _Importer:
    def __init__(self, model, name):
        from qonnx.core.modelwrapper import ModelWrapper
        for node in model.graph.node:
            if node.op_type in _CUSTOM:
                if node.domain not in QUANT_DOMAINS:
                    raise HwnetError(f"node {node.name or node.output[0]!r} ({node.op_type}): unknown domain "
                                     f"{node.domain!r}; supported domains are {', '.join(QUANT_DOMAINS)}")
                node.domain = _QONNX_DOMAIN
        for i, node in enumerate(model.graph.node):  # names for error messages and layers; keep the file's
            node.name = node.name or f"{node.op_type}_{i}"
        try:
            self.model = _cleanup(ModelWrapper(model))
        except HwnetError:
            raise
        except Exception as exc:
            raise HwnetError(f"qonnx could not read the graph ({type(exc).__name__}: {exc}); is it a valid "
                             f"(Q)ONNX model?") from None
        self.graph = self.model.graph
        self.name = name
        self.opset = self.model.model.opset_import[0].version
        self.producers = {o: n for n in self.graph.node for o in n.output}
        self.consumers = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self._consts = {}
        self.layers = []
        self.metadata = {}

    # -- constants ------------------------------------------------------------------------------------------------

    def const(self, name):
        """The value of a constant tensor (an initializer, or computed from constants by qonnx), or None."""
        if name in self._consts:
            return self._consts[name]
        value = self.model.get_initializer(name)
        if value is None and name in self.producers:
            node = self.producers[name]
            inputs = [self.const(i) if i else None for i in node.input]
            if all(v is not None for v, i in zip(inputs, node.input) if i):
                from qonnx.core.onnx_exec import execute_node
                context = {i: v for i, v in zip(node.input, inputs) if i}
                for o in node.output:
                    context[o] = np.zeros(self.model.get_tensor_shape(o) or (), dtype=np.float32)
                execute_node(node, context, self.graph, self.opset)
                value = context[name]
        self._consts[name] = value
        return value

    def what(self, node):
        return f"node {node.name!r} ({node.op_type})"

    def fail(self, node, why):
        raise HwnetError(f"{self.what(node)}: {why}")

    def attr(self, node, name, default=None):
        from onnx import helper
        for a in node.attribute:
            if a.name == name:
                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default

    # -- walk ------------------------------------------------------------------------------------------------------

    def run(self):
        graph = self.graph
        if len(graph.input) != 1 or len(graph.output) != 1:
            raise HwnetError(f"the graph has {len(graph.input)} input(s) and {len(graph.output)} output(s); hwnet "
                             f"imports chains with one input and one output")
        inp = graph.input[0].name
        shape = self.model.get_tensor_shape(inp)
        if not shape or len(shape) < 2:
            raise HwnetError(f"the graph input {inp!r} has shape {shape}; hwnet needs (batch, features) or "
                             f"(batch, channels, height, width)")
        self.input_shape = tuple(int(d) for d in shape[1:])
        tensor, state = self._input_quantizer(inp)
        while True:
            users = [n for n in self.consumers.get(tensor, [])]
            if tensor == graph.output[0].name:
                if users:
                    raise HwnetError(f"the graph's output {tensor!r} also feeds {self.what(users[0])}; hwnet "
                                     f"imports chains")
                break
            if len(users) != 1:
                raise HwnetError(f"tensor {tensor!r} feeds {len(users)} nodes; hwnet imports chains (one data path "
                                 f"from input to output, no branches or skip connections)")
            node = users[0]
            data = [i for i in node.input if i and self.const(i) is None]
            if data != [tensor]:
                self.fail(node, "takes more than one non-constant input; hwnet imports chains")
            state = self.step(node, state)
            tensor = node.output[0]
        self.finish(state)
        net = Network(input_type=self.input_type, input_size=self.input_size, layers=self.layers, name=self.name,
                      metadata=self.metadata)
        return net

    def _input_quantizer(self, tensor):
        """Follow the float input through elementwise constant ops to its first quantizer."""
        ops = []
        shape = self.input_shape
        while True:
            users = self.consumers.get(tensor, [])
            if len(users) != 1:
                raise HwnetError(f"the graph input must go through one chain of elementwise ops to a quantizer; "
                                 f"{tensor!r} feeds {len(users)} nodes")
            node = users[0]
            if node.op_type == "Identity":
                tensor = node.output[0]
                continue
            if node.op_type in ("Add", "Sub", "Mul", "Div"):
                const_first, c = self._const_operand(node)
                ops.append({"op": node.op_type, "const": c.astype(np.float32).tolist(), "const_first": const_first,
                            "shape": list(c.shape)})
                tensor = node.output[0]
                continue
            if node.op_type in _LAYOUT:
                op = self._layout_record(node, len(shape) + 1)
                shape = _apply_layout(op, np.empty((1,) + shape), lambda why: self.fail(node, why)).shape[1:]
                ops.append(op)
                tensor = node.output[0]
                continue
            if node.op_type not in ("Quant", "BipolarQuant", "MultiThreshold"):
                self.fail(node, f"the network input must be quantized first (a Quant, BipolarQuant or "
                                f"MultiThreshold node, after optional Add/Sub/Mul/Div by constants) before any "
                                f"{node.op_type}; an unquantized float input has no integer hardware")
            quant = self._quantizer_record(node)
            self.metadata["qonnx"] = {"input_shape": list(self.input_shape), "input_ops": ops + [quant]}
            dtype, a, b = self._quantizer_levels(node, quant)
            size = int(np.prod(self.input_shape))
            self.input_type, self.input_size = dtype, size
            index = np.arange(size).reshape(shape)
            self.input_perm = np.arange(size)
            state = _Codes(dtype=dtype, index=index, a=np.broadcast_to(a, (size,)).astype(np.float64).copy()
                           if np.size(a) == 1 else self._per_element(a, index, node),
                           b=np.broadcast_to(b, (size,)).astype(np.float64).copy()
                           if np.size(b) == 1 else self._per_element(b, index, node))
            return node.output[0], state

    def _const_operand(self, node):
        a, b = node.input[0], node.input[1]
        ca, cb = self.const(a), self.const(b)
        if cb is not None and ca is None:
            return False, np.asarray(cb)
        if ca is not None and cb is None:
            if node.op_type == "Div":
                self.fail(node, "divides a constant by the data; only division by a constant is supported")
            return True, np.asarray(ca)
        self.fail(node, "needs exactly one constant operand")

    def _per_element(self, values, index, node):
        """Broadcast ``values`` (an ONNX constant shaped for a batch of ``index``'s shape) to IR order."""
        try:
            full = np.broadcast_to(np.asarray(values, dtype=np.float64), (1,) + index.shape)[0]
        except ValueError:
            self.fail(node, f"its constant of shape {np.shape(values)} does not broadcast to the tensor "
                            f"{(1,) + index.shape}")
        out = np.empty(index.size)
        out[index.reshape(-1)] = full.reshape(-1)
        return out

    # -- quantizers ----------------------------------------------------------------------------------------------

    def _quantizer_record(self, node):
        """A JSON record of a quantizer node (for the input; also used for its levels)."""
        if node.op_type == "BipolarQuant":
            return {"op": "BipolarQuant", "scale": np.asarray(self._need(node, 1), np.float32).tolist()}
        if node.op_type == "Quant":
            bits = self._need(node, 3)
            if np.size(bits) != 1 or float(np.ravel(bits)[0]) % 1:
                self.fail(node, f"bit width must be one integer, got {bits!r}")
            return {"op": "Quant", "scale": np.asarray(self._need(node, 1), np.float32).tolist(),
                    "zero_point": np.asarray(self._need(node, 2), np.float32).tolist(),
                    "bits": int(np.ravel(bits)[0]), "signed": int(self.attr(node, "signed", 1)),
                    "narrow": int(self.attr(node, "narrow", 0)),
                    "rounding_mode": str(self.attr(node, "rounding_mode", "ROUND"))}
        if node.op_type == "MultiThreshold":
            layout = self.attr(node, "data_layout", "NCHW")
            return {"op": "MultiThreshold", "thresholds": np.asarray(self._need(node, 1), np.float32).tolist(),
                    "out_scale": float(self.attr(node, "out_scale", 1.0)),
                    "out_bias": float(self.attr(node, "out_bias", 0.0)), "data_layout": layout}
        self.fail(node, "is not a quantizer")

    def _need(self, node, i):
        if len(node.input) <= i or not node.input[i]:
            self.fail(node, f"input {i} is missing")
        v = self.const(node.input[i])
        if v is None:
            self.fail(node, f"input {i} ({node.input[i]!r}) must be a constant")
        return np.asarray(v)

    def _quantizer_levels(self, node, rec):
        """(IR type, a, b): the quantizer's output is ``a * q + b`` with ``q`` its integer level in the type."""
        op = rec["op"]
        if op == "BipolarQuant":
            return BIPOLAR, np.asarray(rec["scale"], np.float64), np.float64(0)
        if op == "Quant":
            bits, signed, narrow = rec["bits"], bool(rec["signed"]), bool(rec["narrow"])
            scale = np.asarray(rec["scale"], np.float64)
            zp = np.asarray(rec["zero_point"], np.float64)
            if bits < 1:
                self.fail(node, f"bit width {bits} is not supported; use 1 or more")
            if np.any(scale <= 0):
                self.fail(node, "has a scale <= 0; scales must be positive")
            if signed and bits == 1:  # qonnx executes a signed 1-bit Quant as bipolar
                return BIPOLAR, scale, -scale * zp
            if bits > 32:
                self.fail(node, f"bit width {bits} is over 32, the widest hwnet type")
            dtype = (TERNARY if signed and narrow and bits == 2 else DataType("int", bits) if signed
                     else DataType("uint", bits))
            return dtype, scale, -scale * zp
        if op == "MultiThreshold":  # out = out_scale * count + out_bias, count = 0 .. steps
            steps = np.asarray(rec["thresholds"]).shape[-1]
            s, bias = np.float64(rec["out_scale"]), np.float64(rec["out_bias"])
            if s <= 0:
                self.fail(node, f"has out_scale {s:g}; it must be positive")
            if steps == 1 and bias == -s / 2:
                return BIPOLAR, s / 2, np.float64(0)
            first = bias / s  # the level of count 0, when it is the lowest value of a type
            if first == -1 and steps == 2:
                return TERNARY, s, np.float64(0)
            if first < 0 and first % 1 == 0:
                dtype = type_for_range(first, first + steps)
                if dtype.min == first:
                    return dtype, s, np.float64(0)
            return type_for_range(0, steps), s, bias
        self.fail(node, "is not a quantizer")

    # -- steps -----------------------------------------------------------------------------------------------------

    def step(self, node, state):
        op = node.op_type
        if op not in SUPPORTED_OPS:
            self.fail(node, f"op type {op} is not supported; supported are: {_supported_text()}")
        if op == "Identity":
            return state
        if op in ("MatMul", "Gemm"):
            return self.matmul(node, self.settle(node, state))
        if op == "Conv":
            return self.conv(node, self.settle(node, state))
        if op == "Pad":
            return self.pad(node, self.settle(node, state))
        if op == "MaxPool":
            return self.maxpool(node, state)
        if op in _LAYOUT:
            return self.layout(node, state)
        if op in _QUANTIZERS:
            return self.quantize(node, state)
        # elementwise
        if isinstance(state, _Acc):
            if op not in ("Relu", "BatchNormalization"):
                _, c = self._const_operand(node)
                self._per_channel(node, c, state.index)
            state.nodes.append(node)
            return state
        return self.affine_codes(node, state)

    def _per_channel(self, node, c, index):
        """Refuse a constant that differs between the pixels of a channel (the hardware has one threshold set
        per output channel)."""
        try:
            full = np.broadcast_to(np.asarray(c), (1,) + index.shape)[0]
        except ValueError:
            self.fail(node, f"its constant of shape {np.shape(c)} does not broadcast to the tensor "
                            f"{(1,) + index.shape}")
        flat = full.reshape(full.shape[0], -1)
        if not np.all(flat == flat[:, :1]):
            self.fail(node, "its constant differs between pixels of a channel; only per-channel or per-tensor "
                            "constants are supported")

    def settle(self, node, state):
        if isinstance(state, _Acc):
            self.fail(node, "its input is not quantized (a MatMul/Gemm/Conv output reaches it without a "
                            "Quant, BipolarQuant, MultiThreshold or Sign in between); hwnet needs quantized "
                            "activations between layers")
        if state.pad is not None and node.op_type != "Conv":
            self.fail(node, "follows a Pad; only a Conv may take a padded tensor")
        return state

    def affine_codes(self, node, state):
        """Mul/Div/Add/Sub by a constant, or an inference BatchNormalization, on codes: fold into ``a``, ``b``."""
        state = self.settle(node, state)
        op = node.op_type
        if op == "Relu":
            lo = np.minimum(state.a * state.dtype.min, state.a * state.dtype.max) + state.b
            if np.all(lo >= 0):
                return state
            self.fail(node, "a Relu on quantized values that can be negative needs a quantizer after it; "
                            "put a Quant after the Relu")
        if op == "BatchNormalization":
            gamma, beta, mean, var = (self._need(node, i).astype(np.float64) for i in range(1, 5))
            eps = float(self.attr(node, "epsilon", 1e-5))
            k = gamma / np.sqrt(var + eps)
            shape = (-1,) + (1,) * (state.index.ndim - 1)
            mul = self._per_element(k.reshape(shape), state.index, node)
            add = self._per_element((beta - mean * k).reshape(shape), state.index, node)
            return _Codes(state.dtype, state.index, state.a * mul, state.b * mul + add)
        const_first, c = self._const_operand(node)
        c = self._per_element(c, state.index, node)
        a, b = state.a, state.b
        if op == "Mul":
            a, b = a * c, b * c
        elif op == "Div":
            a, b = a / c, b / c
        elif op == "Add":
            b = b + c
        elif const_first:  # c - x
            a, b = -a, c - b
        else:
            b = b - c
        return _Codes(state.dtype, state.index, a, b)

    def layout(self, node, state):
        if isinstance(state, _Acc):
            self.fail(node, "rearranges a MatMul/Conv output before its quantizer; quantize first")
        state = self.settle(node, state)
        rec = self._layout_record(node, state.index.ndim + 1)
        new = _apply_layout(rec, state.index[None], lambda why: self.fail(node, why))
        return _Codes(state.dtype, new[0], state.a, state.b)

    def _layout_record(self, node, ndim):
        """A JSON record of a Reshape/Flatten/Transpose that keeps the batch axis first (see
        :func:`_apply_layout`)."""
        op = node.op_type
        if op == "Flatten":
            axis = int(self.attr(node, "axis", 1))
            if axis != 1:
                self.fail(node, f"flattens from axis {axis}; only axis 1 (keep the batch axis) is supported")
            return {"op": "Flatten"}
        if op == "Transpose":
            perm = [int(p) for p in self.attr(node, "perm", list(range(ndim))[::-1])]
            if perm[0] != 0:
                self.fail(node, f"moves the batch axis (perm {perm}); only the other axes may move")
            return {"op": "Transpose", "perm": perm}
        shape = [int(v) for v in self._need(node, 1)]
        if self.attr(node, "allowzero", 0) and 0 in shape:
            self.fail(node, "reshapes to a zero-size axis (allowzero=1); not supported")
        return {"op": "Reshape", "shape": shape}

    def _canonicalize(self, node, state):
        """Make a 3-D codes tensor the NCHW view of the IR's NHWC vector (reordering the network input if the
        tensor is still the input), or refuse."""
        if state.index.ndim != 3:
            self.fail(node, f"takes a {state.index.ndim + 1}-D tensor; hwnet's convolutions and pools take "
                            f"NCHW images")
        c, h, w = state.index.shape
        want = _canonical_nchw(c, h, w)
        if np.array_equal(state.index, want):
            return state
        if self.layers:
            self.fail(node, "its input is not an NCHW image in the order the layer before it produces (a "
                            "Transpose/Reshape in between reorders it); hwnet keeps images NHWC")
        move = np.empty(state.index.size, dtype=np.int64)
        move[state.index.reshape(-1)] = want.reshape(-1)
        self.input_perm = move[self.input_perm]
        a, b = np.empty_like(state.a), np.empty_like(state.b)
        a[move], b[move] = state.a, state.b
        return _Codes(state.dtype, want, a, b, state.pad)

    def _uniform(self, node, values, what):
        if not np.all(values == values.flat[0]):
            self.fail(node, f"its input has per-element or per-channel {what}; hwnet needs one {what} for the "
                            f"whole input of a MatMul/Conv (a per-tensor activation quantizer)")
        return float(values.flat[0])

    def pad(self, node, state):
        mode = self.attr(node, "mode", "constant")
        if mode != "constant":
            self.fail(node, f"pads in mode {mode!r}; only constant padding is supported")
        state = self._canonicalize(node, state)
        pads = [int(v) for v in (self._need(node, 1) if len(node.input) > 1 and node.input[1]
                                 else self.attr(node, "pads"))]
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
            self.fail(node, f"pads {pads}: only non-negative padding of the two spatial axes is supported")
        value = float(np.ravel(self.const(node.input[2]))[0]) if len(node.input) > 2 and node.input[2] else 0.0
        if state.pad is not None:
            self.fail(node, "follows another Pad; merge them")
        return _Codes(state.dtype, state.index, state.a, state.b, ((pads[2], pads[6], pads[3], pads[7]), value))

    def _pad_code(self, node, state, value):
        a = self._uniform(node, state.a, "scale")
        b = self._uniform(node, state.b, "offset")
        from fractions import Fraction
        q = (Fraction(value) - Fraction(b)) / Fraction(a)
        if q.denominator != 1 or not state.dtype.min <= q <= state.dtype.max or \
                (state.dtype.kind in ("bipolar",) and q not in (-1, 1)) or \
                (state.dtype.kind == "ternary" and q not in (-1, 0, 1)):
            self.fail(node, f"pads with the real value {value:g}, which is not a value of its {state.dtype} "
                            f"input (value = {a:g} * q + {b:g}); hwnet pads with a legal input value: use a Pad "
                            f"node whose value is one, or no padding")
        return int(q)

    # -- layers ----------------------------------------------------------------------------------------------------

    def _weights(self, node, name):
        """(integer weights in ONNX layout, IR type, per-element scale array of the same shape)."""
        wnode = self.producers.get(name)
        if wnode is not None and wnode.op_type in ("Quant", "BipolarQuant") and self.const(name) is not None:
            w = self._need(wnode, 0).astype(np.float32)
            rec = self._quantizer_record(wnode)
            dtype, scale, offset = self._quantizer_levels(wnode, rec)
            if np.any(offset != 0):
                self.fail(wnode, "quantizes weights with a zero point; hwnet needs symmetric weights")
            from qonnx.core.onnx_exec import execute_node
            context = {i: self.const(i) for i in wnode.input if i}
            context[name] = np.zeros_like(w)
            execute_node(wnode, context, self.graph, self.opset)
            scale = np.broadcast_to(np.asarray(scale, np.float64), w.shape)
            q = np.rint(context[name].astype(np.float64) / scale)
            return q.astype(np.int64), dtype, scale
        w = self.const(name)
        if w is None:
            self.fail(node, "its weights are not constant")
        w = np.asarray(w, np.float64)
        if np.any(np.mod(w, 1)):
            self.fail(node, "its weights are floats without a Quant/BipolarQuant node; hwnet needs quantized "
                            "weights (integer values, or a quantizer on the weight initializer)")
        q = w.astype(np.int64)
        vals = set(np.unique(q).tolist())
        dtype = BIPOLAR if vals <= {-1, 1} else TERNARY if vals <= {-1, 0, 1} else type_for_range(q.min(), q.max())
        return q, dtype, np.ones(w.shape)

    def _row_scale(self, node, scale, axis):
        """Per output row, from a per-element weight scale constant along ``axis`` (the input axes)."""
        s = np.moveaxis(scale, axis, 0).reshape(scale.shape[axis], -1)
        if not np.all(s == s[:, :1]):
            self.fail(node, "its weight scale varies along the input axis; per-output-channel or per-tensor "
                            "weight scales only")
        return s[:, 0]

    def matmul(self, node, state):
        if state.index.ndim != 1:
            self.fail(node, f"takes a {state.index.ndim + 1}-D tensor; flatten it first (Flatten or Reshape to "
                            f"(N, features))")
        if node.op_type == "Gemm":
            if self.attr(node, "transA", 0):
                self.fail(node, "transposes its data input (transA=1); not supported")
            w, dtype, scale = self._weights(node, node.input[1])
            if not self.attr(node, "transB", 0):
                w, scale = w.T, scale.T
            alpha, beta = float(self.attr(node, "alpha", 1.0)), float(self.attr(node, "beta", 1.0))
            bias = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        else:
            w, dtype, scale = self._weights(node, node.input[1])
            if w.ndim != 2:
                self.fail(node, f"has {w.ndim}-D weights; only 2-D MatMul weights are supported")
            w, scale = w.T, scale.T
            alpha, beta, bias = 1.0, 1.0, None
        out, k = w.shape
        if k != state.index.size:
            self.fail(node, f"takes {k} inputs but gets {state.index.size}")
        row_scale = self._row_scale(node, scale, 0) * alpha
        a = self._uniform(node, state.a, "scale")
        weights = np.empty_like(w)
        weights[:, state.index] = w
        offset = row_scale * (w.astype(np.float64) @ state.b[state.index])
        if bias is not None:
            offset = offset + beta * np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (out,))
        return _Acc(kind="dense", name=node.name, weights=weights, weight_type=dtype, in_type=state.dtype,
                    scale=row_scale * a, offset=offset, index=np.arange(out))

    def conv(self, node, state):
        pending = state.pad
        state = self._canonicalize(node, state)
        w, dtype, scale = self._weights(node, node.input[1])
        if w.ndim != 4:
            self.fail(node, f"has {w.ndim}-D weights; only 2-D convolutions (OC, IC, KH, KW) are supported")
        if int(self.attr(node, "group", 1)) != 1:
            self.fail(node, "is a grouped (e.g. depthwise) convolution; only group=1 is supported")
        if any(d != 1 for d in self.attr(node, "dilations", [1, 1])):
            self.fail(node, "is dilated; only dilation 1 is supported")
        if self.attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            self.fail(node, "uses auto_pad; give explicit pads")
        oc, ic, kh, kw = w.shape
        c, h, wd = state.index.shape
        if ic != c:
            self.fail(node, f"takes {ic} input channels but gets {c}")
        pads = list(self.attr(node, "pads", [0, 0, 0, 0]))
        padding = (pads[0], pads[2], pads[1], pads[3])  # ONNX: top, left, bottom, right
        pad_value = None
        if any(padding):
            pad_value = self._pad_code(node, state, 0.0)
        if pending is not None:
            if any(padding) and pad_value != self._pad_code(node, state, pending[1]):
                self.fail(node, "pads with 0 after a Pad node with another value; use one of them")
            pad_value = self._pad_code(node, state, pending[1])
            padding = tuple(p + q for p, q in zip(padding, pending[0]))
        strides = tuple(self.attr(node, "strides", [1, 1]))
        row_scale = self._row_scale(node, scale, 0)
        a = self._uniform(node, state.a, "scale")
        b = self._uniform(node, state.b, "offset")
        offset = row_scale * b * w.reshape(oc, -1).sum(axis=1)
        if len(node.input) > 2 and node.input[2]:
            offset = offset + np.asarray(self.const(node.input[2]), np.float64).reshape(-1)
        layer = dict(in_shape=(h, wd, c), stride=strides, padding=padding, pad_value=pad_value)
        oh, ow, _ = window_out_shape((h, wd, c), (kh, kw), strides, padding)
        if oh < 1 or ow < 1:
            self.fail(node, f"its {kh}x{kw} kernel does not fit the {h}x{wd} input")
        return _Acc(kind="conv", name=node.name, weights=w.transpose(0, 2, 3, 1), weight_type=dtype,
                    in_type=state.dtype, scale=row_scale * a, offset=offset, index=_canonical_nchw(oc, oh, ow),
                    conv=layer)

    def maxpool(self, node, state):
        k = tuple(self.attr(node, "kernel_shape"))
        s = tuple(self.attr(node, "strides", list(k)))
        if any(self.attr(node, "pads", [0, 0, 0, 0])) or any(d != 1 for d in self.attr(node, "dilations", [1, 1])):
            self.fail(node, "pads or dilates; only unpadded, undilated max-pooling is supported")
        if isinstance(state, _Acc):
            if state.nodes:
                self.fail(node, "pools after elementwise ops on a MatMul/Conv output; pool the convolution's "
                                "output directly or after its quantizer")
            if state.kind != "conv":
                self.fail(node, "pools a dense layer's output")
            c, h, w = state.index.shape
            state.pools.append((node, (h, w, c), k, s))
            oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
            state.index = _canonical_nchw(c, oh, ow)
            return state
        state = self._canonicalize(node, self.settle(node, state))
        c, h, w = state.index.shape
        a = state.a.reshape(h, w, c)
        b = state.b.reshape(h, w, c)
        if not (np.all(a == a[:1, :1]) and np.all(b == b[:1, :1])) or np.any(a <= 0):
            self.fail(node, "pools values whose scale is not positive and the same at every pixel of a channel")
        pool = MaxPool2d(in_shape=(h, w, c), kernel=k, stride=s, name=node.name)
        self.layers.append(pool)
        oh, ow, _ = pool.out_shape
        n = oh * ow * c
        return _Codes(state.dtype, _canonical_nchw(c, oh, ow), np.tile(a[0, 0], oh * ow)[:n],
                      np.tile(b[0, 0], oh * ow)[:n])

    # -- closing a layer -------------------------------------------------------------------------------------------

    def quantize(self, node, state):
        if isinstance(state, _Codes):
            return self.requantize(node, self.settle(node, state))
        rec = None if node.op_type in ("Sign", "Trunc") else self._quantizer_record(node)
        lo, hi = self._ir_layer(state).row_acc_ranges(state.in_type)
        g = self._evaluator(node, state, rec)
        sign, weights, wtype = self._orient(state, g, lo, hi)
        if state.pools and np.any(sign < 0):
            self.fail(state.pools[0][0], "pools accumulators whose activation decreases with them (a negative "
                                         "scale); pool after the quantizer instead")
        dtype, a, b = self._out_levels(node, rec, g, lo, hi, sign)
        thresholds = self._search(g, lo, hi, sign, dtype.values()[1:])
        self._emit(state, weights, wtype, thresholds, dtype)
        return _Codes(dtype, state.index, self._per_channel_values(a, state.index, node),
                      self._per_channel_values(b, state.index, node))

    def _orient(self, state, g, lo, hi):
        """``(sign, weights, weight type)``: per output channel +1, or -1 where ``g`` decreases (a negative scale),
        and the weights with those rows negated, in their type or the narrowest that holds the negated values."""
        sign = np.where(g(hi)[0] < g(lo)[0], -1, 1)
        weights = state.weights * sign.reshape((-1,) + (1,) * (state.weights.ndim - 1))
        wtype = state.weight_type
        if weights.size and (weights.min() < wtype.min or weights.max() > wtype.max):
            wtype = type_for_range(weights.min(), weights.max())
        return sign, weights, wtype

    def _per_channel_values(self, v, index, node):
        """A quantizer's scale or offset (one number, or one per channel) per element of ``index``, in IR order."""
        v = np.asarray(v, np.float64)
        if v.size > 1:
            v = v.reshape((-1,) + (1,) * (index.ndim - 1))
        return self._per_element(v, index, node)

    def _ir_layer(self, state):
        """The pending layer as a raw IR :class:`~hwnet.ir.Dense` (a convolution's patch product)."""
        if state.kind == "dense":
            return Dense(weights=state.weights, weight_type=state.weight_type, name=state.name)
        return Conv2d(weights=state.weights, weight_type=state.weight_type, name=state.name, **state.conv).matmul

    def _emit(self, state, weights, wtype, thresholds, dtype):
        if state.kind == "dense":
            self.layers.append(Dense(weights=weights, weight_type=wtype, thresholds=thresholds, out_type=dtype,
                                     name=state.name))
        else:
            self.layers.append(Conv2d(weights=weights, weight_type=wtype, thresholds=thresholds, out_type=dtype,
                                      name=state.name, **state.conv))
        for node, in_shape, k, s in state.pools:
            self.layers.append(MaxPool2d(in_shape=in_shape, kernel=k, stride=s, name=node.name))

    def _evaluator(self, node, state, rec):
        """``g(acc)``: the quantizer's integer output level for accumulators ``acc`` (shape (n, channels)),
        computed by qonnx from the pending nodes and ``node`` in float32."""
        from onnx import TensorProto, helper
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes
        nodes = list(state.nodes) + ([node] if node is not None else [])
        channels = state.scale.size
        spatial = (1, 1) if state.kind == "conv" else ()
        first = nodes[0].input[0] if nodes else None
        inits, seen = [], set()
        for n in nodes:
            for i in n.input[1:]:
                if i and i not in seen:
                    seen.add(i)
                    inits.append(helper.make_tensor(i, TensorProto.FLOAT if self.const(i).dtype.kind == "f"
                                                    else TensorProto.INT64, np.shape(self.const(i)),
                                                    np.asarray(self.const(i)).reshape(-1).tolist()))
        cache = {}

        def run(v):
            if not nodes:
                return v
            key = v.shape
            if key not in cache:
                graph = helper.make_graph(
                    nodes, "hwnet_eval",
                    [helper.make_tensor_value_info(first, TensorProto.FLOAT, list(v.shape))],
                    [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], inits)
                m = helper.make_model(graph, opset_imports=list(self.model.model.opset_import))
                cache[key] = ModelWrapper(m).transform(InferShapes())
            return execute_onnx(cache[key], {first: v})[nodes[-1].output[0]]

        def g(acc):
            acc = np.asarray(acc, np.int64).reshape(-1, channels)
            v = (state.scale * acc + state.offset).astype(np.float32).reshape((-1, channels) + spatial)
            out = np.asarray(run(v), np.float64).reshape(-1, channels)
            return self._level(node, rec, out), out

        return g

    def _level(self, node, rec, out):
        if node is None:
            return out
        if node.op_type == "Sign":
            return np.rint(out).astype(np.int64)
        if node.op_type == "Trunc":
            return np.rint(out / self._trunc_scale(node)).astype(np.int64)
        dtype, a, b = self._quantizer_levels(node, rec)
        a = np.broadcast_to(np.asarray(a, np.float64).reshape(-1), (out.shape[1],)) if np.size(a) > 1 else a
        b = np.broadcast_to(np.asarray(b, np.float64).reshape(-1), (out.shape[1],)) if np.size(b) > 1 else b
        return np.rint((out - b) / a).astype(np.int64)

    def _trunc_scale(self, node):
        """The scale of a Trunc's integer output: ``scale`` (v1: x, scale, zero point, input bits, output bits) or
        ``output_scale`` (v2: x, scale, zero point, input bits, output scale, output bits)."""
        if np.any(self._need(node, 2) != 0):
            self.fail(node, "has a zero point; only Trunc with zero point 0 is supported")
        scale = self._need(node, 4 if len(node.input) >= 6 else 1).astype(np.float64).reshape(-1)
        if scale.size != 1:
            self.fail(node, "has a per-channel scale; only a per-tensor Trunc is supported")
        return scale[0]

    def _out_levels(self, node, rec, g, lo, hi, sign):
        """(IR out type, a, b) of the closing quantizer."""
        if node.op_type == "Sign":  # ONNX Sign(0) = 0: ternary, unless no accumulator gives 0
            reach = self._search(g, lo, hi, sign, np.array([0, 1]))
            if np.any(reach[:, 0] < reach[:, 1]):
                return TERNARY, np.float64(1), np.float64(0)
            return BIPOLAR, np.float64(1), np.float64(0)
        if node.op_type == "Trunc":  # the levels it reaches over the accumulators' range (it is monotone)
            ends = np.concatenate([g(lo)[0].ravel(), g(hi)[0].ravel()])
            return type_for_range(ends.min(), ends.max()), np.float64(self._trunc_scale(node)), np.float64(0)
        return self._quantizer_levels(node, rec)

    def _search(self, g, lo, hi, sign, levels):
        """Per channel and level, the smallest accumulator (in ``sign * acc`` terms) whose level reaches it."""
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        # search over acc' = sign * acc in [lo', hi'], with g'(acc') = g(sign * acc')
        lo2 = np.where(sign > 0, lo, -hi)
        hi2 = np.where(sign > 0, hi, -lo)
        n = len(levels)
        left = np.broadcast_to(lo2, (n, lo2.size)).copy()
        right = np.broadcast_to(hi2 + 1, (n, lo2.size)).copy()
        target = np.asarray(levels, np.int64)[:, None]
        while np.any(left < right):
            mid = (left + right) // 2
            reached = g(mid * sign)[0] >= target
            right = np.where(reached & (left < right), mid, right)
            left = np.where(~reached & (left < right), mid + 1, left)
        return left.T

    def requantize(self, node, state):
        """A quantizer straight on codes: an elementwise threshold layer over every legal code."""
        rec = None if node.op_type in ("Sign", "Trunc") else self._quantizer_record(node)
        dtype = state.dtype
        size = state.a.size
        pseudo = _Acc(kind="dense", name=node.name, weights=np.zeros((size, 1), np.int64), weight_type=dtype,
                      in_type=dtype, scale=state.a, offset=state.b, index=np.arange(size))
        g = self._evaluator(node, pseudo, rec)
        lo = np.full(size, dtype.min, np.int64)
        hi = np.full(size, dtype.max, np.int64)
        sign = np.where(g(hi)[0] < g(lo)[0], -1, 1)
        if np.any(sign < 0):
            self.fail(node, "requantizes with a negative scale; not supported")
        out_type, a, b = self._out_levels(node, rec, g, lo, hi, sign)
        t = self._search(g, lo, hi, sign, out_type.values()[1:])
        if dtype.kind == "bipolar":  # codes are -1/+1: map thresholds onto them
            t = np.where(t > 1, 2, np.where(t > -1, 1, -1))
        if np.all(t == t[:1]):
            t = t[:1]
        self.layers.append(MultiThreshold(thresholds=t, out_type=out_type, name=node.name))
        return _Codes(out_type, state.index, self._per_channel_values(a, state.index, node),
                      self._per_channel_values(b, state.index, node))

    def finish(self, state):
        if isinstance(state, _Codes):
            if state.pad is not None:
                raise HwnetError("the graph ends with a Pad; nothing to pad")
            if not self.layers:
                raise HwnetError("the graph has no MatMul, Gemm or Conv; nothing to build")
            scale, offset = state.a, state.b
            order = state.index.reshape(-1)
        else:
            lo, hi = self._ir_layer(state).row_acc_ranges(state.in_type)
            g = self._evaluator(None, state, None)
            sign, weights, wtype = self._orient(state, g, lo, hi)
            if state.kind == "dense":
                self.layers.append(Dense(weights=weights, weight_type=wtype, name=state.name))
            else:
                self.layers.append(Conv2d(weights=weights, weight_type=wtype, name=state.name, **state.conv))
            if state.pools:
                raise HwnetError(f"{self.what(state.pools[0][0])}: pools raw accumulators at the end of the graph; "
                                 f"quantize before pooling")
            # the host's affine view of the trailing nodes, from two points per channel
            y0, y1 = g(np.zeros_like(lo))[1][0], g(sign)[1][0]
            scale, offset = y1 - y0, y0
            if state.kind == "conv":
                scale = self._per_element(scale.reshape(-1, 1, 1), state.index, None)
                offset = self._per_element(offset.reshape(-1, 1, 1), state.index, None)
            order = state.index.reshape(-1)
            self.metadata.setdefault("qonnx", {})["output_nodes"] = [n.name for n in state.nodes]
        q = self.metadata.setdefault("qonnx", {})
        q.update(output_shape=list(state.index.shape), output_order=order.tolist(),
                 output_scale=np.asarray(scale, np.float64).tolist(),
                 output_offset=np.asarray(offset, np.float64).tolist(), input_order=self.input_perm.tolist())


def _apply_layout(rec, a, fail):
    """Apply a layout record (:meth:`_Importer._layout_record`) to ``a`` (batch axis first)."""
    if rec["op"] == "Flatten":
        return a.reshape(len(a), -1)
    if rec["op"] == "Transpose":
        return a.transpose(rec["perm"])
    shape = [a.shape[i] if v == 0 else v for i, v in enumerate(rec["shape"])]
    if shape[0] not in (-1, 1, a.shape[0]):
        fail(f"reshapes to {rec['shape']}, which changes the batch axis; keep it first")
    shape[0] = len(a)
    try:
        return a.reshape(shape)
    except ValueError:
        fail(f"cannot reshape {a.shape[1:]} to {rec['shape'][1:]}")


def import_qonnx(model, *, name=None):
    """A :class:`~hwnet.ir.Network` from a QONNX graph (a path or an ``onnx.ModelProto``).

    Unsupported graphs are refused with one :class:`~hwnet.errors.HwnetError` naming the node, its op type and
    what is supported. ``network.metadata["qonnx"]`` holds what the host needs to feed the graph's float
    inputs (:func:`quantize_inputs`) and read its outputs (:func:`graph_outputs`).
    """
    import onnx
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise HwnetError(f"{path}: no such file")
        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise HwnetError(f"{path}: not an ONNX file ({type(exc).__name__}: {exc})") from None
        name = name or path.stem
        if not model.graph.node:
            raise HwnetError(f"{path}: holds no ONNX graph (no nodes); give a QONNX model file")
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())
    return _Importer(model, name or model.graph.name or "qonnx").run()


def quantize_inputs(network, x):
    """The integer network inputs (batch, input_size) for the graph's float inputs ``x`` (batch, *input
    shape), computed as the graph's first quantizer computes them in qonnx (float32)."""
    meta = network.metadata.get("qonnx")
    if meta is None:
        raise HwnetError(f"network {network.name!r} was not imported from QONNX; it takes integer inputs")
    shape = tuple(meta["input_shape"])
    x = np.asarray(x, np.float32)
    if x.shape[1:] != shape:
        raise HwnetError(f"inputs must have shape (batch, {', '.join(map(str, shape))}), got {x.shape}")
    for op in meta["input_ops"]:
        kind = op["op"]
        if kind in ("Flatten", "Transpose", "Reshape"):
            x = _apply_layout(op, x, lambda why: None)
        elif kind in ("Add", "Sub", "Mul", "Div"):
            c = np.asarray(op["const"], np.float32).reshape(op["shape"])
            lhs, rhs = (c, x) if op["const_first"] else (x, c)
            x = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[kind](lhs, rhs)
        elif kind == "BipolarQuant":
            x = np.where(x >= 0, 1, -1)
        elif kind == "Quant":
            from qonnx.custom_op.general.intquant import int_quant
            scale, zp = np.asarray(op["scale"], np.float32), np.asarray(op["zero_point"], np.float32)
            y = int_quant(x, scale, zp, np.float32(op["bits"]), op["signed"], op["narrow"], op["rounding_mode"])
            x = np.rint(y.astype(np.float64) / scale + zp)
        else:  # MultiThreshold
            from qonnx.custom_op.general.multithreshold import multithreshold
            t = np.asarray(op["thresholds"], np.float32)
            y = multithreshold(x, t, channels_last=op["data_layout"] == "NHWC")
            x = 2 * y - 1 if network.input_type.kind == "bipolar" else y + network.input_type.min
    codes = np.empty((len(x), network.input_size), np.int64)
    codes[:, np.asarray(meta["input_order"])] = np.asarray(x).reshape(len(x), -1).astype(np.int64)
    return codes


def graph_outputs(network, y):
    """The graph's float outputs (batch, *output shape) for the network's integer outputs ``y``, through the
    affine map of the graph's final scaling (exact for a quantized output; the trailing float nodes of a raw
    output as an affine map per channel)."""
    meta = network.metadata.get("qonnx")
    if meta is None:
        raise HwnetError(f"network {network.name!r} was not imported from QONNX")
    y = np.asarray(y, np.float64)
    vals = np.asarray(meta["output_scale"]) * y + np.asarray(meta["output_offset"])
    return vals[:, np.asarray(meta["output_order"])].reshape((len(y),) + tuple(meta["output_shape"]))


def integer_outputs(network, outputs):
    """The network's integer outputs that the graph's float ``outputs`` (batch, *output shape) stand for: the
    inverse of :func:`graph_outputs` (the graph's final integer scaling undone), rounded to integers."""
    meta = network.metadata.get("qonnx")
    if meta is None:
        raise HwnetError(f"network {network.name!r} was not imported from QONNX")
    out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    flat = np.empty_like(out)
    flat[:, np.asarray(meta["output_order"])] = out
    return np.rint((flat - np.asarray(meta["output_offset"])) / np.asarray(meta["output_scale"])).astype(np.int64)
