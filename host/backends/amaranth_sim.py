"""Host-driver backend running the chip's RTL in Amaranth's Python simulator.

Bus transactions are performed synchronously from ordinary method calls: each call queues a
command for a background testbench and steps the simulator with ``Simulator.advance()`` until
the testbench has executed it. The testbench follows the host bus protocol of
``docs/architecture.md``: a write drives ``w_en`` for one cycle (it takes effect at that
edge); a read drives ``r_en`` for one cycle and takes ``r_data`` when ``r_valid`` is set,
exactly ``HOST_READ_LATENCY`` cycles later. Between commands the bus idles one cycle at a time.

This backend runs Python for every cycle: use it for small presets and short programs, and
:class:`~openlpu.host.backends.verilator_sim.VerilatorBackend` for long runs.

Set ``OPENLPU_VCD=<path>`` (or pass ``vcd=``) to record a VCD of the whole session; the file
is complete after :meth:`AmaranthBackend.close`.
"""

from __future__ import annotations

import os
from collections import deque

from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from openlpu import isa
from openlpu.hostmap import reg_addr
from openlpu.params import LpuParams

from ..backend import Backend, BackendClosed, run_limits

__all__ = ["AmaranthBackend"]

CLOCK_PERIOD = 1e-8


class _Command:
    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn):
        self.fn = fn
        self.done = False
        self.result = None
        self.error = None


