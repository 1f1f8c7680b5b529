"""numpy reference implementations of the integer algorithms the kernels run.

Each function computes, with :mod:`openlpu.vxm_ops`, exactly the bits the corresponding kernel
produces on the chip, step by step in the same order; kernel tests compare the chip against these
bit-exactly, and against float64 versions within documented tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openlpu import vxm_ops as ops

__all__ = ["matmul", "AttentionConsts", "attention_consts", "causal_valid", "attention_int",
           "attention_float", "MASKED_S", "E8_ROUND", "L_SHIFT", "R_SHIFT", "low_byte_signed"]

MASKED_S = -(1 << 24)   # score (Q.K units) of a masked position: below any int8 dot product
E8_ROUND = 128          # e8 = byte 1 of E + 128 = round(E / 256): below 0.5 * 256, an int8
L_SHIFT = 8             # attention denominator L = (sum e8 << 8) + sum lo = sum E (Q16)
R_SHIFT = L_SHIFT - 1   # rq = fx_recip(L) << 7 = 2**39 / L: VREQ(O_acc, rq, 0) = O_acc 256 / L


def matmul(A, B):
    return np.asarray(A, dtype=np.int64) @ np.asarray(B, dtype=np.int64)


@dataclass(frozen=True)
class AttentionConsts:
    """Integer constants of the attention algorithm for one score scale.

    ``mult / 2**shift`` converts a dot product ``Q.K`` into Q16.16 scaled scores;
    ``delta`` (Q.K units) is added to the row maximum so that every exponential is below 0.5
    and rounds to an int8 (``e8 = round(E / 256)`` <= 127, ``E`` the Q16 exponential).
    """
    mult: int
    shift: int
    delta: int


def _exp_half_bound() -> int:
    """Smallest Q16.16 ``d`` with ``(fx_exp(z) + E8_ROUND) >> 8 <= 127`` for every ``z <= -d``."""
    z = -np.arange(0, 200000, dtype=np.int64)
    e8 = (ops.fx_exp(z, 0) + E8_ROUND) >> 8
    # running maximum over z <= -d, scanning from very negative up
    worst_below = np.maximum.accumulate(e8[::-1])[::-1]
    ok = np.nonzero(worst_below <= 127)[0]
    return int(ok[0])


EXP_HALF_BOUND = _exp_half_bound()


def attention_consts(scale: float) -> AttentionConsts:
    """Constants for ``scores = (Q.K) * scale`` (``scale`` > 0, real units per Q.K unit)."""
    if not scale > 0:
        raise ValueError(f"attention score scale must be positive, not {scale!r}")
    q16 = scale * 65536.0
    shift = 0
    while q16 * (1 << (shift + 1)) < (1 << 31) and shift < 62:
        shift += 1
    mult = int(round(q16 * (1 << shift)))
    if not 0 < mult < (1 << 31):
        raise ValueError(f"attention score scale {scale!r} does not fit an int32 multiplier")
    # smallest delta with MULSHR(-delta) <= -EXP_HALF_BOUND (MULSHR is monotonic)
    delta = max(1, int(np.ceil(EXP_HALF_BOUND * (1 << shift) / mult)))
    while ops.binary_op("MULSHR", -delta, mult, 2, shift) > -EXP_HALF_BOUND:
        delta += 1
    # a masked key must give exp = 0 (the chip skips keys no query of a tile sees): its score
    # is at least 2**24 - 2**20 below m + delta when the query sees some key (|Q.K| <= 2**20
    # for head_dim <= 64)
    if ops.fx_exp(ops.binary_op("MULSHR", MASKED_S + (1 << 20), mult, 2, shift), 0) != 0:
        raise ValueError(f"attention score scale {scale!r} is too small: masked keys would "
                         f"not vanish (scale * 2**24 must exceed about 12)")
    return AttentionConsts(mult, shift, delta)


def causal_valid(lq: int, lk: int, causal: bool) -> np.ndarray:
    """Boolean (lq, lk): key j is visible to query i (``j <= i + lk - lq`` when causal)."""
    if not causal:
        return np.ones((lq, lk), dtype=bool)
    return np.arange(lk)[None, :] <= (np.arange(lq)[:, None] + lk - lq)


def low_byte_signed(E):
    """The low byte of each int32 lane of ``E`` read as a signed int8 (what the MXM multiplies)."""
    E = np.asarray(E, dtype=np.int64)
    return ((E & 0xFF) ^ 0x80) - 0x80


def attention_int(Q, K, V, consts: AttentionConsts, causal: bool = False) -> dict:
    """One head, the chip's integer algorithm (``firmware/attention.py``), step by step.

    1. ``S = Q K^T`` (int32); masked positions become ``MASKED_S``; ``m = max_j S``.
    2. ``x = MULSHR(S - (m + delta), mult, shift)`` (Q16.16, <= -0.69 on the maximum);
       ``E = fx_exp(x)`` (``VEXP``: round(65536 exp(x)), full precision, 0 on masked keys
       unless a query sees no key at all); ``e8`` = byte 1 of ``E + 128`` (``VADD``) =
       round(E / 256), 0..127; ``lo`` = byte 0 of ``E`` read as a signed int8 = ``E - 256 e8``
       exactly (in -128..127).
    3. ``L = (sum_j e8 << 8) + sum_j lo = sum_j E`` (int32; the MXM sums e8 and lo, ``VSHL``,
       ``VADD``), ``rq = fx_recip(L) << 7`` (= 2**39 / L, ``VRECIP``, ``VSHL``);
       ``O_acc = e8 @ V`` (int32); ``O = saturate8(round(O_acc * rq / 2**31))`` (``VREQ``
       imm 0) = O_acc 256 / L.

    Returns a dict with ``O`` (int8 output), ``P`` (the probabilities ``e8 rq / 2**31`` the
    algorithm applies, float64, so ``O = round(P @ V)``), ``e8``, ``E``, ``lo``, ``l`` (= L),
    ``r`` (= rq) and ``S``.
    """
    Q, K, V = (np.asarray(x, dtype=np.int64) for x in (Q, K, V))
    S = Q @ K.T
    lq, lk = S.shape
    Sm = np.where(causal_valid(lq, lk, causal), S, MASKED_S)
    m = Sm.max(axis=1, keepdims=True)
    c = ops.wrap(m + consts.delta, 2)
    x = ops.binary_op("MULSHR", ops.wrap(Sm - c, 2), consts.mult, 2, consts.shift)
    E = ops.fx_exp(x, 0)
    e8 = (ops.binary_op("ADD", E, E8_ROUND, 2) >> 8) & 0xFF
    lo = low_byte_signed(E)
    s8 = ops.wrap(e8.sum(axis=1, keepdims=True), 2)
    slo = ops.wrap(lo.sum(axis=1, keepdims=True), 2)
    L = ops.binary_op("ADD", ops.binary_op("SHL", s8, L_SHIFT, 2), slo, 2)
    rq = ops.binary_op("SHL", ops.fx_recip(L), R_SHIFT, 2)
    o_acc = ops.wrap(e8 @ V, 2)
    O = ops.requantize(o_acc, rq, 0)
    return {"O": O, "P": e8 * rq / 2.0 ** 31, "e8": e8, "E": E, "lo": lo, "l": L[:, 0],
            "r": rq[:, 0], "S": S}


def attention_float(Q, K, V, scale: float, causal: bool = False):
    """float64 attention on the same (dequantised-by-the-caller) inputs: ``(O, P)``."""
    Q, K, V = (np.asarray(x, dtype=np.float64) for x in (Q, K, V))
    s = (Q @ K.T) * scale
    lq, lk = s.shape
    s = np.where(causal_valid(lq, lk, causal), s, -np.inf)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    p = e / e.sum(axis=1, keepdims=True)
    return p @ V, p


# -- row softmax and RMSNorm (firmware/norm.py) --------------------------------------------------
__all__ += ["q31_normalise", "SoftmaxConsts", "softmax_consts", "softmax_int", "softmax_float",
            "RmsNormConsts", "rmsnorm_consts", "rmsnorm_int", "rmsnorm_float", "SOFTMAX_ONE"]

SOFTMAX_ONE = 127       # int8 softmax output: probability p is stored as round(127 p)


def q31_normalise(q: float, what: str, max_shift: int = 62) -> tuple:
    """``(mult, shift)`` with ``mult / 2**shift`` = ``q`` (> 0) and ``mult`` in [2**30, 2**31)
    where ``shift`` allows it (``shift`` <= ``max_shift``). Raises ValueError when ``q`` is not a
    positive finite number or does not fit an int32 multiplier."""
    if not (isinstance(q, float) and np.isfinite(q) and q > 0):
        raise ValueError(f"{what} must be a positive finite number, not {q!r}")
    shift = 0
    while q * (1 << (shift + 1)) < (1 << 31) and shift < max_shift:
        shift += 1
    mult = int(round(q * (1 << shift)))
    if mult >= (1 << 31) and shift == 0:
        raise ValueError(f"{what} {q!r} is too large for an int32 multiplier")
    mult = min(mult, (1 << 31) - 1)
    if mult < 1:
        raise ValueError(f"{what} {q!r} is too small for an int32 multiplier")
    return mult, shift


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


def softmax_int(X, consts: SoftmaxConsts) -> dict:
    """Row softmax, the chip's integer algorithm (``firmware/norm.py: compile_softmax``).

    1. ``m = max_c X[:, c]`` (int32).
    2. ``z = MULSHR(X - m, mult, shift)`` (Q16.16, <= 0); ``e = fx_exp(z)`` (Q16.16, 0..65536,
       exactly 65536 at the maximum); ``s = sum_c e`` (int32, >= 65536).
    3. ``r = fx_recip(s)`` (= 2**32 / s), ``r127 = 127 r`` (``VMUL``);
       ``Y = VREQ(e, r127, 1) = saturate8(round(e * r127 / 2**32))`` = round(127 e / s).

    Returns ``Y`` (int8, probability ``Y / 127``), ``P`` (``Y / 127``), ``e``, ``s``, ``r``, ``m``.
    """
    X = np.asarray(X, dtype=np.int64)
    m = X.max(axis=1, keepdims=True)
    z = ops.binary_op("MULSHR", ops.wrap(X - m, 2), consts.mult, 2, consts.shift)
    e = ops.fx_exp(z, 0)
    s = ops.wrap(e.sum(axis=1, keepdims=True), 2)
    r = ops.fx_recip(s)
    r127 = ops.binary_op("MUL", r, SOFTMAX_ONE, 2)
    Y = ops.requantize(e, r127, 1)
    return {"Y": Y, "P": Y / SOFTMAX_ONE, "e": e, "s": s[:, 0], "r": r[:, 0], "m": m[:, 0]}


def softmax_float(X, scale: float):
    """float64 ``softmax(X * scale)`` over rows."""
    s = np.asarray(X, dtype=np.float64) * scale
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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


def rmsnorm_int(X, consts: RmsNormConsts) -> dict:
    """RMSNorm over rows, the chip's integer algorithm (``firmware/norm.py: compile_rmsnorm``).

    1. ``ss = sum_c X[:, c]^2`` (int32); ``v = MULSHR(ss, ms_mult, ms_shift) + eps_q``
       (``16 + 2 v_shift`` fraction bits); ``rs = fx_rsqrt(v)`` (Q16.16, times 2**v_shift).
    2. ``t = MULSHR(X * gamma_q, rs, rs_shift)`` (int32, saturating);
       ``Y = requantize(t, out_mult, out_shift)`` (int8).

    Returns ``Y`` and the intermediates ``ss``, ``v``, ``rs``.
    """
    X = np.asarray(X, dtype=np.int64)
    g = np.asarray(consts.gamma_q, dtype=np.int64)[None, :]
    ss = ops.wrap((X * X).sum(axis=1, keepdims=True), 2)
    v = ops.wrap(ops.binary_op("MULSHR", ss, consts.ms_mult, 2, consts.ms_shift)
                 + consts.eps_q, 2)
    rs = ops.fx_rsqrt(v)
    t = ops.binary_op("MULSHR", X * g, rs, 2, consts.rs_shift)
    Y = ops.requantize(t, consts.out_mult, consts.out_shift)
    return {"Y": Y, "ss": ss[:, 0], "v": v[:, 0], "rs": rs[:, 0]}


def rmsnorm_float(X, gamma, eps: float, in_scale: float, out_scale: float):
    """float64 RMSNorm in int8 output units (not rounded, not clipped)."""
    x = np.asarray(X, dtype=np.float64) * in_scale
    rms = np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)
    return x / rms * np.asarray(gamma, dtype=np.float64)[None, :] / out_scale
