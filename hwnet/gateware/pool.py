"""The streaming max-pool unit: 2-D max-pooling of a stream of NHWC images, per channel, no padding
(:class:`hwnet.ir.MaxPool2d`, matching :func:`hwnet.golden.maxpool2d`).

An ``H x W x C`` image arrives as ``H * W * cf`` beats (``cf = C / simd`` beats per pixel, row-major, channels
fastest); its ``OH x OW x C`` result leaves as ``OH * OW * cf`` beats in the same order, ``last`` on the final
beat of every image (one output image is one vector). ``OH = (H - KH) // sh + 1``, ``OW = (W - KW) // sw + 1``.

Supported windows. Non-overlapping pooling only: ``stride >= kernel`` in both directions (the default
``stride = kernel``, and also gapped pooling with ``stride > kernel``, where the pixels between windows are
skipped). Then every input pixel belongs to at most one window: the one of output pixel ``(y // sh, x // sw)``
if ``y % sh < KH``, ``x % sw < KW``, ``y // sh < OH`` and ``x // sw < OW``; every other pixel (the gaps and the
rows and columns past the last window) is accepted and dropped. Overlapping pooling (``stride < kernel`` in
either direction) is refused with a :class:`HwnetError`: it is not supported yet.

Row accumulator. One :class:`~amaranth.lib.memory.Memory` of ``OW * cf`` words of ``simd * bits`` bits holds the
running lane-wise maximum of the current output row, word ``ox * cf + c`` for output column ``ox`` and channel
fold ``c``. It has an asynchronous (combinational) read port, so a beat is read, combined and written back in
the cycle it is accepted (a small distributed RAM; no read-after-write hazard). For each input beat of a
window: the window's first pixel (``ky = kx = 0``) writes the beat itself, the other pixels write
``max(acc, beat)``, and the window's last pixel (``ky = KH - 1``, ``kx = KW - 1``) sends ``max(acc, beat)`` to
the output register instead: output beats appear in NHWC order while the last contributing input row goes
by, so there is no separate phase emitting a row. Lanes compare as unsigned codes for ``uint<k>`` and
``bipolar`` (the max of ±1 is the OR of the bits) and as two's complement for ``int<k>`` and ``ternary``.

Throughput. One input beat per cycle whenever ``i`` is valid and, for the beats that complete a window, the
output register is free (``advance = ~o.valid | o.ready``): a stalled output only holds back the beats that
produce output; the others (accumulating or dropped) still flow. Without stalls the unit takes exactly one
beat per cycle, images back to back, and an output beat is valid :attr:`MaxPool.latency` (1) cycle after the
input beat completing its window was accepted. Nothing is lost or repeated under stalls: the counters and
the memory only move on an accepted beat, and the output register only changes when it is empty or taken.

Several pixels per beat (``pixels = P > 1``, behind a convolution that computes ``P`` output pixels per cycle):
an input beat carries ``P`` consecutive pixels of a row, whole (``simd = C``). With ``P`` dividing the kernel
width, the stride and the image width, the ``P`` pixels of a beat always lie in the same window (or all in a
gap), so they are max-reduced lane by lane as they arrive, and the result goes through the unit above for the
``H x W/P`` image with kernel ``(KH, KW/P)`` and stride ``(sh, sw/P)``: one beat of ``P`` pixels per cycle.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..datatypes import DataType
from ..errors import HwnetError
from ..ir import MaxPool2d, _int_tuple, window_out_shape
from ._common import beat_signature, check_positive_int, validating

__all__ = ["MaxPool"]

_KINDS = ("bipolar", "ternary", "uint", "int")


class MaxPool(wiring.Component):
    """Streaming 2-D max-pool with a one-row accumulator (see the module documentation).

    Parameters
    ----------
    in_shape : (H, W, C)
        Shape of each input image.
    kernel : int or (KH, KW)
        The window; it must fit the input.
    stride : int or (sh, sw), or None
        None: the kernel. At least the kernel in both directions (overlapping windows are not supported yet).
    simd : int
        Elements per beat, in and out; must divide ``C``.
    dtype : DataType
        Element type: bipolar, ternary, uint<k> or int<k> (not pot<k>).
    src_loc_at : int
        As for every Amaranth component.

    Members
    -------
    i : ``In(stream.Signature(beat_layout(simd, dtype.bits)))``
        Images, one after another, ``H * W * C / simd`` beats each, NHWC. The incoming ``last`` is ignored.
    o : ``Out(stream.Signature(beat_layout(simd, dtype.bits)))``
        The pooled images, ``OH * OW * C / simd`` beats each, NHWC, ``last`` on the final beat of each.
    """

    def __init__(self, *, in_shape, kernel, stride=None, simd, dtype, pixels=1, src_loc_at=0):
        with validating(self):
            self._in_shape = _int_tuple(in_shape, "in_shape", "(H, W, C), three positive integers", 3, 1,
                                        scalar=False)
            self._kernel = _int_tuple(kernel, "kernel", "a positive integer or (KH, KW)", 2, 1)
            self._stride = self._kernel if stride is None else _int_tuple(
                stride, "stride", "a positive integer or (sh, sw)", 2, 1)
            self._simd = check_positive_int(simd, "simd")
            if not isinstance(dtype, DataType):
                raise HwnetError(f"dtype must be a hwnet DataType (bipolar, ternary, uint<k> or int<k>), not "
                                 f"{dtype!r}")
            if dtype.kind not in _KINDS:
                raise HwnetError(f"max-pooling takes bipolar, ternary, uint<k> or int<k> elements, not {dtype}")
            self._dtype = dtype
            (h, w, c), (kh, kw), (sh, sw) = self._in_shape, self._kernel, self._stride
            if c % self._simd:
                raise HwnetError(f"simd={self._simd} must divide the {c} channels (C of in_shape "
                                 f"{self._in_shape})")
            if kh > h or kw > w:
                raise HwnetError(f"the {kh}x{kw} window does not fit the {h}x{w} input (max-pooling has no "
                                 f"padding); use a smaller kernel")
            if sh < kh or sw < kw:
                raise HwnetError(f"stride {self._stride} is smaller than the kernel {self._kernel}: overlapping "
                                 f"max-pooling is not supported yet (use stride >= kernel)")
            self._pixels = check_positive_int(pixels, "pixels")
            if self._pixels > 1:
                if self._simd != c:
                    raise HwnetError(f"pixels={self._pixels} carries whole pixels: simd must be the {c} channels, "
                                     f"got simd={self._simd}")
                if kw % self._pixels or sw % self._pixels or w % self._pixels:
                    raise HwnetError(f"pixels={self._pixels} must divide the kernel width {kw}, the stride {sw} "
                                     f"and the image width {w}, so that a beat's pixels share a window")
        super().__init__({
            "i": In(beat_signature(self._simd * self._pixels, dtype.bits)),
            "o": Out(beat_signature(self._simd, dtype.bits)),
        }, src_loc_at=src_loc_at)

    @classmethod
    def from_layer(cls, layer, simd, pixels=1):
        """The unit for the :class:`~hwnet.ir.MaxPool2d` ``layer`` (bound into a network, so that its element
        type is known), ``simd`` elements of ``pixels`` pixels per input beat."""
        if not isinstance(layer, MaxPool2d):
            raise HwnetError(f"MaxPool.from_layer needs a hwnet.ir.MaxPool2d, not {type(layer).__name__}")
        if layer.in_type is None:
            raise HwnetError(f"layer {layer.name!r} has no input type yet; put it in a hwnet.ir.Network first")
        return cls(in_shape=layer.in_shape, kernel=layer.kernel, stride=layer.stride, simd=simd,
                   dtype=layer.in_type, pixels=pixels, src_loc_at=1)

    in_shape = property(lambda self: self._in_shape)
    kernel = property(lambda self: self._kernel)
    stride = property(lambda self: self._stride)
    simd = property(lambda self: self._simd)
    pixels = property(lambda self: self._pixels, doc="Pixels per input beat.")
    dtype = property(lambda self: self._dtype)
    bits = property(lambda self: self._dtype.bits)

    @property
    def out_shape(self):
        """``(OH, OW, C)`` of each output image."""
        return window_out_shape(self._in_shape, self._kernel, self._stride)

    @property
    def in_beats(self):
        """Input beats per image: ``H * W * C / (simd * pixels)``."""
        h, w, c = self._in_shape
        return h * w * c // (self._simd * self._pixels)

    @property
    def out_beats(self):
        """Output beats per image: ``OH * OW * C / simd``."""
        oh, ow, c = self.out_shape
        return oh * ow * c // self._simd

    @property
    def depth(self):
        """Words of the row accumulator: ``OW * C / simd``."""
        _, ow, c = self.out_shape
        return ow * c // self._simd

    @property
    def latency(self):
        """Cycles from accepting the input beat that completes a window to its output beat being valid: 1."""
        return 1

    def elaborate(self, platform):
        if self._pixels > 1:
            return self._elaborate_pixels()
        (h, w, c), (kh, kw), (sh, sw) = self._in_shape, self._kernel, self._stride
        oh, ow, _ = self.out_shape
        simd, bits = self._simd, self._dtype.bits
        cf = c // simd
        m = Module()

        m.submodules.acc = acc = Memory(shape=unsigned(simd * bits), depth=ow * cf, init=[])
        rport = acc.read_port(domain="comb")
        wport = acc.write_port()

        # Input position: channel fold c, column phase px (x mod sw) and output column ox (x // sw, OW past the
        # last window), row phase py and output row oy likewise. base = ox * cf, the row accumulator address.
        cnt_c = Signal(range(cf), name="c")
        px = Signal(range(sw), name="px")
        ox = Signal(range(ow + 1), name="ox")
        py = Signal(range(sh), name="py")
        oy = Signal(range(oh + 1), name="oy")
        base = Signal(range(ow * cf + 1), name="base")
        x = Signal(range(w), name="x")
        y = Signal(range(h), name="y")

        inside = Signal()    # the pixel belongs to a window
        first = Signal()     # ... as its first pixel
        final = Signal()     # ... as its last pixel: the beat completes an output beat
        img_last = Signal()  # ... of the image's last window
        advance = Signal()
        accept = Signal()
        m.d.comb += [
            inside.eq((px < kw) & (py < kh) & (ox < ow) & (oy < oh)),
            first.eq(inside & (px == 0) & (py == 0)),
            final.eq(inside & (px == kw - 1) & (py == kh - 1)),
            img_last.eq((ox == ow - 1) & (oy == oh - 1) & (cnt_c == cf - 1)),
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(~final | advance),
            accept.eq(self.i.valid & self.i.ready),
        ]

        # Lane-wise max of the accumulator word and the incoming beat.
        data = self.i.payload.data
        merged = Signal(simd * bits, name="merged")
        m.d.comb += merged.eq(self._lane_max(rport.data, data))
        m.d.comb += [
            rport.addr.eq(base + cnt_c),
            wport.addr.eq(base + cnt_c),
            wport.data.eq(Mux(first, data, merged)),
            wport.en.eq(accept & inside & ~final),
        ]

        # Output register.
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(accept & final):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(Mux(first, data, merged)),
                         self.o.payload.last.eq(img_last)]

        # Counters, moving on every accepted beat.
        with m.If(accept):
            with m.If(cnt_c != cf - 1):
                m.d.sync += cnt_c.eq(cnt_c + 1)
            with m.Else():
                m.d.sync += cnt_c.eq(0)
                with m.If(x != w - 1):
                    m.d.sync += x.eq(x + 1)
                    with m.If(px != sw - 1):
                        m.d.sync += px.eq(px + 1)
                    with m.Else():
                        m.d.sync += px.eq(0)
                        with m.If(ox != ow):
                            m.d.sync += [ox.eq(ox + 1), base.eq(base + cf)]
                with m.Else():  # end of an input row
                    m.d.sync += [x.eq(0), px.eq(0), ox.eq(0), base.eq(0)]
                    with m.If(y != h - 1):
                        m.d.sync += y.eq(y + 1)
                        with m.If(py != sh - 1):
                            m.d.sync += py.eq(py + 1)
                        with m.Else():
                            m.d.sync += py.eq(0)
                            with m.If(oy != oh):
                                m.d.sync += oy.eq(oy + 1)
                    with m.Else():  # end of the image: the next one follows
                        m.d.sync += [y.eq(0), py.eq(0), oy.eq(0)]
        return m

    def _lane_max(self, a, b):
        """The lane-wise maximum of two words of ``simd`` elements."""
        bits, signed = self._dtype.bits, self._dtype.codes_order_signed
        lanes = []
        for j in range(self._simd):
            x, y = a[j * bits:(j + 1) * bits], b[j * bits:(j + 1) * bits]
            lanes.append(Mux(x.as_signed() > y.as_signed() if signed else x > y, x, y))
        return Cat(*lanes)

    def _elaborate_pixels(self):
        """``pixels`` > 1: the beat's pixels max-reduced, then pooled as one (see the module documentation)."""
        (h, w, c), (kh, kw), (sh, sw), p = self._in_shape, self._kernel, self._stride, self._pixels
        m = Module()
        m.submodules.pool = pool = MaxPool(in_shape=(h, w // p, c), kernel=(kh, kw // p), stride=(sh, sw // p),
                                           simd=c, dtype=self._dtype)
        width = c * self._dtype.bits
        data = self.i.payload.data
        reduced = data[:width]
        for q in range(1, p):
            reduced = self._lane_max(reduced, data[q * width:(q + 1) * width])
        m.d.comb += [
            pool.i.payload.data.eq(reduced),
            pool.i.payload.last.eq(self.i.payload.last),
            pool.i.valid.eq(self.i.valid),
            self.i.ready.eq(pool.i.ready),
        ]
        wiring.connect(m, pool.o, wiring.flipped(self.o))
        return m
