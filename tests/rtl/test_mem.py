# amaranth: UnusedElaboratable=no
"""Unit tests of the MEM slice (rtl/mem.py) in Amaranth's simulator.

The slice is driven directly: instructions on its two queues (superlane-0 frame) and random
vectors on its input SR columns. Expected behaviour comes from numpy and from the timing of
docs/architecture.md: READ issued at ``t`` drives at ``t + d_func(READ)`` in superlane 0 and
``c`` cycles later in superlane ``c``; WRITE samples at ``t + d_skew(WRITE) + c``.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog

from openlpu import hostmap, isa
from openlpu.isa import Dir, ErrorFlag
from openlpu.params import preset
from openlpu.rtl.mem import MemSlice, mem_host_addr_bits
from openlpu.rtl.testing import (pack_column, run_sim, tiles_to_vector, unpack_drive,
                                 vector_to_tiles)

OP = isa.BY_MNEMONIC
EDGE = np.array([0x80, 0x7F, 0x00, 0x01], dtype=np.uint8)    # -128, 127, 0, 1


def backdoor_set(ctx, dut, addr, vec):
    """Write vector word ``addr`` of a MemSlice directly into its memories: one byte memory per
    lane, or without ``params.mem_gather`` one ``lanes``-byte memory per superlane (lane 0 in
    its low byte)."""
    p = dut.params
    for c, (row, tile) in enumerate(zip(dut.memories, vector_to_tiles(p, vec))):
        if p.mem_gather:
            for i, mem in enumerate(row):
                ctx.set(mem.data[addr], (tile >> (8 * i)) & 0xFF)
        else:
            ctx.set(row[0].data[addr], tile)


def backdoor_get(ctx, dut, addr):
    """Vector word ``addr`` of a MemSlice, read directly from its memories (layouts as in
    :func:`backdoor_set`)."""
    p = dut.params
    if p.mem_gather:
        return np.array([ctx.get(mem.data[addr]) for row in dut.memories for mem in row],
                        dtype=np.uint8)
    return tiles_to_vector(p, [ctx.get(row[0].data[addr]) for row in dut.memories])


def random_vectors(params, rng, n):
    vecs = rng.integers(0, 256, size=(n, params.vl), dtype=np.uint8)
    vecs[0] = np.resize(EDGE, params.vl)
    return vecs


class MemBench:
    """Runs a MemSlice on a per-cycle stimulus and records its outputs."""

    def __init__(self, params, rng, cycles):
        self.p = params
        self.cycles = cycles
        self.dut = MemSlice(params, params.mem_slice_list[0])
        self.read = {}               # t -> (addr, stream, dir)
        self.write = {}
        S, N, L = params.superlanes, params.streams, params.lanes
        # input SR columns: random data, valid everywhere unless cleared by a test
        self.sr = {d: rng.integers(0, 256, size=(cycles, S, N, L), dtype=np.uint8) for d in Dir}
        self.sr_valid = {d: np.ones((cycles, S, N), dtype=bool) for d in Dir}
        self.preload = {}            # addr -> vector
        self.drives = []             # per cycle: {dir: (data, en)}
        self.errors = []
        self.final_mem = {}

    def run(self):
        p, dut = self.p, self.dut

        async def tb(ctx):
            for a, vec in self.preload.items():
                backdoor_set(ctx, dut, a, vec)
            for t in range(self.cycles):
                for d, port in ((Dir.EAST, dut.sr_east_in), (Dir.WEST, dut.sr_west_in)):
                    ctx.set(port.as_value(), pack_column(p, self.sr[d][t], self.sr_valid[d][t]))
                for q, port, mn in ((self.read, dut.instr_read, "READ"),
                                    (self.write, dut.instr_write, "WRITE")):
                    if t in q:
                        if isinstance(q[t], int):          # a raw instruction word
                            ctx.set(port.word, q[t])
                        else:
                            a, s, d = q[t]
                            ctx.set(port.word, OP[mn].encode(addr=a, stream=s, dir=int(d)))
                        ctx.set(port.valid, 1)
                    else:
                        ctx.set(port.valid, 0)
                self.drives.append({
                    Dir.EAST: unpack_drive(p, ctx.get(dut.drive_east.as_value())),
                    Dir.WEST: unpack_drive(p, ctx.get(dut.drive_west.as_value())),
                })
                self.errors.append(ctx.get(dut.error))
                await ctx.tick()
            for a in range(p.mem_addr_words):
                self.final_mem[a] = backdoor_get(ctx, dut, a)

        run_sim(dut, tb, max_cycles=self.cycles + 10)

    # -- expectations from the timing rule ----------------------------------------------------
    def expected_drives(self, mem_before):
        p = self.p
        d_func = OP["READ"].d_func(p)
        exp = {}                     # (cycle, superlane, dir, stream) -> lanes
        for t, (a, s, d) in self.read.items():
            if a >= p.mem_addr_words or s >= p.streams:
                continue
            for c in range(p.superlanes):
                exp[t + d_func + c, c, d, s] = mem_before[a][c * p.lanes:(c + 1) * p.lanes]
        return exp

    def check_drives(self, exp):
        p = self.p
        for t in range(self.cycles):
            for d in Dir:
                data, en = self.drives[t][d]
                for c in range(p.superlanes):
                    for s in range(p.streams):
                        key = (t, c, d, s)
                        assert bool(en[c, s]) == (key in exp), f"drive en at {key}"
                        if key in exp:
                            np.testing.assert_array_equal(data[c, s], exp[key], err_msg=str(key))


def test_read_and_write_timing(params):
    rng = np.random.default_rng(11)
    p = params
    half = p.mem_words
    vecs = random_vectors(p, rng, 6)
    b = MemBench(p, rng, 16)
    for i in range(6):                      # bank 0 holds the READ sources
        b.preload[i] = vecs[i]
    # READs on bank 0, WRITEs on bank 1, back to back and in the same cycles
    b.read.update({0: (0, 1, Dir.EAST), 1: (1, 7, Dir.WEST), 2: (5, 0, Dir.EAST),
                   5: (2, 3, Dir.WEST), 6: (3, 3, Dir.EAST), 8: (4, 5, Dir.WEST)})
    b.write.update({0: (half + 0, 2, Dir.EAST), 1: (half + 1, 6, Dir.WEST),
                    2: (half + 2, 0, Dir.WEST), 4: (half + 3, 7, Dir.EAST),
                    9: (half + p.mem_words - 1, 4, Dir.WEST)})
    b.run()
    mem_before = {a: b.preload.get(a, None) for a in range(p.mem_addr_words)}
    b.check_drives(b.expected_drives(mem_before))
    d_skew = OP["WRITE"].d_skew
    for t, (a, s, d) in b.write.items():
        exp = np.concatenate([b.sr[d][t + d_skew + c, c, s] for c in range(p.superlanes)])
        np.testing.assert_array_equal(b.final_mem[a], exp, err_msg=f"WRITE at {t}")
    for a in range(6):
        np.testing.assert_array_equal(b.final_mem[a], vecs[a])
    assert all(e == 0 for e in b.errors), b.errors


def test_error_flags(params):
    rng = np.random.default_rng(12)
    p = params
    n = p.mem_addr_words
    b = MemBench(p, rng, 14)
    for a in range(4):
        b.preload[a] = random_vectors(p, rng, 1)[0]
    # t=0: READ and WRITE on bank 0 -> BANK_CONFLICT
    b.read[0] = (0, 0, Dir.EAST)
    b.write[0] = (3, 1, Dir.EAST)
    # t=2: READ out of range -> ADDR_RANGE, nothing driven
    b.read[2] = (n, 1, Dir.WEST)
    # t=4: WRITE out of range -> ADDR_RANGE, nothing written
    b.write[4] = (n + 1, 1, Dir.EAST)
    # t=6: WRITE of an unwritten slot (in every superlane) -> STREAM_UNWRITTEN
    b.write[6] = (p.mem_words + 2, 5, Dir.WEST)
    for c in range(p.superlanes):
        b.sr_valid[Dir.WEST][6 + c, c, 5] = False
    # t=8: READ with a stream index beyond params.streams -> ADDR_RANGE at t + 1, no drive
    b.read[8] = (1, p.streams + 1, Dir.EAST)
    # t=10: READ bank 1 and WRITE bank 0 -> fine
    b.read[10] = (p.mem_words, 2, Dir.EAST)
    b.write[10] = (2, 2, Dir.EAST)
    b.run()
    exp_err = {0: ErrorFlag.BANK_CONFLICT, 2: ErrorFlag.ADDR_RANGE, 4: ErrorFlag.ADDR_RANGE,
               9: ErrorFlag.ADDR_RANGE}
    for c in range(p.superlanes):
        exp_err[6 + c] = exp_err.get(6 + c, 0) | ErrorFlag.STREAM_UNWRITTEN
    got = {t: e for t, e in enumerate(b.errors) if e}
    assert got == {t: int(e) for t, e in exp_err.items()}
    mem_before = {a: b.preload.get(a, np.zeros(p.vl, np.uint8)) for a in range(n)}
    b.check_drives(b.expected_drives(mem_before))
    # the out-of-range WRITE wrote nothing (its address would wrap to 1)
    np.testing.assert_array_equal(b.final_mem[1], mem_before[1])


def test_host_roundtrip(params):
    rng = np.random.default_rng(13)
    p = params
    dut = MemSlice(p, p.mem_slice_list[-1])
    k = p.mem_slice_list[-1].index
    mask = (1 << mem_host_addr_bits(p)) - 1
    cases = []
    for _ in range(10):
        bank = int(rng.integers(0, p.mem_banks))
        word = int(rng.integers(0, p.mem_words))
        c = int(rng.integers(0, p.superlanes))
        g = int(rng.integers(0, p.host_lane_groups))
        cases.append((bank, word, c, g))
    cases += [(1, p.mem_words - 1, p.superlanes - 1, p.host_lane_groups - 1), (0, 0, 0, 0)]
    cases = list(dict.fromkeys(cases))
    values = [int(v) for v in rng.integers(0, 1 << 32, size=len(cases), dtype=np.uint64)]
    values[-1] = hostmap.pack_lanes([0x80, 0x7F, 0x00, 0x01])

    async def tb(ctx):
        for (bank, word, c, g), v in zip(cases, values):
            ctx.set(dut.host.addr, hostmap.mem_addr(p, k, bank, word, c, g) & mask)
            ctx.set(dut.host.w_data, v)
            ctx.set(dut.host.w_en, 1)
            await ctx.tick()
        ctx.set(dut.host.w_en, 0)
        for (bank, word, c, g), v in zip(cases, values):
            ctx.set(dut.host.addr, hostmap.mem_addr(p, k, bank, word, c, g) & mask)
            ctx.set(dut.host.r_en, 1)
            await ctx.tick()
            ctx.set(dut.host.r_en, 0)
            assert ctx.get(dut.host.r_data) == v
            await ctx.tick()
            assert ctx.get(dut.host.r_data) == 0
            # back door: lane 4g+i of the tile holds byte i
            vec = backdoor_get(ctx, dut, bank * p.mem_words + word)
            base = c * p.lanes + 4 * g
            assert hostmap.pack_lanes(vec[base:base + 4]) == v

    run_sim(dut, tb, max_cycles=200)


def test_rejects_other_slices(params):
    with pytest.raises(ValueError, match="kind 'mem'"):
        MemSlice(params, params.slice("mxm_w"))


def test_mem_converts(params):
    verilog.convert(MemSlice(params, params.mem_slice_list[0]), emit_src=False)


def test_config_and_gather(params):
    """CONFIG on the read queue masks later READs per superlane (drives only where enabled);
    GATHER reads word (addr + map[l]) mod mem_words of addr's bank per lane, map sampled at
    t + c from the input-side column, and drives at t + 1 + c."""
    rng = np.random.default_rng(14)
    p = params
    mw = p.mem_words
    b = MemBench(p, rng, 12)
    table = rng.integers(0, 256, size=(p.mem_addr_words, p.vl), dtype=np.uint8)
    for a in range(p.mem_addr_words):
        b.preload[a] = table[a]
    mask = 0b01
    b.read[0] = OP["CONFIG"].encode(mask=mask)
    b.read[1] = (3, 2, Dir.EAST)                          # superlane 0 only
    b.read[2] = OP["CONFIG"].encode(mask=0xFFFF)
    base = mw + mw - 2                                     # bank 1, wraps
    b.read[4] = OP["GATHER"].encode(addr=base, map_stream=5, map_dir=int(Dir.WEST), stream=1,
                                    dir=int(Dir.EAST))
    b.run()
    lanes = np.arange(p.vl)
    for c in range(p.superlanes):
        sl = slice(c * p.lanes, (c + 1) * p.lanes)
        # READ: superlane 0 drives at 2, the others never
        data, en = b.drives[2 + c][Dir.EAST]
        assert bool(en[c, 2]) == (c == 0)
        if c == 0:
            np.testing.assert_array_equal(data[c, 2], table[3][sl])
        # GATHER: map = westward stream 5 at 4 + c, in superlane c
        amap = b.sr[Dir.WEST][4 + c, c, 5].astype(int)
        exp = table[mw + (base % mw + amap) % mw, lanes[sl]]
        data, en = b.drives[5 + c][Dir.EAST]
        assert en[c, 1]
        np.testing.assert_array_equal(data[c, 1], exp, err_msg=f"GATHER superlane {c}")
    drives = sum(int(b.drives[t][d][1].sum()) for t in range(12) for d in Dir)
    assert drives == 1 + p.superlanes
    assert all(e == 0 for e in b.errors), b.errors


# -- without per-lane addressing (params.mem_gather = False) -----------------------------------

NO_GATHER = [dataclasses.replace(preset("tiny"), mem_gather=False, name="tiny_lite"),
             dataclasses.replace(preset("tiny"), lanes=8, mem_gather=False, name="tiny8_lite")]


@pytest.mark.parametrize("params", NO_GATHER, ids=lambda p: p.name)
def test_without_gather_one_wide_memory_per_tile(params):
    """mem_gather=False: each tile is one ``lanes``-byte memory; READ/WRITE timing, the error
    flags and the host port (every 32-bit lane group) behave as with one memory per lane."""
    dut = MemSlice(params, params.mem_slice_list[0])
    assert [len(row) for row in dut.memories] == [1] * params.superlanes
    assert all(row[0].shape.width == 8 * params.lanes and row[0].depth == params.mem_addr_words
               for row in dut.memories)
    verilog.convert(dut, emit_src=False)
    test_read_and_write_timing(params)
    test_error_flags(params)
    test_host_roundtrip(params)
