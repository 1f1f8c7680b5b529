"""The chip kernels of all-MiniLM-L6-v2 at the model's sizes: predicted cycles against a bound.

For sequence lengths 16 and 128 (hidden 384, 12 heads of 32, FFN 1536) every kernel of one
encoder layer is compiled on preset ``base`` with the quantizer's parameter shapes (seeded
random values: the schedule does not depend on them) and the script prints

* ``cycles``: the compiler's prediction (the model's count equals it:
  tests/firmware/test_minilm_kernels.py);
* ``bound``: what bounds the kernel as built, one unit per cycle: for a linear the MXM's
  ``ABC``s (``M * ceil(K / VL) * ceil(N / VL)``, twice for an int16 input, plus its split
  pass's flows) plus the epilogue pass's vectors at one per cycle (the passes follow one
  another); for the VXM passes the VXM ALU slots (ops per vector x
  vectors / 4 ALUs); for LayerNorm its three chained loops (3 cycles per channel each) and
  the 8 output ops per channel on 4 ALUs, per row tile; for attention its ``ABC``s;
* ``ratio`` = cycles / bound, and the compile time.

Usage: ``python benchmarks/minilm_kernels.py [--seq 16 128] [--kernel linear ...]``
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from openlpu.firmware.attention import compile_attention
from openlpu.firmware.gelu import compile_gelu
from openlpu.firmware.layernorm import compile_layer_norm
from openlpu.firmware.linear import (compile_linear, compile_linear_wide, compile_residual,
                                    rescale_len)
from openlpu.host.models.minilm_quant import make_rescale, quantize_gelu, quantize_layer_norm
from openlpu.params import preset

HIDDEN, FFN, HEADS, HEAD_DIM = 384, 1536, 12, 32


def _linear(p, L, K, N, out_dtype):
    rng = np.random.default_rng(K + N)
    rq = make_rescale(rng.uniform(1e-4, 2e-4, N), out_dtype, "bench")
    pkg = compile_linear(p, L, K, N, bias=rng.integers(-1000, 1000, N), mult=rq.mult,
                         shift=rq.shift, out_dtype=out_dtype)
    vl = p.vl
    bound = L * math.ceil(K / vl) * math.ceil(N / vl) + pkg.meta["epilogue_vectors"]
    return pkg, bound, f"ABC + epilogue ({1 + rescale_len(out_dtype)} ops/vector)"


def _linear_wide(p, L, K, N, out_dtype):
    rng = np.random.default_rng(K + N)
    rq = make_rescale(rng.uniform(1e-4, 2e-4, N), out_dtype, "bench")
    pkg = compile_linear_wide(p, L, K, N, bias=rng.integers(-1000, 1000, N),
                              lo_bias=rng.integers(-10 ** 6, 10 ** 6, N), wide_shift=2,
                              mult=rq.mult, shift=rq.shift, out_dtype=out_dtype)
    vl = p.vl
    bound = (pkg.meta["split_vectors"] + 2 * L * math.ceil(K / vl) * math.ceil(N / vl)
             + pkg.meta["epilogue_vectors"])
    return pkg, bound, "split + ABC (2 passes) + epilogue"


def _residual(p, L):
    rq = make_rescale(0.5, 2, "bench")
    pkg = compile_residual(p, L, HIDDEN, mult=rq.mult, shift=rq.shift)
    return pkg, pkg.meta["vectors"], "4 ops/vector on 4 ALUs"


def _gelu(p, L, out_dtype):
    gq = quantize_gelu(25.0 / 32767, np.full(FFN, 0.1 if out_dtype == 0 else 25.0 / 32767),
                       "bench", out_dtype)
    pkg = compile_gelu(p, L, FFN, table=gq.table, idx_mult=gq.idx.mult, idx_shift=gq.idx.shift,
                       c_mult=gq.c_to_x.mult, c_shift=gq.c_to_x.shift, out_mult=gq.out.mult,
                       out_shift=gq.out.shift, out_dtype=out_dtype)
    ops = 7 + rescale_len(out_dtype)
    return pkg, math.ceil(pkg.meta["vectors"] * ops / 4), f"{ops} ops/vector on 4 ALUs"


def _layer_norm(p, L):
    rng = np.random.default_rng(L)
    ln = quantize_layer_norm(rng.uniform(0.5, 1.5, HIDDEN), rng.normal(0, 0.1, HIDDEN), 1e-12,
                             0.01, rng.uniform(0.5, 1.5, HIDDEN) * 0.05, 3 / 32767, "bench")
    pkg = compile_layer_norm(p, L, ln)
    bound = pkg.meta["row_tiles"] * (3 * 3 + 2) * HIDDEN
    return pkg, bound, "3 loops x 3 cycles + 8 ops on 4 ALUs, per channel and row tile"


def _attention(p, L):
    mask = np.ones(L, dtype=np.int64)
    mask[L - L // 8:] = 0                       # an eighth of the keys are padding
    pkg = compile_attention(p, L, L, HEAD_DIM, heads=HEADS, scale=1e-3, key_mask=mask)
    return pkg, pkg.meta["mxm_busy_cycles"], "ABC"


def cases(p, L):
    """(kernel, label, thunk) of one layer at sequence length L."""
    return [
        ("linear", f"QKV / O {L}x{HIDDEN}x{HIDDEN} -> int8",
         lambda: _linear(p, L, HIDDEN, HIDDEN, 0)),
        ("linear", f"O {L}x{HIDDEN}x{HIDDEN} -> int32", lambda: _linear(p, L, HIDDEN, HIDDEN, 2)),
        ("linear", f"FFN 1 {L}x{HIDDEN}x{FFN} -> int16", lambda: _linear(p, L, HIDDEN, FFN, 1)),
        ("linear", f"FFN 2 (int8 in) {L}x{FFN}x{HIDDEN} -> int32",
         lambda: _linear(p, L, FFN, HIDDEN, 2)),
        ("linear", f"FFN 2 (int16 in) {L}x{FFN}x{HIDDEN} -> int32",
         lambda: _linear_wide(p, L, FFN, HIDDEN, 2)),
        ("residual", f"{L}x{HIDDEN}", lambda: _residual(p, L)),
        ("layer_norm", f"{L}x{HIDDEN} -> int8 + int16", lambda: _layer_norm(p, L)),
        ("gelu", f"{L}x{FFN} -> int16", lambda: _gelu(p, L, 1)),
        ("gelu", f"{L}x{FFN} -> int8", lambda: _gelu(p, L, 0)),
        ("attention", f"{HEADS}x({L}x{L}, d={HEAD_DIM}), padding mask", lambda: _attention(p, L)),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--kernel", nargs="+", default=None,
                    help="linear, residual, layer_norm, gelu, attention (default: all)")
    args = ap.parse_args(argv)
    p = preset("base")
    print(f"{'kernel':<11} {'shape':<44} {'cycles':>8} {'bound':>8} {'ratio':>6} "
          f"{'compile s':>9}  bound by")
    for L in args.seq:
        for kind, label, thunk in cases(p, L):
            if args.kernel and kind not in args.kernel:
                continue
            t0 = time.perf_counter()
            pkg, bound, what = thunk()
            dt = time.perf_counter() - t0
            print(f"{kind:<11} {label:<44} {pkg.predicted_cycles:>8} {bound:>8} "
                  f"{pkg.predicted_cycles / bound:>6.2f} {dt:>9.1f}  {what}", flush=True)


if __name__ == "__main__":
    main()
