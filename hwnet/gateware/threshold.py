"""Multi-threshold units.

:class:`ThresholdUnit` thresholds a stream elementwise (e.g. the binarization of a network's integer input).
:class:`ThresholdSearch` is the threshold stage inside a matrix-vector unit, with per-row thresholds in ROMs.

Each lane of a :class:`ThresholdUnit` computes ``y = sum_l [x >= T_l]`` against the stage's per-tensor constant thresholds and emits the
``y``-th smallest value of the output type (for a bipolar output, the bit ``y``). Thresholds at or below the
input type's minimum always pass and those above its maximum never do; both fold to constants.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..compiler import ThresholdStage
from ..errors import HwnetError
from ._common import beat_signature, check_positive_int, first_code, rom_read, validating
from .popcount import balanced_sum

__all__ = ["ThresholdUnit", "ThresholdSearch", "check_threshold_stage"]


def check_threshold_stage(stage):
    """Raise :class:`HwnetError` unless ``stage`` is a :class:`ThresholdStage` this unit can build."""
    if not isinstance(stage, ThresholdStage):
        raise HwnetError(f"ThresholdUnit needs a ThresholdStage from hwnet.compiler.plan, "
                         f"not {type(stage).__name__}")
    if stage.in_type.kind not in ("uint", "int"):
        raise HwnetError(f"stage {stage.name!r}: a threshold unit takes uint<k>/int<k> inputs, "
                         f"not {stage.in_type}")
    levels = stage.out_type.num_values - 1
    if len(stage.thresholds) != levels:
        raise HwnetError(f"stage {stage.name!r}: {stage.out_type} output needs {levels} threshold(s), "
                         f"got {len(stage.thresholds)}")
    first_code(stage.out_type)


class ThresholdUnit(wiring.Component):
    """Multi-threshold unit for one :class:`~hwnet.compiler.ThresholdStage`: one beat in, one beat out.

    Parameters
    ----------
    stage : :class:`~hwnet.compiler.ThresholdStage`
        Lanes, input type (``uint<k>`` or ``int<k>``, two's complement), output type and the ascending
        thresholds, compared ``x >= t`` in the input type's value domain.

    Members
    -------
    i : ``In(stream.Signature(beat_layout(stage.lanes, stage.in_type.bits)))``
        Input beats.
    o : ``Out(stream.Signature(beat_layout(stage.lanes, stage.out_type.bits)))``
        Thresholded beats, registered; ``last`` is passed through from the input beat.
    """

    def __init__(self, *, stage):
        with validating(self):
            check_threshold_stage(stage)
            self._first_code = first_code(stage.out_type)
        self._stage = stage
        super().__init__({
            "i": In(beat_signature(stage.lanes, stage.in_type.bits)),
            "o": Out(beat_signature(stage.lanes, stage.out_type.bits)),
        })

    @property
    def stage(self):
        return self._stage

    def elaborate(self, platform):
        s = self._stage
        ib, ob = s.in_type.bits, s.out_type.bits
        m = Module()

        lanes = []
        for j in range(s.lanes):
            x = self.i.payload.data[j * ib:(j + 1) * ib]
            if s.in_type.signed:
                x = x.as_signed()
            passed = []
            for t in s.thresholds:
                if t <= s.in_type.min:
                    passed.append(Const(1, 1))
                elif t > s.in_type.max:
                    passed.append(Const(0, 1))
                else:
                    passed.append(x >= t)
            y = balanced_sum(passed)
            lane = Signal(ob, name=f"lane{j}")
            m.d.comb += lane.eq(y + self._first_code)
            lanes.append(lane)

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [self.o.payload.data.eq(Cat(*lanes)), self.o.payload.last.eq(self.i.payload.last)]
        return m


class ThresholdSearch(wiring.Component):
    """Multi-threshold of a matrix-vector unit: ``y = sum_l [value >= T[row][l]]`` against per-row ascending
    thresholds held in ROMs, by parallel comparators or by a pipelined binary search.

    ``"parallel"`` reads all of a row's thresholds from one ROM word and compares them at once (for few
    thresholds). ``"binary"`` finds ``y`` one bit at a time, most significant first, in ``k = bits(L)`` stages:
    stage ``d`` compares against the one threshold that decides bit ``k - 1 - d`` given the bits found so far,
    read from its own ROM of ``2**d`` words per row, so each threshold is stored once and each stage needs one
    comparator (``2**k - 1 - L`` padding thresholds of the largest value make the count at most ``L`` once
    clamped). Both give the same ``y``.

    Parameters
    ----------
    thresholds : sequence of sequence of int
        Per row, ``L >= 1`` ascending thresholds, each in ``0 .. 2**width - 1``.
    width : int
        Bits of the unsigned ``value``.
    search : ``"parallel"`` or ``"binary"``

    Members
    -------
    en : ``In(1)``
        Advance: the ROM read ports and the stage registers move only in cycles with ``en`` high.
    row : ``In(range(rows))``
        The row of the value that arrives in the next advancing cycle.
    value : ``In(unsigned(width))``
    y : ``Out(unsigned(bits(L)))``
        The count for a value, :attr:`latency` advancing cycles after the value was presented (combinational
        from the last stage: the caller registers it).
    """

    def __init__(self, *, thresholds, width, search):
        with validating(self):
            self._width = check_positive_int(width, "value width")
            rows = [tuple(int(t) for t in row) for row in thresholds]
            if not rows or not rows[0] or any(len(row) != len(rows[0]) for row in rows):
                raise HwnetError("thresholds must be one or more rows of the same non-zero length")
            for row in rows:
                if list(row) != sorted(row) or row[0] < 0 or row[-1] >= (1 << self._width):
                    raise HwnetError(f"thresholds {list(row)} must ascend within 0 .. {(1 << self._width) - 1}")
            if search not in ("parallel", "binary"):
                raise HwnetError(f"threshold search must be 'parallel' or 'binary', not {search!r}")
        self._rows, self._search = rows, search
        self._levels = len(rows[0])
        self._steps = self._levels.bit_length()
        super().__init__({
            "en": In(1),
            "row": In(range(len(rows))),
            "value": In(unsigned(self._width)),
            "y": Out(unsigned(self._steps)),
        })

    @property
    def latency(self):
        """Advancing cycles from a value to its ``y`` (:meth:`latency_of` its levels and search)."""
        return self.latency_of(self._levels, self._search)

    @staticmethod
    def latency_of(levels, search):
        """0 for a parallel compare, ``bits(levels) - 1`` for a binary search over ``levels`` thresholds."""
        return 0 if search == "parallel" else levels.bit_length() - 1

    def _rom(self, m, name, words, width, addr):
        return rom_read(m, name, shape=unsigned(width), words=words, addr=addr, en=self.en)

    def elaborate(self, platform):
        m = Module()
        w, rows = self._width, self._rows
        if self._search == "parallel":
            words = [sum(t << (level * w) for level, t in enumerate(row)) for row in rows]
            data = self._rom(m, "thresholds", words, w * self._levels, self.row)
            m.d.comb += self.y.eq(balanced_sum([self.value >= data[l * w:(l + 1) * w]
                                                for l in range(self._levels)]))
            return m

        k = self._steps
        never = (1 << w) - 1
        padded = [list(row) + [never] * ((1 << k) - 1 - self._levels) for row in rows]

        def stage_words(d):
            # word (row, prefix) of stage d: the threshold deciding bit k-1-d of y when the bits above are prefix
            return [padded[r][((p << (k - d)) | (1 << (k - 1 - d))) - 1] for r in range(len(rows))
                    for p in range(1 << d)]

        # Stage d compares in the cycle after its ROM was addressed: stage 0's by ``row`` (one cycle ahead of
        # the value), stage d + 1's by stage d's row and the bits it found.
        t = self._rom(m, "search0", stage_words(0), w, self.row)
        value, prefix = self.value, Const(0, 0)
        row = Signal(range(len(rows)), name="row0")
        with m.If(self.en):
            m.d.sync += row.eq(self.row)
        for d in range(k):
            found = Cat(value >= t, prefix)  # the bits found so far, the newest lowest
            if d == k - 1:
                # a padding threshold (the largest value) passes only when every real one does: clamp to L
                m.d.comb += self.y.eq(Mux(found > self._levels, self._levels, found))
                break
            t = self._rom(m, f"search{d + 1}", stage_words(d + 1), w, Cat(found, row))
            value_next = Signal(w, name=f"value{d + 1}")
            row_next = Signal(range(len(rows)), name=f"row{d + 1}")
            prefix_next = Signal(d + 1, name=f"prefix{d + 1}")
            with m.If(self.en):
                m.d.sync += [value_next.eq(value), row_next.eq(row), prefix_next.eq(found)]
            value, row, prefix = value_next, row_next, prefix_next
        return m
