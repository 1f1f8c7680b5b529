"""The byte protocol of the host bridge: one definition for the RTL and the host driver.

:class:`openlpu.rtl.bridge.HostBridge` (gateware) and
:class:`openlpu.host.backends.serial_link.SerialBackend` (host) both import their constants,
frame layout (the ``REQ_*`` and ``RESP_*`` byte offsets) and checksum from here.
``docs/fpga.md`` describes the frames.

Request (host to bridge)::

    SOF | CMD | SEQ | COUNT | ADDR[7:0] | ADDR[15:8] | ADDR[23:16] | ADDR[31:24] | PAYLOAD ... | CRC

``SEQ`` is the request's sequence number (8 bits): a new request gets the next one, a retry
of a request is sent again byte for byte. ``COUNT`` is the number of 32-bit words minus one.
``PAYLOAD`` is the words (little endian) of a ``WRITE`` (``COUNT + 1`` words) or the cycle
limit of a ``WAIT`` (one word, ``COUNT`` = 0); ``READ`` and ``RESET`` (``COUNT`` = 0) have none.
``RESET`` holds the chip's reset for one cycle (every register of the chip back to its reset
value, so a run stops; MEM and the instruction memories keep their contents) and answers ACK:
the host's way to stop a board whose run went over its limits. ``CRC`` is :func:`crc8` of
every byte before it, ``SOF`` included.

Response (bridge to host)::

    ACK | SEQ | DATA ... | CRC   (WRITE, RESET: no data; READ: COUNT + 1 words; WAIT: the STATUS word)
    NAK | SEQ | REASON   | CRC

``SEQ`` echoes the request's (a response whose ``SEQ`` is not the current request's is stale).
``CRC`` is :func:`crc8` of the status byte and the bytes after it. The bridge checks a
request's CRC before it touches the bus, so a corrupted write is never performed. It keeps the
``SEQ`` and ``CRC`` of the last request it executed: a ``WRITE`` that repeats both is a retry
whose answer was lost, and is answered ``ACK`` again without being written a second time
(``READ`` and ``WAIT`` have no side effects, ``RESET`` has the same effect twice: they are
executed again).
"""

from __future__ import annotations

import enum

from . import isa

__all__ = [
    "SOF", "Cmd", "Resp", "NakReason", "MAX_WORDS", "ADDR_BYTES", "HEADER_BYTES", "CRC_POLY",
    "REQ_CMD", "REQ_SEQ", "REQ_COUNT", "REQ_ADDR", "RESP_SEQ", "RESP_DATA", "NAK_LENGTH",
    "RETRYABLE", "crc8", "crc8_update", "encode_request", "encode_response", "parse_response",
    "request_payload_words", "response_length", "ProtocolError", "FrameError", "NakError",
    "LinkError",
]

SOF = 0x5A                   # start of every request frame
CRC_POLY = 0x07              # CRC-8 (x^8 + x^2 + x + 1), initial value 0, no reflection
MAX_WORDS = 64               # words per READ/WRITE frame (the bridge buffers a whole frame)
ADDR_BYTES = (isa.HOST_ADDR_BITS + 7) // 8

# byte offsets in a request frame (SOF at 0); the payload starts at HEADER_BYTES
REQ_CMD = 1
REQ_SEQ = 2
REQ_COUNT = 3
REQ_ADDR = 4
HEADER_BYTES = REQ_ADDR + ADDR_BYTES   # SOF, CMD, SEQ, COUNT, ADDR

# byte offsets in a response frame (status byte at 0)
RESP_SEQ = 1
RESP_DATA = 2                # the first data byte of an ACK, the reason byte of a NAK
NAK_LENGTH = 4               # NAK, SEQ, REASON, CRC


class Cmd(enum.IntEnum):
    """Request commands."""
    WRITE = 0x01             # write COUNT+1 words at ADDR, ADDR+1, ...
    READ = 0x02              # read COUNT+1 words from ADDR, ADDR+1, ...
    WAIT = 0x03              # poll STATUS until DONE (at most PAYLOAD[0] cycles), answer STATUS
    RESET = 0x04             # reset the chip (COUNT = 0, no payload): stops a run, keeps MEM/IMEM


class Resp(enum.IntEnum):
    """Response status bytes."""
    ACK = 0x06
    NAK = 0x15


class NakReason(enum.IntEnum):
    """Why the bridge refused a request (the byte after NAK)."""
    BAD_CRC = 0x01           # checksum mismatch: a byte was corrupted in transit
    BAD_CMD = 0x02           # unknown command byte
    BAD_COUNT = 0x03         # COUNT + 1 > MAX_WORDS, or COUNT != 0 for WAIT or RESET
    TIMEOUT = 0x04           # the frame stopped arriving mid-way (a byte was lost)
    BUS = 0x05               # the chip did not answer a read (no r_valid)
    RUN_TIMEOUT = 0x06       # WAIT: STATUS.DONE not seen within the cycle limit


# NAKs the link itself causes (a request garbled or cut short in transit): the host retries
RETRYABLE = frozenset({NakReason.BAD_CRC, NakReason.TIMEOUT})


class ProtocolError(IOError):
    """A bridge transaction failed."""


