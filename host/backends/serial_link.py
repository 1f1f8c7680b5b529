"""Serial backend: the host bus of an FPGA (or a simulation) behind a :class:`HostBridge`.

:class:`SerialBackend` speaks the frame protocol of :mod:`openlpu.bridge_proto` over a byte
transport: a pyserial port (pass its name, e.g. ``"/dev/ttyUSB0"``), or any object with
``write(data: bytes)`` and ``read(n: int) -> bytes`` (``read`` may return fewer bytes when it
times out, as pyserial does). An optional ``reset_input_buffer()`` drops stale input bytes
(before every request and after an error); an optional ``drain()`` waits until the bridge is
idle (otherwise the backend sleeps ``recover_s``).

Every request carries a sequence number; a request that fails in transit (a corrupted,
truncated, duplicated or stale response, no answer, or ``NAK BAD_CRC`` / ``NAK TIMEOUT``) is
sent again, byte for byte, up to ``retries`` times. The bridge recognises a repeated ``WRITE``
and answers it without writing again, so a write is applied exactly once. :meth:`~SerialBackend.
reset` resets the chip through the bridge (``RESET``), so a run over its limits is stopped on
the board as on the simulators.
"""

from __future__ import annotations

import os
import time

from openlpu import bridge_proto as proto
from openlpu import isa
from openlpu.bridge_proto import (Cmd, FrameError, LinkError, NakError, NakReason,
                                  ProtocolError, Resp)
from openlpu.hostmap import reg_addr
from openlpu.params import LpuParams

from ..backend import Backend, run_limits

__all__ = ["SerialBackend", "ConfigMismatch", "ProtocolError", "FrameError", "NakError",
           "LinkError", "DEFAULT_BAUD", "DEFAULT_RETRIES", "WAIT_CHUNK_CYCLES"]

DEFAULT_BAUD = 115200
DEFAULT_RETRIES = 4             # extra attempts of a request that failed in transit
WAIT_CHUNK_CYCLES = 1 << 20     # cycles one WAIT request lets the bridge poll (10-90 ms on a board)


class ConfigMismatch(ProtocolError):
    """The device is not an OpenLPU, or was built for a different parameter set."""


