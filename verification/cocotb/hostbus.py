"""cocotb-side driver of the chip's host bus (ports ``host__*``, ``running``, ``done``).

All bus activity happens on falling clock edges: inputs set at a falling edge are sampled at
the next rising edge, and outputs read at a falling edge are the values registered at the
rising edge before it. So one transaction step is one clock cycle, exactly as in the C++
harness of the Verilator backend (``host/backends/harness.cpp``):

* write: ``w_en`` with ``addr``/``w_data`` for one cycle;
* read: ``r_en`` with ``addr`` for one cycle; ``r_valid`` must be low in between and high
  exactly ``HOST_READ_LATENCY`` cycles later, with ``r_data``;
* run: write ``CTRL.START``, then wait (without Python per cycle) for ``done`` to rise.
"""

from __future__ import annotations

import os

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

from openlpu import isa
from openlpu.hostmap import reg_addr
from openlpu.params import LpuParams, preset

__all__ = ["HostBus", "params_from_env", "CLOCK_NS"]

CLOCK_NS = 10


def params_from_env() -> LpuParams:
    """The chip parameters handed over by ``sim_runner.run_cocotb``."""
    if "OPENLPU_PARAMS" in os.environ:
        return LpuParams.from_json(os.environ["OPENLPU_PARAMS"])
    return preset(os.environ.get("OPENLPU_PRESET", "tiny"))


class HostBus:
    """Host-bus master for a ``lpu_chip`` top level.

    Create it with :meth:`start`, which starts the clock and resets the chip.
    """

    def __init__(self, dut):
        self.dut = dut
        self.clk = dut.clk
        self.last_run_cycles = 0

    @classmethod
    async def start(cls, dut, reset_cycles: int = 2) -> "HostBus":
        bus = cls(dut)
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        await bus.reset(reset_cycles)
        return bus

    def _idle(self):
        self.dut.host__w_en.value = 0
        self.dut.host__r_en.value = 0

    async def reset(self, cycles: int = 2) -> None:
        """Hold the synchronous ``rst`` for ``cycles`` (>= 2) rising edges."""
        if cycles < 2:
            raise ValueError(f"reset must be held at least 2 cycles, not {cycles}")
        self._idle()
        self.dut.host__addr.value = 0
        self.dut.host__w_data.value = 0
        self.dut.rst.value = 1
        await FallingEdge(self.clk)
        for _ in range(cycles):
            await FallingEdge(self.clk)
        self.dut.rst.value = 0

    async def tick(self, cycles: int = 1) -> None:
        self._idle()
        for _ in range(cycles):
            await FallingEdge(self.clk)

    async def write(self, addr: int, data: int) -> None:
        self.dut.host__addr.value = int(addr)
        self.dut.host__w_data.value = int(data) & 0xFFFFFFFF
        self.dut.host__w_en.value = 1
        await FallingEdge(self.clk)
        self.dut.host__w_en.value = 0

    async def read(self, addr: int) -> int:
        self.dut.host__addr.value = int(addr)
        self.dut.host__r_en.value = 1
        await FallingEdge(self.clk)
        self.dut.host__r_en.value = 0
        for i in range(1, isa.HOST_READ_LATENCY):
            assert not int(self.dut.host__r_valid.value), \
                f"read 0x{addr:x}: r_valid after {i} cycles, expected {isa.HOST_READ_LATENCY}"
            await FallingEdge(self.clk)
        assert int(self.dut.host__r_valid.value), \
            f"read 0x{addr:x}: no r_valid {isa.HOST_READ_LATENCY} cycles after r_en"
        return self.dut.host__r_data.value.to_unsigned()

    async def write_many(self, pairs) -> None:
        for addr, data in pairs:
            await self.write(addr, data)

    async def read_many(self, addrs) -> list[int]:
        return [await self.read(a) for a in addrs]

    async def reg(self, reg: isa.HostReg) -> int:
        return await self.read(reg_addr(reg))

    async def run(self, max_cycles: int) -> int:
        """Start the loaded program and wait for ``done``; returns the cycles from the START
        write to ``done`` (the C++ harness counts the same): the program's CYCLES plus
        :func:`openlpu.isa.start_delay` (the registered START and issue). Fails after
        ``max_cycles``."""
        await self.write(reg_addr(isa.HostReg.CTRL), int(isa.Ctrl.START))
        t0 = get_sim_time("ns")
        if not int(self.dut.done.value):
            try:
                await with_timeout(RisingEdge(self.dut.done), max_cycles * CLOCK_NS, "ns")
            except SimTimeoutError:
                raise AssertionError(f"chip not done after {max_cycles} cycles") from None
            # t0 is a falling edge, done rises at a rising edge
            self.last_run_cycles = round((get_sim_time("ns") - t0) / CLOCK_NS + 0.5)
            await FallingEdge(self.clk)
        else:
            self.last_run_cycles = 0
        return self.last_run_cycles

    async def run_package(self, pkg, inputs: dict) -> dict:
        """Load ``pkg`` and ``inputs``, run, check ERRORS == 0 and CYCLES == the prediction,
        and return the output tensors (``{name: array}``)."""
        from openlpu.host.image import assemble_outputs, input_writes, load_writes, output_reads
        await self.write_many(load_writes(pkg))
        await self.write_many(input_writes(pkg, inputs))
        cycles = await self.run(max_cycles=10 * pkg.predicted_cycles + 1000)
        assert await self.reg(isa.HostReg.ERRORS) == 0, "chip raised error flags"
        measured = await self.reg(isa.HostReg.CYCLES)
        assert measured == pkg.predicted_cycles, \
            f"CYCLES {measured} != predicted {pkg.predicted_cycles}"
        assert cycles == measured + isa.start_delay(pkg.params), \
            f"START to DONE took {cycles} cycles, CYCLES {measured} + start delay " \
            f"{isa.start_delay(pkg.params)}"
        return assemble_outputs(pkg, await self.read_many(output_reads(pkg)))
