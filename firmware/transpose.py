"""Transpose of an int8 matrix in MEM through the SXM: ``Y = X^T``.

:func:`compile_transpose` moves ``X`` (``rows x cols``, int8) to ``Y = X^T`` (``cols x rows``)
without the MXM. Each ``VL x VL`` tile of ``X`` (rows ``it*VL ..``, columns ``jt*VL ..``) becomes
the tile at rows ``jt*VL ..``, columns ``it*VL ..`` of ``Y``. With ``L = lanes``,
``S = superlanes`` and the tile split into ``S x S`` blocks of ``L x L`` (block ``(c, g)``: tile
rows ``c*L ..``, columns ``g*L ..``), a tile takes two phases:

1. **skew** (``SHIFT`` in ``sxm_w``, CONFIG-masked ``WRITE`` in ``mem_w1``): the vector
   ``V[g][i]`` (``g < S``, ``i < L``) gets, in superlane ``c``, columns ``g*L ..`` of tile row
   ``c*L + i``: tile row ``c*L + i`` is read from ``mem_w0``, shifted by ``(c - g) * L`` lanes
   and written into word ``g*L + i`` of the buffer with only superlane ``c`` enabled
   (``CONFIG 1 << c`` once per ``c``). ``S * VL`` shifts per tile, one per cycle, plus one cycle
   per ``CONFIG``.
2. **transpose** (``TRANSPOSE`` in ``sxm_w``): ``V[g][0 .. L-1]`` (``L`` consecutive READs) hold
   block ``(c, g)`` in superlane ``c``, so the ``TRANSPOSE`` of them emits, as output vector
   ``j``, row ``g*L + j`` of the transposed tile, complete and in place: it is written to ``Y``.

The skew buffer alternates between the two banks of ``mem_w1``, so the transpose phase of one
tile runs while the next tile is skewed. Placement (global MEM slices): ``X`` in ``mem_w0`` bank
0 (word ``jt*rows + r``), ``Y`` in ``mem_e0`` bank 1 (word ``it*cols + c``), the usual
:class:`~openlpu.firmware.package.TensorDesc` layout. Rows of a partial tile beyond ``rows`` are
not read; the lanes they leave in the buffer only reach lanes of ``Y`` beyond ``rows``, which
are not part of the tensor, and output rows beyond ``cols`` are not written.

Cycles: about ``S * VL + S`` per tile (the ``mem_w1`` write queue does one write per cycle),
plus the pipeline latency once; predicted exactly by :meth:`Schedule.emit`.
"""

from __future__ import annotations

import math

from openlpu import isa
from openlpu.isa import Dir
from openlpu.params import LpuParams

from .package import Package, TensorDesc
from .schedule import CompileError, Schedule

__all__ = ["compile_transpose"]

_S_X = 0          # X rows, westward: mem_w0 -> sxm_w
_S_SKEW = 1       # shifted rows, eastward: sxm_w -> mem_w1
_S_V = 2          # skewed vectors, westward: mem_w1 -> sxm_w
_S_Y = 3          # transposed rows, eastward: sxm_w -> mem_e0


