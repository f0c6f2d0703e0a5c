"""An 8N1 UART: :class:`UartRx` and :class:`UartTx`, byte streams on one side, the serial line on the other.

(There is no Amaranth UART on PyPI to use instead: the ``amaranth-stdio`` name there is an empty placeholder.)
``divisor`` is the clock cycles per bit (``clock frequency / baud rate``, rounded); a byte is a start bit (0),
eight data bits least significant first and a stop bit (1), and the line idles at 1.
"""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ._common import check_positive_int, validating

__all__ = ["UartRx", "UartTx", "check_divisor"]


def check_divisor(divisor):
    """``divisor`` as clock cycles per bit, or one :class:`~hwnet.errors.HwnetError` line."""
    divisor = check_positive_int(divisor, "divisor")
    if divisor < 4:
        from ..errors import HwnetError
        raise HwnetError(f"divisor={divisor} clock cycles per bit is too few to sample a bit; use at least 4 "
                         f"(a slower baud rate or a faster clock)")
    return divisor


class UartRx(wiring.Component):
    """UART receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : ``In(1, init=1)``
        The serial line (synchronized inside by two flip-flops).
    o : ``Out(stream.Signature(unsigned(8)))``
        Received bytes. A byte is offered until taken; one that arrives before the last is taken replaces it and
        pulses ``overrun``. A byte whose stop bit is 0 (a framing error, e.g. noise) is dropped.
    overrun : ``Out(1)``
    """

    def __init__(self, *, divisor):
        with validating(self):
            self._divisor = check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(unsigned(8))), "overrun": Out(1)})

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        sync1, line = Signal(init=1), Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]
        timer = Signal(range(d + 1))
        bit = Signal(range(10))
        shift = Signal(8)
        m.d.sync += self.overrun.eq(0)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += [timer.eq(d // 2), bit.eq(0)]
                    m.next = "BITS"
            with m.State("BITS"):  # sample in the middle of each bit: start, 8 data, stop
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 0):
                        with m.If(line):  # a glitch, not a start bit
                            m.next = "IDLE"
                    with m.Elif(bit < 9):
                        m.d.sync += shift.eq(Cat(shift[1:], line))
                    with m.Else():
                        with m.If(line):
                            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1),
                                         self.overrun.eq(self.o.valid & ~self.o.ready)]
                        m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """UART transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    i : ``In(stream.Signature(unsigned(8)))``
        Bytes to send, one taken whenever the line is idle.
    tx : ``Out(1, init=1)``
        The serial line.
    """

    def __init__(self, *, divisor):
        with validating(self):
            self._divisor = check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(unsigned(8))), "tx": Out(1, init=1)})

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        bits = Signal(range(11))
        frame = Signal(10, init=0x3FF)  # stop, data, start: sent from bit 0
        m.d.comb += [self.tx.eq(frame[0]), self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [frame.eq(Cat(0, self.i.payload, 1)), bits.eq(10), timer.eq(d - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits.eq(bits - 1), timer.eq(d - 1)]
        return m
