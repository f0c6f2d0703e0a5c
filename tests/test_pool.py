# amaranth: UnusedElaboratable=no

import itertools
import re

import numpy as np
import pytest
from amaranth.back import rtlil

from hwnet import golden
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.gateware import MaxPool
from hwnet.gateware.testing import divisors, run_with_output_held, simulate_stream, vectors_to_beats
from hwnet.ir import Dense, MaxPool2d

TYPES = ["bipolar", "uint3", "int4", "ternary"]


def _layer(in_shape, kernel, stride, dtype):
    layer = MaxPool2d(in_shape=in_shape, kernel=kernel, stride=stride)
    layer.bind(parse_type(dtype), layer.in_size)
    return layer


def _check(layer, simd, rng, *, images, valid_prob, ready_prob, pixels=1):
    """Stream ``images`` random images through the unit for ``layer``; compare every output beat (data and
    last) with golden.maxpool2d, encoded. Returns (dut, source, sink)."""
    t = layer.in_type
    x = rng.choice(t.values(), size=(images, layer.in_size))
    expected = vectors_to_beats(golden.maxpool2d(layer, x), t, simd)
    dut = MaxPool.from_layer(layer, simd, pixels)
    source, sink = simulate_stream(dut, vectors_to_beats(x, t, simd * pixels), len(expected),
                                   rng=int(rng.integers(1 << 30)), valid_prob=valid_prob, ready_prob=ready_prob)
    what = f"in_shape={layer.in_shape} kernel={layer.kernel} stride={layer.stride} simd={simd} {t}"
    assert len(sink.beats) == len(expected) == images * dut.out_beats
    for k, (got, want) in enumerate(zip(sink.beats, expected)):
        assert got == want, f"{what}: output beat {k} is {got}, expected {want}"
    assert len(source.cycles) == images * dut.in_beats
    return dut, source, sink


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("kernel", [1, 2, 3, (1, 2), (3, 2)])
def test_matches_golden_with_stalls(dtype, kernel):
    rng = np.random.default_rng(sum(map(ord, dtype + str(kernel))))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    for _ in range(3):
        in_shape = (int(rng.integers(max(2, kh), 8)), int(rng.integers(max(2, kw), 8)), int(rng.choice([1, 2, 4])))
        simd = int(rng.choice(divisors(in_shape[2])))
        _check(_layer(in_shape, kernel, None, dtype), simd, rng, images=int(rng.integers(2, 4)), valid_prob=0.7,
               ready_prob=0.6)


@pytest.mark.parametrize("in_shape,kernel,stride", [
    ((7, 7, 2), (2, 2), (3, 3)),   # gaps between windows
    ((6, 5, 1), (1, 1), (2, 3)),
    ((5, 7, 4), (2, 1), (3, 2)),
    ((2, 2, 1), (2, 2), (5, 5)),   # one window, stride past the image
    ((7, 2, 2), (3, 2), (3, 2)),   # W = kernel: one output column
    ((2, 6, 4), (2, 3), None),     # H = kernel: one output row
])
def test_gapped_and_edge_shapes(in_shape, kernel, stride):
    rng = np.random.default_rng(in_shape[0] * 100 + in_shape[1])
    for dtype, simd in [("int4", 1), ("bipolar", in_shape[2]), ("ternary", divisors(in_shape[2])[-2:][0])]:
        _check(_layer(in_shape, kernel, stride, dtype), simd, rng, images=3, valid_prob=0.6, ready_prob=0.5)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("in_shape,kernel,stride,pixels", [
    ((4, 8, 2), (2, 2), None, 2),
    ((6, 8, 1), (2, 4), None, 4),
    ((6, 8, 3), (2, 4), None, 2),
    ((7, 12, 2), (2, 2), (3, 4), 2),  # gaps: whole beats of skipped pixels
    ((5, 9, 1), (1, 3), (2, 3), 3),
    ((28, 28, 4), (2, 2), None, 2),   # the MNIST CNN's first pool (4 of its 16 channels)
])
def test_several_pixels_per_beat(dtype, in_shape, kernel, stride, pixels):
    rng = np.random.default_rng(sum(map(ord, dtype)) + in_shape[1] * 7 + pixels)
    dut, source, sink = _check(_layer(in_shape, kernel, stride, dtype), in_shape[2], rng, images=2,
                               valid_prob=0.7, ready_prob=0.6, pixels=pixels)
    assert dut.in_beats == in_shape[0] * in_shape[1] // pixels
    # without stalls, one beat of `pixels` pixels every cycle
    dut, source, sink = _check(_layer(in_shape, kernel, stride, dtype), in_shape[2], rng, images=2,
                               valid_prob=1.0, ready_prob=1.0, pixels=pixels)
    assert source.cycles == list(range(source.cycles[0], source.cycles[0] + 2 * dut.in_beats))