def compile_transpose(params: LpuParams, rows: int, cols: int, name: str | None = None) -> Package:
    """Compile ``Y = X^T`` for int8 ``X`` of shape ``rows x cols`` (see the module docstring).

    Raises :class:`CompileError` when a dimension is not a positive integer, the preset has no
    SXM, or ``X``, ``Y`` or the instruction images do not fit.
    """
    p = params
    for n_, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CompileError(f"transpose {n_} must be a positive integer, not {v!r}")
    where = f"transpose {rows}x{cols} on preset {p.name!r}"
    if not p.sxm:
        raise CompileError(f"{where}: needs an SXM (preset has sxm=False)")
    vl, L, S = p.vl, p.lanes, p.superlanes
    RT, CT = math.ceil(rows / vl), math.ceil(cols / vl)
    for what, need in (("X (rows x column tiles)", rows * CT), ("Y (cols x row tiles)", cols * RT),
                       ("the skew buffer", vl)):
        if need > p.mem_words:
            raise CompileError(f"{where}: {what} needs {need} words of one MEM bank, a bank holds "
                               f"{p.mem_words}")

    sx, ss, sv, sy = (p.slice(n) for n in ("mem_w0", "sxm_w", "mem_w1", "mem_e0"))
    d_read = isa.BY_MNEMONIC["READ"].d_func(p)
    d_shift = isa.BY_MNEMONIC["SHIFT"].d_func(p)
    d_tr = isa.BY_MNEMONIC["TRANSPOSE"].d_func(p)
    skew_shift = isa.BY_MNEMONIC["SHIFT"].d_skew
    skew_tr = isa.BY_MNEMONIC["TRANSPOSE"].d_skew
    skew_w = isa.BY_MNEMONIC["WRITE"].d_skew
    lat_xs = d_read + abs(sx.position - ss.position) - skew_shift   # READ X -> SHIFT issue
    lat_sv = d_shift + abs(sv.position - ss.position) - skew_w      # SHIFT -> WRITE buffer
    lat_vt = d_read + abs(sv.position - ss.position) - skew_tr      # READ V -> TRANSPOSE issue
    lat_ty = d_tr + abs(sy.position - ss.position) - skew_w         # TRANSPOSE -> WRITE row 0

    sched = Schedule(p)
    t_shift = lat_xs                # next free SHIFT cycle
    t_tr = 0                        # next allowed TRANSPOSE cycle
    last_read = {0: -1, 1: -1}      # buffer bank -> last cycle a READ of it issued
    for n, (it, jt) in enumerate((it, jt) for it in range(RT) for jt in range(CT)):
        bank = n % 2
        vbase = bank * p.mem_words
        n_rows = min(vl, rows - it * vl)
        # phase 1: skew; the first buffer write must come after the last read of this bank
        t = max(t_shift, last_read[bank] + 1 - lat_sv)
        last_write = -1
        for c in range(S):
            group = [i for i in range(L) if c * L + i < n_rows]
            if not group:
                continue
            sched.place(f"{sv.name}.write", t + lat_sv - 1, "CONFIG", mask=1 << c)
            for g in range(S):
                for i in group:
                    r = c * L + i
                    sched.place(f"{sx.name}.read", t - lat_xs, "READ", addr=jt * rows + it * vl + r,
                                stream=_S_X, dir=Dir.WEST)
                    sched.place(f"{ss.name}.shift", t, "SHIFT", in_stream=_S_X, in_dir=Dir.WEST,
                                out_stream=_S_SKEW, out_dir=Dir.EAST, amount=(c - g) * L)
                    last_write = t + lat_sv
                    sched.place(f"{sv.name}.write", last_write, "WRITE", addr=vbase + g * L + i,
                                stream=_S_SKEW, dir=Dir.EAST)
                    t += 1
            t += 1                  # the write queue's CONFIG slot for the next superlane
        t_shift = t
        # phase 2: transpose; V words are read after the last buffer write of this tile
        t2 = max(t_tr, last_write + 1 + lat_vt)
        for g in range(S):
            tg = t2 + g * L
            for i in range(L):
                sched.place(f"{sv.name}.read", tg + i - lat_vt, "READ", addr=vbase + g * L + i,
                            stream=_S_V, dir=Dir.WEST)
            last_read[bank] = tg + L - 1 - lat_vt
            sched.place(f"{ss.name}.transpose", tg, "TRANSPOSE", in_stream=_S_V, in_dir=Dir.WEST,
                        out_stream=_S_Y, out_dir=Dir.EAST)
            for j in range(L):
                b = g * L + j
                if jt * vl + b < cols:
                    sched.place(f"{sy.name}.write", tg + lat_ty + j, "WRITE",
                                addr=p.mem_words + it * cols + jt * vl + b, stream=_S_Y,
                                dir=Dir.EAST)
        t_tr = t2 + S * L           # a TRANSPOSE may issue L cycles after the previous one
    queues, cycles = sched.emit()
    pkg = Package(
        name=name or f"transpose_{rows}x{cols}",
        params=p,
        queues=queues,
        inputs=[TensorDesc("X", (rows, cols), "int8", [(sx.index, 0)], base=0)],
        outputs=[TensorDesc("Y", (cols, rows), "int8", [(sy.index, 1)], base=0)],
        predicted_cycles=cycles,
        meta={"tiles": RT * CT, "shifts": sched.count("SHIFT"),
              "transposes": sched.count("TRANSPOSE"), "shape": [rows, cols]},
    )
    pkg.validate()
    return pkg
