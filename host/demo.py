"""The main demo (``make sim``): int8 matmul compiled, loaded and run on the RTL.

Runs ``C = A @ B`` on the Verilator-compiled RTL of a preset (default ``default``), checks every
element against numpy, compares the measured cycle count with the compiler's prediction and
prints MXM utilization and simulation speed. ``--backend`` selects ``model``, ``amaranth`` or
``verilator``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from openlpu.firmware.compiler import compile_matmul
from openlpu.params import PRESETS, preset

from .device import Device


def run_matmul(dev: Device, M: int, K: int, N: int, seed: int = 2026) -> dict:
    """Compile, load, run and check one matmul; returns the figures."""
    p = dev.params
    pkg = compile_matmul(p, M, K, N)
    rng = np.random.default_rng(seed)
    A = rng.integers(-128, 128, size=(M, K))
    B = rng.integers(-128, 128, size=(K, N))
    dev.load(pkg)
    dev.write_inputs({"A": A, "B": B})
    t0 = time.perf_counter()
    cycles = dev.run()
    wall = time.perf_counter() - t0
    C = dev.read_outputs()["C"]
    expected = A.astype(np.int32) @ B.astype(np.int32)
    return {
        "shape": (M, K, N),
        "pass": bool(np.array_equal(C, expected)),
        "mismatches": int(np.count_nonzero(C != expected)),
        "cycles": cycles,
        "predicted": pkg.predicted_cycles,
        "utilization": M * K * N / (cycles * p.vl * p.vl),
        "busy": pkg.meta["mxm_busy_cycles"] / cycles,
        "wall": wall,
        "words": sum(len(w) for w in pkg.queues.values()),
    }


def measure_speed(dev: Device, seconds: float = 1.0) -> float:
    """Cycles per second of the loaded program, re-run for about ``seconds`` of wall time."""
    cycles, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cycles += dev.run()
    return cycles / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--backend", default="verilator", choices=["model", "amaranth", "verilator"])
    ap.add_argument("--shape", action="append", default=None, metavar="MxKxN",
                    help="matmul shape (repeatable); default: a few shapes including tiling")
    args = ap.parse_args(argv)
    p = preset(args.preset)
    vl = p.vl
    shapes = ([tuple(int(x) for x in s.lower().split("x")) for s in args.shape] if args.shape else
              [(vl, vl, vl), (p.mxm_acc_words, 2 * vl, 2 * vl), (7, vl + 5, vl + 3)])
    print(f"OpenLPU demo: preset {p.name!r}: {p.superlanes} superlanes x {p.lanes} lanes "
          f"(VL={vl}), {p.streams} streams/direction, {2 * p.mem_slices} MEM slices, "
          f"MXM {vl}x{vl} int8")
    t0 = time.perf_counter()
    dev = Device.open(args.backend, p)
    print(f"backend: {args.backend} (ready in {time.perf_counter() - t0:.1f} s)")
    ok = True
    with dev:
        for M, K, N in shapes:
            r = run_matmul(dev, M, K, N)
            ok &= r["pass"] and r["cycles"] == r["predicted"]
            speed = measure_speed(dev, 0.5)
            print(f"matmul {M}x{K} @ {K}x{N} -> int32: "
                  f"{'PASS' if r['pass'] else 'FAIL'} vs numpy "
                  f"({r['mismatches']} mismatching elements); "
                  f"cycles measured {r['cycles']} / predicted {r['predicted']} "
                  f"{'(equal)' if r['cycles'] == r['predicted'] else '(DIFFERENT)'}; "
                  f"MXM utilization {100 * r['utilization']:.1f}% "
                  f"(busy {100 * r['busy']:.1f}% of cycles); {r['words']} instruction words; "
                  f"simulation {speed:,.0f} cycles/s (program re-run for 0.5 s, "
                  f"including the host's start and done polling)")
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
