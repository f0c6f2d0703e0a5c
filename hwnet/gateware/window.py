"""The sliding-window unit (FINN's ConvolutionInputGenerator): turns a stream of NHWC images into the stream of
their im2col patches, the input of a matrix-vector unit running a convolution.

An ``H x W x C`` image arrives as ``H * W * cf`` beats (``cf = C / simd`` beats per pixel, row-major, channels
fastest). For every output pixel ``(oy, ox)`` in row-major order the unit sends its patch of the padded image,
flattened ``(ky, kx, ic)`` with ``ic`` fastest, as ``KH * KW * cf`` beats with ``last`` on the final one: exactly
the rows and element order of :func:`hwnet.golden.conv2d_patches`. Positions in the padding carry ``pad_code``.

Line buffer. The input rows go, in arrival order and across image boundaries, into a ring of ``rows`` row slots
(default ``KH + sh``) in one :class:`~amaranth.lib.memory.Memory` of ``rows * W * cf`` words of ``simd * bits``
bits: global input row ``g`` (counting over all images) lives in slot ``g mod rows``, pixel column ``x`` and
channel fold ``c`` at address ``(g mod rows) * W * cf + x * cf + c``. The writer's address is a plain counter
modulo the depth; the reader keeps the address of its current row, of its output row's first row and of the
image's row 0 as counters advanced by constants modulo the depth, and adds the column offset ``x * cf + c``
(also a counter): no multiplier.

Synchronization. Relative to the image the reader is on, ``avail`` counts the input rows completely written
(it goes past ``H`` when the writer runs into the next image, and below 0 when the reader has moved on to an
image whose first rows are not in yet). Output row ``oy`` reads the input rows ``low .. need - 1`` with
``low = clip(oy * sh - top, 0, H)`` and ``need = clip(oy * sh + KH - top, 1, H)``:

- the reader issues a beat only while ``avail >= need`` (every row it reads is complete: it never reads a row
  not yet written). ``need`` is at least 1, so even an output row lying wholly in the top padding waits for
  its image's first row: no output of an image leaves before its input has begun, and ``avail > -H``;
- the writer takes a beat only while ``avail < low + rows``: the slot of the row it writes last held row
  ``avail - rows < low``, which no pending output needs (it never overwrites a row still to be read). Rows no
  output uses (below the last output row, or skipped by a stride larger than the kernel) are written and
  dropped the same way;
- when the reader issues the last beat of an image, ``avail`` drops by ``H`` as ``low`` and ``need`` restart
  at the next image's first output row.

Any ``rows >= max(need - low)`` (at most ``min(KH, H)``) is free of deadlock: the reader always gets its rows,
and the writer is only held back by rows the reader will read without waiting for more input.
With ``rows = KH + sh`` the ``sh`` input rows that the next output row adds go into slots that are free for the
whole of the current output row, so inside an image the input of the next rows overlaps the output of the
current one entirely; fewer rows make the output wait for input inside an image, more only help across image
boundaries (see :attr:`SlidingWindow.image_gap`) and input-bound layers.

Throughput. The output side issues one beat per cycle whenever its rows are in and ``o`` is not stalled; the
input side takes one beat per cycle whenever a slot is free, independently of ``o.ready``. With the default
``rows``, no stalls and an input that never runs dry, a layer whose output rows take at least as many cycles as
the ``sh`` input rows each makes room for (``sh * W <= OW * KH * KW``: any kernel of 2x2 or more at stride 1,
3x3 at stride 2) runs at one output beat per cycle from the moment the first image's first output row has its
rows, except between images: in steady state an image takes exactly ``max(out_beats + image_gap, in_beats)``
cycles, where :attr:`SlidingWindow.image_gap` is the time to write the rows of the next image's first output row
that did not fit into the ring while the current image's last output row was read (0 with "same" padding;
``(KH - 1) * W * C / simd`` for an unpadded stride-1 layer unless ``rows >= 2 * KH``). Other layers (such as a
1x1 kernel with stride 2) are input-bound: they take ``in_beats`` cycles per image or a little more where output
rows that need no new input (whole rows of padding, or the next image's first row right after the last) follow
one another while the ring is full (measured: at most about 1.6 input rows more per image on small images; one
or two more ``rows`` win that back).

Pipeline (registers advance together on ``advance = ~o.valid | o.ready``, so a stalled output freezes the
reader, its memory read port included, and nothing is lost or repeated; the writer is independent)::

    S0 issue   counters (image row 0, oy, ox, ky, kx, c) and the read address; the read is issued (not for a
               position in the padding) if ``avail >= need``.
    S1 read    the memory word, or ``pad_code`` in every lane for padding, registered on ``o``.

An output beat is valid :attr:`SlidingWindow.latency` (3) cycles after the cycle in which the last input beat it
depends on was accepted, when nothing else holds it back.

Several output pixels per beat (``pixels = P > 1``, FINN's multiple-pixel mode; needs whole pixels, ``simd = C``,
whole patches, ``positions = KH * KW``, and ``P`` dividing ``W`` and ``OW``). An input beat carries ``P``
consecutive pixels of a row and is one word of the line buffer (``W / P`` words per row slot); an output beat
carries the whole patches of ``P`` consecutive output pixels ``ox .. ox + P - 1`` (``ox`` a multiple of ``P``),
one after another. Since ``ox * sw`` is a multiple of ``P``, the element columns those patches read, ``ox * sw -
left + q * sw + kx``, sit at the same places in the words at every beat: word ``wbase + (a0 + q * sw + kx) // P``,
lane ``(a0 + q * sw + kx) % P``, with ``wbase = floor((ox * sw - left) / P)`` (a counter) and ``a0 = -left mod
P``. So each kernel row is read through a fixed set of read ports, one per word the beat touches, and the patch
lanes are wired from them; a word wholly outside the row (the ``W`` columns are whole words) or a row outside the
image reads as padding. Synchronization, the writer and the timing are those above, in words of ``P`` pixels: an
image takes ``max(OH * OW / P + image_gap, H * W / P)`` cycles.
"""

