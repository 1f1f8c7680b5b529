"""Serial backend: the host bus of an FPGA (or a simulation) behind a :class:`HostBridge`.

:class:`SerialBackend` speaks the frame protocol of :mod:`openlpu.bridge_proto` over a byte
transport: a pyserial port (pass its name, e.g. ``"/dev/ttyUSB0"``), or any object with
``write(data: bytes)`` and ``read(n: int) -> bytes`` (``read`` may return fewer bytes when it
times out, as pyserial does). An optional ``reset_input_buffer()`` is used to drop stale
bytes after an error.
"""

from __future__ import annotations

import time

from openlpu import bridge_proto as proto
from openlpu import isa
from openlpu.bridge_proto import Cmd, FrameError, NakError, NakReason, ProtocolError, Resp
from openlpu.hostmap import reg_addr
from openlpu.params import LpuParams

from ..backend import Backend, DeviceTimeout

__all__ = ["SerialBackend", "ConfigMismatch", "ProtocolError", "FrameError", "NakError",
           "DEFAULT_BAUD"]

DEFAULT_BAUD = 115200


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
        Seconds :meth:`run` waits for the bridge's answer to ``WAIT`` (the chip computes
        meanwhile; the cycle limit itself is enforced by the bridge).
    check : bool
        Read ``ID`` and ``CONFIG_ID`` on connect and raise :class:`ConfigMismatch` unless they
        are :data:`openlpu.isa.CHIP_ID` and ``params.config_id``.

    Raises
    ------
    NakError
        The bridge refused a request (its reason is in the message and in ``.reason``).
    FrameError
        A response was corrupted, truncated or malformed.
    """

    name = "serial"

    def __init__(self, params: LpuParams, port_or_transport, *, baudrate: int = DEFAULT_BAUD,
                 timeout: float = 1.0, run_timeout: float = 120.0, check: bool = True):
        if not isinstance(params, LpuParams):
            raise TypeError(f"params must be an LpuParams, not {type(params).__name__}")
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
        self.run_timeout = run_timeout
        if check:
            self.check_identity()

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
    def _recover(self):
        """After an error, let the bridge's inter-byte timeout expire and drop stale bytes."""
        drain = getattr(self.transport, "drain", None)
        if callable(drain):
            drain()
        else:
            time.sleep(0.05)
        reset = getattr(self.transport, "reset_input_buffer", None)
        if callable(reset):
            reset()

    def _read_exact(self, n: int, what: str) -> bytes:
        data = bytes(self.transport.read(n))
        if len(data) != n:
            raise FrameError(f"{what}: response truncated, got {len(data)} of {n} bytes "
                             f"(no answer from the bridge, or a byte was lost)")
        return data

    def _transact(self, cmd: Cmd, addr: int, count: int, payload=()) -> list[int]:
        frame = proto.encode_request(cmd, addr, count, payload)
        what = f"{cmd.name} of {count} word(s) at 0x{addr:06x}"
        self.transport.write(frame)
        self.frames += 1
        try:
            if cmd == Cmd.WAIT:              # the answer comes when the chip is done
                deadline = time.monotonic() + self.run_timeout
                first = b""
                while not first and time.monotonic() < deadline:
                    first = bytes(self.transport.read(1))
                if not first:
                    raise FrameError(f"{what}: no answer within {self.run_timeout} s")
                status = first[0]
            else:
                status = self._read_exact(1, what)[0]
            if status == Resp.NAK:
                rest = self._read_exact(2, what)
                if proto.crc8(bytes([status, rest[0]])) != rest[1]:
                    raise FrameError(f"{what}: NAK response with a bad checksum")
                try:
                    reason = NakReason(rest[0])
                except ValueError:
                    raise FrameError(f"{what}: NAK with unknown reason 0x{rest[0]:02x}") from None
                raise NakError(reason, f"{what}: bridge answered NAK {reason.name}"
                               + (" (the request was corrupted in transit)"
                                  if reason == NakReason.BAD_CRC else ""))
            if status != Resp.ACK:
                raise FrameError(f"{what}: bad response status byte 0x{status:02x} "
                                 f"(expected ACK 0x{Resp.ACK:02x} or NAK 0x{Resp.NAK:02x})")
            rest = self._read_exact(proto.response_length(cmd, count) - 1, what)
            if proto.crc8(bytes([status]) + rest[:-1]) != rest[-1]:
                raise FrameError(f"{what}: response checksum mismatch "
                                 f"(a byte was corrupted on the way back)")
        except ProtocolError:
            self._recover()
            raise
        body = rest[:-1]
        return [int.from_bytes(body[4 * i:4 * i + 4], "little") for i in range(len(body) // 4)]

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

    def run(self, max_cycles: int) -> None:
        """Start the program and let the bridge poll ``STATUS.DONE`` (at most ``max_cycles``)."""
        if not 0 < max_cycles < 1 << 32:
            raise ValueError(f"max_cycles must be in [1, 2**32), not {max_cycles!r}")
        self.write(reg_addr(isa.HostReg.CTRL), isa.Ctrl.START)
        try:
            self._transact(Cmd.WAIT, 0, 1, [max_cycles])
        except NakError as e:
            if e.reason == NakReason.RUN_TIMEOUT:
                raise DeviceTimeout(f"{self.name}: not done after {max_cycles} cycles") from None
            raise

    def close(self) -> None:
        if self._owns:
            self.transport.close()
            self._owns = False
