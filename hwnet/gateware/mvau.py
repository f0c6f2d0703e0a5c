"""The folded matrix-vector-threshold unit (FINN's MVAU), with any kind of processing element.

A dense layer with ``MH`` outputs and ``MW`` inputs runs on ``pe`` processing elements (:mod:`.pe`, chosen by the
stage's :class:`~hwnet.compiler.Arithmetic`), each taking ``simd`` input lanes per cycle. An input vector arrives
as ``sf = MW / simd`` beats; the unit computes ``nf = MH / pe`` neuron folds over it, one beat per cycle (one beat
per weight bit plane per cycle when bit-serial), so a vector takes exactly ``nf * sf * planes`` cycles. The memory
layout and the stream lane order are those of :mod:`hwnet.compiler`: at neuron fold ``f`` PE ``p`` computes row
``f * pe + p`` from the words at addresses ``(f * sf + s) * planes + b`` of its own weight memory, and output beat
``f`` carries rows ``f * pe .. f * pe + pe - 1`` in lanes ``0 .. pe - 1``.

Pipeline (every register advances together on ``advance = ~o.valid | o.ready``, so a stalled output freezes
the whole unit, memory read ports included, and nothing is lost or repeated)::

    S0 issue     fold counters (f, s, b), weight address; during fold 0 the input beat is accepted (at plane 0),
                 written into the input buffer at s and kept in a register; in later folds the buffer is read.
    S1 read      weight words (one per PE: from its ROM, from constants, or, for the PEs streaming from SPRAM,
                 from the word taken off ``w`` at issue) and the input word; the processing element sums the
                 lanes' terms, registered.
    S2 acc       h = (first ? 0 : h) + (term sum << b) per PE; after a fold's last beat it holds the row's h,
                 and the threshold stage's first ROM read (by fold) has been issued.
    S3.. out     y = sum_l [h >= T_l] by :class:`~.threshold.ThresholdSearch` (``bits(L) - 1`` more stages for a
                 binary search), or ``step * h + bias`` for a raw layer, registered on ``o``.

Several vectors per beat (``stage.pixels = P > 1``, a convolution's output pixels per cycle; only with ``nf =
sf = planes = 1``): an input beat holds ``P`` vectors side by side, each PE's weight word feeds ``P`` processing
elements, one per vector, each with its own accumulator and threshold search, and the output beat holds the ``P``
vectors' outputs one after another (``pe`` lanes each: NHWC for consecutive pixels).

A fold's output beat is valid :attr:`MatrixVectorThresholdUnit.latency` cycles after the cycle in which its last
input beat was issued (accepted, for fold 0). The next vector's beats are accepted in the cycle after its
predecessor's last fold is issued, so a vector takes ``nf * sf * planes`` cycles with no fill overhead.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler import DenseStage
from ..errors import HwnetError
from ._common import beat_signature, first_code, rom_read, validating
from .pe import processing_element
from .threshold import ThresholdSearch

__all__ = ["MatrixVectorThresholdUnit", "check_dense_stage"]


def check_dense_stage(stage):
    """Raise :class:`HwnetError` unless ``stage`` is a :class:`DenseStage` this unit can build."""
    if not isinstance(stage, DenseStage):
        raise HwnetError(f"MatrixVectorThresholdUnit needs a DenseStage from hwnet.compiler.plan, "
                         f"not {type(stage).__name__}")
    if len(stage.weight_words) != stage.pe or any(len(w) != stage.depth for w in stage.weight_words):
        raise HwnetError(f"stage {stage.name!r}: weight memory images do not match pe={stage.pe}, "
                         f"depth nf*sf*planes={stage.depth}")
    if stage.weights_in_logic and stage.depth != 1:
        raise HwnetError(f"stage {stage.name!r}: weights in logic need one word per PE (a fully unrolled "
                         f"layer), not {stage.depth}")
    if not 0 <= stage.spram_pes <= stage.pe or (stage.streamed and stage.weights_in_logic):
        raise HwnetError(f"stage {stage.name!r}: spram_pes must be 0 to pe={stage.pe} and 0 for weights in "
                         f"logic, not {stage.spram_pes}")
    if stage.pixels != 1 and (stage.nf != 1 or stage.sf != 1 or stage.planes != 1 or stage.streamed):
        raise HwnetError(f"stage {stage.name!r}: {stage.pixels} vectors per beat need one beat and one fold per "
                         f"vector (pe = out_features, simd = in_features, not bit-serial, not streamed)")
    if len(stage.biases) != stage.pe or any(len(b) != stage.nf for b in stage.biases):
        raise HwnetError(f"stage {stage.name!r}: biases must be pe x nf")
    if not stage.raw:
        if (stage.thresholds is None or len(stage.thresholds) != stage.pe
                or any(len(t) != stage.nf or any(len(row) != stage.levels for row in t)
                       for t in stage.thresholds)):
            raise HwnetError(f"stage {stage.name!r}: thresholds must be pe x nf x {stage.levels} "
                             f"(one per {stage.out_type} level)")
        first_code(stage.out_type)


class MatrixVectorThresholdUnit(wiring.Component):
    """Folded matrix-vector-threshold unit for one :class:`~hwnet.compiler.DenseStage`.

    Parameters
    ----------
    stage : :class:`~hwnet.compiler.DenseStage`
        A dense stage from :func:`hwnet.compiler.plan`: processing element kind, weight memory images,
        thresholds in the unit's accumulator space (or ``raw`` with per-row biases), folding.

    Members
    -------
    i : ``In(stream.Signature(beat_layout(stage.simd * stage.pixels, stage.in_type.bits)))``
        Input vectors, ``stage.sf`` beats each, ``simd`` lanes of ``in_type`` codes per beat (``pixels`` vectors
        side by side per beat). The incoming
        ``last`` is ignored: the unit knows its vector length.
    w : ``In(stream.Signature(unsigned(stage.word_bits)))``, only when ``stage.streamed``
        The weight words of the PEs that stream from SPRAM (PEs ``0 .. stage.spram_pes - 1`` side by side; the
        other PEs read their own ROMs) in memory order, one taken with every issued beat, from the
        :class:`~hwnet.gateware.spram.SpramWeightStreamer`; the whole unit waits for it like for its input.
    o : ``Out(stream.Signature(beat_layout(stage.pe * stage.pixels, stage.out_type.bits)))``
        Output vectors, ``stage.nf`` beats each, ``pe`` lanes of ``stage.out_type`` per beat (per vector); ``last`` is set
        on the final beat of every ``stage.vectors``-th vector (the end of an image for a convolution). A raw layer's lanes are the accumulators
        ``arithmetic.step * h + bias`` in two's complement, ``stage.acc_type.bits`` wide.
    """

    def __init__(self, *, stage):
        with validating(self):
            check_dense_stage(stage)
            if not stage.raw:
                self._first_code = first_code(stage.out_type)
        self._stage = stage
        members = {
            "i": In(beat_signature(stage.lanes_in, stage.in_type.bits)),
            "o": Out(beat_signature(stage.lanes_out, stage.out_type.bits)),
        }
        if stage.streamed:
            members["w"] = In(stream.Signature(unsigned(stage.word_bits)))
        super().__init__(members)

    @property
    def stage(self):
        return self._stage

    @property
    def latency(self):
        """Cycles from the cycle a fold's last input beat is issued to the cycle its output beat is valid:
        4, plus ``bits(L) - 1`` for a binary threshold search."""
        s = self._stage
        return 4 + (0 if s.raw else ThresholdSearch.latency_of(s.levels, s.threshold_search))

    def elaborate(self, platform):
        s = self._stage
        pe, nf, sf, planes, pixels = s.pe, s.nf, s.sf, s.planes, s.pixels
        xbits = s.simd * s.in_type.bits * pixels
        m = Module()

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # S0: issue. Fold counters and the weight address (a counter: no multiplier for its arithmetic).
        fold = Signal(range(nf), name="fold")
        beat = Signal(range(sf), name="beat")
        plane = Signal(range(planes), name="plane")
        waddr = Signal(range(s.depth), name="waddr")
        vector = Signal(range(s.vectors), name="vector")  # of the image (a convolution's output pixel)
        in_fold0 = Signal()
        take = Signal()  # this cycle needs a new input beat
        fire = Signal()
        m.d.comb += [
            in_fold0.eq(fold == 0),
            take.eq(in_fold0 & (plane == 0)),
            fire.eq(advance & (~take | self.i.valid) & (self.w.valid if s.streamed else 1)),
            self.i.ready.eq(advance & take & (self.w.valid if s.streamed else 1)),
        ]
        if s.streamed:  # every issued beat takes the next weight word of the stream, in memory order
            m.d.comb += self.w.ready.eq(fire)
            w_word = Signal(s.word_bits, name="w_word")
            with m.If(fire):
                m.d.sync += w_word.eq(self.w.payload)
        last_plane = plane == planes - 1
        with m.If(fire):
            with m.If(last_plane):
                m.d.sync += plane.eq(0)
                with m.If(beat == sf - 1):
                    m.d.sync += beat.eq(0)
                    with m.If(fold == nf - 1):
                        m.d.sync += fold.eq(0)
                        if s.vectors > 1:
                            m.d.sync += vector.eq(Mux(vector == s.vectors - 1, 0, vector + 1))
                    with m.Else():
                        m.d.sync += fold.eq(fold + 1)
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
            with m.Else():
                m.d.sync += plane.eq(plane + 1)
            with m.If(waddr == s.depth - 1):
                m.d.sync += waddr.eq(0)
            with m.Else():
                m.d.sync += waddr.eq(waddr + 1)

        # S1: the input word. Fold 0 takes it from the stream (and stores it); later folds re-read it.
        x_in = Signal(xbits, name="x_in")
        x_from_in = Signal()
        with m.If(fire & take):
            m.d.sync += x_in.eq(self.i.payload.data)
        if nf > 1:
            m.submodules.ibuf = ibuf = Memory(shape=unsigned(xbits), depth=sf, init=[])
            ibuf_w = ibuf.write_port()
            ibuf_r = ibuf.read_port()
            m.d.comb += [
                ibuf_w.addr.eq(beat),
                ibuf_w.data.eq(self.i.payload.data),
                ibuf_w.en.eq(fire & take),
                ibuf_r.addr.eq(beat),
                ibuf_r.en.eq(fire & ~in_fold0),
            ]
            x1 = Mux(x_from_in, x_in, ibuf_r.data)
        else:
            x1 = x_in

        v1, first1, last_beat1, last_fold1 = (Signal(name=n) for n in ("v1", "first1", "last_beat1",
                                                                       "last_fold1"))
        fold1 = Signal(range(nf), name="fold1")
        plane1 = Signal(range(planes), name="plane1")
        with m.If(advance):
            m.d.sync += [
                v1.eq(fire),
                first1.eq((beat == 0) & (plane == 0)),
                last_beat1.eq((beat == sf - 1) & last_plane),
                last_fold1.eq((fold == nf - 1) & (vector == s.vectors - 1)),
                fold1.eq(fold),
                plane1.eq(plane),
                x_from_in.eq(in_fold0),
            ]

        # S1 -> S2: each PE's term sum over the beat's lanes, registered.
        v2, first2, last_beat2, last_fold2 = (Signal(name=n) for n in ("v2", "first2", "last_beat2",
                                                                       "last_fold2"))
        fold2 = Signal(range(nf), name="fold2")
        plane2 = Signal(range(planes), name="plane2")
        with m.If(advance):
            m.d.sync += [v2.eq(v1), first2.eq(first1), last_beat2.eq(last_beat1),
                         last_fold2.eq(last_fold1), fold2.eq(fold1), plane2.eq(plane1)]
        sums = []   # per vector of the beat, per PE
        xq = xbits // pixels
        lane_bits = s.simd * s.lane_bits
        weights = []
        for p in range(pe):
            if p < s.spram_pes:
                weights.append(w_word[p * lane_bits:(p + 1) * lane_bits])
            elif not s.weights_in_logic:
                wmem = Memory(shape=unsigned(lane_bits), depth=s.depth, init=list(s.weight_words[p]))
                m.submodules[f"weights{p}"] = wmem
                wport = wmem.read_port()
                m.d.comb += [wport.addr.eq(waddr), wport.en.eq(advance)]
                weights.append(wport.data)
            else:
                weights.append(None)
        for q in range(pixels):
            for p in range(pe):
                suffix = f"{p}" if q == 0 else f"{p}_{q}"
                unit = processing_element(simd=s.simd, arithmetic=s.arithmetic,
                                          weights=s.weight_words[p][0] if s.weights_in_logic else None)
                m.submodules[f"pe{suffix}"] = unit
                if weights[p] is not None:
                    m.d.comb += unit.w.eq(weights[p])
                m.d.comb += unit.x.eq(x1[q * xq:(q + 1) * xq])
                if planes > 1:
                    m.d.comb += unit.sign_plane.eq(plane1 == planes - 1)
                term_sum = Signal(unit.o.shape(), name=f"sum{suffix}")
                with m.If(advance):
                    m.d.sync += term_sum.eq(unit.o)
                sums.append(term_sum)

        # S2: accumulate over the sf beats (and planes) of a fold.
        v3 = Signal(name="v3")  # h holds a finished row
        last_fold3 = Signal(name="last_fold3")
        with m.If(advance):
            m.d.sync += [v3.eq(v2 & last_beat2), last_fold3.eq(last_fold2)]
        accs = []
        for n, term_sum in enumerate(sums):
            q, p = divmod(n, pe)
            h = Signal(s.acc_bits, name=f"h{p}" if q == 0 else f"h{p}_{q}")
            add = term_sum
            if planes > 1:
                add = Mux(plane2 == 0, term_sum, 0)
                for b in range(1, planes):
                    add = Mux(plane2 == b, term_sum << b, add)
            with m.If(advance & v2):
                m.d.sync += h.eq(Mux(first2, 0, h) + add)
            accs.append(h)

        # S3..: thresholds (or step * h + bias), registered on the output.
        lanes = []
        delay = 0
        for n, h in enumerate(accs):
            q, p = divmod(n, pe)
            suffix = f"{p}" if q == 0 else f"{p}_{q}"
            if s.raw:
                lanes.append(self._raw_lane(m, p, h, fold2, advance, suffix))
            else:
                search = ThresholdSearch(thresholds=s.thresholds[p], width=s.acc_bits, search=s.threshold_search)
                m.submodules[f"threshold{suffix}"] = search
                m.d.comb += [search.en.eq(advance), search.row.eq(fold2), search.value.eq(h)]
                lanes.append((search.y + self._first_code)[:s.out_type.bits])
                delay = search.latency
        valid_out, last_out = v3, last_fold3
        for d in range(delay):  # the control bits follow the data through the threshold search
            valid_next, last_next = Signal(name=f"v_search{d + 1}"), Signal(name=f"last_search{d + 1}")
            with m.If(advance):
                m.d.sync += [valid_next.eq(valid_out), last_next.eq(last_out)]
            valid_out, last_out = valid_next, last_next
        with m.If(advance):
            m.d.sync += self.o.valid.eq(valid_out)
            with m.If(valid_out):
                m.d.sync += [self.o.payload.data.eq(Cat(*lanes)), self.o.payload.last.eq(last_out)]
        return m

    def _raw_lane(self, m, p, h, fold2, advance, suffix):
        """``step * h + bias`` of PE ``p``'s row in ``h``, truncated to the accumulator type's width."""
        s = self._stage
        biases = s.biases[p]
        width = max(max(abs(b) for b in biases).bit_length() + 1, 2)
        words = biases[:1] if len(set(biases)) == 1 else biases  # one bias for every row: a constant
        bias = rom_read(m, f"bias{suffix}", shape=signed(width), words=words, addr=fold2, en=advance)
        scaled = h << (s.arithmetic.step - 1)
        return (Cat(scaled, Const(0, 1)).as_signed() + bias)[:s.out_type.bits]
