"""Reference models of the decoder (``host/models/decoder.py``): float64 and bit-exact integer.

* :func:`float_forward` runs the float weights in float64 (RMSNorm, causal softmax attention,
  ReLU FFN, no quantization), the architecture the training script trains; the tests check it
  against torch's logits stored in the weight file.
* :func:`int_forward` is the integer model the chip runs, built from the kernels' integer
  references: ``reference.rmsnorm_int``, ``reference.matmul`` + ``vxm_ops.requantize`` (and
  ``VRELU``) for the matmul epilogue, ``reference.attention_int`` per head, and
  :func:`sat_add8` (the residual add, made of the chip's int8 elementwise ops). Every
  activation between these steps is int8; the logits are int32.

Both take a cache (:class:`KVCache`, :class:`FloatCache`) that holds ``K`` and ``V`` of every
layer (int8 in the integer model, all heads side by side: head ``h`` is columns
``h*head_dim ..``) and grows by one row per token: :func:`int_prefill` runs the prompt,
:func:`int_decode_step` one more token against the cache. Each row of every step depends only
on its own row and the cached rows before it, so prefill + N decode steps give exactly the
logits of :func:`int_forward` on the whole sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from openlpu import vxm_ops as ops
from openlpu.host.models.decoder import RMS_EPS, DecoderWeights, Tokenizer, argmax_token
from openlpu.verification.reference import attention_int, matmul, rmsnorm_int

__all__ = ["sat_add8", "KVCache", "FloatCache", "int_forward", "int_prefill",
           "int_decode_step", "int_generate", "float_forward", "float_generate",
           "SAT_ADD_OPS"]

# the residual add as the chip's int8 elementwise ops (compile_elementwise): the VXM's int8 ADD
# wraps around, so each operand is first clamped against the other's room in -128..127;
# "C127" and "CM128" are constant int8 tensors of 127 and -128
SAT_ADD_OPS = (
    ("r", "RELU", "b", None),        # r = max(b, 0)              0..127
    ("m", "SUB", "b", "r"),          # m = min(b, 0)           -128..0
    ("hi", "SUB", "C127", "r"),      # hi = 127 - max(b, 0)       0..127
    ("lo", "SUB", "CM128", "m"),     # lo = -128 - min(b, 0)   -128..0
    ("t", "MIN", "a", "hi"),
    ("t", "MAX", "t", "lo"),         # t in [-128 - min(b,0), 127 - max(b,0)]
    ("y", "ADD", "t", "b"),          # no wrap-around: y = saturate8(a + b)
)


def sat_add8(a, b) -> np.ndarray:
    """``saturate8(a + b)`` computed as :data:`SAT_ADD_OPS`, op by op with ``vxm_ops``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    env = {"a": a, "b": b, "C127": np.full_like(b, 127), "CM128": np.full_like(b, -128)}
    for dst, op, x, y in SAT_ADD_OPS:
        if y is None:
            env[dst] = ops.unary_op(op, env[x], 0)
        else:
            env[dst] = ops.binary_op(op, env[x], env[y], 0)
    return env["y"]


def _mm_rq(x, w, rq, relu=False):
    """Matmul with the requantize epilogue (``compile_matmul(requantize=rq, relu=relu)``)."""
    y = ops.requantize(matmul(x, w), *rq)
    return ops.unary_op("RELU", y, 0) if relu else y


@dataclass
class KVCache:
    """int8 ``K`` and ``V`` rows (positions x d_model) of every layer."""
    k: list = field(default_factory=list)
    v: list = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.k else self.k[0].shape[0]


FloatCache = KVCache     # the float model keeps float64 rows in the same structure


def _append(cache, i, k, v):
    if len(cache.k) <= i:
        cache.k.append(k)
        cache.v.append(v)
    else:
        cache.k[i] = np.concatenate([cache.k[i], k])
        cache.v[i] = np.concatenate([cache.v[i], v])
    return cache.k[i], cache.v[i]


