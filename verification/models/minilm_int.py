"""The integer reference of all-MiniLM-L6-v2's encoder: the bits the chip computes.

Every op is a small named function over int64 numpy arrays, written with the VXM semantics of
:mod:`openlpu.vxm_ops` (saturation, round half up) and int8 x int8 -> int32 matmuls (the MXM), in
the order the chip performs it, with the parameters of
:class:`openlpu.host.models.minilm_quant.MiniLMQuant`; the compiler's kernels are checked against
these functions one by one, and the whole encoder against the float model
(``minilm_float.py``) by the cosine of the sentence embeddings.

Rounding everywhere is round half up: ``VREQ`` (:func:`openlpu.vxm_ops.requantize`) for int8
results, ``MULSHR`` (:func:`openlpu.vxm_ops.binary_op`) for int16 / int32 ones.

Per layer, for one sequence of ``L`` tokens (rows) and a 0/1 key mask:

1. ``q, k, v = linear_int(x8, ...)`` (int8, one scale per head);
2. per head ``ctx_h = attention_head_int(q_h, k_h, v_h, consts_h, mask)`` (int8): the chip's
   attention algorithm (:func:`openlpu.verification.reference.attention_int`) with padding keys
   set to ``MASKED_S`` before the row maximum, as the kernel masks causal keys;
3. ``a = linear_int(ctx, o)`` (int32, residual units); ``r1 = residual_int(a, x16, res1_x)``
   (int16); ``ln1 = layer_norm_int(r1, ...)`` (int8 and int16 outputs);
4. ``f = linear_int(ln1_8, ff1)`` (int16); ``g = gelu_int(f, ...)`` (int8; ReLU minus a
   correction read from a table by ``GATHER``);
   ``b = linear_int(g, ff2)`` (int32); ``r2 = residual_int(b, ln1_16, res2_x)``;
   ``out = layer_norm_int(r2, ...)``: the next layer's ``x8``, ``x16``.
"""

from __future__ import annotations

import numpy as np

from openlpu import vxm_ops as ops
from openlpu.firmware.attention import E8_ROUND, L_SHIFT, MASKED_S, R_SHIFT
from openlpu.host.models.minilm import MiniLM, l2_normalize, mean_pool
from openlpu.host.models.minilm_quant import (AttentionQuant, GeluQuant, LayerNormQuant,
                                              LayerQuant, LinearQuant, MiniLMQuant, Rescale,
                                              dequantize_output, quantize_input)
from openlpu.verification.reference import low_byte_signed

__all__ = ["mxm", "rescale", "byte_planes", "linear_int", "attention_head_int",
           "attention_int_heads",
           "layer_norm_int", "gelu_int", "residual_int", "encoder_layer_int", "encoder_int",
           "embed_sentences_int"]


def rescale(x, rq: Rescale):
    """:class:`Rescale` of int32 lanes: ``VREQ`` for int8; ``MULSHR`` (int32) for int32, then
    a saturating cast for int16."""
    x = np.asarray(x, dtype=np.int64)
    if rq.dtype == 0:
        return ops.requantize(x, rq.mult, rq.shift - 31)
    y = ops.binary_op("MULSHR", x, rq.mult, 2, rq.shift)
    return ops.cast(y, 1) if rq.dtype == 1 else y


