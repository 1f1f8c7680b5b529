"""Chip-level tests of the RTL (rtl/chip.py), through the host bus only.

Programs are placed cycle by cycle in the superlane-0 frame; stream arrival cycles come from the
timing rule of docs/architecture.md (``T = t + d_func + |q - p|``, consumer issued at
``T - d_skew``) with latencies from ``openlpu.isa``; data is checked against numpy and the
reference model.

The whole-chip programs run on the cached Verilator builds of ``tiny`` and ``quad``
(:mod:`tests.rtl.chiprun`; the same builds ``tests/host`` and ``verification/`` use);
:func:`test_chip_smoke_in_the_amaranth_simulator` runs some of them on ``tiny`` in Amaranth's
simulator, and :func:`test_registers` (the host bus cycle by cycle) runs there on ``tiny`` and
``quad``. :class:`ChipBench` drives the chip in Amaranth's simulator for the tests that watch
its ``running`` / ``done`` outputs cycle by cycle or look inside it.
"""

import numpy as np
import pytest

from openlpu import hostmap, isa
from openlpu.isa import Dir, ErrorFlag, HostReg
from openlpu.params import preset
from openlpu.rtl.chip import LpuChip, generate_verilog
from openlpu.rtl.testing import HostBusDriver, run_sim

from . import chiprun
from .chiprun import ChipRun, chip_params, open_chip

# Chip-level tests: on the Verilator builds of tiny and quad.
CHIPS = chip_params(preset("tiny"), preset("quad"))


@pytest.fixture(params=CHIPS)
def chip(request):
    """A chip configuration and the simulator to run it on (:class:`chiprun.ChipRun`)."""
    return request.param

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
        n = p.host_word_lanes
        for c in range(p.superlanes):
            for g in range(p.host_lane_groups):
                lanes = vec[c * p.lanes + n * g:c * p.lanes + n * g + n]
                await self.bus.write(ctx, hostmap.mem_addr(p, slice_index, bank, word, c, g),
                                     hostmap.pack_lanes(lanes))

    async def read_vector(self, ctx, slice_index, addr):
        p = self.p
        bank, word = p.mem_bank_of(addr), addr % p.mem_words
        out = np.zeros(p.vl, dtype=np.uint8)
        for c in range(p.superlanes):
            for g in range(p.host_lane_groups):
                w = await self.bus.read(ctx, hostmap.mem_addr(p, slice_index, bank, word, c, g))
                n = p.host_word_lanes
                out[c * p.lanes + n * g:c * p.lanes + n * g + n] = hostmap.unpack_lanes(w, n)
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


def test_host_roundtrip(chip):
    """MEM words (every lane group), IMEM words and registers written and read back through the
    host bus; other words untouched, IMEM words beyond ``imem_words`` ignored (read as 0)."""
    rng = np.random.default_rng(21)
    p, sim = chip
    vecs = rng.integers(0, 256, size=(3, p.vl), dtype=np.uint8)
    vecs[0] = np.resize(EDGE, p.vl)
    places = [(0, 0), (2 * p.mem_slices - 1, p.mem_addr_words - 1), (1, p.mem_words)]
    imem = [(0, 0), (len(p.queues) - 1, p.imem_words - 1), (3, 5)]
    imem_vals = [int(v) for v in rng.integers(0, 1 << 32, size=len(imem), dtype=np.uint64)]

    with open_chip(p, sim) as b:
        for (sl, a), v in zip(places, vecs):
            chiprun.write_vector(b, p, sl, a, v)
        for (q, w), v in zip(imem, imem_vals):
            b.write(hostmap.imem_addr(p, q, w), v)
        for (sl, a), v in zip(places, vecs):
            np.testing.assert_array_equal(chiprun.read_vector(b, p, sl, a), v)
        for (q, w), v in zip(imem, imem_vals):
            assert b.read(hostmap.imem_addr(p, q, w)) == v
        # the same word of another slice / queue is untouched
        np.testing.assert_array_equal(chiprun.read_vector(b, p, 1, 0), np.zeros(p.vl))
        assert b.read(hostmap.imem_addr(p, 1, 0)) == 0
        # IMEM words beyond imem_words are ignored and read as 0
        beyond = hostmap.imem_addr(p, 0, 0) + p.imem_words
        if p.imem_words < (1 << isa.IMEM_QUEUE_SHIFT):
            b.write(beyond, 0x12345678)
            assert b.read(beyond) == 0
            assert b.read(hostmap.imem_addr(p, 0, 0)) == imem_vals[0]
        assert b.read(hostmap.reg_addr(HostReg.ID)) == isa.CHIP_ID
        assert b.read(hostmap.reg_addr(HostReg.CONFIG_ID)) == p.config_id
        assert b.read(hostmap.reg_addr(HostReg.ERRORS)) == 0


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