from dataclasses import replace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler import WindowGeometry
from ..errors import HwnetError
from ..ir import Conv2d, _int_tuple, _is_int
from ._common import beat_signature, check_positive_int, validating

__all__ = ["SlidingWindow"]


def _add_mod(value, step, depth):
    """``(value + step) mod depth`` for ``0 <= value < depth``, without a divider."""
    step %= depth
    if step == 0:
        return value
    return Mux(value >= depth - step, value - (depth - step), value + step)


def _clip(value, lo, hi):
    return Mux(value < lo, lo, Mux(value > hi, hi, value))


def _line_writer(m, i, wport, *, depth, row_words, rows, avail, low, retire):
    """The writer (see the module documentation): the input's words in arrival order into consecutive slots of
    the ring, one whenever a slot is free (``avail < low + rows``); ``avail`` counts the complete rows, less
    ``retire`` (the image's ``H`` rows when the reader finishes it)."""
    waddr = Signal(range(depth), name="waddr")
    wpos = Signal(range(row_words), name="wpos")
    accept, row_done = Signal(), Signal()
    m.d.comb += [
        i.ready.eq(avail < low + rows),
        accept.eq(i.valid & i.ready),
        row_done.eq(accept & (wpos == row_words - 1)),
        wport.addr.eq(waddr),
        wport.data.eq(i.payload.data),
        wport.en.eq(accept),
    ]
    with m.If(accept):
        m.d.sync += [waddr.eq(_add_mod(waddr, 1, depth)), wpos.eq(Mux(wpos == row_words - 1, 0, wpos + 1))]
    m.d.sync += avail.eq(avail + row_done - retire)


