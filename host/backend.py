"""The backend interface of the host driver.

A backend moves 32-bit words over the host bus of one device: the reference model, the RTL in
Amaranth's simulator, the RTL compiled by Verilator, or an FPGA behind a serial bridge. The
:class:`~openlpu.host.device.Device` only talks to this interface, so the same driver code runs
on every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from openlpu import isa
from openlpu.hostmap import reg_addr
from openlpu.params import LpuParams

__all__ = ["Backend", "DeviceTimeout"]


class DeviceTimeout(TimeoutError):
    """The device did not report DONE within the allowed number of cycles."""


class Backend(ABC):
    """One device reachable over the host bus."""

    name = "abstract"

    def __init__(self, params: LpuParams):
        self.params = params

    @abstractmethod
    def write(self, addr: int, data: int) -> None:
        """Write one 32-bit word at host address ``addr``."""

    @abstractmethod
    def read(self, addr: int) -> int:
        """Read one 32-bit word from host address ``addr``."""

    def write_many(self, pairs) -> None:
        """Write ``(addr, data)`` pairs in order (backends may batch them)."""
        for addr, data in pairs:
            self.write(addr, data)

    def read_many(self, addrs) -> list[int]:
        return [self.read(a) for a in addrs]

    def run(self, max_cycles: int) -> None:
        """Start the loaded program and return when ``STATUS.DONE`` is set.

        Raises :class:`DeviceTimeout` if the device is still running after ``max_cycles``
        clock cycles. Backends override this with a loop that does not involve Python per
        cycle where they can.
        """
        self.write(reg_addr(isa.HostReg.CTRL), isa.Ctrl.START)
        waited = 0
        while not self.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.DONE:
            waited += 1 + isa.HOST_READ_LATENCY
            if waited > max_cycles:
                raise DeviceTimeout(f"{self.name}: not done after {max_cycles} cycles")

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
