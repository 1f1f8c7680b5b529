"""MiniLM's integer linear layer and residual sum: the matmul plus a VXM epilogue pass.

:func:`emit_linear` computes ``y = rescale(x @ W + bias)`` (``minilm_int.linear_int`` for an
int8 ``x``): :func:`~openlpu.firmware.compiler.emit_matmul` writes the int32 accumulator ``x @ W``
to MEM, then one VXM pass per stored vector (one result row of one N-tile) reads it with the
N-tile's bias and multiplier vectors (int32 constants in MEM: the multiplier differs per output
channel, i.e. per lane, so it cannot be a constant register or an immediate) and computes

* int8 output: ``VADD bias`` -> ``VREQ mult`` (``imm = shift - 31``);
* int16 output: ``VADD bias`` -> ``VMULSHR mult`` (``imm = shift``) -> ``VCAST`` int32 -> int16
  (saturating) -> ``VCAST`` int16 -> int32 (sign extension);
* int32 output: ``VADD bias`` -> ``VMULSHR mult``.

The ops chain in the VXM (each ALU reads the previous one's output column), so a vector takes
one VXM slot per op and the pass runs at one vector per cycle when the MEM read queues and
streams allow. :func:`emit_residual` is the elementwise pass ``cast16(VADD(a, MULSHR(x, mult)))``
(``minilm_int.residual_int``) over an int32 branch ``a`` and an int16 skip input ``x``.

**int16 tensors** are stored as int32 tensors (four byte planes, the value sign-extended): the
package format has int8 and int32 tensors only. The kernels read and write all four planes.

**Placement.** An int32 vector that enters the VXM as one operand has its four byte planes in
four MEM slices on one side of the VXM (one READ per slice and cycle; all planes must arrive in
the same cycle from the same side), so every int32 MEM operand of a pass takes four slices of
its own, on a preset with at least four MEM slices per hemisphere (``base``). Constant vectors
are appended to the program's MEM image. Each pass is a :mod:`~openlpu.firmware.dataflow` flow
committed at the first offset that fits the chip state (queue slots, stream slots, bank ports),
in stored-word order, from the matmul's end (the accumulator must be in MEM).
"""

from __future__ import annotations

import math

import numpy as np

from openlpu import isa
from openlpu import vxm_ops as ops
from openlpu.isa import Dir

from .chipstate import ChipState, Emitted, lead, transactional
from .compiler import emit_matmul
from .dataflow import INT8, INT16, INT32, Flow, MemSrc, commit
from .package import Package, TensorDesc
from .schedule import CompileError

__all__ = ["emit_linear", "compile_linear", "emit_linear_wide", "compile_linear_wide",
           "emit_residual", "compile_residual",
           "VecPlacer", "check_rescale", "check_int32_side", "track_drives", "rescale_ops",
           "chain_dirs", "rescale_len", "lane_vectors", "given_planes"]

_PLANES = {INT8: 1, INT32: 4}


def check_rescale(where: str, mult, shift: int, dtype: int, n: int) -> np.ndarray:
    """The per-channel multipliers of a rescale as ``n`` int64 values (a single multiplier is
    broadcast); raises :class:`CompileError` naming the problem."""
    m = np.atleast_1d(np.asarray(mult))
    if m.dtype.kind not in "iu":
        raise CompileError(f"{where}: rescale multipliers must be integers")
    m = m.astype(np.int64)
    if m.size not in (1, n):
        raise CompileError(f"{where}: {m.size} rescale multipliers for {n} channels")
    if (m < 1).any() or (m >= 2 ** 31).any():
        raise CompileError(f"{where}: rescale multipliers must be in 1..2**31-1")
    if dtype not in (0, 1, 2):
        raise CompileError(f"{where}: output dtype must be 0, 1 or 2, not {dtype!r}")
    lo = 31 if dtype == 0 else 0
    if not isinstance(shift, (int, np.integer)) or not lo <= shift <= 62:
        raise CompileError(f"{where}: rescale shift must be in {lo}..62 for dtype {dtype}, "
                           f"not {shift!r}")
    return np.broadcast_to(m, (n,)).copy()


