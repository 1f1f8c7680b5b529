"""Whole-chip RTL (Verilator) against the reference model, instruction by instruction.

Every VXM and SXM instruction (and the VXM constant register, chaining and collision checker), and
the MXM's transposed weight load ``LWT`` mixed with ``LW``, runs in a small directed program on the
presets with every slice kind, ``mini`` (2 superlanes, VL 8) and ``mini4`` (4 superlanes, VL 16);
the whole module runs once per preset, with one Verilator model each. The same host
writes go to the Verilator-compiled chip and to the reference model; afterwards CYCLES, ERRORS and
every byte of every MEM slice must be identical, and the written results are also checked
against :mod:`openlpu.vxm_ops` / numpy, so a bug shared by model and RTL is caught too.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from openlpu import hostmap, isa, vxm_ops
from openlpu.firmware.asm import assemble
from openlpu.isa import HostReg
from openlpu.params import preset
from openlpu.host.backends.model import ModelBackend

PRESETS = ["mini", "mini4"]                  # every slice kind; 2 and 4 superlanes
OPS2 = ["ADD", "SUB", "MUL", "MULSHR", "MIN", "MAX", "AND", "OR", "XOR", "SHL", "SRA", "SRL",
        "CMP", "SEL"]
OPS1 = ["RELU", "ABS", "NEG"]


@pytest.fixture(scope="module", params=PRESETS)
def P(request):
    """The preset under test (all tests of the module run on each)."""
    return preset(request.param)


@pytest.fixture(scope="module")
def rtl(P):
    from openlpu.host.backends import open_backend
    backend = open_backend("verilator", P)
    yield backend
    backend.close()


def _pos(P, name):
    return P.slice(name).position


def _nop(n):
    return f"    NOP {n}\n" if n > 0 else ""


def _mem_writes(P, contents):
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


def _all_mem_addrs(P):
    return [hostmap.mem_addr(P, s.index, b, w, c, g)
            for s in P.mem_slice_list for b in range(P.mem_banks) for w in range(P.mem_words)
            for c in range(P.superlanes) for g in range(P.host_lane_groups)]


ERRORS_SETTLE = 64      # cycles after DONE before the RTL's registers are read (> any d_func + S)


def run_both(P, rtl, text, contents, max_cycles=10_000, errors=0):
    """Run one program on RTL and model from a cleared MEM; compare CYCLES, ERRORS, ERROR_CYCLE
    and every MEM byte; return (model, [CYCLES, ERRORS, ERROR_CYCLE])."""
    # programs meant to raise errors (errors=None) skip the assembler's static range checks
    progs = assemble(text, P, check=errors == 0)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    writes = [(hostmap.mem_addr(P, s.index, b, w, c, g), 0)
              for s in P.mem_slice_list for b in range(P.mem_banks) for w in range(P.mem_words)
              for c in range(P.superlanes) for g in range(P.host_lane_groups)]
    writes += _mem_writes(P, contents)
    for q in P.queues:
        for i, w in enumerate(progs.get(q.name, [halt])):
            writes.append((hostmap.imem_addr(P, q.index, i), w))
    model = ModelBackend(P)
    results = []
    for dev in (rtl, model):
        dev.write_many(writes)
        dev.run(max_cycles)
        if dev is rtl and hasattr(dev, "tick"):
            # instructions issued before the last HALT complete after DONE and may still raise
            # errors; the model drains them at once, the RTL needs the cycles (ERRORS_SETTLE)
            dev.tick(ERRORS_SETTLE)
        regs = [dev.read(hostmap.reg_addr(r))
                for r in (HostReg.CYCLES, HostReg.ERRORS, HostReg.ERROR_CYCLE)]
        results.append((regs, dev.read_many(_all_mem_addrs(P))))
    (rtl_regs, rtl_mem), (model_regs, model_mem) = results
    assert rtl_regs == model_regs, (f"RTL CYCLES/ERRORS/ERROR_CYCLE {rtl_regs} != model "
                                    f"{model_regs}")
    assert rtl_mem == model_mem, "MEM contents differ between RTL and model"
    if errors is not None:
        assert rtl_regs[1] == errors, f"ERRORS = {isa.ErrorFlag(rtl_regs[1])!r}"
    return model.model, rtl_regs


def _vec(P, mem, sname, addr):
    return mem.mem[P.slice(sname).index, addr].astype(np.int64)


def _operands(P, seed, dtype):
    rng = np.random.default_rng(seed)
    bits = 8 * vxm_ops.DTYPE_BYTES[dtype]
    edges = [-(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0, 1, -1]
    lo, hi = -128, 128                       # operands come from int8 MEM words and are cast
    x = rng.integers(lo, hi, P.vl)
    y = rng.integers(lo, hi, P.vl)
    x[:3] = [-128, 127, 0]
    y[:3] = [1, -1, 127]
    return x, y, edges


def vxm_program(P, op, dtype, imm, planes, b_mode=isa.VXM_B_CHAIN, b_dtype=None):
    """x (mem_w0, stream 0) and y (mem_w1, stream 4) are cast to ``dtype`` (y: to ``b_dtype``
    if given) by ALU0/ALU1; ALU2 loads y (int8, sign-extended) into its constant register, then
    applies ``op`` on the chained values; result byte planes ``planes`` are written by
    mem_e0/e1."""
    b_dtype = dtype if b_dtype is None else b_dtype
    v = _pos(P, "vxm")
    lat = isa.VXM_SIMPLE_LATENCY
    d_op = isa.BY_MNEMONIC["V" + op].d_func(P)
    t_v = 1 + v - _pos(P, "mem_w1")              # both reads arrive at the VXM at t_v
    t_x = t_v - (1 + v - _pos(P, "mem_w0"))
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
{_nop(t_v)}    VCAST 4, E, 0, 0, E, 0, E, 0, {b_dtype}
.queue vxm.alu2
{_nop(t_v)}    VLC 4, E, 0, 0, E, 0, E, 0, 0
{_nop(t_op - t_v - 1)}    V{op} 0, E, 1, 4, E, {b_mode}, E, {dtype}, {imm}
"""
    for k, (sname, plane) in enumerate(zip(("mem_e0", "mem_e1"), planes)):
        if plane >= out_w:
            continue
        t_w = t_res + _pos(P, sname) - v
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
    if op == "SEL":                           # the condition is y as one int8 plane
        return vxm_ops.select(vxm_ops.cast(y, 0), a, vxm_ops.wrap(const, dtype)), dtype
    return vxm_ops.binary_op(op, a, b, dtype, imm), dtype


