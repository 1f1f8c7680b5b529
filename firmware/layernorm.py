"""MiniLM's integer LayerNorm on the chip (``minilm_int.layer_norm_int``), in the transposed domain.

The int16 input ``R`` (rows = tokens x ``n`` channels, stored as int32, sign-extended) is kept
column-wise (``TensorDesc(transposed=True)``): word ``t*n + c`` holds channel ``c`` of row tile
``t`` (rows ``t*VL ..``, one row per lane), so every row reduction is a lane-wise ``VADD`` loop
over time (a 3-cycle chain: ``d_func`` 2 + 1) and nothing crosses lanes. The per-channel
constants (``gamma_q``, ``beta_q``, the int8 output multipliers) are then one value per stored
word: constant vectors holding the value in every lane.

Per row tile, four :mod:`~openlpu.firmware.dataflow` flows (the first three each one loop,
committed one after the other) and one flow per channel:

1. ``s = sum_c r_c`` (``VADD`` loop); ``mu = VMULSHR(s, mean_mult)``; ``VLC`` into ALU 3;
2. ``d_c = VSUB(r_c, mu)`` (ALU 3's constant) -> ``q = VMULSHR(d, d, sq_shift)`` -> ``ss``
   loop; ``VLC ss`` into ALU 2;
3. the coarse chain ``VMULSHR(ms_mult, ss)`` (ALU 2) -> ``VADD eps_q`` -> ``VRSQRT`` -> ``VLC``
   into ALU 1; the ``VMUL(d, d)`` loop (``ss_fine``) -> ``VMULSHR ms_mult_fine`` -> ``VADD
   eps_q_fine`` -> ``VRSQRT`` -> ``VMULSHR 2**(v_shift_fine - v_shift)``; in the same cycle
   ``VCMP gt(small_ss, ss)`` (ALU 2); ``VSEL`` (ALU 1: fine where the compare holds, else its
   constant, the coarse value) -> ``VLC rs`` into ALU 2;
4. per channel: ``VSUB mu`` (ALU 3) -> ``VMULSHR rs`` (ALU 2, ``rs_shift``) -> ``VMULSHR
   gamma_c`` -> ``VADD beta_c`` -> ``VREQ m8_c`` (int8 out) and, in the same cycle,
   ``VMULSHR m16`` -> ``VCAST`` int16 -> ``VCAST`` int32 (int16 out).

Timing: about ``3 n`` cycles for each of the three loops plus the channel pass (about 2 to 3
cycles per channel) per row tile; the tiles run one after the other. Placement: ``R``, the
constants, the int8 multipliers and the int16 output take four MEM slices each (int32 VXM
operands), the int8 output bank 1 of the constants' first slice (preset ``base``).
"""

from __future__ import annotations

import math

import numpy as np

from openlpu import isa
from openlpu.isa import Dir

from .chipstate import ChipState, Emitted, transactional
from .dataflow import INT8, INT16, INT32, Flow, commit
from .linear import VecPlacer, check_int32_side, check_rescale, track_drives
from .package import Package, TensorDesc
from .schedule import CompileError

__all__ = ["emit_layer_norm", "compile_layer_norm"]

_LOOP = 3            # cycles per channel of a chained reduction loop
_LEAD = 16           # first SUB of a loop (relative): after every READ lead
_ALU_RS, _ALU_SS, _ALU_MU = "alu1", "alu2", "alu3"      # constant registers: rs / ss, mu


def compile_layer_norm(params, rows: int, ln, *, name: str | None = None) -> Package:
    """One-kernel package of :func:`emit_layer_norm`."""
    where = f"layer_norm {rows}x{ln.n} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_layer_norm(state, rows, ln)
    return state.package(name=name or f"layer_norm_{rows}x{ln.n}", inputs=out.inputs,
                         outputs=out.outputs, meta=out.meta)


def _lc_time(flow, off):
    return max(t for _, t, m, _ in flow.ops if m == "VLC") + off


