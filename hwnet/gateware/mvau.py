"""The folded XNOR-popcount matrix-vector-threshold unit (FINN's MVAU).

A dense layer with ``MH`` outputs and ``MW`` bipolar inputs runs on ``pe`` processing elements, each taking
``simd`` input lanes per cycle. An input vector arrives as ``sf = MW / simd`` beats; the unit computes
``nf = MH / pe`` neuron folds over it, one beat per cycle, so a vector takes exactly ``nf * sf`` cycles.
The memory layout and the stream lane order are those of :mod:`hwnet.compiler`: at neuron fold ``f`` PE ``p``
computes row ``f * pe + p`` from the word at address ``f * sf + s`` of its own weight memory, and output beat
``f`` carries rows ``f * pe .. f * pe + pe - 1`` in lanes ``0 .. pe - 1``.

Pipeline (every register advances together on ``advance = ~o.valid | o.ready``, so a stalled output freezes
the whole unit, memory read ports included, and nothing is lost or repeated)::

    S0 issue     fold counters (f, s), weight address; during fold 0 the input beat is accepted, written
                 into the input buffer at s and kept in a register; in later folds the buffer is read at s.
    S1 read      weight words (one per PE) and the input word (register in fold 0, buffer otherwise).
    S2 count     p_beat = popcount(~(w ^ x)) per PE, registered.
    S3 acc       acc = (s == 0 ? 0 : acc) + p_beat per PE; after a fold's last beat it holds p for the row,
                 and the thresholds of that fold have been read from the threshold memory.
    S4 out       y = sum_l [p >= T_l] (or 2p - MW for a raw layer), registered on ``o``.

A fold's output beat is valid 4 cycles after the cycle in which its last input beat was issued (accepted, for
fold 0). The next vector's beats are accepted in the cycle after its predecessor's last fold is issued, so a
vector takes ``nf * sf`` cycles with no fill overhead.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler import DenseStage
from ..datatypes import BIPOLAR
from ..errors import HwnetError
from ._common import beat_signature, first_code, validating
from .popcount import PopCount, balanced_sum

__all__ = ["MatrixVectorThresholdUnit", "check_dense_stage"]


def check_dense_stage(stage):
    """Raise :class:`HwnetError` unless ``stage`` is a :class:`DenseStage` this unit can build."""
    if not isinstance(stage, DenseStage):
        raise HwnetError(f"MatrixVectorThresholdUnit needs a DenseStage from hwnet.compiler.plan, "
                         f"not {type(stage).__name__}")
    if stage.in_type != BIPOLAR or stage.weight_type != BIPOLAR:
        raise HwnetError(f"stage {stage.name!r}: the matrix-vector unit computes bipolar x bipolar layers, "
                         f"not {stage.weight_type} weights x {stage.in_type} inputs")
    depth = stage.nf * stage.sf
    if len(stage.weight_words) != stage.pe or any(len(w) != depth for w in stage.weight_words):
        raise HwnetError(f"stage {stage.name!r}: weight memory images do not match pe={stage.pe}, "
                         f"depth nf*sf={depth}")
    if not stage.raw:
        levels = stage.out_type.num_values - 1
        if (stage.thresholds is None or len(stage.thresholds) != stage.pe
                or any(len(t) != stage.nf or any(len(row) != levels for row in t) for t in stage.thresholds)):
            raise HwnetError(f"stage {stage.name!r}: thresholds must be pe x nf x {levels} "
                             f"(one per {stage.out_type} level)")
        first_code(stage.out_type)


class MatrixVectorThresholdUnit(wiring.Component):
    """Folded XNOR-popcount matrix-vector-threshold unit for one :class:`~hwnet.compiler.DenseStage`.

    Parameters
    ----------
    stage : :class:`~hwnet.compiler.DenseStage`
        A bipolar x bipolar dense stage from :func:`hwnet.compiler.plan`: weight memory images, popcount-space
        thresholds (or ``raw``), folding.

    Members
    -------
    i : ``In(stream.Signature(beat_layout(stage.simd, 1)))``
        Input vectors, ``stage.sf`` beats each, ``simd`` bipolar lanes per beat (bit 1 = +1). The incoming
        ``last`` is ignored: the unit knows its vector length.
    o : ``Out(stream.Signature(beat_layout(stage.pe, stage.out_type.bits)))``
        Output vectors, ``stage.nf`` beats each, ``pe`` lanes of ``stage.out_type`` per beat; ``last`` is set
        on the final beat of every vector. A raw layer's lanes are ``2 * p - MW`` in two's complement,
        ``stage.acc_type.bits`` wide.
    """

    #: Cycles from the cycle a fold's last input beat is issued to the cycle its output beat is valid.
    LATENCY = 4

    def __init__(self, *, stage):
        with validating(self):
            check_dense_stage(stage)
            if not stage.raw:
                self._first_code = first_code(stage.out_type)
        self._stage = stage
        super().__init__({
            "i": In(beat_signature(stage.simd, 1)),
            "o": Out(beat_signature(stage.pe, stage.out_type.bits)),
        })

    @property
    def stage(self):
        return self._stage

    def elaborate(self, platform):
        s = self._stage
        pe, simd, nf, sf = s.pe, s.simd, s.nf, s.sf
        cb = s.count_bits
        m = Module()

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # S0: issue. Fold counters and the weight address (a counter: no multiplier for f * sf + s).
        fold = Signal(range(nf), name="fold")
        beat = Signal(range(sf), name="beat")
        waddr = Signal(range(nf * sf), name="waddr")
        in_fold0 = Signal()
        fire = Signal()
        m.d.comb += [
            in_fold0.eq(fold == 0),
            fire.eq(advance & (~in_fold0 | self.i.valid)),
            self.i.ready.eq(advance & in_fold0),
        ]
        with m.If(fire):
            with m.If(beat == sf - 1):
                m.d.sync += beat.eq(0)
                with m.If(fold == nf - 1):
                    m.d.sync += fold.eq(0)
                with m.Else():
                    m.d.sync += fold.eq(fold + 1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
            with m.If(waddr == nf * sf - 1):
                m.d.sync += waddr.eq(0)
            with m.Else():
                m.d.sync += waddr.eq(waddr + 1)

        # S1: the input word. Fold 0 takes it from the stream (and stores it); later folds re-read it.
        x_in = Signal(simd, name="x_in")
        x_from_in = Signal()
        with m.If(fire & in_fold0):
            m.d.sync += x_in.eq(self.i.payload.data)
        if nf > 1:
            m.submodules.ibuf = ibuf = Memory(shape=unsigned(simd), depth=sf, init=[])
            ibuf_w = ibuf.write_port()
            ibuf_r = ibuf.read_port()
            m.d.comb += [
                ibuf_w.addr.eq(beat),
                ibuf_w.data.eq(self.i.payload.data),
                ibuf_w.en.eq(fire & in_fold0),
                ibuf_r.addr.eq(beat),
                ibuf_r.en.eq(fire & ~in_fold0),
            ]
            x1 = Mux(x_from_in, x_in, ibuf_r.data)
        else:
            x1 = x_in

        v1, first1, last_beat1, last_fold1 = (Signal(name=n) for n in ("v1", "first1", "last_beat1",
                                                                       "last_fold1"))
        fold1 = Signal(range(nf), name="fold1")
        with m.If(advance):
            m.d.sync += [
                v1.eq(fire),
                first1.eq(beat == 0),
                last_beat1.eq(beat == sf - 1),
                last_fold1.eq(fold == nf - 1),
                fold1.eq(fold),
                x_from_in.eq(in_fold0),
            ]

        # S2: XNOR-popcount per PE, registered.
        v2, first2, last_beat2, last_fold2 = (Signal(name=n) for n in ("v2", "first2", "last_beat2",
                                                                       "last_fold2"))
        fold2 = Signal(range(nf), name="fold2")
        with m.If(advance):
            m.d.sync += [v2.eq(v1), first2.eq(first1), last_beat2.eq(last_beat1),
                         last_fold2.eq(last_fold1), fold2.eq(fold1)]
        counts = []
        for p in range(pe):
            wmem = Memory(shape=unsigned(simd), depth=nf * sf, init=list(s.weight_words[p]))
            m.submodules[f"weights{p}"] = wmem
            wport = wmem.read_port()
            m.d.comb += [wport.addr.eq(waddr), wport.en.eq(advance)]
            m.submodules[f"popcount{p}"] = pc = PopCount(width=simd)
            m.d.comb += pc.i.eq(~(wport.data ^ x1))
            count = Signal(pc.o.shape(), name=f"count{p}")
            with m.If(advance):
                m.d.sync += count.eq(pc.o)
            counts.append(count)

        # S3: accumulate over the sf beats of a fold.
        v3 = Signal(name="v3")  # acc holds a finished row
        last_fold3 = Signal(name="last_fold3")
        with m.If(advance):
            m.d.sync += [v3.eq(v2 & last_beat2), last_fold3.eq(last_fold2)]
        accs = []
        for p in range(pe):
            acc = Signal(cb, name=f"acc{p}")
            with m.If(advance & v2):
                m.d.sync += acc.eq(Mux(first2, 0, acc) + counts[p])
            accs.append(acc)

        # S4: thresholds (or 2p - MW), registered on the output.
        lanes = []
        if s.raw:
            for p in range(pe):
                doubled = Cat(Const(0, 1), accs[p], Const(0, 1)).as_signed()  # 2p, never negative
                lanes.append((doubled - s.in_features)[:s.out_type.bits])
        else:
            levels = s.out_type.num_values - 1
            for p in range(pe):
                init = []  # fold f's thresholds side by side, level l at bits [l * cb, (l + 1) * cb)
                for f in range(nf):
                    word = 0
                    for level, t in enumerate(s.thresholds[p][f]):
                        word |= t << (level * cb)
                    init.append(word)
                tmem = Memory(shape=unsigned(levels * cb), depth=nf, init=init)
                m.submodules[f"thresholds{p}"] = tmem
                tport = tmem.read_port()
                m.d.comb += [tport.addr.eq(fold2), tport.en.eq(advance)]
                passed = [accs[p] >= tport.data[l * cb:(l + 1) * cb] for l in range(levels)]
                y = balanced_sum(passed)
                lanes.append((y + self._first_code)[:s.out_type.bits])
        with m.If(advance):
            m.d.sync += self.o.valid.eq(v3)
            with m.If(v3):
                m.d.sync += [self.o.payload.data.eq(Cat(*lanes)), self.o.payload.last.eq(last_fold3)]
        return m
