"""Whole-chip RTL (Verilator) against the reference model, instruction by instruction.

Every VXM and SXM instruction (and the VXM constant register, chaining and collision checker) runs
in a small directed program on the ``mini`` preset, which has every slice kind. The same host
writes go to the Verilator-compiled chip and to the reference model; afterwards CYCLES, ERRORS and
every byte of every MEM slice must be identical, and the written results are also checked
against :mod:`openlpu.vxm_ops` / numpy, so a bug shared by model and RTL is caught too.
"""

from __future__ import annotations

import numpy as np
import pytest

from openlpu import hostmap, isa, vxm_ops
from openlpu.firmware.asm import assemble
from openlpu.isa import HostReg
from openlpu.params import preset
from openlpu.verification.model import ModelBackend

PRESET = "mini"
P = preset(PRESET)
OPS2 = ["ADD", "SUB", "MUL", "MULSHR", "MIN", "MAX", "AND", "OR", "XOR", "SHL", "SRA", "SRL",
        "CMP", "SEL"]
OPS1 = ["RELU", "ABS", "NEG"]


@pytest.fixture(scope="module")
def rtl():
    from openlpu.host.backends import open_backend
    backend = open_backend("verilator", P)
    yield backend
    backend.close()


def _pos(name):
    return P.slice(name).position


def _nop(n):
    return f"    NOP {n}\n" if n > 0 else ""


def _mem_writes(contents):
    """Host writes that put ``{(slice name, addr): byte vector}`` into MEM."""
    out = []
    for (sname, addr), vec in contents.items():
        sl = P.slice(sname).index
        vec = np.asarray(vec, dtype=np.int64) & 0xFF
        for c in range(P.superlanes):
            for g in range(P.host_lane_groups):
                base = c * P.lanes + 4 * g
                out.append((hostmap.mem_addr(P, sl, P.mem_bank_of(addr), addr % P.mem_words, c, g),
                            hostmap.pack_lanes(vec[base:base + 4])))
    return out


def _all_mem_addrs():
    return [hostmap.mem_addr(P, s.index, b, w, c, g)
            for s in P.mem_slice_list for b in range(P.mem_banks) for w in range(P.mem_words)
            for c in range(P.superlanes) for g in range(P.host_lane_groups)]


def run_both(rtl, text, contents, max_cycles=10_000, errors=0):
    """Run one program on RTL and model from a cleared MEM; compare everything; return MEM."""
    progs = assemble(text, P)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    writes = [(hostmap.mem_addr(P, s.index, b, w, c, g), 0)
              for s in P.mem_slice_list for b in range(P.mem_banks) for w in range(P.mem_words)
              for c in range(P.superlanes) for g in range(P.host_lane_groups)]
    writes += _mem_writes(contents)
    for q in P.queues:
        for i, w in enumerate(progs.get(q.name, [halt])):
            writes.append((hostmap.imem_addr(P, q.index, i), w))
    model = ModelBackend(P)
    results = []
    for dev in (rtl, model):
        dev.write_many(writes)
        dev.run(max_cycles)
        regs = [dev.read(hostmap.reg_addr(r)) for r in (HostReg.CYCLES, HostReg.ERRORS)]
        results.append((regs, dev.read_many(_all_mem_addrs())))
    (rtl_regs, rtl_mem), (model_regs, model_mem) = results
    assert rtl_regs == model_regs, f"RTL CYCLES/ERRORS {rtl_regs} != model {model_regs}"
    assert rtl_mem == model_mem, "MEM contents differ between RTL and model"
    if errors is not None:
        assert rtl_regs[1] == errors, f"ERRORS = {isa.ErrorFlag(rtl_regs[1])!r}"
    return model.model, rtl_regs


def _vec(mem, sname, addr):
    return mem.mem[P.slice(sname).index, addr].astype(np.int64)


