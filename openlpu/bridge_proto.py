"""The byte protocol of the host bridge: one definition for the RTL and the host driver.

:class:`openlpu.rtl.bridge.HostBridge` (gateware) and
:class:`openlpu.host.backends.serial_link.SerialBackend` (host) both import their constants,
frame layout and checksum from here. ``docs/fpga.md`` describes the frames.

Request (host to bridge)::

    SOF | CMD | COUNT | ADDR[7:0] | ADDR[15:8] | ADDR[23:16] | ADDR[31:24] | PAYLOAD ... | CRC

``COUNT`` is the number of 32-bit words minus one. ``PAYLOAD`` is the words (little endian)
of a ``WRITE`` (``COUNT + 1`` words) or the cycle limit of a ``WAIT`` (one word, ``COUNT`` = 0);
``READ`` has none. ``CRC`` is :func:`crc8` of every byte before it, ``SOF`` included.

Response (bridge to host)::

    ACK | DATA ... | CRC        (WRITE: no data; READ: COUNT + 1 words; WAIT: the STATUS word)
    NAK | REASON   | CRC

``CRC`` is :func:`crc8` of the status byte and the bytes after it. The bridge checks a
request's CRC before it touches the bus, so a corrupted write is never performed.
"""

from __future__ import annotations

import enum

from . import isa

__all__ = [
    "SOF", "Cmd", "Resp", "NakReason", "MAX_WORDS", "ADDR_BYTES", "HEADER_BYTES", "CRC_POLY",
    "crc8", "crc8_update", "encode_request", "request_payload_words", "response_length",
    "ProtocolError", "FrameError", "NakError",
]

SOF = 0x5A                   # start of every request frame
CRC_POLY = 0x07              # CRC-8 (x^8 + x^2 + x + 1), initial value 0, no reflection
MAX_WORDS = 64               # words per READ/WRITE frame (the bridge buffers a whole frame)
ADDR_BYTES = (isa.HOST_ADDR_BITS + 7) // 8
HEADER_BYTES = 3 + ADDR_BYTES  # SOF, CMD, COUNT, ADDR


class Cmd(enum.IntEnum):
    """Request commands."""
    WRITE = 0x01             # write COUNT+1 words at ADDR, ADDR+1, ...
    READ = 0x02              # read COUNT+1 words from ADDR, ADDR+1, ...
    WAIT = 0x03              # poll STATUS until DONE (at most PAYLOAD[0] cycles), answer STATUS


class Resp(enum.IntEnum):
    """Response status bytes."""
    ACK = 0x06
    NAK = 0x15


class NakReason(enum.IntEnum):
    """Why the bridge refused a request (the byte after NAK)."""
    BAD_CRC = 0x01           # checksum mismatch: a byte was corrupted in transit
    BAD_CMD = 0x02           # unknown command byte
    BAD_COUNT = 0x03         # COUNT + 1 > MAX_WORDS, or COUNT != 0 for WAIT
    TIMEOUT = 0x04           # the frame stopped arriving mid-way (a byte was lost)
    BUS = 0x05               # the chip did not answer a read (no r_valid)
    RUN_TIMEOUT = 0x06       # WAIT: STATUS.DONE not seen within the cycle limit


class ProtocolError(IOError):
    """A bridge transaction failed."""


class FrameError(ProtocolError):
    """A response frame was corrupted, truncated or malformed."""


class NakError(ProtocolError):
    """The bridge answered NAK; :attr:`reason` is a :class:`NakReason`."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def crc8_update(crc: int, byte: int) -> int:
    """One byte of the CRC-8 (polynomial :data:`CRC_POLY`, MSB first)."""
    crc ^= byte & 0xFF
    for _ in range(8):
        crc = ((crc << 1) ^ CRC_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc8(data, crc: int = 0) -> int:
    """CRC-8 of a byte sequence."""
    for b in data:
        crc = crc8_update(crc, b)
    return crc


def _words_le(words) -> bytes:
    out = bytearray()
    for w in words:
        w = int(w)
        if not 0 <= w < 1 << 32:
            raise ValueError(f"data word {w!r} is not a 32-bit unsigned value")
        out += w.to_bytes(4, "little")
    return bytes(out)


def request_payload_words(cmd: Cmd, count: int) -> int:
    """Payload words a request carries."""
    return {Cmd.WRITE: count, Cmd.READ: 0, Cmd.WAIT: 1}[Cmd(cmd)]


def encode_request(cmd: Cmd, addr: int = 0, count: int = 1, payload=()) -> bytes:
    """Build one request frame (``count`` words, 1..:data:`MAX_WORDS`)."""
    cmd = Cmd(cmd)
    if not 1 <= count <= MAX_WORDS:
        raise ValueError(f"word count {count} out of range [1, {MAX_WORDS}]")
    if not 0 <= addr < 1 << isa.HOST_ADDR_BITS:
        raise ValueError(f"host address 0x{addr:x} wider than {isa.HOST_ADDR_BITS} bits")
    if cmd in (Cmd.WRITE, Cmd.READ) and addr + count > 1 << isa.HOST_ADDR_BITS:
        raise ValueError(f"{count} words at 0x{addr:x} run past the end of the address space")
    payload = list(payload)
    want = request_payload_words(cmd, count)
    if len(payload) != want:
        raise ValueError(f"{cmd.name} carries {want} payload word(s), not {len(payload)}")
    frame = bytes([SOF, cmd, count - 1]) + addr.to_bytes(ADDR_BYTES, "little") + _words_le(payload)
    return frame + bytes([crc8(frame)])


def response_length(cmd: Cmd, count: int) -> int:
    """Length of an ACK response (status, data, CRC) to a request of ``count`` words."""
    data_words = {Cmd.WRITE: 0, Cmd.READ: count, Cmd.WAIT: 1}[Cmd(cmd)]
    return 2 + 4 * data_words
