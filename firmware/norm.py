"""Row softmax and RMSNorm kernels on the chip, in the transposed domain.

Both kernels keep ``X`` (int8, rows x cols) column-wise in MEM (``TensorDesc(transposed=True)``):
vector word ``t*cols + c`` holds column ``c`` of row tile ``t`` (rows ``t*VL ..``), one row per
lane. A row reduction is then a reduction over *time* (over the column vectors), done lane-wise
by a VXM ALU chained to its own previous result (a 3-cycle loop: ``d_func`` 2 + 1); nothing
crosses lanes. Every column vector enters the VXM as int32 through the MXM: ``ABC`` of a vector
against the weights, then ``ACC`` (the int8 -> int32 widening and, for RMSNorm, the per-feature
``gamma`` multiply come free).

**Softmax** (``compile_softmax``), weights = identity, per row tile:

1. max (1 cycle per column from 6 columns on, else 3): ``ABC x_c`` -> ``ACC`` -> ALU B ``VMAX``
   chained to itself (three interleaved partial maxima, merged through MEM: see
   ``_max_interleaved``); B loads the maximum ``m`` into its constant register (``VLC``).
2. sum (3 cycles per column): ``ABC`` -> ``ACC`` -> B ``VSUB m`` -> C ``VMULSHR`` (scale to
   Q16.16) -> D ``VEXP`` -> A ``VADD`` chained to itself: ``s = sum_c e_c`` in int32 (full Q16
   precision). Then D ``VRECIP s`` -> D ``VMUL 127`` (its constant) -> A ``VLC``.
3. output (2 cycles per column): the same ``VSUB`` -> ``VMULSHR`` -> ``VEXP`` -> A ``VREQ``
   (``round(127 e_c / s)``) -> int8 ``WRITE``.

**RMSNorm** (``compile_rmsnorm``), weights = a block of up to VL columns of ``X`` loaded as
weight columns (``LWT``), per row tile:

1. sum of squares (3 cycles per column): ``ABC e_k`` (one-hot) gives column ``c0 + k`` as int32
   -> C ``VMUL x x`` -> D ``VADD`` chained to itself; then C ``VMULSHR`` (times
   ``in_scale^2 / dim``) -> D ``VADD eps`` -> D ``VRSQRT`` -> A ``VLC``.
2. output (1 cycle per column): ``ABC gamma_q[c] e_k`` gives ``x_c gamma_q[c]`` (int32, exact)
   -> A ``VMULSHR rsqrt`` -> B ``VREQ`` -> int8 ``WRITE``.

The integer algorithms are ``verification/reference.py: softmax_int, rmsnorm_int``; the chip's
outputs equal them bit for bit. Streams: MXM inputs flow west on streams 4 and 5, the MXM result
flows east on group 0 into the VXM, VXM results use stream group 0 in both directions, constant
bytes flow west on stream 7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openlpu import isa
from openlpu import vxm_ops as ops
from openlpu.isa import Dir
from openlpu.params import LpuParams

from .chipstate import ChipState, Emitted, transactional
from .package import Package, TensorDesc
from .schedule import CompileError
from .vxmconst import (CONST_WORDS, assign_alus, check_vxm_kernel, load_const, q31_normalise,
                       vxm_fields)

__all__ = ["compile_softmax", "compile_rmsnorm", "emit_softmax", "emit_rmsnorm", "SOFTMAX_ONE",
           "SoftmaxConsts", "softmax_consts",
           "V_TOP", "RmsNormConsts", "rmsnorm_consts"]

_S_X, _S_U, _S_C = 4, 5, 7      # x vectors (LWT/ABC), weight rows / ABC vectors, constants
_S_MERGE = 6                    # softmax: partial maxima read back into the VXM
_SCRATCH_E0 = 2 * CONST_WORDS   # softmax: mem_e0 bank 0 word after the two constants
_ROW_LOOP = 3                   # cycles per column of a self-chained reduction
_ROW_SOFTMAX_OUT = 2            # cycles per column of the softmax output pass
_A, _B, _C, _D = 0, 1, 2, 3     # logical VXM ALUs (placed by vxmconst.assign_alus)


# -- the algorithms' integer constants (verification/reference.py: softmax_int, rmsnorm_int
# use them) --
SOFTMAX_ONE = 127       # int8 softmax output: probability p is stored as round(127 p)


@dataclass(frozen=True)
class SoftmaxConsts:
    """``MULSHR(d, mult, shift)`` converts ``d = x - max`` (int8 units) to Q16.16 ``d * scale``."""
    mult: int
    shift: int


def softmax_consts(scale: float) -> SoftmaxConsts:
    """Constants of ``softmax(X * scale)`` for int8 ``X`` (``scale`` > 0, real units per unit)."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"softmax scale must be a positive finite number, not {scale!r}") from None
    return SoftmaxConsts(*q31_normalise(scale * 65536.0, "softmax scale"))