def mxm(a, b):
    """int8 x int8 -> int32 matrix product (the MXM), exact: evaluated in float64, whose 53-bit
    mantissa holds every such sum of up to 2**37 products (much faster than int64 numpy)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size and b.size and (max(np.abs(a).max(), np.abs(b).max()) > 128):
        raise ValueError("mxm operands must be int8 values")
    return ops.wrap(np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64), 2)


def byte_planes(x):
    """``(hi, lo)`` int8 planes of int16 ``x``: ``hi = x >> 8`` (``VSRA``), ``lo = (x & 0xFF) -
    128`` (the low byte with ``VXOR 0x80``), so ``x = 256 hi + lo + 128``."""
    x = np.asarray(x, dtype=np.int64)
    return x >> 8, (x & 0xFF) - 128


def linear_int(x, lq: LinearQuant):
    """``out(x @ weight + bias)``: int8 ``x`` (rows, in) -> MXM int32 accumulator, ``VADD``
    of the bias vector (int32), :func:`rescale` per output channel. An int16 ``x``
    (``lq.in_dtype`` 1) takes two MXM passes over its :func:`byte_planes`, combined as
    ``VADD(VSHL(hi @ w, 8 - wide_shift), MULSHR(lo @ w + lo_bias, 1, wide_shift))``."""
    x = np.asarray(x, dtype=np.int64)
    w = lq.weight.astype(np.int64)
    if lq.in_dtype == 1:
        hi, lo = byte_planes(x)
        a_hi = ops.binary_op("SHL", mxm(hi, w), 8 - lq.wide_shift, 2)
        a_lo = ops.binary_op("ADD", mxm(lo, w), lq.lo_bias[None, :], 2)
        acc = ops.binary_op("ADD", a_hi, ops.binary_op("MULSHR", a_lo, 1, 2, lq.wide_shift), 2)
    else:
        acc = mxm(x, w)
    acc = ops.binary_op("ADD", acc, lq.bias[None, :], 2)
    return rescale(acc, lq.out)


def attention_head_int(Q, K, V, consts, key_mask) -> dict:
    """One head (int8 ``Q``, ``K``, ``V`` of shape (L, head_dim)) with a padding mask over the
    keys (``key_mask``: 1 real, 0 padding): :func:`openlpu.verification.reference.attention_int`
    step by step, with ``valid[i, j] = key_mask[j]`` in place of the causal mask. Returns the
    same dict (``O`` int8 in V's unit, ``P``, ``e8``, ``E``, ``lo``, ``l``, ``r``, ``S``)."""
    Q, K, V = (np.asarray(x, dtype=np.int64) for x in (Q, K, V))
    S = mxm(Q, K.T)
    valid = np.broadcast_to(np.asarray(key_mask).astype(bool)[None, :], S.shape)
    Sm = np.where(valid, S, MASKED_S)
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
    o_acc = mxm(e8, V)
    O = ops.requantize(o_acc, rq, 0)
    return {"O": O, "P": e8 * rq / 2.0 ** 31, "e8": e8, "E": E, "lo": lo, "l": L[:, 0],
            "r": rq[:, 0], "S": S}


def attention_int_heads(q, k, v, aq: AttentionQuant, key_mask):
    """All heads: int8 (L, heads * head_dim) in, context int8 (L, heads * head_dim) out (head
    ``h`` in columns ``h*head_dim ..``, unit ``aq.v_scale[h]``)."""
    hd = aq.head_dim
    out = [attention_head_int(q[:, h * hd:(h + 1) * hd], k[:, h * hd:(h + 1) * hd],
                              v[:, h * hd:(h + 1) * hd], aq.consts[h], key_mask)["O"]
           for h in range(aq.heads)]
    return np.concatenate(out, axis=1)


def layer_norm_int(r, ln: LayerNormQuant) -> dict:
    """LayerNorm of int16 rows ``r`` (L, n) as VXM ops (see :class:`LayerNormQuant`):

    ``s = sum r`` (``VADD`` reduction, int32); ``mu = MULSHR(s, mean_mult, mean_shift)``;
    ``d = VSUB(r, mu)``; ``ss = sum MULSHR(d, d, sq_shift)``, ``ss_fine = sum VMUL(d, d)``;
    ``v = VADD(MULSHR(ss, ms_mult, ms_shift), eps_q)`` and ``v_fine`` likewise;
    ``rs = VSEL(VCMP lt(ss, small_ss), MULSHR(VRSQRT(v_fine), 2**k, 0), VRSQRT(v))``
    (:func:`openlpu.vxm_ops.fx_rsqrt`); ``t = MULSHR(d, rs, rs_shift)``;
    ``u = VADD(MULSHR(t, gamma_q, gamma_shift), beta_q)``; ``y8 = VREQ(u, ...)``,
    ``y16 = cast16(MULSHR(u, ...))``. Returns ``y8``, ``y16`` and the intermediates.
    """
    r = np.asarray(r, dtype=np.int64)
    if r.shape[-1] != ln.n:
        raise ValueError(f"LayerNorm over {ln.n} channels, input has {r.shape[-1]}")
    s = ops.wrap(r.sum(axis=-1, keepdims=True), 2)
    mu = ops.binary_op("MULSHR", s, ln.mean_mult, 2, ln.mean_shift)
    d = ops.binary_op("SUB", r, mu, 2)
    ss = ops.wrap(ops.binary_op("MULSHR", d, d, 2, ln.sq_shift).sum(axis=-1, keepdims=True), 2)
    ss_f = ops.wrap(ops.binary_op("MUL", d, d, 2).sum(axis=-1, keepdims=True), 2)
    v = ops.binary_op("ADD", ops.binary_op("MULSHR", ss, ln.ms_mult, 2, ln.ms_shift),
                      ln.eps_q, 2)
    v_f = ops.binary_op("ADD", ops.binary_op("MULSHR", ss_f, ln.ms_mult_fine, 2,
                                             ln.ms_shift_fine), ln.eps_q_fine, 2)
    rs_f = ops.binary_op("MULSHR", ops.fx_rsqrt(v_f), 1 << (ln.v_shift_fine - ln.v_shift), 2, 0)
    fine = ops.compare(2, ss, ln.small_ss)                 # lt: -1 where the fine range holds
    rs = ops.select(fine, rs_f, ops.fx_rsqrt(v))
    t = ops.binary_op("MULSHR", d, rs, 2, ln.rs_shift)
    u = ops.binary_op("ADD", ops.binary_op("MULSHR", t, ln.gamma_q, 2, ln.gamma_shift),
                      ln.beta_q, 2)
    return {"y8": rescale(u, ln.out8), "y16": rescale(u, ln.out16), "u": u, "t": t,
            "rs": rs[..., 0], "v": v[..., 0], "v_fine": v_f[..., 0], "fine": fine[..., 0] != 0,
            "mu": mu[..., 0], "d": d}


def gelu_int(x, gq: GeluQuant):
    """int16 -> int8 GELU (see :class:`~openlpu.host.models.minilm_quant.GeluQuant`):
    ``idx = VMIN(MULSHR(VABS(x)), 255)``; ``cq = table[idx]`` (``GATHER``);
    ``g = VSUB(VRELU(x), MULSHR(cq))``; ``VREQ(g)`` per channel."""
    x = np.asarray(x, dtype=np.int64)
    idx = ops.binary_op("MIN", rescale(ops.unary_op("ABS", x, 2), gq.idx), 255, 2)
    cq = gq.table[idx & 0xFF]
    g = ops.binary_op("SUB", ops.unary_op("RELU", x, 2), rescale(cq, gq.c_to_x), 2)
    return rescale(g, gq.out)


def residual_int(a, x, rq: Rescale):
    """``cast16(VADD(a, rescale(x)))``: the int32 branch ``a`` (already in residual units) plus
    the skip input ``x`` (int16) brought to the same unit, saturated to int16."""
    return ops.cast(ops.binary_op("ADD", a, rescale(x, rq), 2), 1)


def encoder_layer_int(x8, x16, key_mask, lq: LayerQuant, trace: dict | None = None):
    """One layer on one sequence: ``(y8, y16)`` from ``(x8, x16)`` (L, hidden)."""
    xin = x16 if lq.q.in_dtype == 1 else x8
    q = linear_int(xin, lq.q)
    k = linear_int(xin, lq.k)
    v = linear_int(xin, lq.v)
    ctx = attention_int_heads(q, k, v, lq.attn, key_mask)
    r1 = residual_int(linear_int(ctx, lq.o), x16, lq.res1_x)
    ln1 = layer_norm_int(r1, lq.ln1)
    f = linear_int(ln1["y16"] if lq.ff1.in_dtype == 1 else ln1["y8"], lq.ff1)
    g = gelu_int(f, lq.gelu)
    r2 = residual_int(linear_int(g, lq.ff2), ln1["y16"], lq.res2_x)
    out = layer_norm_int(r2, lq.ln2)
    if trace is not None:
        trace.update(q=q, k=k, v=v, ctx=ctx, res1=r1, ln1=ln1["y8"], ln1_16=ln1["y16"], ff1=f,
                     gelu=g, res2=r2, out=out["y8"], out16=out["y16"])
    return out["y8"], out["y16"]


def encoder_int(q: MiniLMQuant, x8, x16, mask, traces: list | None = None):
    """The last layer's int16 output (n, L, hidden) from int8 / int16 inputs (n, L, hidden)
    and the 0/1 mask (n, L). ``traces`` receives per sequence a list of per-layer dicts."""
    x8, x16, mask = (np.asarray(a, dtype=np.int64) for a in (x8, x16, mask))
    if x8.shape != x16.shape or x8.shape[:2] != mask.shape or x8.shape[2] != q.hidden:
        raise ValueError(f"encoder_int: x8 {x8.shape}, x16 {x16.shape}, mask {mask.shape} "
                         f"do not match (n, L, {q.hidden}) and (n, L)")
    out = np.zeros_like(x16)
    for b in range(x8.shape[0]):
        a8, a16 = x8[b], x16[b]
        tr = [] if traces is not None else None
        for lq in q.layers:
            t = {} if tr is not None else None
            a8, a16 = encoder_layer_int(a8, a16, mask[b], lq, t)
            if tr is not None:
                tr.append(t)
        out[b] = a16
        if traces is not None:
            traces.append(tr)
    return out


def embed_sentences_int(model: MiniLM, q: MiniLMQuant, sentences, length: int | None = None):
    """Sentence embeddings through the integer encoder: host tokenization, embeddings and
    their LayerNorm (float), :func:`quantize_input`, :func:`encoder_int`,
    :func:`dequantize_output`, masked mean pooling and L2 normalisation (host, float)."""
    ids, mask = model.tokenize(sentences, length)
    x8, x16 = quantize_input(q, model.embed(ids))
    h = dequantize_output(q, encoder_int(q, x8, x16, mask))
    return l2_normalize(mean_pool(h, mask))
