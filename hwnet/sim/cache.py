"""Verilog generation cache.

Elaborating a large network takes seconds; tests and benchmarks compile the same network many times. The
generated Verilog is stored under ``<cache>/verilog/<key>.v`` where the key hashes the network (its IR bytes,
folding included), the plan's summary (the compiler's hardware choices), the top name and the source of every module that shapes the Verilog (the gateware, the
compiler pass, the IR and the element types), so any change to those regenerates it.
"""

import functools
import hashlib
import json
import os
from pathlib import Path

from .. import ir
from ..toolchain import cache_dir

__all__ = ["cached_verilog", "generator_fingerprint"]


@functools.lru_cache(maxsize=1)
def generator_fingerprint():
    """Hash of the source files that determine the generated Verilog, plus the Amaranth version."""
    import amaranth
    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "gateware").glob("*.py")) + [root / n for n in ("compiler.py", "ir.py", "datatypes.py")]
    h = hashlib.sha256(f"amaranth {amaranth.__version__}".encode())
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cached_verilog(plan, *, top="hwnet_top", spram_primitive=False):
    """The Verilog of ``plan`` (a :class:`hwnet.compiler.DesignPlan`), generated once per content
    (``spram_primitive`` as for :func:`hwnet.gateware.generate_verilog`)."""
    key = hashlib.sha256(generator_fingerprint().encode() + top.encode() + ir.to_bytes(plan.network)
                         + json.dumps(plan.summary(), sort_keys=True).encode() + bytes([bool(spram_primitive)]))
    path = cache_dir() / "verilog" / f"{key.hexdigest()[:24]}.v"
    if path.exists():
        return path.read_text()
    from ..gateware import generate_verilog
    text = generate_verilog(plan, name=top, spram_primitive=spram_primitive)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text
