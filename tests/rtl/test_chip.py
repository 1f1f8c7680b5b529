"""Chip-level tests of the RTL (rtl/chip.py) in Amaranth's simulator, through the host bus only.

Programs are placed cycle by cycle in the superlane-0 frame; stream arrival cycles come from the
timing rule of docs/architecture.md (``T = t + d_func + |q - p|``, consumer issued at
``T - d_skew``) with latencies from ``openlpu.isa``; data is checked against numpy.
"""

import time

import numpy as np
import pytest

from openlpu import hostmap, isa
from openlpu.isa import Dir, ErrorFlag, HostReg
from openlpu.params import preset
from openlpu.rtl.chip import LpuChip, generate_verilog
from openlpu.rtl.testing import HostBusDriver, run_sim

OP = isa.BY_MNEMONIC
EDGE = np.array([0x80, 0x7F, 0x00, 0x01], dtype=np.uint8)    # -128, 127, 0, 1


def assemble(instrs: dict, halt_at: int) -> list[int]:
    """Queue words that issue ``instrs`` ({cycle: word}) at their cycles and HALT at ``halt_at``."""
    words, t = [], 0
    for cyc in sorted(instrs):
        assert cyc >= t, f"two instructions of one queue at cycle {cyc}"
        if cyc > t:
            words.append(OP["NOP"].encode(count=cyc - t))
        words.append(instrs[cyc])
        t = cyc + 1
    assert halt_at >= t
    if halt_at > t:
        words.append(OP["NOP"].encode(count=halt_at - t))
    words.append(OP["HALT"].encode())
    return words


class ChipBench:
    """A chip, its host bus driver, and helpers written as testbench coroutines."""

    def __init__(self, params):
        self.p = params
        self.dut = LpuChip(params)
        self.bus = HostBusDriver(self.dut.host)

    async def load_programs(self, ctx, programs: dict):
        """Write every queue: ``programs`` {queue name: words}; other queues get HALT."""
        for q in self.p.queues:
            words = programs.get(q.name, [OP["HALT"].encode()])
            for i, w in enumerate(words):
                await self.bus.write(ctx, hostmap.imem_addr(self.p, q.index, i), w)

    async def write_vector(self, ctx, slice_index, addr, vec):
        p = self.p
        bank, word = p.mem_bank_of(addr), addr % p.mem_words
        for c in range(p.superlanes):
            for g in range(p.host_lane_groups):
                lanes = vec[c * p.lanes + 4 * g:c * p.lanes + 4 * g + 4]
                await self.bus.write(ctx, hostmap.mem_addr(p, slice_index, bank, word, c, g),
                                     hostmap.pack_lanes(lanes))

    async def read_vector(self, ctx, slice_index, addr):
        p = self.p
        bank, word = p.mem_bank_of(addr), addr % p.mem_words
        out = np.zeros(p.vl, dtype=np.uint8)
        for c in range(p.superlanes):
            for g in range(p.host_lane_groups):
                w = await self.bus.read(ctx, hostmap.mem_addr(p, slice_index, bank, word, c, g))
                out[c * p.lanes + 4 * g:c * p.lanes + 4 * g + 4] = hostmap.unpack_lanes(w)
        return out

    async def run(self, ctx, max_polls=400):
        """START, wait for DONE; returns (CYCLES, ERRORS, ERROR_CYCLE)."""
        await self.bus.start(ctx)
        assert ctx.get(self.dut.running)
        await self.bus.wait_done(ctx, max_polls)
        assert not ctx.get(self.dut.running)
        return (await self.bus.reg(ctx, HostReg.CYCLES), await self.bus.reg(ctx, HostReg.ERRORS),
                await self.bus.reg(ctx, HostReg.ERROR_CYCLE))


def test_registers(params):
    b = ChipBench(params)

    async def tb(ctx):
        assert await b.bus.reg(ctx, HostReg.ID) == isa.CHIP_ID
        assert await b.bus.reg(ctx, HostReg.CONFIG_ID) == params.config_id
        assert await b.bus.reg(ctx, HostReg.STATUS) == 0
        assert await b.bus.reg(ctx, HostReg.ERRORS) == 0
        assert await b.bus.read(ctx, hostmap.reg_addr(HostReg.ERROR_CYCLE) + 9) == 0   # unused
        # back-to-back reads: r_valid exactly 2 cycles after each r_en
        bus = b.dut.host
        await ctx.tick()                    # let the last read's r_valid cycle pass
        regs = [HostReg.ID, HostReg.CONFIG_ID, HostReg.STATUS]
        exp = [isa.CHIP_ID, params.config_id, 0]
        got = []
        for i in range(len(regs) + isa.HOST_READ_LATENCY):
            ctx.set(bus.r_en, i < len(regs))
            if i < len(regs):
                ctx.set(bus.addr, hostmap.reg_addr(regs[i]))
            if i >= isa.HOST_READ_LATENCY:
                assert ctx.get(bus.r_valid)
                got.append(ctx.get(bus.r_data))
            else:
                assert not ctx.get(bus.r_valid)
            await ctx.tick()
        ctx.set(bus.r_en, 0)
        assert got == exp
        assert not ctx.get(bus.r_valid)

    run_sim(b.dut, tb, max_cycles=200)


