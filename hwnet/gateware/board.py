"""The board top: a network behind a UART and the framed protocol of :mod:`hwnet.protocol`, with LEDs showing the
last class.

::

    rx -> UartRx -> receiver -- payload bytes (a queue of one whole vector) -- packer --> NetworkTop
                       |                                                            |
                       +-- replies (type, seq, code) --> sender <-- output beats ---+
                                                           |
                                                  UartTx -> tx, argmax -> leds

The receiver hunts for the sync bytes, checks the header (version, type, the exact length for the type) and
computes the CRC while it takes the payload, which goes to the network as it arrives: the bytes queue up (8 bits
wide, so a large input takes a block RAM or two rather than a beat-wide memory) and a packer assembles them into
the network's input beats. An ``INFER``
frame is taken only when the top is idle (no reply pending, the input queue empty, so the whole vector fits the
queue and no beat is ever dropped); one that arrives while busy is answered ``ERROR`` (input overrun). A bad header
is answered ``ERROR`` at once and the receiver hunts again from the next byte. When an ``INFER`` frame's CRC
arrives, its reply is queued: ``RESULT`` if the CRC matches, else ``ERROR`` (bad CRC) after the sender has drained
and dropped that vector's output (the network computed it from the payload as received). The network may finish
before the CRC arrives: its output waits (backpressure) for the verdict. So no byte sequence can desynchronize
the network from the frames, and none can deadlock the top.

A design with weights in SPRAM also takes ``LOAD`` frames (the image, :data:`hwnet.protocol.LOAD_WORDS` words
at a time): the chunk's words wait in a byte queue of their own until the CRC arrives; then, if the CRC is good and
the chunk's offset is the count loaded so far, a packer pushes them (at most the words the image still lacks) into
the network's ``load`` port, else they are dropped; the reply (``LOADED``) carries the count. ``INFER`` is answered
``ERROR`` (weights not loaded) until the count is the whole image.

The sender sends the queued replies in order: the header, the payload (the network's output beats, the design
info, or the error code) and the CRC, through :class:`~hwnet.gateware.uart.UartTx`. While it sends a ``RESULT``,
an argmax over the outputs (ties to the lowest index, comparing the values, not the codes) sets ``leds`` to the class
when the vector ends.
"""

import functools
import operator

from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.hdl import Array, Cat, ClockDomain, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import fifo, io, wiring
from amaranth.lib.wiring import In, Out

from .. import protocol
from ..compiler import DesignPlan
from ..errors import HwnetError
from ._common import check_positive_int, validating
from .network import NetworkTop
from .uart import UartRx, UartTx, check_divisor

__all__ = ["BoardTop", "BoardPlatformTop"]

_KIND_RESULT, _KIND_INFO, _KIND_ERROR, _KIND_LOADED = 0, 1, 2, 3


def _crc_byte_py(crc, byte):
    """The CRC-16/CCITT-FALSE register after one more byte (bitwise, on integers: the model of the gateware)."""
    c = crc ^ (byte << 8)
    for _ in range(8):
        c = ((c << 1) ^ 0x1021 if c & 0x8000 else c << 1) & 0xFFFF
    return c


# The CRC register after a byte is linear over GF(2) in (register, byte): output bit k is the XOR of the input
# bits whose unit vectors set it. Computed once from the model above.
_CRC_TAPS = [([i for i in range(16) if _crc_byte_py(1 << i, 0) >> k & 1],
              [j for j in range(8) if _crc_byte_py(0, 1 << j) >> k & 1]) for k in range(16)]


def _crc_step(crc, byte):
    """CRC-16/CCITT-FALSE after one more byte, as 16 XORs of register and byte bits (:data:`_CRC_TAPS`)."""
    byte = Cat(byte, Const(0, 8))[:8]  # a narrower value (an error code) is zero-extended
    bits = []
    for reg_taps, byte_taps in _CRC_TAPS:
        terms = [crc[i] for i in reg_taps] + [byte[j] for j in byte_taps]
        bits.append(functools.reduce(operator.xor, terms) if terms else Const(0, 1))
    return Cat(*bits)


