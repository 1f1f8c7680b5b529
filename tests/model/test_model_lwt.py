"""Reference-model semantics of LWT (transposed weight load), its schedule-hazard check, and the
one-byte VSEL condition, checked against numpy on small directed programs."""

import dataclasses

import numpy as np
import pytest

from openlpu import isa, vxm_ops
from openlpu.firmware.asm import assemble
from openlpu.hostmap import imem_addr
from openlpu.isa import ErrorFlag
from openlpu.verification.model import LpuModel, ModelError
from openlpu.verification.model.chip import ScheduleHazard

from ..conftest import int8_operands


def load(p, text, strict=True, check=True):
    m = LpuModel(p, strict=strict)
    progs = assemble(text, p, check=check)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    for q in p.queues:
        for i, w in enumerate(progs.get(q.name, [halt])):
            m.write(imem_addr(p, q.index, i), w)
    return m


def nop(n):
    return f"NOP {n}" if n > 0 else ""


def repeat(n):
    """REPEAT n more copies, one per cycle, address field + 1 (nothing for n = 0)."""
    return f"REPEAT {n}, 1, 1" if n > 0 else ""


def dist(p, a, b):
    return abs(p.slice(a).position - p.slice(b).position)


def lwt_matmul_program(p, n_x, gap, lw_rows=0):
    """``lw_rows`` rows by LW (mem_w1 words 100..), then every column k by LWT (mem_w1 word k,
    REPEAT), IW ``gap`` cycles after the last LWT, then ``n_x`` ABCs (mem_w0 words 0.., acc rows
    0..). Returns (text, IW cycle)."""
    S, vl = p.superlanes, p.vl
    lat_b = 1 + dist(p, "mem_w1", "mxm_w")
    lat_a = 1 + dist(p, "mem_w0", "mxm_w")
    lw = ""
    rd = ""
    t_lwt = lat_b
    if lw_rows:                              # LW and LWT on the same bytes >= S cycles apart
        lw = f"LW 0, s2, W\n    {repeat(lw_rows - 1)}\n    {nop(S - 1)}\n    "
        rd = f"READ 100, s2, W\n    {repeat(lw_rows - 1)}\n    {nop(S - 1)}\n    "
        t_lwt += lw_rows + S - 1
    t_iw = t_lwt + vl - 1 + gap
    t_abc = t_iw + 1
    text = f"""
.queue mem_w1.read
    {rd}READ 0, s1, W
    REPEAT {vl - 1}, 1, 1
    HALT
.queue mxm_w.weights
    {nop(lat_b)}
    {lw}LWT 0, s1, W
    REPEAT {vl - 1}, 1, 1
    {nop(gap - 1)}
    IW
    HALT
.queue mem_w0.read
    {nop(t_abc - lat_a)}
    READ 0, s0, W
    {repeat(n_x - 1)}
    HALT
.queue mxm_w.compute
    {nop(t_abc)}
    ABC 0, s0, W, 0
    {repeat(n_x - 1)}
    HALT
"""
    return text, t_iw


@pytest.mark.parametrize("kind", ["random", "min", "max", "one"])
def test_lwt_matmul(params, kind):
    """Columns by LWT (with REPEAT advancing col), IW exactly `superlanes` cycles later."""
    p = params
    rng = np.random.default_rng(21)
    W = int8_operands(rng, (p.vl, p.vl), kind)      # W[n][k]
    W[:, 0] = int8_operands(rng, p.vl)
    xs = int8_operands(rng, (4, p.vl))
    xs[1] = -128
    text, _ = lwt_matmul_program(p, len(xs), p.superlanes)
    m = load(p, text)
    m.mem[p.slice("mem_w1").index, :p.vl] = (W.T & 0xFF).astype(np.uint8)   # word k = column k
    m.mem[p.slice("mem_w0").index, :len(xs)] = (xs & 0xFF).astype(np.uint8)
    m.start()
    assert m.errors == 0
    np.testing.assert_array_equal(m.weights, W)
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(m.acc[i], W @ x)


def test_lw_then_lwt(params):
    """Rows by LW, then every column by LWT: the columns overwrite the rows."""
    p = params
    rng = np.random.default_rng(22)
    W = int8_operands(rng, (p.vl, p.vl))
    R = int8_operands(rng, (3, p.vl))
    x = int8_operands(rng, (1, p.vl))
    text, _ = lwt_matmul_program(p, 1, p.superlanes, lw_rows=3)
    m = load(p, text)
    w1 = p.slice("mem_w1").index
    m.mem[w1, :p.vl] = (W.T & 0xFF).astype(np.uint8)
    m.mem[w1, 100:103] = (R & 0xFF).astype(np.uint8)
    m.mem[p.slice("mem_w0").index, 0] = (x[0] & 0xFF).astype(np.uint8)
    m.start()
    np.testing.assert_array_equal(m.weights, W)
    np.testing.assert_array_equal(m.acc[0], W @ x[0])
    # with fewer columns than VL, the LW rows survive outside the loaded columns
    text = text.replace(f"LWT 0, s1, W\n    REPEAT {p.vl - 1}, 1, 1",
                        f"LWT 1, s1, W\n    REPEAT {p.vl - 2}, 1, 1\n    NOP 1")
    m = load(p, text)
    m.mem[w1, :p.vl] = (W.T & 0xFF).astype(np.uint8)
    m.mem[w1, 100:103] = (R & 0xFF).astype(np.uint8)
    m.start()
    want = np.zeros((p.vl, p.vl), dtype=np.int64)
    want[:3] = R
    want[:, 1:] = W[:, :p.vl - 1]                  # LWT col c loads word c - 1
    np.testing.assert_array_equal(m.weights, want)


