"""Conv2d and MaxPool2d in the IR and the golden model, against independent references: torch's conv2d (float64,
exact at these sizes) and plain Python loops."""

import json
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnet import golden, ir
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError


def _torch_conv(x, w, stride, padding, pad_value):
    """x (batch, H, W, C), w (OC, KH, KW, C) -> (batch, OH * OW * OC) int64, flattened NHWC."""
    top, bottom, left, right = padding
    xt = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2)                     # NCHW
    xt = F.pad(xt, (left, right, top, bottom), mode="constant", value=float(pad_value))  # last dim first
    wt = torch.tensor(w, dtype=torch.float64).permute(0, 3, 1, 2)                     # (OC, C, KH, KW)
    y = F.conv2d(xt, wt, stride=stride).permute(0, 2, 3, 1)                           # NHWC
    return y.reshape(len(x), -1).round().to(torch.int64).numpy()


def _loop_conv_products(x, w, table, wt, xt, stride, padding, pad_value):
    """Products-table convolution, one element at a time; padding by index test, no array padding."""
    batch, h, wd, c = x.shape
    oc_n, kh, kw, _ = w.shape
    (sh, sw), (top, bottom, left, right) = stride, padding
    oh, ow = (h + top + bottom - kh) // sh + 1, (wd + left + right - kw) // sw + 1
    wv, xv = list(wt.values()), list(xt.values())
    out = np.zeros((batch, oh, ow, oc_n), dtype=np.int64)
    for b in range(batch):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(oc_n):
                    total = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            for ic in range(c):
                                iy, ix = oy * sh + ky - top, ox * sw + kx - left
                                v = x[b, iy, ix, ic] if 0 <= iy < h and 0 <= ix < wd else pad_value
                                total += int(table[wv.index(w[oc, ky, kx, ic]), xv.index(v)])
                    out[b, oy, ox, oc] = total
    return out.reshape(batch, -1)


def _loop_maxpool(x, kernel, stride):
    batch, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((batch, oh, ow, c), dtype=np.int64)
    for b in range(batch):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    out[b, oy, ox, ch] = max(int(x[b, oy * sh + ky, ox * sw + kx, ch])
                                             for ky in range(kh) for kx in range(kw))
    return out.reshape(batch, -1)


def _random_geometry(rng):
    """Kernel 1..4, stride 1..3, asymmetric padding 0..2, channels 1..5, an input the kernel fits."""
    kh, kw = rng.integers(1, 5, size=2)
    stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=4))
    h = int(rng.integers(max(1, kh - padding[0] - padding[1]), 9))
    w = int(rng.integers(max(1, kw - padding[2] - padding[3]), 9))
    cin, cout = (int(v) for v in rng.integers(1, 6, size=2))
    return (int(kh), int(kw)), stride, padding, (h, w, cin), cout


@pytest.mark.parametrize("in_type", ["bipolar", "uint3", "int4"])
@pytest.mark.parametrize("weight_type", ["bipolar", "ternary", "int4", "pot3"])
def test_conv_matches_torch(weight_type, in_type):
    rng = np.random.default_rng(zlib.crc32(f"{weight_type} {in_type}".encode()))
    wt, xt = parse_type(weight_type), parse_type(in_type)
    for case in range(12):
        (kh, kw), stride, padding, (h, w, cin), cout = _random_geometry(rng)
        weights = rng.choice(wt.values(), size=(cout, kh, kw, cin))
        pad_value = None if case % 3 == 0 else int(rng.choice(xt.values()))
        conv = ir.Conv2d(weights=weights, weight_type=wt, in_shape=(h, w, cin), stride=stride, padding=padding,
                         pad_value=pad_value, name="c")
        net = ir.Network(input_type=xt, input_size=h * w * cin, layers=[conv])
        x = rng.choice(xt.values(), size=(5, h, w, cin))
        expected = _torch_conv(x, weights, stride, padding, conv.pad_value)
        got = golden.execute(net, x.reshape(5, -1))
        assert got.shape == (5, conv.out_size) == expected.shape
        np.testing.assert_array_equal(got, expected, err_msg=f"case {case}: {conv.in_shape} k={kh}x{kw} "
                                                             f"s={stride} p={padding} pad={conv.pad_value}")
        # the derived accumulator type holds every value seen (padding included)
        lo, hi = conv.acc_range()
        assert lo <= expected.min() and expected.max() <= hi
        # thresholded: per output channel, the same thresholds at every pixel
        out_type = parse_type(["bipolar", "uint2", "int3", "ternary"][case % 4])
        t = np.sort(rng.integers(lo - 1, hi + 2, size=(cout, out_type.num_values - 1)), axis=1)
        tnet = ir.Network(input_type=xt, input_size=h * w * cin, layers=[ir.Conv2d(
            weights=weights, weight_type=wt, in_shape=(h, w, cin), stride=stride, padding=padding,
            pad_value=pad_value, thresholds=t, out_type=out_type, name="c")])
        want = golden.multithreshold(expected.reshape(-1, cout), t, out_type).reshape(5, -1)
        np.testing.assert_array_equal(golden.execute(tnet, x.reshape(5, -1)), want)


