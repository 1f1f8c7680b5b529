"""MiniLM's integer GELU on the chip: ReLU minus a correction read from a MEM table by GATHER.

:func:`emit_gelu` computes ``minilm_int.gelu_int`` (``GeluQuant`` of
``host/models/minilm_quant.py``) over an int16 tensor ``X`` (R x C, stored as int32: four byte
planes, sign-extended), one VXM pass per stored vector:

1. ``VABS x`` -> ``VMULSHR idx_mult`` (constant register, ``imm = idx_shift``) -> ``VMIN 255``
   (constant register): ``idx`` in 0..255, driven towards the table's MEM slice;
   (on ``x``'s streams);
2. ``GATHER``: lane ``l`` reads its byte of word ``base + idx[l]`` of the 256-word table (word
   ``j`` holds ``table[j]`` in every lane; the low byte plane of ``idx`` is the map), driven
   back into the VXM;
3. ``VCAST`` int8 -> int32 -> ``VMULSHR c_mult`` (constant register) and, in the same cycle on
   another ALU, ``VRELU x`` (``x`` READ a second time, onto a second stream group, which carries
   the rest of the chain); ``VSUB`` of the two (both chained);
4. the output rescale: ``VREQ`` with a per-channel multiplier vector (int8) or ``VMULSHR`` +
   ``VCAST`` to int16 and back (int16 stored as int32).

Timing: 8 (int8 output) or 10 (int16) VXM ops per vector on 4 ALUs, three of them on the ALUs
holding the three scalar constants, and one ``GATHER`` in the table's read queue; each vector is
a dataflow flow committed at the first offset that fits, so the pass runs at about one vector
per 2 to 3 cycles (bounded by the ALU slots and the drive slots of the chains' streams). The
table needs 256 words of one bank (preset ``base``: 8192).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from openlpu import isa
from openlpu.isa import Dir

from .chipstate import ChipState, Emitted, lead, transactional
from .dataflow import INT8, INT32, Flow, Val, commit
from .linear import (VecPlacer, chain_dirs, check_rescale, given_planes, lane_vectors,
                     rescale_len, rescale_ops, track_drives)
from .package import Package, TensorDesc
from .schedule import CompileError
from .vxmconst import CONST_WORDS, load_const

__all__ = ["emit_gelu", "compile_gelu", "GELU_TABLE_WORDS", "gather"]

GELU_TABLE_WORDS = 256


def gather(flow: Flow, slice_name: str, addr: int, amap: Val, stream: int, d: Dir) -> Val:
    """Place a ``GATHER`` of word ``addr + map[lane]`` of ``slice_name`` in ``flow``, its map
    the low byte plane of ``amap`` (sampled when it arrives), its result driven on ``stream``
    flowing ``d``; returns the gathered int8 vector."""
    p = flow.params
    sl = p.slice(slice_name)
    q = sl.position
    m1 = dataclasses.replace(amap, nbytes=1)
    t = m1.arrival(q) - isa.BY_MNEMONIC["GATHER"].d_skew
    map_stream, map_dir, _ = flow.materialize(m1, q, t)
    flow._op(f"{slice_name}.read", t, "GATHER", addr=addr, map_stream=map_stream,
             map_dir=map_dir, stream=stream, dir=d)
    flow.banks.append((sl.index, "r", t, p.mem_bank_of(addr)))
    return Val(stream, 1, d, q, t + lead(p, "GATHER", q, q), INT8)


def compile_gelu(params, R: int, C: int, *, table, idx_mult: int, idx_shift: int,
                 c_mult: int, c_shift: int, out_mult, out_shift: int, out_dtype: int,
                 name: str | None = None) -> Package:
    """One-kernel package of :func:`emit_gelu`."""
    where = f"gelu {R}x{C} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_gelu(state, R, C, table=table, idx_mult=idx_mult, idx_shift=idx_shift,
                    c_mult=c_mult, c_shift=c_shift, out_mult=out_mult, out_shift=out_shift,
                    out_dtype=out_dtype)
    return state.package(name=name or f"gelu_{R}x{C}", inputs=out.inputs, outputs=out.outputs,
                         meta=out.meta)


@transactional
def emit_gelu(state: ChipState, R: int, C: int, *, table, idx_mult: int, idx_shift: int,
              c_mult: int, c_shift: int, out_mult, out_shift: int, out_dtype: int,
              earliest: int = 0, names: tuple = ("X", "Y"),
              inputs: tuple | None = None) -> Emitted:
    """Emit ``Y = gelu_int(X)`` (module docstring) on ``state`` from ``earliest`` on.

    ``table``: 256 values 0..127; ``idx_*`` and ``c_*``: the scalar ``GeluQuant.idx`` and
    ``c_to_x`` rescales (int32 ``MULSHR``); ``out_mult`` (one or ``C`` values) and ``out_shift``
    the output rescale, ``out_dtype`` 0 (int8) or 1 (int16, stored as int32). ``X`` is int16
    stored as int32. ``inputs=(X,)``: the int32 layout another kernel left in MEM (four byte
    planes each dense in one bank, on one side of the VXM, as
    :func:`~openlpu.firmware.linear.emit_linear` stores an int16 result), read in place;
    ``earliest`` at or after its writer's end. Raises :class:`CompileError` naming a bad
    argument or what does not fit."""
    p = state.params
    where = f"gelu {R}x{C} on preset {p.name!r}"
    for n_, v in (("R", R), ("C", C)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CompileError(f"gelu {n_} must be a positive integer, not {v!r}")
    tab = np.asarray(table)
    if tab.shape != (GELU_TABLE_WORDS,) or tab.dtype.kind not in "iu" or \
            tab.min() < 0 or tab.max() > 127:
        raise CompileError(f"{where}: the table must be {GELU_TABLE_WORDS} integers in 0..127")
    if out_dtype not in (0, 1):
        raise CompileError(f"{where}: out_dtype must be 0 (int8) or 1 (int16), not {out_dtype!r}")
    if p.mem_words < GELU_TABLE_WORDS:
        raise CompileError(f"{where}: the table needs {GELU_TABLE_WORDS} words of one bank, "
                           f"a bank holds {p.mem_words}")
    if isa.unavailable_reason(isa.BY_MNEMONIC["GATHER"], "read", p):
        raise CompileError(f"{where}: needs GATHER (preset {p.name!r} is built without "
                           f"mem_gather)")
    scal = {}
    for what, m, s in (("index", idx_mult, idx_shift), ("table", c_mult, c_shift)):
        scal[what] = (int(check_rescale(f"{where}: {what} rescale", m, s, 2, 1)[0]), int(s))
    om = check_rescale(f"{where}: output rescale", out_mult, out_shift, out_dtype, C)
    mul_alus = isa.vxm_alus_with(p, "VMULSHR")
    if p.vxm_alus < 4 or len(mul_alus) < 2:
        raise CompileError(f"{where}: needs 4 VXM ALUs, two with the 32x32 multiplier")
    a_idx, a_c = mul_alus[0], mul_alus[1]
    a_min = next(r for r in isa.VXM_ALU_ROLES[:p.vxm_alus] if r not in (a_idx, a_c))
    nx, ny = names
    vl = p.vl
    CT = math.ceil(C / vl)
    words = R * CT
    if inputs is not None and (not isinstance(inputs, (tuple, list)) or len(inputs) != 1):
        raise CompileError(f"{where}: emit_gelu takes inputs=(X,)")
    gx = inputs[0] if inputs is not None else None
    vp = VecPlacer(state, where)
    if gx is not None:
        d_x, x_planes = given_planes(vp, gx, (R, C), f"{where}: X")
    else:
        d_x, x_planes = vp.tensor(nx, words, 4)
    s_x = vp.stream(d_x, 4)
    d_m, m_planes = vp.const(f"{ny} output multipliers", lane_vectors(om, C, vl), 4)
    s_m = vp.stream(d_m, 4)
    n_out = 1 if out_dtype == 0 else 4
    d_y, y_planes = vp.tensor(ny, words, n_out)
    d_t, t_planes = vp.const(f"{ny} table",
                             np.repeat(tab.astype(np.int64)[:, None], vl, axis=1), 1)
    t_slice, t_bank, t_base = t_planes[0]
    t_name = p.mem_slice_list[t_slice].name
    t_addr = t_bank * p.mem_words + t_base
    s_g = vp.stream(d_t, 4)                         # the gathered vector, then its int32 cast
    to_table = Dir.WEST if d_t == Dir.EAST else Dir.EAST
    out_dir = Dir.WEST if d_y == Dir.EAST else Dir.EAST

    # the three scalar constants: 4 words each in the table's slice, loaded by VLC
    c_words = 3 * CONST_WORDS
    unit = (t_slice, t_bank)
    c_base = state.alloc.stripe(f"{ny} constants", c_words, [unit])[0][2]
    src = p.slice(t_name)
    vx = p.slice("vxm")
    s_r = vp.stream(d_x, 4)     # x read again for the ReLU: its chain drives other streams
    c_stream = s_r              # the constant bytes, before the first vector
    t0 = earliest + state.lead("READ", src, vx, "VLC")
    consts = ((a_idx, scal["index"][0]), (a_min, 255), (a_c, scal["table"][0]))
    starts = {}
    for role, value in consts:
        t0 = max(t0, state.free_after(f"vxm.{role} constant register"))
        starts[role] = t0
        t0 = load_const(state, p, state.image, isa.VXM_ALU_ROLES.index(role), value, t0,
                        src=src, addr=t_bank * p.mem_words + c_base + CONST_WORDS * len(starts)
                        - CONST_WORDS, stream=c_stream)
    t = t0
    first = None
    dirs_a = chain_dirs(3, to_table)                 # ABS, MULSHR, MIN (-> the table)
    dirs_b = chain_dirs(1 + rescale_len(out_dtype), out_dir)   # SUB, rescale
    for w in range(words):
        j = w // R
        flow = Flow(p)
        a = flow.vxm("ABS", vp.src(x_planes, w, s_x, INT32), dtype=INT32, out_dir=dirs_a[0])
        a = flow.vxm("MULSHR", a, dtype=INT32, imm=scal["index"][1], b_const=True,
                     a_chain=True, alu=a_idx, out_dir=dirs_a[1])
        idx = flow.vxm("MIN", a, dtype=INT32, b_const=True, a_chain=True, alu=a_min,
                       out_dir=dirs_a[2])
        cq = gather(flow, t_name, t_addr, idx, s_g, d_t)
        c32 = flow.vxm("CAST", cq, dtype=INT8, imm=INT32, out_dir=Dir.EAST)
        c = flow.vxm("MULSHR", c32, dtype=INT32, imm=scal["table"][1], b_const=True,
                     a_chain=True, alu=a_c, out_dir=Dir.EAST)
        r = flow.vxm("RELU", vp.src(x_planes, w, s_r, INT32), dtype=INT32, out_dir=Dir.EAST,
                     t=c.t_drive - lead(p, "VRELU", vx, vx))
        if r.t_drive != c.t_drive:
            raise CompileError(f"{where}: ReLU and correction do not meet")   # not reached
        g = flow.vxm("SUB", r, c, dtype=INT32, a_chain=True, b_chain=True, out_dir=dirs_b[0])
        z = rescale_ops(flow, g, vp.src(m_planes, j, s_m, INT32), int(out_shift), out_dtype,
                        dirs_b[1:])
        flow.write(z, vp.dst(y_planes, w))
        t = commit(state, track_drives(flow), t)
        first = t if first is None else first
        t += 1
    end = state.end
    for role in starts:
        state.claim(f"vxm.{role} constant register", starts[role], end - 1, where)

    def desc(name, planes, dtype):
        return TensorDesc(name, (R, C), dtype, [[(s, bank, base, 1)] for s, bank, base in planes])
    return Emitted(end=end, inputs=[gx or desc(nx, x_planes, "int32")],
                   outputs=[desc(ny, y_planes, "int8" if out_dtype == 0 else "int32")],
                   meta={"vectors": words, "pass_start": first, "out_dtype": out_dtype})