def _operands(seed, dtype):
    rng = np.random.default_rng(seed)
    bits = 8 * vxm_ops.DTYPE_BYTES[dtype]
    edges = [-(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0, 1, -1]
    lo, hi = -128, 128                       # operands come from int8 MEM words and are cast
    x = rng.integers(lo, hi, P.vl)
    y = rng.integers(lo, hi, P.vl)
    x[:3] = [-128, 127, 0]
    y[:3] = [1, -1, 127]
    return x, y, edges


def vxm_program(op, dtype, imm, planes, b_mode=isa.VXM_B_CHAIN):
    """x (mem_w0, stream 0) and y (mem_w1, stream 4) are cast to ``dtype`` by ALU0/ALU1; ALU2
    loads y (int8, sign-extended) into its constant register, then applies ``op`` on the chained
    values; result byte planes ``planes`` are written by mem_e0/e1."""
    v = _pos("vxm")
    lat = isa.VXM_SIMPLE_LATENCY
    d_op = isa.BY_MNEMONIC["V" + op].d_func(P)
    t_v = 1 + v - _pos("mem_w1")              # both reads arrive at the VXM at t_v
    t_x = t_v - (1 + v - _pos("mem_w0"))
    t_op = t_v + lat + 1
    t_res = t_op + d_op                       # result driven east at t_res
    out_w = vxm_ops.DTYPE_BYTES[{"CAST": imm & 3, "REQ": 0}.get(op, dtype)]
    text = f"""
.queue mem_w0.read
{_nop(t_x)}    READ 0, s0, E
.queue mem_w1.read
    READ 0, s4, E
.queue vxm.alu0
{_nop(t_v)}    VCAST 0, E, 0, 0, E, 0, E, 0, {dtype}
.queue vxm.alu1
{_nop(t_v)}    VCAST 4, E, 0, 0, E, 0, E, 0, {dtype}
.queue vxm.alu2
{_nop(t_v)}    VLC 4, E, 0, 0, E, 0, E, 0, 0
{_nop(t_op - t_v - 1)}    V{op} 0, E, 1, 4, E, {b_mode}, E, {dtype}, {imm}
"""
    for k, (sname, plane) in enumerate(zip(("mem_e0", "mem_e1"), planes)):
        if plane >= out_w:
            continue
        t_w = t_res + _pos(sname) - v
        text += f".queue {sname}.write\n{_nop(t_w)}    WRITE {P.mem_words + k}, s{plane}, E\n"
    return text


def _halt_all(text):
    """Append HALT to every queue section."""
    out = []
    for block in text.split(".queue")[1:]:
        out.append(".queue" + block.rstrip() + "\n    HALT\n")
    return "".join(out)


def _expected(op, dtype, imm, x, y, const):
    a, b = vxm_ops.cast(x, dtype), vxm_ops.cast(y, dtype)
    if op in OPS1:
        return vxm_ops.unary_op(op, a, dtype), dtype
    if op == "CMP":
        return vxm_ops.wrap(vxm_ops.compare(imm, a, b), dtype), dtype
    if op == "SEL":
        return vxm_ops.select(b, a, vxm_ops.wrap(const, dtype)), dtype
    return vxm_ops.binary_op(op, a, b, dtype, imm), dtype


@pytest.mark.parametrize("dtype", [0, 1, 2])
@pytest.mark.parametrize("op", OPS2 + OPS1)
def test_vxm_ops(rtl, op, dtype):
    imm = {"MULSHR": 3, "CMP": 3}.get(op, 0)
    x, y, _ = _operands(hash((op, dtype)) & 0xFFFF, dtype)
    nbytes = vxm_ops.DTYPE_BYTES[dtype]
    got = np.zeros(P.vl, dtype=np.int64)
    for planes in ((0, 1), (2, 3))[: (nbytes + 1) // 2]:
        text = _halt_all(vxm_program(op, dtype, imm, planes))
        model, _ = run_both(rtl, text, {("mem_w0", 0): x, ("mem_w1", 0): y})
        for k, plane in enumerate(planes):
            if plane < nbytes:
                got |= _vec(model, ["mem_e0", "mem_e1"][k], P.mem_words + k) << (8 * plane)
    const = model.vxm_const[2]
    want, out_dtype = _expected(op, dtype, imm, x, y, const)
    np.testing.assert_array_equal(vxm_ops.wrap(got, out_dtype), want)


@pytest.mark.parametrize("op, dtype, imm", [
    ("CAST", 2, 0), ("CAST", 0, 1), ("REQ", 2, 5), ("EXP", 2, 0), ("RECIP", 2, 0),
    ("RSQRT", 2, 0)])
def test_vxm_conversions_and_functions(rtl, op, dtype, imm):
    x, y, _ = _operands(7, dtype)
    text = _halt_all(vxm_program("MUL", dtype, 0, (0, 1)))
    # first the product x*y (int32 on streams 0..3), then the operation under test on it
    text = text.replace(".queue mem_e0.write", ".queue mem_e0.write_unused")
    v = _pos("vxm")
    lat = isa.VXM_SIMPLE_LATENCY
    t_v = 1 + v - _pos("mem_w1")
    t_mul = t_v + lat + 1
    t_op = t_mul + lat + 1
    d_op = isa.BY_MNEMONIC["V" + op].d_func(P)
    out_w = vxm_ops.DTYPE_BYTES[{"CAST": imm & 3, "REQ": 0}.get(op, dtype)]
    b_mode = isa.VXM_B_IMM if op == "REQ" else isa.VXM_B_STREAM
    b_field = "29, W" if op == "REQ" else "0, E"          # REQ multiplier: immediate -3
    body = [b for b in text.split(".queue") if b.strip() and not b.strip().startswith(
        ("mem_e0.write_unused", "mem_e1.write"))]
    text = ".queue" + ".queue".join(body)
    text += f".queue vxm.alu3\n{_nop(t_op)}    V{op} 0, E, 1, {b_field}, {b_mode}, E, {dtype}, {imm}\n    HALT\n"
    for k, sname in enumerate(("mem_e0", "mem_e1")):
        if k < out_w:
            t_w = t_op + d_op + _pos(sname) - v
            text += f".queue {sname}.write\n{_nop(t_w)}    WRITE {P.mem_words + k}, s{k}, E\n    HALT\n"
    model, _ = run_both(rtl, text, {("mem_w0", 0): x, ("mem_w1", 0): y})
    prod = vxm_ops.binary_op("MUL", vxm_ops.cast(x, dtype), vxm_ops.cast(y, dtype), dtype)
    want = {"CAST": lambda: vxm_ops.cast(prod, imm & 3),
            "REQ": lambda: vxm_ops.requantize(prod, -3, imm),
            "EXP": lambda: vxm_ops.fx_exp(prod),
            "RECIP": lambda: vxm_ops.fx_recip(prod),
            "RSQRT": lambda: vxm_ops.fx_rsqrt(prod)}[op]()
    got = np.zeros(P.vl, dtype=np.int64)
    for k in range(min(out_w, 2)):
        got |= _vec(model, ["mem_e0", "mem_e1"][k], P.mem_words + k) << (8 * k)
    mask = (1 << (8 * min(out_w, 2))) - 1
    np.testing.assert_array_equal(got, np.asarray(want) & mask)


@pytest.mark.parametrize("op", ["SHIFT", "PERMUTE", "DISTRIBUTE"])
def test_sxm_ops(rtl, op):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, P.vl)
    amap = rng.integers(0, P.vl + 3, P.vl) if op == "PERMUTE" else rng.integers(0, P.lanes + 2, P.vl)
    s, w1, w0 = _pos("sxm_w"), _pos("mem_w1"), _pos("mem_w0")
    t_s = 1 + w0 - s                         # x (mem_w0) and map (mem_w1) meet at the SXM
    t_x, t_m = 0, t_s - (1 + w1 - s)
    d = isa.BY_MNEMONIC[op].d_func(P)
    operand = "3" if op == "SHIFT" else "s5, W"
    role = isa.BY_MNEMONIC[op].roles[0]
    text = f"""
.queue mem_w0.read
{_nop(t_x)}    READ 0, s2, W
    HALT
.queue mem_w1.read
{_nop(t_m)}    READ 0, s5, W
    HALT
.queue sxm_w.{role}
{_nop(t_s)}    {op} 2, W, 6, E, {operand}
    HALT
.queue mem_w0.write
{_nop(t_s + d + w0 - s)}    WRITE {P.mem_words}, s6, E
    HALT
"""
    model, _ = run_both(rtl, text, {("mem_w0", 0): x, ("mem_w1", 0): amap})
    got = _vec(model, "mem_w0", P.mem_words)
    lanes = np.arange(P.vl)
    if op == "SHIFT":
        src = lanes - 3
        want = np.where(src >= 0, x[np.clip(src, 0, None)], 0)
    elif op == "PERMUTE":
        want = np.where(amap < P.vl, x[np.minimum(amap, P.vl - 1)], 0)
    else:
        base = (lanes // P.lanes) * P.lanes
        want = np.where(amap < P.lanes, x[base + np.minimum(amap, P.lanes - 1)], 0)
    np.testing.assert_array_equal(got, want)


def test_sxm_transpose(rtl):
    rng = np.random.default_rng(12)
    L = P.lanes
    rows = rng.integers(0, 256, (L, P.vl))
    s, w0 = _pos("sxm_w"), _pos("mem_w0")
    t_s = 1 + w0 - s
    d = isa.BY_MNEMONIC["TRANSPOSE"].d_func(P)
    text = f"""
.queue mem_w0.read
    READ 0, s2, W
    REPEAT {L - 1}, 1, 1
    HALT
.queue sxm_w.transpose
{_nop(t_s)}    TRANSPOSE 2, W, 6, E
    HALT
.queue mem_w0.write
{_nop(t_s + d + w0 - s)}    WRITE {P.mem_words}, s6, E
    REPEAT {L - 1}, 1, 1
    HALT
"""
    model, _ = run_both(rtl, text, {("mem_w0", i): rows[i] for i in range(L)})
    got = model.mem[P.slice("mem_w0").index, P.mem_words:P.mem_words + L].astype(np.int64)
    blk = rows.reshape(L, P.superlanes, L)
    want = blk.transpose(2, 1, 0).reshape(L, P.vl)
    np.testing.assert_array_equal(got, want)


def test_vxm_collision_flag(rtl):
    v = _pos("vxm")
    t_v = 1 + v - _pos("mem_w0")
    text = f"""
.queue mem_w0.read
    READ 0, s0, E
    HALT
.queue vxm.alu0
{_nop(t_v)}    VRELU 0, E, 0, 0, E, 0, E, 0, 0
    HALT
.queue vxm.alu1
{_nop(t_v)}    VABS 0, E, 0, 0, E, 0, E, 0, 0
    HALT
"""
    _, regs = run_both(rtl, text, {("mem_w0", 0): np.arange(P.vl)}, errors=None)
    assert regs[1] & isa.ErrorFlag.STREAM_COLLISION
