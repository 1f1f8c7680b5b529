"""The compiler's speed table on ``base``: every row against its bound and its target.

Each row is compiled on preset ``base`` (VL 64), run on a backend (the reference model by
default, ``--backend verilator`` for the RTL), checked in every element against numpy or the
integer reference (seeded random int8 data with the edge values -128, 127, 0, 1), and its
measured cycles are compared with the compiler's prediction. The script prints, per row, the
cycles, the bound, the figure the target is stated in, the target and whether it is met; a
row that is wrong in any element, or whose measured cycles differ from the prediction, makes
the script exit 1 (a missed *target* does not: it is a figure, not a failure).

The bounds, one unit per cycle:

* **GEMM** ``M x K x N``: the MXM's ``ABC``s, ``M * ceil(K / VL) * ceil(N / VL)``; the figure is
  the MXM utilization, ``ABC``s / cycles.
* **Decode-shaped matmuls** (``M`` = 1 or 8 rows): how fast the MXM can take in weights. A
  ``VL x VL`` plane installs in ``ceil(VL / wide_load_feed_rows)`` cycles with ``LWW``
  (``openlpu.isa.wide_load_feed_rows``: 16 rows per cycle on ``base``, so 4 cycles) and is
  used by ``M`` ``ABC``s; with install and use overlapped (the MXM's two weight buffers) a plane
  costs ``max(install, M)`` cycles, so the bound is ``planes * max(install, M)``.
* **Attention** (per head ``Q K^T``, softmax, ``P V``): one vector per cycle through each pass:
  the ``ABC``s of both products plus the three softmax passes over the score vectors
  (``min(seq_q * ceil(seq_k / VL), seq_k * ceil(seq_q / VL))``, the fewer of the row-major and
  the transposed layout), summed over heads.
* **Softmax** (3 passes: max, sum of exponentials, output), **RMSNorm** (2: sum of squares,
  output), **LayerNorm** (3: mean, variance, output): one vector per cycle per pass over the
  row vectors (the fewer of the two layouts, as for attention).
* **Compile time**: wall-clock seconds of the compile call on this machine (noisy when shared).

Usage::

    python benchmarks/speed_table.py [--backend model|verilator] [--only gemm,decode,...]
                                     [--json F] [--markdown F]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from openlpu import isa
from openlpu.firmware.attention import attention_tensor_names, compile_attention
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.layernorm import compile_layer_norm
from openlpu.firmware.norm import compile_rmsnorm, compile_softmax
from openlpu.firmware.schedule import issue_counts
from openlpu.host.device import Device
from openlpu.host.models.minilm_quant import quantize_layer_norm
from openlpu.params import preset
from openlpu.verification import reference as ref
from openlpu.verification.models import minilm_int

P = preset("base")
VL = P.vl
EDGES = np.array([-128, 127, 0, 1])


@dataclass
class Row:
    group: str
    label: str
    predicted: int
    bound: int
    figure: str          # "utilization" (higher is better) or "ratio" (cycles / bound)
    target: float
    compile_s: float
    measured: int | None = None
    exact: bool | None = None

    @property
    def value(self) -> float:
        if self.figure == "utilization":
            return self.bound / self.predicted
        return self.predicted / self.bound

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.figure == "utilization" else self.value <= self.target


def _int8(rng, shape):
    x = rng.integers(-128, 128, shape)
    x.flat[:4] = EDGES[: x.size]
    return x


def _vectors(rows, cols):
    """Vectors of a rows x cols tensor in the cheaper of the row-major and transposed layouts."""
    return min(rows * math.ceil(cols / VL), cols * math.ceil(rows / VL))


def _compiled(fn, *args, **kw):
    t0 = time.perf_counter()
    pkg = fn(*args, **kw)
    return pkg, time.perf_counter() - t0


def _gemm(rng, M, K, N, target, group="gemm"):
    pkg, dt = _compiled(compile_matmul, P, M, K, N)
    A, B = _int8(rng, (M, K)), _int8(rng, (K, N))
    abc = M * math.ceil(K / VL) * math.ceil(N / VL)
    return (Row(group, f"matmul {M}x{K}x{N}", pkg.predicted_cycles, abc, "utilization", target, dt),
            pkg, {"A": A, "B": B}, {"C": A.astype(np.int64) @ B})


def _decode(rng, M, K, N):
    row, pkg, ins, want = _gemm(rng, M, K, N, 1.25, "decode")
    planes = math.ceil(K / VL) * math.ceil(N / VL)
    install = math.ceil(VL / isa.wide_load_feed_rows(P))
    row.bound, row.figure = planes * max(install, M), "ratio"
    return row, pkg, ins, want


def _attention(rng, lq, lk, d, heads, causal=False, pad=0):
    scale = 1 / np.sqrt(d)
    mask = None
    if pad:
        mask = np.ones(lk, dtype=np.int64)
        mask[lk - pad:] = 0
    pkg, dt = _compiled(compile_attention, P, lq, lk, d, heads=heads, scale=scale, causal=causal,
                        key_mask=mask)
    names = attention_tensor_names(heads)
    consts = ref.attention_consts(scale)
    ins, want = {}, {}
    for h in range(heads):
        Q, K, V = (_int8(rng, (n, d)) for n in (lq, lk, lk))
        ins.update({names["Q"][h]: Q, names["K"][h]: K, names["V"][h]: V})
        if mask is None:
            want[names["O"][h]] = ref.attention_int(Q, K, V, consts, causal)["O"]
        else:
            want[names["O"][h]] = minilm_int.attention_head_int(Q, K, V, consts, mask)["O"]
    abc = 2 * lq * math.ceil(d / VL) * math.ceil(lk / VL)
    bound = heads * (abc + 3 * _vectors(lq, lk))
    label = (f"attention {heads}x({lq}x{lk}, d={d})" + (" causal" if causal else "")
             + (f" {pad} padding keys" if pad else ""))
    return Row("attention", label, pkg.predicted_cycles, bound, "ratio", 2.0, dt), pkg, ins, want


def _softmax(rng, rows, cols):
    pkg, dt = _compiled(compile_softmax, P, rows, cols, scale=0.03)
    X = _int8(rng, (rows, cols))
    return (Row("norms", f"softmax {rows}x{cols}", pkg.predicted_cycles, 3 * _vectors(rows, cols),
                "ratio", 1.5, dt),
            pkg, {"X": X}, {"Y": ref.softmax_int(X, ref.softmax_consts(0.03))["Y"]})


def _rmsnorm(rng, rows, cols):
    kw = dict(gamma=rng.uniform(-2.0, 2.0, cols), eps=1e-3, in_scale=1 / 32, out_scale=1 / 64)
    pkg, dt = _compiled(compile_rmsnorm, P, rows, cols, **kw)
    X = _int8(rng, (rows, cols))
    return (Row("norms", f"RMSNorm {rows}x{cols}", pkg.predicted_cycles, 2 * _vectors(rows, cols),
                "ratio", 1.5, dt),
            pkg, {"X": X}, {"Y": ref.rmsnorm_int(X, ref.rmsnorm_consts(cols, **kw))["Y"]})


def _layer_norm(rng, rows, cols):
    ln = quantize_layer_norm(rng.uniform(0.5, 1.5, cols), rng.normal(0, 0.1, cols), 1e-12, 0.01,
                             rng.uniform(0.5, 1.5, cols) * 0.05, 3 / 32767, "bench")
    pkg, dt = _compiled(compile_layer_norm, P, rows, ln)
    x = rng.integers(-3000, 3000, (rows, cols))
    x.flat[:4] = [-32768, 32767, 0, 1]
    want = minilm_int.layer_norm_int(x, ln)
    return (Row("norms", f"LayerNorm {rows}x{cols} (int16 in)", pkg.predicted_cycles,
                3 * _vectors(rows, cols), "ratio", 1.5, dt),
            pkg, {"R": x}, {"Y8": want["y8"], "Y16": want["y16"]})


CASES = {
    "gemm": lambda rng: [_gemm(rng, 256, 256, 256, 0.97), _gemm(rng, 512, 512, 512, 0.97),
                         _gemm(rng, 16, 384, 1152, 0.95), _gemm(rng, 64, 384, 1536, 0.95)],
    "decode": lambda rng: [_decode(rng, M, K, K) for M in (1, 8) for K in (384, 1536)],
    "attention": lambda rng: [_attention(rng, 64, 64, 32, 2, causal=True),
                              _attention(rng, 16, 16, 32, 12, pad=2),
                              _attention(rng, 128, 128, 32, 12, pad=16)],
    "norms": lambda rng: [_softmax(rng, 64, 384), _rmsnorm(rng, 16, 384),
                          _layer_norm(rng, 16, 384), _layer_norm(rng, 128, 384)],
}


def _markdown(rows, backend) -> str:
    out = [f"| row | cycles ({backend}) | predicted | bound | figure | target | met | compile s |",
           "|---|---:|---:|---:|---:|---:|:-:|---:|"]
    for r in rows:
        fig = f"{100 * r.value:.1f} % MXM" if r.figure == "utilization" else f"{r.value:.2f}x"
        tgt = (f">= {100 * r.target:.0f} %" if r.figure == "utilization" else f"<= {r.target}x")
        out.append(f"| {r.label} | {r.measured} | {r.predicted} | {r.bound} | {fig} | {tgt} | "
                   f"{'yes' if r.met else 'no'} | {r.compile_s:.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="model", choices=["model", "verilator"])
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--markdown", help="write the table as markdown here")
    args = ap.parse_args(argv)
    unknown = set(args.only.split(",")) - set(CASES)
    if unknown:
        ap.error(f"unknown group(s) {', '.join(sorted(unknown))}; groups are {', '.join(CASES)}")
    rng = np.random.default_rng(2026)
    rows, bad = [], 0
    t0 = time.perf_counter()
    with Device.open(args.backend, P) as dev:
        print(f"base on {args.backend}: opened in {time.perf_counter() - t0:.1f} s", flush=True)
        print(f"  {'row':44s} {'cycles':>7} {'bound':>7} {'figure':>9} {'target':>9} met  "
              f"compile  run", flush=True)
        for group in args.only.split(","):
            for row, pkg, ins, want in CASES[group](rng):
                t = time.perf_counter()
                cycles, got = dev.run_package(pkg, ins)
                wall = time.perf_counter() - t
                wrong = sum(int(np.count_nonzero(np.asarray(got[k]) != v)) for k, v in want.items())
                abc = sum(issue_counts(w).get("ABC", 0) for w in pkg.queues.values())
                row.measured, row.exact = cycles, wrong == 0
                ok = row.exact and cycles == row.predicted
                bad += not ok
                rows.append(row)
                fig = (f"{100 * row.value:.1f}%" if row.figure == "utilization"
                       else f"{row.value:.2f}x")
                tgt = (f">={100 * row.target:.0f}%" if row.figure == "utilization"
                       else f"<={row.target}x")
                note = "" if ok else (f"  {wrong} WRONG" if wrong else "") + (
                    f"  predicted {row.predicted}, DIFFERENT" if cycles != row.predicted else "")
                print(f"  {row.label:44s} {cycles:>7} {row.bound:>7} {fig:>9} {tgt:>9} "
                      f"{'yes' if row.met else 'no ':3s}  {row.compile_s:6.2f}s {wall:5.1f}s  "
                      f"MXM {100 * abc / cycles:.0f}%{note}", flush=True)
    met = sum(r.met for r in rows)
    print(f"{met} of {len(rows)} rows meet their target; "
          f"{'every row exact with measured == predicted' if not bad else f'{bad} rows FAILED'}; "
          f"{time.perf_counter() - t0:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": P.name, "backend": args.backend,
                       "rows": [dict(asdict(r), value=r.value, met=r.met) for r in rows]}, f,
                      indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_markdown(rows, args.backend))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
