"""Amaranth gateware generated from a :class:`~hwnet.compiler.DesignPlan`.

Every block is a :class:`amaranth.lib.wiring.Component` with an input stream ``i`` and an output stream ``o``
(:class:`amaranth.lib.stream.Signature`) whose payload is :func:`beat_layout`: ``data`` holding ``lanes``
elements (lane ``j`` at bits ``[j * bits, (j + 1) * bits)``) and ``last`` on the final beat of a vector.

- :class:`PopCount`: compressor tree counting the set bits of a word.
- Processing elements (:mod:`.pe`), one per weight type, none with a multiplier: :class:`XnorPopcount`,
  :class:`AddSubtract`, :class:`AddSubtractSkip`, :class:`ShiftAdd`, :class:`LookupProduct`, :class:`BitPlane`,
  :class:`BitSerial`.
- :class:`MatrixVectorThresholdUnit`: folded dense layer with thresholds (FINN's MVAU) built on them.
- :class:`ThresholdSearch`: its multi-threshold stage (parallel comparators or pipelined binary search).
- :class:`ThresholdUnit`: elementwise multi-threshold (input binarization).
- :class:`WidthConverter`: re-chunks a stream to another number of lanes per beat.
- :class:`SlidingWindow`: line-buffered sliding-window (im2col) unit feeding a convolution (FINN's
  ConvolutionInputGenerator).
- :class:`MaxPool`: streaming non-overlapping 2-D max-pool with a one-row accumulator.
- :class:`NetworkTop` and :func:`generate_verilog`: a whole network and its Verilog.

:mod:`hwnet.gateware.testing` holds the simulation helpers (stream drivers and monitors with random stalls)
that the tests share.
"""

from ._common import beat_layout, beat_signature
from .mvau import MatrixVectorThresholdUnit
from .network import NetworkTop, generate_verilog
from .pe import (AddSubtract, AddSubtractSkip, BitPlane, BitSerial, LookupProduct, ProcessingElement, ShiftAdd,
                 XnorPopcount, processing_element)
from .pool import MaxPool
from .popcount import PopCount
from .threshold import ThresholdSearch, ThresholdUnit
from .width import WidthConverter
from .window import SlidingWindow

__all__ = ["beat_layout", "beat_signature", "PopCount", "ProcessingElement", "XnorPopcount", "AddSubtract",
           "AddSubtractSkip", "ShiftAdd", "LookupProduct", "BitPlane", "BitSerial", "processing_element",
           "MatrixVectorThresholdUnit", "ThresholdSearch", "ThresholdUnit", "WidthConverter", "SlidingWindow",
           "MaxPool", "NetworkTop", "generate_verilog"]