def test_mem_copy_through_fabric(chip):
    rng = np.random.default_rng(22)
    p, sim = chip
    n_vec = 3
    programs, moves, _, instrs = copy_plan(p, n_vec)
    # the run lasts until the last queue's HALT: one cycle after its last instruction
    last_halt = max(max(ins) + 1 for ins in instrs.values())
    vecs = rng.integers(0, 256, size=(len(moves), p.vl), dtype=np.uint8)
    vecs[0] = np.resize(EDGE, p.vl)
    with open_chip(p, sim) as b:
        chiprun.load_programs(b, p, programs)
        for (ss, sa, _, _), v in zip(moves, vecs):
            chiprun.write_vector(b, p, ss, sa, v)
        cycles, errors, _ = chiprun.run(b, p)
        got = [chiprun.read_vector(b, p, ds, da) for _, _, ds, da in moves]
    assert errors == 0
    assert cycles == last_halt + 1
    for i in range(len(moves)):
        np.testing.assert_array_equal(got[i], vecs[i], err_msg=f"move {moves[i]}")


@pytest.mark.parametrize("shift", [-1, +1], ids=["early-tiny-verilator", "late-tiny-verilator"])
def test_copy_off_by_one_is_caught(shift):
    """A WRITE one cycle early or late misses the vector: STREAM_UNWRITTEN or wrong data
    (Verilator build of tiny)."""
    p = preset("tiny")
    programs, moves, _, instrs = copy_plan(p, 1)
    # move route 0's WRITE (mem_w{n-1} -> mem_e{n-1}) by `shift` cycles
    q = f"mem_e{p.mem_slices - 1}.write"
    (t_w, w), = instrs[q].items()
    instrs[q] = {t_w + shift: w}
    programs[q] = assemble(instrs[q], t_w + shift + 1)
    vec = np.resize(EDGE, p.vl)
    with open_chip(p, "verilator") as b:
        chiprun.load_programs(b, p, programs)
        ss, sa, ds, da = moves[0]
        chiprun.write_vector(b, p, ss, sa, vec)
        _, errors, err_cycle = chiprun.run(b, p)
        dst = chiprun.read_vector(b, p, ds, da)
    assert errors & ErrorFlag.STREAM_UNWRITTEN
    assert err_cycle == t_w + shift
    assert not np.array_equal(dst, vec)


def test_nop_halt_and_cycles(chip):
    p, sim = chip
    cases = [
        {},                                                           # every queue HALTs at 0
        {p.queues[0].name: assemble({}, 7)},                          # NOP 7, HALT at 7
        {p.queues[1].name: assemble({}, 3), p.queues[-1].name: assemble({}, 12),
         p.queues[4].name: [OP["NOP"].encode(count=1)] * 5 + [OP["HALT"].encode()]},
    ]
    expect = [1, 8, 13]
    got = []
    status = hostmap.reg_addr(HostReg.STATUS)
    with open_chip(p, sim) as b:
        for programs in cases:
            chiprun.load_programs(b, p, programs)
            got.append(chiprun.run(b, p))
        # STATUS: RUNNING during a run, DONE after it, DONE cleared by START
        chiprun.load_programs(b, p, {p.queues[2].name: assemble({}, 40)})
        chiprun.start(b)
        assert b.read(status) == isa.Status.RUNNING
        chiprun.wait_done(b)
        assert b.read(status) == isa.Status.DONE
        assert b.read(hostmap.reg_addr(HostReg.CYCLES)) == 41
    assert [c for c, _, _ in got] == expect
    assert all(e == 0 for _, e, _ in got)


def test_error_flags(chip):
    p, sim = chip
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
    got = {}
    reg = lambda r: b.read(hostmap.reg_addr(r))     # noqa: E731
    with open_chip(p, sim) as b:
        for name, programs, _, _ in cases:
            chiprun.load_programs(b, p, programs)
            got[name] = chiprun.run(b, p)
        # host access to MEM / IMEM while running: ignored, HOST_WHILE_RUNNING
        chiprun.load_programs(b, p, {f"{w0}.read": assemble({}, 30)})
        chiprun.write_vector(b, p, 0, 5, np.full(p.vl, 9, dtype=np.uint8))
        # START and the first access in consecutive cycles (the access in the run's cycle 0)
        b.write_many([(hostmap.reg_addr(HostReg.CTRL), int(isa.Ctrl.START)),
                      (hostmap.mem_addr(p, 0, 0, 5, 0, 0), 0xDEADBEEF)])
        assert b.read(hostmap.imem_addr(p, 0, 0)) == 0
        b.write(hostmap.imem_addr(p, 0, 0), 0xDEADBEEF)
        chiprun.wait_done(b)
        got["host"] = (reg(HostReg.CYCLES), reg(HostReg.ERRORS), reg(HostReg.ERROR_CYCLE))
        got["host_mem"] = chiprun.read_vector(b, p, 0, 5)
        got["host_imem"] = b.read(hostmap.imem_addr(p, 0, 0))
        # CLEAR_ERRORS
        b.write(hostmap.reg_addr(HostReg.CTRL), int(isa.Ctrl.CLEAR_ERRORS))
        got["cleared"] = reg(HostReg.ERRORS)

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
    v = generate_verilog(preset(name))
    assert "module lpu_chip(" in v
    for port in ("host__addr", "host__w_en", "host__w_data", "host__r_en", "host__r_data",
                 "host__r_valid", "running", "done", "clk", "rst"):
        assert port in v


