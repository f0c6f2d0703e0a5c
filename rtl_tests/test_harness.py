"""The Verilator harness itself: a FIFO must give back exactly what went in, under any stalls."""

import numpy as np
import pytest
from amaranth import Module, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.sim import StreamFormat, run_stream

pytestmark = pytest.mark.rtl


class _FifoTop(wiring.Component):
    def __init__(self, width, depth, drop_every=None):
        self._width, self._depth, self._drop = width, depth, drop_every
        layout = data.StructLayout({"data": unsigned(width), "last": 1})
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = f = fifo.SyncFIFOBuffered(width=self._width + 1, depth=self._depth)
        m.d.comb += [f.w_data.eq(self.i.payload), f.w_en.eq(self.i.valid), self.i.ready.eq(f.w_rdy),
                     self.o.payload.eq(f.r_data), self.o.valid.eq(f.r_rdy), f.r_en.eq(self.o.ready)]
        return m


def _fmt(type_name, size, lanes):
    t = parse_type(type_name)
    return StreamFormat(t, size, lanes, t, size, lanes)


@pytest.mark.parametrize("type_name,size,lanes,stall_in,stall_out", [
    ("uint8", 16, 4, 0.0, 0.0),
    ("int5", 12, 3, 0.3, 0.5),
    ("bipolar", 128, 64, 0.5, 0.3),
])
def test_fifo_returns_inputs_under_stalls(type_name, size, lanes, stall_in, stall_out):
    fmt = _fmt(type_name, size, lanes)
    rng = np.random.default_rng(size)
    t = fmt.input_type
    x = rng.choice(t.values(), size=(40, size))
    x[0] = t.max
    x[1] = t.min
    v = verilog.convert(_FifoTop(fmt.in_width, 4), name="hwnet_top")
    res = run_stream(v, fmt, x, stall_in=stall_in, stall_out=stall_out, seed=3)
    np.testing.assert_array_equal(res.outputs, x)
    assert len(res.in_cycles) == 40 * fmt.in_beats and len(res.out_cycles) == 40 * fmt.out_beats
    if stall_in == 0 and stall_out == 0:
        assert res.interval == fmt.in_beats  # one beat per cycle through a FIFO


def test_harness_reports_a_hang():
    fmt = _fmt("uint8", 8, 4)

    class _Sink(wiring.Component):  # takes input (counting it, so it has a clock), never answers
        i: In(stream.Signature(data.StructLayout({"data": unsigned(32), "last": 1})))
        o: Out(stream.Signature(data.StructLayout({"data": unsigned(32), "last": 1})))

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.i.ready.eq(1)
            count = Signal(8)
            m.d.sync += count.eq(count + self.i.valid)
            return m

    v = verilog.convert(_Sink(), name="hwnet_top")
    with pytest.raises(HwnetError, match="hang or deadlock"):
        run_stream(v, fmt, np.zeros((3, 8), dtype=int), max_cycles=200)
