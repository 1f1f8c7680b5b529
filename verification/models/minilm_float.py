"""float32 numpy implementation of the all-MiniLM-L6-v2 encoder (the six BERT layers).

From the embedding output (``MiniLM.embed``, after its LayerNorm) to the last hidden state, the
same computation as the ONNX graph of ``host/models/minilm_onnx.py`` and as the published
PyTorch model: per layer ``a = LN(x + Wo · MHA(x))``, ``x' = LN(a + W2 · gelu(W1 · a))``, GELU in
its erf form, scores ``Q K^T / sqrt(head_dim)`` plus an additive padding mask (``mask_bias``:
0 on real keys, a large negative value on padding keys).
"""

from __future__ import annotations

import math

import numpy as np

from openlpu.host.models.minilm import MASK_NEG, MiniLM, l2_normalize, layer_norm, mean_pool
from openlpu.host.models.minilm import attention_bias as mask_bias

__all__ = ["MASK_NEG", "mask_bias", "erf", "gelu", "softmax", "encoder_layer", "encoder",
           "embed_sentences"]

def erf(x) -> np.ndarray:
    """float64 erf (Abramowitz and Stegun 7.1.26: absolute error below 1.5e-7, under float32's
    resolution of GELU's values; vectorised, unlike ``math.erf``)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429)))) * np.exp(-a * a)
    return np.sign(x) * y


def gelu(x) -> np.ndarray:
    """``x * (1 + erf(x / sqrt 2)) / 2`` (float32 out; erf evaluated in float64)."""
    x = np.asarray(x, dtype=np.float32)
    return (x * 0.5 * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)


def softmax(s, axis=-1) -> np.ndarray:
    s = s - s.max(axis=axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=axis, keepdims=True)


def _linear(x, w, b):
    return (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0]) + b


def encoder_layer(x, bias, W: dict, heads: int, eps: float, trace: dict | None = None):
    """One layer on float32 ``x`` (n, L, d) with the additive ``bias`` (n, 1, 1, L).

    ``trace`` (optional dict) receives the intermediate tensors by name (used to calibrate the
    integer quantization): ``x q k v ctx attn res1 ln1 ff1 gelu ff2 res2 out``.
    """
    n, L, d = x.shape
    hd = d // heads

    def split(t):
        return t.reshape(n, L, heads, hd).transpose(0, 2, 1, 3)

    q = _linear(x, W["attention.self.query.weight"], W["attention.self.query.bias"])
    k = _linear(x, W["attention.self.key.weight"], W["attention.self.key.bias"])
    v = _linear(x, W["attention.self.value.weight"], W["attention.self.value.bias"])
    s = split(q) @ split(k).transpose(0, 1, 3, 2) / np.float32(math.sqrt(hd)) + bias
    ctx = (softmax(s) @ split(v)).transpose(0, 2, 1, 3).reshape(n, L, d)
    attn = _linear(ctx, W["attention.output.dense.weight"], W["attention.output.dense.bias"])
    res1 = attn + x
    ln1 = layer_norm(res1, W["attention.output.LayerNorm.weight"],
                     W["attention.output.LayerNorm.bias"], eps)
    ff1 = _linear(ln1, W["intermediate.dense.weight"], W["intermediate.dense.bias"])
    g = gelu(ff1)
    ff2 = _linear(g, W["output.dense.weight"], W["output.dense.bias"])
    res2 = ff2 + ln1
    out = layer_norm(res2, W["output.LayerNorm.weight"], W["output.LayerNorm.bias"], eps)
    if trace is not None:
        trace.update(x=x, q=q, k=k, v=v, ctx=ctx, attn=attn, res1=res1, ln1=ln1, ff1=ff1,
                     gelu=g, ff2=ff2, res2=res2, out=out)
    return out.astype(np.float32)


def encoder(model: MiniLM, hidden, mask, traces: list | None = None) -> np.ndarray:
    """The last hidden state (float32 ``(n, L, d)``) from the embedding output ``hidden``.

    ``traces`` (optional list) receives one dict of intermediates per layer.
    """
    x = np.asarray(hidden, dtype=np.float32)
    bias = mask_bias(mask)
    c = model.config
    for i in range(c.layers):
        t = {} if traces is not None else None
        x = encoder_layer(x, bias, model.layer(i), c.heads, c.eps, t)
        if traces is not None:
            traces.append(t)
    return x


def embed_sentences(model: MiniLM, sentences, length: int | None = None) -> np.ndarray:
    """float32 sentence embeddings (n, d): tokenize, embed, encoder, mean pool, L2 normalise."""
    ids, mask = model.tokenize(sentences, length)
    h = encoder(model, model.embed(ids), mask)
    return l2_normalize(mean_pool(h, mask))
