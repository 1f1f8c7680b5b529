"""Compiler: workloads -> cycle-exact schedules -> program packages.

:func:`compile_matmul` builds ``C = A @ B`` for int8 ``A`` (M x K) and ``B`` (K x N) with int32
``C``, tiled over K and N in vector-length (VL) tiles and over M in accumulator-sized chunks.

Data placement (global MEM slice numbers, see ``LpuParams.mem_slice_list``) when every operand
and result plane fits one bank:

* ``A`` rows in ``mem_w0`` bank 0, word ``j*M + m`` = row ``m``, K-tile ``j``;
* ``B^T`` rows in ``mem_w1`` bank 0, word ``j*N + n`` = column ``n`` of B, K-tile ``j``
  (the MXM takes the weights of one output lane per vector);
* ``C`` byte plane ``b`` in bank 1 of MEM slice ``b``, word ``j*M + m`` = row ``m``, N-tile ``j``.

Dataflow per tile: ``mem_w1`` READs weight vectors westward on stream 1 into ``LW``; ``IW`` swaps
them in (double-buffered, so the next tile's weights load while this tile computes); ``mem_w0``
READs activation rows westward on stream 0 into ``ABC`` (one per cycle); after the last K-tile,
``ACC`` sends each int32 row eastward on stream group 0, and four MEM slices ``WRITE`` the four
byte planes. Every consumer is issued at ``producer issue + d_func + |distance|``
(:func:`~openlpu.firmware.chipstate.lead`, docs/architecture.md).

:func:`emit_matmul` and :func:`emit_elementwise` place the kernels on a
:class:`~openlpu.firmware.chipstate.ChipState` from an ``earliest`` cycle on, next to whatever
the state holds; :func:`compile_matmul` and :func:`compile_elementwise` are their one-kernel
wrappers (docs/architecture.md, *The chip state and kernel emitters*).

When a tensor needs more than one bank, the same stored words (``j*M + m``, ``j*N + n``) are
striped over several MEM slices and banks by :class:`~openlpu.firmware.memalloc.MemAllocator`
(:func:`_plan_striped`); each READ then comes from the slice holding its word, on that slice's
stream, ``d_func + |distance|`` before its consumer (docs/architecture.md, *Tensor layouts and
MEM allocation*).

When the accumulator chunks have few rows (at most ``VL + 1``, so one ``LW`` per cycle bounds
the schedule) and the chip can feed two or more weight rows per cycle, the weight planes are
installed with ``LWW``: ``B^T`` striped over ``count`` MEM slices (west first) on ``count``
consecutive streams, one ``LWW`` of ``count`` rows per cycle (docs/architecture.md, *Matmul
with wide weight loads*); that package is kept only if it predicts fewer cycles.
"""

from __future__ import annotations

import math

from openlpu import isa
from openlpu.isa import Dir
from openlpu.params import LpuParams

from .chipstate import ChipState, Emitted, transactional
from .package import Package, TensorDesc
from .schedule import CompileError, ImemOverflow
from .vxmconst import load_const

__all__ = ["compile_matmul", "emit_matmul", "compile_elementwise", "emit_elementwise",
           "CompileError"]

_STREAM_A = 0
_STREAM_B = 1
_GROUP_C = 0


