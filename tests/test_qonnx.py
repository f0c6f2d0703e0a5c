"""QONNX interchange: Brevitas-trained graphs imported and checked against qonnx's own execution on the whole
digits test split; hand-built graphs for the ops Brevitas does not emit; hwnet's exports executed by qonnx and
imported back; and every refusal, one line naming the node."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnet import golden
from hwnet.cli import main
from hwnet.errors import HwnetError
from hwnet.gateware.testing import random_cnn, random_network
from hwnet.ir import Conv2d, Dense, Network
from hwnet.qonnx_export import export_qonnx
from hwnet.qonnx_import import graph_outputs, import_qonnx, integer_outputs, quantize_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

brevitas = pytest.importorskip("brevitas")
from hwnet.qonnx_testing import QUANTIZERS, bnn_pynq_fc, brevitas_net, digits_float, export, qonnx_outputs, train_briefly  # noqa: E402,I001


@pytest.fixture(scope="module", params=[("mlp", q) for q in QUANTIZERS] + [("cnn", "binary"), ("cnn", "w2a2"),
                                                                           ("cnn", "w4a4-channel"), ("cnn", "w4a4-float")],
                ids=lambda p: "-".join(p))
def brevitas_graph(request, digits, tmp_path_factory):
    arch, quant = request.param
    model, accuracy = train_briefly(brevitas_net(arch, quant, seed=1), digits, epochs=2)
    path = export(model, tmp_path_factory.mktemp("qonnx") / f"{arch}-{quant}.onnx")
    return arch, quant, model, accuracy, path


def test_brevitas_graph_imports_and_equals_qonnx_on_every_test_input(brevitas_graph, digits):
    import torch
    arch, quant, model, accuracy, path = brevitas_graph
    assert accuracy > 0.3  # it learned something: the thresholds are not degenerate
    network = import_qonnx(path)
    x = digits_float(digits, "test")
    y = golden.execute(network, quantize_inputs(network, x))
    reference = qonnx_outputs(path, x)
    # the graph's final integer scaling undone: every output of every sample equal as integers
    np.testing.assert_array_equal(integer_outputs(network, reference), y)
    np.testing.assert_allclose(graph_outputs(network, y), reference, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        logits = model(torch.tensor(x)).numpy()
    assert np.mean(golden.classify(graph_outputs(network, y)) == logits.argmax(1)) >= 0.99
    kinds = {"binary": "bipolar", "ternary": "ternary", "w2a2": "int2", "w4a4-channel": "int4",
             "w4a4-float": "int4"}
    weights = [layer.weight_type.name for layer in network.layers if isinstance(layer, (Dense, Conv2d))]
    assert weights == [kinds[quant]] * 3
    ops = [layer.op for layer in network.layers]
    assert ops == (["dense"] * 3 if arch == "mlp" else ["conv2d", "maxpool2d", "conv2d", "dense"])
    assert network.input_type.name == "int8"


def test_finn_bnn_pynq_fc_imports_with_its_float_pre_and_post_processing(digits, tmp_path):
    # x -> 2x - 1 -> bipolar input -> [binary Gemm, batch norm, bipolar] x 2 -> binary Gemm -> TensorNorm
    import torch
    model, accuracy = train_briefly(bnn_pynq_fc(seed=3), digits, epochs=2)
    path = export(model, tmp_path / "fc.onnx")
    network = import_qonnx(path)
    assert network.input_type.name == "bipolar"
    assert [layer.weight_type.name for layer in network.layers] == ["bipolar"] * 3
    x = digits_float(digits, "test")
    y = golden.execute(network, quantize_inputs(network, x))
    np.testing.assert_array_equal(integer_outputs(network, qonnx_outputs(path, x)), y)
    with torch.no_grad():
        logits = model(torch.tensor(x)).numpy()
    # TensorNorm's scale is one number, so the class is the argmax of the raw accumulators
    assert np.mean(golden.classify(y) == logits.argmax(1)) >= 0.99 and accuracy > 0.3


# -- hand-built graphs -----------------------------------------------------------------------------------------------

def _graph(nodes, inits, in_shape, out_name, out_shape=None, opset=13):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_shape])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v, np.float32 if np.asarray(v).dtype.kind == "f"
                                                                  else np.int64), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _q(inp, out, scale, bits, signed=1, narrow=0, zp=0.0, domain="qonnx.custom_op.general", name=None):
    return helper.make_node("Quant", [inp, f"{out}_s", f"{out}_z", f"{out}_b"], [out], domain=domain,
                            name=name or out, signed=signed, narrow=narrow, rounding_mode="ROUND"), \
        {f"{out}_s": np.float32(scale), f"{out}_z": np.float32(zp), f"{out}_b": np.float32(bits)}


def _check_against_qonnx(model, x):
    network = import_qonnx(model)
    y = golden.execute(network, quantize_inputs(network, x))
    reference = qonnx_outputs(model, x)
    np.testing.assert_array_equal(integer_outputs(network, reference), y)
    return network, y


def test_finn_style_multithreshold_sign_and_layouts(rng=np.random.default_rng(5)):
    # input MultiThreshold (finn domain, 2-bit unsigned), MatMul weights in (K, M) layout, a per-channel Mul and
    # Add, a Sign (ternary out: ONNX Sign(0) = 0), Gemm with transB=0 and alpha, and a MultiThreshold (int2 out)
    k, m, n = 12, 6, 4
    w0 = rng.integers(-1, 2, size=(k, m)).astype(np.float32)
    w1 = rng.choice([-1.0, 1.0], size=(m, n)).astype(np.float32)
    t_in = np.sort(rng.uniform(-1, 1, size=(1, 3)), axis=1).astype(np.float32)
    t_out = np.sort(rng.integers(-6, 7, size=(n, 3)), axis=1).astype(np.float32) + 0.5
    q0, c0 = _q("w0", "w0q", 1.0, 2, narrow=1)
    q1 = helper.make_node("BipolarQuant", ["w1", "w1s"], ["w1q"], domain="finn.custom_op.general", name="w1q")
    nodes = [
        helper.make_node("MultiThreshold", ["x", "t_in"], ["a"], domain="finn.custom_op.general", name="mt_in",
                         out_scale=1.0, out_bias=0.0, out_dtype="UINT2"),
        q0, helper.make_node("MatMul", ["a", "w0q"], ["h"], name="mm"),
        helper.make_node("Mul", ["h", "mul_c"], ["h1"], name="mul"),
        helper.make_node("Add", ["h1", "add_c"], ["h2"], name="add"),
        helper.make_node("Sign", ["h2"], ["s"], name="sign"),
        q1, helper.make_node("Gemm", ["s", "w1q"], ["g"], name="gemm", alpha=2.0, transB=0),
        helper.make_node("MultiThreshold", ["g", "t_out"], ["y"], domain="qonnx.custom_op.general", name="mt_out",
                         out_scale=1.0, out_bias=-2.0, out_dtype="INT2"),
    ]
    inits = {"t_in": t_in, "w0": w0, **c0, "mul_c": rng.choice([-2.0, 0.5, 1.0], size=(1, m)),
             "add_c": rng.integers(-2, 3, size=(1, m)).astype(np.float32), "w1": w1, "w1s": np.float32(1.0),
             "t_out": t_out}
    model = _graph(nodes, inits, (k,), "y", [1, n])
    x = rng.uniform(-1.2, 1.2, size=(500, k)).astype(np.float32)
    network, y = _check_against_qonnx(model, x)
    assert [layer.op for layer in network.layers] == ["dense", "dense"]
    assert network.input_type.name == "uint2"
    assert network.layers[0].out_type.name in ("ternary", "bipolar")
    assert network.layers[1].out_type.name == "int2"
    assert len(np.unique(y)) > 1


def test_conv_pad_node_transpose_trunc_and_requantization(rng=np.random.default_rng(6)):
    # channels-last input transposed to NCHW, a bipolar input quantizer, a Pad with -1 before a bipolar conv,
    # batch norm with negative scales (rows negated), a 4-bit Quant, max-pool, a requantizing BipolarQuant,
    # flatten, and a Trunc closing the last layer
    h, w, c, oc = 5, 6, 2, 3
    wc = rng.choice([-1.0, 1.0], size=(oc, c, 3, 3)).astype(np.float32)
    wd = rng.integers(-3, 4, size=(oc * 2 * 3, 4)).astype(np.float32)
    qa, ca = _q("bn", "act", 0.5, 4, signed=0)
    qw, cw = _q("wd", "wdq", 1.0, 3)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("BipolarQuant", ["xt", "one"], ["xb"], domain="onnx.brevitas", name="in_q"),
        helper.make_node("BipolarQuant", ["wc", "one"], ["wcq"], domain="qonnx.custom_op.general", name="wc_q"),
        helper.make_node("Pad", ["xb", "pads", "padv"], ["xp"], mode="constant", name="pad"),
        helper.make_node("Conv", ["xp", "wcq"], ["conv"], kernel_shape=[3, 3], name="conv"),
        helper.make_node("BatchNormalization", ["conv", "g", "b", "mu", "var"], ["bn"], name="bn", epsilon=1e-3),
        qa, helper.make_node("MaxPool", ["act"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("BipolarQuant", ["pool_shift", "one"], ["pb"], domain="qonnx.custom_op.general",
                         name="requant"),
        helper.make_node("Flatten", ["pb"], ["flat"], axis=1, name="flatten"),
        qw, helper.make_node("MatMul", ["flat", "wdq"], ["mm"], name="mm"),
        helper.make_node("Trunc", ["mm", "one", "zero", "tb_in", "tb_out"], ["y"], domain="qonnx.custom_op.general",
                         name="trunc", rounding_mode="FLOOR"),
    ]
    nodes.insert(8, helper.make_node("Sub", ["pool", "shift"], ["pool_shift"], name="shift"))
    inits = {"one": np.float32(1.0), "zero": np.float32(0.0), "wc": wc,
             "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "padv": np.float32(-1.0),
             "g": rng.choice([-1.5, -0.7, 0.9], size=oc).astype(np.float32),
             "b": rng.uniform(-1, 1, size=oc).astype(np.float32), "mu": rng.uniform(-3, 3, size=oc).astype(np.float32),
             "var": rng.uniform(1, 4, size=oc).astype(np.float32), **ca, "shift": np.float32(2.0), "wd": wd, **cw,
             "tb_in": np.float32(8.0), "tb_out": np.float32(4.0)}
    model = _graph(nodes, inits, (h, w, c), "y", [1, 4])
    x = rng.normal(size=(400, h, w, c)).astype(np.float32)
    network, y = _check_against_qonnx(model, x)
    assert [layer.op for layer in network.layers] == ["conv2d", "maxpool2d", "threshold", "dense"]
    conv = network.layers[0]
    assert conv.pad_value == -1 and conv.padding == (1, 1, 1, 1)
    assert network.input_type.name == "bipolar"
    assert network.layers[-1].out_type.kind == "int"  # Trunc v1 does not clip: the levels its range reaches
    assert y.min() < 0 < y.max()


# -- export ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_export_executes_in_qonnx_with_the_golden_outputs_and_imports_back(seed, tmp_path):
    rng = np.random.default_rng(seed)
    if seed % 2:
        network = random_cnn(rng)
    else:
        network = random_network(rng, input_size=int(rng.integers(4, 40)), hidden=[int(rng.integers(2, 20))],
                                 outputs=int(rng.integers(2, 8)), input_type=str(rng.choice(["uint8", "int4",
                                                                                             "bipolar"])),
                                 last_raw=bool(rng.integers(2)), binarize_input=bool(rng.integers(2)))
    path = export_qonnx(network, tmp_path / "net.onnx")
    onnx.load(str(path))
    x = rng.choice(network.input_type.values(), size=(200, network.input_size))
    y = golden.execute(network, x)
    np.testing.assert_array_equal(qonnx_outputs(str(path), x), y)
    if any(getattr(layer, "products", None) is not None for layer in network.layers):
        # a lookup-table layer exports as a one-hot product, which the importer does not read back
        with pytest.raises(HwnetError, match=r"\(Unsqueeze\): op type Unsqueeze is not supported"):
            import_qonnx(path)
        return
    back = import_qonnx(path)
    y_back = golden.execute(back, quantize_inputs(back, x.astype(np.float32)))
    np.testing.assert_array_equal(graph_outputs(back, y_back).reshape(len(x), -1), y)


def test_a_lookup_table_layer_exports_exactly_as_a_one_hot_product(tmp_path):
    rng = np.random.default_rng(11)
    table = rng.integers(-9, 10, size=(4, 4))  # not an outer product
    dense = Dense(weights=rng.integers(0, 4, size=(5, 6)), weight_type="uint2", products=table, name="lut")
    network = Network(input_type="uint2", input_size=6, layers=[dense])
    x = np.array(np.meshgrid(*[range(4)] * 6)).reshape(6, -1).T  # every input
    np.testing.assert_array_equal(qonnx_outputs(str(export_qonnx(network, tmp_path / "lut.onnx")), x),
                                  golden.execute(network, x))


def test_cli_export_and_compile_an_onnx_file(tmp_path, capsys):
    rng = np.random.default_rng(3)
    network = random_network(rng, input_size=16, hidden=[8], outputs=4, input_type="uint8")
    from hwnet import ir
    ir.save(network, tmp_path / "net.npz")
    assert main(["export", str(tmp_path / "net.npz"), "--out", str(tmp_path / "net.onnx")]) == 0
    assert main(["export", str(tmp_path / "net.npz"), "--out", str(tmp_path / "net.onnx")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "net.onnx"), "--out", str(tmp_path / "design"), "--no-synth"]) == 0
    loaded = ir.load(tmp_path / "design" / "network.npz")
    x = rng.choice(network.input_type.values(), size=(50, 16))
    np.testing.assert_array_equal(graph_outputs(loaded, golden.execute(loaded, x)).reshape(50, -1),
                                  golden.execute(network, x))


# -- refusals --------------------------------------------------------------------------------------------------------

def _mlp_graph(extra_nodes=(), extra_inits=None, after="mm", in_domain="qonnx.custom_op.general"):
    qi, ci = _q("x", "xq", 1.0, 4, domain=in_domain, name="in_q")
    qw, cw = _q("w", "wq", 1.0, 2, narrow=1)
    nodes = [qi, qw, helper.make_node("MatMul", ["xq", "wq"], ["mm"], name="mm"), *extra_nodes]
    inits = {**ci, **cw, "w": np.ones((4, 3), np.float32), **(extra_inits or {})}
    return _graph(nodes, inits, (4,), nodes[-1].output[0] if extra_nodes else after, [1, 3])


@pytest.mark.parametrize("make, message", [
    (lambda: _mlp_graph([helper.make_node("Sigmoid", ["mm"], ["y"], name="sig")]),
     r"^node 'sig' \(Sigmoid\): op type Sigmoid is not supported; supported are: MatMul, Gemm, Conv"),
    (lambda: _mlp_graph(in_domain="my.domain"),
     r"^node 'in_q' \(Quant\): unknown domain 'my.domain'; supported domains are qonnx.custom_op.general, "
     r"finn.custom_op.general, onnx.brevitas$"),
    (lambda: _mlp_graph([helper.make_node("Add", ["mm", "mm"], ["y"], name="twice")]),
     r"^tensor 'mm' feeds 2 nodes; hwnet imports chains \(one data path from input to output, no branches or "
     r"skip connections\)$"),
    (lambda: _mlp_graph([helper.make_node("Relu", ["mm"], ["r"], name="relu"),
                         helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")], {"w2": np.ones((3, 3))}),
     r"^node 'mm2' \(MatMul\): its input is not quantized"),
    (lambda: _graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], {"w": np.ones((4, 3))}, (4,), "y"),
     r"^node 'mm' \(MatMul\): the network input must be quantized first"),
    (lambda: _graph([_q("x", "xq", 1.0, 4)[0], helper.make_node("MatMul", ["xq", "w"], ["y"], name="mm")],
                    {**_q("x", "xq", 1.0, 4)[1], "w": np.full((4, 3), 0.5)}, (4,), "y"),
     r"^node 'mm' \(MatMul\): its weights are floats without a Quant/BipolarQuant node"),
    (lambda: _graph([_q("x", "xq", 1.0, 4)[0], helper.make_node("Mul", ["xq", "pc"], ["xs"], name="per_channel"),
                     helper.make_node("MatMul", ["xs", "w"], ["y"], name="mm")],
                    {**_q("x", "xq", 1.0, 4)[1], "pc": np.array([[1, 2, 1, 1]], np.float32),
                     "w": np.ones((4, 3))}, (4,), "y"),
     r"^node 'mm' \(MatMul\): its input has per-element or per-channel scale"),
])
def test_unsupported_graphs_are_refused_with_one_line_naming_the_node(make, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make()
    with pytest.raises(HwnetError, match=message) as info:
        import_qonnx(model)
    assert "\n" not in str(info.value)


def _conv_graph(conv_attrs, in_quant="bipolar"):
    qi = (helper.make_node("BipolarQuant", ["x", "one"], ["xq"], domain="qonnx.custom_op.general", name="in_q")
          if in_quant == "bipolar" else _q("x", "xq", 1.0, 4, name="in_q")[0])
    nodes = [qi, helper.make_node("Conv", ["xq", "w"], ["y"], name="conv", **conv_attrs)]
    inits = {"one": np.float32(1.0), "w": np.ones((2, 1, 3, 3), np.float32), **_q("x", "xq", 1.0, 4)[1]}
    return _graph(nodes, inits, (1, 6, 6), "y")


@pytest.mark.parametrize("attrs, message", [
    (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), r"pads with the real value 0, which is not a value of its "
                                                   r"bipolar input"),
    (dict(kernel_shape=[3, 3], dilations=[2, 2]), r"is dilated; only dilation 1 is supported"),
    (dict(kernel_shape=[3, 3], group=2), r"is a grouped \(e.g. depthwise\) convolution; only group=1"),
])
def test_unsupported_convolutions_are_refused(attrs, message):
    with pytest.raises(HwnetError, match=r"^node 'conv' \(Conv\): " + message):
        import_qonnx(_conv_graph(attrs))


def test_bad_files_and_cli_refusals_write_nothing(tmp_path, capsys):
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \x00\x01")
    with pytest.raises(HwnetError, match=r"junk.onnx: not an ONNX file"):
        import_qonnx(tmp_path / "junk.onnx")
    with pytest.raises(HwnetError, match=r"missing.onnx: no such file"):
        import_qonnx(tmp_path / "missing.onnx")
    onnx.save(_mlp_graph([helper.make_node("Sigmoid", ["mm"], ["y"], name="sig")]), str(tmp_path / "sig.onnx"))
    assert main(["compile", str(tmp_path / "sig.onnx"), "--out", str(tmp_path / "design"), "--no-synth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnet: error: node 'sig' (Sigmoid): op type Sigmoid is not supported") and err.count("\n") == 1
    assert not (tmp_path / "design").exists()


def test_a_trained_network_exports_and_qonnx_gives_its_outputs_on_the_whole_test_split(digits, tmp_path):
    from hwnet.train.lower import lower
    from hwnet.train.trainer import train_binarynet
    model, _ = train_binarynet(digits, hidden=(32,), epochs=1, seed=0)
    network = lower(model, name="digits")
    path = export_qonnx(network, tmp_path / "digits.onnx")
    np.testing.assert_array_equal(qonnx_outputs(path, digits.test_x), golden.execute(network, digits.test_x))


def test_simulate_inputs_of_an_imported_network_may_be_the_graphs_float_inputs(brevitas_graph, digits, tmp_path):
    from hwnet.flow import load_inputs
    *_, path = brevitas_graph
    network = import_qonnx(path)
    x = digits_float(digits, "test")[:20]
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.npy", network), quantize_inputs(network, x))
    np.save(tmp_path / "codes.npy", quantize_inputs(network, x))
    np.testing.assert_array_equal(load_inputs(tmp_path / "codes.npy", network), quantize_inputs(network, x))