@transactional
def emit_layer_norm(state: ChipState, rows: int, ln, *, earliest: int = 0,
                    names: tuple = ("R", "Y8", "Y16")) -> Emitted:
    """Emit ``layer_norm_int(R, ln)`` (module docstring) on ``state`` from ``earliest`` on.

    ``ln``: an object with the fields of
    :class:`~openlpu.host.models.minilm_quant.LayerNormQuant` (integers and integer arrays).
    ``R`` (rows x ``ln.n``, int16 stored as int32), ``Y8`` (int8) and ``Y16`` (int16 stored as
    int32) are transposed tensors. Raises :class:`CompileError` naming a bad argument or what
    does not fit."""
    p = state.params
    n = int(ln.n)
    where = f"layer_norm {rows}x{n} on preset {p.name!r}"
    for n_, v in (("rows", rows), ("n", n)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CompileError(f"layer_norm {n_} must be a positive integer, not {v!r}")
    check_int32_side(p, where)
    if p.vxm_alus < 4 or not all(r in isa.vxm_alus_with(p, "VMULSHR")
                                 for r in (_ALU_SS, _ALU_MU)) or \
            len(isa.vxm_alus_with(p, "VRSQRT")) < 1:
        raise CompileError(f"{where}: needs 4 VXM ALUs (alu2 and alu3 with the multiplier, "
                           f"one with VRSQRT)")
    m8 = check_rescale(f"{where}: int8 output", ln.out8.mult, ln.out8.shift, 0, n)
    m16 = check_rescale(f"{where}: int16 output", ln.out16.mult, ln.out16.shift, 1, n)
    gq, bq = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (ln.gamma_q, ln.beta_q))
    if gq.shape != (n,) or bq.shape != (n,):
        raise CompileError(f"{where}: gamma_q and beta_q must have {n} values")
    vl = p.vl
    RT = math.ceil(rows / vl)
    nr, n8, n16 = names
    # constant words (every lane the same value)
    K_SCAL = ("mean_mult", "ms_mult", "eps_q", "ms_mult_fine", "eps_q_fine",
              "fine_to_coarse", "zero")
    scal = {"mean_mult": ln.mean_mult, "ms_mult": ln.ms_mult, "eps_q": ln.eps_q,
            "ms_mult_fine": ln.ms_mult_fine, "eps_q_fine": ln.eps_q_fine,
            "fine_to_coarse": 1 << (ln.v_shift_fine - ln.v_shift),
            "zero": 0}
    kw = {k: i for i, k in enumerate(K_SCAL)}
    g0, b0, h0 = len(K_SCAL), len(K_SCAL) + n, len(K_SCAL) + 2 * n
    kvals = np.concatenate([np.array([scal[k] for k in K_SCAL], dtype=np.int64), gq, bq, m16])
    if (np.abs(kvals) >= 2 ** 31).any():
        raise CompileError(f"{where}: a constant does not fit int32")
    vp = VecPlacer(state, where)
    d_r, r_planes = vp.tensor(nr, RT * n, 4)
    s_r = vp.stream(d_r, 4)
    d_k, k_planes = vp.const(f"{n16} constants", np.repeat(kvals[:, None], vl, axis=1), 4)
    s_k = vp.stream(d_k, 4)
    # the int8 multipliers, then small_ss (read in the cycle the fine chain reads a constant)
    m8s = np.concatenate([m8, [int(ln.small_ss)]])
    d_8, m8_planes = vp.const(f"{n8} multipliers", np.repeat(m8s[:, None], vl, axis=1), 4)
    s_8 = vp.stream(d_8, 4)
    d_16, y16_planes = vp.tensor(n16, RT * n, 4)
    s_l = vp.stream(d_16, 4)                   # the loops' stream group
    # the int8 output: the other bank of the constants' first slice
    k_sl, k_bank, _ = k_planes[0]
    y8_base = state.alloc.stripe(n8, RT * n, [(k_sl, 1 - k_bank)])[0][2]
    y8_planes = [(k_sl, 1 - k_bank, y8_base)]
    out8_dir = Dir.WEST if d_k == Dir.EAST else Dir.EAST
    out16_dir = Dir.WEST if d_16 == Dir.EAST else Dir.EAST

    def K(word):
        return vp.src(k_planes, word, s_k, INT32)

    def Rc(t, c, stream=s_r):
        return vp.src(r_planes, t * n + c, stream, INT32)

    E, W = Dir.EAST, Dir.WEST
    t = earliest
    for role in (_ALU_RS, _ALU_SS, _ALU_MU):
        t = max(t, state.free_after(f"vxm.{role} constant register"))
    start = t
    for rt in range(RT):
        # -- 1: s = sum r, mu into ALU 3 ------------------------------------------------------
        f = Flow(p)
        s = f.vxm("ADD", Rc(rt, 0), K(kw["zero"]), dtype=INT32, out_dir=E)
        for c in range(1, n):
            s = f.vxm("ADD", s, Rc(rt, c), dtype=INT32, a_chain=True, out_dir=E)
        mu = f.vxm("MULSHR", s, K(kw["mean_mult"]), dtype=INT32, imm=ln.mean_shift,
                   a_chain=True, out_dir=W)
        f.vxm("LC", mu, dtype=INT32, a_chain=True, alu=_ALU_MU, out_dir=Dir.EAST)
        off = commit(state, track_drives(f), t)
        t = _lc_time(f, off) + 1

        # -- 2 and 3: the two sums of squares -------------------------------------------------
        def squares(f, op, imm):
            """The loop of ``op(d, d)`` over the channels, from relative cycle 0."""
            acc = None
            for c in range(n):
                d = f.vxm("SUB", Rc(rt, c), dtype=INT32, b_const=True, alu=_ALU_MU,
                          out_dir=E, t=_LEAD + _LOOP * c)
                q = f.vxm(op, d, d, dtype=INT32, imm=imm, a_chain=True, b_chain=True,
                          out_dir=W)
                if acc is None:
                    acc = f.vxm("ADD", K(kw["zero"]), q, dtype=INT32, b_chain=True, out_dir=E,
                                t=_LEAD + _LOOP * (c + 2))
                else:
                    acc = f.vxm("ADD", acc, q, dtype=INT32, a_chain=True, b_chain=True,
                                out_dir=E)
            return acc
        f = Flow(p)
        ss = squares(f, "MULSHR", ln.sq_shift)
        f.vxm("LC", ss, dtype=INT32, a_chain=True, alu=_ALU_SS, out_dir=Dir.EAST)
        off = commit(state, track_drives(f), t)
        t = _lc_time(f, off) + 1

        f = Flow(p)
        # coarse: rs_c = VRSQRT(MULSHR(ss, ms_mult) + eps_q) into ALU 1
        v = f.vxm("MULSHR", K(kw["ms_mult"]), dtype=INT32, imm=ln.ms_shift, b_const=True,
                  alu=_ALU_SS, out_dir=E)
        v = f.vxm("ADD", v, K(kw["eps_q"]), dtype=INT32, a_chain=True, out_dir=E)
        rc = f.vxm("RSQRT", v, dtype=INT32, a_chain=True, out_dir=E)
        f.vxm("LC", rc, dtype=INT32, a_chain=True, alu=_ALU_RS, out_dir=Dir.EAST)
        t_loop = max(_LEAD, max(tt for _, tt, _, _ in f.ops) + 1)
        sf = None
        for c in range(n):
            d = f.vxm("SUB", Rc(rt, c), dtype=INT32, b_const=True, alu=_ALU_MU, out_dir=E,
                      t=t_loop + _LOOP * c)
            q = f.vxm("MUL", d, d, dtype=INT32, a_chain=True, b_chain=True, out_dir=W)
            if sf is None:
                sf = f.vxm("ADD", K(kw["zero"]), q, dtype=INT32, b_chain=True, out_dir=E,
                           t=t_loop + _LOOP * (c + 2))
            else:
                sf = f.vxm("ADD", sf, q, dtype=INT32, a_chain=True, b_chain=True, out_dir=E)
        vf = f.vxm("MULSHR", sf, K(kw["ms_mult_fine"]), dtype=INT32, imm=ln.ms_shift_fine,
                   a_chain=True, out_dir=W)
        vf = f.vxm("ADD", vf, K(kw["eps_q_fine"]), dtype=INT32, a_chain=True, out_dir=E)
        rf = f.vxm("RSQRT", vf, dtype=INT32, a_chain=True, out_dir=W)
        rf = f.vxm("MULSHR", rf, K(kw["fine_to_coarse"]), dtype=INT32, imm=0, a_chain=True,
                   out_dir=E)
        # small_ss > ss (ALU 2's constant) in the same cycle, on the constants' streams
        fine = f.vxm("CMP", vp.src(m8_planes, n, s_8, INT32), dtype=INT32, imm=4,
                     b_const=True, alu=_ALU_SS, out_dir=E, t=f.ops[-1][1])
        if fine.t_drive != rf.t_drive:
            raise CompileError(f"{where}: the range compare and the fine rsqrt do not meet")
        rs = f.vxm("SEL", rf, fine, dtype=INT32, a_chain=True, b_chain=True, alu=_ALU_RS,
                   out_dir=W)
        f.vxm("LC", rs, dtype=INT32, a_chain=True, alu=_ALU_SS, out_dir=Dir.EAST)
        off = commit(state, track_drives(f), t)
        t = _lc_time(f, off) + 1

        # -- 4: the outputs, one flow per channel ---------------------------------------------
        for c in range(n):
            w = rt * n + c
            f = Flow(p)
            d = f.vxm("SUB", Rc(rt, c), dtype=INT32, b_const=True, alu=_ALU_MU, out_dir=W)
            x = f.vxm("MULSHR", d, dtype=INT32, imm=ln.rs_shift, b_const=True, a_chain=True,
                      alu=_ALU_SS, out_dir=E)
            x = f.vxm("MULSHR", x, K(g0 + c), dtype=INT32, imm=ln.gamma_shift, a_chain=True,
                      out_dir=W)
            u = f.vxm("ADD", x, K(b0 + c), dtype=INT32, a_chain=True, out_dir=E)
            y8 = f.vxm("REQ", u, vp.src(m8_planes, c, s_8, INT32), dtype=INT32,
                       imm=ln.out8.shift - 31, a_chain=True, out_dir=out8_dir)
            y = f.vxm("MULSHR", u, K(h0 + c), dtype=INT32, imm=ln.out16.shift, a_chain=True,
                      out_dir=out16_dir)
            y = f.vxm("CAST", y, dtype=INT32, imm=INT16, a_chain=True, out_dir=out8_dir)
            y = f.vxm("CAST", y, dtype=INT16, imm=INT32, a_chain=True, out_dir=out16_dir)
            f.write(y8, vp.dst(y8_planes, w))
            f.write(y, vp.dst(y16_planes, w))
            t = commit(state, track_drives(f), t) + 1
    end = state.end
    for role in (_ALU_RS, _ALU_SS, _ALU_MU):
        state.claim(f"vxm.{role} constant register", start, end - 1, where)

    def desc(name, planes, dtype):
        return TensorDesc(name, (rows, n), dtype,
                          [[(s, bank, base, 1)] for s, bank, base in planes], transposed=True)
    return Emitted(end=end, inputs=[desc(nr, r_planes, "int32")],
                   outputs=[desc(n8, y8_planes, "int8"), desc(n16, y16_planes, "int32")],
                   meta={"rows": rows, "n": n, "row_tiles": RT})