@dataclass(frozen=True)
class RmsNormConsts:
    """Integer constants of RMSNorm for one shape and set of scales.

    * ``gamma_q`` (int8, |.| <= 127) = round(gamma / g_scale), ``g_scale = max|gamma| / 127``;
    * ``v = MULSHR(ss, ms_mult, ms_shift) + eps_q`` is ``mean((x in_scale)^2) + eps`` in
      fixed point with ``16 + 2 v_shift`` fraction bits (``v_shift`` chosen so that the largest
      possible ``v`` is just below 2**29: small mean squares keep their precision), so
      ``rs = fx_rsqrt(v)`` is ``2**-v_shift / sqrt(mean + eps)`` in Q16.16;
    * ``t = MULSHR(x gamma_q, rs, rs_shift)`` then ``y = requantize(t, out_mult, out_shift)``
      gives int8 ``y`` in units of ``out_scale``.
    """
    gamma_q: tuple
    g_scale: float
    v_shift: int
    ms_mult: int
    ms_shift: int
    eps_q: int
    rs_shift: int
    out_mult: int
    out_shift: int


V_TOP = 29              # RMSNorm: the largest mean square + eps is scaled below 2**V_TOP


def rmsnorm_consts(dim: int, gamma, eps: float, in_scale: float,
                   out_scale: float) -> RmsNormConsts:
    """Constants of ``y = x / sqrt(mean(x^2) + eps) * gamma`` (x = int8 * in_scale, y = int8 *
    out_scale, gamma a real vector of length ``dim``). Raises ValueError naming a bad value."""
    g = np.asarray(gamma, dtype=np.float64).reshape(-1)
    if g.shape != (dim,):
        raise ValueError(f"gamma has {g.size} values, expected dim = {dim}")
    if not np.isfinite(g).all():
        raise ValueError("gamma must be finite")
    for what, v in (("in_scale", in_scale), ("out_scale", out_scale)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
            raise ValueError(f"rmsnorm {what} must be a positive finite number, not {v!r}")
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps >= 0):
        raise ValueError(f"rmsnorm eps must be a finite number >= 0, not {eps!r}")
    gmax = float(np.abs(g).max())
    g_scale = gmax / 127 if gmax > 0 else 1.0
    gamma_q = tuple(int(v) for v in np.clip(np.round(g / g_scale), -127, 127))
    in_scale, eps = float(in_scale), float(eps)
    v_real_max = 128 * 128 * in_scale ** 2 + eps
    v_shift = int(np.floor((V_TOP - 16 - np.log2(v_real_max)) / 2))
    while (v_real_max * 2.0 ** (16 + 2 * v_shift)) >= 2 ** V_TOP:
        v_shift -= 1
    if not -16 <= v_shift <= 23:
        raise ValueError(f"rmsnorm in_scale {in_scale} and eps {eps} put mean(x^2) + eps out "
                         f"of the fixed-point range")
    frac = 2.0 ** (16 + 2 * v_shift)
    ms_mult, ms_shift = q31_normalise(in_scale ** 2 / dim * frac, "rmsnorm in_scale^2 / dim")
    eps_q = int(round(eps * frac))
    v_max = int(ops.binary_op("MULSHR", 128 * 128 * dim, ms_mult, 2, ms_shift)) + eps_q
    assert v_max < (1 << 31)
    # y = t 2**rs_shift F / 2**16 with F = in_scale g_scale 2**v_shift / out_scale; |y| = 128
    # maps to about 2**30, so t keeps ~23 bits
    F = in_scale * g_scale * 2.0 ** v_shift / float(out_scale)
    rs_shift = max(0, int(np.ceil(np.log2(2.0 ** -7 / F))))
    if rs_shift > 62:
        raise ValueError(f"rmsnorm in_scale * g_scale / out_scale = "
                         f"{in_scale * g_scale / out_scale!r} is too small")
    base = F * 2.0 ** (rs_shift + 15)         # out_mult / 2**(31 + out_shift) = F 2**(rs_shift-16)
    if base >= 2 ** 31:
        raise ValueError(f"rmsnorm in_scale * g_scale / out_scale = "
                         f"{in_scale * g_scale / out_scale!r} is too large")
    out_shift = 0
    while base * 2.0 ** (out_shift + 1) < 2 ** 31 and out_shift < 31:
        out_shift += 1
    out_mult = min(int(round(base * 2.0 ** out_shift)), (1 << 31) - 1)
    return RmsNormConsts(gamma_q, g_scale, v_shift, ms_mult, ms_shift, eps_q, rs_shift,
                         out_mult, out_shift)


