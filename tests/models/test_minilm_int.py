"""all-MiniLM-L6-v2 integer reference: each integer op against its float definition (and the
chip's existing attention algorithm), padding invariance, and the whole encoder's accuracy
against float (cosine >= 0.99 per sentence, pair ranking kept)."""

import json
import math

import numpy as np
import pytest

from openlpu import vxm_ops as ops
from openlpu.firmware.attention import attention_consts
from openlpu.host.models import minilm, minilm_quant as mq
from openlpu.verification import reference
from openlpu.verification.models import minilm_float as mf, minilm_int as mi

RNG = np.random.default_rng(7)


def test_attention_head_equals_chip_algorithm():
    Q, K, V = (RNG.integers(-128, 128, (20, 32)) for _ in range(3))
    consts = attention_consts(0.02 * 0.03 / math.sqrt(32))
    ref = reference.attention_int(Q, K, V, consts)
    got = mi.attention_head_int(Q, K, V, consts, np.ones(20, dtype=int))
    for key in ("O", "e8", "E", "l", "r"):
        assert (got[key] == ref[key]).all(), key


def test_attention_padding_keys_vanish_exactly():
    Q, K, V = (RNG.integers(-128, 128, (24, 32)) for _ in range(3))
    consts = attention_consts(0.05 * 0.05 / math.sqrt(32))
    n = 15
    mask = np.r_[np.ones(n, dtype=int), np.zeros(24 - n, dtype=int)]
    got = mi.attention_head_int(Q, K, V, consts, mask)
    ref = reference.attention_int(Q, K[:n], V[:n], consts)
    assert (got["O"] == ref["O"]).all() and (got["e8"][:, n:] == 0).all()
    # and against float attention over the real keys (probabilities within 1/128)
    _, p = reference.attention_float(Q, K[:n], V[:n], 0.05 * 0.05 / math.sqrt(32))
    assert np.abs(got["P"][:, :n] - p).max() < 1 / 100


def test_make_rescale_matches_real_ratio():
    x = RNG.integers(-2 ** 24, 2 ** 24, 1000)
    for ratio, dtype in ((3.7e-4, 0), (0.013, 1), (1.9, 2), (np.array([1e-3, 5e-3]), 0)):
        rq = mq.make_rescale(ratio, dtype, "test")
        y = mi.rescale(x[:, None] if np.ndim(ratio) else x, rq)
        want = np.clip((x[:, None] if np.ndim(ratio) else x) * ratio,
                       -2 ** (8 * ops.DTYPE_BYTES[dtype] - 1),
                       2 ** (8 * ops.DTYPE_BYTES[dtype] - 1) - 1)
        assert np.abs(y - want).max() <= 0.5 + np.abs(want).max() * 2.0 ** -29
    with pytest.raises(ValueError, match="too large for a int8 rescale"):
        mq.make_rescale(2.0, 0, "big")
    with pytest.raises(ValueError, match="positive and finite"):
        mq.make_rescale(0.0, 2, "zero")


@pytest.mark.parametrize("n_in", [384, 1536])
def test_wide_linear_is_the_int16_product(n_in):
    w = RNG.normal(0, 0.05, (64, n_in))
    lq = mq.quantize_linear(w, np.zeros(64), 1e-3, 1.0, 2, "test", in_dtype=1)
    assert lq.wide_shift == (0 if n_in == 384 else 2)
    x = RNG.integers(-32768, 32768, (5, n_in))
    x[0] = 32767                                            # the extremes stay within int32
    x[1] = -32768
    acc = x @ lq.weight.astype(np.int64)                    # exact int16 x int8 products
    one = mq.Rescale(np.array([1]), 0, 2)
    got = mi.linear_int(x, mq.LinearQuant(lq.weight, lq.bias, lq.acc_scale, one, lq.out_scale,
                                          1, lq.wide_shift, lq.lo_bias))
    assert np.abs(got * 2 ** lq.wide_shift - acc).max() <= 2 ** lq.wide_shift / 2 + 1
    hi, lo = mi.byte_planes(x)
    assert (hi >= -128).all() and (hi <= 127).all() and (lo >= -128).all() and (lo <= 127).all()
    assert (256 * hi + lo + 128 == x).all()


def test_linear_against_float(model):
    W = model.layer(2)
    x = RNG.normal(0, 1, (10, 384))
    s_in = np.abs(x).max() / 127
    xq = np.clip(np.floor(x / s_in + 0.5), -127, 127)
    want = xq * s_in @ W["intermediate.dense.weight"].T.astype(np.float64) \
        + W["intermediate.dense.bias"]
    s_out = np.abs(want).max() * 2 / 32767
    lq = mq.quantize_linear(W["intermediate.dense.weight"], W["intermediate.dense.bias"], s_in,
                            s_out, 1, "test")
    got = mi.linear_int(xq, lq) * s_out
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.01     # int8 weights