@pytest.mark.parametrize("kwargs,message", [
    (dict(in_shape=(4, 8, 2), kernel=2, simd=1, pixels=2), r"^pixels=2 carries whole pixels: simd must be the 2 "
                                                          r"channels, got simd=1$"),
    (dict(in_shape=(4, 8, 2), kernel=3, simd=2, pixels=2), r"^pixels=2 must divide the kernel width 3, the "
                                                          r"stride 3 and the image width 8"),
    (dict(in_shape=(4, 6, 2), kernel=2, stride=3, simd=2, pixels=2), r"^pixels=2 must divide .* the stride 3"),
])
def test_bad_pixels(kwargs, message):
    with pytest.raises(HwnetError, match=message):
        MaxPool(dtype=parse_type("uint2"), **kwargs)


@pytest.mark.parametrize("valid_prob,ready_prob", [(0.95, 0.1), (0.1, 0.95)])
def test_heavy_stalls(valid_prob, ready_prob):
    rng = np.random.default_rng(int(valid_prob * 100))
    _check(_layer((6, 6, 2), 2, None, "uint3"), 1, rng, images=2, valid_prob=valid_prob, ready_prob=ready_prob)


def test_extreme_values():
    # the order of the codes: most negative / most positive codes of signed types, and all-equal windows
    for dtype in ["int4", "uint3", "ternary", "bipolar"]:
        t = parse_type(dtype)
        layer = _layer((4, 4, 2), 2, None, dtype)
        x = np.full((3, layer.in_size), t.min)
        x[1, ::5] = t.max
        x[2] = t.max
        expected = vectors_to_beats(golden.maxpool2d(layer, x), t, 2)
        _, sink = simulate_stream(MaxPool.from_layer(layer, 2), vectors_to_beats(x, t, 2), len(expected), rng=5,
                                  valid_prob=0.8, ready_prob=0.8)
        assert sink.beats == expected


@pytest.mark.parametrize("in_shape,kernel,stride,simd", [
    ((6, 6, 2), 2, None, 1),
    ((7, 5, 4), 3, None, 2),     # unused bottom row and right columns
    ((5, 5, 1), 1, None, 1),     # every beat passes through
    ((7, 7, 2), 2, 3, 2),        # gapped
])
def test_throughput_no_stalls(in_shape, kernel, stride, simd):
    # one input beat per cycle, images back to back; each output beat 1 cycle after the beat completing it
    layer = _layer(in_shape, kernel, stride, "uint3")
    images = 3
    dut, source, sink = _check(layer, simd, np.random.default_rng(3), images=images, valid_prob=1.0,
                               ready_prob=1.0)
    assert source.cycles == list(range(images * dut.in_beats))
    (h, w, c), (kh, kw), (sh, sw) = layer.in_shape, layer.kernel, layer.stride
    oh, ow, _ = dut.out_shape
    cf = c // simd
    completing = [n * dut.in_beats + ((oy * sh + kh - 1) * w + ox * sw + kw - 1) * cf + k
                  for n in range(images) for oy in range(oh) for ox in range(ow) for k in range(cf)]
    assert dut.latency == 1
    assert sink.cycles == [t + dut.latency for t in completing]


