"""The serial protocol between a host and a board top (:class:`hwnet.gateware.board.BoardTop`): framed,
checksummed, resynchronizing after garbage. This module is the host side and the reference the gateware is
tested against.

A frame, either way::

    0xA5 0x5A | version | type | seq | length (2 bytes, little-endian) | payload (length bytes) | CRC (2 bytes, LE)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, not reflected: ``binascii.crc_hqx``)
over ``version .. payload``. ``seq`` is the host's frame number; a reply echoes the seq of the frame it answers.

Types:

- host to board: ``INFER`` (payload: one input vector, :func:`pack_beats` of the network's input codes),
  ``INFO`` (empty payload), ``LOAD`` (designs with weights in SPRAM: :func:`load_payload`, the 32-bit word
  offset of the chunk and :data:`LOAD_WORDS` 64-bit words of the SPRAM image, little-endian, the last chunk
  padded with zero words);
- board to host: ``RESULT`` (payload: the output vector, packed the same way), ``INFO_REPLY`` (payload:
  :class:`DesignInfo`), ``LOADED`` (payload: the 32-bit count of SPRAM words loaded), ``ERROR`` (payload: one
  code byte, :data:`ERRORS`).

Loading is idempotent: the board takes a ``LOAD`` chunk only when its CRC is good and its offset is the count
loaded so far (it holds the chunk until the CRC has arrived), and always answers with the count, so a lost reply or
a repeated chunk never loads a word twice; the host goes on from the count it is told. An ``INFER`` before the
whole image is loaded is answered ``ERROR`` (weights not loaded).

A receiver hunts for the two sync bytes, reads the header, and checks the version, the type and the length
(for ``INFER``: exactly the design's input payload; ``INFO``: 0) before it takes the payload: a bad header is
answered with an ``ERROR`` at once. A bad CRC is answered with an ``ERROR`` after the frame. Then the board top
hunts again from the next byte (a version byte of ``0xA5`` is taken as a new sync at once, so garbage ending in
the sync bytes does not swallow the frame behind it); the host's :class:`FrameParser`, which keeps its buffer,
hunts again right after the bad frame's sync bytes. Vectors are packed beat by beat, as the network's stream carries
them: each beat's ``lanes`` codes of ``bits`` bits, lane 0 in the lowest bits, padded to whole bytes,
little-endian.
"""

import binascii
import struct
from dataclasses import dataclass

import numpy as np

from .errors import HwnetError

__all__ = ["SYNC", "VERSION", "INFER", "INFO", "LOAD", "RESULT", "INFO_REPLY", "LOADED", "ERROR", "ERRORS",
           "LOAD_WORDS", "crc16", "encode_frame", "Frame", "FrameParser", "DesignInfo", "pack_beats", "unpack_beats",
           "beat_bytes", "load_payload"]

SYNC = b"\xa5\x5a"
VERSION = 1
INFER, INFO, LOAD = 0x01, 0x02, 0x03
RESULT, INFO_REPLY, LOADED, ERROR = 0x81, 0x82, 0x83, 0xE0
#: ``ERROR`` payload codes.
ERRORS = {1: "bad CRC", 2: "bad version", 3: "unknown type", 4: "bad length", 5: "input overrun",
          6: "weights not loaded"}
BAD_CRC, BAD_VERSION, BAD_TYPE, BAD_LENGTH, OVERRUN, NOT_LOADED = 1, 2, 3, 4, 5, 6
#: SPRAM image words per ``LOAD`` frame.
LOAD_WORDS = 16
#: Bytes of a ``LOAD`` payload: the offset and the words.
LOAD_BYTES = 4 + 8 * LOAD_WORDS
#: Bytes of a ``LOADED`` payload.
LOADED_BYTES = 4
#: The longest payload a parser accepts.
MAX_PAYLOAD = 1 << 15