# == model vs RTL: the same host traffic on LpuChip and on the reference model ====================
from openlpu.verification.model import LpuModel  # noqa: E402
from tests.rtl.test_mem import backdoor_get  # noqa: E402


def asm(items: dict, halt_at: int | None = None) -> list[int]:
    """Queue words from ``{cycle: word or (word, busy_cycles)}`` (REPEAT is busy count*interval
    cycles, SYNC until released: give its release cycle + 1 - cycle), NOPs between, then HALT."""
    words, t = [], 0
    for cyc in sorted(items):
        w, busy = items[cyc] if isinstance(items[cyc], tuple) else (items[cyc], 1)
        assert cyc >= t, f"two instructions of one queue at cycle {cyc}"
        if cyc > t:
            words.append(OP["NOP"].encode(count=cyc - t))
        words.append(w)
        t = cyc + busy
    if halt_at is not None and halt_at > t:
        words.append(OP["NOP"].encode(count=halt_at - t))
    words.append(OP["HALT"].encode())
    return words


def rep(count, interval, stride):
    return (OP["REPEAT"].encode(count=count, interval=interval, stride=stride), count * interval)


def mem_writes(p, slice_index, addr, vec):
    out = []
    for c in range(p.superlanes):
        for g in range(p.host_lane_groups):
            n = p.host_word_lanes
            base = c * p.lanes + n * g
            out.append((hostmap.mem_addr(p, slice_index, p.mem_bank_of(addr), addr % p.mem_words,
                                         c, g), hostmap.pack_lanes(vec[base:base + n])))
    return out


def host_traffic(p, programs, preload=()):
    """Host writes loading ``programs`` ({queue: words}, others HALT) and ``preload`` vectors."""
    ops = []
    for q in p.queues:
        for i, w in enumerate(programs.get(q.name, [OP["HALT"].encode()])):
            ops.append((hostmap.imem_addr(p, q.index, i), w))
    for sl, a, vec in preload:
        ops += mem_writes(p, sl, a, vec)
    return ops


REGS = (HostReg.CYCLES, HostReg.ERRORS, HostReg.ERROR_CYCLE)


def model_runs(p, runs):
    """Apply each run's host writes to the model, START; returns [(regs, mem)] per run."""
    mdl = LpuModel(p)
    out = []
    for ops in runs:
        for a, d in ops:
            mdl.write(a, d)
        mdl.write(hostmap.reg_addr(HostReg.CTRL), int(isa.Ctrl.START))
        regs = tuple(mdl.read(hostmap.reg_addr(r)) for r in REGS)
        mem = np.zeros((2 * p.mem_slices, p.mem_addr_words, p.vl), dtype=np.uint8)
        for s in range(2 * p.mem_slices):       # through the model's host interface
            for a in range(p.mem_addr_words):
                for c in range(p.superlanes):
                    for g in range(p.host_lane_groups):
                        w = mdl.read(hostmap.mem_addr(p, s, p.mem_bank_of(a), a % p.mem_words,
                                                      c, g))
                        n = p.host_word_lanes
                        base = c * p.lanes + n * g
                        mem[s, a, base:base + n] = hostmap.unpack_lanes(w, n)
        out.append((regs, mem))
    return out


def rtl_runs(p, runs, max_cycles=20000):
    """Same on LpuChip through the host bus (MEM contents read back through the back door)."""
    b = ChipBench(p)
    out = []

    async def tb(ctx):
        for ops in runs:
            for a, d in ops:
                await b.bus.write(ctx, a, d)
            regs = await b.run(ctx, max_polls=2000)
            mem = np.zeros((2 * p.mem_slices, p.mem_addr_words, p.vl), dtype=np.uint8)
            for s in p.mem_slice_list:
                dut = b.dut.slices[s.name]
                for a in range(p.mem_addr_words):
                    mem[s.index, a] = backdoor_get(ctx, dut, a)
            out.append((tuple(regs), mem))
    run_sim(b.dut, tb, max_cycles=max_cycles)
    return out