def test_layer_norm_against_float(model):
    W = model.layer(0)
    g, b = W["output.LayerNorm.weight"], W["output.LayerNorm.bias"]
    x = RNG.normal(0, 1, (30, 384))
    x[:, 7] *= 60                                   # an outlier channel, as in BERT residuals
    x[3] *= 0.05                                    # a row with a small variance
    s_in = np.abs(x).max() * 1.1 / 32767
    r = np.round(x / s_in).astype(np.int64)
    want = minilm.layer_norm(r * s_in, g, b, 1e-12).astype(np.float64)
    s8 = np.abs(want).max(axis=0) / 127
    s16 = np.abs(want).max() * 1.2 / 32767
    lq = mq.quantize_layer_norm(g, b, 1e-12, s_in, s8, s16, "test")
    out = mi.layer_norm_int(r, lq)
    assert out["fine"].all()                 # these variances are in the fine range
    # the mean is rounded to an integer: up to 0.5 / sigma (input units) times gamma
    sigma = r.std(axis=1, keepdims=True)
    bound = 0.5 / sigma * np.abs(g)[None, :] + 1e-3 * np.abs(want).max()
    assert (np.abs(out["y16"] * s16 - want) <= bound + s16).all()
    assert (np.abs(out["y8"] - want / s8) <= 0.5 + bound / s8).all()
    # the coarse range: a row of large variance
    big = np.round(RNG.choice([-1, 1], (2, 384)) * 30000 * RNG.uniform(0.5, 1, (2, 384)))
    outb = mi.layer_norm_int(big.astype(np.int64), lq)
    wantb = minilm.layer_norm(big * s_in, g, b, 1e-12).astype(np.float64)
    assert not outb["fine"].any()
    assert np.abs(outb["y16"] * s16 - wantb).max() < 1e-3 * np.abs(wantb).max()
    with pytest.raises(ValueError, match="LayerNorm over 384 channels"):
        mi.layer_norm_int(r[:, :10], lq)


@pytest.mark.parametrize("out_dtype", [0, 1])
def test_gelu_against_float(out_dtype):
    s_x = 25.0 / 32767
    x = np.concatenate([np.arange(-32768, 32768, 37), [-1, 0, 1, 32767]])
    want = mf.gelu(x * s_x).astype(np.float64)
    s_out = np.full(x.size, (np.abs(want).max() / 127) if out_dtype == 0 else s_x)
    gq = mq.quantize_gelu(s_x, s_out, "test", out_dtype)
    got = mi.gelu_int(x[None, :], gq)[0]
    assert (0 <= gq.table).all() and (gq.table <= 127).all() and gq.table.size == 256
    # |relu - table correction - gelu| <= 0.5 step max|c'| + c_scale / 2 (+ the output unit)
    bound = 0.5 * mq.GELU_RANGE / 255 * 0.5 + gq.c_scale / 2 + 2 * s_x
    assert np.abs(got * s_out - want).max() <= bound + s_out[0] / 2


def test_quantization_parameters(quant):
    assert len(quant.layers) == 6
    for lq in quant.layers:
        for lin in (lq.q, lq.k, lq.v, lq.o, lq.ff1, lq.ff2):
            assert lin.weight.dtype == np.int8 and np.abs(lin.weight).max() <= 127
            assert (lin.out.mult >= 1).all() and (lin.out.mult < 2 ** 31).all()
            assert np.abs(lin.bias).max() < 2 ** 28
        assert lq.ff2.in_dtype == 1 and lq.q.in_dtype == 0
        assert len(lq.attn.consts) == 12
    d = quant.to_dict()
    ln = json.loads(json.dumps(d["layers"][0]["ln1"]))
    assert ln["gamma_q"] == quant.layers[0].ln1.gamma_q.tolist()
    assert d["layers"][0]["q"]["out"]["shift"] == quant.layers[0].q.out.shift
    assert isinstance(d["layers"][5]["ff2"]["weight"][0][0], int)
    with pytest.raises(ValueError, match="smooth must be in 0..1"):
        mq.QuantOptions(smooth=2)
    with pytest.raises(ValueError, match="wide names unknown"):
        mq.QuantOptions(wide=("attn",))


def test_padding_is_bit_exact(model, quant):
    s = ["A man is riding a horse.", "Hi!"]
    ids, mask = model.tokenize(s, length=16)
    x8, x16 = mq.quantize_input(quant, model.embed(ids))
    y = mi.encoder_int(quant, x8, x16, mask)
    for b in range(2):
        n = int(mask[b].sum())
        i1, m1 = model.tokenize([s[b]])
        a8, a16 = mq.quantize_input(quant, model.embed(i1))
        y1 = mi.encoder_int(quant, a8, a16, m1)
        assert (y1[0] == y[b, :n]).all()


def test_embeddings_close_to_float(eval_embeddings, model):
    from openlpu.verification.models.sentences import EVAL
    ef, ei = eval_embeddings
    cos = (ef * ei).sum(axis=1)
    lengths = model.tokenize(EVAL)[1].sum(axis=1)
    assert len(EVAL) >= 8 and lengths.min() <= 8 and 100 <= lengths.max() <= 128
    assert cos.min() >= 0.99, dict(zip(EVAL, cos.round(4)))


def test_pair_ranking_kept(model, quant):
    from openlpu.verification.models.sentences import PAIRS
    a, b = zip(*PAIRS)
    sf = (mf.embed_sentences(model, a) * mf.embed_sentences(model, b)).sum(axis=1)

    def emb(sents):                          # one sentence at a time: no padding to compute
        return np.concatenate([mi.embed_sentences_int(model, quant, [x]) for x in sents])
    si = (emb(a) * emb(b)).sum(axis=1)
    assert (np.argsort(-sf) == np.argsort(-si)).all(), (sf.round(4), si.round(4))
    # paraphrases first: the unrelated pairs (1, 3, 6) rank last in both
    assert set(np.argsort(-si)[-3:]) == {1, 3, 6}


def test_bad_inputs_are_named(model, stats, quant):
    with pytest.raises(ValueError, match="cover 2 layers, the model has 6"):
        mq.quantize(model, {"embed": stats["embed"], "layers": stats["layers"][:2]})
    x = np.zeros((1, 4, 384), dtype=np.int64)
    with pytest.raises(ValueError, match="do not match"):
        mi.encoder_int(quant, x, x, np.ones((1, 5)))
    with pytest.raises(ValueError, match="in_dtype must be 0"):
        mq.quantize_linear(np.ones((2, 2)), np.zeros(2), 1.0, 1.0, 0, "lin", in_dtype=2)
