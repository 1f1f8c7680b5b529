"""The model-scale chip's kernels on its Verilator RTL: ``base`` (VL 64) runs attention at head
dim 32 and 64, softmax and RMSNorm over 384-wide rows and two MiniLM-sized matmuls, each checked
in every element against numpy or the integer reference (``openlpu.verification.reference``),
with measured cycles beside the prediction and the MXM utilization.

The first run builds ``base`` for the Verilator backend (about 2.5 minutes of Verilog and 3.5 of
C++ on a free 2-core machine; cached afterwards under ``$OPENLPU_BUILD_DIR``). Usage::

    python benchmarks/base_rtl.py [--backend verilator|model] [--only attention,softmax,...]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from openlpu.firmware.attention import attention_tensor_names, compile_attention
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.norm import compile_rmsnorm, compile_softmax
from openlpu.firmware.schedule import issue_counts
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification import reference as ref
from openlpu.verification.matmul_check import CHAIN_REQUANTIZE, chained_matmuls
from openlpu.vxm_ops import requantize as ref_requantize

P = preset("base")
EDGES = np.array([-128, 127, 0, 1])


def _int8(rng, shape):
    X = rng.integers(-128, 128, shape)
    X.flat[:4] = EDGES
    return X


def _attention(rng, lq, lk, d, heads, causal):
    scale = 1 / np.sqrt(d)
    pkg = compile_attention(P, lq, lk, d, heads=heads, scale=scale, causal=causal)
    names = attention_tensor_names(heads)
    ins, want = {}, {}
    for h in range(heads):
        Q, K, V = (_int8(rng, (n, d)) for n in (lq, lk, lk))
        ins.update({names["Q"][h]: Q, names["K"][h]: K, names["V"][h]: V})
        want[names["O"][h]] = ref.attention_int(Q, K, V, ref.attention_consts(scale), causal)["O"]
    return f"attention {heads}x {lq}x{lk} d={d}{' causal' if causal else ''}", pkg, ins, want


def _softmax(rng, rows):
    X = _int8(rng, (rows, 384))
    pkg = compile_softmax(P, rows, 384, scale=0.03)
    return (f"softmax {rows}x384", pkg, {"X": X},
            {"Y": ref.softmax_int(X, ref.softmax_consts(0.03))["Y"]})


def _rmsnorm(rng, rows):
    kw = dict(gamma=rng.uniform(-2.0, 2.0, 384), eps=1e-3, in_scale=1 / 32, out_scale=1 / 64)
    X = _int8(rng, (rows, 384))
    pkg = compile_rmsnorm(P, rows, 384, **kw)
    return (f"RMSNorm {rows}x384", pkg, {"X": X},
            {"Y": ref.rmsnorm_int(X, ref.rmsnorm_consts(384, **kw))["Y"]})


def _matmul(rng, M, K, N):
    A, B = _int8(rng, (M, K)), _int8(rng, (K, N))
    return (f"matmul {M}x{K}x{N}", compile_matmul(P, M, K, N), {"A": A, "B": B},
            {"C": A.astype(np.int64) @ B})


def _chained(rng, M, K, N):
    """Two matmuls in one program, the second reading the first's int8 result where it is
    (wide weight loads from the slices that result leaves)."""
    pkg, _ = chained_matmuls(P, M, K, N)
    A, B1, B2 = _int8(rng, (M, K)), _int8(rng, (K, K)), _int8(rng, (K, N))
    H = ref_requantize(A.astype(np.int64) @ B1, *CHAIN_REQUANTIZE)
    return (f"chained matmuls {M}x{K}x{K}, {M}x{K}x{N}", pkg, {"A": A, "B1": B1, "B2": B2},
            {"C": H @ B2})


CASES = {
    "attention": lambda rng: [_attention(rng, 64, 64, 32, 2, True),
                              _attention(rng, 16, 40, 32, 1, False),
                              _attention(rng, 32, 32, 64, 1, True)],
    "softmax": lambda rng: [_softmax(rng, 64)],
    "rmsnorm": lambda rng: [_rmsnorm(rng, 16)],
    "matmul": lambda rng: [_matmul(rng, 16, 384, 1152), _matmul(rng, 64, 384, 1536)],
    "chained": lambda rng: [_chained(rng, 1, 384, 1536), _chained(rng, 8, 384, 128)],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="verilator", choices=["verilator", "model"])
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(2026)
    bad = 0
    t0 = time.perf_counter()
    with Device.open(args.backend, P) as dev:
        print(f"base on {args.backend}: opened in {time.perf_counter() - t0:.1f} s", flush=True)
        for kind in args.only.split(","):
            for label, pkg, ins, want in CASES[kind](rng):
                t = time.perf_counter()
                cycles, got = dev.run_package(pkg, ins)
                wall = time.perf_counter() - t
                wrong = sum(int(np.count_nonzero(np.asarray(got[k]) != v)) for k, v in want.items())
                abc = sum(issue_counts(w).get("ABC", 0) for w in pkg.queues.values())
                ok = wrong == 0 and cycles == pkg.predicted_cycles
                bad += not ok
                print(f"  {label:34s} {'exact' if wrong == 0 else f'{wrong} WRONG'}  {cycles} cycles"
                      f" (predicted {pkg.predicted_cycles}{', equal' if cycles == pkg.predicted_cycles else ', DIFFERENT'})"
                      f"  MXM {100 * abc / cycles:.1f} %  {wall:.1f} s", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