def check_int32_side(p, where: str) -> None:
    """Raise :class:`CompileError` unless ``p`` has 4 MEM slices on each side of the VXM (an
    int32 operand's four byte planes come from four slices of one side)."""
    if p.mem_slices < 4:
        raise CompileError(f"{where}: int32 VXM operands need 4 MEM slices on one side of the "
                           f"VXM; preset {p.name!r} has {p.mem_slices} per side")


class VecPlacer:
    """MEM slices and streams of the operands of one VXM pass.

    Every operand takes its own MEM slices (``planes`` of them, all on one side of the VXM) and
    its own group of streams in the direction it flows, so the operands of one vector never meet
    in a read queue or on a stream. ``avoid`` slices (global indices) are not used."""

    def __init__(self, state: ChipState, where: str, avoid=()):
        self.state, self.p, self.where = state, state.params, where
        p = self.p
        n = p.mem_slices
        self.side = {Dir.EAST: [s.index for s in p.mem_slice_list[:n]],     # west slices
                     Dir.WEST: [s.index for s in p.mem_slice_list[n:]]}     # east slices
        self.used = set(avoid)
        self.next_stream = 0

    def _slices(self, k, d=None):
        for dd in ([d] if d is not None else [Dir.EAST, Dir.WEST]):
            free = [s for s in self.side[dd] if s not in self.used]
            if len(free) >= k:
                return dd, free[:k]
        raise CompileError(f"{self.where}: needs {k} more MEM slices on one side of the VXM "
                           f"(preset {self.p.name!r} has {self.p.mem_slices} per side, "
                           f"{len(self.used)} taken)")

    def stream(self, d: Dir, width: int) -> int:
        """The first stream of a new group of ``width`` (1 or 4) streams flowing ``d``. Stream
        numbers are not reused in the other direction either: the VXM drives each result on its
        first operand's streams, in either direction."""
        s = self.next_stream
        s = -(-s // 4) * 4 if width == 4 else s
        if s + width > self.p.streams:
            raise CompileError(f"{self.where}: no {width} free streams flowing {d.name} "
                               f"(preset {self.p.name!r} has {self.p.streams})")
        self.next_stream = s + width
        return s

    def tensor(self, name: str, words: int, nplanes: int, d=None):
        """Allocate ``words`` vector words for each of ``nplanes`` byte planes, one slice per
        plane (bank 0 or 1, first fit); returns ``(dir into the VXM, [(slice, bank, base)])``."""
        dd, slices = self._slices(nplanes, d)
        alloc = self.state.alloc
        planes = []
        for b, s in enumerate(slices):
            unit = next((u for u in ((s, 0), (s, 1)) if alloc.fits(words, [u])), None)
            if unit is None:
                raise CompileError(f"{self.where}: {name} plane {b} needs {words} words in one "
                                   f"bank of {self.p.mem_slice_list[s].name}")
            stripe = alloc.stripe(name if nplanes == 1 else f"{name} byte plane {b}", words,
                                  [unit])[0]
            planes.append((s, stripe[1], stripe[2]))
        self.used.update(slices)
        return dd, planes

    def reuse(self, desc: TensorDesc):
        """Mark the slices of an existing tensor as used; returns its direction into the VXM."""
        sl = {s for plane in desc.layout for s, *_ in plane}
        self.used.update(sl)
        dirs = {Dir.EAST if s in self.side[Dir.EAST] else Dir.WEST for s in sl}
        return dirs.pop() if len(dirs) == 1 else None

    def const(self, name: str, values: np.ndarray, nplanes: int, d=None):
        """Constant vectors ``values`` (words x VL, int32 or int8) in the MEM image; returns
        ``(dir, planes)`` as :meth:`tensor`."""
        values = np.asarray(values, dtype=np.int64)
        dd, planes = self.tensor(name, values.shape[0], nplanes, d)
        for b, (s, bank, base) in enumerate(planes):
            for w in range(values.shape[0]):
                byte = ((values[w] >> (8 * b)) & 0xFF).astype(np.uint8)
                self.state.image.append((s, bank * self.p.mem_words + base + w, bytes(byte)))
        return dd, planes

    def src(self, planes, w: int, stream: int, dtype: int) -> MemSrc:
        """The :class:`MemSrc` of stored word ``w`` of ``planes`` (``(slice, bank, base)``)."""
        p = self.p
        return MemSrc(tuple((p.mem_slice_list[s].name, bank * p.mem_words + base + w)
                            for s, bank, base in planes), stream=stream, dtype=dtype)

    def src_desc(self, desc: TensorDesc, w: int, stream: int, dtype: int) -> MemSrc:
        p = self.p
        locs = [desc.locate(b, w) for b in range(len(desc.planes))]
        return MemSrc(tuple((p.mem_slice_list[s].name, bank * p.mem_words + a)
                            for s, bank, a in locs), stream=stream, dtype=dtype)

    def dst(self, planes, w: int) -> list:
        p = self.p
        return [(p.mem_slice_list[s].name, bank * p.mem_words + base + w)
                for s, bank, base in planes]


def given_planes(vp: VecPlacer, desc, shape, what: str):
    """``(dir into the VXM, [(slice, bank, base)])`` of an int32 layout another kernel left in
    MEM (four byte planes, each dense in one bank, all on one side of the VXM), for a pass of
    ``vp`` to read in place; raises :class:`CompileError` naming ``what`` when it is not."""
    if not isinstance(desc, TensorDesc):
        raise CompileError(f"{what}: an input layout must be a TensorDesc, not "
                           f"{type(desc).__name__}")
    if tuple(desc.shape) != tuple(shape) or desc.dtype != "int32" or desc.transposed or \
            len(desc.planes) != 4 or any(len(pl) != 1 or pl[0][3] != 1 for pl in desc.layout):
        raise CompileError(f"{what}: tensor {desc.name!r} is {desc.dtype} {tuple(desc.shape)} "
                           f"in {len(desc.planes)} planes; the pass reads an int32 {tuple(shape)} "
                           f"row-wise, four planes each dense in one bank")
    d = vp.reuse(desc)
    if d is None:
        raise CompileError(f"{what}: tensor {desc.name!r} has byte planes on both sides of the "
                           f"VXM")
    return d, [(pl[0][0], pl[0][1], pl[0][2]) for pl in desc.layout]


def lane_vectors(values, n: int, vl: int) -> np.ndarray:
    """``n`` per-channel values as ``ceil(n / VL)`` vectors of VL lanes (zero padded)."""
    nt = math.ceil(n / vl)
    out = np.zeros(nt * vl, dtype=np.int64)
    out[:n] = np.asarray(values, dtype=np.int64)
    return out.reshape(nt, vl)


def chain_dirs(n: int, final: Dir) -> list:
    """Output directions of a chain of ``n`` VXM ops whose last result flows ``final``:
    alternating, so that a chain's results (all on its first operand's streams) use both
    directions and the next vector's chain can start one or two cycles later."""
    other = Dir.WEST if final == Dir.EAST else Dir.EAST
    return [final if (n - 1 - i) % 2 == 0 else other for i in range(n)]


def rescale_len(dtype: int) -> int:
    """VXM ops of :func:`rescale_ops` for an output ``dtype``."""
    return {0: 1, 1: 3, 2: 1}[dtype]


def rescale_ops(flow: Flow, y, mult_src, shift: int, dtype: int, dirs):
    """Chain the :class:`Rescale` of int32 ``y`` (a value driven by the VXM) in ``flow``:
    ``VREQ`` (int8), ``VMULSHR`` (int32) or ``VMULSHR`` + ``VCAST`` to int16 and back to int32
    (int16 stored as int32); ``dirs`` the output direction of each op."""
    if dtype == 0:
        return flow.vxm("REQ", y, mult_src, dtype=INT32, imm=shift - 31, a_chain=True,
                        out_dir=dirs[0])
    z = flow.vxm("MULSHR", y, mult_src, dtype=INT32, imm=shift, a_chain=True, out_dir=dirs[0])
    if dtype == 2:
        return z
    z = flow.vxm("CAST", z, dtype=INT32, imm=INT16, a_chain=True, out_dir=dirs[1])
    return flow.vxm("CAST", z, dtype=INT16, imm=INT32, a_chain=True, out_dir=dirs[2])


_DRIVE_IDS = iter(range(1 << 62))


def track_drives(flow: Flow) -> Flow:
    """Make two VXM ALUs driving one stream in one cycle a conflict for :func:`commit`.

    A flow names a value by ``(dir, stream, position, drive cycle)``, so two ALUs of the VXM
    driving the same stream in the same cycle (e.g. the third op of one vector's chain and the
    first op of a later vector's) would share a name and pass as one value; the chip reports a
    ``STREAM_COLLISION``. Each VXM result of ``flow`` also claims a drive slot of its own, keyed
    by a column no stream register has (``-1 - position``), under a name unique to that
    instruction."""
    p = flow.params
    q = p.slice("vxm").position
    for queue, t, m, f in list(flow.ops):
        if not queue.startswith("vxm.") or m == "VLC":
            continue
        idef = isa.BY_MNEMONIC[m]
        width = ops.DTYPE_BYTES[{"VCAST": f["imm"] & 3, "VREQ": 0}.get(m, f["dtype"])]
        t_drive = t + lead(p, idef, q, q)
        token = ("vxm drive", next(_DRIVE_IDS))
        for b in range(width):
            s = f["a_stream"] + b
            flow.occ.append((f["out_dir"], s, -1 - q, t_drive, (f["out_dir"], s, token, t_drive)))
    return flow


def _out_dtype_name(dtype):
    return "int8" if dtype == 0 else "int32"


def compile_linear(params, M: int, K: int, N: int, *, bias, mult, shift: int, out_dtype: int,
                   name: str | None = None) -> Package:
    """One-kernel package of :func:`emit_linear`."""
    where = f"linear {M}x{K}x{N} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_linear(state, M, K, N, bias=bias, mult=mult, shift=shift, out_dtype=out_dtype)
    return state.package(name=name or f"linear_{M}x{K}x{N}", inputs=out.inputs,
                         outputs=out.outputs, meta=out.meta)


@transactional
def emit_linear(state: ChipState, M: int, K: int, N: int, *, bias, mult, shift: int,
                out_dtype: int, earliest: int = 0, names: tuple = ("X", "W", "Y"),
                inputs: tuple | None = None) -> Emitted:
    """Emit ``Y = rescale(X @ W + bias)`` on ``state``: int8 ``X`` (M x K) and ``W`` (K x N),
    int32 ``bias`` (N values), per-channel ``mult`` (N values or one, 1..2**31-1) and ``shift``
    (the :class:`~openlpu.host.models.minilm_quant.Rescale` fields), ``out_dtype`` 0 (int8,
    ``VREQ``), 1 (int16, stored as int32) or 2 (int32).

    ``inputs=(X,)``: the :class:`TensorDesc` of an int8 ``X`` another kernel left in MEM
    (row-wise, as :func:`~openlpu.firmware.compiler.emit_matmul` takes ``inputs=(A, None)``),
    read where it is; ``earliest`` must be at or after that kernel's end.

    Timing: the matmul (:func:`~openlpu.firmware.compiler.emit_matmul`), then from its end the
    epilogue pass, at best one vector (one row of one N-tile: ``M * ceil(N / VL)`` in all) per
    cycle plus the pipeline depth (READ, 2 to 4 chained VXM ops, WRITE). Raises
    :class:`CompileError` for bad constants or a preset without four MEM slices per side."""
    p = state.params
    where = f"linear {M}x{K}x{N} on preset {p.name!r}"
    if p.vxm_alus < 1:
        raise CompileError(f"{where}: needs a VXM; preset {p.name!r} has none")
    check_int32_side(p, where)
    nx, nw, ny = names
    m = check_rescale(where, mult, shift, out_dtype, N)
    b = np.asarray(bias)
    if b.shape != (N,) or b.dtype.kind not in "iu":
        raise CompileError(f"{where}: bias must be {N} integers, not shape {b.shape}")
    if (np.abs(b.astype(np.int64)) >= 2 ** 31).any():
        raise CompileError(f"{where}: a bias does not fit int32")
    if inputs is not None and (not isinstance(inputs, (tuple, list)) or len(inputs) != 1):
        raise CompileError(f"{where}: emit_linear takes inputs=(X,)")
    given = tuple(inputs) + (None,) if inputs is not None and inputs[0] is not None else None
    mm = emit_matmul(state, M, K, N, earliest=earliest, names=(nx, nw, f"{ny} accumulator"),
                     inputs=given)
    acc = mm.outputs[0]
    vp = VecPlacer(state, where)
    d_acc = vp.reuse(acc)
    if d_acc is None:
        raise CompileError(f"{where}: the accumulator's byte planes are on both sides of the VXM")
    vl = p.vl
    NT = math.ceil(N / vl)
    words = M * NT
    s_acc = vp.stream(d_acc, 4)
    d_b, bias_planes = vp.const(f"{ny} bias", lane_vectors(b, N, vl), 4)
    s_b = vp.stream(d_b, 4)
    d_m, mult_planes = vp.const(f"{ny} multipliers", lane_vectors(m, N, vl), 4)
    s_m = vp.stream(d_m, 4)
    nplanes = _PLANES[INT8 if out_dtype == 0 else INT32]
    d_y, y_planes = vp.tensor(ny, words, nplanes)
    out_dir = Dir.WEST if d_y == Dir.EAST else Dir.EAST     # results flow away from the VXM
    dirs = chain_dirs(1 + rescale_len(out_dtype), out_dir)
    t = mm.end
    first = None
    for w in range(words):
        nt = w // M
        flow = Flow(p)
        y = flow.vxm("ADD", vp.src_desc(acc, w, s_acc, INT32), vp.src(bias_planes, nt, s_b, INT32),
                     dtype=INT32, out_dir=dirs[0])
        z = rescale_ops(flow, y, vp.src(mult_planes, nt, s_m, INT32), int(shift), out_dtype,
                        dirs[1:])
        flow.write(z, vp.dst(y_planes, w))
        t = commit(state, track_drives(flow), t)
        first = t if first is None else first
        t += 1
    out = TensorDesc(ny, (M, N), _out_dtype_name(out_dtype),
                     [[(s, bank, base, 1)] for s, bank, base in y_planes])
    meta = dict(mm.meta)
    meta.update(epilogue_vectors=words, epilogue_start=first, matmul_end=mm.end,
                out_dtype=int(out_dtype))
    return Emitted(end=state.end, inputs=mm.inputs, outputs=[out], meta=meta)


def compile_residual(params, R: int, C: int, *, mult, shift: int,
                     name: str | None = None) -> Package:
    """One-kernel package of :func:`emit_residual`."""
    where = f"residual {R}x{C} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_residual(state, R, C, mult=mult, shift=shift)
    return state.package(name=name or f"residual_{R}x{C}", inputs=out.inputs,
                         outputs=out.outputs, meta=out.meta)


@transactional
def emit_residual(state: ChipState, R: int, C: int, *, mult, shift: int, earliest: int = 0,
                  names: tuple = ("A", "X", "Y"), inputs: tuple | None = None) -> Emitted:
    """Emit ``Y = cast16(VADD(A, MULSHR(X, mult, shift)))`` (``minilm_int.residual_int``):
    ``A`` the int32 branch (R x C, already in residual units), ``X`` the int16 skip input and
    ``Y`` int16 (both stored as int32), ``mult`` one or ``C`` multipliers (a constant vector
    per column tile). Per vector: ``VMULSHR`` -> ``VADD`` (chained) -> ``VCAST`` to int16 ->
    ``VCAST`` back to int32; one vector per cycle at best (``R * ceil(C / VL)`` vectors).
    ``inputs=(A, X)`` (either may be None): layouts other kernels left in MEM (int32, four
    byte planes each dense in one bank of its own slice, all on one side of the VXM, stored
    word ``j*R + r`` = row ``r``, column tile ``j``: how :func:`emit_linear` and
    :func:`~openlpu.firmware.gelu.emit_gelu` store int16 / int32 results), read where they
    are; ``earliest`` at or after their writers' end."""
    p = state.params
    where = f"residual {R}x{C} on preset {p.name!r}"
    for n_, v in (("R", R), ("C", C)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CompileError(f"residual {n_} must be a positive integer, not {v!r}")
    if p.vxm_alus < 1:
        raise CompileError(f"{where}: needs a VXM; preset {p.name!r} has none")
    check_int32_side(p, where)
    m = check_rescale(where, mult, shift, 2, C)
    na, nx, ny = names
    vl = p.vl
    CT = math.ceil(C / vl)
    words = R * CT
    if inputs is not None and (not isinstance(inputs, (tuple, list)) or len(inputs) != 2):
        raise CompileError(f"{where}: emit_residual takes inputs=(A, X)")
    ga, gx = inputs if inputs is not None else (None, None)
    vp = VecPlacer(state, where)
    for d in (ga, gx):
        if d is not None:
            vp.reuse(d)
    if gx is not None:
        d_x, x_planes = given_planes(vp, gx, (R, C), f"{where}: X")
    else:
        d_x, x_planes = vp.tensor(nx, words, 4)
    s_x = vp.stream(d_x, 4)
    d_m, m_planes = vp.const(f"{ny} multipliers", lane_vectors(m, C, vl), 4)
    s_m = vp.stream(d_m, 4)
    if ga is not None:
        d_a, a_planes = given_planes(vp, ga, (R, C), f"{where}: A")
    else:
        d_a, a_planes = vp.tensor(na, words, 4)
    s_a = vp.stream(d_a, 4)
    d_y, y_planes = vp.tensor(ny, words, 4)
    dirs = chain_dirs(4, Dir.WEST if d_y == Dir.EAST else Dir.EAST)
    t = earliest
    for w in range(words):
        j = w // R
        flow = Flow(p)
        z = flow.vxm("MULSHR", vp.src(x_planes, w, s_x, INT32), vp.src(m_planes, j, s_m, INT32),
                     dtype=INT32, imm=int(shift), out_dir=dirs[0])
        z = flow.vxm("ADD", z, vp.src(a_planes, w, s_a, INT32), dtype=INT32, a_chain=True,
                     out_dir=dirs[1])
        z = flow.vxm("CAST", z, dtype=INT32, imm=INT16, a_chain=True, out_dir=dirs[2])
        z = flow.vxm("CAST", z, dtype=INT16, imm=INT32, a_chain=True, out_dir=dirs[3])
        flow.write(z, vp.dst(y_planes, w))
        t = commit(state, track_drives(flow), t) + 1

    def desc(name, planes):
        return TensorDesc(name, (R, C), "int32", [[(s, bank, base, 1)] for s, bank, base in planes])
    return Emitted(end=state.end, inputs=[ga or desc(na, a_planes), gx or desc(nx, x_planes)],
                   outputs=[desc(ny, y_planes)], meta={"vectors": words})


def _split_flows(state, vp, x_planes, s_x, s_lo, s_c, c_planes, a_desc, M, words):
    """The byte-plane split of int16 ``X`` (stored as int32) into the stacked int8 operand
    ``[hi; lo]`` of the matmul (``a_desc``, 2M rows): per stored word ``w`` (column tile
    ``j``, row ``m``) one flow ``VSRA 8`` -> ``VCAST`` int8 into row ``m`` and one ``VXOR``
    of the low byte plane with 0x80 into row ``M + m``. Returns the last WRITE cycle."""
    p = state.params
    vx = p.slice("vxm").position
    last = -1
    t = 0
    for w in range(words):
        j, m = divmod(w, M)
        for half in (0, 1):
            aw = j * 2 * M + half * M + m
            sl, bank, addr = a_desc.locate(0, aw)
            dst = [(p.mem_slice_list[sl].name, bank * p.mem_words + addr)]
            d = Dir.EAST if p.mem_slice_list[sl].position > vx else Dir.WEST
            f = Flow(p)
            if half == 0:
                y = f.vxm("SRA", vp.src(x_planes, w, s_x, INT32), dtype=INT32, b_imm=8,
                          out_dir=d)
                y = f.vxm("CAST", y, dtype=INT32, imm=INT8, a_chain=True, out_dir=d)
            else:
                y = f.vxm("XOR", vp.src(x_planes[:1], w, s_lo, INT8),
                          vp.src(c_planes, 0, s_c, INT8), dtype=INT8, out_dir=d)
            t_w = f.write(y, dst)
            off = commit(state, track_drives(f), t)
            last = max(last, t_w + off)
            t = off                         # the flows are placed in order
    return last


@transactional
def emit_linear_wide(state: ChipState, M: int, K: int, N: int, *, bias, lo_bias,
                     wide_shift: int, mult, shift: int, out_dtype: int, earliest: int = 0,
                     names: tuple = ("X", "W", "Y")) -> Emitted:
    """Emit ``linear_int`` for an int16 ``X`` (M x K, stored as int32; ``LinearQuant.in_dtype``
    1): two int8 MXM passes over its byte planes, ``hi = x >> 8`` and ``lo = (x & 0xFF) XOR
    0x80``, as one matmul of the stacked ``[hi; lo]`` (2M x K) with ``W``, then per stored
    vector ``VSHL(hi @ W, 8 - wide_shift)`` + ``VMULSHR(lo @ W + cb, 1, wide_shift)`` (``VADD``
    of the two) and the rescale of :func:`emit_linear`. ``cb = lo_bias + bias 2**wide_shift``
    folds the bias into the rounded low part exactly (``round((v + b 2**p) / 2**p) = round(v /
    2**p) + b``), provided no int32 overflows: checked for the worst input with the given
    weights' column sums bound ``K 255 127``.

    Timing: the split pass (two flows per input vector, before the matmul: every split WRITE
    precedes the matmul's first instruction), the matmul of ``2M`` rows, the epilogue pass
    (``M ceil(N / VL)`` vectors)."""
    p = state.params
    where = f"linear (int16 in) {M}x{K}x{N} on preset {p.name!r}"
    if p.vxm_alus < 1:
        raise CompileError(f"{where}: needs a VXM; preset {p.name!r} has none")
    check_int32_side(p, where)
    if not isinstance(wide_shift, (int, np.integer)) or not 0 <= wide_shift <= 8:
        raise CompileError(f"{where}: wide_shift must be in 0..8, not {wide_shift!r}")
    nx, nw, ny = names
    m = check_rescale(where, mult, shift, out_dtype, N)
    b, lb = np.asarray(bias), np.asarray(lo_bias)
    for what, v in (("bias", b), ("lo_bias", lb)):
        if v.shape != (N,) or v.dtype.kind not in "iu":
            raise CompileError(f"{where}: {what} must be {N} integers, not shape {v.shape}")
    cb = lb.astype(np.int64) + (b.astype(np.int64) << int(wide_shift))
    if (np.abs(cb) + K * 255 * 127 >= 2 ** 31).any():
        raise CompileError(f"{where}: lo_bias + bias * 2**wide_shift could overflow int32")
    vl = p.vl
    KT, NT = math.ceil(K / vl), math.ceil(N / vl)
    x_words = M * KT
    mm_names = (f"{nx} byte planes", nw, f"{ny} accumulator")
    # where the matmul puts its operand, and when the split can be done: tried on a fork
    trial = state.fork()
    vp_t = VecPlacer(trial, where)
    d_x, x_planes = vp_t.tensor(nx, x_words, 4)
    s_x = vp_t.stream(d_x, 4)
    s_lo = vp_t.stream(d_x, 4)
    d_c, c_planes = vp_t.const(f"{nx} 0x80", np.full((1, vl), 0x80), 1)
    s_c = vp_t.stream(d_c, 1)
    mm_t = emit_matmul(trial, 2 * M, K, N, earliest=earliest, names=mm_names)
    last_t = _split_flows(trial, vp_t, x_planes, s_x, s_lo, s_c, c_planes, mm_t.inputs[0],
                          M, x_words)
    mm_start = max(earliest, last_t + 1)
    # the real placement: X and the constant first (the same words as on the trial), then
    # the matmul from after the split's last WRITE, then the split itself
    vp = VecPlacer(state, where)
    vp.tensor(nx, x_words, 4, d_x)
    vp.stream(d_x, 4)
    vp.stream(d_x, 4)
    vp.const(f"{nx} 0x80", np.full((1, vl), 0x80), 1, d_c)
    vp.stream(d_c, 1)
    mm = emit_matmul(state, 2 * M, K, N, earliest=mm_start, names=mm_names)
    if mm.inputs[0].layout != mm_t.inputs[0].layout:
        raise CompileError(f"{where}: the matmul operand moved between trial and placement")
    last = _split_flows(state, vp, x_planes, s_x, s_lo, s_c, c_planes, mm.inputs[0], M,
                        x_words)
    if last >= mm_start:
        raise CompileError(f"{where}: the byte-plane split ends at {last}, after the matmul's "
                           f"start {mm_start}")
    # epilogue: word nt*2M + m is hi @ W, nt*2M + M + m is lo @ W (row m, N-tile nt)
    acc = mm.outputs[0]
    ve = VecPlacer(state, where)
    d_acc = ve.reuse(acc)
    if d_acc is None:
        raise CompileError(f"{where}: the accumulator's byte planes are on both sides of the VXM")
    s_hi = ve.stream(d_acc, 4)
    s_lw = ve.stream(d_acc, 4)
    d_b, cb_planes = ve.const(f"{ny} bias", lane_vectors(cb, N, vl), 4)
    s_b = ve.stream(d_b, 4)
    d_m, mult_planes = ve.const(f"{ny} multipliers", lane_vectors(m, N, vl), 4)
    s_m = ve.stream(d_m, 4)
    nplanes = _PLANES[INT8 if out_dtype == 0 else INT32]
    d_y, y_planes = ve.tensor(ny, M * NT, nplanes)
    out_dir = Dir.WEST if d_y == Dir.EAST else Dir.EAST
    other = Dir.WEST if out_dir == Dir.EAST else Dir.EAST
    dirs = chain_dirs(1 + rescale_len(out_dtype), out_dir)
    t = mm.end
    for w in range(M * NT):
        nt, r = divmod(w, M)
        flow = Flow(p)
        lo = flow.vxm("ADD", ve.src_desc(acc, nt * 2 * M + M + r, s_lw, INT32),
                      ve.src(cb_planes, nt, s_b, INT32), dtype=INT32, out_dir=other)
        lo = flow.vxm("MULSHR", lo, dtype=INT32, b_imm=1, imm=int(wide_shift), a_chain=True,
                      out_dir=out_dir)
        hi = flow.vxm("SHL", ve.src_desc(acc, nt * 2 * M + r, s_hi, INT32), dtype=INT32,
                      b_imm=8 - int(wide_shift), out_dir=out_dir,
                      t=flow.ops[-1][1])
        y = flow.vxm("ADD", hi, lo, dtype=INT32, a_chain=True, b_chain=True, out_dir=dirs[0])
        z = rescale_ops(flow, y, ve.src(mult_planes, nt, s_m, INT32), int(shift), out_dtype,
                        dirs[1:])
        flow.write(z, ve.dst(y_planes, w))
        t = commit(state, track_drives(flow), t) + 1
    xdesc = TensorDesc(nx, (M, K), "int32", [[(s, bank, base, 1)] for s, bank, base in x_planes])
    out = TensorDesc(ny, (M, N), _out_dtype_name(out_dtype),
                     [[(s, bank, base, 1)] for s, bank, base in y_planes])
    meta = dict(mm.meta)
    meta.update(epilogue_vectors=M * NT, split_vectors=2 * x_words, matmul_start=mm_start,
                matmul_end=mm.end, out_dtype=int(out_dtype))
    return Emitted(end=state.end, inputs=[xdesc, mm.inputs[1]], outputs=[out], meta=meta)


def compile_linear_wide(params, M: int, K: int, N: int, *, bias, lo_bias, wide_shift: int,
                        mult, shift: int, out_dtype: int, name: str | None = None) -> Package:
    """One-kernel package of :func:`emit_linear_wide`."""
    where = f"linear (int16 in) {M}x{K}x{N} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_linear_wide(state, M, K, N, bias=bias, lo_bias=lo_bias, wide_shift=wide_shift,
                           mult=mult, shift=shift, out_dtype=out_dtype)
    return state.package(name=name or f"linear_wide_{M}x{K}x{N}", inputs=out.inputs,
                         outputs=out.outputs, meta=out.meta)