def test_stalled_output_holds_only_completing_beats():
    # with the output held (never ready) the input flows through the accumulating beats until the second beat
    # completing a window (the first fills the output register); then everything comes out, nothing lost
    layer = _layer((4, 6, 2), 2, None, "int4")
    dut = MaxPool.from_layer(layer, 1)
    rng = np.random.default_rng(9)
    x = rng.choice(layer.in_type.values(), size=(2, layer.in_size))
    expected = vectors_to_beats(golden.maxpool2d(layer, x), layer.in_type, 1)
    taken_while_held, sink = run_with_output_held(dut, vectors_to_beats(x, layer.in_type, 1), len(expected))
    # row 1 (6 pixels x 2 beats): pixel 1 completes the first window (beats 14, 15); beat 15 waits
    assert taken_while_held == 6 * 2 + 1 * 2 + 1
    assert sink.beats == expected and not sink.violations


def test_from_layer_and_sizes():
    layer = _layer((7, 5, 4), (3, 2), None, "int3")
    dut = MaxPool.from_layer(layer, 2)
    assert (dut.in_shape, dut.kernel, dut.stride, dut.simd, dut.bits) == ((7, 5, 4), (3, 2), (3, 2), 2, 3)
    assert dut.out_shape == layer.out_shape == (2, 2, 4)
    assert dut.in_beats == 7 * 5 * 2 and dut.out_beats == 2 * 2 * 2 and dut.depth == 2 * 2
    assert len(dut.i.payload.data) == 6 and len(dut.o.payload.data) == 6
    text = rtlil.convert(dut)
    assert "$mul" not in text and "$div" not in text and "$mod" not in text
    assert re.findall(r"memory width (\d+) size (\d+) ", text) == [("6", "4")]
    dense = Dense(weights=np.ones((2, 4), dtype=np.int64), thresholds=np.zeros((2, 1), dtype=np.int64),
                  out_type="bipolar")
    with pytest.raises(HwnetError, match=r"^MaxPool\.from_layer needs a hwnet\.ir\.MaxPool2d, not Dense$"):
        MaxPool.from_layer(dense, 1)
    unbound = MaxPool2d(in_shape=(4, 4, 1), kernel=2, name="p0")
    with pytest.raises(HwnetError, match=r"^layer 'p0' has no input type yet; put it in a hwnet\.ir\.Network "
                                         r"first$"):
        MaxPool.from_layer(unbound, 1)
    overlapping = _layer((5, 5, 1), 3, 2, "uint2")
    with pytest.raises(HwnetError, match=r"overlapping max-pooling is not supported yet"):
        MaxPool.from_layer(overlapping, 1)


BASE = {"in_shape": (4, 4, 4), "kernel": 2, "simd": 2, "dtype": parse_type("uint2")}


@pytest.mark.parametrize("change,message", [
    ({"simd": 3}, r"^simd=3 must divide the 4 channels \(C of in_shape \(4, 4, 4\)\)$"),
    ({"simd": 0}, r"^simd must be a positive integer, not 0$"),
    ({"dtype": parse_type("pot3")}, r"^max-pooling takes bipolar, ternary, uint<k> or int<k> elements, not pot3$"),
    ({"dtype": "uint2"}, r"^dtype must be a hwnet DataType .*, not 'uint2'$"),
    ({"kernel": (5, 1)}, r"^the 5x1 window does not fit the 4x4 input \(max-pooling has no padding\); use a "
                         r"smaller kernel$"),
    ({"kernel": 0}, r"^kernel must be a positive integer or \(KH, KW\), got 0"),
    ({"stride": (2, 0)}, r"^stride must be a positive integer or \(sh, sw\), got \(2, 0\)"),
    ({"stride": 1}, r"^stride \(1, 1\) is smaller than the kernel \(2, 2\): overlapping max-pooling is not "
                    r"supported yet \(use stride >= kernel\)$"),
    ({"stride": (2, 1)}, r"overlapping max-pooling is not supported yet"),
    ({"in_shape": (4, 4)}, r"^in_shape must be \(H, W, C\), three positive integers, got \(4, 4\)$"),
])
def test_bad_parameters(change, message):
    with pytest.raises(HwnetError, match=message):
        MaxPool(**{**BASE, **change})


def test_all_kernels_small_images_uint1():
    # every kernel up to 3x3 on the smallest images it fits, one image per run after another
    rng = np.random.default_rng(11)
    for kh, kw in itertools.product([1, 2, 3], repeat=2):
        _check(_layer((max(2, kh), max(2, kw), 1), (kh, kw), None, "uint1"), 1, rng, images=2, valid_prob=0.8,
               ready_prob=0.7)
