"""Per-kernel figures: cycles (predicted and measured), instruction-memory words, MXM use.

Every kernel the compiler offers is compiled for a few shapes, run on a backend (the reference
model by default, ``--backend verilator`` for the RTL) and checked element by element against its
numpy or integer reference. For each run the script prints

* ``cycles``: the compiler's prediction and what the chip's ``CYCLES`` register reported;
* ``words``: instruction-memory words of all queues together, the fullest queue (and the
  preset's ``imem_words``), and ``issued``: how many instructions issue during the run, which is
  what the image would hold without ``NOP n`` and ``REPEAT`` compression;
* ``MXM busy``: cycles in which the MXM starts a vector (``ABC``) / total cycles.

``--json FILE`` also writes the rows as JSON. Usage::

    python benchmarks/kernel_report.py [--backend model|verilator] [--kernel NAME ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from openlpu import isa, vxm_ops
from openlpu.firmware.schedule import issue_counts
from openlpu.host.device import Device
from openlpu.params import preset

# kernel name -> function(rng) -> list of (preset name, label, package, inputs, expected outputs)
KERNELS = {}


def kernel(name):
    def register(fn):
        KERNELS[name] = fn
        return fn
    return register


def _i8(rng, shape):
    x = rng.integers(-128, 128, shape)
    x.flat[:4] = [-128, 127, 0, 1][: x.size]
    return x


@kernel("matmul")
def _matmul(rng):
    from openlpu.firmware.compiler import compile_matmul
    out = []
    for pname, shapes in (("default", [(32, 32, 32), (64, 64, 64), (7, 37, 35)]),
                          ("mini", [(16, 16, 16)])):
        for M, K, N in shapes:
            A, B = _i8(rng, (M, K)), _i8(rng, (K, N))
            pkg = compile_matmul(preset(pname), M, K, N)
            out.append((pname, f"{M}x{K} @ {K}x{N}", pkg, {"A": A, "B": B},
                        {"C": A.astype(np.int64) @ B}))
    return out


@kernel("matmul+requantize+relu")
def _matmul_req(rng):
    from openlpu.firmware.compiler import compile_matmul
    M, K, N = 16, 24, 16
    mult, shift = (1 << 30) + 12345, 8
    A, B = _i8(rng, (M, K)), _i8(rng, (K, N))
    pkg = compile_matmul(preset("mini"), M, K, N, requantize=(mult, shift), relu=True)
    want = np.maximum(vxm_ops.requantize(A.astype(np.int64) @ B, mult, shift), 0)
    return [("mini", f"{M}x{K} @ {K}x{N}", pkg, {"A": A, "B": B}, {"C": want})]


@kernel("elementwise")
def _elementwise(rng):
    from openlpu.firmware.compiler import compile_elementwise
    out = []
    R, C = 8, 24
    for op in ("ADD", "MUL", "RELU"):
        pkg = compile_elementwise(preset("mini"), op, R, C)
        A, B = _i8(rng, (R, C)), _i8(rng, (R, C))
        if len(pkg.inputs) == 2:
            ins, want = {"A": A, "B": B}, vxm_ops.binary_op(op, A, B, 0)
        else:
            ins, want = {"A": A}, vxm_ops.unary_op(op, A, 0)
        out.append(("mini", f"{op} {R}x{C}", pkg, ins, {"Y": want}))
    return out


@kernel("attention")
def _attention(rng):
    from openlpu.firmware.attention import attention_tensor_names, compile_attention
    from openlpu.verification import reference as ref
    out = []
    for seq, d, heads, causal in ((24, 8, 1, True), (24, 8, 1, False), (7, 4, 4, True)):
        scale = (1 / 32) ** 2 / np.sqrt(d)
        pkg = compile_attention(preset("mini"), seq, seq, d, heads=heads, scale=scale,
                                causal=causal)
        names = attention_tensor_names(heads)
        consts = ref.attention_consts(scale)
        ins, want = {}, {}
        for h in range(heads):
            Q, K, V = (_i8(rng, (seq, d)) for _ in range(3))
            ins.update({names["Q"][h]: Q, names["K"][h]: K, names["V"][h]: V})
            want[names["O"][h]] = ref.attention_int(Q, K, V, consts, causal)["O"]
        label = f"{heads} head(s) {seq}x{seq} d={d}{' causal' if causal else ''}"
        out.append(("mini", label, pkg, ins, want))
    return out


@kernel("softmax")
def _softmax(rng):
    from openlpu.firmware.norm import compile_softmax
    from openlpu.verification import reference as ref
    out = []
    for pname, rows, cols in (("mini", 8, 8), ("mini", 8, 64), ("mini", 24, 21),
                              ("mini4", 48, 21)):
        scale = 1 / 16
        X = _i8(rng, (rows, cols))
        pkg = compile_softmax(preset(pname), rows, cols, scale=scale)
        want = ref.softmax_int(X, ref.softmax_consts(scale))["Y"]
        out.append((pname, f"{rows}x{cols}", pkg, {"X": X}, {"Y": want}))
    return out


@kernel("rmsnorm")
def _rmsnorm(rng):
    from openlpu.firmware.norm import compile_rmsnorm
    from openlpu.verification import reference as ref
    out = []
    for pname, rows, dim in (("mini", 8, 8), ("mini", 8, 56), ("mini", 24, 21),
                             ("mini4", 48, 21)):
        kw = dict(gamma=rng.uniform(-2.0, 2.0, dim), eps=1e-3, in_scale=1 / 32,
                  out_scale=1 / 64)
        X = _i8(rng, (rows, dim))
        pkg = compile_rmsnorm(preset(pname), rows, dim, **kw)
        want = ref.rmsnorm_int(X, ref.rmsnorm_consts(dim, **kw))["Y"]
        out.append((pname, f"{rows}x{dim}", pkg, {"X": X}, {"Y": want}))
    return out


@kernel("transpose")
def _transpose(rng):
    from openlpu.firmware.transpose import compile_transpose
    out = []
    for pname, rows, cols in (("mini", 8, 8), ("mini", 16, 16), ("mini", 13, 21),
                              ("mini4", 32, 32)):
        X = _i8(rng, (rows, cols))
        pkg = compile_transpose(preset(pname), rows, cols)
        out.append((pname, f"{rows}x{cols}", pkg, {"X": X}, {"Y": X.T}))
    return out


def figures(pkg) -> dict:
    """Static figures of a package: instruction words and issued instructions."""
    words = {q: len(w) for q, w in pkg.queues.items()}
    issued = sum(n for w in pkg.queues.values() for m, n in issue_counts(w).items()
                 if m not in isa.CONTROL_MNEMONICS)
    abc = sum(issue_counts(w).get("ABC", 0) for w in pkg.queues.values())
    return {"words": sum(words.values()), "max_queue_words": max(words.values()),
            "imem_words": pkg.params.imem_words, "issued": issued, "abc": abc}


def report(names=None, backend="model", seed=2026, out=print) -> list[dict]:
    """Run the kernels ``names`` (default: all) and return one row per run."""
    rng = np.random.default_rng(seed)
    rows, devices = [], {}
    try:
        for name in names or KERNELS:
            for pname, label, pkg, ins, want in KERNELS[name](rng):
                if pname not in devices:
                    devices[pname] = Device.open(backend, preset(pname))
                dev = devices[pname]
                t0 = time.perf_counter()
                cycles, got = dev.run_package(pkg, ins)
                wall = time.perf_counter() - t0
                bad = sum(int(np.count_nonzero(np.asarray(got[k]) != np.asarray(v)))
                          for k, v in want.items())
                f = figures(pkg)
                row = {"kernel": name, "preset": pname, "shape": label, "check": bad == 0,
                       "mismatches": bad, "predicted": pkg.predicted_cycles, "cycles": cycles,
                       "mxm_busy": f["abc"] / cycles, "wall_s": wall, **f}     # wall: load to read-back
                rows.append(row)
                out(f"{name:24s} {pname:8s} {label:28s} "
                    f"{'PASS' if bad == 0 else f'FAIL ({bad} elements)'}  "
                    f"cycles {cycles} (predicted {pkg.predicted_cycles}"
                    f"{', equal' if cycles == pkg.predicted_cycles else ', DIFFERENT'})  "
                    f"words {f['words']} (fullest queue {f['max_queue_words']}/{f['imem_words']}"
                    f", {f['issued']} issued)  MXM busy {100 * row['mxm_busy']:.1f}%")
    finally:
        for d in devices.values():
            d.close()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="model", choices=["model", "amaranth", "verilator"])
    ap.add_argument("--kernel", action="append", choices=sorted(KERNELS),
                    help="kernel to run (repeatable; default: all)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    print(f"kernel figures on the {args.backend} backend")
    rows = report(args.kernel, args.backend)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    ok = all(r["check"] and r["cycles"] == r["predicted"] for r in rows)
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
