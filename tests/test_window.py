# amaranth: UnusedElaboratable=no

import itertools
import re

import numpy as np
import pytest
from amaranth.back import rtlil

from hwnet import golden
from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.gateware import SlidingWindow
from hwnet.gateware.testing import (SimulationTimeout, divisors, run_with_output_held, simulate_stream,
                                    vectors_to_beats)
from hwnet.ir import Conv2d, Dense

TYPES = ["uint3", "bipolar", "int2", "ternary", "uint1"]


def _conv(in_shape, kernel, stride, padding, in_type, pad_value=None):
    """A Conv2d bound to ``in_type`` (one output channel: only the window matters here)."""
    layer = Conv2d(weights=np.ones((1, *kernel, in_shape[2]), dtype=np.int64), in_shape=in_shape, stride=stride,
                   padding=padding, pad_value=pad_value)
    layer.bind(parse_type(in_type), layer.in_size)
    return layer


def _fits(in_shape, kernel, stride, padding):
    """Conv2d's rule: the kernel fits the padded input (output at least 1x1)."""
    (h, w, _), (kh, kw) = in_shape, kernel
    top, bottom, left, right = (padding,) * 4 if isinstance(padding, int) else padding
    return h + top + bottom >= kh and w + left + right >= kw


def _check(layer, simd, rng, *, images, valid_prob, ready_prob, rows=None, max_cycles=None, positions=1, pixels=1):
    """Stream ``images`` random images through the unit for ``layer`` and compare every output beat (data and
    last) with golden.conv2d_patches, encoded. Returns (dut, source, sink)."""
    t = layer.in_type
    x = rng.choice(t.values(), size=(images, layer.in_size))
    patches = golden.conv2d_patches(layer, x)
    patches = patches.reshape(-1, patches.shape[-1] * pixels)  # `pixels` consecutive patches of a row per beat
    expected = vectors_to_beats(patches, t, simd * positions * pixels)
    if pixels > 1:  # every beat ends patches
        expected = [(word, 1) for word, _ in expected]
    dut = SlidingWindow.from_conv(layer, simd, rows=rows, positions=positions, pixels=pixels)
    source, sink = simulate_stream(dut, vectors_to_beats(x, t, simd * pixels), len(expected),
                                   rng=int(rng.integers(1 << 30)), valid_prob=valid_prob, ready_prob=ready_prob,
                                   max_cycles=max_cycles)
    what = (f"in_shape={layer.in_shape} kernel={(layer.kernel_h, layer.kernel_w)} stride={layer.stride} "
            f"padding={layer.padding} simd={simd} {t}")
    per_patch = max(1, dut.out_beats // (dut.out_shape[0] * dut.out_shape[1]))
    for k, (got, want) in enumerate(zip(sink.beats, expected)):
        assert got == want, f"{what}: output beat {k} (of patch {k // per_patch}) is {got}, expected {want}"
    assert len(source.cycles) == images * dut.in_beats
    return dut, source, sink


def _random_case(rng, kernel, stride, padding, h_range=(3, 6)):
    """Random image (H, W in h_range, C in 1, 2, 4), simd (a divisor of C), element type and pad value."""
    while True:
        in_shape = (int(rng.integers(h_range[0], h_range[1] + 1)), int(rng.integers(h_range[0], h_range[1] + 1)),
                    int(rng.choice([1, 2, 4])))
        if _fits(in_shape, kernel, stride, padding):
            break
    t = parse_type(str(rng.choice(TYPES)))
    layer = _conv(in_shape, kernel, stride, padding, t, pad_value=int(rng.choice(t.values())))
    return layer, int(rng.choice(divisors(in_shape[2])))


PADDINGS = [0, 1, (0, 2, 1, 0)]
STRIDES = list(itertools.product([1, 2, 3], [1, 2]))


@pytest.mark.parametrize("kernel", list(itertools.product([1, 2, 3], [1, 2, 3])))
def test_matches_golden_with_stalls(kernel):
    # every stride and padding pattern for this kernel, on small random images, several images back to back
    rng = np.random.default_rng(kernel[0] * 10 + kernel[1])
    for stride, padding in itertools.product(STRIDES, PADDINGS):
        layer, simd = _random_case(rng, kernel, stride, padding, h_range=(3, 5))
        _check(layer, simd, rng, images=int(rng.integers(2, 4)), valid_prob=0.7, ready_prob=0.6)


def _positions(kernel):
    """The legal kernel positions per beat: divisors of KW, and multiples of KW that are whole kernel rows."""
    kh, kw = kernel
    return sorted({m for m in divisors(kw)} | {kw * r for r in divisors(kh)})


@pytest.mark.parametrize("kernel", [(1, 2), (2, 2), (3, 3), (2, 3), (3, 1)])
def test_several_kernel_positions_per_beat_match_golden_with_stalls(kernel):
    # whole pixels in (simd = C), m kernel positions out per beat: every legal m, stride and padding
    rng = np.random.default_rng(100 + kernel[0] * 10 + kernel[1])
    for stride, padding in itertools.product(STRIDES, PADDINGS):
        layer, _ = _random_case(rng, kernel, stride, padding, h_range=(3, 5))
        for m in _positions(kernel)[1:]:
            _check(layer, layer.in_channels, rng, images=2, valid_prob=0.7, ready_prob=0.6, positions=m)


@pytest.mark.parametrize("in_shape, kernel, stride, padding, positions", [
    ((8, 8, 1), (3, 3), 1, 1, 9),     # one patch per beat: as many beats out as pixels in
    ((8, 8, 1), (3, 3), 1, 1, 3),     # a kernel row per beat: output-bound
    ((8, 8, 2), (3, 3), 1, 0, 9),     # input-bound, with a gap the input hides
    ((7, 7, 1), (3, 3), 2, 0, 3),
    ((8, 8, 1), (5, 5), 1, 2, 25),
    ((12, 12, 1), (4, 4), 4, 0, 16),  # input-bound: 16 pixels in per patch out
])
def test_several_positions_per_beat_run_at_the_planned_interval(in_shape, kernel, stride, padding, positions):
    layer = _conv(in_shape, kernel, stride, padding, "uint2")
    images = 5
    dut, source, sink = _check(layer, in_shape[2], np.random.default_rng(7), images=images, valid_prob=1.0,
                               ready_prob=1.0, positions=positions)
    assert dut.out_beats == dut.out_shape[0] * dut.out_shape[1] * kernel[0] * kernel[1] // positions
    starts = [sink.cycles[n * dut.out_beats] for n in range(images)]
    assert np.diff(starts).tolist() == [dut.geometry.cycles] * (images - 1)
    assert dut.geometry.cycles == max(dut.out_beats + dut.image_gap, dut.in_beats)


@pytest.mark.parametrize("kernel", [(1, 1), (1, 2), (2, 2), (3, 3), (2, 3), (3, 1), (1, 4)])
def test_several_pixels_per_beat_match_golden_with_stalls(kernel):
    # whole pixels in, `pixels` of them per input beat, and `pixels` whole patches per output beat: every stride
    # and padding, every pixel count that divides both widths
    rng = np.random.default_rng(300 + kernel[0] * 10 + kernel[1])
    tried = 0
    for stride, padding in itertools.product(STRIDES + [(1, 3)], PADDINGS + [(1, 0, 3, 2), (0, 1, 0, 5)]):
        for _ in range(20):
            in_shape = (int(rng.integers(2, 6)), int(rng.choice([4, 6, 8, 9])), int(rng.choice([1, 2, 3])))
            if not _fits(in_shape, kernel, stride, padding):
                continue
            t = parse_type(str(rng.choice(TYPES)))
            layer = _conv(in_shape, kernel, stride, padding, t, pad_value=int(rng.choice(t.values())))
            ps = [d for d in divisors(in_shape[1]) if d > 1 and layer.out_shape[1] % d == 0]
            if ps:
                break
        else:
            continue
        for p in ps:
            _check(layer, in_shape[2], rng, images=2, valid_prob=float(rng.uniform(0.4, 1.0)),
                   ready_prob=float(rng.uniform(0.3, 1.0)), positions=kernel[0] * kernel[1], pixels=p)
            tried += 1
    assert tried >= 8


@pytest.mark.parametrize("in_shape, kernel, stride, padding, pixels", [
    ((28, 28, 1), (3, 3), 1, 1, 2),     # the MNIST CNN's first layer: 392 cycles per image
    ((8, 8, 1), (3, 3), 1, 1, 4),
    ((8, 8, 2), (3, 3), 1, 0, 2),       # valid padding: OW = 6
    ((9, 9, 1), (3, 3), 3, 0, 3),
    ((6, 8, 1), (2, 2), 2, 0, 2),
])
def test_several_pixels_per_beat_run_at_the_planned_interval(in_shape, kernel, stride, padding, pixels):
    layer = _conv(in_shape, kernel, stride, padding, "bipolar")
    images = 4
    dut, source, sink = _check(layer, in_shape[2], np.random.default_rng(9), images=images, valid_prob=1.0,
                               ready_prob=1.0, positions=kernel[0] * kernel[1], pixels=pixels)
    oh, ow, _ = dut.out_shape
    assert dut.out_beats == oh * ow // pixels and dut.in_beats == in_shape[0] * in_shape[1] // pixels
    starts = [sink.cycles[n * dut.out_beats] for n in range(images)]
    assert np.diff(starts).tolist() == [dut.geometry.cycles] * (images - 1)
    assert dut.geometry.cycles == max(dut.out_beats + dut.image_gap, dut.in_beats)


EDGE_CASES = [
    # (in_shape, kernel, stride, padding)
    ((4, 1, 2), (3, 1), 1, (1, 1, 0, 0)),        # W = 1
    ((1, 5, 1), (1, 3), (1, 2), 0),              # H = 1
    ((1, 1, 3), (3, 3), 1, 1),                   # a 1x1 image: every patch mostly padding
    ((1, 1, 2), (1, 1), 1, 0),                   # one pixel, one beat per patch
    ((7, 7, 1), (2, 2), (3, 3), 0),              # stride > kernel: rows and columns skipped
    ((6, 5, 2), (1, 1), (4, 3), (0, 1, 2, 0)),   # 1x1 kernel, large stride, unused rows at the bottom
    ((3, 3, 1), (2, 2), 1, (4, 3, 5, 2)),        # padding larger than the kernel: all-padding patches
    ((2, 3, 1), (1, 1), (6, 1), (5, 0, 0, 0)),   # the only output row lies in the top padding
    ((2, 2, 1), (1, 2), (1, 1), (0, 3, 0, 0)),   # output rows wholly in the bottom padding
    ((3, 4, 2), (5, 6), 1, (1, 1, 1, 1)),        # kernel = padded input: one patch per image
    ((5, 5, 8), (3, 3), 2, (1, 0, 0, 1)),        # 8 lanes per beat
    ((4, 4, 6), (2, 3), (2, 1), (0, 1, 1, 0)),   # simd 3 of 6 channels
]


@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
def test_edge_shapes(case):
    in_shape, kernel, stride, padding = EDGE_CASES[case]
    rng = np.random.default_rng(100 + case)
    for t, simd in [("uint3", 1), ("bipolar", in_shape[2]), ("int2", divisors(in_shape[2])[-2:][0])]:
        layer = _conv(in_shape, kernel, stride, padding, t, pad_value=int(rng.choice(parse_type(t).values())))
        _check(layer, simd, rng, images=3, valid_prob=0.6, ready_prob=0.5)


@pytest.mark.parametrize("valid_prob,ready_prob", [(0.95, 0.1), (0.1, 0.95), (0.5, 0.5)])
def test_fewest_rows_and_heavy_stalls(valid_prob, ready_prob):
    # the smallest line buffer free of deadlock (writer and reader wait on each other most of the time)
    rng = np.random.default_rng(int(valid_prob * 100))
    for kernel, stride, padding in [((3, 3), (1, 1), 1), ((3, 2), (2, 1), (0, 2, 1, 0)), ((2, 2), (3, 2), 0),
                                    ((1, 1), (1, 1), 0)]:
        layer, simd = _random_case(rng, kernel, stride, padding, h_range=(3, 4))
        rows = SlidingWindow.from_conv(layer, simd).min_rows
        assert rows == min(kernel[0], layer.in_shape[0])
        _check(layer, simd, rng, images=2, valid_prob=valid_prob, ready_prob=ready_prob, rows=rows)


def test_writer_never_overwrites_pending_rows():
    # with the output stalled the writer fills exactly the ring's free rows, then waits; nothing is lost
    layer = _conv((6, 4, 2), (3, 3), (1, 1), 1, "uint3")
    dut = SlidingWindow.from_conv(layer, 1)
    assert dut.rows == 4
    rng = np.random.default_rng(7)
    x = rng.choice(layer.in_type.values(), size=(2, layer.in_size))
    expected = vectors_to_beats(golden.conv2d_patches(layer, x), layer.in_type, 1)
    taken_while_held, sink = run_with_output_held(dut, vectors_to_beats(x, layer.in_type, 1), len(expected))
    # output row 0 reads rows 0..1 (top padding 1): rows 0..3 fill the 4 slots, row 4 would overwrite row 0
    assert taken_while_held == 4 * 4 * 2
    assert sink.beats == expected and not sink.violations


@pytest.mark.parametrize("in_shape,kernel,stride,padding", [
    ((2, 3, 1), (1, 1), (6, 1), (5, 0, 0, 0)),  # every patch is padding: they still wait for their image
    ((3, 3, 2), (2, 2), 1, 1),
])
def test_nothing_leaves_before_its_image(in_shape, kernel, stride, padding):
    layer = _conv(in_shape, kernel, stride, padding, "uint2", pad_value=3)
    rng = np.random.default_rng(0)
    x = rng.choice(layer.in_type.values(), size=(2, layer.in_size))
    beats = vectors_to_beats(x, layer.in_type, 1)
    per_image = len(vectors_to_beats(golden.conv2d_patches(layer, x[:1]), layer.in_type, 1))
    dut = SlidingWindow.from_conv(layer, 1)
    # the first output row needs the image's first row: no patch before that row is in
    row = in_shape[1] * in_shape[2]
    _, sink = simulate_stream(dut, beats[:row], 1)
    assert sink.cycles == [row - 1 + dut.latency]
    # after two images, no beat of a third comes out
    with pytest.raises(SimulationTimeout, match=f"{2 * per_image} of {2 * per_image + 1} output beats seen"):
        simulate_stream(SlidingWindow.from_conv(layer, 1), beats, 2 * per_image + 1, rng=1, valid_prob=0.8,
                        ready_prob=0.8, max_cycles=1000)


THROUGHPUT_CASES = [
    # (in_shape, kernel, stride, padding, simd, rows, image_gap in rows)
    ((6, 6, 2), (3, 3), 1, 1, 2, None, 0),       # "same" padding: no gap between images
    ((6, 6, 2), (3, 3), 1, 0, 1, None, 2),       # valid: rows 1, 2 of the next image come after the last patch
    ((6, 6, 2), (3, 3), 1, 0, 1, 6, 0),          # ... unless the ring holds them too
    ((7, 7, 1), (3, 3), 2, 0, 1, None, 1),
    ((8, 8, 1), (3, 3), 2, 1, 1, None, 0),
    ((6, 6, 4), (2, 2), 2, 0, 2, None, 0),       # as many beats out as in
    ((5, 5, 1), (1, 1), 1, 0, 1, None, 0),       # one beat in, one beat out
    ((4, 7, 3), (1, 3), (1, 2), (0, 0, 1, 1), 3, None, 0),
]


@pytest.mark.parametrize("case", range(len(THROUGHPUT_CASES)))
def test_throughput_and_latency(case):
    in_shape, kernel, stride, padding, simd, rows, gap_rows = THROUGHPUT_CASES[case]
    layer = _conv(in_shape, kernel, stride, padding, "uint2")
    images = 4
    dut, source, sink = _check(layer, simd, np.random.default_rng(case), images=images, valid_prob=1.0,
                               ready_prob=1.0, rows=rows)
    h, w, c = in_shape
    wcf = w * c // simd
    assert dut.rows == (kernel[0] + layer.stride[0] if rows is None else rows)
    assert dut.image_gap == gap_rows * wcf
    assert dut.in_beats <= dut.out_beats + dut.image_gap  # output-bound: the output side sets the pace
    # input: one beat per cycle from the start, never stalled in these cases except for a full ring
    assert source.cycles[:dut.rows * wcf] == list(range(dut.rows * wcf))
    # output: the first beat `latency` cycles after the last beat of the rows the first patch row reads, then
    # one beat per cycle, each image `out_beats + image_gap` cycles after the one before
    need = dut.geometry.row_span(0)[1]
    first = source.cycles[need * wcf - 1] + dut.latency
    period = dut.out_beats + dut.image_gap
    assert dut.latency == 3
    assert sink.cycles == [first + n * period + k for n in range(images) for k in range(dut.out_beats)]


def test_input_bound_takes_a_beat_every_cycle():
    # a 1x1 kernel with stride 2 reads a quarter of its input: the input side sets the pace
    layer = _conv((6, 8, 2), (1, 1), 2, 0, "uint3")
    dut, source, sink = _check(layer, 2, np.random.default_rng(1), images=4, valid_prob=1.0, ready_prob=1.0)
    assert source.cycles == list(range(4 * dut.in_beats))
    # the last patch reads row 4 of the last image, the last of its rows that any patch reads
    assert sink.cycles[-1] == source.cycles[-1 - 8] + dut.latency + 3  # its 4 patches, one beat each


def test_from_conv_and_sizes():
    layer = _conv((5, 7, 4), (3, 2), (2, 1), (1, 0, 2, 1), "int3", pad_value=-2)
    dut = SlidingWindow.from_conv(layer, 2)
    assert (dut.in_shape, dut.kernel, dut.stride, dut.padding) == ((5, 7, 4), (3, 2), (2, 1), (1, 0, 2, 1))
    assert (dut.pad_code, dut.bits, dut.simd) == (6, 3, 2)  # -2 in 3-bit two's complement
    assert dut.out_shape == (2, 9, 4) and dut.out_shape[:2] == layer.out_shape[:2]
    assert dut.rows == 3 + 2 and dut.min_rows == 3
    assert dut.in_beats == 5 * 7 * 2 and dut.out_beats == 2 * 9 * 3 * 2 * 2
    assert dut.depth == 5 * 7 * 2 and dut.memory_bits == 5 * 7 * 4 * 3
    assert len(dut.i.payload.data) == 6 and len(dut.o.payload.data) == 6
    bipolar = SlidingWindow.from_conv(_conv((3, 3, 1), (2, 2), 1, 1, "bipolar"), 1)
    assert bipolar.pad_code == 0 and bipolar.bits == 1  # the default pad value of bipolar is -1
    dense = Dense(weights=np.ones((2, 4), dtype=np.int64), thresholds=np.zeros((2, 1), dtype=np.int64),
                  out_type="bipolar")
    with pytest.raises(HwnetError, match=r"^SlidingWindow\.from_conv needs a hwnet\.ir\.Conv2d, not Dense$"):
        SlidingWindow.from_conv(dense, 1)
    unbound = Conv2d(weights=np.ones((1, 2, 2, 1), dtype=np.int64), in_shape=(3, 3, 1), name="c0")
    with pytest.raises(HwnetError, match=r"^layer 'c0' has no input type yet; put it in a hwnet\.ir\.Network "
                                         r"first$"):
        SlidingWindow.from_conv(unbound, 1)


def test_one_memory_and_no_multiplier():
    dut = SlidingWindow(in_shape=(6, 5, 4), kernel=3, stride=2, padding=1, pad_code=1, simd=2, bits=3)
    text = rtlil.convert(dut)
    assert "$mul" not in text and "$div" not in text and "$mod" not in text
    read_ports = re.findall(r"cell \$memrd_v2 .*?\n  end", text, re.S)
    assert len(read_ports) == 1 and "parameter \\CLK_ENABLE 1\n" in read_ports[0]  # synchronous: block RAM
    assert len(re.findall(r"cell \$memwr_v2 ", text)) == 1
    assert re.findall(r"memory width (\d+) size (\d+) ", text) == [("6", "50")]  # 5 rows of 5 x 2 words
    assert (dut.rows, dut.depth, dut.memory_bits) == (5, 5 * 5 * 2, 5 * 5 * 4 * 3)


BASE = {"in_shape": (4, 4, 4), "kernel": 3, "stride": 1, "padding": 0, "pad_code": 0, "simd": 2, "bits": 2}


@pytest.mark.parametrize("change,message", [
    ({"simd": 3}, r"^simd=3 must divide the 4 input channels \(C of in_shape \(4, 4, 4\)\)$"),
    ({"simd": 0}, r"^simd must be a positive integer, not 0$"),
    ({"pad_code": 4}, r"^pad_code must be a 2-bit wire code \(0 \.\. 3\), got 4$"),
    ({"pad_code": -1}, r"^pad_code must be a 2-bit wire code \(0 \.\. 3\), got -1$"),
    ({"pad_code": 1.5}, r"^pad_code must be a 2-bit wire code \(0 \.\. 3\), got 1\.5$"),
    ({"kernel": (5, 3)}, r"^a 5x3 kernel with stride \(1, 1\) does not fit the 4x4 input padded by \(top, bottom, "
                         r"left, right\) = \(0, 0, 0, 0\) \(output 0x2\); use a smaller kernel or more padding$"),
    ({"kernel": 6, "padding": (1, 0, 1, 0)}, r"^a 6x6 kernel .* \(output 0x0\);"),
    ({"stride": 0}, r"^stride must be a positive integer or \(sh, sw\), got 0 \(every entry >= 1\)$"),
    ({"stride": (1, -2)}, r"^stride must be a positive integer or \(sh, sw\), got \(1, -2\)"),
    ({"kernel": (3, 0)}, r"^kernel must be a positive integer or \(KH, KW\), got \(3, 0\)"),
    ({"padding": (1, 1, 1)}, r"^padding must be a non-negative integer or \(top, bottom, left, right\), got "
                             r"\(1, 1, 1\)$"),
    ({"padding": -1}, r"^padding must be .* got -1 \(every entry >= 0\)$"),
    ({"in_shape": (4, 4)}, r"^in_shape must be \(H, W, C\), three positive integers, got \(4, 4\)$"),
    ({"bits": 0}, r"^bits must be a positive integer, not 0$"),
    ({"rows": 2}, r"^rows=2 line buffer rows cannot hold the 3 input rows one output row reads; use at least 3$"),
    ({"rows": 0}, r"^rows must be a positive integer, not 0$"),
    ({"positions": 3}, r"^a beat of 3 kernel positions carries whole pixels: simd must be the 4 input channels, got "
                       r"simd=2$"),
    ({"positions": 2, "simd": 4}, r"^positions=2 must divide the kernel width 3, or be a multiple of it that "
                                  r"divides the kernel's 9 positions into whole rows$"),
    ({"positions": 6, "simd": 4}, r"^positions=6 must divide the kernel width 3"),
    ({"positions": 0}, r"^positions must be a positive integer, not 0$"),
    ({"pixels": 2}, r"^pixels=2 sends whole patches of whole pixels: simd must be the 4 input channels and "
                    r"positions the kernel's 9, got simd=2 positions=1$"),
    ({"pixels": 2, "simd": 4, "positions": 9, "padding": (0, 0, 1, 0)},
     r"^pixels=2 must divide the input width 4 and the output width 3$"),
    ({"pixels": 0}, r"^pixels must be a positive integer, not 0$"),
])
def test_bad_parameters(change, message):
    with pytest.raises(HwnetError, match=message):
        SlidingWindow(**{**BASE, **change})
