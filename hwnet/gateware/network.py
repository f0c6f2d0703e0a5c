"""A whole network: the stages of a :class:`~hwnet.compiler.DesignPlan` chained by streams.

Each :class:`~hwnet.compiler.DenseStage` becomes a :class:`~hwnet.gateware.mvau.MatrixVectorThresholdUnit`, each
:class:`~hwnet.compiler.ThresholdStage` a :class:`~hwnet.gateware.threshold.ThresholdUnit`, each
:class:`~hwnet.compiler.WindowStage` a :class:`~hwnet.gateware.window.SlidingWindow` and each
:class:`~hwnet.compiler.PoolStage` a :class:`~hwnet.gateware.pool.MaxPool`; where a stage's output lanes differ
from the next stage's input lanes a :class:`~hwnet.gateware.width.WidthConverter` sits between them. In front of
every matrix-vector unit that has a unit other than the input thresholds upstream sits a :class:`BeatFIFO` that
holds one whole input vector of that unit (plus two beats): a unit takes input only during its first neuron
fold, so without the queue the unit upstream would stall during the other folds and the network would fall
short of the throughput of its slowest stage. With the queues, a network with no stalls takes
``plan.cycles_per_inference`` cycles per vector in steady state. The queues also cut the combinational
``ready`` path, which otherwise runs back through every stage.

Deadlock. The blocks form one chain, each a stream stage whose ``valid`` never waits for its own ``ready``, each
of which, given input and room at its output, makes progress (the sliding window's writer and reader are
proven free of deadlock for any line buffer of at least :attr:`~hwnet.compiler.WindowGeometry.min_rows` rows;
the others hold no state that waits on anything but their own two streams). A chain of such stages cannot
deadlock whatever the queue depths; the queues only set throughput. The network tests check it under random
stalls on both ends.

:func:`generate_verilog` turns the top into a Verilog module.
"""

import re

from amaranth.back import verilog
from amaranth.hdl import Module, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..compiler import SPRAM_WIDTH, DenseStage, DesignPlan, PoolStage, ThresholdStage, WindowStage
from ..errors import HwnetError
from ._common import beat_signature, check_positive_int, validating
from .mvau import MatrixVectorThresholdUnit, check_dense_stage
from .pool import MaxPool
from .spram import SpramWeightStreamer
from .threshold import ThresholdUnit, check_threshold_stage
from .width import WidthConverter
from .window import SlidingWindow

__all__ = ["NetworkTop", "BeatFIFO", "generate_verilog"]


def _converter(in_lanes, stage, bits):
    """Arguments of the :class:`WidthConverter` from ``in_lanes`` into ``stage``, padding the vectors of a dense
    stage whose ``simd`` does not divide its input (:attr:`~hwnet.compiler.DenseStage.pad_lanes`)."""
    args = dict(in_lanes=in_lanes, out_lanes=stage.lanes_in, bits=bits)
    if isinstance(stage, DenseStage) and stage.pad_lanes:
        args.update(vector=stage.in_features, pad_code=stage.pad_code)
    return args


def _submodule_name(index, stage):
    return f"s{index}_" + re.sub(r"[^0-9A-Za-z_]", "_", stage.name)


class BeatFIFO(wiring.Component):
    """First-in first-out queue of stream beats (:class:`amaranth.lib.fifo.SyncFIFOBuffered` on streams).

    Parameters
    ----------
    lanes, bits : int
        Beat payload: ``lanes`` elements of ``bits`` bits, and ``last``.
    depth : int
        Beats it holds, at least 2 (a full queue takes a beat in the cycle one leaves).

    Members
    -------
    i : ``In(stream.Signature(beat_layout(lanes, bits)))``
    o : ``Out(stream.Signature(beat_layout(lanes, bits)))``
        The beats of ``i``, in order. ``i.ready`` does not depend on ``o.ready`` in the same cycle.
    """

    def __init__(self, *, lanes, bits, depth):
        with validating(self):
            self._lanes = check_positive_int(lanes, "lanes")
            self._bits = check_positive_int(bits, "bits")
            self._depth = check_positive_int(depth, "FIFO depth")
            if self._depth < 2:
                raise HwnetError(f"FIFO depth must be at least 2, not {depth!r}")
        super().__init__({
            "i": In(beat_signature(self._lanes, self._bits)),
            "o": Out(beat_signature(self._lanes, self._bits)),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=self._lanes * self._bits + 1,
                                                            depth=self._depth)
        m.d.comb += [
            queue.w_data.eq(self.i.payload.as_value()),
            queue.w_en.eq(self.i.valid),
            self.i.ready.eq(queue.w_rdy),
            self.o.payload.eq(queue.r_data),
            self.o.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.o.ready),
        ]
        return m