def _check(params, kind, rows, cols, cols_name):
    where = f"{kind} {rows}x{cols} on preset {params.name!r}"
    check_vxm_kernel(params, where, kind, {"rows": rows, cols_name: cols})
    return where


class _Kernel:
    """Shared placement helpers: MEM reads into the MXM, ABC -> ACC -> VXM, VXM ops."""

    def __init__(self, state: ChipState, where: str, needs: dict, earliest: int, owner: str):
        p = self.p = state.params
        if not isinstance(earliest, int) or earliest < 0:
            raise CompileError(f"{where}: earliest must be a cycle >= 0, not {earliest!r}")
        self.alu = assign_alus(p, where, needs)     # logical ALU -> VXM ALU index
        self.state = self.sched = state
        self.image = state.image
        self.earliest, self.owner = earliest, owner
        self.stream_mark = state.stream_hi         # stream slots other kernels claimed
        self.vx, self.mxm = p.slice("vxm"), p.slice("mxm_w")
        self.w0, self.w1, self.e0 = p.slice("mem_w0"), p.slice("mem_w1"), p.slice("mem_e0")
        self.d_abc = state.lead("ABC", self.mxm, self.mxm)      # ABC -> its ACC
        self.lat_acc = state.lead("ACC", self.mxm, self.vx)     # ACC -> the VXM samples it
        self.d_simple = state.lead("VADD", self.vx, self.vx)    # 2-cycle VXM op -> its drive
        self.d_fx = state.lead("VEXP", self.vx, self.vx)        # function unit -> its drive
        # simple op at t -> chained operand at t + chain
        self.chain = state.lead("VADD", self.vx, self.vx, chain=True)
        self.chain_fx = state.lead("VEXP", self.vx, self.vx, chain=True)
        self.acc_row = p.mxm_acc_words - 1
        # MXM weights queue state: after every weight load and ABC already on the state
        loaded = state.free_after(_BUF_LOAD)
        self.weights_free = loaded
        self.last_iw = loaded - 1 if loaded else -p.superlanes
        self.last_abc = state.free_after(_BUF_USE) - 1
        self._in_use = None                   # first cycle the current weights are in use

    def reserve(self, what: str, unit, words: int):
        """Claim words ``0 .. words-1`` of ``unit`` (slice, bank) in the state's allocator."""
        self.state.alloc.reserve(what, unit, 0, words)

    def lat(self, src, dst):
        return self.state.lead("READ", src, dst)

    def read(self, sl, t_use, dst, addr, stream):
        """READ ``addr`` of ``sl`` so that ``dst`` samples it on ``stream`` at ``t_use``."""
        d = Dir.WEST if sl.position > dst.position else Dir.EAST
        self.sched.place(f"{sl.name}.read", t_use - self.lat(sl, dst), "READ", addr=addr,
                         stream=stream, dir=d)

    def op(self, alu, t, mnemonic, **f):
        self.sched.place(f"vxm.alu{self.alu[alu]}", t, mnemonic, **vxm_fields(**f))

    def column(self, t_abc, sl, addr):
        """ABC the vector at ``addr`` of ``sl`` at ``t_abc`` and ACC it east on group 0;
        returns the cycle the VXM samples the int32 result on its input side."""
        self.read(sl, t_abc, self.mxm, addr, _S_U if sl is self.w1 else _S_X)
        self.sched.place("mxm_w.compute", t_abc, "ABC", acc=self.acc_row,
                         stream=_S_U if sl is self.w1 else _S_X, dir=Dir.WEST, accumulate=0)
        t_acc = t_abc + self.d_abc
        self.sched.place("mxm_w.result", t_acc, "ACC", acc=self.acc_row, group=0, dir=Dir.EAST)
        self.state.claim(f"mxm_w accumulator row {self.acc_row}", t_acc, t_acc, self.owner)
        self.last_abc = max(self.last_abc, t_abc)
        return t_acc + self.lat_acc

    def first_abc(self, t_vxm):
        """ABC cycle whose result the VXM samples at ``t_vxm``."""
        return t_vxm - self.d_abc - self.lat_acc

    def load_weights(self, sl, addrs, transposed, earliest=0):
        """LW (or LWT) the vectors ``addrs`` of ``sl`` as weight rows (columns) 0.., then IW;
        returns the IW cycle (the first ABC with the new weights may issue one cycle later)."""
        S = self.p.superlanes
        stream = _S_U if sl is self.w1 else _S_X
        t0 = max(self.weights_free, self.last_iw + S, earliest,
                 self.earliest + self.lat(sl, self.mxm))
        for k, addr in enumerate(addrs):
            self.read(sl, t0 + k, self.mxm, addr, stream)
            if transposed:
                self.sched.place("mxm_w.weights", t0 + k, "LWT", col=k, stream=stream,
                                 dir=Dir.WEST)
            else:
                self.sched.place("mxm_w.weights", t0 + k, "LW", row=k, stream=stream,
                                 dir=Dir.WEST)
        t_iw = t0 + len(addrs) - 1 + (S if transposed else 1)
        t_iw = max(t_iw, self.last_abc)
        self.sched.place("mxm_w.weights", t_iw, "IW")
        self.state.claim(_BUF_LOAD, t0, t_iw, self.owner)
        self._claim_in_use()
        self._in_use = t_iw + 1
        self.last_iw, self.weights_free = t_iw, t_iw + 1
        return t_iw

    def _claim_in_use(self):
        """Claim the active weight buffer from its IW to the last ABC that used it."""
        if self._in_use is not None and self.last_abc >= self._in_use:
            self.state.claim(_BUF_USE, self._in_use, self.last_abc, self.owner)

    def const(self, alu, value, t, addr):
        try:
            return load_const(self.sched, self.p, self.image, self.alu[alu], value, t, src=self.e0,
                              addr=addr, stream=_S_C)
        except ValueError as e:
            raise CompileError(str(e)) from None

    def check_mem(self, where, need):
        for what, words in need.items():
            if words > self.p.mem_words:
                raise CompileError(f"{where}: {what} needs {words} words, a bank holds "
                                   f"{self.p.mem_words}")

    def finish(self, inputs, outputs, meta) -> Emitted:
        """Claim what the kernel held (the last weights, the constant registers of its ALUs,
        the stream registers from ``earliest`` to its last instruction: their slots are not
        claimed one by one) and return its :class:`Emitted`."""
        self._claim_in_use()
        end = self.state.end
        for i in sorted(set(self.alu.values())):
            self.state.claim(f"vxm.alu{i} constant register", self.earliest, end - 1, self.owner)
        self.state.opaque_streams(self.earliest, end - 1, self.owner, after=self.stream_mark)
        return Emitted(end=end, inputs=inputs, outputs=outputs, meta=meta)