def backend_runs(chip: ChipRun, runs):
    """Same on a cleared chip of ``chip.sim`` (:func:`chiprun.open_chip`), everything through
    the host bus: the host writes of each run, START, DONE, the drain cycles, the registers and
    every MEM byte."""
    p, sim = chip
    out = []
    with open_chip(p, sim) as b:
        for ops in runs:
            b.write_many(ops)
            regs = chiprun.run(b, p)
            out.append((regs, chiprun.read_all_mem(b, p)))
    return out


def cross_check(chip: ChipRun, runs, expect_errors=None):
    """Run on the model and on the RTL of ``chip`` (Verilator: :func:`backend_runs`; Amaranth's
    simulator: :func:`rtl_runs`); assert CYCLES, ERRORS, ERROR_CYCLE and every MEM byte agree.
    Returns the model's results (per run: (regs, mem))."""
    if not isinstance(chip, ChipRun):
        raise TypeError(f"cross_check needs a ChipRun (params and simulator), not {chip!r}")
    p = chip.p
    got_m = model_runs(p, runs)
    got_r = rtl_runs(p, runs) if chip.sim == "amaranth" else backend_runs(chip, runs)
    for i, ((rm, mm), (rr, mr)) in enumerate(zip(got_m, got_r)):
        assert rr == rm, f"run {i}: RTL (CYCLES, ERRORS, ERROR_CYCLE) {rr} != model {rm}"
        for s in range(mm.shape[0]):
            bad = np.argwhere(mm[s] != mr[s])
            assert not len(bad), f"run {i}: MEM slice {s} differs at (word, lane) {bad[:4].tolist()}"
        if expect_errors is not None:
            assert rm[1] == int(expect_errors[i]), f"run {i}: ERRORS {rm[1]}"
    return got_m


def pos(p, name):
    return p.slice(name).position


def idx(p, name):
    return p.slice(name).index


def route_dir(p, src, dst):
    return Dir.EAST if pos(p, dst) > pos(p, src) else Dir.WEST


def arrival(p, src, dst, t, mnemonic="READ"):
    """Cycle a result of ``mnemonic`` issued at ``t`` in ``src`` is sampled by ``dst`` (d_skew 0)."""
    return t + OP[mnemonic].d_func(p) + abs(pos(p, dst) - pos(p, src))


def rand_vecs(rng, p, n):
    v = rng.integers(0, 256, size=(n, p.vl), dtype=np.uint8)
    v[0] = np.resize(EDGE, p.vl)
    return v


@pytest.mark.parametrize("interval,rstride,wstride", [(1, 1, 2), (3, -3, -1)])
def test_repeat_read_write(chip, interval, rstride, wstride):
    """READ + REPEAT in one slice, WRITE + REPEAT in another: k-th copy moves word a0+k*rstride
    to w0+k*wstride (interval 1 back to back, interval 3 with negative strides)."""
    p, sim = chip
    rng = np.random.default_rng(31 + interval)
    n = 4
    src, dst = f"mem_w{p.mem_slices - 1}", f"mem_e{p.mem_slices - 1}"
    d = int(route_dir(p, src, dst))
    a0 = 3 if rstride > 0 else 3 * n
    w0 = p.mem_words + (1 if wstride > 0 else 2 * n)      # bank 1: no conflict with the READs
    t = 2
    ta = arrival(p, src, dst, t)
    programs = {
        f"{src}.read": asm({t: OP["READ"].encode(addr=a0, stream=3, dir=d),
                            t + 1: rep(n - 1, interval, rstride)}),
        f"{dst}.write": asm({ta: OP["WRITE"].encode(addr=w0, stream=3, dir=d),
                             ta + 1: rep(n - 1, interval, wstride)}),
    }
    # copy k of X issues at t_r - 1 + k*interval (t_r = X's cycle + 1) in both queues, so every
    # copy's WRITE meets its READ's vector
    vecs = rand_vecs(rng, p, n)
    preload = [(idx(p, src), a0 + k * rstride, vecs[k]) for k in range(n)]
    res = cross_check(chip, [host_traffic(p, programs, preload)], [0])
    (cycles, _, _), mem = res[0]
    assert cycles == ta + 1 + (n - 1) * interval + 1
    for k in range(n):
        np.testing.assert_array_equal(mem[idx(p, dst), w0 + k * wstride], vecs[k],
                                      err_msg=f"copy {k}")


