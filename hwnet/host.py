"""The host side of a board: :class:`BoardClient` speaks :mod:`hwnet.protocol` over a transport.

A transport has two methods: ``write(data)`` and ``read(timeout)`` (the bytes that arrived, possibly none, waiting
at most ``timeout`` seconds of its own time). :class:`SimTransport` runs a
:class:`~hwnet.gateware.board.BoardTop` in Amaranth's simulator, UART bits on its pins included, so the same
client code runs against the simulated board top and, through a serial port, against the board (Glasgow's
pattern: one host API over an abstract transport). ``SimTransport(noise=...)`` corrupts the line to test
recovery. :class:`SerialTransport` is the board's serial port, through pyserial.

The client is stop-and-wait: one frame, then its reply (matched by ``seq``); a timeout or an ``ERROR`` reply
resends the frame, up to ``retries`` times.
"""

from collections import deque

import numpy as np

from . import protocol
from .errors import HwnetError

__all__ = ["BoardClient", "SimTransport", "SerialTransport"]


class BoardClient:
    """Inference on a board top over ``transport``.

    Parameters
    ----------
    transport
        Anything with ``write(bytes)`` and ``read(timeout) -> bytes``.
    plan : :class:`~hwnet.compiler.DesignPlan`
        The design the board should hold: :meth:`check` compares the board's :class:`~hwnet.protocol.DesignInfo`
        with it, and the vectors are packed and decoded by its stream shapes and types.
    timeout : float
        Seconds (of the transport's time) to wait for a reply before resending.
    retries : int
        Resends per frame before giving up with :class:`~hwnet.errors.HwnetError`.
    """

    def __init__(self, transport, plan, *, timeout=1.0, retries=5):
        self.transport, self.plan = transport, plan
        self.expected = protocol.DesignInfo.of_plan(plan)
        self.timeout, self.retries = timeout, retries
        self._seq = 0
        lengths = {protocol.RESULT: self.expected.output_payload, protocol.INFO_REPLY: protocol.INFO_BYTES,
                   protocol.LOADED: protocol.LOADED_BYTES, protocol.ERROR: 1}
        self._parser = protocol.FrameParser(lengths)
        self._frames = deque()
        self.errors = []  # (seq, ERRORS code) of every error reply seen, for the record

    def _exchange(self, kind, payload, want):
        for _ in range(self.retries + 1):
            self._seq = (self._seq + 1) % 256
            seq = self._seq
            self.transport.write(protocol.encode_frame(kind, seq, payload))
            reply = self._await(seq)
            if reply is None:
                continue
            if reply.kind == protocol.ERROR:
                self.errors.append((seq, reply.payload[0]))
                continue
            if reply.kind == want:
                return reply.payload
        raise HwnetError(f"the board did not answer frame type {kind:#04x} after {self.retries + 1} tries "
                         f"(errors: {[protocol.ERRORS.get(c, c) for _, c in self.errors[-3:]]})")

    def _await(self, seq):
        """The next good reply with ``seq``, or None on timeout (older replies and bad frames are skipped)."""
        waited = 0.0
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if frame.ok and frame.seq == seq:
                    return frame
            if waited >= self.timeout:
                return None
            step = self.timeout / 20
            data = self.transport.read(step)
            waited += step
            self._frames.extend(self._parser.feed(data))

    def info(self):
        """The board's :class:`~hwnet.protocol.DesignInfo`."""
        return protocol.DesignInfo.decode(self._exchange(protocol.INFO, b"", protocol.INFO_REPLY))

    def check(self):
        """Raise :class:`HwnetError` unless the board holds this design."""
        got = self.info()
        if got != self.expected:
            raise HwnetError(f"the board holds another design (id {got.design_id:#010x}, {got.input_beats} x "
                             f"{got.input_lanes} inputs) than {self.plan.name!r} (id {self.expected.design_id:#010x}); "
                             f"program it with this design's bitstream")
        return got

    def load(self, progress=None):
        """Load the design's SPRAM image (nothing for a design without one) with ``LOAD`` frames, from where the board
        says it is (a board that has it all answers the first chunk with the whole count). Returns the number of
        ``LOAD`` frames that were answered."""
        if not self.plan.spram_words:
            return 0
        image = self.plan.spram_image()
        frames, count = 0, 0
        while True:
            reply = self._exchange(protocol.LOAD, protocol.load_payload(image, count), protocol.LOADED)
            new = int.from_bytes(reply, "little")
            if new > len(image) or new < count:
                raise HwnetError(f"the board says it holds {new} SPRAM words after {count} of {len(image)}; "
                                 f"reprogram it")
            frames += 1
            count = new
            if progress and (count == len(image) or count % (64 * protocol.LOAD_WORDS) == 0):
                progress(count, len(image))
            if count == len(image):
                return frames

    def infer(self, x):
        """The network's outputs (values, int64) for one input vector ``x`` (legal input values)."""
        plan = self.plan
        codes = plan.input_type.encode(np.asarray(x).reshape(-1))
        if codes.size != plan.input_size:
            raise HwnetError(f"an input vector has {plan.input_size} values, got {codes.size}")
        payload = protocol.pack_beats(codes, plan.input_lanes, plan.input_type.bits)
        out = self._exchange(protocol.INFER, payload, protocol.RESULT)
        return plan.output_type.decode(protocol.unpack_beats(out, plan.output_lanes, plan.output_type.bits))

    def infer_batch(self, xs):
        """:meth:`infer` for every row of ``xs``: (n, output_size) int64."""
        return np.stack([self.infer(x) for x in np.asarray(xs)])


