"""Verilator speed of the MXM with and without the idle hold (``rtl.mxm.IDLE_HOLD``), A/B.

Builds the Verilog of a preset twice in this process, once with the MXM's operand, product and
partial-sum registers free-running (A: ``IDLE_HOLD = False``) and once holding them when no
``ABC`` is in their stage (B: ``IDLE_HOLD = True``), one Verilator library each (cached by the
Verilog's hash; neither goes through ``chip_verilog``'s source-keyed cache), and then measures,
alternating A and B for ``--rounds`` rounds, the cycles per second of

* an idle program (every queue NOPs ``--nop-cycles`` cycles, then HALTs), and
* a compiled matmul (``firmware.compiler.compile_matmul``, ``M x K x N``), checked against numpy.

Prints each measurement, the median cycles/s of A and B and the ratio B / A.
Usage: ``python benchmarks/mxm_idle.py [--preset default] [--nop-cycles N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from openlpu.host.backends.verilator_sim import VerilatorBackend
from openlpu.params import preset
from openlpu.rtl import mxm
from openlpu.rtl.chip import generate_verilog

from sim_speed import measure_matmul, measure_nop


def backend(p, hold: bool) -> VerilatorBackend:
    old = mxm.IDLE_HOLD
    mxm.IDLE_HOLD = hold
    try:
        t0 = time.perf_counter()
        text = generate_verilog(p)
        gen = time.perf_counter() - t0
    finally:
        mxm.IDLE_HOLD = old
    b = VerilatorBackend(p, verilog=text)
    print(f"{'B hold' if hold else 'A free'}: Verilog {len(text) / 1e6:.2f} MB in {gen:.1f} s, "
          f"Verilator build {b.build_seconds:.1f} s", flush=True)
    return b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--nop-cycles", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--matmul", default="16,96,64", help="M,K,N of the matmul")
    args = ap.parse_args(argv)
    p = preset(args.preset)
    M, K, N = (int(x) for x in args.matmul.split(","))
    backends = {"A": backend(p, False), "B": backend(p, True)}
    rates = {(k, w): [] for k in backends for w in ("idle", "matmul")}
    for r in range(args.rounds):
        for k, b in backends.items():
            dt, cycles = measure_nop(b, p, args.nop_cycles)
            rates[k, "idle"].append(cycles / dt)
            mm = measure_matmul(b, p, M, K, N)
            if not mm["correct"]:
                raise AssertionError(f"{k}: matmul result differs from numpy")
            rates[k, "matmul"].append(mm["cycles"] / mm["run_s"])
            print(f"round {r} {k}: idle {cycles / dt:,.0f} cycles/s, matmul {M}x{K}x{N} "
                  f"{mm['cycles']} cycles {mm['cycles'] / mm['run_s']:,.0f} cycles/s", flush=True)
    for w in ("idle", "matmul"):
        a, b = statistics.median(rates["A", w]), statistics.median(rates["B", w])
        print(f"{w}: A free {a:,.0f} cycles/s, B hold {b:,.0f} cycles/s, B / A = {b / a:.2f}")
    for b in backends.values():
        b.close()


if __name__ == "__main__":
    main()
