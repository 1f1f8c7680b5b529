"""Simulation helpers for the RTL tests (Amaranth's simulator, async testbenches).

* :func:`run_sim` runs testbenches with a cycle limit: a testbench that has not finished when
  the limit is reached fails the run instead of hanging it.
* :class:`HostBusDriver` drives the chip's host bus (``write``, ``read``, ``start``,
  ``wait_done``) with the bus timing of ``docs/architecture.md``.
* :func:`vector_to_tiles` / :func:`tiles_to_vector` convert a numpy vector to the per-superlane
  words of a MEM tile and back.
* :func:`pack_column`, :func:`unpack_column`, :func:`pack_drive`, :func:`unpack_drive` convert
  stream-column and stream-drive values (``rtl/common.py`` layouts) to and from numpy arrays.
"""

from __future__ import annotations

import time

import numpy as np
from amaranth.sim import Simulator

from openlpu import isa
from openlpu.hostmap import reg_addr

__all__ = ["SimulationTimeout", "HostBusError", "run_sim", "HostBusDriver",
           "vector_to_tiles", "tiles_to_vector", "pack_column", "unpack_column", "pack_drive",
           "unpack_drive"]

PERIOD = 1e-8


class SimulationTimeout(AssertionError):
    """A simulation reached its cycle limit with testbenches still running."""


class HostBusError(AssertionError):
    """The host bus did not follow its protocol (e.g. ``r_valid`` at the wrong cycle)."""


def run_sim(dut, *testbenches, max_cycles: int = 10_000, max_seconds: float | None = 600.0,
            vcd: str | None = None, background=()):
    """Simulate ``dut`` with a clock and the given async testbenches.

    Each testbench is ``async def tb(ctx)``. ``background`` testbenches may run forever.
    Raises :class:`SimulationTimeout` if a (foreground) testbench has not returned after
    ``max_cycles`` clock cycles or ``max_seconds`` of wall-clock time (checked every 256
    cycles); exceptions raised in a testbench propagate.
    """
    if not testbenches:
        raise ValueError("run_sim needs at least one testbench")
    finished = []
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    for tb in testbenches:
        async def wrapped(ctx, tb=tb):
            await tb(ctx)
            finished.append(tb.__name__)
        sim.add_testbench(wrapped)
    for tb in background:
        sim.add_testbench(tb, background=True)

    if vcd:
        with sim.write_vcd(vcd):
            _run_checked(sim, finished, testbenches, max_cycles, max_seconds)
    else:
        _run_checked(sim, finished, testbenches, max_cycles, max_seconds)
    return finished


def _run_checked(sim, finished, testbenches, max_cycles, max_seconds):
    step = 256
    t = 0
    t0 = time.monotonic()
    while len(finished) < len(testbenches):
        missing = [tb.__name__ for tb in testbenches if tb.__name__ not in finished]
        if t >= max_cycles:
            raise SimulationTimeout(f"testbench(es) {', '.join(missing)} still running after "
                                    f"{max_cycles} cycles")
        if max_seconds is not None and time.monotonic() - t0 > max_seconds:
            raise SimulationTimeout(f"testbench(es) {', '.join(missing)} still running after "
                                    f"{max_seconds} s ({t} cycles)")
        t = min(t + step, max_cycles)
        sim.run_until(PERIOD * t)


class HostBusDriver:
    """Drives a host bus (``host_bus_signature()``, chip side ``In``) from a testbench.

    All coroutines start and end right after a clock edge, with ``w_en`` and ``r_en`` low.
    """

    def __init__(self, bus):
        self.bus = bus

    async def write(self, ctx, addr: int, data: int) -> None:
        """One write cycle: takes effect at the clock edge."""
        ctx.set(self.bus.addr, addr)
        ctx.set(self.bus.w_data, data & 0xFFFFFFFF)
        ctx.set(self.bus.w_en, 1)
        await ctx.tick()
        ctx.set(self.bus.w_en, 0)

    async def read(self, ctx, addr: int) -> int:
        """One read: checks that ``r_valid`` comes exactly ``HOST_READ_LATENCY`` cycles later."""
        ctx.set(self.bus.addr, addr)
        ctx.set(self.bus.r_en, 1)
        await ctx.tick()
        ctx.set(self.bus.r_en, 0)
        for i in range(1, isa.HOST_READ_LATENCY):
            if ctx.get(self.bus.r_valid):
                raise HostBusError(f"read 0x{addr:06x}: r_valid {i} cycle(s) after r_en, "
                                   f"expected {isa.HOST_READ_LATENCY}")
            await ctx.tick()
        if not ctx.get(self.bus.r_valid):
            raise HostBusError(f"read 0x{addr:06x}: no r_valid {isa.HOST_READ_LATENCY} cycles "
                               f"after r_en")
        return ctx.get(self.bus.r_data)

    async def reg(self, ctx, reg: isa.HostReg) -> int:
        return await self.read(ctx, reg_addr(reg))

    async def start(self, ctx) -> None:
        """Write CTRL.START (the run's cycle 0 is the cycle after this write)."""
        await self.write(ctx, reg_addr(isa.HostReg.CTRL), int(isa.Ctrl.START))

    async def wait_done(self, ctx, max_polls: int = 1000) -> None:
        """Poll STATUS until DONE."""
        for _ in range(max_polls):
            if await self.reg(ctx, isa.HostReg.STATUS) & isa.Status.DONE:
                return
        raise SimulationTimeout(f"STATUS.DONE not set after {max_polls} polls")