def test_host_roundtrip(params):
    rng = np.random.default_rng(21)
    p = params
    b = ChipBench(p)
    vecs = rng.integers(0, 256, size=(3, p.vl), dtype=np.uint8)
    vecs[0] = np.resize(EDGE, p.vl)
    places = [(0, 0), (2 * p.mem_slices - 1, p.mem_addr_words - 1), (1, p.mem_words)]
    imem = [(0, 0), (len(p.queues) - 1, p.imem_words - 1), (3, 5)]
    imem_vals = [int(v) for v in rng.integers(0, 1 << 32, size=len(imem), dtype=np.uint64)]

    async def tb(ctx):
        for (sl, a), v in zip(places, vecs):
            await b.write_vector(ctx, sl, a, v)
        for (q, w), v in zip(imem, imem_vals):
            await b.bus.write(ctx, hostmap.imem_addr(p, q, w), v)
        for (sl, a), v in zip(places, vecs):
            np.testing.assert_array_equal(await b.read_vector(ctx, sl, a), v)
        for (q, w), v in zip(imem, imem_vals):
            assert await b.bus.read(ctx, hostmap.imem_addr(p, q, w)) == v
        # the same word of another slice / queue is untouched
        np.testing.assert_array_equal(await b.read_vector(ctx, 1, 0), np.zeros(p.vl))
        assert await b.bus.read(ctx, hostmap.imem_addr(p, 1, 0)) == 0
        # IMEM words beyond imem_words are ignored and read as 0
        beyond = hostmap.imem_addr(p, 0, 0) + p.imem_words
        if p.imem_words < (1 << isa.IMEM_QUEUE_SHIFT):
            await b.bus.write(ctx, beyond, 0x12345678)
            assert await b.bus.read(ctx, beyond) == 0
            assert await b.bus.read(ctx, hostmap.imem_addr(p, 0, 0)) == imem_vals[0]
        assert await b.bus.reg(ctx, HostReg.ERRORS) == 0

    run_sim(b.dut, tb, max_cycles=4000)


def copy_plan(p, n_vec):
    """MEM -> MEM copies through the fabric, both directions, across several slices.

    Returns ``(programs, moves, halt)``: per-queue words, a list of (src slice index, src addr,
    dst slice index, dst addr), and the cycle of the last HALT.
    """
    by_name = {s.name: s for s in p.mem_slice_list}
    n = p.mem_slices
    routes = [   # (source, destination, stream)
        (f"mem_w{n - 1}", f"mem_e{n - 1}", 1),        # eastward across the whole chip
        ("mem_e0", f"mem_w{n - 1}", 2),              # westward
        (f"mem_e{n - 1}", "mem_w0", 5),               # westward
        ("mem_w0", "mem_e0", 6),                      # eastward, short hop
    ]
    read_d = OP["READ"].d_func(p)
    write_skew = OP["WRITE"].d_skew
    instrs = {}
    moves = []
    halt = 0
    for r, (src, dst, stream) in enumerate(routes):
        ps, pd = by_name[src].position, by_name[dst].position
        d = Dir.EAST if pd > ps else Dir.WEST
        for v in range(n_vec):
            t = 1 + v + r % 2                   # back-to-back READs
            src_addr = v + 4 * r
            dst_addr = p.mem_words + 3 * v + r  # bank 1 (no conflict with the READs on bank 0)
            t_arrive = t + read_d + abs(pd - ps)
            t_write = t_arrive - write_skew
            instrs.setdefault(f"{src}.read", {})[t] = OP["READ"].encode(
                addr=src_addr, stream=stream, dir=int(d))
            instrs.setdefault(f"{dst}.write", {})[t_write] = OP["WRITE"].encode(
                addr=dst_addr, stream=stream, dir=int(d))
            moves.append((by_name[src].index, src_addr, by_name[dst].index, dst_addr))
            halt = max(halt, t_write + 1)
    programs = {q: assemble(ins, max(ins) + 1) for q, ins in instrs.items()}
    return programs, moves, halt, instrs