def test_repeat_field_wraps_and_bad_repeat(chip):
    """The stride wraps modulo the field width (addr 1 - 2 -> 0xFFFF: ADDR_RANGE), REPEAT with
    nothing before it (or only control instructions) -> BAD_INSTRUCTION, skipped."""
    p, sim = chip
    w1 = f"mem_w{p.mem_slices - 1}"
    runs = [
        host_traffic(p, {f"{w1}.read": asm({1: OP["READ"].encode(addr=1, stream=0, dir=0),
                                            2: rep(1, 1, -2)})}),
        host_traffic(p, {"mem_w0.write": [OP["CONFIG"].encode(mask=3), OP["NOP"].encode(count=2),
                                          rep(2, 1, 1)[0], OP["NOP"].encode(count=2),
                                          OP["HALT"].encode()],
                         "mxm_w.compute": [rep(1, 1, 0)[0], OP["HALT"].encode()]}),
    ]
    res = cross_check(chip, runs, [ErrorFlag.ADDR_RANGE, ErrorFlag.BAD_INSTRUCTION])
    assert res[0][0][2] == 2                # the copy (addr 0xFFFF) issues at 2
    assert res[1][0] == (7, int(ErrorFlag.BAD_INSTRUCTION), 0)   # HALT at 6


def test_repeat_mxm_lw_abc_acc(chip):
    """A matmul built with REPEAT: READ/LW rows, IW, READ/ABC activations, ACC/WRITE int32 planes
    into four MEM slices; checked against numpy and the model."""
    p, sim = chip
    rng = np.random.default_rng(41)
    vl = p.vl
    n_x = 3
    w = rng.integers(-128, 128, size=(vl, vl), dtype=np.int64)
    w[0, :4] = [-128, 127, 0, 1]
    x = rng.integers(-128, 128, size=(n_x, vl), dtype=np.int64)
    src = f"mem_w{p.mem_slices - 1}"            # next to the MXM
    d_w = int(Dir.WEST)
    preload = [(idx(p, src), r, w[r].astype(np.uint8)) for r in range(vl)]
    preload += [(idx(p, src), vl + i, x[i].astype(np.uint8)) for i in range(n_x)]
    t = 1
    t_lw = arrival(p, src, "mxm_w", t)
    t_iw = t_lw + vl
    t_x = t_iw + 1 - (t_lw - t)                 # READ of x so that ABC issues after IW
    t_abc = t_iw + 1
    reads = {t: OP["READ"].encode(addr=0, stream=1, dir=d_w), t + 1: rep(vl - 1, 1, 1),
             t_x: OP["READ"].encode(addr=vl, stream=2, dir=d_w), t_x + 1: rep(n_x - 1, 2, 1)}
    t_abc_last = t_abc + 2 * (n_x - 1)
    t_acc = t_abc_last + OP["ABC"].d_func(p) + 1
    dsts = [s.name for s in p.mem_slice_list][:4]
    programs = {
        f"{src}.read": asm(reads),
        "mxm_w.weights": asm({t_lw: OP["LW"].encode(row=0, stream=1, dir=d_w),
                              t_lw + 1: rep(vl - 1, 1, 1), t_iw: OP["IW"].encode()}),
        "mxm_w.compute": asm({t_abc: OP["ABC"].encode(acc=2, stream=2, dir=d_w, accumulate=0),
                              t_abc + 1: rep(n_x - 1, 2, 3)}),
        "mxm_w.result": asm({t_acc: OP["ACC"].encode(acc=2, group=1, dir=int(Dir.EAST)),
                             t_acc + 1: rep(n_x - 1, 1, 3)}),
    }
    for b, name in enumerate(dsts):
        ta = arrival(p, "mxm_w", name, t_acc, "ACC")
        programs[f"{name}.write"] = asm({ta: OP["WRITE"].encode(addr=p.mem_words + 5, stream=4 + b,
                                                                 dir=int(Dir.EAST)),
                                         ta + 1: rep(n_x - 1, 1, -1)})
    res = cross_check(chip, [host_traffic(p, programs, preload)], [0])
    mem = res[0][1]
    y = (x @ w.T).astype(np.int32)              # y[i][n] = sum_k W[n][k] x[i][k]
    for i in range(n_x):
        planes = np.stack([mem[idx(p, name), p.mem_words + 5 - i] for name in dsts])
        got = planes.T.copy().view(np.int32).reshape(vl)
        np.testing.assert_array_equal(got, y[i], err_msg=f"result {i}")