@pytest.mark.parametrize("weight_type,in_type", [("uint2", "uint2"), ("bipolar", "bipolar"), ("pot3", "ternary")])
def test_products_table_conv_matches_loops(weight_type, in_type):
    rng = np.random.default_rng(len(weight_type) * 10 + len(in_type))
    wt, xt = parse_type(weight_type), parse_type(in_type)
    for case in range(4):
        (kh, kw), stride, padding, (h, w, cin), cout = _random_geometry(rng)
        table = rng.integers(-20, 21, size=(wt.num_values, xt.num_values))
        weights = rng.choice(wt.values(), size=(cout, kh, kw, cin))
        pad_value = int(xt.values()[-1]) if case % 2 else None
        conv = ir.Conv2d(weights=weights, weight_type=wt, in_shape=(h, w, cin), stride=stride, padding=padding,
                         pad_value=pad_value, products=table, name="lut")
        net = ir.Network(input_type=xt, input_size=h * w * cin, layers=[conv])
        x = rng.choice(xt.values(), size=(3, h, w, cin))
        expected = _loop_conv_products(x, weights, table, wt, xt, stride, padding, conv.pad_value)
        np.testing.assert_array_equal(golden.execute(net, x.reshape(3, -1)), expected)


def test_kernel_element_order_is_ky_kx_ic():
    # The contract: a patch is flattened (ky, kx, ic), ic fastest; the Dense view's weights follow it.
    rng = np.random.default_rng(5)
    w = rng.integers(-8, 8, size=(3, 2, 4, 5))
    conv = ir.Conv2d(weights=w, weight_type="int4", in_shape=(6, 7, 5))
    for oc, ky, kx, ic in [(0, 0, 0, 0), (1, 1, 2, 3), (2, 1, 3, 4), (2, 0, 1, 2)]:
        assert conv.matmul.weights[oc, (ky * 4 + kx) * 5 + ic] == w[oc, ky, kx, ic]
    assert conv.matmul.weights.shape == (3, 40) and conv.patch_size == 40
    assert not isinstance(conv, ir.Dense)
    # one weight at (ky, kx, ic) = (1, 2, 3) picks x[oy + 1, ox + 2, 3]
    one = np.zeros((1, 2, 4, 5), dtype=int)
    one[0, 1, 2, 3] = 1
    net = ir.Network(input_type="uint4", input_size=6 * 7 * 5,
                     layers=[ir.Conv2d(weights=one, weight_type="int2", in_shape=(6, 7, 5))])
    x = rng.integers(0, 16, size=(2, 6, 7, 5))
    np.testing.assert_array_equal(golden.execute(net, x.reshape(2, -1)),
                                  x[:, 1:6, 2:6, 3].reshape(2, -1))