def int_forward(w: DecoderWeights, tokens, cache: KVCache | None = None,
                trace: dict | None = None) -> np.ndarray:
    """int32 logits (n x vocab) of ``tokens`` at positions ``cache.length ..``.

    ``cache`` (default: a new, empty one) receives the rows of ``K`` and ``V``. ``trace``, when
    given, receives every int8 intermediate by name (``x0``, ``l0.n1``, ``l0.q`` ... ``nf``):
    what each chip kernel must produce.
    """
    cfg, c = w.cfg, w.int_consts()
    cache = KVCache() if cache is None else cache
    start = cache.length
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    x = w.embed(tokens, start)
    tr = trace if trace is not None else {}
    tr["x0"] = x
    dh = cfg.head_dim
    for i, lc in enumerate(c.layers):
        p = f"l{i}."
        h = rmsnorm_int(x, lc.norm1)["Y"]
        q = _mm_rq(h, w.q[p + "wq"], lc.rq_q)
        k = _mm_rq(h, w.q[p + "wk"], lc.rq_k)
        v = _mm_rq(h, w.q[p + "wv"], lc.rq_v)
        K, V = _append(cache, i, k, v)
        o = np.concatenate([
            attention_int(q[:, s], K[:, s], V[:, s], lc.attn, causal=True)["O"]
            for s in (slice(hd * dh, (hd + 1) * dh) for hd in range(cfg.n_heads))], axis=1)
        a = _mm_rq(o, w.q[p + "wo"], lc.rq_o)
        x1 = sat_add8(x, a)
        h2 = rmsnorm_int(x1, lc.norm2)["Y"]
        u = _mm_rq(h2, w.q[p + "w1"], lc.rq_ff1, relu=True)
        f = _mm_rq(u, w.q[p + "w2"], lc.rq_ff2)
        x = sat_add8(x1, f)
        tr.update({p + "n1": h, p + "q": q, p + "k": k, p + "v": v, p + "o": o, p + "a": a,
                   p + "x1": x1, p + "n2": h2, p + "u": u, p + "f": f, p + "x2": x})
    hf = rmsnorm_int(x, c.norm_f)["Y"]
    tr["nf"] = hf
    return ops.wrap(matmul(hf, w.q["wout"]), 2)


def int_prefill(w: DecoderWeights, prompt) -> tuple:
    """``(logits, cache)``: the prompt's int32 logits and its K/V cache."""
    cache = KVCache()
    return int_forward(w, prompt, cache), cache


def int_decode_step(w: DecoderWeights, token: int, cache: KVCache) -> np.ndarray:
    """int32 logits (vocab) of one token at position ``cache.length``; the cache grows by one
    row per layer."""
    return int_forward(w, [token], cache)[0]


def _generate(first, step, prompt, max_new, stop):
    logits, cache = first(prompt)
    out, chosen_from = [], []
    last = logits[-1]
    while True:
        t = argmax_token(last)
        out.append(t)
        chosen_from.append(last)
        if len(out) == max_new or (stop and t == Tokenizer.EOS):
            return out, np.array(chosen_from)
        last = step(t, cache)


def int_generate(w: DecoderWeights, prompt, max_new: int, stop: bool = True) -> tuple:
    """Greedy generation with the integer model (prefill, then one decode step per token;
    argmax of the int32 logits on the host). Returns ``(tokens, logits)``: the generated
    tokens (up to and including ``$`` when ``stop``) and the int32 logits each was chosen
    from."""
    if max_new < 1:
        raise ValueError(f"max_new must be at least 1, not {max_new}")
    return _generate(lambda p: int_prefill(w, p), lambda t, c: int_decode_step(w, t, c),
                     prompt, max_new, stop)


# -- float64 model -------------------------------------------------------------------------
def _rms(x, g):
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + RMS_EPS) * g


def float_forward(w: DecoderWeights, tokens, cache: FloatCache | None = None) -> np.ndarray:
    """float64 logits (n x vocab) of ``tokens`` at positions ``cache.length ..``."""
    cfg, F = w.cfg, w.float
    if "wout" not in F:
        raise ValueError("the float model needs the float weights (load_weights with a "
                         "float_path)")
    cache = FloatCache() if cache is None else cache
    start = cache.length
    x = w.embed_float(tokens, start)
    n, dh = x.shape[0], cfg.head_dim
    for i in range(cfg.n_layers):
        p = f"l{i}."
        h = _rms(x, F[p + "g1"])
        q, k, v = h @ F[p + "wq"], h @ F[p + "wk"], h @ F[p + "wv"]
        K, V = _append(cache, i, k, v)
        lk = K.shape[0]
        valid = np.arange(lk)[None, :] <= np.arange(n)[:, None] + lk - n
        heads = []
        for hd in range(cfg.n_heads):
            s_ = slice(hd * dh, (hd + 1) * dh)
            s = np.where(valid, q[:, s_] @ K[:, s_].T / math.sqrt(dh), -np.inf)
            e = np.exp(s - s.max(axis=1, keepdims=True))
            heads.append((e / e.sum(axis=1, keepdims=True)) @ V[:, s_])
        x = x + np.concatenate(heads, axis=1) @ F[p + "wo"]
        u = np.maximum(_rms(x, F[p + "g2"]) @ F[p + "w1"], 0)
        x = x + u @ F[p + "w2"]
    return _rms(x, F["gf"]) @ F["wout"]


def float_generate(w: DecoderWeights, prompt, max_new: int, stop: bool = True) -> tuple:
    """Greedy generation with the float model (with its own K/V cache): ``(tokens, logits)``."""
    if max_new < 1:
        raise ValueError(f"max_new must be at least 1, not {max_new}")

    def first(p):
        c = FloatCache()
        return float_forward(w, p, c), c

    return _generate(first, lambda t, c: float_forward(w, [t], c)[0], prompt, max_new, stop)