class SlidingWindow(wiring.Component):
    """Sliding-window (im2col) unit with line buffers for a convolution's input.

    Parameters
    ----------
    in_shape : (H, W, C)
        Shape of each input image.
    kernel : int or (KH, KW)
    stride : int or (sh, sw)
    padding : int or (top, bottom, left, right)
        Rows and columns of ``pad_code`` around the image; any size, also larger than the kernel.
    pad_code : int
        Wire code of the padding value (``0 .. 2**bits - 1``).
    simd : int
        Elements per beat, in and out; must divide ``C``.
    bits : int
        Bits per element.
    rows : int or None
        Row slots of the line buffer; None: ``KH + sh`` (see the module documentation). At least the rows one
        output row reads (:attr:`min_rows`).
    src_loc_at : int
        As for every Amaranth component: stack frames between the caller to blame and this constructor.

    Members
    -------
    i : ``In(stream.Signature(beat_layout(simd, bits)))``
        Images, one after another, ``H * W * C / simd`` beats each in NHWC order (row-major, channels fastest).
        The incoming ``last`` is ignored: the unit knows the image size.
    o : ``Out(stream.Signature(beat_layout(simd, bits)))``
        Per image, the patch of every output pixel in row-major order, flattened ``(ky, kx, ic)``, ``KH * KW *
        C / simd`` beats each, with ``last`` on the final beat of every patch: the rows of
        :func:`hwnet.golden.conv2d_patches`, encoded.
    """

    def __init__(self, *, in_shape, kernel, stride=1, padding=0, pad_code=0, simd, bits, rows=None, positions=1,
                 pixels=1, src_loc_at=0):
        with validating(self):
            self._in_shape = _int_tuple(in_shape, "in_shape", "(H, W, C), three positive integers", 3, 1,
                                        scalar=False)
            self._kernel = _int_tuple(kernel, "kernel", "a positive integer or (KH, KW)", 2, 1)
            self._stride = _int_tuple(stride, "stride", "a positive integer or (sh, sw)", 2, 1)
            self._padding = _int_tuple(padding, "padding", "a non-negative integer or (top, bottom, left, right)",
                                       4, 0)
            self._bits = check_positive_int(bits, "bits")
            self._simd = check_positive_int(simd, "simd")
            (h, w, c), (kh, kw) = self._in_shape, self._kernel
            if c % self._simd:
                raise HwnetError(f"simd={self._simd} must divide the {c} input channels (C of in_shape "
                                 f"{self._in_shape})")
            if not _is_int(pad_code) or not 0 <= pad_code < (1 << self._bits):
                raise HwnetError(f"pad_code must be a {self._bits}-bit wire code (0 .. {(1 << self._bits) - 1}), "
                                 f"got {pad_code!r}")
            self._pad_code = int(pad_code)
            self._positions = check_positive_int(positions, "positions")
            if self._positions > 1:
                if self._simd != c:
                    raise HwnetError(f"a beat of {self._positions} kernel positions carries whole pixels: simd must "
                                     f"be the {c} input channels, got simd={self._simd}")
                if kw % self._positions and (self._positions % kw or kh % (self._positions // kw)):
                    raise HwnetError(f"positions={self._positions} must divide the kernel width {kw}, or be a "
                                     f"multiple of it that divides the kernel's {kh * kw} positions into whole "
                                     f"rows")
            self._pixels = check_positive_int(pixels, "pixels")
            self._geometry = WindowGeometry(in_shape=self._in_shape, kernel=self._kernel, stride=self._stride,
                                            padding=self._padding, simd=self._simd, positions=self._positions,
                                            pixels=self._pixels)
            oh, ow, _ = self.out_shape
            if oh < 1 or ow < 1:
                raise HwnetError(f"a {kh}x{kw} kernel with stride {self._stride} does not fit the {h}x{w} input "
                                 f"padded by (top, bottom, left, right) = {self._padding} (output {oh}x{ow}); use "
                                 f"a smaller kernel or more padding")
            if self._pixels > 1:
                if self._simd != c or self._positions != kh * kw:
                    raise HwnetError(f"pixels={self._pixels} sends whole patches of whole pixels: simd must be the "
                                     f"{c} input channels and positions the kernel's {kh * kw}, got simd="
                                     f"{self._simd} positions={self._positions}")
                if w % self._pixels or ow % self._pixels:
                    raise HwnetError(f"pixels={self._pixels} must divide the input width {w} and the output width "
                                     f"{ow}")
            if rows is not None:
                rows = check_positive_int(rows, "rows")
                if rows < self.min_rows:
                    raise HwnetError(f"rows={rows} line buffer rows cannot hold the {self.min_rows} input "
                                     f"rows one output row reads; use at least {self.min_rows}")
                self._geometry = replace(self._geometry, rows=rows)
        super().__init__({
            "i": In(beat_signature(self._simd * self._pixels, self._bits)),
            "o": Out(beat_signature(self._simd * self._positions * self._pixels, self._bits)),
        }, src_loc_at=src_loc_at)

    @classmethod
    def from_conv(cls, layer, simd, *, rows=None, positions=1, pixels=1):
        """The unit feeding the :class:`~hwnet.ir.Conv2d` ``layer`` (bound into a network, so that its input
        type and pad value are known), ``simd`` elements per input beat, ``positions`` kernel positions per output
        beat."""
        if not isinstance(layer, Conv2d):
            raise HwnetError(f"SlidingWindow.from_conv needs a hwnet.ir.Conv2d, not {type(layer).__name__}")
        if layer.in_type is None:
            raise HwnetError(f"layer {layer.name!r} has no input type yet; put it in a hwnet.ir.Network first")
        pad_code = int(layer.in_type.encode([layer.pad_value])[0])
        return cls(in_shape=layer.in_shape, kernel=(layer.kernel_h, layer.kernel_w), stride=layer.stride,
                   padding=layer.padding, pad_code=pad_code, simd=simd, bits=layer.in_type.bits, rows=rows,
                   positions=positions, pixels=pixels, src_loc_at=1)  # the caller made it

    in_shape = property(lambda self: self._in_shape)
    kernel = property(lambda self: self._kernel)
    stride = property(lambda self: self._stride)
    padding = property(lambda self: self._padding)
    pad_code = property(lambda self: self._pad_code)
    simd = property(lambda self: self._simd)
    positions = property(lambda self: self._positions, doc="Kernel positions per output beat.")
    pixels = property(lambda self: self._pixels, doc="Pixels per input beat, and patches per output beat.")
    lanes_in = property(lambda self: self._geometry.lanes_in, doc="Elements per input beat.")
    lanes_out = property(lambda self: self._geometry.lanes_out, doc="Elements per output beat.")
    bits = property(lambda self: self._bits)
    rows = property(lambda self: self._geometry.rows, doc="Row slots of the line buffer.")
    geometry = property(lambda self: self._geometry,
                        doc="The unit's :class:`~hwnet.compiler.WindowGeometry`: shapes, line buffer and timing.")
    out_shape = property(lambda self: self._geometry.out_shape,
                         doc="``(OH, OW, C)``: output pixels (patches) per image, and the channels.")
    in_beats = property(lambda self: self._geometry.in_beats, doc="Input beats per image: ``H * W * C / simd``.")
    out_beats = property(lambda self: self._geometry.out_beats,
                         doc="Output beats per image: ``OH * OW * KH * KW * C / (simd * positions)``.")
    depth = property(lambda self: self._geometry.depth, doc="Words of the line buffer: ``rows * W * C / simd``.")
    min_rows = property(lambda self: self._geometry.min_rows,
                        doc="The fewest line buffer rows free of deadlock: the most input rows one output row reads.")
    image_gap = property(lambda self: self._geometry.image_gap,
                         doc="Steady-state cycles between two images' outputs (:attr:`WindowGeometry.image_gap`).")

    @property
    def memory_bits(self):
        """Bits of the line buffer: ``rows * W * C * bits``."""
        return self.depth * self.lanes_in * self._bits

    @property
    def latency(self):
        """Cycles from the cycle the last input beat an output beat needs is accepted to the cycle that output
        beat is valid (when nothing else holds it back): 3."""
        return 3

    def elaborate(self, platform):
        if self._pixels > 1:
            return self._elaborate_pixels()
        (h, w, c), (kh, kw), (sh, sw), (top, bottom, left, right) = (self._in_shape, self._kernel, self._stride,
                                                                      self._padding)
        oh, ow, _ = self.out_shape
        simd, bits, rows, positions = self._simd, self._bits, self.rows, self._positions
        cf = c // simd           # beats per pixel
        wcf = w * cf             # words per row slot
        depth = rows * wcf
        # a beat's positions: kx_step consecutive columns of ky_step consecutive kernel rows; lane j reads the
        # kernel position (ky + j // kx_step, kx + j % kx_step)
        kx_step = positions if kw % positions == 0 else kw
        ky_step = positions // kx_step
        gx, gy = kw // kx_step, kh // ky_step    # beat groups along a kernel row and down the kernel
        m = Module()

        def add_mod(value, step):
            return _add_mod(value, step, depth)

        def clip(value, lo):
            return _clip(value, lo, h)

        m.submodules.lines = lines = Memory(shape=unsigned(simd * bits), depth=depth, init=[])
        wport = lines.write_port()
        rports = [lines.read_port() for _ in range(positions)]

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Reader counters (S0). iy0 = oy*sh - top and iy = iy0 + ky are input rows; col0 = (ox*sw - left)*cf and
        # col = col0 + kx*cf word offsets in a row; img, rbase and raddr the addresses of the image's row 0, of
        # row iy0 and of row iy (all modulo the depth: meaningless for rows outside the image, never read).
        cnt_c = Signal(range(cf), name="c")
        cnt_kx = Signal(range(gx), name="kx")   # kernel column group (kx = cnt_kx * kx_step)
        cnt_ky = Signal(range(gy), name="ky")   # kernel row group (ky = cnt_ky * ky_step)
        cnt_ox = Signal(range(ow), name="ox")
        cnt_oy = Signal(range(oh), name="oy")
        iy0 = Signal(range(-top, h + bottom - kh + 1), init=-top, name="iy0")
        iy = Signal(range(-top, h + bottom), init=-top, name="iy")
        col_range = range(-left * cf, (w + right - 1) * cf + 1)
        col0 = Signal(col_range, init=-left * cf, name="col0")
        col = Signal(col_range, init=-left * cf, name="col")
        row_start = (-top * wcf) % depth
        img = Signal(range(depth), name="img")
        rbase = Signal(range(depth), init=row_start, name="rbase")
        raddr = Signal(range(depth), init=row_start, name="raddr")

        # Synchronization: input rows of the reader's image that are completely written.
        avail = Signal(range(1 - h, h + rows + 1), name="avail")
        low, need = clip(iy0, 0), clip(iy0 + kh, 1)

        ok = Signal()
        issue = Signal()
        pads = [Signal(name=f"pad{j}") for j in range(positions)]
        last_patch = Signal()
        last_image = Signal()
        m.d.comb += [
            ok.eq(avail >= need),
            issue.eq(advance & ok),
            last_patch.eq((cnt_c == cf - 1) & (cnt_kx == gx - 1) & (cnt_ky == gy - 1)),
            last_image.eq(last_patch & (cnt_ox == ow - 1) & (cnt_oy == oh - 1)),
        ]
        for j, (rport, pad) in enumerate(zip(rports, pads)):
            dy, dx = divmod(j, kx_step)
            m.d.comb += [
                pad.eq((iy + dy < 0) | (iy + dy >= h) | (col + dx * cf < 0) | (col + dx * cf >= wcf)),
                rport.addr.eq(add_mod(raddr, dy * wcf) + col + dx * cf + cnt_c),
                rport.en.eq(issue & ~pad),
            ]

        with m.If(issue):
            with m.If(cnt_c != cf - 1):
                m.d.sync += cnt_c.eq(cnt_c + 1)
            with m.Else():
                m.d.sync += cnt_c.eq(0)
                with m.If(cnt_kx != gx - 1):
                    m.d.sync += [cnt_kx.eq(cnt_kx + 1), col.eq(col + kx_step * cf)]
                with m.Else():
                    m.d.sync += cnt_kx.eq(0)
                    with m.If(cnt_ky != gy - 1):
                        m.d.sync += [cnt_ky.eq(cnt_ky + 1), iy.eq(iy + ky_step),
                                     raddr.eq(add_mod(raddr, ky_step * wcf)), col.eq(col0)]
                    with m.Else():
                        m.d.sync += cnt_ky.eq(0)
                        with m.If(cnt_ox != ow - 1):
                            m.d.sync += [cnt_ox.eq(cnt_ox + 1), col0.eq(col0 + sw * cf), col.eq(col0 + sw * cf),
                                         iy.eq(iy0), raddr.eq(rbase)]
                        with m.Else():
                            m.d.sync += [cnt_ox.eq(0), col0.eq(-left * cf), col.eq(-left * cf)]
                            with m.If(cnt_oy != oh - 1):
                                next_rbase = add_mod(rbase, sh * wcf)
                                m.d.sync += [cnt_oy.eq(cnt_oy + 1), iy0.eq(iy0 + sh), iy.eq(iy0 + sh),
                                             rbase.eq(next_rbase), raddr.eq(next_rbase)]
                            with m.Else():  # the next image: its row 0 follows this image's H rows
                                next_rbase = add_mod(img, (h - top) * wcf)
                                m.d.sync += [cnt_oy.eq(0), iy0.eq(-top), iy.eq(-top),
                                             img.eq(add_mod(img, h * wcf)), rbase.eq(next_rbase),
                                             raddr.eq(next_rbase)]

        # Writer: rows in arrival order into consecutive slots, one beat whenever the slot is free.
        _line_writer(m, self.i, wport, depth=depth, row_words=wcf, rows=rows, avail=avail, low=low,
                     retire=Mux(issue & last_image, h, 0))

        # S1: the word read, or padding, registered on the output.
        pad_word = Const(sum(self._pad_code << (j * bits) for j in range(simd)), simd * bits)
        v1, last1 = Signal(name="v1"), Signal(name="last1")
        pads1 = [Signal(name=f"pad{j}_1") for j in range(positions)]
        with m.If(advance):
            m.d.sync += [v1.eq(issue), last1.eq(last_patch), self.o.valid.eq(v1)]
            m.d.sync += [p1.eq(p) for p1, p in zip(pads1, pads)]
            with m.If(v1):
                m.d.sync += self.o.payload.last.eq(last1)
                for j, (rport, p1) in enumerate(zip(rports, pads1)):
                    m.d.sync += self.o.payload.data[j * simd * bits:(j + 1) * simd * bits].eq(
                        Mux(p1, pad_word, rport.data))
        return m

    def _elaborate_pixels(self):
        """The unit with ``pixels`` > 1 (see the module documentation)."""
        (h, w, c), (kh, kw), (sh, sw), (top, bottom, left, _) = (self._in_shape, self._kernel, self._stride,
                                                                  self._padding)
        oh, ow, _ = self.out_shape
        p, bits, rows = self._pixels, self._bits, self.rows
        pix = c * bits           # bits of a pixel
        wpr = w // p             # words per row slot
        owp = ow // p            # output beats per output row
        depth = rows * wpr
        a0 = (-left) % p
        wb0 = -((left + p - 1) // p)              # floor(-left / p)
        nwords = (a0 + (p - 1) * sw + kw - 1) // p + 1
        m = Module()

        def add_mod(value, step):
            return _add_mod(value, step, depth)

        def clip(value, lo):
            return _clip(value, lo, h)

        m.submodules.lines = lines = Memory(shape=unsigned(p * pix), depth=depth, init=[])
        wport = lines.write_port()
        rports = {(ky, k): lines.read_port() for ky in range(kh) for k in range(nwords)}

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        cnt_ox = Signal(range(owp), name="ox")
        cnt_oy = Signal(range(oh), name="oy")
        iy0 = Signal(range(-top, h + bottom - kh + 1), init=-top, name="iy0")
        wbase = Signal(range(wb0, wb0 + (owp - 1) * sw + 1), init=wb0, name="wbase")
        row_start = (-top * wpr) % depth
        img = Signal(range(depth), name="img")
        rbase = Signal(range(depth), init=row_start, name="rbase")

        avail = Signal(range(1 - h, h + rows + 1), name="avail")
        low, need = clip(iy0, 0), clip(iy0 + kh, 1)
        ok, issue, last_image = Signal(), Signal(), Signal()
        m.d.comb += [
            ok.eq(avail >= need),
            issue.eq(advance & ok),
            last_image.eq((cnt_ox == owp - 1) & (cnt_oy == oh - 1)),
        ]
        pads = {}
        for (ky, k), rport in rports.items():
            pad = pads[ky, k] = Signal(name=f"pad{ky}_{k}")
            m.d.comb += [
                pad.eq((iy0 + ky < 0) | (iy0 + ky >= h) | (wbase + k < 0) | (wbase + k >= wpr)),
                rport.addr.eq(add_mod(rbase, ky * wpr) + wbase + k),
                rport.en.eq(issue & ~pad),
            ]

        with m.If(issue):
            with m.If(cnt_ox != owp - 1):
                m.d.sync += [cnt_ox.eq(cnt_ox + 1), wbase.eq(wbase + sw)]
            with m.Else():
                m.d.sync += [cnt_ox.eq(0), wbase.eq(wb0)]
                with m.If(cnt_oy != oh - 1):
                    m.d.sync += [cnt_oy.eq(cnt_oy + 1), iy0.eq(iy0 + sh), rbase.eq(add_mod(rbase, sh * wpr))]
                with m.Else():  # the next image: its row 0 follows this image's H rows
                    m.d.sync += [cnt_oy.eq(0), iy0.eq(-top), img.eq(add_mod(img, h * wpr)),
                                 rbase.eq(add_mod(img, (h - top) * wpr))]

        # Writer: as for one pixel per beat, a word of P pixels per beat.
        _line_writer(m, self.i, wport, depth=depth, row_words=wpr, rows=rows, avail=avail, low=low,
                     retire=Mux(issue & last_image, h, 0))

        # S1: the patches, wired from the words read (or padding), registered on the output.
        pad_pixel = Const(sum(self._pad_code << (j * bits) for j in range(c)), pix)
        v1 = Signal(name="v1")
        pads1 = {key: Signal(name=f"{pad.name}_1") for key, pad in pads.items()}
        lanes = []
        for q in range(p):
            for ky in range(kh):
                for kx in range(kw):
                    k, lane = divmod(a0 + q * sw + kx, p)
                    word = rports[ky, k].data
                    lanes.append(Mux(pads1[ky, k], pad_pixel, word[lane * pix:(lane + 1) * pix]))
        with m.If(advance):
            m.d.sync += [v1.eq(issue), self.o.valid.eq(v1)]
            m.d.sync += [pads1[key].eq(pad) for key, pad in pads.items()]
            with m.If(v1):
                m.d.sync += [self.o.payload.last.eq(1), self.o.payload.data.eq(Cat(*lanes))]
        return m