class SerialBackend(Backend):
    """OpenLPU host bus over the bridge protocol.

    Parameters
    ----------
    params : LpuParams
        The parameter set the device must have been built with.
    port_or_transport : str or transport object
        A serial port name (opened with pyserial at ``baudrate``) or a byte transport.
    baudrate : int
        Serial baud rate (only when a port name is given).
    timeout : float
        Seconds to wait for a response byte (only when a port name is given).
    run_timeout : float
        Seconds to wait for the answer to one ``WAIT`` request (the bridge answers after at
        most ``wait_chunk`` cycles); no answer counts as a failed attempt.
    retries : int
        Extra attempts of a request that failed in transit (0: none); then
        :class:`~openlpu.bridge_proto.LinkError`.
    wait_chunk : int
        Cycle limit of one ``WAIT`` request (:meth:`run` sends as many as it needs).
    recover_s : float
        Seconds to let the bridge's inter-byte timeout expire after an error (when the
        transport has no ``drain()``).
    check : bool
        Read ``ID`` and ``CONFIG_ID`` on connect and raise :class:`ConfigMismatch` unless they
        are :data:`openlpu.isa.CHIP_ID` and ``params.config_id`` (without it, ``ID`` is still
        read once, so that the bridge has seen this session's sequence numbers).
    first_seq : int, optional
        Sequence number of the first request (default: random).

    Attributes
    ----------
    frames : int
        Request frames sent (retries included).
    retried : int
        Requests sent again after a failed attempt.

    Raises
    ------
    NakError
        The bridge refused a request for a reason retrying cannot fix (``BAD_CMD``,
        ``BAD_COUNT``, ``BUS``), or ``retries`` is 0.
    FrameError
        A response was corrupted, truncated or malformed, and ``retries`` is 0.
    LinkError
        No valid answer after ``retries`` retries.
    """

    name = "serial"

    def __init__(self, params: LpuParams, port_or_transport, *, baudrate: int = DEFAULT_BAUD,
                 timeout: float = 1.0, run_timeout: float = 10.0, retries: int = DEFAULT_RETRIES,
                 wait_chunk: int = WAIT_CHUNK_CYCLES, recover_s: float = 0.05,
                 check: bool = True, first_seq: int | None = None):
        if not isinstance(params, LpuParams):
            raise TypeError(f"params must be an LpuParams, not {type(params).__name__}")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
            raise ValueError(f"retries must be an int in [0, 100], not {retries!r}")
        if isinstance(wait_chunk, bool) or not isinstance(wait_chunk, int) \
                or not 1 <= wait_chunk < 1 << 32:
            raise ValueError(f"wait_chunk must be an int in [1, 2**32), not {wait_chunk!r}")
        for arg, v in (("run_timeout", run_timeout), ("recover_s", recover_s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
                raise ValueError(f"{arg} must be a number of seconds in (0, 3600], not {v!r}")
        super().__init__(params)
        self._owns = False
        if isinstance(port_or_transport, str):
            try:
                import serial
            except ImportError as e:  # pragma: no cover - pyserial is a declared dependency
                raise ImportError("the serial backend needs pyserial (pip install pyserial)") from e
            self.transport = serial.Serial(port_or_transport, baudrate=baudrate, timeout=timeout)
            self._owns = True
        else:
            for meth in ("read", "write"):
                if not callable(getattr(port_or_transport, meth, None)):
                    raise TypeError(f"transport {port_or_transport!r} has no {meth}() method")
            self.transport = port_or_transport
        self.frames = 0
        self.retried = 0
        self.retries = retries
        self.run_timeout = float(run_timeout)
        self.wait_chunk = wait_chunk
        self.recover_s = float(recover_s)
        if first_seq is not None and not (isinstance(first_seq, int) and 0 <= first_seq <= 0xFF):
            raise ValueError(f"first_seq must be a byte or None, not {first_seq!r}")
        # a fresh session's numbers (random unless given, for reproducible tests): see `check`
        self._seq = (os.urandom(1)[0] if first_seq is None else first_seq - 1) & 0xFF
        if check:
            self.check_identity()
        else:
            self.read(reg_addr(isa.HostReg.ID))

    # -- identity ------------------------------------------------------------------------
    def check_identity(self) -> None:
        """Raise :class:`ConfigMismatch` unless the device is an OpenLPU built for ``params``."""
        chip_id, config_id = self.read_many([reg_addr(isa.HostReg.ID),
                                             reg_addr(isa.HostReg.CONFIG_ID)])
        if chip_id != isa.CHIP_ID:
            raise ConfigMismatch(f"device ID is 0x{chip_id:08x}, not an OpenLPU "
                                 f"(expected 0x{isa.CHIP_ID:08x})")
        if config_id != self.params.config_id:
            raise ConfigMismatch(f"device CONFIG_ID is 0x{config_id:08x}, but preset "
                                 f"{self.params.name!r} has 0x{self.params.config_id:08x}: "
                                 f"the bitstream was built for another parameter set")

    # -- frames --------------------------------------------------------------------------
    def _flush(self):
        """Drop input bytes that arrived outside a transaction (stale or duplicated)."""
        reset = getattr(self.transport, "reset_input_buffer", None)
        if callable(reset):
            reset()

    def _recover(self):
        """After an error, let the bridge's inter-byte timeout expire and drop stale bytes."""
        drain = getattr(self.transport, "drain", None)
        if callable(drain):
            drain()
        else:
            time.sleep(self.recover_s)
        self._flush()

    def _read(self, n: int) -> bytes:
        return bytes(self.transport.read(n)) if n > 0 else b""

    def _response(self, cmd: Cmd, count: int, seq: int, what: str, deadline) -> list[int]:
        """Read and check the response to request ``seq``."""
        if cmd == Cmd.WAIT:              # the answer comes when the chip is done or the chunk ends
            until = time.monotonic() + self.run_timeout
            if deadline is not None:
                until = min(until, deadline)
            first = b""
            while not first and time.monotonic() < until:
                first = self._read(1)
            if not first:
                raise FrameError(f"{what}: no answer to WAIT in time")
        else:
            first = self._read(1)
        if not first:
            raise FrameError(f"{what}: no answer from the bridge")
        n = proto.NAK_LENGTH if first[0] == Resp.NAK else proto.response_length(cmd, count)
        frame = first + (self._read(n - 1) if first[0] in (Resp.ACK, Resp.NAK) else b"")
        return proto.parse_response(frame, cmd, count, seq, what)

    def _transact(self, cmd: Cmd, addr: int, count: int, payload=(), deadline=None) -> list[int]:
        """One request, sent again (same sequence number, same bytes) after a failure in
        transit, at most ``retries`` times."""
        self._seq = seq = (self._seq + 1) & 0xFF
        frame = proto.encode_request(cmd, addr, count, payload, seq=seq)
        what = f"{cmd.name} of {count} word(s) at 0x{addr:06x}"
        last, attempts = None, 0
        for attempt in range(1 + self.retries):
            if attempt:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.retried += 1
            attempts += 1
            self._flush()
            self.transport.write(frame)
            self.frames += 1
            try:
                return self._response(cmd, count, seq, what, deadline)
            except NakError as e:
                if e.reason not in proto.RETRYABLE:
                    raise
                last = e
            except FrameError as e:
                last = e
            self._recover()
        if not self.retries:
            raise last
        maybe = " (the write may or may not have been applied)" if cmd == Cmd.WRITE else ""
        raise LinkError(f"{what}: no valid answer after {attempts} attempt(s), the link or the "
                        f"bridge is not working{maybe} (last error: {last})", attempts, last)

    @staticmethod
    def _runs(addrs):
        """Split addresses into runs of consecutive addresses, at most MAX_WORDS long."""
        runs = []
        for i, a in enumerate(addrs):
            if runs and a == runs[-1][0] + runs[-1][1] and runs[-1][1] < proto.MAX_WORDS:
                runs[-1][1] += 1
                runs[-1][2].append(i)
            else:
                runs.append([a, 1, [i]])
        return runs

    # -- Backend interface ---------------------------------------------------------------
    def write(self, addr: int, data: int) -> None:
        self._transact(Cmd.WRITE, addr, 1, [data])

    def read(self, addr: int) -> int:
        return self._transact(Cmd.READ, addr, 1)[0]

    def write_many(self, pairs) -> None:
        pairs = list(pairs)
        addrs = [int(a) for a, _ in pairs]
        for start, n, idx in self._runs(addrs):
            self._transact(Cmd.WRITE, start, n, [int(pairs[i][1]) for i in idx])

    def read_many(self, addrs) -> list[int]:
        addrs = [int(a) for a in addrs]
        out = [0] * len(addrs)
        for start, n, idx in self._runs(addrs):
            for i, v in zip(idx, self._transact(Cmd.READ, start, n)):
                out[i] = v
        return out

    def reset(self) -> None:
        """Reset the chip through the bridge (``RESET`` request): every register of the chip
        goes back to its reset value, so a run in progress stops; MEM and the instruction
        memories keep their contents. The bridge itself is not reset."""
        self._transact(Cmd.RESET, 0, 1)

    def run(self, max_cycles: int, timeout_s: float | None = None) -> None:
        """Start the program and let the bridge poll ``STATUS.DONE``: ``WAIT`` requests of at
        most ``wait_chunk`` cycles each, until DONE, ``max_cycles`` cycles in all
        (:class:`CycleLimitExceeded`) or ``timeout_s`` seconds (:class:`WallClockTimeout`);
        the wall clock is checked between the requests. ``last_run_cycles`` is the cycles of
        the WAIT chunks that ended without DONE (a lower bound; ``CYCLES`` has the count)."""
        lim = run_limits(max_cycles, timeout_s)
        self.write(reg_addr(isa.HostReg.CTRL), isa.Ctrl.START)
        n = 0
        while True:
            if n >= lim.max_cycles or lim.expired():
                raise lim.timeout(self.name, n)
            chunk = min(self.wait_chunk, lim.max_cycles - n)
            try:
                self._transact(Cmd.WAIT, 0, 1, [chunk], deadline=lim.deadline)
            except NakError as e:
                if e.reason != NakReason.RUN_TIMEOUT:
                    raise
                n += chunk
                continue
            except ProtocolError:
                if lim.expired():             # the deadline passed while the link retried
                    raise lim.timeout(self.name, n) from None
                raise
            break
        self.last_run_cycles = n

    def close(self) -> None:
        if self._owns:
            self.transport.close()
            self._owns = False