def test_mem_copy_through_fabric(params):
    rng = np.random.default_rng(22)
    p = params
    n_vec = 3
    programs, moves, _, instrs = copy_plan(p, n_vec)
    # the run lasts until the last queue's HALT: one cycle after its last instruction
    last_halt = max(max(ins) + 1 for ins in instrs.values())
    vecs = rng.integers(0, 256, size=(len(moves), p.vl), dtype=np.uint8)
    vecs[0] = np.resize(EDGE, p.vl)
    b = ChipBench(p)
    results = {}

    async def tb(ctx):
        await b.load_programs(ctx, programs)
        for (ss, sa, _, _), v in zip(moves, vecs):
            await b.write_vector(ctx, ss, sa, v)
        results["run"] = await b.run(ctx)
        for i, (_, _, ds, da) in enumerate(moves):
            results[i] = await b.read_vector(ctx, ds, da)

    t0 = time.monotonic()
    run_sim(b.dut, tb, max_cycles=6000)
    assert time.monotonic() - t0 < 60
    cycles, errors, _ = results["run"]
    assert errors == 0
    assert cycles == last_halt + 1
    for i in range(len(moves)):
        np.testing.assert_array_equal(results[i], vecs[i], err_msg=f"move {moves[i]}")


@pytest.mark.parametrize("shift", [-1, +1])
def test_copy_off_by_one_is_caught(shift):
    """A WRITE one cycle early or late misses the vector: STREAM_UNWRITTEN or wrong data."""
    p = preset("tiny")
    programs, moves, _, instrs = copy_plan(p, 1)
    # move route 0's WRITE (mem_w{n-1} -> mem_e{n-1}) by `shift` cycles
    q = f"mem_e{p.mem_slices - 1}.write"
    (t_w, w), = instrs[q].items()
    instrs[q] = {t_w + shift: w}
    programs[q] = assemble(instrs[q], t_w + shift + 1)
    vec = np.resize(EDGE, p.vl)
    b = ChipBench(p)
    results = {}

    async def tb(ctx):
        await b.load_programs(ctx, programs)
        ss, sa, ds, da = moves[0]
        await b.write_vector(ctx, ss, sa, vec)
        results["run"] = await b.run(ctx)
        results["dst"] = await b.read_vector(ctx, ds, da)

    run_sim(b.dut, tb, max_cycles=3000)
    _, errors, err_cycle = results["run"]
    assert errors & ErrorFlag.STREAM_UNWRITTEN
    assert err_cycle == t_w + shift
    assert not np.array_equal(results["dst"], vec)


def test_nop_halt_and_cycles(params):
    p = params
    b = ChipBench(p)
    cases = [
        {},                                                           # every queue HALTs at 0
        {p.queues[0].name: assemble({}, 7)},                          # NOP 7, HALT at 7
        {p.queues[1].name: assemble({}, 3), p.queues[-1].name: assemble({}, 12),
         p.queues[4].name: [OP["NOP"].encode(count=1)] * 5 + [OP["HALT"].encode()]},
    ]
    expect = [1, 8, 13]
    got = []

    async def tb(ctx):
        for programs in cases:
            await b.load_programs(ctx, programs)
            got.append(await b.run(ctx))
        # STATUS: RUNNING during a run, DONE after it, DONE cleared by START
        await b.load_programs(ctx, {p.queues[2].name: assemble({}, 40)})
        await b.bus.start(ctx)
        assert await b.bus.reg(ctx, HostReg.STATUS) == isa.Status.RUNNING
        await b.bus.wait_done(ctx)
        assert await b.bus.reg(ctx, HostReg.STATUS) == isa.Status.DONE
        assert await b.bus.reg(ctx, HostReg.CYCLES) == 41

    run_sim(b.dut, tb, max_cycles=4000)
    assert [c for c, _, _ in got] == expect
    assert all(e == 0 for _, e, _ in got)