class NetworkTop(wiring.Component):
    """The gateware of a whole :class:`~hwnet.compiler.DesignPlan`.

    Parameters
    ----------
    plan : :class:`~hwnet.compiler.DesignPlan`
        From :func:`hwnet.compiler.plan`.
    fifos : bool
        Put a :class:`BeatFIFO` of ``sf + 2`` beats in front of every matrix-vector unit that has a unit other
        than the input thresholds upstream (default). Without them the design is smaller and still exact, but
        slower than the slowest stage.
    spram_primitive : bool
        Build the SPRAM pool of a design with streamed weights from ``SB_SPRAM256KA`` instances (iCE40UP
        synthesis) rather than a behavioural memory (simulation, other families).

    Members
    -------
    i : ``In(stream.Signature(beat_layout(plan.input_lanes, plan.input_type.bits)))``
        Input vectors, ``plan.input_beats`` beats each, lane ``j`` of beat ``k`` holding element
        ``k * plan.input_lanes + j``. ``last`` on the final beat of each vector.
    o : ``Out(stream.Signature(beat_layout(plan.output_lanes, plan.output_type.bits)))``
        Output vectors, ``plan.output_beats`` beats each, with ``last`` on the final beat.
    load : ``In(stream.Signature(unsigned(SPRAM_WIDTH)))``, only when ``plan.spram_words``
        The SPRAM image (``plan.spram_image()``), once after reset, before the layers it feeds can run
        (:class:`~hwnet.gateware.spram.SpramWeightStreamer`).
    """

    def __init__(self, *, plan, fifos=True, spram_primitive=False):
        with validating(self):
            if not isinstance(plan, DesignPlan):
                raise HwnetError(f"NetworkTop needs a DesignPlan from hwnet.compiler.plan, "
                                 f"not {type(plan).__name__}")
            if not plan.stages:
                raise HwnetError("the design plan has no stages")
            for stage in plan.stages:
                if isinstance(stage, DenseStage):
                    check_dense_stage(stage)
                elif isinstance(stage, ThresholdStage):
                    check_threshold_stage(stage)
                elif not isinstance(stage, (WindowStage, PoolStage)):
                    raise HwnetError(f"no gateware for stage {type(stage).__name__}")
            for prev, nxt in zip(plan.stages, plan.stages[1:]):
                if prev.out_type != nxt.in_type:
                    raise HwnetError(f"stage {prev.name!r} gives {prev.out_type} elements but stage "
                                     f"{nxt.name!r} takes {nxt.in_type}")
        self._plan = plan
        self._fifos = bool(fifos)
        self._spram_primitive = bool(spram_primitive)
        members = {
            "i": In(beat_signature(plan.input_lanes, plan.input_type.bits)),
            "o": Out(beat_signature(plan.output_lanes, plan.output_type.bits)),
        }
        if plan.spram_words:
            members["load"] = In(stream.Signature(unsigned(SPRAM_WIDTH)))
        super().__init__(members)

    @property
    def plan(self):
        return self._plan

    @property
    def fifos(self):
        return self._fifos

    @staticmethod
    def fifo_depth(stage):
        """Beats of the queue in front of the matrix-vector unit of ``stage``: one whole input vector (the
        unit takes beats only in its first neuron fold) and two beats of slack."""
        return stage.sf + 2

    def blocks(self):
        """The blocks of the design in stream order, as ``(name, cls, kwargs)``: each stage's unit, and the width
        converters and queues between them, not yet built. :meth:`elaborate` builds exactly these
        (``cls(**kwargs)``), so resource estimates walk the same structure without building anything."""
        stages = self._plan.stages
        blocks = []
        if self._plan.input_lanes != stages[0].lanes_in:
            blocks.append(("input_width", WidthConverter,
                           _converter(self._plan.input_lanes, stages[0], self._plan.input_type.bits)))
        for index, stage in enumerate(stages):
            if index:
                prev = stages[index - 1]
                if prev.lanes_out != stage.lanes_in:
                    blocks.append((f"s{index - 1}_to_s{index}_width", WidthConverter,
                                   _converter(prev.lanes_out, stage, prev.out_type.bits)))
                upstream = any(not isinstance(s, ThresholdStage) for s in stages[:index])
                if self._fifos and isinstance(stage, DenseStage) and upstream:
                    blocks.append((f"s{index}_fifo", BeatFIFO,
                                   dict(lanes=stage.lanes_in, bits=stage.in_type.bits, depth=self.fifo_depth(stage))))
            if isinstance(stage, WindowStage):
                blocks.append((_submodule_name(index, stage), SlidingWindow, stage.unit_arguments()))
            elif isinstance(stage, PoolStage):
                blocks.append((_submodule_name(index, stage), MaxPool, stage.unit_arguments()))
            else:
                unit = MatrixVectorThresholdUnit if isinstance(stage, DenseStage) else ThresholdUnit
                blocks.append((_submodule_name(index, stage), unit, dict(stage=stage)))
        return blocks

    def spram_block(self):
        """``(name, cls, kwargs)`` of the design's :class:`~hwnet.gateware.spram.SpramWeightStreamer`, beside the
        chain of :meth:`blocks`; None when no weights stream from SPRAM."""
        streamed = self._plan.streamed_stages
        if not streamed:
            return None
        return ("spram", SpramWeightStreamer, dict(regions=[(s.spram_base, s.depth, s.word_bits) for s in streamed],
                                                    primitive=self._spram_primitive))

    def elaborate(self, platform):
        m = Module()
        spram = self.spram_block()
        if spram is not None:
            name, cls, kwargs = spram
            m.submodules[name] = streamer = cls(**kwargs)
            wiring.connect(m, wiring.flipped(self.load), streamer.load)
            feeds = {stage.name: getattr(streamer, f"w{k}") for k, stage in enumerate(self._plan.streamed_stages)}
        source = None
        for name, cls, kwargs in self.blocks():
            m.submodules[name] = block = cls(**kwargs)
            if isinstance(block, MatrixVectorThresholdUnit) and block.stage.streamed:
                wiring.connect(m, feeds[block.stage.name], block.w)
            if source is None:
                wiring.connect(m, wiring.flipped(self.i), block.i)
            else:
                wiring.connect(m, source, block.i)
            source = block.o
        wiring.connect(m, source, wiring.flipped(self.o))
        return m


def generate_verilog(plan, *, name="hwnet_top", spram_primitive=False):
    """Verilog source of the :class:`NetworkTop` of ``plan``, as one module named ``name``.

    The module's ports are ``clk``, ``rst``, ``i__valid``, ``i__ready``, ``i__payload``, ``o__valid``,
    ``o__ready`` and ``o__payload`` (and ``load__valid``, ``load__ready``, ``load__payload`` for a design with
    weights in SPRAM, whose pool is built from ``SB_SPRAM256KA`` primitives with ``spram_primitive``); a
    payload port holds ``data`` in its low bits and ``last`` in its top bit.
    The text carries no source-location attributes, so it depends only on the plan.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name):
        raise HwnetError(f"Verilog module name must be a plain identifier, not {name!r}")
    return verilog.convert(NetworkTop(plan=plan, spram_primitive=spram_primitive), name=name, emit_src=False)