def _package(state, where, name, out):
    try:
        return state.package(name=name, inputs=out.inputs, outputs=out.outputs, meta=out.meta)
    except CompileError as e:
        raise CompileError(f"{where}: {e}") from None


_BUF_LOAD, _BUF_USE = "mxm_w weight buffer (loading)", "mxm_w weight buffer (in use)"
_MAX_INTERLEAVE_MIN_COLS = 6    # from here the interleaved max pass is faster


def _max_interleaved(k, t0, base, cols):
    """Softmax max pass at one column per cycle; returns the cycle B's constant holds ``m``.

    ALU B issues ``VMAX`` every cycle, chained to its own result of 3 cycles earlier, so it
    keeps three partial maxima (columns c = 0, 1, 2 mod 3). Their values are int8, so they are
    combined through MEM: the partial ending with column L-2 goes to ``mem_e0``, the one ending
    with column L to ``mem_e1`` (its low byte, stream 0 east), and int8 ``VMAX`` merge them,
    read back on stream 6 west, with the remaining partial (kept one more round in the chain);
    ``VLC`` (int8, sign-extended) puts the result into B's constant register.
    """
    vx, e0, e1 = k.vx, k.e0, k.p.slice("mem_e1")
    ch = k.chain
    for c in range(cols):
        v = k.column(t0 + c, k.w0, base + c)
        if c < 3:
            k.op(_B, v, "VMAX", b_dir=Dir.EAST, out_dir=Dir.EAST)
        else:
            k.op(_B, v, "VMAX", a_chain=1, b_dir=Dir.EAST, out_dir=Dir.EAST)
    vL = v                                       # last column sampled; partial drives:
    drive = {"a": vL - 2 + k.d_simple, "b": vL - 1 + k.d_simple, "c": vL + k.d_simple}
    scratch = {"a": (e0, _SCRATCH_E0), "c": (e1, 0)}
    ready = {}
    for key, (sl, addr) in scratch.items():
        t_w = drive[key] + k.state.lead(None, vx, sl, "WRITE")
        k.sched.place(f"{sl.name}.write", t_w, "WRITE", addr=addr, stream=0, dir=Dir.EAST)
        ready[key] = t_w + 1                     # a READ from here on sees the new word
    # partial b once more round its chain, then merge a into it, then c
    t_b = drive["b"] + 1
    k.op(_B, t_b, "VMAX", a_chain=1, b_dir=Dir.EAST, b_mode=isa.VXM_B_CHAIN, out_dir=Dir.EAST)
    t1 = max(t_b + ch, ready["a"] + k.lat(e0, vx))
    t2 = t1 + ch
    assert t1 == t_b + ch and t2 >= ready["c"] + k.lat(e1, vx), "merge timing"
    for t, key in ((t1, "a"), (t2, "c")):
        sl, addr = scratch[key]
        k.read(sl, t, vx, addr, _S_MERGE)
        k.op(_B, t, "VMAX", a_chain=1, b_stream=_S_MERGE, b_dir=Dir.WEST, out_dir=Dir.EAST,
             dtype=0)
    k.op(_B, t2 + ch, "VLC", a_chain=1, dtype=0)
    return t2 + ch + 1