class SimTransport:
    """A transport to a :class:`~hwnet.gateware.board.BoardTop` simulated by Amaranth, bit by bit on its UART
    pins. Time is simulated: one clock cycle is ``1 / clock_hz`` seconds, and :meth:`read` advances the
    simulation by the time it waits.

    ``noise(rng, data) -> bytes`` (optional) rewrites each write before it reaches the line (flip bits, insert
    garbage, drop bytes); ``seed`` seeds its ``numpy`` generator.
    """

    def __init__(self, top, *, clock_hz=1_000_000, noise=None, seed=0):
        from amaranth.sim import Simulator
        self.top, self.clock_hz = top, clock_hz
        self.noise, self.rng = noise, np.random.default_rng(seed)
        self._line = deque()   # bits to drive onto rx
        self._received = bytearray()
        self.leds = 0
        sim = Simulator(top)
        sim.add_clock(1 / clock_hz)
        divisor = top.divisor

        async def ticks(ctx, n):  # (not ctx.tick().repeat: its generator outlives a simulation dropped mid-run)
            for _ in range(n):
                await ctx.tick()

        async def drive(ctx):  # one bit per `divisor` cycles; the line idles at 1
            ctx.set(top.rx, 1)
            while True:
                if self._line:
                    ctx.set(top.rx, self._line.popleft())
                await ticks(ctx, divisor)

        async def listen(ctx):  # each byte sampled in the middle of its bits
            while True:
                await ctx.negedge(top.tx)
                await ticks(ctx, divisor + divisor // 2)
                bits = []
                for k in range(9):  # 8 data bits and the stop bit
                    bits.append(ctx.get(top.tx))
                    if k < 8:
                        await ticks(ctx, divisor)
                if bits[8]:
                    self._received.append(sum(b << k for k, b in enumerate(bits[:8])))
                self.leds = ctx.get(top.leds)

        sim.add_testbench(drive, background=True)
        sim.add_testbench(listen, background=True)
        self._sim = sim
        self._now = 0.0

    def write(self, data):
        data = bytes(data)
        if self.noise is not None:
            data = bytes(self.noise(self.rng, data))
        for byte in data:
            bits = [0] + [(byte >> k) & 1 for k in range(8)] + [1]
            self._line.extend(bits)

    def read(self, timeout):
        """Simulate until some bytes have arrived (or ``timeout`` seconds passed) and return them."""
        end = self._now + timeout
        step = 64 / self.clock_hz
        while not self._received and self._now < end:
            self._now = min(end, self._now + step)
            self._sim.run_until(self._now)
        data, self._received = bytes(self._received), bytearray()
        return data


class SerialTransport:
    """A transport over a serial port (pyserial's ``serial_for_url``: a device such as ``/dev/ttyUSB1`` or
    ``COM3``, or a URL such as ``loop://``), 8N1 at ``baud``. Time is real time."""

    def __init__(self, port, *, baud):
        import serial
        try:
            self._port = serial.serial_for_url(port, baudrate=baud, timeout=0)
        except (serial.SerialException, ValueError) as exc:
            raise HwnetError(f"cannot open serial port {port!r}: {exc}; check the board is plugged in and the "
                             f"port name (ls /dev/ttyUSB* /dev/ttyACM*)") from None
        self._port.reset_input_buffer()

    def write(self, data):
        self._port.write(bytes(data))
        self._port.flush()

    def read(self, timeout):
        """The bytes that arrive within ``timeout`` seconds: waits for the first, then takes what is waiting."""
        self._port.timeout = timeout
        first = self._port.read(1)
        if not first:
            return b""
        return first + self._port.read(self._port.in_waiting)

    def close(self):
        self._port.close()
