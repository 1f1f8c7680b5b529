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
           "attention_float", "MASKED_S", "E8_SHIFT"]

MASKED_S = -(1 << 24)   # score (Q.K units) of a masked position: below any int8 dot product
E8_SHIFT = 8            # e8 = round(256 * exp(x)) (VEXP imm 8): below 0.5, so an int8


def matmul(A, B):
    return np.asarray(A, dtype=np.int64) @ np.asarray(B, dtype=np.int64)


@dataclass(frozen=True)
class AttentionConsts:
    """Integer constants of the attention algorithm for one score scale.

    ``mult / 2**shift`` converts a dot product ``Q.K`` into Q16.16 scaled scores;
    ``delta`` (Q.K units) is added to the row maximum so that every exponential is below 0.5
    and rounds to an int8 (``e8 = round(e / 256)`` <= 127).
    """
    mult: int
    shift: int
    delta: int


def _exp_half_bound() -> int:
    """Smallest Q16.16 ``d`` with ``fx_exp(z, E8_SHIFT) <= 127`` for every ``z <= -d``."""
    z = -np.arange(0, 200000, dtype=np.int64)
    e8 = ops.fx_exp(z, E8_SHIFT)
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
    return AttentionConsts(mult, shift, delta)


def causal_valid(lq: int, lk: int, causal: bool) -> np.ndarray:
    """Boolean (lq, lk): key j is visible to query i (``j <= i + lk - lq`` when causal)."""
    if not causal:
        return np.ones((lq, lk), dtype=bool)
    return np.arange(lk)[None, :] <= (np.arange(lq)[:, None] + lk - lq)


def attention_int(Q, K, V, consts: AttentionConsts, causal: bool = False) -> dict:
    """One head, the chip's integer algorithm (``firmware/attention.py``), step by step.

    1. ``S = Q K^T`` (int32); masked positions become ``MASKED_S``; ``m = max_j S``.
    2. ``x = MULSHR(S - (m + delta), mult, shift)`` (Q16.16, <= -0.69 on the maximum);
       ``e8 = fx_exp(x, 8)`` (``VEXP`` with imm 8: round(256 exp(x)), 0..127; 0 on masked keys
       unless a query sees no key at all).
    3. ``l = sum_j e8``, ``r = fx_recip(l)`` (= 2**32 / l); ``O_acc = e8 @ V`` (int32);
       ``O = saturate8(round(O_acc * r / 2**32))`` (``VREQ`` with shift 1).

    Returns a dict with ``O`` (int8 output), ``P`` (the probabilities ``e8 / l`` the algorithm
    applies, float64), ``e8``, ``l``, ``r`` and ``S``.
    """
    Q, K, V = (np.asarray(x, dtype=np.int64) for x in (Q, K, V))
    S = Q @ K.T
    lq, lk = S.shape
    Sm = np.where(causal_valid(lq, lk, causal), S, MASKED_S)
    m = Sm.max(axis=1, keepdims=True)
    c = ops.wrap(m + consts.delta, 2)
    x = ops.binary_op("MULSHR", ops.wrap(Sm - c, 2), consts.mult, 2, consts.shift)
    e8 = ops.fx_exp(x, E8_SHIFT)
    l = ops.wrap(e8.sum(axis=1, keepdims=True), 2)
    r = ops.fx_recip(l)
    o_acc = ops.wrap(e8 @ V, 2)
    O = ops.requantize(o_acc, r, 1)
    return {"O": O, "P": e8 / l, "e8": e8, "l": l[:, 0], "r": r[:, 0], "S": S}


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