def compile_softmax(params: LpuParams, rows: int, cols: int, *, scale: float,
                    name: str | None = None) -> Package:
    """Compile ``Y = softmax(X * scale)`` over each row of int8 ``X`` (rows x cols).

    The output ``Y`` is int8: probability ``p`` is stored as ``round(127 p)`` (0..127; divide
    by ``SOFTMAX_ONE``). ``scale`` (> 0) is the real value of one unit of ``X``.
    ``X`` lives in ``mem_w0`` bank 0 and ``Y`` in ``mem_w0`` bank 1, both column-wise.
    Raises :class:`CompileError` for a preset without a 4-ALU VXM, a bad scale, or a shape whose
    tensors or instruction images do not fit.
    """
    where = f"softmax {rows}x{cols} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_softmax(state, rows, cols, scale=scale)
    return _package(state, where, name or f"softmax_{rows}x{cols}", out)


def _given_column_input(p, where, inputs, shape):
    """The ``inputs=`` tensor of softmax / RMSNorm (or None): it must be int8 ``shape`` stored
    column-wise from word 0 of ``mem_w0`` bank 0, where these kernels read it."""
    given = inputs[0] if inputs else None
    if given is not None and (tuple(given.shape) != shape or given.dtype != "int8"
                              or not given.transposed
                              or given.layout != [[(p.slice("mem_w0").index, 0, 0, 1)]]):
        raise CompileError(f"{where}: input {given.name!r} must be int8 {shape} "
                           f"column-wise from word 0 of mem_w0 bank 0, is {given.dtype} "
                           f"{tuple(given.shape)} {given.layout}")
    return given