@pytest.mark.parametrize("in_type", ["bipolar", "uint3", "int4", "ternary"])
def test_maxpool_matches_loops(in_type):
    rng = np.random.default_rng(len(in_type))
    xt = parse_type(in_type)
    for kernel, stride, shape in [((2, 2), None, (6, 6, 3)), ((3, 2), (1, 2), (5, 7, 2)), ((2, 3), (3, 1), (7, 5, 4)),
                                  ((1, 1), (2, 2), (4, 5, 1)), ((3, 3), None, (3, 3, 5))]:
        pool = ir.MaxPool2d(in_shape=shape, kernel=kernel, stride=stride, name="p")
        net = ir.Network(input_type=xt, input_size=int(np.prod(shape)), layers=[pool])
        x = rng.choice(xt.values(), size=(6,) + shape)
        x[0] = xt.min                                          # every window at the minimum
        expected = _loop_maxpool(x, kernel, stride or kernel)
        got = golden.execute(net, x.reshape(6, -1))
        np.testing.assert_array_equal(got, expected)
        assert net.output_type == xt and got.shape == (6, pool.out_size)
        assert np.all(got[0] == xt.min)


def _chain(rng):
    """uint8 -> binarize -> conv (bipolar, pad +1) -> maxpool -> conv (ternary, pad -1) -> dense (int4, raw)."""
    w1 = rng.choice([-1, 1], size=(4, 3, 3, 2))
    t1 = rng.integers(-4, 5, size=(4, 1))
    w2 = rng.choice([-1, 0, 1], size=(3, 2, 2, 4))
    t2 = np.sort(rng.integers(-5, 6, size=(3, 3)), axis=1)
    w3 = rng.integers(-8, 8, size=(5, 3 * 3 * 3))
    net = ir.Network(name="convnet", input_type="uint8", input_size=7 * 6 * 2, metadata={"kind": "conv"}, layers=[
        ir.MultiThreshold(thresholds=[[128]], out_type="bipolar", name="bin"),
        ir.Conv2d(weights=w1, in_shape=(7, 6, 2), padding=(1, 1, 0, 2), pad_value=1, thresholds=t1,
                  out_type="bipolar", pe=2, simd=6, name="c1"),
        ir.MaxPool2d(in_shape=(7, 6, 4), kernel=2, name="p1"),
        ir.Conv2d(weights=w2, weight_type="ternary", in_shape=(3, 3, 4), padding=(1, 0, 0, 1), thresholds=t2,
                  out_type="uint2", name="c2"),
        ir.Dense(weights=w3, weight_type="int4", name="fc")])
    return net, (w1, t1, w2, t2, w3)