def crc16(data, value=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (continuing from ``value``)."""
    return binascii.crc_hqx(bytes(data), value)


def encode_frame(kind, seq, payload=b""):
    """The bytes of one frame."""
    payload = bytes(payload)
    if not 0 <= seq < 256 or not 0 <= kind < 256:
        raise HwnetError(f"frame type and seq are bytes, got type {kind} seq {seq}")
    if len(payload) > MAX_PAYLOAD:
        raise HwnetError(f"payload of {len(payload)} bytes is over the protocol's {MAX_PAYLOAD}")
    body = bytes([VERSION, kind, seq]) + struct.pack("<H", len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


@dataclass(frozen=True)
class Frame:
    """A frame the parser read: ``ok`` False with ``error`` (an :data:`ERRORS` code) for a bad one."""
    kind: int
    seq: int
    payload: bytes
    ok: bool = True
    error: int = 0


class FrameParser:
    """Feed bytes (:meth:`feed`), get the frames they complete. ``lengths`` maps a frame type to the payload length
    it must have (types not in it are ``unknown type``). A header that breaks the rules, or a bad CRC, gives a bad
    :class:`Frame` and the parser hunts for sync again from the byte after the bad frame's sync bytes, so garbage
    that looks like the start of a frame cannot swallow the real frame behind it."""

    def __init__(self, lengths):
        self.lengths = dict(lengths)
        self._buf = bytearray()

    def feed(self, data):
        self._buf += bytes(data)
        frames = []
        while True:
            start = self._buf.find(SYNC)
            if start < 0:
                del self._buf[:max(0, len(self._buf) - 1)]  # keep a last 0xA5
                return frames
            del self._buf[:start]
            if len(self._buf) < 7:
                return frames
            version, kind, seq, length = self._buf[2], self._buf[3], self._buf[4], struct.unpack_from(
                "<H", self._buf, 5)[0]
            error = (BAD_VERSION if version != VERSION else BAD_TYPE if kind not in self.lengths
                     else BAD_LENGTH if length != self.lengths[kind] else 0)
            if error:
                frames.append(Frame(kind, seq, b"", ok=False, error=error))
                del self._buf[:2]  # hunt again right after this sync: a real frame may start inside the header
                continue
            if len(self._buf) < 7 + length + 2:
                return frames
            body = bytes(self._buf[2:7 + length])
            (crc,) = struct.unpack_from("<H", self._buf, 7 + length)
            if crc != crc16(body):
                frames.append(Frame(kind, seq, b"", ok=False, error=BAD_CRC))
                del self._buf[:2]
            else:
                frames.append(Frame(kind, seq, body[5:]))
                del self._buf[:7 + length + 2]


def beat_bytes(lanes, bits):
    """Bytes per packed beat: ``ceil(lanes * bits / 8)``."""
    return -(-lanes * bits // 8)


def pack_beats(codes, lanes, bits):
    """A vector's wire codes (a multiple of ``lanes`` of them) as bytes, beat by beat (module docstring)."""
    codes = [int(c) for c in np.asarray(codes).reshape(-1)]
    if len(codes) % lanes:
        raise HwnetError(f"{len(codes)} codes are not whole beats of {lanes} lanes")
    out = bytearray()
    for k in range(0, len(codes), lanes):
        word = sum((c & ((1 << bits) - 1)) << (j * bits) for j, c in enumerate(codes[k:k + lanes]))
        out += word.to_bytes(beat_bytes(lanes, bits), "little")
    return bytes(out)


def unpack_beats(data, lanes, bits):
    """The wire codes of a packed vector (the inverse of :func:`pack_beats`), as an int64 array."""
    n = beat_bytes(lanes, bits)
    if len(data) % n:
        raise HwnetError(f"{len(data)} bytes are not whole beats of {n} bytes")
    codes = []
    for k in range(0, len(data), n):
        word = int.from_bytes(data[k:k + n], "little")
        codes += [(word >> (j * bits)) & ((1 << bits) - 1) for j in range(lanes)]
    return np.array(codes, dtype=np.int64)


@dataclass(frozen=True)
class DesignInfo:
    """What a board top says about its network (``INFO_REPLY``): the design id (a 32-bit hash of the plan) and the
    shapes of its input and output vectors on the wire."""
    design_id: int
    input_beats: int
    input_lanes: int
    input_bits: int
    output_beats: int
    output_lanes: int
    output_bits: int

    _FORMAT = "<IHHBHHB"

    def encode(self):
        return struct.pack(self._FORMAT, self.design_id, self.input_beats, self.input_lanes, self.input_bits,
                           self.output_beats, self.output_lanes, self.output_bits)

    @classmethod
    def decode(cls, data):
        if len(data) != struct.calcsize(cls._FORMAT):
            raise HwnetError(f"an INFO reply has {struct.calcsize(cls._FORMAT)} bytes, got {len(data)}")
        return cls(*struct.unpack(cls._FORMAT, data))

    @classmethod
    def of_plan(cls, plan):
        """The info of a :class:`~hwnet.compiler.DesignPlan`; the id hashes the network's IR file."""
        from . import ir
        design_id = binascii.crc32(ir.to_bytes(plan.network)) & 0xFFFFFFFF
        return cls(design_id, plan.input_beats, plan.input_lanes, plan.input_type.bits, plan.output_beats,
                   plan.output_lanes, plan.output_type.bits)

    @property
    def input_payload(self):
        return self.input_beats * beat_bytes(self.input_lanes, self.input_bits)

    @property
    def output_payload(self):
        return self.output_beats * beat_bytes(self.output_lanes, self.output_bits)


INFO_BYTES = struct.calcsize(DesignInfo._FORMAT)


def load_payload(image, offset):
    """The ``LOAD`` payload of the chunk of the SPRAM ``image`` (a sequence of 64-bit words) at word ``offset``:
    the offset and :data:`LOAD_WORDS` words, little-endian, zero words past the image's end."""
    words = list(image[offset:offset + LOAD_WORDS])
    words += [0] * (LOAD_WORDS - len(words))
    return struct.pack("<I", offset) + b"".join(int(w).to_bytes(8, "little") for w in words)