class FrameError(ProtocolError):
    """A response frame was corrupted, truncated or malformed."""


class NakError(ProtocolError):
    """The bridge answered NAK; :attr:`reason` is a :class:`NakReason`."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class LinkError(ProtocolError):
    """No valid answer after every allowed retry: the link (or the bridge) is dead.
    :attr:`attempts` is the number of times the request was sent, :attr:`last` the error of
    the last attempt."""

    def __init__(self, message, attempts, last):
        super().__init__(message)
        self.attempts, self.last = attempts, last


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
    return {Cmd.WRITE: count, Cmd.READ: 0, Cmd.WAIT: 1, Cmd.RESET: 0}[Cmd(cmd)]


def encode_request(cmd: Cmd, addr: int = 0, count: int = 1, payload=(), seq: int = 0) -> bytes:
    """Build one request frame (``count`` words, 1..:data:`MAX_WORDS`; sequence number
    ``seq``, 0..255)."""
    cmd = Cmd(cmd)
    if not 1 <= count <= MAX_WORDS:
        raise ValueError(f"word count {count} out of range [1, {MAX_WORDS}]")
    if not 0 <= addr < 1 << isa.HOST_ADDR_BITS:
        raise ValueError(f"host address 0x{addr:x} wider than {isa.HOST_ADDR_BITS} bits")
    if cmd in (Cmd.WRITE, Cmd.READ) and addr + count > 1 << isa.HOST_ADDR_BITS:
        raise ValueError(f"{count} words at 0x{addr:x} run past the end of the address space")
    if cmd in (Cmd.WAIT, Cmd.RESET) and count != 1:
        raise ValueError(f"{cmd.name} takes a word count of 1, not {count}")
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number {seq!r} is not a byte")
    payload = list(payload)
    want = request_payload_words(cmd, count)
    if len(payload) != want:
        raise ValueError(f"{cmd.name} carries {want} payload word(s), not {len(payload)}")
    head = {REQ_CMD: cmd, REQ_SEQ: seq, REQ_COUNT: count - 1}
    frame = bytes([SOF] + [head[i] for i in range(1, REQ_ADDR)]) \
        + addr.to_bytes(ADDR_BYTES, "little") + _words_le(payload)
    assert len(frame) == HEADER_BYTES + 4 * want
    return frame + bytes([crc8(frame)])


def response_length(cmd: Cmd, count: int) -> int:
    """Length of an ACK response (status, seq, data, CRC) to a request of ``count`` words."""
    data_words = {Cmd.WRITE: 0, Cmd.READ: count, Cmd.WAIT: 1, Cmd.RESET: 0}[Cmd(cmd)]
    return RESP_DATA + 1 + 4 * data_words


def encode_response(seq: int, words=(), reason: NakReason | None = None) -> bytes:
    """An ACK with ``words`` (or, with ``reason``, a NAK) answering request ``seq``: what the
    bridge sends (the reference for tests)."""
    if reason is not None:
        body = bytes([Resp.NAK, seq, NakReason(reason)])
    else:
        body = bytes([Resp.ACK, seq]) + _words_le(words)
    return body + bytes([crc8(body)])


def parse_response(frame: bytes, cmd: Cmd, count: int, seq: int, what: str = "") -> list[int]:
    """Check a whole response frame to request (``cmd``, ``count``, ``seq``) and return its
    data words. Raises :class:`FrameError` (bad status byte, length, checksum, or a stale
    ``SEQ``) or :class:`NakError` (a well-formed NAK to this request)."""
    what = what or f"{Cmd(cmd).name} seq {seq}"
    frame = bytes(frame)
    if not frame or frame[0] not in (Resp.ACK, Resp.NAK):
        got = f"0x{frame[0]:02x}" if frame else "nothing"
        raise FrameError(f"{what}: bad response status byte {got} (expected ACK "
                         f"0x{Resp.ACK:02x} or NAK 0x{Resp.NAK:02x})")
    want = NAK_LENGTH if frame[0] == Resp.NAK else response_length(cmd, count)
    if len(frame) != want:
        raise FrameError(f"{what}: response truncated, got {len(frame)} of {want} bytes "
                         f"(no answer from the bridge, or a byte was lost)")
    if crc8(frame[:-1]) != frame[-1]:
        raise FrameError(f"{what}: response checksum mismatch (a byte was corrupted or "
                         f"duplicated on the way back)")
    if frame[RESP_SEQ] != seq:
        raise FrameError(f"{what}: stale response (sequence number {frame[RESP_SEQ]}, "
                         f"expected {seq})")
    if frame[0] == Resp.NAK:
        try:
            reason = NakReason(frame[RESP_DATA])
        except ValueError:
            raise FrameError(f"{what}: NAK with unknown reason 0x{frame[RESP_DATA]:02x}") from None
        raise NakError(reason, f"{what}: bridge answered NAK {reason.name}"
                       + (" (the request was corrupted in transit)"
                          if reason == NakReason.BAD_CRC else ""))
    body = frame[RESP_DATA:-1]
    return [int.from_bytes(body[4 * i:4 * i + 4], "little") for i in range(len(body) // 4)]
