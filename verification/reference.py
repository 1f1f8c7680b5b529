"""numpy reference implementations of the integer algorithms the kernels run.

Each function computes, with :mod:`openlpu.vxm_ops`, exactly the bits the corresponding kernel
produces on the chip, step by step in the same order; kernel tests compare the chip against these
bit-exactly, and against float64 versions within documented tolerances.
"""

from __future__ import annotations

import numpy as np

from openlpu import vxm_ops as ops

__all__ = ["matmul", "softmax_q16", "attention_int", "attention_float", "MASKED_Q16",
           "P_SCALE"]

MASKED_Q16 = -(1 << 30)     # score given to masked positions (exp of it is exactly 0)
P_SCALE = 127               # probabilities are quantised to int8 as round(p * 127)


def matmul(A, B):
    return np.asarray(A, dtype=np.int64) @ np.asarray(B, dtype=np.int64)


def softmax_q16(z, valid=None):
    """Row softmax of Q16.16 scores ``z`` (int, shape (rows, n)); ``valid`` masks columns.

    Steps: max over valid lanes, subtract, fx_exp, sum, fx_recip, multiply (rounded >> 16).
    Returns Q16.16 probabilities (int64 array).
    """
    z = np.asarray(z, dtype=np.int64)
    if valid is None:
        valid = np.ones(z.shape, dtype=bool)
    z = np.where(valid, z, MASKED_Q16)
    m = z.max(axis=1, keepdims=True)
    x = ops.binary_op("SUB", z, m, 2)
    e = ops.fx_exp(x)
    s = ops.wrap(e.sum(axis=1, keepdims=True), 2)
    r = ops.fx_recip(s)
    return ops.binary_op("MULSHR", e, r, 2, 16)


def attention_int(Q, K, V, score_mult: int, score_shift: int, causal: bool = False):
    """One head: ``softmax(Q K^T * scale + mask) V`` in the chip's integer algorithm.

    Scores ``S = Q K^T`` (int32) become Q16.16 as ``MULSHR(S, score_mult, score_shift)``;
    probabilities are quantised to int8 ``round(p * 127 / 2**16)`` and ``O = P8 V`` (int32).
    Returns ``(O, P_q16)``.
    """
    Q, K, V = (np.asarray(x, dtype=np.int64) for x in (Q, K, V))
    S = Q @ K.T
    z = ops.binary_op("MULSHR", S, score_mult, 2, score_shift)
    lq, lk = S.shape
    valid = np.ones((lq, lk), dtype=bool)
    if causal:
        offset = lk - lq
        valid = np.arange(lk)[None, :] <= (np.arange(lq)[:, None] + offset)
    p = softmax_q16(z, valid)
    p8 = ops.binary_op("MULSHR", p, P_SCALE, 2, 16)
    return p8 @ V, p


def attention_float(Q, K, V, scale: float, causal: bool = False):
    """float64 attention on the same (dequantised-by-the-caller) inputs: ``(O, P)``."""
    Q, K, V = (np.asarray(x, dtype=np.float64) for x in (Q, K, V))
    s = (Q @ K.T) * scale
    lq, lk = s.shape
    if causal:
        mask = np.arange(lk)[None, :] > (np.arange(lq)[:, None] + lk - lq)
        s = np.where(mask, -np.inf, s)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    p = e / e.sum(axis=1, keepdims=True)
    return p @ V, p