def test_sync_notify(chip):
    """SYNC parks a queue until a NOTIFY of any queue (same cycle or later); the next instruction
    issues the cycle after the NOTIFY. WRITEs placed by that rule receive the READs' data."""
    p, sim = chip
    rng = np.random.default_rng(51)
    n = p.mem_slices
    w_src, e_src = f"mem_w{n - 1}", "mem_e0"
    w_dst, e_dst = f"mem_e{n - 1}", "mem_w0"
    t_n1, t_n2 = 6, 13                          # NOTIFYs (from two different queues)
    # queue A: SYNC at 0 -> released by NOTIFY at 6 -> READ at 7
    # queue B: NOP, SYNC at 6 (same cycle as the NOTIFY) -> READ at 7 ... then SYNC at 9 -> READ at 14
    ra = OP["READ"].encode(addr=1, stream=2, dir=int(route_dir(p, w_src, w_dst)))
    rb = OP["READ"].encode(addr=2, stream=5, dir=int(route_dir(p, e_src, e_dst)))
    rb2 = OP["READ"].encode(addr=3, stream=6, dir=int(route_dir(p, e_src, e_dst)))
    sync, notify = OP["SYNC"].encode(), OP["NOTIFY"].encode()
    programs = {
        f"{w_src}.read": asm({0: (sync, t_n1 + 1), t_n1 + 1: ra}),
        f"{e_src}.read": asm({t_n1: (sync, 1), t_n1 + 1: rb, 9: (sync, t_n2 + 1 - 9),
                              t_n2 + 1: rb2}),
        "mxm_w.weights": asm({t_n1: notify}),
        f"mem_w{n - 1}.write": asm({t_n2: notify}),
    }
    ta = arrival(p, w_src, w_dst, t_n1 + 1)
    tb_ = arrival(p, e_src, e_dst, t_n1 + 1)
    tb2 = arrival(p, e_src, e_dst, t_n2 + 1)
    programs[f"{w_dst}.write"] = asm({ta: OP["WRITE"].encode(addr=p.mem_words, stream=2,
                                                              dir=int(route_dir(p, w_src, w_dst)))})
    programs[f"{e_dst}.write"] = asm({tb_: OP["WRITE"].encode(addr=p.mem_words + 1, stream=5,
                                                               dir=int(route_dir(p, e_src, e_dst))),
                                      tb2: OP["WRITE"].encode(addr=p.mem_words + 2, stream=6,
                                                              dir=int(route_dir(p, e_src, e_dst)))})
    vecs = rand_vecs(rng, p, 3)
    preload = [(idx(p, w_src), 1, vecs[0]), (idx(p, e_src), 2, vecs[1]), (idx(p, e_src), 3, vecs[2])]
    res = cross_check(chip, [host_traffic(p, programs, preload)], [0])
    mem = res[0][1]
    assert res[0][0][0] == max(ta, tb2) + 2
    np.testing.assert_array_equal(mem[idx(p, w_dst), p.mem_words], vecs[0])
    np.testing.assert_array_equal(mem[idx(p, e_dst), p.mem_words + 1], vecs[1])
    np.testing.assert_array_equal(mem[idx(p, e_dst), p.mem_words + 2], vecs[2])


