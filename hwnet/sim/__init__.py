"""Simulation harness: generated Verilog under Verilator through cocotb (see :mod:`hwnet.sim.runner`)."""

from .runner import SimResult, StreamFormat, build_verilator, run_stream

__all__ = ["SimResult", "StreamFormat", "build_verilator", "run_stream"]