@pytest.mark.parametrize("dtype", [0, 1, 2])
@pytest.mark.parametrize("op", OPS2 + OPS1)
def test_vxm_ops(P, rtl, op, dtype):
    imm = {"MULSHR": 3, "CMP": 3}.get(op, 0)
    x, y, _ = _operands(P, zlib.crc32(f"{op}{dtype}".encode()) & 0xFFFF, dtype)
    nbytes = vxm_ops.DTYPE_BYTES[dtype]
    got = np.zeros(P.vl, dtype=np.int64)
    # VSEL's condition is one byte stream: y stays int8 (streams 5.. are never written)
    b_dtype = 0 if op == "SEL" else dtype
    for planes in ((0, 1), (2, 3))[: (nbytes + 1) // 2]:
        text = _halt_all(vxm_program(P, op, dtype, imm, planes, b_dtype=b_dtype))
        model, _ = run_both(P, rtl, text, {("mem_w0", 0): x, ("mem_w1", 0): y})
        for k, plane in enumerate(planes):
            if plane < nbytes:
                got |= _vec(P, model, ["mem_e0", "mem_e1"][k], P.mem_words + k) << (8 * plane)
    const = model.vxm_const[2]
    want, out_dtype = _expected(op, dtype, imm, x, y, const)
    np.testing.assert_array_equal(vxm_ops.wrap(got, out_dtype), want)


@pytest.mark.parametrize("dtype", [0, 1, 2])
def test_vxm_select_low_byte(P, rtl, dtype):
    """VSEL tests only the low byte of its condition: the mask y*16 is an int32 on streams 4..7
    (ALU1: VCAST, then VMUL by the immediate 16), so lanes with y a non-zero multiple of 16 have
    a zero low byte but non-zero higher bytes on streams 5..7, which VSEL must ignore."""
    rng = np.random.default_rng(31 + dtype)
    x = rng.integers(-128, 128, P.vl)
    y = rng.integers(-128, 128, P.vl)
    y[:4] = [16, -128, 0, 48]                 # mask 256, -2048, 0, 768: low byte 0
    y[4:6] = [1, -1]
    v = _pos(P, "vxm")
    lat = isa.VXM_SIMPLE_LATENCY
    chain = lat + 1
    t_v = 1 + v - _pos(P, "mem_w1")              # y arrives at the VXM at t_v, x at t_v + chain
    t_x = t_v + chain - (1 + v - _pos(P, "mem_w0"))
    t_sel = t_v + 2 * chain
    t_res = t_sel + isa.BY_MNEMONIC["VSEL"].d_func(P)
    nbytes = vxm_ops.DTYPE_BYTES[dtype]
    got = np.zeros(P.vl, dtype=np.int64)
    for planes in ((0, 1), (2, 3))[: (nbytes + 1) // 2]:
        text = f"""
.queue mem_w0.read
{_nop(t_x)}    READ 0, s0, E
.queue mem_w1.read
    READ 0, s4, E
.queue vxm.alu0
{_nop(t_v + chain)}    VCAST 0, E, 0, 0, E, 0, E, 0, {dtype}
.queue vxm.alu1
{_nop(t_v)}    VCAST 4, E, 0, 0, E, 0, E, 0, 2
{_nop(chain - 1)}    VMUL 4, E, 1, 16, E, 3, E, 2, 0
.queue vxm.alu2
{_nop(t_v)}    VLC 4, E, 0, 0, E, 0, E, 0, 0
{_nop(t_sel - t_v - 1)}    VSEL 0, E, 1, 4, E, 1, E, {dtype}, 0
"""
        for k, (sname, plane) in enumerate(zip(("mem_e0", "mem_e1"), planes)):
            if plane < nbytes:
                t_w = t_res + _pos(P, sname) - v
                text += f".queue {sname}.write\n{_nop(t_w)}    WRITE {P.mem_words + k}, s{plane}, E\n"
        model, _ = run_both(P, rtl, _halt_all(text), {("mem_w0", 0): x, ("mem_w1", 0): y})
        for k, plane in enumerate(planes):
            if plane < nbytes:
                got |= _vec(P, model, ["mem_e0", "mem_e1"][k], P.mem_words + k) << (8 * plane)
    np.testing.assert_array_equal(model.vxm_const[2], y)
    mask = y * 16
    a = vxm_ops.cast(x, dtype)
    want = np.where((mask & 0xFF) != 0, a, y)             # numpy, independent of vxm_ops
    assert (want[:4] == y[:4]).all() and (want[4:6] == a[4:6]).all()
    np.testing.assert_array_equal(want, vxm_ops.select(mask, a, y))
    np.testing.assert_array_equal(vxm_ops.wrap(got, dtype), want)


@pytest.mark.parametrize("op, dtype, imm", [
    ("CAST", 2, 0), ("CAST", 0, 1), ("REQ", 2, 5), ("EXP", 2, 0), ("RECIP", 2, 0),
    ("RSQRT", 2, 0)])
def test_vxm_conversions_and_functions(P, rtl, op, dtype, imm):
    x, y, _ = _operands(P, 7, dtype)
    text = _halt_all(vxm_program(P, "MUL", dtype, 0, (0, 1)))
    # first the product x*y (int32 on streams 0..3), then the operation under test on it
    text = text.replace(".queue mem_e0.write", ".queue mem_e0.write_unused")
    v = _pos(P, "vxm")
    lat = isa.VXM_SIMPLE_LATENCY
    t_v = 1 + v - _pos(P, "mem_w1")
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
            t_w = t_op + d_op + _pos(P, sname) - v
            text += f".queue {sname}.write\n{_nop(t_w)}    WRITE {P.mem_words + k}, s{k}, E\n    HALT\n"
    model, _ = run_both(P, rtl, text, {("mem_w0", 0): x, ("mem_w1", 0): y})
    prod = vxm_ops.binary_op("MUL", vxm_ops.cast(x, dtype), vxm_ops.cast(y, dtype), dtype)
    want = {"CAST": lambda: vxm_ops.cast(prod, imm & 3),
            "REQ": lambda: vxm_ops.requantize(prod, -3, imm),
            "EXP": lambda: vxm_ops.fx_exp(prod),
            "RECIP": lambda: vxm_ops.fx_recip(prod),
            "RSQRT": lambda: vxm_ops.fx_rsqrt(prod)}[op]()
    got = np.zeros(P.vl, dtype=np.int64)
    for k in range(min(out_w, 2)):
        got |= _vec(P, model, ["mem_e0", "mem_e1"][k], P.mem_words + k) << (8 * k)
    mask = (1 << (8 * min(out_w, 2))) - 1
    np.testing.assert_array_equal(got, np.asarray(want) & mask)


@pytest.mark.parametrize("op", ["SHIFT", "PERMUTE", "DISTRIBUTE"])
def test_sxm_ops(P, rtl, op):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, P.vl)
    amap = rng.integers(0, P.vl + 3, P.vl) if op == "PERMUTE" else rng.integers(0, P.lanes + 2, P.vl)
    s, w1, w0 = _pos(P, "sxm_w"), _pos(P, "mem_w1"), _pos(P, "mem_w0")
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
    model, _ = run_both(P, rtl, text, {("mem_w0", 0): x, ("mem_w1", 0): amap})
    got = _vec(P, model, "mem_w0", P.mem_words)
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


def test_sxm_transpose(P, rtl):
    rng = np.random.default_rng(12)
    L = P.lanes
    rows = rng.integers(0, 256, (L, P.vl))
    s, w0 = _pos(P, "sxm_w"), _pos(P, "mem_w0")
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
    model, _ = run_both(P, rtl, text, {("mem_w0", i): rows[i] for i in range(L)})
    got = model.mem[P.slice("mem_w0").index, P.mem_words:P.mem_words + L].astype(np.int64)
    blk = rows.reshape(L, P.superlanes, L)
    want = blk.transpose(2, 1, 0).reshape(L, P.vl)
    np.testing.assert_array_equal(got, want)


def test_sxm_back_to_back(P, rtl):
    """The three SXM queues every cycle at once: 2L consecutive vectors are SHIFTed by a different
    amount each cycle (multiples of the lane count, negative, |amount| >= VL), PERMUTEd with a
    different map each cycle, and TRANSPOSEd by two back-to-back TRANSPOSEs (the second enters
    while the first leaves); three MEM slices write the three result streams."""
    rng = np.random.default_rng(13)
    L, vl = P.lanes, P.vl
    n = 2 * L
    x = rng.integers(0, 256, (n, vl))
    x[0, :4] = [128, 127, 0, 1]
    maps = rng.integers(0, vl + 2, (n, vl))
    amounts = [0, 1, -1, L, -L, vl - 1, -(vl - 1), vl, -vl, 2 * L + 1, -(2 * L + 1), 3, -5, L - 1,
               1 - L, 2]
    amounts = (amounts * 2)[:n]
    s, w1, w0, e0 = (_pos(P, nm) for nm in ("sxm_w", "mem_w1", "mem_w0", "mem_e0"))
    t_s = 1 + w0 - s                         # x (mem_w0) and maps (mem_w1) meet at the SXM
    t_m = t_s - (1 + w1 - s)
    d_sh = isa.BY_MNEMONIC["SHIFT"].d_func(P)
    d_pm = isa.BY_MNEMONIC["PERMUTE"].d_func(P)
    d_tr = isa.BY_MNEMONIC["TRANSPOSE"].d_func(P)
    shifts = "".join(f"    SHIFT 2, W, 6, E, {a}\n" for a in amounts)
    text = f"""
.queue mem_w0.read
    READ 0, s2, W
    REPEAT {n - 1}, 1, 1
.queue mem_w1.read
{_nop(t_m)}    READ 0, s5, W
    REPEAT {n - 1}, 1, 1
.queue sxm_w.shift
{_nop(t_s)}{shifts}
.queue sxm_w.permute
{_nop(t_s)}    PERMUTE 2, W, 7, E, s5, W
    REPEAT {n - 1}, 1, 0
.queue sxm_w.transpose
{_nop(t_s)}    TRANSPOSE 2, W, 3, E
{_nop(L - 1)}    TRANSPOSE 2, W, 3, E
.queue mem_w1.write
{_nop(t_s + d_sh + w1 - s)}    WRITE {P.mem_words}, s6, E
    REPEAT {n - 1}, 1, 1
.queue mem_w0.write
{_nop(t_s + d_pm + w0 - s)}    WRITE {P.mem_words}, s7, E
    REPEAT {n - 1}, 1, 1
.queue mem_e0.write
{_nop(t_s + d_tr + e0 - s)}    WRITE {P.mem_words}, s3, E
    REPEAT {n - 1}, 1, 1
"""
    contents = {("mem_w0", i): x[i] for i in range(n)}
    contents.update({("mem_w1", i): maps[i] for i in range(n)})
    model, _ = run_both(P, rtl, _halt_all(text), contents)
    lanes = np.arange(vl)
    for i in range(n):
        src = lanes - amounts[i]
        want = np.where((src >= 0) & (src < vl), x[i][np.clip(src, 0, vl - 1)], 0)
        np.testing.assert_array_equal(_vec(P, model, "mem_w1", P.mem_words + i), want,
                                      err_msg=f"SHIFT {amounts[i]}")
        want = np.where(maps[i] < vl, x[i][np.minimum(maps[i], vl - 1)], 0)
        np.testing.assert_array_equal(_vec(P, model, "mem_w0", P.mem_words + i), want,
                                      err_msg=f"PERMUTE {i}")
    got = model.mem[P.slice("mem_e0").index, P.mem_words:P.mem_words + n].astype(np.int64)
    for k in range(2):
        blk = x[k * L:(k + 1) * L].reshape(L, P.superlanes, L)
        np.testing.assert_array_equal(got[k * L:(k + 1) * L],
                                      blk.transpose(2, 1, 0).reshape(L, vl), err_msg=f"block {k}")


@pytest.mark.parametrize("case", ["shift_unwritten", "transpose_row_unwritten",
                                  "transpose_too_soon", "collision", "collision_after_halt"])
def test_sxm_error_flags(P, rtl, case):
    """SXM checkers on the chip: a SHIFT of a never-written stream slot and a TRANSPOSE whose
    last row is unwritten (STREAM_UNWRITTEN), a TRANSPOSE issued L - 1 cycles after the previous
    one (BAD_INSTRUCTION, not executed), a SHIFT and a PERMUTE driving the same stream in the
    same cycles (STREAM_COLLISION). RTL and model agree on CYCLES, ERRORS, ERROR_CYCLE and MEM;
    ERRORS is exactly the expected flag and ERROR_CYCLE the cycle the timing rule gives (first
    error, superlane 0). A queue waits long enough for the errors to happen while the chip runs,
    except in ``collision_after_halt``, where the drives come after the last HALT: the flag is
    still raised, and ERROR_CYCLE is the final cycle count (the counter has stopped)."""
    L, vl = P.lanes, P.vl
    s, w1, w0 = _pos(P, "sxm_w"), _pos(P, "mem_w1"), _pos(P, "mem_w0")
    t_s = 1 + w0 - s
    t_m = t_s - (1 + w1 - s)
    d_tr = isa.BY_MNEMONIC["TRANSPOSE"].d_func(P)
    x = np.arange(2 * L * vl).reshape(2 * L, vl) % 251
    contents = {("mem_w0", i): x[i] for i in range(2 * L)}
    contents[("mem_w1", 0)] = np.arange(vl)[::-1]
    F = isa.ErrorFlag
    if case == "shift_unwritten":
        text = f".queue sxm_w.shift\n{_nop(t_s)}    SHIFT 3, W, 6, E, 1\n"
        want, want_cycle = F.STREAM_UNWRITTEN, t_s
    elif case == "transpose_row_unwritten":
        text = f"""
.queue mem_w0.read
    READ 0, s2, W
    REPEAT {L - 2}, 1, 1
.queue sxm_w.transpose
{_nop(t_s)}    TRANSPOSE 2, W, 3, E
"""
        want, want_cycle = F.STREAM_UNWRITTEN, t_s + L - 1
    elif case == "transpose_too_soon":
        text = f"""
.queue mem_w0.read
    READ 0, s2, W
    REPEAT {2 * L - 1}, 1, 1
.queue sxm_w.transpose
{_nop(t_s)}    TRANSPOSE 2, W, 3, E
{_nop(L - 2)}    TRANSPOSE 2, W, 3, E
.queue mem_e0.write
{_nop(t_s + d_tr + _pos(P, "mem_e0") - s)}    WRITE {P.mem_words}, s3, E
    REPEAT {L - 1}, 1, 1
"""
        want, want_cycle = F.BAD_INSTRUCTION, t_s + L - 1
    else:                                     # collision, collision_after_halt
        text = f"""
.queue mem_w0.read
    READ 0, s2, W
.queue mem_w1.read
{_nop(t_m)}    READ 0, s5, W
.queue sxm_w.shift
{_nop(t_s)}    SHIFT 2, W, 6, E, {L}
.queue sxm_w.permute
{_nop(t_s)}    PERMUTE 2, W, 6, E, s5, W
"""
        want, want_cycle = F.STREAM_COLLISION, t_s + isa.BY_MNEMONIC["SHIFT"].d_func(P)
    if case != "collision_after_halt":
        text += f".queue mem_e1.read\n{_nop(t_s + 4 * L + 8)}"
    model, regs = run_both(P, rtl, _halt_all(text), contents, errors=None)
    assert regs[1] == want, f"ERRORS = {F(regs[1])!r}, expected {want!r}"
    if case == "collision_after_halt":
        assert regs[0] < want_cycle and regs[2] == regs[0], regs
    else:
        assert regs[2] == want_cycle, f"ERROR_CYCLE {regs[2]}, expected {want_cycle}"
    if case == "transpose_too_soon":          # the first block is still transposed and written
        blk = x[:L].reshape(L, P.superlanes, L)
        got = model.mem[P.slice("mem_e0").index, P.mem_words:P.mem_words + L].astype(np.int64)
        np.testing.assert_array_equal(got, blk.transpose(2, 1, 0).reshape(L, vl))


def test_vxm_collision_flag(P, rtl):
    v = _pos(P, "vxm")
    t_v = 1 + v - _pos(P, "mem_w0")
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
    _, regs = run_both(P, rtl, text, {("mem_w0", 0): np.arange(P.vl)}, errors=None)
    assert regs[1] & isa.ErrorFlag.STREAM_COLLISION


def test_mxm_lw_lwt(P, rtl):
    """Weights by LW rows, then LWT columns over some of them, IW, ABCs; then the next weights
    by LWT columns only (REPEAT), IW, ABCs (one accumulating onto a first-weights result); ACC
    rows written by four MEM slices. RTL and model agree, and the results equal numpy W @ x."""
    rng = np.random.default_rng(41)
    vl, S = P.vl, P.superlanes
    d_abc = isa.BY_MNEMONIC["ABC"].d_func(P)
    d_acc = isa.BY_MNEMONIC["ACC"].d_func(P)
    mxm = _pos(P, "mxm_w")
    lat_b = 1 + _pos(P, "mem_w1") - mxm              # READ mem_w1 at t -> LW/LWT at t + lat_b
    lat_a = 1 + _pos(P, "mem_w0") - mxm              # READ mem_w0 at t -> ABC at t + lat_a
    W1 = rng.integers(-128, 128, (vl, vl))        # W[n][k]
    W1[0] = -128
    C = rng.integers(-128, 128, (vl, 4))          # columns 2..5 by LWT
    W2 = rng.integers(-128, 128, (vl, vl))
    W2[:, 1] = 127
    xs = rng.integers(-128, 128, (4, vl))
    xs[3] = -128
    # weights queue and the mem_w1 reads feeding it (words: W1 rows, C columns, W2 columns)
    ops = [("LW", 0, 0, vl), ("gap", S - 1), ("LWT", 2, vl, C.shape[1]), ("gap", S - 1),
           ("IW",), ("gap", S - 1), ("LWT", 0, vl + C.shape[1], vl), ("gap", S - 1), ("IW",)]
    weights, reads, t, t_iw = [_nop(lat_b)], [], lat_b, []
    for op in ops:
        if op[0] == "gap":
            weights.append(_nop(op[1]))
            reads.append(_nop(op[1]))
            t += op[1]
        elif op[0] == "IW":
            weights.append("    IW\n")
            reads.append(_nop(1))
            t_iw.append(t)
            t += 1
        else:
            m, field, word, n = op
            weights.append(f"    {m} {field}, s1, W\n" + (f"    REPEAT {n - 1}, 1, 1\n" if n > 1 else ""))
            reads.append(f"    READ {word}, s1, W\n" + (f"    REPEAT {n - 1}, 1, 1\n" if n > 1 else ""))
            t += n
    t_abc = [t_iw[0] + 1, t_iw[0] + 2, t_iw[1] + 1, t_iw[1] + 2]
    assert t_abc[1] < t_iw[1]
    abcs = [(0, 0), (1, 0), (2, 0), (0, 1)]       # (accumulator row, accumulate)
    t_acc = t_abc[-1] + d_abc                     # sees the last (accumulating) ABC's update
    text = (".queue mem_w1.read\n" + "".join(reads) + ".queue mxm_w.weights\n" + "".join(weights))
    text += ".queue mem_w0.read\n"
    t = 0
    for i, ta in enumerate(t_abc):
        text += f"{_nop(ta - lat_a - t)}    READ {i}, s0, W\n"
        t = ta - lat_a + 1
    text += ".queue mxm_w.compute\n"
    t = 0
    for ta, (row, acc) in zip(t_abc, abcs):
        text += f"{_nop(ta - t)}    ABC {row}, s0, W, {acc}\n"
        t = ta + 1
    text += f".queue mxm_w.result\n{_nop(t_acc)}    ACC 0, g0, E\n    REPEAT 2, 1, 1\n"
    planes = ("mem_w1", "mem_w0", "mem_e0", "mem_e1")
    for b, sname in enumerate(planes):            # byte b of each lane is on stream b
        t_w = t_acc + d_acc + _pos(P, sname) - mxm
        text += (f".queue {sname}.write\n{_nop(t_w)}    WRITE {P.mem_words}, s{b}, E\n"
                 f"    REPEAT 2, 1, 1\n")
    contents = {("mem_w1", n): W1[n] for n in range(vl)}
    contents.update({("mem_w1", vl + i): C[:, i] for i in range(C.shape[1])})
    contents.update({("mem_w1", vl + C.shape[1] + k): W2[:, k] for k in range(vl)})
    contents.update({("mem_w0", i): xs[i] for i in range(len(xs))})
    model, _ = run_both(P, rtl, _halt_all(text), contents)
    Wa = W1.copy()
    Wa[:, 2:2 + C.shape[1]] = C
    np.testing.assert_array_equal(model.weights, W2)
    want = [Wa @ xs[0] + W2 @ xs[3], Wa @ xs[1], W2 @ xs[2]]
    for r, value in enumerate(want):
        got = np.zeros(vl, dtype=np.int64)
        for b, sname in enumerate(planes):
            got |= _vec(P, model, sname, P.mem_words + r) << (8 * b)
        np.testing.assert_array_equal(vxm_ops.wrap(got, 2), value, err_msg=f"accumulator row {r}")


def test_coverage_table_names_two_presets_per_instruction():
    """docs/isa.md's Verification table has a row for every instruction of the ISA table, naming
    at least two presets of the RTL-vs-model tests (this module's and tests/rtl/test_chip.py's)."""
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "isa.md").read_text()
    table = doc.partition("## Verification")[2].partition("## Reference")[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines()
            if line.startswith("| `")}
    for idef in isa.INSTRUCTIONS:
        row = rows.get(idef.mnemonic)
        assert row is not None, f"docs/isa.md Verification: no row for {idef.mnemonic}"
        named = {name for name in ("tiny", "quad", "mini", "mini4") if f"`{name}`" in row}
        assert len(named) >= 2, f"{idef.mnemonic}: {row}"
