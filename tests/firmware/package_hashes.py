"""The sha256 of ``Package.to_bytes()`` for a fixed set of kernels x shapes x presets.

``python -m tests.firmware.package_hashes`` compiles every case of :data:`CASES` and writes
``tests/firmware/data/package_hashes.json``; ``tests/firmware/test_package_hashes.py`` recompiles
them and compares. The recorded values come from the compiler whose packages were verified
against numpy on the RTL, so a scheduling change that keeps the schedule keeps the bytes.
Regenerate only when a schedule change is intended (and verified on the model and the RTL).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import numpy as np

DATA = pathlib.Path(__file__).parent / "data" / "package_hashes.json"

_RQ = ((1 << 30) + 12345, 2)
_RQ_NEG = (-(3 << 28), 6)

#: (case id, kernel, preset, args, keyword arguments)
CASES = [
    # matmul: single-bank, striped, requantize epilogues, wide weight loads (LWW)
    ("matmul-tiny-8x8x8", "matmul", "tiny", (8, 8, 8), {}),
    ("matmul-tiny-13x20x11", "matmul", "tiny", (13, 20, 11), {}),
    ("matmul-mini-16x16x16-rq", "matmul", "mini", (16, 16, 16), {"requantize": _RQ}),
    ("matmul-mini-9x24x8-rq-relu", "matmul", "mini", (9, 24, 8),
     {"requantize": _RQ_NEG, "relu": True}),
    ("matmul-mini4-32x48x32-striped", "matmul", "mini4", (32, 48, 32), {}),
    ("matmul-mini4-16x48x64-rq-striped", "matmul", "mini4", (16, 48, 64), {"requantize": _RQ}),
    ("matmul-mini4-16x48x64-rq-relu-striped", "matmul", "mini4", (16, 48, 64),
     {"requantize": _RQ_NEG, "relu": True}),
    ("matmul-mini4-16x48x64-wide", "matmul", "mini4", (16, 48, 64), {}),
    ("matmul-mini4-17x16x20-wide", "matmul", "mini4", (17, 16, 20), {}),
    ("matmul-default-32x32x32", "matmul", "default", (32, 32, 32), {}),
    ("matmul-default-64x64x64", "matmul", "default", (64, 64, 64), {}),
    ("matmul-default-64x256x64-striped", "matmul", "default", (64, 256, 64), {}),
    ("matmul-default-16x64x64-wide", "matmul", "default", (16, 64, 64), {}),
    ("matmul-base-16x128x128-wide", "matmul", "base", (16, 128, 128), {}),
    ("matmul-base-200x128x128", "matmul", "base", (200, 128, 128), {}),
    ("matmul-base-64x384x1536-striped-wide", "matmul", "base", (64, 384, 1536), {}),
    ("matmul-base-16x384x1152-wide", "matmul", "base", (16, 384, 1152), {}),
    ("matmul-base-512x512x512", "matmul", "base", (512, 512, 512), {}),
    ("matmul-base-64x128x64-rq-relu", "matmul", "base", (64, 128, 64),
     {"requantize": _RQ_NEG, "relu": True}),
    # elementwise
    ("elementwise-mini-add-5x20", "elementwise", "mini", ("ADD", 5, 20), {}),
    ("elementwise-mini-relu-7x8", "elementwise", "mini", ("RELU", 7, 8), {}),
    ("elementwise-mini4-mul-6x16", "elementwise", "mini4", ("MUL", 6, 16), {}),
    ("elementwise-base-max-9x130", "elementwise", "base", ("MAX", 9, 130), {}),
    # softmax, RMSNorm
    ("softmax-mini-8x8", "softmax", "mini", (8, 8), {"scale": 1 / 16}),
    ("softmax-mini-5x22", "softmax", "mini", (5, 22), {"scale": 0.01}),
    ("softmax-mini4-12x40", "softmax", "mini4", (12, 40), {"scale": 0.01}),
    ("softmax-mini_lite-6x9", "softmax", "mini_lite", (6, 9), {"scale": 1 / 16}),
    ("rmsnorm-mini-6x16", "rmsnorm", "mini", (6, 16), {"eps": 1e-3, "in_scale": 0.05,
                                                        "out_scale": 0.02}),
    ("rmsnorm-mini4-9x40", "rmsnorm", "mini4", (9, 40), {"eps": 0.0, "in_scale": 0.02,
                                                         "out_scale": 0.03}),
    # transpose
    ("transpose-mini-8x8", "transpose", "mini", (8, 8), {}),
    ("transpose-mini-13x19", "transpose", "mini", (13, 19), {}),
    ("transpose-mini4-16x48", "transpose", "mini4", (16, 48), {}),
    # attention
    ("attention-mini-8x8x8", "attention", "mini", (8, 8, 8), {"scale": 0.05}),
    ("attention-mini-24x24x8-causal", "attention", "mini", (24, 24, 8),
     {"scale": 0.05, "causal": True}),
    ("attention-mini4-16x16x8-h4-causal", "attention", "mini4", (16, 16, 8),
     {"scale": 0.04, "heads": 4, "causal": True}),
    ("attention-mini4-20x48x16", "attention", "mini4", (20, 48, 16), {"scale": 0.03}),
    # the model-scale chip's vector kernels (MiniLM's widths and head dims)
    ("softmax-base-20x384", "softmax", "base", (20, 384), {"scale": 0.03}),
    ("rmsnorm-base-16x384", "rmsnorm", "base", (16, 384), {"eps": 1e-3, "in_scale": 1 / 32,
                                                           "out_scale": 1 / 64}),
    ("attention-base-64x64x32-h2-causal", "attention", "base", (64, 64, 32),
     {"scale": 32 ** -0.5, "heads": 2, "causal": True}),
    ("attention-base-32x32x64", "attention", "base", (32, 32, 64), {"scale": 0.125}),
]


def compile_case(kernel, chip, args, kw):
    """The package of one case."""
    from openlpu.firmware.attention import compile_attention
    from openlpu.firmware.compiler import compile_elementwise, compile_matmul
    from openlpu.firmware.norm import compile_rmsnorm, compile_softmax
    from openlpu.firmware.transpose import compile_transpose
    from openlpu.params import preset
    p = preset(chip)
    if kernel == "rmsnorm":
        dim = args[1]
        gamma = np.linspace(-1.5, 2.0, dim)
        return compile_rmsnorm(p, *args, gamma=gamma, **kw)
    fn = {"matmul": compile_matmul, "elementwise": compile_elementwise,
          "softmax": compile_softmax, "transpose": compile_transpose,
          "attention": compile_attention}[kernel]
    return fn(p, *args, **kw)


def package_hash(pkg) -> str:
    return hashlib.sha256(pkg.to_bytes()).hexdigest()


def main(argv=None) -> int:
    out = {}
    for cid, kernel, chip, args, kw in CASES:
        pkg = compile_case(kernel, chip, args, kw)
        out[cid] = {"sha256": package_hash(pkg), "predicted_cycles": pkg.predicted_cycles}
        print(f"{cid}: {pkg.predicted_cycles} cycles {out[cid]['sha256'][:16]}", flush=True)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