class BoardTop(wiring.Component):
    """A :class:`~hwnet.gateware.network.NetworkTop` behind a UART (module documentation).

    Parameters
    ----------
    plan : :class:`~hwnet.compiler.DesignPlan`
        The network. A design that streams weights from SPRAM takes its image in ``LOAD`` frames after reset
        (:mod:`hwnet.protocol`); until it has all of it, ``INFER`` is answered ``ERROR`` (weights not loaded).
    divisor : int
        Clock cycles per UART bit (``clock / baud``), at least 4.
    leds : int
        LED outputs; the class index, truncated to them.
    spram_primitive : bool
        Build the SPRAM pool from ``SB_SPRAM256KA`` instances (an iCE40UP board) rather than a behavioural memory
        (simulation).

    Members
    -------
    rx : ``In(1, init=1)``
    tx : ``Out(1, init=1)``
    leds : ``Out(leds)``
    info : :class:`hwnet.protocol.DesignInfo`
        What the top answers to ``INFO``.
    """

    def __init__(self, *, plan, divisor, leds=8, spram_primitive=False):
        with validating(self):
            if not isinstance(plan, DesignPlan):
                raise HwnetError(f"BoardTop needs a DesignPlan from hwnet.compiler.plan, not {type(plan).__name__}")
            self._divisor = check_divisor(divisor)
            self._leds = check_positive_int(leds, "leds")
        self._spram_primitive = bool(spram_primitive)
        self._plan = plan
        self._info = protocol.DesignInfo.of_plan(plan)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(self._leds)})

    @property
    def plan(self):
        return self._plan

    @property
    def info(self):
        return self._info

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        plan, info = self._plan, self._info
        m.submodules.net = net = NetworkTop(plan=plan, spram_primitive=self._spram_primitive)
        m.submodules.uart_rx = urx = UartRx(divisor=self._divisor)
        m.submodules.uart_tx = utx = UartTx(divisor=self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        in_bits = plan.input_lanes * plan.input_type.bits
        in_bytes = protocol.beat_bytes(plan.input_lanes, plan.input_type.bits)
        out_bits = plan.output_lanes * plan.output_type.bits
        out_bytes = protocol.beat_bytes(plan.output_lanes, plan.output_type.bits)

        # the payload bytes queue up as they arrive (a whole vector fits, so a frame taken while idle never waits)
        # and a packer assembles them into input beats: the queue is 8 bits wide, a block RAM for large inputs
        m.submodules.in_queue = in_queue = fifo.SyncFIFOBuffered(width=8, depth=max(2, info.input_payload))
        beat = Signal(in_bytes * 8)
        packed = Signal(range(in_bytes))
        beats_in = Signal(range(plan.input_beats))
        offer = Signal()
        m.d.comb += [net.i.payload.data.eq(beat[:in_bits]), net.i.payload.last.eq(beats_in == plan.input_beats - 1),
                     net.i.valid.eq(offer), in_queue.r_en.eq(~offer)]
        with m.If(offer):
            with m.If(net.i.ready):
                m.d.sync += [offer.eq(0), beats_in.eq(Mux(beats_in == plan.input_beats - 1, 0, beats_in + 1))]
        with m.Elif(in_queue.r_rdy):  # bytes arrive lowest first: shift right, the new byte on top
            m.d.sync += [beat.eq(Cat(beat[8:], in_queue.r_data)), packed.eq(Mux(packed == in_bytes - 1, 0, packed + 1))]
            with m.If(packed == in_bytes - 1):
                m.d.sync += offer.eq(1)
        # replies in frame order: (kind, seq, code)
        m.submodules.replies = replies = fifo.SyncFIFOBuffered(width=2 + 8 + 3, depth=4)

        # the SPRAM image, loaded by LOAD frames: a chunk's words wait in a queue until its CRC has arrived, then
        # go to the network's load port if the chunk is the next one (its offset is the count loaded), else are
        # dropped; `loaded` counts the words taken
        total = plan.spram_words
        loaded = Signal(range(total + 1))
        loaded_all = loaded == total
        ack = Signal(32)
        load_busy = Const(0)
        if total:
            m.submodules.load_queue = load_queue = fifo.SyncFIFOBuffered(width=8, depth=8 * protocol.LOAD_WORDS)
            word = Signal(64)
            word_bytes = Signal(range(8))
            word_valid = Signal()
            commit = Signal(range(protocol.LOAD_WORDS + 1))
            flushing = Signal()
            remaining = Signal(range(total + 1))
            m.d.comb += [net.load.payload.eq(word), net.load.valid.eq(word_valid), remaining.eq(total - loaded),
                         load_queue.r_en.eq(flushing & ~word_valid)]
            with m.If(word_valid):
                with m.If(net.load.ready):
                    m.d.sync += [word_valid.eq(0), loaded.eq(loaded + 1)]
            with m.Elif(flushing):
                with m.If(load_queue.r_rdy):
                    with m.If(commit != 0):  # bytes arrive lowest first: shift right, the new byte on top
                        m.d.sync += [word.eq(Cat(word[8:], load_queue.r_data)), word_bytes.eq(word_bytes + 1)]
                        with m.If(word_bytes == 7):
                            m.d.sync += [word_valid.eq(1), commit.eq(commit - 1)]
                with m.Elif(commit == 0):
                    m.d.sync += flushing.eq(0)
            load_busy = load_queue.r_rdy | flushing | word_valid

        # -- receiver ------------------------------------------------------------------------------------------------
        byte = urx.o.payload
        got = Signal()
        m.d.comb += [urx.o.ready.eq(1), got.eq(urx.o.valid)]
        crc = Signal(16)
        hdr = Array(Signal(8, name=f"hdr{k}") for k in range(5))  # version, type, seq, length lo, hi
        idx = Signal(range(5))
        busy, sending = Signal(), Signal()
        m.d.comb += busy.eq(replies.r_rdy | in_queue.r_rdy | offer | (packed != 0) | (beats_in != 0) | sending
                            | load_busy)
        received = Signal(range(max(info.input_payload, protocol.LOAD_BYTES)))
        offset = Signal(32)
        crc_lo = Signal(8)
        rx_crc_next = Signal(16)  # one CRC step for every byte received (the states choose when it counts)
        m.d.comb += rx_crc_next.eq(_crc_step(crc, byte))
        push = Signal()
        push_kind, push_code = Signal(2), Signal(3)
        m.d.comb += [replies.w_data.eq(Cat(push_kind, hdr[2], push_code)), replies.w_en.eq(push)]

        def reply(kind, code):
            m.d.comb += [push.eq(1), push_kind.eq(kind), push_code.eq(code)]

        def admit(checks, state):
            """After a header: the first failing ``(bad, code)`` check is answered ``ERROR`` and the receiver hunts
            again; with none failing it takes the frame's payload in ``state``."""
            for k, (bad, code) in enumerate(checks):
                with (m.If if k == 0 else m.Elif)(bad):
                    reply(_KIND_ERROR, code)
                    m.next = "HUNT"
            with m.Else():
                m.d.sync += received.eq(0)
                m.next = state

        with m.FSM(name="receiver"):
            with m.State("HUNT"):
                with m.If(got & (byte == protocol.SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                with m.If(got):
                    m.d.sync += [idx.eq(0), crc.eq(0xFFFF)]
                    with m.If(byte == protocol.SYNC[1]):
                        m.next = "HEADER"
                    with m.Elif(byte != protocol.SYNC[0]):
                        m.next = "HUNT"
            with m.State("HEADER"):
                with m.If(got):
                    m.d.sync += [hdr[idx].eq(byte), idx.eq(idx + 1), crc.eq(rx_crc_next)]
                    with m.If((idx == 0) & (byte == protocol.SYNC[0])):  # garbage ended in the sync: resync
                        m.next = "SYNC1"
                    with m.Elif(idx == 4):
                        full_length = Cat(hdr[3], byte)
                        version_ok = hdr[0] == protocol.VERSION
                        with m.If(~version_ok):
                            reply(_KIND_ERROR, protocol.BAD_VERSION)
                            m.next = "HUNT"
                        with m.Elif(hdr[1] == protocol.INFER):
                            admit([(full_length != info.input_payload, protocol.BAD_LENGTH),
                                   (busy, protocol.OVERRUN), (~loaded_all, protocol.NOT_LOADED)], "PAYLOAD")
                        if total:
                            with m.Elif(hdr[1] == protocol.LOAD):
                                admit([(full_length != protocol.LOAD_BYTES, protocol.BAD_LENGTH),
                                       (busy, protocol.OVERRUN)], "LOAD")
                        with m.Elif(hdr[1] == protocol.INFO):
                            admit([(full_length != 0, protocol.BAD_LENGTH)], "CRC0")
                        with m.Else():
                            reply(_KIND_ERROR, protocol.BAD_TYPE)
                            m.next = "HUNT"
            with m.State("PAYLOAD"):
                m.d.comb += [in_queue.w_data.eq(byte), in_queue.w_en.eq(got)]
                with m.If(got):
                    m.d.sync += [crc.eq(rx_crc_next), received.eq(received + 1)]
                    with m.If(received == info.input_payload - 1):
                        m.next = "CRC0"
            if total:
                with m.State("LOAD"):  # the offset (4 bytes), then the words into the load queue
                    m.d.comb += [load_queue.w_data.eq(byte), load_queue.w_en.eq(got & (received >= 4))]
                    with m.If(got):
                        m.d.sync += [crc.eq(rx_crc_next), received.eq(received + 1)]
                        with m.If(received < 4):
                            m.d.sync += offset.eq(Cat(offset[8:], byte))
                        with m.If(received == protocol.LOAD_BYTES - 1):
                            m.next = "CRC0"
            with m.State("CRC0"):
                with m.If(got):
                    m.d.sync += crc_lo.eq(byte)
                    m.next = "CRC1"
            with m.State("CRC1"):
                with m.If(got):
                    ok = Cat(crc_lo, byte) == crc
                    with m.If(hdr[1] == protocol.INFER):
                        reply(_KIND_RESULT, Mux(ok, 0, protocol.BAD_CRC))
                    if total:
                        with m.Elif(hdr[1] == protocol.LOAD):
                            take = Mux(ok & (offset == loaded),
                                       Mux(remaining < protocol.LOAD_WORDS, remaining, protocol.LOAD_WORDS), 0)
                            m.d.sync += [commit.eq(take), flushing.eq(1), ack.eq(loaded + take)]
                            with m.If(ok):
                                reply(_KIND_LOADED, 0)
                            with m.Else():
                                reply(_KIND_ERROR, protocol.BAD_CRC)
                    with m.Elif(ok):
                        reply(_KIND_INFO, 0)
                    with m.Else():
                        reply(_KIND_ERROR, protocol.BAD_CRC)
                    m.next = "HUNT"

        # -- sender --------------------------------------------------------------------------------------------------
        kind = Signal(2)
        seq = Signal(8)
        code = Signal(3)
        out_crc = Signal(16)
        pos = Signal(range(max(7, protocol.INFO_BYTES, out_bytes) + 1))
        beats_out = Signal(range(plan.output_beats))
        out_beat = Signal(out_bytes * 8)
        tx_byte = Signal(8)
        tx_valid = Signal()
        m.d.comb += [utx.i.payload.eq(tx_byte), utx.i.valid.eq(tx_valid)]
        tx_crc_next = Signal(16)  # one CRC step for every byte sent (the states choose when it counts)
        m.d.comb += tx_crc_next.eq(_crc_step(out_crc, tx_byte))
        sent = tx_valid & utx.i.ready
        frame_type = Mux(kind == _KIND_RESULT, protocol.RESULT,
                         Mux(kind == _KIND_INFO, protocol.INFO_REPLY,
                             Mux(kind == _KIND_LOADED, protocol.LOADED, protocol.ERROR)))
        frame_len = Signal(16)
        m.d.comb += frame_len.eq(Mux(kind == _KIND_RESULT, info.output_payload,
                                     Mux(kind == _KIND_INFO, protocol.INFO_BYTES,
                                         Mux(kind == _KIND_LOADED, protocol.LOADED_BYTES, 1))))
        ack_bytes = Array(ack[8 * k:8 * k + 8] for k in range(protocol.LOADED_BYTES))
        info_bytes = Array(Const(b, 8) for b in info.encode())
        take_beat = Signal()
        m.d.comb += net.o.ready.eq(take_beat)
        # argmax of the outputs, lane by lane from a copy of each beat (results only)
        signed = plan.output_type.codes_order_signed
        lane_bits = plan.output_type.bits
        scan = Signal(out_bits)
        scan_left = Signal(range(plan.output_lanes + 1))
        index = Signal(range(plan.output_size + 1))
        best = Signal(lane_bits)
        best_index = Signal(range(plan.output_size))
        value = scan[:lane_bits]
        better = (value.as_signed() > best.as_signed()) if signed else (value > best)
        with m.If(scan_left != 0):
            m.d.sync += [scan.eq(scan >> lane_bits), scan_left.eq(scan_left - 1), index.eq(index + 1)]
            with m.If((index == 0) | better):
                m.d.sync += [best.eq(value), best_index.eq(index)]
        with m.Elif(index == plan.output_size):
            m.d.sync += [self.leds.eq(best_index), index.eq(0)]

        def send(value_):
            """Offer ``value_`` as the next byte to the UART."""
            m.d.comb += [tx_valid.eq(1), tx_byte.eq(value_)]

        with m.FSM(name="sender") as sender:
            with m.State("IDLE"):
                m.d.comb += replies.r_en.eq(1)
                with m.If(replies.r_rdy):
                    m.d.sync += [kind.eq(replies.r_data[:2]), seq.eq(replies.r_data[2:10]),
                                 code.eq(replies.r_data[10:13]), pos.eq(0), beats_out.eq(0)]
                    with m.If((replies.r_data[:2] == _KIND_RESULT) & (replies.r_data[10:13] != 0)):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "HEADER"
            with m.State("DRAIN"):  # a vector whose frame failed its CRC: drop its output, then report
                m.d.comb += take_beat.eq(1)
                with m.If(net.o.valid):
                    m.d.sync += beats_out.eq(beats_out + 1)
                    with m.If(beats_out == plan.output_beats - 1):
                        m.d.sync += [kind.eq(_KIND_ERROR), beats_out.eq(0)]
                        m.next = "HEADER"
            with m.State("HEADER"):
                header = Array([Const(protocol.SYNC[0], 8), Const(protocol.SYNC[1], 8), Const(protocol.VERSION, 8),
                                frame_type, seq, frame_len[:8], frame_len[8:16]])
                send(header[pos])
                with m.If(sent):
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(pos == 1):
                        m.d.sync += out_crc.eq(0xFFFF)
                    with m.Elif(pos >= 2):
                        m.d.sync += out_crc.eq(tx_crc_next)
                    with m.If(pos == 6):
                        m.d.sync += pos.eq(0)
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                with m.If(kind == _KIND_RESULT):
                    with m.If(pos == 0):  # the next output beat
                        m.d.comb += take_beat.eq(scan_left == 0)
                        with m.If(net.o.valid & (scan_left == 0)):
                            m.d.sync += [out_beat.eq(net.o.payload.data), pos.eq(1),
                                         scan.eq(net.o.payload.data), scan_left.eq(plan.output_lanes)]
                    with m.Else():
                        send(out_beat[:8])
                        with m.If(sent):
                            m.d.sync += [out_beat.eq(out_beat >> 8), out_crc.eq(tx_crc_next),
                                         pos.eq(Mux(pos == out_bytes, 0, pos + 1))]
                            with m.If(pos == out_bytes):
                                m.d.sync += beats_out.eq(beats_out + 1)
                                with m.If(beats_out == plan.output_beats - 1):
                                    m.next = "CRC0"
                with m.Elif(kind == _KIND_LOADED):
                    send(ack_bytes[pos])
                    with m.If(sent):
                        m.d.sync += [pos.eq(pos + 1), out_crc.eq(tx_crc_next)]
                        with m.If(pos == protocol.LOADED_BYTES - 1):
                            m.next = "CRC0"
                with m.Elif(kind == _KIND_INFO):
                    send(info_bytes[pos])
                    with m.If(sent):
                        m.d.sync += [pos.eq(pos + 1), out_crc.eq(tx_crc_next)]
                        with m.If(pos == protocol.INFO_BYTES - 1):
                            m.next = "CRC0"
                with m.Else():
                    send(code)
                    with m.If(sent):
                        m.d.sync += out_crc.eq(tx_crc_next)
                        m.next = "CRC0"
            with m.State("CRC0"):
                send(out_crc[:8])
                with m.If(sent):
                    m.next = "CRC1"
            with m.State("CRC1"):
                send(out_crc[8:])
                with m.If(sent):
                    m.next = "IDLE"
        m.d.comb += sending.eq(~sender.ongoing("IDLE"))
        return m


class BoardPlatformTop(Elaboratable):
    """A :class:`BoardTop` on an amaranth-boards platform: its UART on the board's serial bridge (or on header
    pins, :attr:`hwnet.boards.Board.uart_pins`) and its class on the board's LEDs.

    Parameters
    ----------
    plan : :class:`~hwnet.compiler.DesignPlan`
    board : :class:`hwnet.boards.Board`
    divisor : int
        Clock cycles per UART bit at the design's clock.
    clock : Elaboratable or None
        None: the platform's default clock domain (the board clock). Otherwise a clock generator that drives
        its ``domain`` (:class:`hwnet.gateware.pll.PllClock`), which this top defines.
    """

    def __init__(self, *, plan, board, divisor, clock=None):
        self.board = board
        self.clock = clock
        self.core = BoardTop(plan=plan, divisor=divisor, leds=len(board.leds),
                             spram_primitive=board.family == "ice40")

    def elaborate(self, platform):
        m = Module()
        m.submodules.board = core = self.core
        if self.clock is not None:  # the clock generator drives the domain defined here
            m.domains += ClockDomain(self.clock.domain)
            m.submodules.clock = self.clock
        if self.board.uart_pins is not None:
            conn, number, tx, rx, _ = self.board.uart_pins
            attrs = Attrs(IO_STANDARD="SB_LVCMOS") if self.board.family == "ice40" else Attrs(IO_TYPE="LVCMOS33")
            platform.add_resources([Resource("uart", 0, Subsignal("tx", Pins(tx, dir="o", conn=(conn, number))),
                                             Subsignal("rx", Pins(rx, dir="i", conn=(conn, number))), attrs)])
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx.i), tx.o.eq(core.tx)]
        leds = {}
        for k, (name, number, channel) in enumerate(self.board.leds):
            if (name, number) not in leds:
                leds[name, number] = platform.request(name, number, dir="-")
            port = getattr(leds[name, number], channel) if channel else leds[name, number]
            m.submodules[f"led{k}_buffer"] = buffer = io.Buffer("o", port)
            m.d.comb += buffer.o.eq(core.leds[k])
        return m
