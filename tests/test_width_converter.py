# amaranth: UnusedElaboratable=no

import math
import random

import pytest

from hwnet.errors import HwnetError
from hwnet.gateware import WidthConverter
from hwnet.gateware.testing import simulate_stream

RATIOS = [(1, 1), (4, 4), (1, 8), (8, 1), (4, 6), (6, 4), (2, 3), (3, 2), (4, 2), (2, 4), (12, 8), (5, 3),
          (1, 3), (3, 1)]


def _vectors(rng, in_lanes, out_lanes, bits, count):
    """``count`` vectors of random elements, each a random multiple of lcm(in_lanes, out_lanes) long."""
    unit = math.lcm(in_lanes, out_lanes)
    return [[rng.getrandbits(bits) for _ in range(unit * rng.randint(1, 3))] for _ in range(count)]


def _beats(elements, lanes, bits, last_at_end=True):
    beats = []
    for k in range(0, len(elements), lanes):
        word = sum(e << (j * bits) for j, e in enumerate(elements[k:k + lanes]))
        beats.append((word, int(last_at_end and k + lanes == len(elements))))
    return beats


def _expected(vectors, lanes, bits):
    return [beat for v in vectors for beat in _beats(v, lanes, bits)]


@pytest.mark.parametrize("in_lanes,out_lanes", RATIOS)
@pytest.mark.parametrize("bits", [1, 3])
@pytest.mark.parametrize("seed", range(2))
def test_order_and_last_with_stalls(in_lanes, out_lanes, bits, seed):
    rng = random.Random(seed * 1000 + in_lanes * 37 + out_lanes * 5 + bits)
    vectors = _vectors(rng, in_lanes, out_lanes, bits, 5)
    beats = [beat for v in vectors for beat in _beats(v, in_lanes, bits)]
    expected = _expected(vectors, out_lanes, bits)
    dut = WidthConverter(in_lanes=in_lanes, out_lanes=out_lanes, bits=bits)
    _, sink = simulate_stream(dut, beats, len(expected), rng=rng.getrandbits(32), valid_prob=0.6,
                              ready_prob=0.5)
    assert sink.beats == expected


@pytest.mark.parametrize("in_lanes,out_lanes", RATIOS)
def test_full_rate(in_lanes, out_lanes):
    rng = random.Random(in_lanes * 100 + out_lanes)
    vectors = _vectors(rng, in_lanes, out_lanes, 2, 6)
    beats = [beat for v in vectors for beat in _beats(v, in_lanes, 2)]
    expected = _expected(vectors, out_lanes, 2)
    dut = WidthConverter(in_lanes=in_lanes, out_lanes=out_lanes, bits=2)
    source, sink = simulate_stream(dut, beats, len(expected))
    assert sink.beats == expected
    if in_lanes == out_lanes:  # a wire: each beat leaves in the cycle it arrives
        assert sink.cycles == source.cycles
    elif in_lanes < out_lanes:  # the input side is the slower one: never stalled
        assert source.cycles == list(range(source.cycles[0], source.cycles[0] + len(beats)))
    else:  # the output side is the slower one: a beat every cycle once the first is ready
        assert sink.cycles == list(range(sink.cycles[0], sink.cycles[0] + len(expected)))
    assert sink.cycles[-1] - source.cycles[0] <= max(len(beats), len(expected)) + 1


def test_ignores_garbage_between_vectors_without_last():
    # a converter only re-chunks: with no last anywhere, none comes out
    rng = random.Random(1)
    elements = [rng.getrandbits(4) for _ in range(24)]
    beats = _beats(elements, 4, 4, last_at_end=False)
    dut = WidthConverter(in_lanes=4, out_lanes=6, bits=4)
    _, sink = simulate_stream(dut, beats, 4, rng=2, valid_prob=0.5, ready_prob=0.5)
    assert sink.beats == _beats(elements, 6, 4, last_at_end=False)


# (in_lanes, out_lanes, vector): vectors that are whole input beats but not whole output beats
PADDED = [(1, 3, 4), (1, 3, 5), (2, 3, 4), (4, 6, 8), (14, 42, 784), (56, 42, 784), (3, 2, 9), (8, 3, 16),
          (6, 4, 6), (12, 8, 12), (5, 3, 10), (2, 5, 2), (16, 48, 784)]