def _check_dim(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise CompileError(f"matmul dimension {name} must be a positive integer, not {v!r}")


def _given_input(inputs, i, shape, what):
    """The :class:`TensorDesc` ``inputs[i]`` checked as an int8 row-wise tensor of ``shape``
    (None if not given); raises :class:`CompileError` naming ``what`` otherwise."""
    if i >= len(inputs) or inputs[i] is None:
        return None
    d = inputs[i]
    if not isinstance(d, TensorDesc):
        raise CompileError(f"{what}: an input layout must be a TensorDesc, not {type(d).__name__}")
    if tuple(d.shape) != tuple(shape) or d.dtype != "int8" or d.transposed:
        raise CompileError(f"{what}: tensor {d.name!r} is {d.dtype} {tuple(d.shape)}"
                           f"{' transposed' if d.transposed else ''}, the kernel reads int8 "
                           f"{tuple(shape)} row-wise")
    return d


class _Operand:
    """Where the stored words of one matmul operand live and the stream each slice feeds."""

    def __init__(self, params, stripes, streams):
        self.stripes = stripes                       # [(slice, bank, base, stride)]
        self.streams = streams                       # per stripe
        self.q = [f"{params.mem_slice_list[s].name}.read" for s, *_ in stripes]
        self.pos = [params.mem_slice_list[s].position for s, *_ in stripes]

    def at(self, params, w):
        """``(read queue, position, address, stream)`` of stored word ``w``."""
        n = len(self.stripes)
        i = w % n
        sl, bank, base, stride = self.stripes[i]
        return self.q[i], self.pos[i], bank * params.mem_words + base + (w // n) * stride, \
            self.streams[i]


def _plan_legacy(p, alloc, WA, WB, WC, requant, names):
    """The single-bank placement (A in ``mem_w0`` bank 0, ``B^T`` in ``mem_w1`` bank 0, each
    byte plane of C in bank 1 of MEM slice ``b``, all from word 0; the epilogue's multiplier in
    words 0..3 of ``mem_e0`` bank 0), reserved in ``alloc``; None if an operand needs more than
    one bank or a word of it is taken. Kept so that every matmul that fits it compiles to the
    same package as before layouts."""
    from .memalloc import AllocError
    if max(WA, WB, WC) > p.mem_words:
        return None
    na, nb, nc = names
    s_a, s_b = p.slice("mem_w0"), p.slice("mem_w1")
    e0 = p.slice("mem_e0").index
    if requant:
        c_units = [(e0, 1)]
    else:
        c_units = [(s.index, 1) for s in p.mem_slice_list[:4]]
    want = [(na, (s_a.index, 0), WA), (nb, (s_b.index, 0), WB)]
    want += [(f"{nc} byte plane {b}", u, WC) for b, u in enumerate(c_units)]
    if requant:
        want.append((f"{nc} multiplier constant", (e0, 0), 4))
    done = []
    try:
        for owner, unit, words in want:
            alloc.reserve(owner, unit, 0, words)
            done.append(owner)
    except AllocError:
        for owner in done:
            alloc.free(owner)
        return None
    A = _Operand(p, [(s_a.index, 0, 0, 1)], [_STREAM_A])
    B = _Operand(p, [(s_b.index, 0, 0, 1)], [_STREAM_B])
    c_planes = [[(s, bank, 0, 1)] for s, bank in c_units]
    return A, B, c_planes, True, (0 if requant else None)


def _plan_striped(p, alloc, WA, WB, WC, requant, relu, names, b_per_slice=True, wide=0,
                  a_fixed=None, b_fixed=None):
    """Stripe A, ``B^T`` and C over the MEM with the :class:`MemAllocator` ``alloc`` (the chip
    state's: words other kernels hold are not used).

    With ``wide = (limit, need)`` (:func:`_wide_limit`), ``B^T`` is striped over exactly
    ``count`` slices, one bank each: as many of the west slices left after C and A as there are
    (their READ leads are the shortest), more (east ones) only if a plane must load in fewer
    cycles than those feed to hide behind the ``ABC``s (``need`` rows per cycle), at most
    ``limit`` and the westward streams A leaves; consecutive stored words are in ``count``
    different slices, so the rows of one ``LWW`` come from ``count`` slices at once.
    Its streams are then ``s0 .. s0 + count - 1`` (none of them A's): the ``i``-th row of an
    ``LWW`` travels on stream ``s0 + i``. Returns None when no count ``>= 2`` fits.

    * C first: byte plane ``b`` of the int32 result gets its own group of slices (every fourth
      slice, east hemisphere first), so the four plane WRITEs of one result row are in four
      different write queues; within the group bank 1 of each slice comes before bank 0.
      The int8 result of the fused epilogue comes out of the VXM eastward, so it lives in the
      east slices (bank 1 first; words 0..3 of ``mem_e0`` bank 0 hold the multiplier).
    * A and ``B^T`` in the banks the result leaves free, never a bank the result writes in the
      same slice (a READ and a WRITE on one bank in one cycle are a bank conflict), and in
      disjoint sets of slices (each slice has one read queue, and A's READs for ``ABC`` and B's
      for ``LW`` run in the same cycles). West slices first. A fills whole slices (fewest
      slices); ``B^T`` takes one bank in every remaining slice before second banks, and is
      striped over at least every remaining west slice, so consecutive weight rows come from
      different slices on different streams.
    * Streams (westward): A's slices share one stream, and with ``b_per_slice`` every slice of
      ``B^T`` feeds its own (else they share one too). A tensor's words reach the MXM in
      distinct cycles, one ``ABC`` or ``LW`` per cycle, so words of one tensor never meet on a
      stream; A and ``B^T`` use different streams. With the epilogue, the constant's stream
      ``streams - 1`` and, for slices east of the VXM, the streams the VXM drives westward
      (group 0) are left out. A shared stream keeps the ``ABC`` / ``LW`` runs REPEAT-able; one
      stream per slice is what a load of several weight rows per cycle needs.

    With ``a_fixed`` (the stripes of an A another kernel left in MEM) A is not allocated: C
    avoids A's banks, ``B^T`` A's slices; likewise ``b_fixed`` for ``B^T`` (A then avoids its
    slices).

    Each tensor takes the fewest stripes that fit. Raises :class:`AllocError` naming the tensor.
    Returns ``(A, B, C planes, False, address of the multiplier constant or None)``.
    """
    from .memalloc import AllocError
    na, nb, nc = names
    where = alloc.where
    n = p.mem_slices
    west = [s.index for s in p.mem_slice_list[:n]]
    east = [s.index for s in p.mem_slice_list[n:]]
    const_addr = None
    if requant:         # four words of mem_e0 bank 0 (words 0..3 on an empty MEM)
        const_addr = alloc.stripe(f"{nc} multiplier constant", 4,
                                  [(p.slice("mem_e0").index, 0)])[0][2]

    def fewest(name, words, order, note=""):
        """The fewest leading units of ``order`` that hold ``words`` words as stripes; failing
        that (a MEM other kernels fragmented), the fewest units of ``order``, in its order,
        whose free runs hold a stripe each."""
        for k in range(1, min(len(order), words) + 1):
            if alloc.fits(words, order[:k]):
                return alloc.stripe(name, words, order[:k])
        for k in range(1, min(len(order), words) + 1):
            room = [u for u in order if alloc.largest_run(u) >= -(-words // k)][:k]
            if len(room) == k and alloc.fits(words, room):
                return alloc.stripe(name, words, room)
        raise AllocError(alloc.describe_shortage(name, words, order,
                                                 max(1, -(-words // p.mem_words)), note))

    a_units = {(s, bk) for s, bk, *_ in (a_fixed or []) + (b_fixed or [])}
    b_slices = {s for s, *_ in b_fixed} if b_fixed else set()
    if a_fixed and b_slices & {s for s, *_ in a_fixed}:
        raise CompileError(f"{where}: {na} and {nb} are both read from MEM slice(s) "
                           f"{sorted(b_slices & {s for s, *_ in a_fixed})}, one read queue "
                           f"cannot feed both")
    if requant:
        order = [(s, 1) for s in east] + [(s, 0) for s in east]
        c_planes = [fewest(nc, WC, [u for u in order if u not in a_units])]
    else:
        slices = east + west
        c_planes = []
        for b in range(4):
            group = slices[b::4]
            c_planes.append(fewest(f"{nc} byte plane {b}", WC,
                                   [u for u in [(s, 1) for s in group] + [(s, 0) for s in group]
                                    if u not in a_units]))
    written = {}
    for plane in c_planes:
        for s, bank, *_ in plane:
            written.setdefault(s, set()).add(bank)
    # operand slices: west from the MXM side (outer first), then east; with the epilogue,
    # mem_e0's read queue streams the multiplier's words
    cand = list(reversed(west)) + [s for s in east
                                   if not (requant and s == p.slice("mem_e0").index)]
    usable = {s: [bk for bk in (0, 1) if bk not in written.get(s, ())] for s in cand}
    cand = [s for s in cand if usable[s]]
    # A: whole slices, fewest stripes
    a_order = [(s, bk) for s in cand for bk in usable[s] if s not in b_slices]
    note = "operands are not read from a bank the result writes"
    stripes_a = list(a_fixed) if a_fixed else fewest(na, WA, a_order, note)
    a_slices = list(dict.fromkeys(s for s, *_ in stripes_a))
    rest = [s for s in cand if s not in a_slices]
    # B^T: one bank in each remaining slice first, at least as many stripes as slices
    b_order = [(s, usable[s][0]) for s in rest] + [(s, bk) for s in rest for bk in usable[s][1:]]
    if b_fixed:
        wide = 0
    if wide:
        limit, need = wide
        top = min(limit, len(rest), p.streams - 1, WB)
        # west slices (the shortest READ leads) unless a plane must load faster than they feed
        west_rest = len([s for s in rest if s in west])
        best = _wide_count(p.vl, min(top, max(west_rest, need)))
        # the fewest cycles per plane first; more stripes if B^T does not fit that many banks
        count = next((c for c in list(range(best, top + 1)) + list(range(best - 1, 1, -1))
                      if alloc.fits(WB, b_order[:c])), 0)
        if count < 2:
            return None
        stripes_b = alloc.stripe(f"{nb}^T", WB, b_order[:count])
    need = None if wide or b_fixed else next((k for k in range(1, len(b_order) + 1)
                                              if alloc.fits(WB, b_order[:k])), None)
    if b_fixed:
        stripes_b = list(b_fixed)
    elif wide:
        pass                                # stripes_b allocated above
    elif need is None:
        stripes_b = fewest(f"{nb}^T", WB, b_order, note + ", nor B^T from A's slices")  # raises
    else:
        k = min(max(need, len([s for s in rest if s in west])), WB)
        stripes_b = alloc.stripe(f"{nb}^T", WB, b_order[:k] if alloc.fits(WB, b_order[:k])
                                 else b_order[:need])
    vxm_pos = p.slice("vxm").position
    reserved = {p.streams - 1} if requant else set()

    def allowed(x, s, taken):
        """Whether slice ``s`` may READ westward onto stream ``x``: not a stream in ``taken``,
        not the epilogue's constant stream, and east of the VXM not one the VXM drives."""
        east_of_vxm = p.mem_slice_list[s].position > vxm_pos
        return x not in taken and x not in reserved and not (requant and east_of_vxm and x < 4)

    def streams_for(stripes, taken, per_slice):
        """A westward stream per slice of ``stripes`` (or one for all of them), none in
        ``taken``; adds the chosen ones to ``taken``."""
        slices = list(dict.fromkeys(s for s, *_ in stripes))
        by_slice = {}
        groups = [[s] for s in slices] if per_slice else [slices]
        for group in groups:
            pool = [x for x in range(p.streams) if all(allowed(x, s, taken) for s in group)]
            if not pool:                            # reuse this tensor's own streams
                own = [x for x in dict.fromkeys(by_slice.values())
                       if all(allowed(x, s, taken) or x in by_slice.values() for s in group)]
                if not own:
                    raise CompileError(f"{where}: no westward stream is left for the operand "
                                       f"slice(s) {', '.join(p.mem_slice_list[s].name for s in group)}")
                for s in group:
                    by_slice[s] = own[len(by_slice) % len(own)]
                continue
            for s in group:
                by_slice[s] = pool[0]
            taken.add(pool[0])
        return [by_slice[s] for s, *_ in stripes]
    taken = set()
    A = _Operand(p, stripes_a, streams_for(stripes_a, taken, False))
    if wide:
        b_slices_in_order = [s for s, *_ in stripes_b]
        s0 = next((x for x in range(p.streams - len(stripes_b) + 1)
                   if all(allowed(x + i, s, taken) for i, s in enumerate(b_slices_in_order))),
                  None)
        if s0 is None:
            return None
        B = _Operand(p, stripes_b, list(range(s0, s0 + len(stripes_b))))
        B.wide = len(stripes_b)
        return A, B, c_planes, False, const_addr
    B = _Operand(p, stripes_b, streams_for(stripes_b, taken, b_per_slice))
    return A, B, c_planes, False, const_addr


def _wide_count(vl, limit):
    """The ``LWW`` count for ``limit`` rows at most: the fewest cycles per ``VL``-row plane
    (``ceil(VL / count)``), and of the counts that reach it the smallest (fewest slices)."""
    if limit < 2:
        return 0
    cycles = -(-vl // limit)
    return -(-vl // cycles)


def _wide_limit(p, requant, M):
    """``(limit, need)``: the most rows per cycle a wide weight load of a matmul could take
    on ``p`` and the fewest with which every plane hides behind its tile's ``ABC``s; 0 for none.

    ``limit`` is ``isa.wide_load_feed_rows`` (one row per MEM slice per cycle), less A's slice
    and stream, and with the fused epilogue less ``mem_e0`` and the multiplier's stream (the
    streams the VXM drives are left to the slices west of it, :func:`_plan_striped`). 0 when
    every accumulator chunk has more rows than ``VL + 1`` (the ``LW`` instructions of a plane
    then hide behind the ``ABC``s and the wide load gives nothing).
    """
    mm_min = min(p.mxm_acc_words, M - (math.ceil(M / p.mxm_acc_words) - 1) * p.mxm_acc_words)
    if mm_min > p.vl + 1:
        return 0
    # A's slice and stream; with the epilogue also mem_e0 (it streams the multiplier) and the
    # multiplier's stream
    limit = min(isa.wide_load_feed_rows(p), 2 * p.mem_slices - 1 - requant,
                p.streams - 1 - requant)
    if limit < 2:
        return 0
    # a tile's plane (ceil(VL / c) cycles) and IW hide behind its mm ABCs when ceil(VL / c) < mm
    need = next((c for c in range(2, limit + 1) if -(-p.vl // c) < mm_min), limit)
    return limit, need


def compile_matmul(params: LpuParams, M: int, K: int, N: int, *, name: str | None = None,
                   requantize: tuple | None = None, relu: bool = False) -> Package:
    """Compile an int8 matmul ``(M x K) @ (K x N) -> int32 (M x N)`` for ``params``.

    With ``requantize=(multiplier, shift)`` the int32 rows stream from the MXM straight into the
    VXM, which requantizes them (``VREQ``: ``saturate8(round(c * multiplier / 2**(31 + shift)))``,
    multiplier in the ALU's constant register) and, with ``relu``, applies ``VRELU`` in a chained
    second ALU; the result ``C`` is int8 and never exists as int32 in MEM.

    Placement: when every operand and result plane fits one bank, the single-bank placement of
    the module docstring; otherwise A, ``B^T`` and C are striped over the MEM slices and banks
    (:func:`_plan_striped`, ``docs/architecture.md`` *Tensor layouts*). The schedule is the same
    either way: one ``ABC`` and one ``LW`` per cycle, each from the stream its word's slice feeds.

    Wide weight loads: when an accumulator chunk has at most ``VL + 1`` rows (the ``LW``
    instructions of a plane, one per cycle, then bound the schedule) and
    ``isa.wide_load_feed_rows`` with the slices and streams A (and the epilogue) leave allow
    ``count >= 2``, the
    matmul is also scheduled with ``B^T`` striped over ``count`` slices and each plane
    installed by ``LWW`` instructions of ``count`` rows from streams ``s0 .. s0 + count - 1``
    (``meta["wide_load_rows"] = count``); that package is returned if it predicts fewer
    cycles, else the ``LW`` package (unchanged, byte for byte). Timing: a tile of ``mm`` rows
    takes ``max(mm, ceil(nn / count) + 1)`` cycles in steady state instead of
    ``max(mm, nn + 1)``.

    Raises :class:`CompileError` if a dimension is invalid or the operands, the result or the
    instruction images do not fit the preset; a tensor that does not fit is named with the words
    it needs and the words free.
    """
    where = f"matmul {M}x{K}x{N} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_matmul(state, M, K, N, requantize=requantize, relu=relu)
    return state.package(name=name or f"matmul_{M}x{K}x{N}", inputs=out.inputs,
                         outputs=out.outputs, meta=out.meta)


def emit_matmul(state: ChipState, M: int, K: int, N: int, *, earliest: int = 0,
                requantize: tuple | None = None, relu: bool = False,
                names: tuple = ("A", "B", "C"), inputs: tuple | None = None) -> Emitted:
    """Emit ``names[2] = names[0] @ names[1]`` on ``state`` (see :func:`compile_matmul`): every
    instruction at or after ``earliest``, the tensors in MEM words the state's allocator has
    free, the accumulator rows, weight buffers and constant register after their last claim.

    On an empty state the placement and schedule are those of :func:`compile_matmul` (the
    single-bank placement when its words are free, else striped; wide weight loads when they
    predict fewer cycles). Returns the :class:`Emitted` end cycle, tensor descriptors and
    figures. Raises :class:`CompileError` as :func:`compile_matmul` does.

    ``inputs=(A, None)``: ``A`` is the :class:`TensorDesc` of an int8 ``M x K`` tensor another
    kernel left in MEM (one byte plane, row-wise: stored word ``j*M + m`` = row ``m``, K-tile
    ``j``, which is how a matmul with the requantize epilogue and an elementwise op store
    their int8 results), read where it is; only ``B`` and ``C`` are allocated (C in banks A does
    not use, ``B^T`` in slices A does not use; no single-bank placement; wide loads from the
    slices A leaves, when they predict fewer cycles). The
    returned ``inputs`` list then holds ``A``'s descriptor as given. ``inputs=(A or None, B)``:
    likewise ``B``, an int8 ``K x N`` layout stored transposed (stored word ``j*N + n`` = column
    ``n`` of B, K-tile ``j``: a row-wise ``N x K`` tensor ``Y`` read as ``B = Y^T``, so
    ``X @ Y^T`` of two activations). ``earliest`` must be at or
    after the end of the kernel that wrote ``A``.
    """
    for n_, v in (("M", M), ("K", K), ("N", N)):
        _check_dim(n_, v)
    a_fixed = _given_input(inputs, 0, (M, K), "A of the matmul") if inputs else None
    b_fixed = None
    if inputs and len(inputs) > 1 and inputs[1] is not None:
        b_fixed = inputs[1]
        if (not isinstance(b_fixed, TensorDesc) or tuple(b_fixed.shape) != (K, N)
                or b_fixed.dtype != "int8" or not b_fixed.transposed):
            raise CompileError(f"B of the matmul: {getattr(b_fixed, 'name', b_fixed)!r} must be "
                               f"an int8 ({K}, {N}) layout stored transposed (its rows the "
                               f"columns of B)")
    if inputs and len(inputs) > 2:
        raise CompileError(f"{state.where}: emit_matmul takes inputs=(A, B)")
    p = state.params
    vl = p.vl
    KT, NT = math.ceil(K / vl), math.ceil(N / vl)
    where = state.where
    if relu and requantize is None:
        raise CompileError("relu needs requantize=(multiplier, shift)")
    if requantize is not None:
        mult, rq_shift = requantize
        if not -(1 << 31) <= int(mult) < (1 << 31) or not 0 <= int(rq_shift) < 32:
            raise CompileError(f"requantize multiplier must be int32 and shift 0..31, not "
                               f"{requantize!r}")
        need_alus = 2 if relu else 1
        if p.vxm_alus < need_alus:
            raise CompileError(f"{where}: the fused epilogue needs {need_alus} VXM ALU(s); preset "
                               f"{p.name!r} has {p.vxm_alus}")
    if not isinstance(earliest, int) or earliest < 0:
        raise CompileError(f"{where}: earliest must be a cycle >= 0, not {earliest!r}")
    WA, WB, WC = M * KT, N * KT, M * NT
    rq = requantize is not None
    args = (M, K, N, requantize, relu, earliest, tuple(names))
    lw_state = state.fork()
    a_given = a_fixed and a_fixed.layout[0]
    out = _emit_lw(lw_state, WA, WB, WC, rq, args, a_given, b_fixed and b_fixed.layout[0])
    wide_rows = None if b_fixed else _wide_limit(p, rq, M)
    if wide_rows:
        try:    # a wide placement that does not fit (MEM, streams, imem) leaves the LW one
            ws = state.fork()
            plan = _plan_striped(p, ws.alloc, WA, WB, WC, rq, relu, names, wide=wide_rows,
                                 a_fixed=a_given)
            wide = plan and _emit_planned(ws, *args, *plan)
            if wide:
                ws.emit()                   # raises ImemOverflow
        except CompileError:
            wide = None
        if wide and ws.last_effect < lw_state.last_effect:
            state.adopt(ws)
            out, lw_state = wide, None
    if lw_state is not None:
        state.adopt(lw_state)
    if a_fixed or b_fixed:
        out.inputs[0] = a_fixed or out.inputs[0]
        out.inputs[1] = b_fixed or out.inputs[1]
    return out


def _emit_lw(state, WA, WB, WC, rq, args, a_fixed=None, b_fixed=None):
    """The matmul with one ``LW`` per weight row: the single-bank placement when it fits (and A
    is not given), else striped (one stream per weight slice, or one shared stream if that
    overflows an instruction memory)."""
    p = state.params
    M, K, N, requantize, relu, earliest, names = args
    legacy = None if a_fixed or b_fixed else _plan_legacy(p, state.alloc, WA, WB, WC, rq,
                                                          names)
    if legacy:
        return _emit_planned(state, *args, *legacy)
    base = state.fork()
    plan = _plan_striped(p, state.alloc, WA, WB, WC, rq, relu, names, a_fixed=a_fixed,
                         b_fixed=b_fixed)
    out = _emit_planned(state, *args, *plan)
    try:
        state.emit()
        return out
    except ImemOverflow:
        if len(set(plan[1].streams)) == 1:
            raise
    # one stream per weight slice breaks the LW runs REPEAT packs; share one stream instead
    state.adopt(base)
    plan = _plan_striped(p, state.alloc, WA, WB, WC, rq, relu, names, b_per_slice=False,
                         a_fixed=a_fixed, b_fixed=b_fixed)
    return _emit_planned(state, *args, *plan)


def _emit_planned(state, M, K, N, requantize, relu, earliest, names, A, B, c_planes, legacy,
                  const_addr):
    """Schedule a matmul placed by :func:`_plan_legacy` or :func:`_plan_striped` on ``state``
    from ``earliest`` on; returns its :class:`Emitted`."""
    p = state.params
    vl = p.vl
    KT, NT = math.ceil(K / vl), math.ceil(N / vl)
    mc = p.mxm_acc_words                 # rows per accumulator chunk
    na, nb, nc = names
    mxm = p.slice("mxm_w")
    wide = getattr(B, "wide", 0)
    d_abc = state.lead("ABC", mxm, mxm)              # ABC at t -> accumulator row written
    lat_a = max(state.lead("READ", x, mxm, "ABC") for x in A.pos)  # READ A at t -> ABC
    lat_b = max(state.lead("READ", x, mxm, "LW") for x in B.pos)   # READ B at t -> LW
    c_where = []                         # per plane: per stripe (write queue, position, ...)
    for plane in c_planes:
        c_where.append([(f"{p.mem_slice_list[s].name}.write", p.mem_slice_list[s].position,
                         bank, base, stride) for s, bank, base, stride in plane])
    buf_load, buf_use = "mxm_w weight buffer (loading)", "mxm_w weight buffer (in use)"

    lw_free, abc_free, acc_free = earliest + lat_b, earliest + lat_a, earliest
    c_desc_planes = ([(pl[0][0], pl[0][1]) for pl in c_planes] if legacy else c_planes)
    out_desc = TensorDesc(nc, (M, N), "int32", c_desc_planes, base=0)
    if requantize is not None:
        mult, rq_shift = requantize
        epilogue, acc_free, out_desc = _requant_epilogue(
            state, mxm, int(mult), int(rq_shift), relu, M, N, c_planes[0], legacy, earliest,
            const_addr, nc)
    prev_iw, prev_last_abc = state.free_after(buf_load) - 1, state.free_after(buf_use) - 1
    abc_queue = "mxm_w.compute"
    for m0 in range(0, M, mc):
        mm = min(mc, M - m0)
        for nt in range(NT):
            nn = min(vl, N - nt * vl)
            for kt in range(KT):
                # weights: one LW per output lane of this N-tile
                w0 = max(lw_free, prev_iw + 1)
                if wide:
                    # row r0 + i of the k-th LWW: stored word w + i, from its own slice
                    # (consecutive words are in `wide` different slices) on stream s0 + i
                    for k, r0 in enumerate(range(0, nn, wide)):
                        t, c = w0 + k, min(wide, nn - r0)
                        state.place("mxm_w.weights", t, "LWW", row=r0, stream=B.streams[0],
                                    dir=Dir.WEST, count=c)
                        for i in range(c):
                            q, pos, addr, _ = B.at(p, kt * N + nt * vl + r0 + i)
                            state.read_into(q, pos, addr, B.streams[i], Dir.WEST, mxm, t, "LWW")
                    n_load = -(-nn // wide)
                else:
                    for r in range(nn):
                        t = w0 + r
                        q, pos, addr, stream = B.at(p, kt * N + nt * vl + r)
                        state.place("mxm_w.weights", t, "LW", row=r, stream=stream,
                                    dir=Dir.WEST)
                        state.read_into(q, pos, addr, stream, Dir.WEST, mxm, t, "LW")
                    n_load = nn
                # the IW may share the previous tile's last ABC cycle
                iw = max(w0 + n_load, prev_last_abc)
                state.place("mxm_w.weights", iw, "IW")
                state.claim(buf_load, w0, iw, f"{nc} tile ({m0}, {nt}, {kt})")
                # activations: one ABC per row; an overwriting ABC must land after the row's ACC
                a0 = max(abc_free, iw + 1)
                if kt == 0:
                    for r in range(mm):
                        a0 = max(a0, state.free_after(f"mxm_w accumulator row {r}") - d_abc - r)
                    first_write = a0 + d_abc
                for r in range(mm):
                    t = a0 + r
                    q, pos, addr, stream = A.at(p, kt * M + m0 + r)
                    state.place(abc_queue, t, "ABC", acc=r, stream=stream, dir=Dir.WEST,
                                accumulate=int(kt > 0))
                    state.read_into(q, pos, addr, stream, Dir.WEST, mxm, t, "ABC")
                state.claim(buf_use, iw + 1, a0 + mm - 1, f"{nc} tile ({m0}, {nt}, {kt})")
                abc_free, prev_last_abc, prev_iw, lw_free = a0 + mm, a0 + mm - 1, iw, iw + 1
                if kt == KT - 1:
                    for r in range(mm):
                        tc = max(acc_free, a0 + r + d_abc)
                        state.place("mxm_w.result", tc, "ACC", acc=r, group=_GROUP_C,
                                    dir=Dir.EAST)
                        state.claim(f"mxm_w accumulator row {r}", first_write + r, tc,
                                    f"{nc} rows {m0}.., N-tile {nt}")
                        acc_free = tc + 1
                        w = nt * M + m0 + r
                        if requantize is not None:
                            epilogue(tc, w)
                            continue
                        for b in range(4):
                            qw, pos, bank, base, stride = c_where[b][w % len(c_where[b])]
                            t_w = state.send("ACC", mxm, tc, Dir.EAST, (4 * _GROUP_C + b,),
                                             pos, "WRITE")
                            state.place(qw, t_w, "WRITE",
                                        addr=bank * p.mem_words + base
                                        + (w // len(c_where[b])) * stride,
                                        stream=4 * _GROUP_C + b, dir=Dir.EAST)
    if requantize is not None:
        epilogue.claim()
    meta = {"macs": M * K * N, "mxm_busy_cycles": M * KT * NT, "shape": [M, K, N]}
    if legacy:
        inputs = [TensorDesc(na, (M, K), "int8", [A.stripes[0][:2]], base=0),
                  TensorDesc(nb, (K, N), "int8", [B.stripes[0][:2]], base=0, transposed=True)]
    else:
        inputs = [TensorDesc(na, (M, K), "int8", [A.stripes]),
                  TensorDesc(nb, (K, N), "int8", [B.stripes], transposed=True)]
        meta["stripes"] = {"A": len(A.stripes), "B": len(B.stripes),
                           "C": [len(pl) for pl in c_planes]}
        meta["streams"] = {"A": sorted(set(A.streams)), "B": sorted(set(B.streams))}
        if wide:
            meta["wide_load_rows"] = wide
    return Emitted(end=state.end, inputs=inputs, outputs=[out_desc], meta=meta)


def _requant_epilogue(state, mxm, mult, shift, relu, M, N, c_stripes, legacy, earliest,
                      const_addr, nc):
    """Set up the VXM epilogue of a matmul: returns ``(place(t_acc, addr), first free ACC cycle,
    output descriptor)``.

    The multiplier's four bytes are stored (MSB first) in four words of ``mem_e0`` bank 0 from
    ``const_addr`` (in the state's MEM image) and shifted into the constant register of the
    first ALU with the multiplier by four ``VLC`` (shift-in) from ``earliest`` on, before the
    first ACC; the register is claimed until the last ``VREQ``.
    """
    p = state.params
    vx = p.slice("vxm")
    src = p.slice("mem_e0")                 # constant words, flowing west into the VXM
    dst = [(f"{p.mem_slice_list[s].name}.write", p.mem_slice_list[s].position,
            bank * p.mem_words + base, stride) for s, bank, base, stride in c_stripes]
    lat_c = state.lead("READ", src, vx, "VLC")
    const_stream = p.streams - 1
    # words 0..3 hold the multiplier's bytes (MSB first); constant complete after the last VLC
    # VREQ needs the multiplier: the first ALU that has it; VRELU on another ALU
    req_roles = isa.vxm_alus_with(p, "VREQ")
    if not req_roles or (relu and p.vxm_alus < 2):
        raise CompileError(f"matmul epilogue on preset {p.name!r}: VREQ needs a VXM ALU with "
                           f"the 32x32 multiplier (vxm_mul_alus={isa.vxm_unit_alus(p, 'mul')})"
                           f"{' and VRELU another ALU' if relu else ''}")
    req_q = f"vxm.{req_roles[0]}"
    relu_q = "vxm." + next(r for r in isa.VXM_ALU_ROLES[:p.vxm_alus] if r != req_roles[0]) \
        if relu else None
    t_vlc = max(earliest + lat_c, state.free_after(f"{req_q} constant register"))
    first_vreq = load_const(state, p, state.image, isa.VXM_ALU_ROLES.index(req_roles[0]), mult,
                            t_vlc, src=src, addr=const_addr, stream=const_stream)
    arrive = state.lead("ACC", mxm, vx, "VREQ")     # ACC at t -> VXM samples at t + arrive
    acc_free = max(earliest, first_vreq - arrive)
    last = [first_vreq]

    def place(t_acc, w):
        """The epilogue of the result row ACC'd at ``t_acc``, stored word ``w`` of C."""
        qw, pos, addr0, stride = dst[w % len(dst)]
        addr = addr0 + (w // len(dst)) * stride
        t = state.send("ACC", mxm, t_acc, Dir.EAST, range(4 * _GROUP_C, 4 * _GROUP_C + 4), vx,
                       "VREQ")
        # with relu, VREQ sends its result west and VRELU reads it back from the west output
        # column (chaining), so the two ALUs never drive the same stream in one cycle
        f = dict(a_stream=4 * _GROUP_C, a_dir=Dir.EAST, a_chain=0, b_stream=0, b_dir=0,
                 b_mode=isa.VXM_B_CONST, out_dir=Dir.WEST if relu else Dir.EAST, dtype=2,
                 imm=shift)
        state.place(req_q, t, "VREQ", **f)
        last[0] = t
        if relu:
            state.drive(Dir.WEST, 4 * _GROUP_C, vx, t + state.lead("VREQ", vx, vx), vx)
            t = t + state.lead("VREQ", vx, vx, "VRELU", chain=True)
            state.place(relu_q, t, "VRELU", a_stream=4 * _GROUP_C, a_dir=Dir.WEST, a_chain=1,
                        b_stream=0, b_dir=0, b_mode=0, out_dir=Dir.EAST, dtype=0, imm=0)
            t_w = state.send("VRELU", vx, t, Dir.EAST, (4 * _GROUP_C,), pos, "WRITE")
        else:
            t_w = state.send("VREQ", vx, t, Dir.EAST, (4 * _GROUP_C,), pos, "WRITE")
        state.place(qw, t_w, "WRITE", addr=addr, stream=4 * _GROUP_C, dir=Dir.EAST)

    place.claim = lambda: state.claim(f"{req_q} constant register", t_vlc, last[0], nc)
    desc = TensorDesc(nc, (M, N), "int8",
                      [c_stripes[0][:2]] if legacy else [list(c_stripes)], base=0)
    return place, acc_free, desc


_ELEMENTWISE_BINARY = ("ADD", "SUB", "MUL", "MIN", "MAX", "AND", "OR", "XOR")
_ELEMENTWISE_UNARY = ("RELU", "ABS", "NEG")


def compile_elementwise(params: LpuParams, op: str, R: int, C: int, *,
                        name: str | None = None) -> Package:
    """Compile ``Y = op(A, B)`` (or ``op(A)``) on int8 ``R x C`` tensors, one VXM op per vector.

    ``A`` lives in ``mem_w0`` bank 0 and ``B`` in ``mem_w1`` bank 0 (both stream east into the
    VXM), ``Y`` in ``mem_e0`` bank 1. Rows are placed by :func:`firmware.dataflow.commit`, which
    pipelines them one vector per cycle when the resources allow.
    """
    state = ChipState(params, f"elementwise {op!r} {R}x{C} on preset {params.name!r}")
    out = emit_elementwise(state, op, R, C)
    return state.package(name=name or f"{str(op).lower()}_{R}x{C}", inputs=out.inputs,
                         outputs=out.outputs, meta=out.meta)


@transactional
def emit_elementwise(state: ChipState, op: str, R: int, C: int, *, earliest: int = 0,
                     names: tuple = ("A", "B", "Y"), inputs: tuple | None = None) -> Emitted:
    """Emit ``Y = op(A, B)`` (see :func:`compile_elementwise`) on ``state``, every row flow
    committed at or after ``earliest`` next to what the state holds. ``A``, ``B`` and ``Y`` take
    the first free run of ``R * ceil(C / VL)`` words of ``mem_w0`` bank 0, ``mem_w1`` bank 0 and
    ``mem_e0`` bank 1 in the state's allocator (words 0.. on an empty state; an
    :class:`~openlpu.firmware.memalloc.AllocError` names a tensor that does not fit).

    ``inputs=(A, B)``: either may be the :class:`TensorDesc` of an int8 ``R x C`` row-wise
    tensor another kernel left in MEM (any stripes, either side of the VXM), read where it is
    and not allocated; ``Y`` then takes the first east ``(slice, bank)`` (``mem_e0`` bank 1
    first) that no given input uses and that has room."""
    from .dataflow import INT8, Flow, MemSrc, commit
    p = state.params
    op = op.upper()
    if op not in _ELEMENTWISE_BINARY + _ELEMENTWISE_UNARY:
        raise CompileError(f"unknown elementwise op {op!r}; known: "
                           f"{', '.join(_ELEMENTWISE_BINARY + _ELEMENTWISE_UNARY)}")
    for n_, v in (("R", R), ("C", C)):
        _check_dim(n_, v)
    if p.vxm_alus < 1:
        raise CompileError(f"elementwise ops need a VXM; preset {p.name!r} has none")
    tiles = math.ceil(C / p.vl)
    if R * tiles > p.mem_words:
        raise CompileError(f"elementwise {R}x{C} on preset {p.name!r} needs {R * tiles} words "
                           f"of one MEM bank, a bank holds {p.mem_words}")
    binary = op in _ELEMENTWISE_BINARY
    na, nb, ny = names
    s_a, s_b, s_y = p.slice("mem_w0"), p.slice("mem_w1"), p.slice("mem_e0")
    words = R * tiles
    given = [_given_input(inputs, i, (R, C), f"{state.where}: input {i} of {op}")
             if inputs else None for i in range(2)]
    if given[1] is not None and not binary:
        raise CompileError(f"{state.where}: {op} is unary, a second input was given")
    y_unit = (s_y.index, 1)
    if any(given):
        used = {(sl, bk) for d in given if d is not None for sl, bk, *_ in d.layout[0]}
        east = p.mem_slice_list[p.mem_slices:]
        order = [(s.index, bk) for bk in (1, 0) for s in east]
        y_unit = next((u for u in order if u not in used and state.alloc.fits(words, [u])),
                      y_unit)
    base_a = (state.alloc.stripe(na, words, [(s_a.index, 0)])[0][2]     # first fit: 0 when free
              if given[0] is None else 0)
    base_b = (state.alloc.stripe(nb, words, [(s_b.index, 0)])[0][2]
              if binary and given[1] is None else 0)
    base_y = state.alloc.stripe(ny, words, [y_unit])[0][2]
    y_name = p.mem_slice_list[y_unit[0]].name

    def src(i, default_slice, base, w, stream):
        if given[i] is None:
            return MemSrc(((default_slice, base + w),), stream=stream)
        sl, bk, word = given[i].locate(0, w)
        return MemSrc(((p.mem_slice_list[sl].name, bk * p.mem_words + word),), stream=stream)
    for j in range(tiles):
        for r in range(R):
            w = j * R + r
            flow = Flow(p)
            a = src(0, "mem_w0", base_a, w, 0)
            b = src(1, "mem_w1", base_b, w, 1) if binary else None
            y = flow.vxm(op, a, b, dtype=INT8, out_dir=Dir.EAST)
            flow.write(y, [(y_name, y_unit[1] * p.mem_words + base_y + w)])
            earliest = commit(state, flow, earliest) + 1
    inputs = [given[0] or TensorDesc(na, (R, C), "int8", [(s_a.index, 0)], base=base_a)]
    if binary:
        inputs.append(given[1] or TensorDesc(nb, (R, C), "int8", [(s_b.index, 0)], base=base_b))
    return Emitted(end=state.end, inputs=inputs,
                   outputs=[TensorDesc(ny, (R, C), "int8", [y_unit], base=base_y)],
                   meta={"vectors": words})
