"""Unit tests of the stream-register fabric (rtl/fabric.py) in Amaranth's simulator.

Random drives from every floorplan position, every cycle; the expected SR contents come from a
numpy implementation of the update rule in docs/architecture.md (Streams).
"""

import numpy as np
from amaranth.back import verilog

from openlpu.isa import Dir
from openlpu.rtl.fabric import StreamFabric
from openlpu.rtl.testing import pack_drive, run_sim, unpack_column

EAST, WEST = Dir.EAST, Dir.WEST


def test_fabric_random(params):
    rng = np.random.default_rng(5)
    n_pos, cols = len(params.floorplan), params.sr_columns
    S, N, L = params.superlanes, params.streams, params.lanes
    cycles = 14
    clear_at = 9
    edge = np.array([0x80, 0x7F, 0x00, 0x01], dtype=np.uint8)   # -128, 127, 0, 1
    drives = []
    for t in range(cycles):
        per = {}
        for p in range(n_pos):
            for d in (EAST, WEST):
                en = rng.random((S, N)) < 0.25
                dat = rng.integers(0, 256, size=(S, N, L), dtype=np.uint8)
                if t == 0:
                    dat[..., :] = np.resize(edge, L)
                per[p, d] = (en, dat)
        drives.append(per)

    # reference: the documented update rule
    sr = np.zeros((2, cols, S, N, L), dtype=np.uint8)
    valid = np.zeros((2, cols, S, N), dtype=bool)
    expect = []
    for t in range(cycles):
        expect.append((sr.copy(), valid.copy()))
        nsr, nval = sr.copy(), valid.copy()
        for i in range(cols - 1):       # east[i+1] <= drive(i) or east[i]
            en, dat = drives[t][i, EAST]
            nsr[EAST, i + 1] = np.where(en[..., None], dat, sr[EAST, i])
            nval[EAST, i + 1] = en | valid[EAST, i]
        for i in range(cols - 1):       # west[i] <= drive(i) or west[i+1]
            en, dat = drives[t][i, WEST]
            nsr[WEST, i] = np.where(en[..., None], dat, sr[WEST, i + 1])
            nval[WEST, i] = en | valid[WEST, i + 1]
        nsr[EAST, 0] = 0
        nval[EAST, 0] = False
        nsr[WEST, cols - 1] = 0
        nval[WEST, cols - 1] = False
        if t == clear_at:
            nval[:] = False
        sr, valid = nsr, nval

    dut = StreamFabric(params)

    async def tb(ctx):
        for t in range(cycles):
            for i in range(cols):
                for d, port in ((EAST, dut.east), (WEST, dut.west)):
                    got_d, got_v = unpack_column(params, ctx.get(port[i].as_value()))
                    exp_d, exp_v = expect[t][0][d, i], expect[t][1][d, i]
                    np.testing.assert_array_equal(got_v, exp_v,
                                                  err_msg=f"valid t={t} col={i} d={d}")
                    # data matters only where valid (the data registers have no reset)
                    np.testing.assert_array_equal(got_d[exp_v], exp_d[exp_v],
                                                  err_msg=f"data t={t} col={i} d={d}")
            for p in range(n_pos):
                for d, port in ((EAST, dut.drive_east), (WEST, dut.drive_west)):
                    en, dat = drives[t][p, d]
                    ctx.set(port[p].as_value(), pack_drive(params, dat, en))
            ctx.set(dut.clear, t == clear_at)
            await ctx.tick()

    run_sim(dut, tb, max_cycles=cycles + 10)


def test_fabric_converts(params):
    verilog.convert(StreamFabric(params), emit_src=False)


def test_sr_column_random(params):
    """The shared column module of the big chips' Verilog (SrColumn), on its own: the same
    update rule, one cycle from drive or upstream to out, clear on the valid bits only."""
    from openlpu.rtl.fabric import SrColumn
    from openlpu.rtl.testing import pack_column
    rng = np.random.default_rng(11)
    S, N, L = params.superlanes, params.streams, params.lanes
    cycles, clear_at = 12, 7
    steps = [(rng.random((S, N)) < 0.4, rng.integers(0, 256, (S, N, L), dtype=np.uint8),
              rng.random((S, N)) < 0.5, rng.integers(0, 256, (S, N, L), dtype=np.uint8))
             for _ in range(cycles)]
    sr = np.zeros((S, N, L), dtype=np.uint8)
    valid = np.zeros((S, N), dtype=bool)
    expect = []
    for t, (en, dat, up_valid, up_dat) in enumerate(steps):
        expect.append((sr.copy(), valid.copy()))
        sr = np.where(en[..., None], dat, up_dat)
        valid = (en | up_valid) & (t != clear_at)
    dut = SrColumn(params)

    async def tb(ctx):
        for t, (en, dat, up_valid, up_dat) in enumerate(steps):
            got_d, got_v = unpack_column(params, ctx.get(dut.out.as_value()))
            np.testing.assert_array_equal(got_v, expect[t][1], err_msg=f"valid t={t}")
            np.testing.assert_array_equal(got_d[expect[t][1]], expect[t][0][expect[t][1]],
                                          err_msg=f"data t={t}")
            ctx.set(dut.drive.as_value(), pack_drive(params, dat, en))
            ctx.set(dut.upstream.as_value(), pack_column(params, up_dat, up_valid))
            ctx.set(dut.clear, t == clear_at)
            await ctx.tick()

    run_sim(dut, tb, max_cycles=cycles + 10)