@pytest.mark.parametrize("order", ["lwt_iw", "iw_lwt"])
def test_schedule_hazard(params, order):
    """IW within superlanes-1 cycles after an LWT (or an LWT after an IW) raises ScheduleHazard
    even when not strict; exactly `superlanes` cycles apart is fine."""
    p = params
    S = p.superlanes
    assert S >= 2
    for gap in range(1, S + 1):
        first, second = (("LWT 5, s1, W", "IW") if order == "lwt_iw" else
                         ("IW", "LWT 5, s1, W"))
        m = load(p, f"""
.queue mxm_w.weights
    NOP 3
    {first}
    {nop(gap - 1)}
    {second}
    HALT
""", strict=False)
        if gap < S:
            with pytest.raises(ScheduleHazard) as e:
                m.start()
            msg = str(e.value)
            assert "IW" in msg and "LWT" in msg
            assert f"cycle {3}" in msg and f"cycle {3 + gap}" in msg
            assert e.value.first_cycle == 3 and e.value.second_cycle == 3 + gap
        else:
            m.start()
            assert m.errors == ErrorFlag.STREAM_UNWRITTEN      # the LWT's empty stream only


def test_schedule_hazard_after_repeat(params):
    """The check applies to every REPEAT copy: an IW right after a repeated LWT."""
    p = params
    m = load(p, """
.queue mxm_w.weights
    LWT 0, s1, W
    REPEAT 3, 1, 1
    IW
    HALT
""", strict=False)
    with pytest.raises(ScheduleHazard, match=r"IW at cycle 4 .*LWT 3 at cycle 3"):
        m.start()


def test_lwt_errors(params):
    """col >= VL: ADDR_RANGE and nothing written; an unwritten stream: STREAM_UNWRITTEN."""
    p = params
    m = load(p, f"""
.queue mxm_w.weights
    LWT {p.vl}, s1, W
    HALT
""", strict=False, check=False)
    m.shadow[:] = 7
    m.start()
    assert m.errors & ErrorFlag.ADDR_RANGE
    assert (m.shadow == 7).all()                     # a bad column writes nothing
    m = load(p, """
.queue mxm_w.weights
    LWT 2, s1, W
    HALT
""")
    with pytest.raises(ModelError, match="STREAM_UNWRITTEN"):
        m.start()


@pytest.mark.parametrize("dtype", [0, 1, 2])
def test_vsel_one_byte_condition(params, dtype):
    """VSEL reads its condition from one byte stream at any dtype: only stream b_stream is
    sampled (the streams after it are never written, and strict mode sees no error), and a lane
    selects a where that byte is non-zero."""
    p = dataclasses.replace(params, name=params.name + "-vxm", vxm_alus=4)
    rng = np.random.default_rng(23 + dtype)
    x = int8_operands(rng, p.vl)
    mask = int8_operands(rng, p.vl)
    mask[::3] = 0
    const = np.int64(-77)
    t_v = 1 + dist(p, "mem_w0", "vxm")
    lat = isa.VXM_SIMPLE_LATENCY
    t_op = t_v + lat + 1
    w = vxm_ops.DTYPE_BYTES[dtype]
    # a: x cast to dtype (ALU0, chained on streams 0..w-1); b: the int8 mask, read from mem_w1
    # so it arrives at the VXM at t_op on stream 4 (input side); ALU2's constant = const
    t_m = t_op - (1 + dist(p, "mem_w1", "vxm"))
    text = f"""
.queue mem_w0.read
    READ 0, s0, E
    HALT
.queue mem_w1.read
    {nop(t_m)}
    READ 1, s4, E
    HALT
.queue vxm.alu0
    {nop(t_v)}
    VCAST 0, E, 0, 0, E, 0, E, 0, {dtype}
    HALT
.queue vxm.alu2
    {nop(t_op)}
    VSEL 0, E, 1, 4, E, 0, E, {dtype}, 0
    HALT
"""
    for b in range(min(w, 2)):                       # result planes 0 and 1 to mem_e0 / mem_e1
        text += f""".queue mem_e{b}.write
    {nop(t_op + lat + dist(p, "vxm", f"mem_e{b}"))}
    WRITE {10 + b}, s{b}, E
    HALT
"""
    m = load(p, text)
    m.mem[p.slice("mem_w0").index, 0] = (x & 0xFF).astype(np.uint8)
    m.mem[p.slice("mem_w1").index, 1] = (mask & 0xFF).astype(np.uint8)
    m.vxm_const[2][:] = const
    m.start()
    assert m.errors == 0
    want = np.where(mask != 0, x, const)             # x is int8: cast is exact
    got = np.zeros(p.vl, dtype=np.int64)
    for b in range(min(w, 2)):
        got |= m.mem[p.slice(f"mem_e{b}").index, 10 + b].astype(np.int64) << (8 * b)
    np.testing.assert_array_equal(got, np.asarray(want) & ((1 << (8 * min(w, 2))) - 1))
    np.testing.assert_array_equal(vxm_ops.select(mask, x, const), want)


def test_select_tests_the_low_byte():
    mask = np.array([0, 1, 256, -256, 0x7F00, 0x101, -1, 0x80, 1 << 24])
    a, c = np.arange(9) + 100, np.full(9, -5)
    want = np.where((mask & 0xFF) != 0, a, c)
    np.testing.assert_array_equal(vxm_ops.select(mask, a, c), want)
    assert list(vxm_ops.select(mask, a, c)[[2, 3, 4, 8]]) == [-5] * 4
