"""Elementwise multi-threshold on a stream (e.g. the binarization of a network's integer input).

Each lane computes ``y = sum_l [x >= T_l]`` against the stage's per-tensor constant thresholds and emits the
``y``-th smallest value of the output type (for a bipolar output, the bit ``y``). Thresholds at or below the
input type's minimum always pass and those above its maximum never do; both fold to constants.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..compiler import ThresholdStage
from ..errors import HwnetError
from ._common import beat_signature, first_code, validating
from .popcount import balanced_sum

__all__ = ["ThresholdUnit", "check_threshold_stage"]


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
