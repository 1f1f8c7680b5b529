"""Transpose of an int8 matrix in MEM through the SXM: ``Y = X^T``.

:func:`compile_transpose` moves ``X`` (``rows x cols``, int8) to ``Y = X^T`` (``cols x rows``)
without the MXM. Each ``VL x VL`` tile of ``X`` (rows ``it*VL ..``, columns ``jt*VL ..``) becomes
the tile at rows ``jt*VL ..``, columns ``it*VL ..`` of ``Y``. With ``L = lanes``,
``S = superlanes`` and the tile split into ``S x S`` blocks of ``L x L`` (block ``(c, g)``: tile
rows ``c*L ..``, columns ``g*L ..``), a tile takes two phases:

1. **skew** (``sxm_w``): the vector ``V[g][i]`` (``g < S``, ``i < L``) gets, in superlane ``c``,
   columns ``g*L ..`` of tile row ``c*L + i``. Tile row ``c*L + i`` is read from ``mem_e1``
   (westward) and moved by ``(c - g) * L`` lanes, for two blocks ``g`` per READ: ``SHIFT`` for
   ``g < ceil(S/2)`` into a buffer in ``mem_w1``, and in the same cycle ``PERMUTE`` (map
   ``l - (c - g) * L`` from ``mem_e0``) for the others into a buffer in ``mem_w0``; each
   buffer's write queue enables only superlane ``c`` (``CONFIG 1 << c`` once per ``c``).
   ``ceil(S/2) * VL`` cycles per tile, plus one per ``CONFIG``.
2. **transpose** (``TRANSPOSE`` in ``sxm_w``): ``V[g][0 .. L-1]`` (``L`` consecutive READs from
   the buffer holding them) hold block ``(c, g)`` in superlane ``c``, so the ``TRANSPOSE`` of
   them emits, as output vector ``j``, row ``g*L + j`` of the transposed tile, complete and in
   place: it is written to ``Y``.

The buffers alternate between the two banks of their slices, so the transpose phase of one tile
runs while the next tile is skewed. Placement (global MEM slices): ``X`` in ``mem_e1`` bank 0
(word ``jt*rows + r``), ``Y`` in ``mem_e0`` bank 1 (word ``it*cols + c``), the usual
:class:`~openlpu.firmware.package.TensorDesc` layout; the ``2S - 1`` PERMUTE maps are in the
package's MEM image (``mem_e0`` bank 0, word ``S - 1 + k`` for a move by ``k`` blocks). Rows of
a partial tile beyond ``rows`` are not read; the lanes they leave in the buffers only reach
lanes of ``Y`` beyond ``rows``, which are not part of the tensor, and output rows beyond
``cols`` are not written.

Cycles: ``ceil(S/2) * VL + S`` per tile in the steady state, plus the pipeline latency once;
predicted exactly by :meth:`Schedule.emit`. :func:`emit_transpose` places the same schedule on a
:class:`~openlpu.firmware.chipstate.ChipState` from a given cycle on.
"""

from __future__ import annotations

import math

from openlpu.isa import Dir
from openlpu.params import LpuParams

from .chipstate import ChipState, Emitted, transactional
from .package import Package, TensorDesc
from .schedule import CompileError

__all__ = ["compile_transpose", "emit_transpose"]

_S_X = 0          # X rows, westward: mem_e1 -> sxm_w
_S_MAP = 4        # PERMUTE maps, westward: mem_e0 -> sxm_w
_S_SKEW = (1, 5)  # skewed rows, eastward: sxm_w SHIFT -> mem_w1, PERMUTE -> mem_w0
_S_V = (2, 6)     # skewed vectors, westward: mem_w1 / mem_w0 -> sxm_w
_S_Y = 3          # transposed rows, eastward: sxm_w -> mem_e0


def compile_transpose(params: LpuParams, rows: int, cols: int, name: str | None = None) -> Package:
    """Compile ``Y = X^T`` for int8 ``X`` of shape ``rows x cols`` (see the module docstring).

    Raises :class:`CompileError` when a dimension is not a positive integer, the preset has no
    SXM, or ``X``, ``Y`` or the instruction images do not fit.
    """
    state = ChipState(params, f"transpose {rows}x{cols} on preset {params.name!r}")
    out = emit_transpose(state, rows, cols)
    return state.package(name=name or f"transpose_{rows}x{cols}", inputs=out.inputs,
                         outputs=out.outputs, meta=out.meta)


