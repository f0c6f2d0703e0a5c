"""Weights streamed from the iCE40UP's single-port RAMs: :class:`SpramWeightStreamer`.

An iCE40UP5K has 30 block RAMs of 4 Kbit (120 Kbit) and four SB_SPRAM256KA single-port RAMs of 16K x 16 bits
(1 Mbit). Networks whose weights do not fit the block RAMs keep some layers' weights (``weight_storage="spram"``)
in the SPRAMs, all of a layer's PEs' or only some (``spram_pes``: the others keep their block-RAM ROMs). hwnet uses
the four side by side as one pool of :data:`~hwnet.compiler.SPRAM_DEPTH` words of
:data:`~hwnet.compiler.SPRAM_WIDTH` bits; the compiler gives each such layer a region of consecutive words
(:meth:`hwnet.compiler.DenseStage.spram_words`: per address, the streamed PEs' weight words side by side).

SPRAM cannot be initialized by the bitstream, so the streamer has two phases:

- **load**: after reset it takes the pool image (:meth:`hwnet.compiler.DesignPlan.spram_image`) on ``load``, one
  word per beat, written to addresses ``0, 1, ...``; after the last word ``loaded`` rises and ``load.ready``
  stays low until the next reset. On a board the image comes from the host or the configuration flash.
- **stream**: each region ``k`` has a queue of :data:`QUEUE_DEPTH` words in front of its matrix-vector unit's
  ``w`` stream and an address counter that walks the region over and over (a unit reads its weights in the
  same order for every vector). Every cycle the RAM reads one word for a region whose queue has room for it
  counting the read still in flight (the single port serves one region per cycle), chosen round-robin, so the
  regions share the pool's bandwidth of one word per cycle and a lone region gets a word every cycle.

A unit whose queue runs dry waits (its ``fire`` needs ``w.valid``), so sharing costs throughput, never
correctness. With ``primitive=True`` the pool is four ``SB_SPRAM256KA`` instances (for iCE40 synthesis);
otherwise an :class:`~amaranth.lib.memory.Memory` of the same words (simulation, and other families).
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler import SPRAM_BLOCK_WIDTH, SPRAM_BLOCKS, SPRAM_DEPTH, SPRAM_WIDTH
from ..errors import HwnetError
from ._common import check_positive_int, validating

__all__ = ["SpramWeightStreamer", "QUEUE_DEPTH"]

#: Words queued per region in front of its unit: enough for a word every cycle with one read in flight.
QUEUE_DEPTH = 4


class SpramWeightStreamer(wiring.Component):
    """Loads the SPRAM pool, then streams each region's words, round and round, to its unit.

    Parameters
    ----------
    regions : sequence of (base, depth, width)
        Per streamed layer: its first word, its word count and the bits of its words (at most
        :data:`~hwnet.compiler.SPRAM_WIDTH`). Regions lie one after another from address 0.
    primitive : bool
        Build the pool from ``SB_SPRAM256KA`` instances (iCE40UP synthesis) instead of a ``Memory``.

    Members
    -------
    load : ``In(stream.Signature(unsigned(SPRAM_WIDTH)))``
        The pool image, one word per beat, taken only before ``loaded``.
    loaded : ``Out(1)``
        Every word of the image has been written.
    w<k> : ``Out(stream.Signature(unsigned(width_k)))``
        Region ``k``'s words in address order, repeated, once ``loaded``.
    """

    def __init__(self, *, regions, primitive=False):
        with validating(self):
            regions = [tuple(r) for r in regions]
            if not regions:
                raise HwnetError("the SPRAM streamer needs at least one region")
            base = 0
            for k, (start, depth, width) in enumerate(regions):
                check_positive_int(depth, f"region {k} depth")
                check_positive_int(width, f"region {k} width")
                if start != base:
                    raise HwnetError(f"region {k} starts at word {start}, not right after the region before it "
                                     f"({base})")
                if width > SPRAM_WIDTH:
                    raise HwnetError(f"region {k}: {width}-bit words do not fit the {SPRAM_WIDTH}-bit SPRAM pool")
                base += depth
            if base > SPRAM_DEPTH:
                raise HwnetError(f"the regions need {base} words but the SPRAM pool holds {SPRAM_DEPTH}")
        self._regions = regions
        self._words = base
        self._primitive = bool(primitive)
        members = {"load": In(stream.Signature(unsigned(SPRAM_WIDTH))), "loaded": Out(1)}
        for k, (_, _, width) in enumerate(regions):
            members[f"w{k}"] = Out(stream.Signature(unsigned(width)))
        super().__init__(members)

    @property
    def regions(self):
        return tuple(self._regions)

    @property
    def words(self):
        """Words of the image to load."""
        return self._words

    def elaborate(self, platform):
        m = Module()
        regions, count = self._regions, len(self._regions)

        # The pool's one port: a write while loading, a read while streaming.
        addr = Signal(range(max(self._words, 2)), name="addr")
        wdata = Signal(SPRAM_WIDTH, name="wdata")
        wen = Signal(name="wen")
        ren = Signal(name="ren")
        rdata = Signal(SPRAM_WIDTH, name="rdata")
        if self._primitive:
            address = Signal(14, name="address")
            m.d.comb += address.eq(addr)
            for b in range(SPRAM_BLOCKS):
                lane = slice(b * SPRAM_BLOCK_WIDTH, (b + 1) * SPRAM_BLOCK_WIDTH)
                m.submodules[f"spram{b}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=address, i_DATAIN=wdata[lane], i_MASKWREN=Const(0b1111, 4),
                    i_WREN=wen, i_CHIPSELECT=wen | ren, i_CLOCK=ClockSignal("sync"), i_STANDBY=Const(0, 1),
                    i_SLEEP=Const(0, 1), i_POWEROFF=Const(1, 1), o_DATAOUT=rdata[lane])
        else:
            m.submodules.pool = pool = Memory(shape=unsigned(SPRAM_WIDTH), depth=max(self._words, 2), init=[])
            wport = pool.write_port()
            rport = pool.read_port()
            m.d.comb += [wport.addr.eq(addr), wport.data.eq(wdata), wport.en.eq(wen),
                         rport.addr.eq(addr), rport.en.eq(ren), rdata.eq(rport.data)]

        # Load phase.
        load_addr = Signal(range(self._words + 1), name="load_addr")
        loaded = Signal(name="loaded_r")
        m.d.comb += [self.load.ready.eq(~loaded), self.loaded.eq(loaded)]
        with m.If(self.load.valid & ~loaded):
            m.d.sync += load_addr.eq(load_addr + 1)
            with m.If(load_addr == self._words - 1):
                m.d.sync += loaded.eq(1)

        # Stream phase: per region a queue, an address counter and a read in flight.
        queues, next_addr, inflight, eligible = [], [], [], []
        for k, (start, depth, width) in enumerate(regions):
            q = fifo.SyncFIFOBuffered(width=width, depth=QUEUE_DEPTH)
            m.submodules[f"queue{k}"] = q
            w = getattr(self, f"w{k}")
            m.d.comb += [w.payload.eq(q.r_data), w.valid.eq(q.r_rdy), q.r_en.eq(w.ready)]
            a = Signal(range(start + depth), init=start, name=f"addr{k}")
            f = Signal(name=f"inflight{k}")
            e = Signal(name=f"eligible{k}")
            m.d.comb += e.eq(loaded & (q.level + f < QUEUE_DEPTH))
            queues.append(q)
            next_addr.append(a)
            inflight.append(f)
            eligible.append(e)

        # Round-robin: starting at region `turn`, the first eligible region is read this cycle.
        turn = Signal(range(count), name="turn")
        chosen = Signal(range(count), name="chosen")
        with m.Switch(turn):
            for t in range(count):
                with m.Case(t):
                    order = [(t + j) % count for j in range(count)]
                    with m.If(eligible[order[0]]):
                        m.d.comb += [ren.eq(1), chosen.eq(order[0])]
                    for k in order[1:]:
                        with m.Elif(eligible[k]):
                            m.d.comb += [ren.eq(1), chosen.eq(k)]
        with m.If(loaded):
            with m.Switch(chosen):
                for k in range(count):
                    with m.Case(k):
                        m.d.comb += addr.eq(next_addr[k])
        with m.Else():
            m.d.comb += [addr.eq(load_addr), wdata.eq(self.load.payload), wen.eq(self.load.valid)]

        for k, (start, depth, width) in enumerate(regions):
            read_k = ren & (chosen == k)
            m.d.sync += inflight[k].eq(read_k)
            with m.If(read_k):
                m.d.sync += next_addr[k].eq(_wrap(next_addr[k], start, depth))
            # the word read last cycle enters its queue (room was counted when the read was issued)
            m.d.comb += [queues[k].w_en.eq(inflight[k]), queues[k].w_data.eq(rdata[:width])]
        with m.If(ren):
            m.d.sync += turn.eq(_wrap(chosen, 0, count))
        return m


def _wrap(value, start, depth):
    """``value + 1``, back to ``start`` after ``start + depth - 1``."""
    return Mux(value == start + depth - 1, start, value + 1)