def test_config_partial_mask(chip):
    """CONFIG masks: a WRITE with a partial mask updates only the enabled superlanes; disabled
    tiles neither drive nor check; a bank conflict needs a superlane enabled for both; CONFIG in
    an MXM queue is ignored; the next START enables every superlane again."""
    p, sim = chip
    rng = np.random.default_rng(61)
    S, L = p.superlanes, p.lanes
    mask = 0b0101 if S == 4 else 0b01
    lanes_on = np.repeat([(mask >> c) & 1 for c in range(S)], L).astype(bool)
    src, dst = f"mem_w{p.mem_slices - 1}", f"mem_e{p.mem_slices - 1}"
    d = int(route_dir(p, src, dst))
    vecs = rand_vecs(rng, p, 4)
    old = rand_vecs(rng, p, 2)
    t = 2
    ta = arrival(p, src, dst, t)
    cfg = OP["CONFIG"].encode
    copy = {
        f"{src}.read": asm({0: cfg(mask=0xFFFF), t: OP["READ"].encode(addr=0, stream=4, dir=d),
                            t + 1: OP["READ"].encode(addr=1, stream=5, dir=d),
                            t + 2: cfg(mask=mask),
                            t + 4: OP["READ"].encode(addr=2, stream=6, dir=d)}),
        f"{dst}.write": asm({ta - 1: cfg(mask=mask),
                             ta: OP["WRITE"].encode(addr=p.mem_words, stream=4, dir=d),
                             ta + 1: cfg(mask=0),             # nothing written, nothing checked
                             ta + 2: OP["WRITE"].encode(addr=p.mem_words + 1, stream=7, dir=d),
                             ta + 3: cfg(mask=mask),          # same mask as the READ: no error
                             ta + 4: OP["WRITE"].encode(addr=p.mem_words + 2, stream=6, dir=d)}),
        # READ (superlane mask) and WRITE (complement) on one bank: no common superlane
        "mem_w0.read": asm({0: cfg(mask=mask), 4: OP["READ"].encode(addr=5, stream=0, dir=0)}),
        "mem_w0.write": asm({0: cfg(mask=~mask & 0xFFFF),
                             4: OP["WRITE"].encode(addr=6, stream=0, dir=0)}),
        "mxm_w.weights": asm({0: cfg(mask=0), 1: OP["LW"].encode(row=0, stream=0, dir=0)}),
    }
    preload = [(idx(p, src), i, vecs[i]) for i in range(3)]
    preload += [(idx(p, dst), p.mem_words + i, old[i % 2]) for i in range(3)]
    conflict = {"mem_w0.read": asm({0: cfg(mask=mask), 4: OP["READ"].encode(addr=5, stream=0,
                                                                            dir=0)}),
                "mem_w0.write": asm({0: cfg(mask=mask | (mask << 1)),
                                     4: OP["WRITE"].encode(addr=6, stream=0, dir=0)})}
    again = {f"{src}.read": asm({t: OP["READ"].encode(addr=0, stream=4, dir=d)}),
             f"{dst}.write": asm({ta: OP["WRITE"].encode(addr=p.mem_words + 3, stream=4, dir=d)})}
    runs = [host_traffic(p, copy, preload), host_traffic(p, conflict), host_traffic(p, again)]
    res = cross_check(chip, runs)
    (_, e0, _), mem = res[0]
    assert e0 == int(ErrorFlag.STREAM_UNWRITTEN)          # mem_w0's WRITE in its enabled tiles
    np.testing.assert_array_equal(mem[idx(p, dst), p.mem_words],
                                  np.where(lanes_on, vecs[0], old[0]))
    np.testing.assert_array_equal(mem[idx(p, dst), p.mem_words + 1], old[1])
    np.testing.assert_array_equal(mem[idx(p, dst), p.mem_words + 2],
                                  np.where(lanes_on, vecs[2], old[0]))
    assert res[1][0][1] == int(ErrorFlag.BANK_CONFLICT | ErrorFlag.STREAM_UNWRITTEN)
    np.testing.assert_array_equal(res[2][1][idx(p, dst), p.mem_words + 3], vecs[0])
    assert res[2][0][1] == 0


@pytest.mark.parametrize("which", ["gather", "scatter"])
def test_gather_scatter(chip, which):
    """GATHER / SCATTER with random maps (wrapping past the end of the bank); the map comes from a
    READ in another slice; checked against numpy fancy indexing and the model."""
    p, sim = chip
    rng = np.random.default_rng(71 if which == "gather" else 72)
    mw, vl = p.mem_words, p.vl
    n = p.mem_slices
    g, msrc, dst = "mem_e0", f"mem_w{n - 1}", f"mem_e{n - 1}"
    dm = int(route_dir(p, msrc, g))
    maps = rng.integers(0, 256, size=(2, vl), dtype=np.uint8)
    maps[0, :4] = [255, 0, mw - 1, 1]
    base = [mw + mw - 3, 5]                     # bank 1 near its end (wraps), bank 0
    table = rng.integers(0, 256, size=(p.mem_addr_words, vl), dtype=np.uint8)
    lanes = np.arange(vl)
    t = 1
    tm = arrival(p, msrc, g, t)
    preload = [(idx(p, msrc), 10 + i, maps[i]) for i in range(2)]
    # the words the maps reach (loading only those keeps the host traffic short)
    touched = sorted({p.mem_bank_of(b) * mw + (b % mw + int(v)) % mw for b, mp in zip(base, maps)
                      for v in mp} | {0, p.mem_addr_words - 1})
    if which == "gather":
        preload += [(idx(p, g), a, table[a]) for a in touched]
        dg = int(route_dir(p, g, dst))
        programs = {
            f"{msrc}.read": asm({t: OP["READ"].encode(addr=10, stream=3, dir=dm),
                                 t + 1: OP["READ"].encode(addr=11, stream=3, dir=dm)}),
            f"{g}.read": asm({tm: OP["GATHER"].encode(addr=base[0], map_stream=3, map_dir=dm,
                                                      stream=1, dir=dg),
                              tm + 1: OP["GATHER"].encode(addr=base[1], map_stream=3, map_dir=dm,
                                                          stream=1, dir=dg)}),
            f"{dst}.write": asm({arrival(p, g, dst, tm): OP["WRITE"].encode(addr=0, stream=1, dir=dg),
                                 arrival(p, g, dst, tm) + 1: rep(1, 1, 1)}),
        }
        res = cross_check(chip, [host_traffic(p, programs, preload)], [0])
        mem = res[0][1]
        for i in range(2):
            bank, w0 = p.mem_bank_of(base[i]), base[i] % mw
            exp = table[bank * mw + (w0 + maps[i].astype(int)) % mw, lanes]
            np.testing.assert_array_equal(mem[idx(p, dst), i], exp, err_msg=f"GATHER {i}")
    else:
        data = rand_vecs(rng, p, 2)
        old = np.zeros((p.mem_addr_words, vl), dtype=np.uint8)      # unwritten words stay 0
        for a in touched:
            old[a] = table[a]
            preload.append((idx(p, g), a, old[a]))
        # the data comes from mem_w0's read queue, timed to reach the SCATTER with the map
        preload += [(idx(p, "mem_w0"), 20 + i, data[i]) for i in range(2)]
        programs = {f"{msrc}.read": asm({t: OP["READ"].encode(addr=10, stream=3, dir=dm),
                                         t + 1: rep(1, 1, 1)})}
        td = tm - OP["READ"].d_func(p) - abs(pos(p, g) - pos(p, "mem_w0"))
        programs["mem_w0.read"] = asm({td: OP["READ"].encode(addr=20, stream=4, dir=dm),
                                       td + 1: rep(1, 1, 1)})
        programs[f"{g}.write"] = asm({tm: OP["SCATTER"].encode(addr=base[0], map_stream=3,
                                                               map_dir=dm, stream=4, dir=dm),
                                      tm + 1: OP["SCATTER"].encode(addr=base[1], map_stream=3,
                                                                   map_dir=dm, stream=4, dir=dm)})
        res = cross_check(chip, [host_traffic(p, programs, preload)], [0])
        mem = res[0][1]
        exp = old.copy()
        for i in range(2):
            bank, w0 = p.mem_bank_of(base[i]), base[i] % mw
            exp[bank * mw + (w0 + maps[i].astype(int)) % mw, lanes] = data[i]
        np.testing.assert_array_equal(mem[idx(p, g)], exp)