class AmaranthBackend(Backend):
    """The chip in ``amaranth.sim``, driven cycle by cycle from a background testbench.

    Parameters
    ----------
    params : LpuParams
        Chip configuration; the design is ``LpuChip(params)``.
    chip : wiring.Component, optional
        Design to simulate instead, with the same members ``host``, ``running``, ``done``.
    vcd : str, optional
        VCD file to write (default: ``$OPENLPU_VCD`` if set).
    reset_cycles : int
        Cycles the synchronous reset is held at creation and by :meth:`reset` (at least 2).

    Attributes
    ----------
    last_run_cycles : int
        Cycles ticked by the last :meth:`run` from the START write to ``done``.
    """

    name = "amaranth"

    def __init__(self, params: LpuParams, *, chip=None, vcd: str | None = None,
                 reset_cycles: int = 2):
        super().__init__(params)
        if reset_cycles < 2:
            raise ValueError(f"reset_cycles must be >= 2, not {reset_cycles}")
        if chip is None:
            from openlpu.rtl.chip import LpuChip
            chip = LpuChip(params)
        self.chip = chip
        self._reset_cycles = reset_cycles
        self._queue: deque[_Command] = deque()
        self._ticks = 0
        self.last_run_cycles = 0
        self._closed = False
        top = Module()
        top.domains.sync = self._domain = ClockDomain("sync")
        top.submodules.chip = chip
        self._sim = Simulator(top)
        self._sim.add_clock(CLOCK_PERIOD)
        self._sim.add_testbench(self._bus_process, background=True)
        vcd = vcd or os.environ.get("OPENLPU_VCD")
        self._vcd = None
        if vcd:
            self._vcd = self._sim.write_vcd(vcd)
            self._vcd.__enter__()
        self.reset()

    # -- the testbench side -----------------------------------------------------------------
    async def _bus_process(self, ctx):
        while True:
            if self._queue:
                cmd = self._queue.popleft()
                try:
                    cmd.result = await cmd.fn(ctx)
                except Exception as exc:          # handed to the caller
                    cmd.error = exc
                cmd.done = True
            else:
                await self._tick(ctx)

    async def _tick(self, ctx, n: int = 1):
        for _ in range(n):
            await ctx.tick()
            self._ticks += 1

    def _do(self, fn):
        if self._closed:
            raise BackendClosed("amaranth backend is closed")
        cmd = _Command(fn)
        self._queue.append(cmd)
        while not cmd.done:
            self._sim.advance()
        if cmd.error is not None:
            raise cmd.error
        return cmd.result

    async def _write(self, ctx, addr, data):
        bus = self.chip.host
        ctx.set(bus.addr, addr)
        ctx.set(bus.w_data, data)
        ctx.set(bus.w_en, 1)
        await self._tick(ctx)
        ctx.set(bus.w_en, 0)

    async def _read(self, ctx, addr):
        bus = self.chip.host
        ctx.set(bus.addr, addr)
        ctx.set(bus.r_en, 1)
        await self._tick(ctx)
        ctx.set(bus.r_en, 0)
        for _ in range(1, isa.HOST_READ_LATENCY):
            if ctx.get(bus.r_valid):
                raise RuntimeError(f"host read of 0x{addr:x}: r_valid early (expected exactly "
                                   f"{isa.HOST_READ_LATENCY} cycles after r_en)")
            await self._tick(ctx)
        if not ctx.get(bus.r_valid):
            raise RuntimeError(f"host read of 0x{addr:x}: r_valid missing "
                               f"{isa.HOST_READ_LATENCY} cycles after r_en")
        return ctx.get(bus.r_data)

    # -- the Backend interface --------------------------------------------------------------
    def reset(self) -> None:
        """Hold the synchronous reset for ``reset_cycles`` cycles."""
        async def fn(ctx):
            ctx.set(self._domain.rst, 1)
            await self._tick(ctx, self._reset_cycles)
            ctx.set(self._domain.rst, 0)
        self._do(fn)

    def tick(self, cycles: int = 1) -> None:
        """Clock ``cycles`` idle cycles."""
        async def fn(ctx):
            await self._tick(ctx, int(cycles))
        self._do(fn)

    @property
    def ticks(self) -> int:
        """Clock cycles simulated since creation."""
        return self._ticks

    def write(self, addr: int, data: int) -> None:
        addr, data = _check(addr, data)
        self._do(lambda ctx: self._write(ctx, addr, data))

    def read(self, addr: int) -> int:
        addr, _ = _check(addr, 0)
        return self._do(lambda ctx: self._read(ctx, addr))

    def write_many(self, pairs) -> None:
        pairs = [_check(a, d) for a, d in pairs]

        async def fn(ctx):
            for a, d in pairs:
                await self._write(ctx, a, d)
        self._do(fn)

    def read_many(self, addrs) -> list[int]:
        addrs = [_check(a, 0)[0] for a in addrs]

        async def fn(ctx):
            return [await self._read(ctx, a) for a in addrs]
        return self._do(fn)

    def run(self, max_cycles: int, timeout_s: float | None = None) -> None:
        """Write ``CTRL.START`` and clock until ``done``; :class:`CycleLimitExceeded` after
        ``max_cycles`` cycles, :class:`WallClockTimeout` after ``timeout_s`` seconds (the
        wall clock is checked every 256 cycles)."""
        lim = run_limits(max_cycles, timeout_s)

        async def fn(ctx):
            await self._write(ctx, reg_addr(isa.HostReg.CTRL), int(isa.Ctrl.START))
            n = 0
            while not ctx.get(self.chip.done):
                if n >= lim.max_cycles or (not n & 255 and lim.expired()):
                    return False, n
                await self._tick(ctx)
                n += 1
            return True, n
        done, n = self._do(fn)
        if not done:
            raise lim.timeout(self.name, n)
        self.last_run_cycles = n

    @property
    def running(self) -> bool:
        return bool(self._do(self._get(self.chip.running)))

    @property
    def done(self) -> bool:
        return bool(self._do(self._get(self.chip.done)))

    @staticmethod
    def _get(signal):
        async def fn(ctx):
            return ctx.get(signal)
        return fn

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._vcd is not None:
                self._vcd.__exit__(None, None, None)
                self._vcd = None


def _check(addr, data) -> tuple[int, int]:
    addr, data = int(addr), int(data)
    if not 0 <= addr < (1 << isa.HOST_ADDR_BITS):
        raise ValueError(f"host address 0x{addr:x} does not fit {isa.HOST_ADDR_BITS} bits")
    if not 0 <= data < (1 << 32):
        raise ValueError(f"host data {data} is not an unsigned 32-bit word")
    return addr, data