@transactional
def emit_softmax(state: ChipState, rows: int, cols: int, *, scale: float, earliest: int = 0,
                 names: tuple = ("X", "Y"), inputs: tuple | None = None) -> Emitted:
    """Emit the softmax of :func:`compile_softmax` on ``state``: every instruction at or after
    ``earliest``, after the weight loads and ABCs already on the state. Its MEM words are fixed
    (``X`` words 0.. of ``mem_w0`` bank 0, ``Y`` of bank 1, the identity weights of ``mem_w1``
    bank 0, constants and scratch from word 0 of ``mem_e0`` bank 0 and ``mem_e1`` bank 0) and
    reserved in the state's allocator: an :class:`~openlpu.firmware.memalloc.AllocError` names
    a word another kernel holds. The stream registers from ``earliest`` to its last instruction
    are marked as used (:meth:`ChipState.opaque_streams`).

    ``inputs=(X,)``: ``X`` is the :class:`TensorDesc` of a tensor another kernel wrote at the
    place the softmax reads it (int8, column-wise, words 0.. of ``mem_w0`` bank 0); its words are
    then not reserved again (the writer holds them)."""
    p = state.params
    where = _check(p, "softmax", rows, cols, "cols")
    given = _given_column_input(p, where, inputs, (rows, cols))
    try:
        consts = softmax_consts(scale)
    except ValueError as e:
        raise CompileError(f"{where}: {e}") from None
    vl = p.vl
    RT = math.ceil(rows / vl)
    # the ALUs' units: D exp, reciprocal and the 127 r product; C the scaling, A the output
    k = _Kernel(state, where, {_A: ("VREQ",), _B: (), _C: ("VMULSHR",),
                               _D: ("VEXP", "VRECIP", "VMUL")}, earliest, where)
    k.check_mem(where, {"X (row tiles x cols) in mem_w0 bank 0": RT * cols,
                        "Y (row tiles x cols) in mem_w0 bank 1": RT * cols,
                        "identity weights in mem_w1 bank 0": vl})
    w0, w1, bank1 = k.w0, k.w1, p.mem_words
    nx, ny = names
    if given is None:
        k.reserve(nx, (w0.index, 0), RT * cols)
    k.reserve(ny, (w0.index, 1), RT * cols)
    k.reserve(f"{ny} identity weights", (w1.index, 0), vl)
    k.reserve(f"{ny} constants and scratch", (k.e0.index, 0), _SCRATCH_E0 + 1)
    k.reserve(f"{ny} scratch", (p.slice("mem_e1").index, 0), 1)
    ch, chf = k.chain, k.chain_fx
    d_fx_out = k.d_fx                            # VRECIP drives its result d_fx after issue

    # identity weights (row r = unit vector r) and the two program constants
    for r in range(vl):
        k.image.append((w1.index, r, bytes(1 if i == r else 0 for i in range(vl))))
    t = k.const(_C, consts.mult, earliest + k.lat(k.e0, k.vx), 0)
    t = k.const(_D, SOFTMAX_ONE, t, CONST_WORDS)
    t_iw = k.load_weights(w1, list(range(vl)), transposed=False)
    vxm_free = t                                 # first cycle a pass may use the VXM
    abc_free = t_iw + 1

    for rt in range(RT):
        base = rt * cols
        # -- pass 1: m = max_c x_c on ALU B (east output only), VLC m into B -----------------
        # (it drives east only, so it may start while the previous tile's pass 3 still drives
        # west; ``vxm_free`` is then the first cycle after that pass's last east drive)
        t0 = max(abc_free, k.first_abc(vxm_free))
        if cols < _MAX_INTERLEAVE_MIN_COLS:
            # one chain: a column every 3 cycles
            for c in range(cols):
                v = k.column(t0 + _ROW_LOOP * c, w0, base + c)
                if c == 0:
                    k.op(_B, v, "VMAX", b_dir=Dir.EAST, out_dir=Dir.EAST)
                else:
                    k.op(_B, v, "VMAX", a_chain=1, b_dir=Dir.EAST, out_dir=Dir.EAST)
            k.op(_B, v + ch, "VLC", a_chain=1)
            vxm_free = v + ch + 1                # B's constant is m from here on
            abc_free = t0 + _ROW_LOOP * (cols - 1) + 1
        else:
            vxm_free = _max_interleaved(k, t0, base, cols)
            abc_free = t0 + cols
        # -- pass 2: s = sum_c exp(MULSHR(x_c - m)) (ALU A loop), r127 = 127 / s into A ------
        t0 = max(abc_free, k.first_abc(vxm_free))
        for c in range(cols):
            v = k.column(t0 + _ROW_LOOP * c, w0, base + c)
            k.op(_B, v, "VSUB", b_mode=isa.VXM_B_CONST, out_dir=Dir.EAST)
            k.op(_C, v + ch, "VMULSHR", a_chain=1, b_mode=isa.VXM_B_CONST, out_dir=Dir.WEST,
                 imm=consts.shift)
            k.op(_D, v + 2 * ch, "VEXP", a_dir=Dir.WEST, a_chain=1, out_dir=Dir.EAST)
            t_add = v + 2 * ch + chf
            if c == 0:
                k.op(_A, t_add, "VADD", a_chain=1, b_mode=isa.VXM_B_IMM, out_dir=Dir.WEST)
            else:
                k.op(_A, t_add, "VADD", a_dir=Dir.WEST, a_chain=1, b_dir=Dir.EAST,
                     b_mode=isa.VXM_B_CHAIN, out_dir=Dir.WEST)
        t_s = t_add + ch                         # s in the output column (west)
        k.op(_D, t_s, "VRECIP", a_dir=Dir.WEST, a_chain=1, out_dir=Dir.EAST)
        k.op(_D, t_s + chf, "VMUL", a_chain=1, b_mode=isa.VXM_B_CONST, out_dir=Dir.WEST)
        k.op(_A, t_s + chf + ch, "VLC", a_dir=Dir.WEST, a_chain=1)
        # pass 3 may start once its east drives (from v + d_simple on, every cycle) follow
        # VRECIP's; its first VREQ (A) comes well after the VLC, its west drives after VMUL's
        vxm_free = t_s + d_fx_out - k.d_simple + 1
        assert vxm_free + 2 * ch + chf > t_s + chf + ch     # VREQ sees A's new constant
        abc_free = t0 + _ROW_LOOP * (cols - 1) + 1

        # -- pass 3: Y_c = VREQ(exp(MULSHR(x_c - m)), 127 r) -> mem_w0 bank 1 -----------------
        # (the VREQs see A's new constant; no drive meets pass 2's last ones)
        t0 = max(abc_free, k.first_abc(vxm_free))
        for c in range(cols):
            v = k.column(t0 + _ROW_SOFTMAX_OUT * c, w0, base + c)
            k.op(_B, v, "VSUB", b_mode=isa.VXM_B_CONST, out_dir=Dir.EAST)
            k.op(_C, v + ch, "VMULSHR", a_chain=1, b_mode=isa.VXM_B_CONST, out_dir=Dir.EAST,
                 imm=consts.shift)
            k.op(_D, v + 2 * ch, "VEXP", a_chain=1, out_dir=Dir.WEST)
            t_q = v + 2 * ch + chf
            k.op(_A, t_q, "VREQ", a_dir=Dir.WEST, a_chain=1, b_mode=isa.VXM_B_CONST,
                 out_dir=Dir.WEST, imm=1)
            k.sched.place(f"{w0.name}.write", t_q + k.state.lead("VREQ", k.vx, w0, "WRITE"),
                          "WRITE", addr=bank1 + base + c, stream=0, dir=Dir.WEST)
        vxm_free = v + ch + k.d_simple + 1       # after the last east drive (VMULSHR)
        abc_free = t0 + _ROW_SOFTMAX_OUT * (cols - 1) + 1

    return k.finish(
        inputs=[given or TensorDesc(nx, (rows, cols), "int8", [(w0.index, 0)], base=0,
                                    transposed=True)],
        outputs=[TensorDesc(ny, (rows, cols), "int8", [(w0.index, 1)], base=0,
                            transposed=True)],
        meta={"rows": rows, "cols": cols, "scale": float(scale), "mult": consts.mult,
              "shift": consts.shift, "one": SOFTMAX_ONE})