@transactional
def emit_transpose(state: ChipState, rows: int, cols: int, *, earliest: int = 0,
                   names: tuple = ("X", "Y")) -> Emitted:
    """Emit ``Y = X^T`` (see :func:`compile_transpose`) on ``state``, every instruction at or
    after ``earliest``. Its MEM words are fixed (``X`` words 0.. of ``mem_e1`` bank 0, ``Y``
    of ``mem_e0`` bank 1, the skew buffers of ``mem_w1`` / ``mem_w0``, the PERMUTE maps of
    ``mem_e0`` bank 0) and reserved in the state's allocator (an
    :class:`~openlpu.firmware.memalloc.AllocError` names a word another kernel holds); the
    stream registers from ``earliest`` to its last instruction are marked as used
    (:meth:`ChipState.opaque_streams`)."""
    p = state.params
    for n_, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CompileError(f"transpose {n_} must be a positive integer, not {v!r}")
    if not isinstance(earliest, int) or earliest < 0:
        raise CompileError(f"transpose: earliest must be a cycle >= 0, not {earliest!r}")
    where = f"transpose {rows}x{cols} on preset {p.name!r}"
    if not p.sxm:
        raise CompileError(f"{where}: needs an SXM (preset has sxm=False)")
    vl, L, S = p.vl, p.lanes, p.superlanes
    RT, CT = math.ceil(rows / vl), math.ceil(cols / vl)
    for what, need in (("X (rows x column tiles)", rows * CT), ("Y (cols x row tiles)", cols * RT),
                       ("the skew buffer", vl), ("the PERMUTE maps", 2 * S - 1)):
        if need > p.mem_words:
            raise CompileError(f"{where}: {what} needs {need} words of one MEM bank, a bank holds "
                               f"{p.mem_words}")

    sx, sm, ss, sy = (p.slice(n) for n in ("mem_e1", "mem_e0", "sxm_w", "mem_e0"))
    # blocks g < half: SHIFT -> mem_w1, the others: PERMUTE -> mem_w0 (map bytes address lanes
    # 0..255 only, so beyond VL 256 every block takes the SHIFT)
    half = (S + 1) // 2 if vl <= 256 else S
    buf = [p.slice("mem_w1"), p.slice("mem_w0")]
    side = [(g // half, g % half) for g in range(S)]        # g -> (buffer, block slot)
    assert state.lead("SHIFT", ss, ss) == state.lead("PERMUTE", ss, ss)
    lat_xs = state.lead("READ", sx, ss, "SHIFT")                 # READ X -> SHIFT
    lat_ms = state.lead("READ", sm, ss, "PERMUTE")               # READ map -> PERMUTE
    lat_sv = [state.lead("SHIFT", ss, b, "WRITE") for b in buf]  # SHIFT -> buffer WRITE
    lat_vt = [state.lead("READ", b, ss, "TRANSPOSE") for b in buf]   # buffer READ -> TRANSPOSE
    lat_ty = state.lead("TRANSPOSE", ss, sy, "WRITE")            # TRANSPOSE -> Y WRITE
    # PERMUTE maps for a move by k blocks (k = -(S-1) .. S-1): map[l] = l - k*L where that is a
    # lane (only superlane c = g + k of the result is written, and there it always is), else 0
    map_word = {k: S - 1 + k for k in range(-(S - 1), S)} if half < S else {}
    image = [(sm.index, w, bytes(l - k * L if 0 <= l - k * L < vl else 0 for l in range(vl)))
             for k, w in map_word.items()]
    nx, ny = names
    alloc = state.alloc
    alloc.reserve(nx, (sx.index, 0), 0, rows * CT)
    alloc.reserve(ny, (sy.index, 1), 0, cols * RT)
    for b in range(2 if half < S else 1):
        for bank in range(min(2, RT * CT)):
            alloc.reserve(f"{ny} skew buffer", (buf[b].index, bank), 0, half * L)
    if map_word:
        alloc.reserve(f"{ny} PERMUTE maps", (sm.index, 0), 0, len(map_word))
    state.image.extend(image)

    sched = state
    stream_mark = state.stream_hi               # stream slots other kernels claimed
    counts = {"SHIFT": 0, "PERMUTE": 0, "TRANSPOSE": 0}
    t_pair = earliest + max(lat_xs, lat_ms)    # next free SHIFT/PERMUTE cycle
    t_tr = earliest                            # next allowed TRANSPOSE cycle
    last_read = {}                  # (buffer, bank) -> last cycle a READ of it issued
    for n, (it, jt) in enumerate((it, jt) for it in range(RT) for jt in range(CT)):
        bank = n % 2
        vbase = bank * p.mem_words
        n_rows = min(vl, rows - it * vl)
        # phase 1: skew; each buffer's first write comes after its last read of this bank
        t = t_pair
        for b in range(2):
            t = max(t, last_read.get((b, bank), -1) + 1 - lat_sv[b])
        last_write = -1
        for c in range(S):
            group = [i for i in range(L) if c * L + i < n_rows]
            if not group:
                continue
            for b in range(2 if S > 1 else 1):
                sched.place(f"{buf[b].name}.write", t + lat_sv[b] - 1, "CONFIG", mask=1 << c)
            for slot in range(half):
                for i in group:
                    r = c * L + i
                    sched.place(f"{sx.name}.read", t - lat_xs, "READ",
                                addr=jt * rows + it * vl + r, stream=_S_X, dir=Dir.WEST)
                    for b, g in enumerate((slot, half + slot)):
                        if g >= S:
                            continue
                        k = c - g
                        if b == 0:
                            counts["SHIFT"] += 1
                            sched.place(f"{ss.name}.shift", t, "SHIFT", in_stream=_S_X,
                                        in_dir=Dir.WEST, out_stream=_S_SKEW[0], out_dir=Dir.EAST,
                                        amount=k * L)
                        else:
                            sched.place(f"{sm.name}.read", t - lat_ms, "READ", addr=map_word[k],
                                        stream=_S_MAP, dir=Dir.WEST)
                            counts["PERMUTE"] += 1
                            sched.place(f"{ss.name}.permute", t, "PERMUTE", in_stream=_S_X,
                                        in_dir=Dir.WEST, out_stream=_S_SKEW[1], out_dir=Dir.EAST,
                                        map_stream=_S_MAP, map_dir=Dir.WEST)
                        tw = t + lat_sv[b]
                        last_write = max(last_write, tw)
                        sched.place(f"{buf[b].name}.write", tw, "WRITE",
                                    addr=vbase + slot * L + i, stream=_S_SKEW[b], dir=Dir.EAST)
                    t += 1
            t += 1                  # the write queues' CONFIG slot for the next superlane
        t_pair = t
        # phase 2: transpose; buffer words are read after the last buffer write of this tile
        t2 = max(t_tr, last_write + 1 + max(lat_vt))
        for g in range(S):
            b, slot = side[g]
            tg = t2 + g * L
            for i in range(L):
                sched.place(f"{buf[b].name}.read", tg + i - lat_vt[b], "READ",
                            addr=vbase + slot * L + i, stream=_S_V[b], dir=Dir.WEST)
            last_read[(b, bank)] = tg + L - 1 - lat_vt[b]
            counts["TRANSPOSE"] += 1
            sched.place(f"{ss.name}.transpose", tg, "TRANSPOSE", in_stream=_S_V[b],
                        in_dir=Dir.WEST, out_stream=_S_Y, out_dir=Dir.EAST)
            for j in range(L):
                col = g * L + j
                if jt * vl + col < cols:
                    sched.place(f"{sy.name}.write", tg + lat_ty + j, "WRITE",
                                addr=p.mem_words + it * cols + jt * vl + col, stream=_S_Y,
                                dir=Dir.EAST)
        t_tr = t2 + S * L           # a TRANSPOSE may issue L cycles after the previous one
    end = state.end
    state.opaque_streams(earliest, end - 1, where, after=stream_mark)
    return Emitted(
        end=end,
        inputs=[TensorDesc(nx, (rows, cols), "int8", [(sx.index, 0)], base=0)],
        outputs=[TensorDesc(ny, (cols, rows), "int8", [(sy.index, 1)], base=0)],
        meta={"tiles": RT * CT, "shifts": counts["SHIFT"] + counts["PERMUTE"],
              "transposes": counts["TRANSPOSE"], "shape": [rows, cols]},
    )