def test_xcheck_host_traffic(chip):
    """Model vs RTL on the earlier programs: MEM copies, bank conflict, address and stream
    ranges, unwritten stream, bad instructions, IMEM overrun (one chip, consecutive runs)."""
    p, sim = chip
    rng = np.random.default_rng(3)
    programs, moves, _, _ = copy_plan(p, 3)
    n = p.mem_addr_words
    w0, w1 = "mem_w0", f"mem_w{p.mem_slices - 1}"
    enc = {m: OP[m].encode for m in OP}
    cases = [
        programs,
        {f"{w0}.read": assemble({4: enc["READ"](addr=p.mem_words + 1, stream=0, dir=0)}, 5),
         f"{w0}.write": assemble({4: enc["WRITE"](addr=p.mem_words + 2, stream=0, dir=0)}, 5)},
        {f"{w1}.read": assemble({3: enc["READ"](addr=n, stream=0, dir=0)}, 4)},
        {f"{w1}.read": assemble({3: enc["READ"](addr=1, stream=p.streams + 1, dir=0)}, 6)},
        {f"{w0}.write": assemble({5: enc["WRITE"](addr=0, stream=7, dir=1)}, 6)},
        {f"{w0}.read": [enc["NOP"](count=2), enc["WRITE"](addr=0, stream=0, dir=0), 0x3F,
                        enc["READ"](addr=3, stream=1, dir=0), enc["HALT"]()]},
        {f"{w1}.write": [enc["NOP"](count=2)] * p.imem_words},
    ]
    vecs = rand_vecs(rng, p, len(moves))
    runs = [host_traffic(p, progs) for progs in cases]
    runs[0] = host_traffic(p, programs, [(ss, sa, v) for (ss, sa, _, _), v in zip(moves, vecs)])
    res = cross_check(chip, runs, [0, ErrorFlag.BANK_CONFLICT | ErrorFlag.STREAM_UNWRITTEN,
                                ErrorFlag.ADDR_RANGE, ErrorFlag.ADDR_RANGE,
                                ErrorFlag.STREAM_UNWRITTEN, ErrorFlag.BAD_INSTRUCTION,
                                ErrorFlag.IMEM_OVERRUN])
    for (_, _, ds, da), v in zip(moves, vecs):
        np.testing.assert_array_equal(res[0][1][ds, da], v)


def test_chip_smoke_in_the_amaranth_simulator():
    """The chip in Amaranth's simulator (the path of ``AmaranthBackend`` and of the
    Amaranth-simulator tests of ``test_pipeline_params.py`` / ``test_size_options.py``): MEM
    copies through the fabric over the host-driver backend, and a REPEAT matmul through the MXM
    cross-checked against the model (MEM read back through the back door), on tiny."""
    run = ChipRun(preset("tiny"), "amaranth")
    test_mem_copy_through_fabric(run)
    test_repeat_mxm_lw_abc_acc(run)
