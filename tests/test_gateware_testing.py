# amaranth: UnusedElaboratable=no
"""The simulation helpers must catch what they are there to catch."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwnet.gateware import WidthConverter, beat_signature
from hwnet.gateware.testing import (SimulationTimeout, assert_equal_vectors, beats_to_vectors, random_network,
                                    simulate_stream, vectors_to_beats)


class _Fickle(wiring.Component):
    """Offers a beat every other cycle and withdraws it whether or not it was taken (breaks the rules)."""

    def __init__(self):
        super().__init__({"i": In(beat_signature(1, 4)), "o": Out(beat_signature(1, 4))})

    def elaborate(self, platform):
        m = Module()
        count = Signal(4)
        m.d.sync += count.eq(count + 1)
        m.d.comb += [self.o.valid.eq(count[0]), self.o.payload.data.eq(count), self.i.ready.eq(1)]
        return m


def test_beats_round_trip():
    rng = np.random.default_rng(0)
    x = rng.integers(-8, 8, size=(3, 12))
    beats = vectors_to_beats(x, "int4", 4)
    assert len(beats) == 9
    assert [last for _, last in beats] == [0, 0, 1] * 3
    assert (beats_to_vectors(beats, "int4", 4, 12) == x).all()


def test_beats_to_vectors_checks_last():
    beats = vectors_to_beats(np.ones((2, 4), dtype=int), "bipolar", 2)
    beats[1] = (beats[1][0], 0)
    with pytest.raises(AssertionError, match=r"^beat 1 \(beat 1 of vector 0\): last=0, expected 1$"):
        beats_to_vectors(beats, "bipolar", 2, 4)
    with pytest.raises(AssertionError, match=r"not a whole number of 2-beat vectors"):
        beats_to_vectors(beats[:3], "bipolar", 2, 4)


def test_assert_equal_vectors_names_first_difference():
    a = np.zeros((2, 3), dtype=int)
    b = a.copy()
    b[1, 2] = 5
    with pytest.raises(AssertionError, match=r"^output: 1 element\(s\) differ; first at vector 1 element 2: "
                                             r"got 0, expected 5$"):
        assert_equal_vectors(a, b)


def test_sink_catches_withdrawn_valid():
    with pytest.raises(AssertionError, match=r"^stream rule broken: cycle \d+: valid dropped"):
        simulate_stream(_Fickle(), [], 6, rng=1, ready_prob=0.3)


def test_timeout_instead_of_hang():
    dut = WidthConverter(in_lanes=2, out_lanes=4, bits=1)
    with pytest.raises(SimulationTimeout, match=r"^simulation did not finish in 50 cycles: 1 of 1 input beats "
                                                r"taken, 0 of 1 output beats seen$"):
        simulate_stream(dut, [(3, 1)], 1, max_cycles=50)


def test_random_network_respects_cycle_bound():
    rng = np.random.default_rng(3)
    for _ in range(10):
        net = random_network(rng, input_size=48, hidden=[24, 16], outputs=6, max_cycles=20)
        assert all(layer.cycles <= 20 for layer in net.dense_layers())