def vector_to_tiles(params, vec) -> list[int]:
    """A VL-byte vector as one integer per superlane tile (lane ``i`` in bits ``8i..``)."""
    v = np.asarray(vec).astype(np.uint8)
    if v.shape != (params.vl,):
        raise ValueError(f"vector must have {params.vl} elements, not shape {v.shape}")
    return [int.from_bytes(v[c * params.lanes:(c + 1) * params.lanes].tobytes(), "little")
            for c in range(params.superlanes)]


def tiles_to_vector(params, words) -> np.ndarray:
    """Inverse of :func:`vector_to_tiles`."""
    out = np.zeros(params.vl, dtype=np.uint8)
    for c, w in enumerate(words):
        out[c * params.lanes:(c + 1) * params.lanes] = np.frombuffer(
            int(w).to_bytes(params.lanes, "little"), dtype=np.uint8)
    return out


# -- stream values as integers (offsets from the layouts in rtl/common.py) ------------------------
def _pack_slots(params, slot_layout, flag_name, data, flags) -> int:
    w, d_off, f_off = slot_layout.size, slot_layout["data"].offset, slot_layout[flag_name].offset
    data = np.asarray(data, dtype=np.uint8).reshape(params.superlanes, params.streams, params.lanes)
    flags = np.asarray(flags, dtype=bool).reshape(params.superlanes, params.streams)
    v = 0
    for c in range(params.superlanes):
        for s in range(params.streams):
            i = c * params.streams + s
            v |= int.from_bytes(data[c, s].tobytes(), "little") << (i * w + d_off)
            v |= int(flags[c, s]) << (i * w + f_off)
    return v


def _unpack_slots(params, slot_layout, flag_name, value):
    w, d_off, f_off = slot_layout.size, slot_layout["data"].offset, slot_layout[flag_name].offset
    mask = (1 << 8 * params.lanes) - 1
    data = np.zeros((params.superlanes, params.streams, params.lanes), dtype=np.uint8)
    flags = np.zeros((params.superlanes, params.streams), dtype=bool)
    for c in range(params.superlanes):
        for s in range(params.streams):
            x = int(value) >> ((c * params.streams + s) * w)
            data[c, s] = np.frombuffer(((x >> d_off) & mask).to_bytes(params.lanes, "little"),
                                       dtype=np.uint8)
            flags[c, s] = (x >> f_off) & 1
    return data, flags


def pack_column(params, data, valid) -> int:
    """``data[superlane, stream, lane]``, ``valid[superlane, stream]`` -> a stream_column value."""
    from .common import stream_slot
    return _pack_slots(params, stream_slot(params), "valid", data, valid)


def unpack_column(params, value):
    """A stream_column value -> ``(data[superlane, stream, lane], valid[superlane, stream])``."""
    from .common import stream_slot
    return _unpack_slots(params, stream_slot(params), "valid", value)


def pack_drive(params, data, en) -> int:
    """``data[superlane, stream, lane]`` and ``en[superlane, stream]`` -> a stream_drive value."""
    from .common import drive_slot
    return _pack_slots(params, drive_slot(params), "en", data, en)


def unpack_drive(params, value):
    """A stream_drive value -> ``(data[superlane, stream, lane], en[superlane, stream])``."""
    from .common import drive_slot
    return _unpack_slots(params, drive_slot(params), "en", value)
