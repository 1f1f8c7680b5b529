"""Reference-model semantics of VXM, SXM, REPEAT, SYNC/NOTIFY, CONFIG and GATHER/SCATTER,
checked against numpy on small directed programs (the RTL is then checked against the model)."""

import dataclasses

import numpy as np
import pytest

from openlpu import isa, vxm_ops
from openlpu.firmware.asm import assemble
from openlpu.hostmap import imem_addr
from openlpu.params import preset
from openlpu.verification.model import LpuModel


@pytest.fixture(params=["tiny", "quad"])
def full(request):
    """A preset with every slice kind: 4 VXM ALUs and both SXMs."""
    return dataclasses.replace(preset(request.param), name=request.param + "-full", vxm_alus=4,
                               sxm=True)


def load(p, text):
    m = LpuModel(p, strict=True)
    progs = assemble(text, p)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    for q in p.queues:
        for i, w in enumerate(progs.get(q.name, [halt])):
            m.write(imem_addr(p, q.index, i), w)
    return m


def nop(n):
    return f"NOP {n}" if n > 0 else ""


def dist(p, a, b):
    return abs(p.slice(a).position - p.slice(b).position)


def test_vxm_chain_cast_mul_requantize(full):
    p = full
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, p.vl)
    t_v = 1 + dist(p, "mem_w0", "vxm")
    lat = isa.VXM_SIMPLE_LATENCY
    m = load(p, f"""
.queue mem_w0.read
    READ 5, s0, E
    HALT
.queue vxm.alu0
    {nop(t_v)}
    VCAST 0, E, 0, 0, E, 0, E, 0, 2
    HALT
.queue vxm.alu1
    {nop(t_v + lat + 1)}
    VMUL 0, E, 1, 29, W, 3, E, 2, 0
    HALT
.queue vxm.alu2
    {nop(t_v + 2 * (lat + 1))}
    VREQ 0, E, 1, 0, E, 2, E, 2, 3
    HALT
.queue mem_e0.write
    {nop(t_v + 3 * (lat + 1) - 1 + dist(p, "vxm", "mem_e0"))}
    WRITE {p.mem_words + 7}, s0, E
    HALT
""")
    m.mem[p.slice("mem_w0").index, 5] = (x & 0xFF).astype(np.uint8)
    m.vxm_const[2][:] = 3 << 28
    m.start()
    got = m.mem[p.slice("mem_e0").index, p.mem_words + 7].view(np.int8)
    np.testing.assert_array_equal(got, vxm_ops.requantize(x * -3, 3 << 28, 3))


@pytest.mark.parametrize("amount", [0, 1, -1, 3, -5, 300, -511])
def test_sxm_shift(full, amount):
    p = full
    x = np.random.default_rng(1).integers(0, 256, p.vl).astype(np.uint8)
    t_s = 1 + dist(p, "mem_w1", "sxm_w")
    d = isa.BY_MNEMONIC["SHIFT"].d_func(p)
    m = load(p, f"""
.queue mem_w1.read
    READ 2, s3, W
    HALT
.queue sxm_w.shift
    {nop(t_s)}
    SHIFT 3, W, 4, E, {amount}
    HALT
.queue mem_w1.write
    {nop(t_s + d + dist(p, "sxm_w", "mem_w1"))}
    WRITE {p.mem_words}, s4, E
    HALT
""")
    m.mem[p.slice("mem_w1").index, 2] = x
    m.start()
    src = np.arange(p.vl) - amount
    want = np.where((src >= 0) & (src < p.vl), x[np.clip(src, 0, p.vl - 1)], 0)
    np.testing.assert_array_equal(m.mem[p.slice("mem_w1").index, p.mem_words], want)


def test_repeat_read_with_stride_and_gather(full):
    p = full
    rng = np.random.default_rng(2)
    sl = p.slice("mem_w0").index
    data = rng.integers(0, 256, (8, p.vl)).astype(np.uint8)
    amap = rng.integers(0, 4, p.vl).astype(np.uint8)
    lat = 1 + dist(p, "mem_w0", "mem_e0")
    # READ words 0,2,4,6 (REPEAT 3, interval 2, stride 2); mem_e0 WRITEs them to 10,11,12,13
    m = load(p, f"""
.queue mem_w0.read
    READ 0, s1, E
    REPEAT 3, 2, 2
    HALT
.queue mem_e0.write
    {nop(lat)}
    WRITE 10, s1, E
    REPEAT 3, 2, 1
    HALT
""")
    m.mem[sl, :8] = data
    m.start()
    np.testing.assert_array_equal(m.mem[p.slice("mem_e0").index, 10:14], data[[0, 2, 4, 6]])
    assert m.cycles == 1 + lat + 3 * 2 + 1
    # GATHER: lane l reads word 2 + map[l]
    m = load(p, f"""
.queue mem_e1.read
    READ 0, s2, W
    HALT
.queue mem_w0.read
    {nop(1 + dist(p, "mem_e1", "mem_w0"))}
    GATHER 2, s2, W, s5, E
    HALT
.queue mem_e0.write
    {nop(2 + dist(p, "mem_e1", "mem_w0") + dist(p, "mem_w0", "mem_e0"))}
    WRITE 20, s5, E
    HALT
""")
    m.mem[sl, :8] = data
    m.mem[p.slice("mem_e1").index, 0] = amap
    m.start()
    want = data[2 + amap.astype(int), np.arange(p.vl)]
    np.testing.assert_array_equal(m.mem[p.slice("mem_e0").index, 20], want)


def test_sync_notify_and_config(full):
    p = full
    # mem_w0.read parks on SYNC until mem_e1.read NOTIFYs at cycle 5; its READ issues at 6
    lat = 1 + dist(p, "mem_w0", "mem_e0")
    m = load(p, f"""
.queue mem_w0.read
    SYNC
    READ 0, s1, E
    HALT
.queue mem_e1.read
    NOP 5
    NOTIFY
    HALT
.queue mem_e0.write
    CONFIG 1
    {nop(6 + lat - 1)}
    WRITE 1, s1, E
    HALT
""")
    x = np.arange(p.vl, dtype=np.uint8) + 1
    m.mem[p.slice("mem_w0").index, 0] = x
    m.start()
    got = m.mem[p.slice("mem_e0").index, 1]
    # CONFIG 1: only superlane 0 stored its lanes
    np.testing.assert_array_equal(got[:p.lanes], x[:p.lanes])
    assert not got[p.lanes:].any()