def _padded(vector, out_lanes, pad):
    """A vector padded with ``pad`` up to whole beats of ``out_lanes`` (what the converter must send)."""
    return vector + [pad] * (-len(vector) % out_lanes)


@pytest.mark.parametrize("in_lanes,out_lanes,size", PADDED)
@pytest.mark.parametrize("seed", range(3))
def test_padding_with_stalls(in_lanes, out_lanes, size, seed):
    rng = random.Random(seed * 7919 + in_lanes * 101 + out_lanes * 11 + size)
    bits = rng.choice([1, 2, 3])
    pad = rng.getrandbits(bits)
    vectors = [[rng.getrandbits(bits) for _ in range(size)] for _ in range(4)]
    beats = [beat for v in vectors for beat in _beats(v, in_lanes, bits)]
    expected = [beat for v in vectors for beat in _beats(_padded(v, out_lanes, pad), out_lanes, bits)]
    dut = WidthConverter(in_lanes=in_lanes, out_lanes=out_lanes, bits=bits, vector=size, pad_code=pad)
    assert dut.vector == size
    prob = [(1.0, 1.0), (0.6, 0.5), (0.3, 0.9), (0.9, 0.3)][seed % 4]
    _, sink = simulate_stream(dut, beats, len(expected), rng=rng.getrandbits(32), valid_prob=prob[0],
                              ready_prob=prob[1])
    assert sink.beats == expected


@pytest.mark.parametrize("in_lanes,out_lanes,size", [(14, 42, 784), (56, 42, 784), (1, 3, 4), (12, 8, 12)])
def test_padding_full_rate(in_lanes, out_lanes, size):
    # no stall: the slower side runs every cycle (out beats ceil(size / out_lanes) per vector)
    rng = random.Random(size)
    vectors = [[rng.getrandbits(1) for _ in range(size)] for _ in range(5)]
    beats = [beat for v in vectors for beat in _beats(v, in_lanes, 1)]
    expected = [beat for v in vectors for beat in _beats(_padded(v, out_lanes, 0), out_lanes, 1)]
    source, sink = simulate_stream(WidthConverter(in_lanes=in_lanes, out_lanes=out_lanes, bits=1, vector=size),
                                   beats, len(expected))
    assert sink.beats == expected
    span = sink.cycles[-1] - source.cycles[0]
    assert span <= max(len(beats), len(expected)) + 2


def test_whole_vectors_need_no_padding():
    dut = WidthConverter(in_lanes=4, out_lanes=6, bits=1, vector=24)
    assert dut.vector is None


@pytest.mark.parametrize("kwargs,message", [
    ({"in_lanes": 4, "out_lanes": 3, "bits": 1, "vector": 6}, r"^vector=6 must be a multiple of in_lanes=4$"),
    ({"in_lanes": 4, "out_lanes": 3, "bits": 2, "vector": 8, "pad_code": 4},
     r"^pad_code must be an integer from 0 to 3, not 4$"),
    ({"in_lanes": 4, "out_lanes": 3, "bits": 2, "vector": 0}, r"^vector must be a positive integer, not 0$"),
])
def test_bad_padding(kwargs, message):
    with pytest.raises(HwnetError, match=message):
        WidthConverter(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"in_lanes": 0, "out_lanes": 4, "bits": 1}, r"^in_lanes must be a positive integer, not 0$"),
    ({"in_lanes": 4, "out_lanes": -1, "bits": 1}, r"^out_lanes must be a positive integer, not -1$"),
    ({"in_lanes": 4, "out_lanes": 2, "bits": 1.5}, r"^bits must be a positive integer, not 1\.5$"),
    ({"in_lanes": True, "out_lanes": 2, "bits": 1}, r"^in_lanes must be a positive integer, not True$"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(HwnetError, match=message):
        WidthConverter(**kwargs)


def test_ports():
    dut = WidthConverter(in_lanes=4, out_lanes=6, bits=3)
    assert (dut.in_lanes, dut.out_lanes, dut.bits) == (4, 6, 3)
    assert len(dut.i.payload.data) == 12
    assert len(dut.o.payload.data) == 18