def test_error_flags(params):
    p = params
    n = p.mem_addr_words
    enc = {m: OP[m].encode for m in OP}
    w0, w1 = "mem_w0", f"mem_w{p.mem_slices - 1}"
    ps0, ps1 = p.slice(w0).position, p.slice(w1).position
    hop = abs(ps0 - ps1)
    arrive = 2 + OP["READ"].d_func(p) + hop - OP["WRITE"].d_skew
    d = int(Dir.EAST if ps0 > ps1 else Dir.WEST)
    good = {  # READ in w1 at 2, WRITE of the same stream in w0 on time, other banks
        f"{w1}.read": assemble({2: enc["READ"](addr=1, stream=3, dir=d)}, 3),
        f"{w0}.write": assemble({arrive: enc["WRITE"](addr=p.mem_words, stream=3, dir=d)},
                                arrive + 1),
        f"{w0}.read": assemble({arrive: enc["READ"](addr=2, stream=0, dir=int(Dir.WEST))},
                               arrive + 1),
    }
    cases = [  # (name, programs, flag, error cycle)
        ("good", good, 0, 0),
        ("bank", {f"{w0}.read": assemble({4: enc["READ"](addr=p.mem_words + 1, stream=0,
                                                         dir=0)}, 5),
                  f"{w0}.write": [enc["NOP"](count=4),
                                  enc["WRITE"](addr=p.mem_words + 2, stream=0, dir=0),
                                  enc["HALT"]()]},
         ErrorFlag.BANK_CONFLICT | ErrorFlag.STREAM_UNWRITTEN, 4),
        ("range", {f"{w1}.read": assemble({3: enc["READ"](addr=n, stream=0, dir=0)}, 4)},
         ErrorFlag.ADDR_RANGE, 3),
        ("unwritten", {f"{w0}.write": assemble({5: enc["WRITE"](addr=0, stream=7, dir=1)}, 6)},
         ErrorFlag.STREAM_UNWRITTEN, 5),
        ("bad", {f"{w0}.read": [enc["NOP"](count=2), enc["WRITE"](addr=0, stream=0, dir=0),
                                enc["HALT"]()]},
         ErrorFlag.BAD_INSTRUCTION, 2),
        ("overrun", {f"{w1}.write": [enc["NOP"](count=1)] * p.imem_words},
         ErrorFlag.IMEM_OVERRUN, p.imem_words),
    ]
    b = ChipBench(p)
    got = {}

    async def tb(ctx):
        for name, programs, _, _ in cases:
            await b.load_programs(ctx, programs)
            got[name] = await b.run(ctx, max_polls=p.imem_words)
        # host access to MEM / IMEM while running: ignored, HOST_WHILE_RUNNING
        await b.load_programs(ctx, {f"{w0}.read": assemble({}, 30)})
        await b.write_vector(ctx, 0, 5, np.full(p.vl, 9, dtype=np.uint8))
        await b.bus.start(ctx)
        await b.bus.write(ctx, hostmap.mem_addr(p, 0, 0, 5, 0, 0), 0xDEADBEEF)
        assert await b.bus.read(ctx, hostmap.imem_addr(p, 0, 0)) == 0
        await b.bus.write(ctx, hostmap.imem_addr(p, 0, 0), 0xDEADBEEF)
        await b.bus.wait_done(ctx)
        got["host"] = (await b.bus.reg(ctx, HostReg.CYCLES), await b.bus.reg(ctx, HostReg.ERRORS),
                       await b.bus.reg(ctx, HostReg.ERROR_CYCLE))
        got["host_mem"] = await b.read_vector(ctx, 0, 5)
        got["host_imem"] = await b.bus.read(ctx, hostmap.imem_addr(p, 0, 0))
        # CLEAR_ERRORS
        await b.bus.write(ctx, hostmap.reg_addr(HostReg.CTRL), int(isa.Ctrl.CLEAR_ERRORS))
        got["cleared"] = await b.bus.reg(ctx, HostReg.ERRORS)

    run_sim(b.dut, tb, max_cycles=8000)
    for name, _, flag, cyc in cases:
        _, errors, err_cycle = got[name]
        assert errors == int(flag), (name, errors)
        assert err_cycle == cyc, (name, err_cycle)
    assert got["host"][1] == ErrorFlag.HOST_WHILE_RUNNING
    assert got["host"][2] == 0        # the first access came in cycle 0 of the run
    np.testing.assert_array_equal(got["host_mem"], np.full(p.vl, 9))
    assert got["host_imem"] == OP["HALT"].encode()     # queue 0 keeps its HALT
    assert got["cleared"] == 0


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_generate_verilog(name):
    t0 = time.monotonic()
    v = generate_verilog(preset(name))
    assert "module lpu_chip(" in v
    for port in ("host__addr", "host__w_en", "host__w_data", "host__r_en", "host__r_data",
                 "host__r_valid", "running", "done", "clk", "rst"):
        assert port in v
    assert time.monotonic() - t0 < 60
