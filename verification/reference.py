"""numpy reference implementations of the integer algorithms the kernels run.

Each function computes, with :mod:`openlpu.vxm_ops`, exactly the bits the corresponding kernel
produces on the chip, step by step in the same order; kernel tests compare the chip against these
bit-exactly, and against float64 versions within documented tolerances.
"""

from __future__ import annotations

import numpy as np

from openlpu import vxm_ops as ops
# the kernels' compile-time constants are defined next to the kernels; the integer algorithms
# below use the same constants, so chip and reference compute with identical numbers
from openlpu.firmware.attention import (E8_ROUND, L_SHIFT, MASKED_S, R_SHIFT,
                                        AttentionConsts, attention_consts)
from openlpu.firmware.norm import (SOFTMAX_ONE, RmsNormConsts, SoftmaxConsts,
                                   rmsnorm_consts, softmax_consts)
from openlpu.firmware.vxmconst import q31_normalise

__all__ = ["matmul", "AttentionConsts", "attention_consts", "causal_valid", "attention_int",
           "attention_float", "MASKED_S", "E8_ROUND", "L_SHIFT", "R_SHIFT", "low_byte_signed"]


def matmul(A, B):
    return np.asarray(A, dtype=np.int64) @ np.asarray(B, dtype=np.int64)


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
