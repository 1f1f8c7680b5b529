"""Transformer blocks built with the graph API (:mod:`openlpu.firmware.graph`), with seeded
data: the MLP block of a MiniLM layer and a multi-head attention block with a padding mask.
Used by tests/firmware/test_graph_blocks.py and benchmarks/graph_blocks.py."""

import numpy as np

from openlpu.firmware.graph import Graph

__all__ = ["mlp_block", "attention_block", "M", "D", "F", "SX", "L", "DM", "HEADS"]

M, D, F = 8, 64, 128        # tokens, model width, FFN width
SX = 0.05                   # the block input's int8 unit (its int16 copy: SX / 64)


def mlp_block(seed=0, edge=False, shape=(M, D, F)):
    """``y = residual(fc2(gelu(fc1(x8))), x16)`` for ``shape`` = (tokens, width, FFN width);
    returns (graph, inputs). With ``edge`` the inputs hold the int8 / int16 extremes and the
    biases the values that drive fc1 into int16 saturation. MiniLM's FFN is
    ``shape=(L, 384, 1536)``."""
    M, D, F = shape
    rng = np.random.default_rng(seed)
    X8 = rng.integers(-128, 128, (M, D))
    W1, W2 = rng.integers(-128, 128, (D, F)), rng.integers(-128, 128, (F, D))
    b1, b2 = rng.integers(-20000, 20000, F), rng.integers(-20000, 20000, D)
    if edge:
        X8[0], X8[1], X8[2, ::2] = 127, -128, 0
        W1[:, 0], W1[:, 1] = 127, -128
        b1[2], b1[3] = 2 ** 31 - 1 - 128 * 128 * D, -(2 ** 31) + 128 * 128 * D
    X16 = np.clip(X8 * 64 + rng.integers(-32, 32, (M, D)), -(1 << 15), (1 << 15) - 1)
    if edge:
        X16[3], X16[4] = (1 << 15) - 1, -(1 << 15)
    g = Graph("mlp_block")
    x8 = g.input("x8", (M, D), scale=SX)
    x16 = g.input("x16", (M, D), "int16", scale=SX / 64)
    s1 = SX * 0.01
    s_h = float(s1 * np.percentile(np.abs(X8 @ W1), 99) / 20000)
    h = g.linear(x8, g.const("W1", W1, scale=0.01), g.const("b1", b1, "int32"),
                 out_scale=s_h, out_dtype="int16", name="fc1")
    s_g = s_h * 20000 / 100
    a = g.gelu(h, out_scale=s_g, name="gelu")
    s2 = s_g * 0.01
    y = g.linear(a, g.const("W2", W2, scale=0.01), g.const("b2", b2, "int32"),
                 out_scale=s2 * 40, out_dtype="int32", name="fc2")
    g.output(g.residual(y, x16, name="res"), "y")
    return g, {"x8": X8, "x16": X16}


L, DM, HEADS = 64, 128, 2   # tokens (one VL on base), model width, heads of dimension 64


def attention_block(seed=0, causal=False, pad=16, edge=False):
    """``o = attention(x Wq, x Wk, x Wv; heads=2, key padding mask)``: the three projections
    (int8, requantized) and the multi-head attention with the last ``pad`` keys masked, heads
    split and merged by columns; returns (graph, inputs)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-128, 128, (L, DM))
    if edge:
        X[0], X[1] = 127, -128
    g = Graph("attention_block")
    x = g.input("x", (L, DM), scale=SX)
    qkv = []
    for n, spread in (("q", 40), ("k", 40), ("v", 50)):
        W = rng.integers(-128, 128, (DM, DM))
        s = float(SX * 0.01 * (X @ W).std() / spread)
        qkv.append(g.linear(x, g.const(f"W{n}", W, scale=0.01), out_scale=s, name=n))
    mask = None if causal else np.array([1] * (L - pad) + [0] * pad)
    g.output(g.attention(*qkv, heads=HEADS, causal=causal, key_mask=mask, name="attn"), "o")
    return g, {"x": X}