def test_network_conv_pool_conv_dense(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    net, (w1, t1, w2, t2, w3) = _chain(rng)
    assert [(l.in_size, l.out_size) for l in net.layers] == [(84, 84), (84, 168), (168, 36), (36, 27), (27, 5)]
    assert net.layers[1].out_shape == (7, 6, 4) and net.layers[2].out_shape == (3, 3, 4)
    assert net.layers[3].out_shape == (3, 3, 3) and net.layers[3].pad_value == -1
    assert net.dense_layers() == [net.layers[4]]
    x = rng.integers(0, 256, size=(600, 84))               # large enough to be split across threads
    # independent reference, layer by layer (the Dense reads the flattened (OH, OW, OC) image: no Flatten)
    b = np.where(x >= 128, 1, -1)
    a1 = _torch_conv(b.reshape(-1, 7, 6, 2), w1, (1, 1), (1, 1, 0, 2), 1)
    h1 = np.where(a1.reshape(-1, 4) >= t1[:, 0], 1, -1).reshape(600, -1)
    p1 = _loop_maxpool(h1.reshape(-1, 7, 6, 4), (2, 2), (2, 2))
    a2 = _torch_conv(p1.reshape(-1, 3, 3, 4), w2, (1, 1), (1, 0, 0, 1), -1)
    h2 = np.stack([np.searchsorted(t2[c], a2.reshape(-1, 3)[:, c], side="right") for c in range(3)],
                  axis=1).reshape(600, -1)
    out = h2 @ w3.T
    trace = golden.execute(net, x, trace=True)
    for got, want in zip(trace, [b, h1, p1, h2, out]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(golden.execute(net, x), out)   # the bit-packed path (bits through the pool)
    monkeypatch.setattr(golden, "_PATCH_ELEMENTS", 500)             # im2col a few images at a time
    np.testing.assert_array_equal(golden.execute(net, x[:50]), out[:50])
    np.testing.assert_array_equal(golden.execute(net, x[:50], trace=True)[3], h2[:50])
    monkeypatch.undo()
    assert [o.shape for o in golden.execute(net, x[:0], trace=True)] == [(0, 84), (0, 168), (0, 36), (0, 27), (0, 5)]
    ir.save(net, tmp_path / "conv.npz")
    back = ir.load(tmp_path / "conv.npz")
    assert back.name == "convnet" and back.metadata == {"kind": "conv"}
    assert [l.op for l in back.layers] == ["threshold", "conv2d", "maxpool2d", "conv2d", "dense"]
    c1 = back.layers[1]
    assert (c1.in_shape, c1.stride, c1.padding, c1.pad_value, c1.pe, c1.simd) == \
        ((7, 6, 2), (1, 1), (1, 1, 0, 2), 1, 2, 6)
    np.testing.assert_array_equal(c1.weights, w1)
    np.testing.assert_array_equal(golden.execute(back, x), out)
    assert ir.to_bytes(net) == ir.to_bytes(back)
    lines = net.summary_lines()
    assert lines[2] == ("  c1: conv2d 7x6x2->7x6x4 k=3x3 s=1x1 pad=1,1,0,2 (value 1) w=bipolar acc=int6 "
                        "out=bipolar pe=2 simd=6")
    # several output pixels per cycle: a hardware choice that travels with the file and changes no result
    layers = list(net.layers)
    layers[1] = layers[1].replace(pe=4, simd=18, pixels=3)
    fast = net.replace_layers(layers)
    ir.save(fast, tmp_path / "fast.npz")
    back = ir.load(tmp_path / "fast.npz")
    assert (back.layers[1].pe, back.layers[1].simd, back.layers[1].pixels) == (4, 18, 3)
    assert back.layers[3].pixels == 1 and ir.to_bytes(back) == ir.to_bytes(fast) != ir.to_bytes(net)
    assert "pe=4 simd=18 pixels=3" in fast.summary_lines()[2]
    np.testing.assert_array_equal(golden.execute(back, x), out)
    assert lines[3] == "  p1: maxpool2d 7x6x4->3x3x4 k=2x2 s=2x2 x bipolar"


def test_header_fields_and_default_pad_value(tmp_path):
    defaults = {"bipolar": -1, "uint3": 0, "int4": 0, "ternary": 0, "pot3": 0}
    for in_type, pad in defaults.items():
        net = ir.Network(input_type=in_type, input_size=8, layers=[
            ir.Conv2d(weights=np.ones((1, 2, 2, 2), int), in_shape=(2, 2, 2), padding=1, name="c")])
        assert net.layers[0].pad_value == pad
    arrays = {}
    h = net.layers[0].header(arrays)
    assert (h["op"], h["in_shape"], h["stride"], h["padding"], h["pad_value"]) == \
        ("conv2d", [2, 2, 2], [1, 1], [1, 1, 1, 1], 0)
    assert arrays["c.weights"].shape == (1, 2, 2, 2) and h["acc_type"] == net.layers[0].acc_type.name
    # a hand-written header: stride, padding and pad_value may be left out
    hdr = {"format": "hwnet-ir", "version": 1, "input": {"type": "bipolar", "size": 18}, "layers": [
        {"op": "conv2d", "name": "c", "weight_type": "bipolar", "weights": "w", "in_shape": [3, 3, 2],
         "thresholds": None},
        {"op": "maxpool2d", "name": "p", "in_shape": [2, 2, 1], "kernel": 2}]}
    np.savez(tmp_path / "h.npz", __hwnet_ir__=json.dumps(hdr), w=np.ones((1, 2, 2, 2), int))
    net = ir.load(tmp_path / "h.npz")
    assert net.layers[0].padding == (0, 0, 0, 0) and net.layers[1].stride == (2, 2)
    np.testing.assert_array_equal(golden.execute(net, np.ones((1, 18), int)), [[8]])
    hdr["layers"][0]["acc_type"] = "int3"
    np.savez(tmp_path / "acc.npz", __hwnet_ir__=json.dumps(hdr), w=np.ones((1, 2, 2, 2), int))
    with pytest.raises(HwnetError, match=r"layer 'c': acc_type int3 does not match .*\(int5\)"):
        ir.load(tmp_path / "acc.npz")
    del hdr["layers"][0]["in_shape"]
    np.savez(tmp_path / "noshape.npz", __hwnet_ir__=json.dumps(hdr), w=np.ones((1, 2, 2, 2), int))
    with pytest.raises(HwnetError, match="missing or wrong field 'in_shape'"):
        ir.load(tmp_path / "noshape.npz")


def test_docs_example():
    # docs/ir.md, "A worked example".
    w = np.array([[[1, 1], [1, -1]], [[-1, 1], [-1, 1]]])[..., None]      # (2, 2, 2, 1)
    conv = ir.Conv2d(weights=w, in_shape=(3, 3, 1), stride=2, padding=(0, 1, 0, 1), name="c1")
    x = np.array([[1, 1, 1, 1, -1, 1, -1, 1, -1]])
    net = ir.Network(input_type="bipolar", input_size=9, layers=[conv])
    np.testing.assert_array_equal(golden.execute(net, x), [[4, -2, 2, -4, 0, 2, -2, 0]])
    net = ir.Network(input_type="bipolar", input_size=9, layers=[
        ir.Conv2d(weights=w, in_shape=(3, 3, 1), stride=2, padding=(0, 1, 0, 1), thresholds=[[2], [3]],
                  out_type="bipolar", name="c1"),
        ir.MaxPool2d(in_shape=(2, 2, 2), kernel=2, name="p1")])
    trace = golden.execute(net, x, trace=True)
    np.testing.assert_array_equal(trace[0], [[1, -1, 1, -1, -1, -1, -1, -1]])
    np.testing.assert_array_equal(trace[1], [[1, -1]])


def _conv(**changes):
    args = dict(weights=np.ones((4, 3, 3, 2), int), in_shape=(5, 5, 2), name="c1")
    args.update(changes)
    return ir.Conv2d(**args)


def _bound(input_type, size, layer):
    return lambda: ir.Network(input_type=input_type, input_size=size, layers=[layer()])


@pytest.mark.parametrize("make,match", [
    (lambda: _conv(weights=np.ones((4, 3, 3), int)), r"expected a 4-D array, got shape \(4, 3, 3\)"),
    (lambda: _conv(weights=np.ones((4, 3, 3, 2, 1), int)), r"expected a 4-D array"),
    (lambda: _conv(weights=np.ones((0, 3, 3, 2), int)), r"zero-width layer"),
    (lambda: _conv(weights=np.zeros((4, 3, 3, 2), int)), r"not legal bipolar"),
    (lambda: _conv(in_shape=(5, 5, 3)), r"the input has 3 channels .* but the weights \(4, 3, 3, 2\) take 2"),
    (lambda: _conv(in_shape=(5, 5)), r"in_shape must be \(H, W, C\), three positive integers"),
    (lambda: _conv(in_shape=(5, 0, 2)), r"in_shape must be \(H, W, C\)"),
    (lambda: _conv(stride=0), r"stride must be a positive integer or \(sh, sw\), got 0"),
    (lambda: _conv(stride=(1, -1)), r"stride must be a positive integer or \(sh, sw\)"),
    (lambda: _conv(stride=(1, 1, 1)), r"stride must be"),
    (lambda: _conv(stride=1.5), r"stride must be"),
    (lambda: _conv(stride=True), r"stride must be"),
    (lambda: _conv(padding=-1), r"padding must be a non-negative integer or \(top, bottom, left, right\)"),
    (lambda: _conv(padding=(1, 1)), r"padding must be a non-negative integer or \(top, bottom, left, right\)"),
    (lambda: _conv(padding=(0, 0, -1, 0)), r"padding must be"),
    (lambda: _conv(in_shape=(2, 5, 2)), r"a 3x3 kernel .* does not fit the 2x5 input .*\(output 0x3\)"),
    (lambda: _conv(in_shape=(2, 2, 2), padding=(0, 0, 1, 0)), r"does not fit the 2x2 input"),
    (lambda: _conv(pad_value=0.5), r"pad_value must be an integer"),
    (_bound("bipolar", 50, lambda: _conv(pad_value=0)),
     r"layer 'c1': pad_value: values \[0\] are not legal bipolar values .*pad with a legal input value"),
    (_bound("uint3", 50, lambda: _conv(pad_value=8)), r"values \[8\] are not legal uint3 values"),
    (_bound("int4", 50, lambda: _conv(pad_value=-9)), r"values \[-9\] are not legal int4 values"),
    (_bound("bipolar", 49, _conv), r"layer 'c1': takes a 5x5x2 image \(50 values, flattened NHWC\) but the layer "
                                   r"before it gives 49"),
    (lambda: _conv(pe=3), r"pe=3 does not divide out_channels=4"),
    (lambda: _conv(simd=4), r"simd=4 does not divide kernel_h\*kernel_w\*in_channels=18"),
    (lambda: _conv(pe=0), r"pe must be a positive integer"),
    (lambda: _conv(thresholds=[[0], [1]], out_type="bipolar"), r"thresholds have 2 rows, expected 4"),
    (lambda: _conv(thresholds=np.zeros((4, 1), int)), r"needs an out_type"),
    (_bound("uint2", 50, lambda: _conv(products=np.zeros((2, 3), int))),
     r"products table must have shape \(2, 4\)"),
    (lambda: ir.MaxPool2d(in_shape=(4, 4, 2), kernel=5), r"the 5x5 window does not fit the 4x4 input"),
    (lambda: ir.MaxPool2d(in_shape=(4, 6, 2), kernel=(2, 7)), r"the 2x7 window does not fit the 4x6 input"),
    (lambda: ir.MaxPool2d(in_shape=(4, 4, 2), kernel=0), r"kernel must be a positive integer or \(kh, kw\)"),
    (lambda: ir.MaxPool2d(in_shape=(4, 4, 2), kernel=2, stride=(0, 1)), r"stride must be a positive integer"),
    (lambda: ir.MaxPool2d(in_shape=4, kernel=2), r"in_shape must be \(H, W, C\)"),
    (_bound("pot3", 32, lambda: ir.MaxPool2d(in_shape=(4, 4, 2), kernel=2, name="p")),
     r"layer 'p': max-pooling takes bipolar, ternary, uint<k> or int<k> inputs, not pot3"),
    (_bound("uint4", 33, lambda: ir.MaxPool2d(in_shape=(4, 4, 2), kernel=2, name="p")),
     r"layer 'p': takes a 4x4x2 image \(32 values, flattened NHWC\) but the layer before it gives 33"),
    (lambda: ir.Network(input_type="bipolar", input_size=50, layers=[
        _conv(), ir.Dense(weights=np.ones((2, 50), int), name="fc")]),
     r"layer 'fc': takes 50 inputs but the layer before it gives 36"),
])
def test_bad_conv_ir_is_one_clear_error(make, match):
    with pytest.raises(HwnetError, match=match) as exc:
        make()
    assert "\n" not in str(exc.value)


def test_threshold_layer_after_a_bipolar_conv():
    # A bipolar-output layer hands bits on; a MultiThreshold after it must still see its +-1 values.
    w = np.array([[[[1]]], [[[-1]]]])                                       # 1x1 kernels, 2 output channels
    net = ir.Network(input_type="bipolar", input_size=3, layers=[
        ir.Conv2d(weights=w, in_shape=(1, 3, 1), thresholds=[[0], [0]], out_type="bipolar", name="c"),
        ir.MultiThreshold(thresholds=[[0]], out_type="uint1", name="t")])
    np.testing.assert_array_equal(golden.execute(net, [[1, -1, 1]]), [[1, 0, 0, 1, 1, 0]])
