"""cocotb testbench that streams vectors through a generated hwnet top and records what comes out.

It is run by :mod:`hwnet.sim.runner` inside the Verilator simulation, never imported by hand. The job (input
beats, stall probabilities, seed, cycle limit) comes as a JSON file named by ``HWNET_SIM_JOB``; the result
(output beats, the cycle of every accepted input and output beat) goes to ``HWNET_SIM_RESULT``. A design with
weights in SPRAM gets its image (``load`` in the job) on its ``load`` stream, alongside the first inputs. Progress is
written to ``HWNET_SIM_PROGRESS`` about once a second.

Handshakes are sampled in ``ReadOnly()`` before each rising edge (a beat moves at that edge when ``valid`` and
``ready`` are both high) and new values are driven after it.
"""

import json
import os
import random
import time

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.clock import Clock


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


@cocotb.test()
async def stream_vectors(dut):
    with open(os.environ["HWNET_SIM_JOB"]) as f:
        job = json.load(f)
    result_path = os.environ["HWNET_SIM_RESULT"]
    progress_path = os.environ.get("HWNET_SIM_PROGRESS")

    in_width = job["in_width"]
    in_beats = [int(b, 16) for b in job["in_beats"]]
    in_per_vec = job["in_beats_per_vector"]
    out_per_vec = job["out_beats_per_vector"]
    n_vectors = len(in_beats) // in_per_vec
    out_total = n_vectors * out_per_vec
    stall_in, stall_out = job["stall_in"], job["stall_out"]
    max_cycles = job["max_cycles"]
    rng = random.Random(job["seed"])
    last_bit = 1 << in_width

    load_words = [int(w, 16) for w in job.get("load", [])]  # a design's SPRAM image, fed alongside the inputs
    loaded = 0

    clk = dut.clk
    i_valid, i_ready, i_payload = dut.i__valid, dut.i__ready, dut.i__payload
    if load_words:
        l_valid, l_ready, l_payload = dut.load__valid, dut.load__ready, dut.load__payload
        l_valid.value = 0
    o_valid, o_ready, o_payload = dut.o__valid, dut.o__ready, dut.o__payload

    cocotb.start_soon(Clock(clk, 10, unit="ns").start())
    edge, settle = RisingEdge(clk), ReadOnly()

    dut.rst.value = 1
    i_valid.value = 0
    o_ready.value = 0
    for _ in range(3):
        await edge
    dut.rst.value = 0

    def payload(k):
        return in_beats[k] | (last_bit if (k + 1) % in_per_vec == 0 else 0)

    sent = 0
    in_cycles, out_cycles, out_beats = [], [], []
    cycle = 0
    last_report = time.monotonic()
    # Drive the first beat (if not stalled) right after reset.
    if sent < len(in_beats) and rng.random() >= stall_in:
        i_payload.value = payload(sent)
        i_valid.value = 1
    o_ready.value = int(rng.random() >= stall_out)
    if load_words:
        l_payload.value = load_words[0]
        l_valid.value = 1
    timed_out = False
    while len(out_beats) < out_total:
        await settle
        if load_words and int(l_valid.value) and int(l_ready.value):
            loaded += 1
        if int(i_valid.value) and int(i_ready.value):
            in_cycles.append(cycle)
            sent += 1
        if int(o_valid.value) and int(o_ready.value):
            out_beats.append(int(o_payload.value))
            out_cycles.append(cycle)
        await edge
        cycle += 1
        if cycle >= max_cycles:
            timed_out = True
            break
        if sent < len(in_beats) and rng.random() >= stall_in:
            i_payload.value = payload(sent)
            i_valid.value = 1
        else:
            i_valid.value = 0
        o_ready.value = int(rng.random() >= stall_out)
        if load_words:
            if loaded < len(load_words) and rng.random() >= stall_in:
                l_payload.value = load_words[loaded]
                l_valid.value = 1
            else:
                l_valid.value = 0
        if progress_path and time.monotonic() - last_report > 1.0:
            last_report = time.monotonic()
            _write_json(progress_path, {"vectors_out": len(out_beats) // out_per_vec, "vectors": n_vectors,
                                        "cycles": cycle})
    i_valid.value = 0
    o_ready.value = 0
    # A few more cycles with the output held: anything that still comes out is a duplicated or spurious beat.
    extra = 0
    if not timed_out:
        o_ready.value = 1
        for _ in range(job.get("drain_cycles", 16)):
            await settle
            if int(o_valid.value):
                extra += 1
            await edge
    _write_json(result_path, {"out_beats": [format(b, "x") for b in out_beats], "in_cycles": in_cycles,
                              "load_accepted": loaded,
                              "out_cycles": out_cycles, "cycles": cycle, "timed_out": timed_out,
                              "inputs_accepted": sent, "extra_out_beats": extra})