def compile_rmsnorm(params: LpuParams, rows: int, dim: int, *, gamma, eps: float,
                    in_scale: float, out_scale: float, name: str | None = None) -> Package:
    """Compile RMSNorm ``y = x / sqrt(mean(x^2) + eps) * gamma`` over each row of ``X``.

    ``X`` is int8 (rows x dim) with real value ``X * in_scale``; the output ``Y`` is int8 with
    real value ``Y * out_scale`` (saturated). ``gamma`` is a real vector of ``dim`` values,
    quantized at compile time to int8 with one scale ``max|gamma| / 127``
    (:func:`rmsnorm_consts`). ``X`` lives in ``mem_w0`` bank 0 and ``Y`` in ``mem_e0``
    bank 1, both column-wise. Raises :class:`CompileError` for a preset without a 4-ALU VXM,
    bad scales, ``eps`` or ``gamma``, or a shape that does not fit.
    """
    where = f"rmsnorm {rows}x{dim} on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_rmsnorm(state, rows, dim, gamma=gamma, eps=eps, in_scale=in_scale,
                       out_scale=out_scale)
    return _package(state, where, name or f"rmsnorm_{rows}x{dim}", out)


@transactional
def emit_rmsnorm(state: ChipState, rows: int, dim: int, *, gamma, eps: float, in_scale: float,
                 out_scale: float, earliest: int = 0, names: tuple = ("X", "Y"),
                 inputs: tuple | None = None) -> Emitted:
    """Emit the RMSNorm of :func:`compile_rmsnorm` on ``state`` from ``earliest`` on (as
    :func:`emit_softmax`: fixed MEM words reserved in the state's allocator, ``X`` words 0.. of
    ``mem_w0`` bank 0, the one-hot vectors of ``mem_w1`` bank 0, ``Y`` of ``mem_e0`` bank 1,
    the constants of ``mem_e0`` bank 0). ``inputs=(X,)``: as :func:`emit_softmax`'s, an int8
    ``X`` another kernel wrote column-wise at words 0.. of ``mem_w0`` bank 0, not reserved
    again."""
    p = state.params
    where = _check(p, "rmsnorm", rows, dim, "dim")
    given = _given_column_input(p, where, inputs, (rows, dim))
    try:
        consts = rmsnorm_consts(dim, gamma, eps, in_scale, out_scale)
    except (TypeError, ValueError) as e:
        raise CompileError(f"{where}: {e}") from None
    vl = p.vl
    RT, NB = math.ceil(rows / vl), math.ceil(dim / vl)
    # the ALUs' units: C squares and scales, D the rsqrt, A and B the output products
    k = _Kernel(state, where, {_A: ("VMULSHR",), _B: ("VREQ",), _C: ("VMUL", "VMULSHR"),
                               _D: ("VRSQRT",)}, earliest, where)
    k.check_mem(where, {"X (row tiles x dim) in mem_w0 bank 0": RT * dim,
                        "one-hot vectors (VL + dim) in mem_w1 bank 0": vl + dim,
                        "Y (row tiles x dim) in mem_e0 bank 1": RT * dim})
    w0, w1, e0, bank1 = k.w0, k.w1, k.e0, p.mem_words
    nx, ny = names
    if given is None:
        k.reserve(nx, (w0.index, 0), RT * dim)
    k.reserve(f"{ny} one-hot vectors", (w1.index, 0), vl + dim)
    k.reserve(ny, (e0.index, 1), RT * dim)
    k.reserve(f"{ny} constants", (e0.index, 0), 3 * CONST_WORDS)
    ch, chf = k.chain, k.chain_fx

    # one-hot ABC vectors: word j < VL is unit vector j, word VL + c is gamma_q[c] at lane c%VL
    for j in range(vl):
        k.image.append((w1.index, j, bytes(1 if i == j else 0 for i in range(vl))))
    for c, g in enumerate(consts.gamma_q):
        k.image.append((w1.index, vl + c,
                        bytes((g & 0xFF) if i == c % vl else 0 for i in range(vl))))
    t = earliest + k.lat(e0, k.vx)
    t = k.const(_C, consts.ms_mult, t, 0)
    t = k.const(_D, consts.eps_q, t, CONST_WORDS)
    t = k.const(_B, consts.out_mult, t, 2 * CONST_WORDS)
    vxm_free = t
    abc_free = earliest

    def block(rt, b):
        c0 = b * vl
        nb = min(vl, dim - c0)
        t_iw = k.load_weights(w0, [rt * dim + c0 + j for j in range(nb)], transposed=True)
        return c0, nb, t_iw

    for rt in range(RT):
        # -- pass 1: ss = sum_c x_c^2 (C VMUL, D VADD loop), rsqrt(ss ms + eps) into A ----------
        t_next = None
        for b in range(NB):
            c0, nb, t_iw = block(rt, b)
            t0 = max(abc_free, t_iw + 1, k.first_abc(vxm_free))
            if t_next is not None:               # the loop needs one column every 3 cycles
                if t0 > t_next:
                    raise CompileError(f"{where}: weight block {b} cannot load within the "
                                       f"sum-of-squares loop")   # not while S < VL
                t0 = t_next
            for j in range(nb):
                c = c0 + j
                t_abc = t0 + _ROW_LOOP * j
                v = k.column(t_abc, w1, j)
                k.op(_C, v, "VMUL", b_dir=Dir.EAST, out_dir=Dir.WEST)
                if c == 0:
                    k.op(_D, v + ch, "VADD", a_dir=Dir.WEST, a_chain=1,
                         b_mode=isa.VXM_B_IMM, out_dir=Dir.EAST)
                else:
                    k.op(_D, v + ch, "VADD", a_chain=1, b_dir=Dir.WEST,
                         b_mode=isa.VXM_B_CHAIN, out_dir=Dir.EAST)
            abc_free = t_abc + 1
            t_next = t_abc + _ROW_LOOP
        t_ss = v + 2 * ch                        # ss in the output column (east)
        k.op(_C, t_ss, "VMULSHR", a_chain=1, b_mode=isa.VXM_B_CONST, out_dir=Dir.WEST,
             imm=consts.ms_shift)
        k.op(_D, t_ss + ch, "VADD", a_dir=Dir.WEST, a_chain=1, b_mode=isa.VXM_B_CONST,
             out_dir=Dir.EAST)
        k.op(_D, t_ss + 2 * ch, "VRSQRT", a_chain=1, out_dir=Dir.WEST)
        k.op(_A, t_ss + 2 * ch + chf, "VLC", a_dir=Dir.WEST, a_chain=1)
        vxm_free = t_ss + 2 * ch + chf + 1       # A's constant is rsqrt from here on

        # -- pass 2: y_c = VREQ(MULSHR(x_c gamma_q[c], rsqrt)) -> mem_e0 bank 1, 1 per cycle --
        for b in range(NB):
            if NB > 1:                           # one block: pass 1's weights are still loaded
                c0, nb, t_iw = block(rt, b)
            else:
                c0, nb, t_iw = 0, dim, k.last_iw
            t0 = max(abc_free, t_iw + 1, k.first_abc(vxm_free))
            for j in range(nb):
                c = c0 + j
                v = k.column(t0 + j, w1, vl + c)
                k.op(_A, v, "VMULSHR", b_mode=isa.VXM_B_CONST, out_dir=Dir.WEST,
                     imm=consts.rs_shift)
                k.op(_B, v + ch, "VREQ", a_dir=Dir.WEST, a_chain=1, b_mode=isa.VXM_B_CONST,
                     out_dir=Dir.EAST, imm=consts.out_shift)
                k.sched.place(f"{e0.name}.write", v + ch + k.state.lead("VREQ", k.vx, e0, "WRITE"),
                              "WRITE",
                              addr=bank1 + rt * dim + c, stream=0, dir=Dir.EAST)
            abc_free = t0 + nb
        vxm_free = v + 1                         # pass 1 drives (C, D) follow pass 2's (A, B)

    return k.finish(
        inputs=[given or TensorDesc(nx, (rows, dim), "int8", [(w0.index, 0)], base=0,
                                    transposed=True)],
        outputs=[TensorDesc(ny, (rows, dim), "int8", [(e0.index, 1)], base=0,
                            transposed=True)],
        meta={"rows": rows, "dim": dim, "eps": float(eps), "in_scale": float(in_scale),
              "out_scale": float(out_scale), "g_scale": consts.g_scale,
              "gamma_q": list(consts.gamma_q)})
