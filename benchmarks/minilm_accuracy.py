"""all-MiniLM-L6-v2: accuracy of the integer encoder (the chip's arithmetic) against float.

Prints, for each sentence of ``verification/models/sentences.EVAL`` (4 to ~120 tokens), the
cosine between the sentence embedding of the integer reference (``minilm_int``) and of the
float32 model (``minilm_float``), the worst and median cosine beside the target (>= 0.99), the
float / ONNX Runtime agreement, and the similarity of each pair of ``sentences.PAIRS`` in float
and in integers with their rank orders. Options: ``--wide qkv,ff1,ff2`` (int16 matmul inputs;
default ff2), ``--smooth``, ``--gelu-smooth``, ``--margin``.
Needs the ``models`` extra (``make venv`` installs it).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

TARGET = 0.99


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wide", default="ff2", help="comma-separated int16 matmul inputs")
    ap.add_argument("--smooth", type=float, default=None)
    ap.add_argument("--gelu-smooth", type=float, default=None)
    ap.add_argument("--margin", type=float, default=None)
    args = ap.parse_args(argv)
    try:
        from openlpu.host.models import minilm
        model = minilm.load()
    except ImportError as e:
        print(f"SKIP: {e}")
        return 0
    from openlpu.host.models import minilm_onnx, minilm_quant as mq
    from openlpu.verification.models import minilm_float as mf, minilm_int as mi
    from openlpu.verification.models.sentences import EVAL, PAIRS

    kw = {"wide": tuple(w for w in args.wide.split(",") if w)}
    for k, v in (("smooth", args.smooth), ("gelu_smooth", args.gelu_smooth),
                 ("res_margin", args.margin)):
        if v is not None:
            kw[k] = v
    opt = mq.QuantOptions(**kw)
    t0 = time.time()
    stats = mq.calibrate(model)
    q = mq.quantize(model, stats, opt)
    print(f"MiniLM-L6-v2 integer encoder: {opt}")
    print(f"calibrated on {len(minilm.calibration_sentences())} sentences, quantized in "
          f"{time.time() - t0:.1f} s")

    ids, mask = model.tokenize(EVAL)
    h = model.embed(ids)
    hf = mf.encoder(model, h, mask)
    ho = minilm_onnx.run_onnxruntime(minilm_onnx.build_encoder_onnx(model), h,
                                     minilm.attention_bias(mask))
    keep = mask.astype(bool)
    print(f"float32 numpy vs onnxruntime: max |diff| of the last hidden state "
          f"{np.abs(hf - ho)[keep].max():.2e} on real tokens")
    ef = model.pool(hf, mask)
    t0 = time.time()
    ei = mi.embed_sentences_int(model, q, EVAL)
    print(f"integer encoder on {len(EVAL)} sentences (batch padded to {ids.shape[1]} tokens): "
          f"{time.time() - t0:.1f} s")
    cos = (ef * ei).sum(axis=1)
    for s, n, c in zip(EVAL, mask.sum(axis=1), cos):
        print(f"  {n:4d} tokens  cos {c:.5f}  {s[:60]!r}")
    ok = bool(cos.min() >= TARGET)
    print(f"cosine(int, float): worst {cos.min():.5f}, median {np.median(cos):.5f} "
          f"(target >= {TARGET} for every sentence: {'PASS' if ok else 'FAIL'})")

    a = [p[0] for p in PAIRS]
    b = [p[1] for p in PAIRS]
    sf = (mf.embed_sentences(model, a) * mf.embed_sentences(model, b)).sum(axis=1)
    si = (mi.embed_sentences_int(model, q, a) * mi.embed_sentences_int(model, q, b)).sum(axis=1)
    rf, ri = np.argsort(-sf), np.argsort(-si)
    for k in rf:
        print(f"  pair {k}: float {sf[k]:+.4f}  int {si[k]:+.4f}  {a[k][:30]!r} / {b[k][:30]!r}")
    same = bool((rf == ri).all())
    print(f"pair similarity ranking int == float: {'PASS' if same else 'FAIL'} "
          f"(max |sim diff| {np.abs(sf - si).max():.4f})")
    print(f"RESULT: {'PASS' if ok and same else 'FAIL'}")
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
