"""Simulation speed of the host-driver backends, in clock cycles per second of wall time.

* Verilator backend, ``default`` preset: a long program (every queue runs a chain of NOPs of
  known length, then HALT), and a matmul if the compiler is available.
* Amaranth-simulator backend, ``tiny`` preset: a shorter NOP chain, for comparison.

Prints one line per measurement, each beside its target where there is one (Verilator,
``default``: >= 300,000 cycles/s), the Verilator build time (0 when the build was cached) and
the machine's load, which these figures depend on.
Usage: ``python benchmarks/sim_speed.py [--nop-cycles N] [--amaranth-cycles N]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from openlpu import isa
from openlpu.hostmap import imem_addr, reg_addr
from openlpu.host import progress
from openlpu.host.backends import open_backend
from openlpu.params import preset

#: cycles/s the Verilator backend should reach on the ``default`` preset
TARGET_DEFAULT_CPS = 300_000


def machine_note() -> str:
    """The CPU count and load average, printed beside every timing figure."""
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return f"machine: {os.cpu_count()} CPUs, load average {load}"


def against(value: float, target: float) -> str:
    return (f"target >= {target:,.0f}: {'met' if value >= target else 'NOT met'} "
            f"({value / target:.0%} of it)")

NOP = isa.BY_MNEMONIC["NOP"]
HALT = isa.BY_MNEMONIC["HALT"]


def nop_program(params, cycles: int) -> tuple[list, int]:
    """Writes for a program in which every queue NOPs ``cycles`` cycles and then halts.

    Returns the writes and the expected CYCLES (``max(HALT cycle) + 1``)."""
    chain = []
    left = cycles
    while left:
        n = min(left, isa.NOP_MAX)
        chain.append(NOP.encode(count=n))
        left -= n
    if len(chain) + 1 > params.imem_words:
        raise ValueError(f"{cycles} NOP cycles need {len(chain) + 1} instruction words, "
                         f"more than {params.imem_words}")
    writes = []
    for q in range(len(params.queues)):
        for i, w in enumerate(chain + [HALT.encode()]):
            writes.append((imem_addr(params, q, i), w))
    return writes, cycles + 1


def measure_nop(backend, params, cycles: int) -> tuple[float, int]:
    writes, expected = nop_program(params, cycles)
    backend.write_many(writes)
    t0 = time.perf_counter()
    with progress.step(f"{backend.name}: NOP chain of {cycles:,} cycles"):
        backend.run(max_cycles=2 * expected + 100)
    dt = time.perf_counter() - t0
    got = backend.read(reg_addr(isa.HostReg.CYCLES))
    if got != expected:
        raise AssertionError(f"{backend.name}: CYCLES {got}, expected {expected}")
    return dt, got


def measure_matmul(backend, params, M, K, N):
    try:
        from openlpu.host.image import (assemble_outputs, input_writes, load_writes,
                                        output_reads)
        from openlpu.firmware.compiler import compile_matmul
    except ImportError as e:
        print(f"  matmul skipped: {e}")
        return None
    pkg = compile_matmul(params, M, K, N)
    rng = np.random.default_rng(0)
    A = rng.integers(-128, 128, (M, K)).astype(np.int8)
    B = rng.integers(-128, 128, (K, N)).astype(np.int8)
    backend.reset()
    t0 = time.perf_counter()
    backend.write_many(load_writes(pkg) + input_writes(pkg, {"A": A, "B": B}))
    t1 = time.perf_counter()
    backend.run(max_cycles=10 * pkg.predicted_cycles + 1000)
    t2 = time.perf_counter()
    C = assemble_outputs(pkg, backend.read_many(output_reads(pkg)))["C"]
    t3 = time.perf_counter()
    cycles = backend.read(reg_addr(isa.HostReg.CYCLES))
    ok = np.array_equal(C, A.astype(np.int32) @ B.astype(np.int32))
    return {"cycles": cycles, "predicted": pkg.predicted_cycles, "correct": ok,
            "load_s": t1 - t0, "run_s": t2 - t1, "read_s": t3 - t2}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nop-cycles", type=int, default=2_000_000)
    ap.add_argument("--amaranth-cycles", type=int, default=2_000)
    ap.add_argument("--skip-amaranth", action="store_true")
    args = ap.parse_args(argv)

    p = preset("default")
    print(f"sim_speed: {machine_note()}")
    t0 = time.perf_counter()
    v = open_backend("verilator", p)
    print(f"verilator default: backend ready in {time.perf_counter() - t0:.1f} s "
          f"(build {v.build_seconds:.1f} s{', cached' if v.build_seconds < 1 else ''})")
    dt, cycles = measure_nop(v, p, args.nop_cycles)
    print(f"verilator default: NOP chain {cycles} cycles in {dt:.2f} s = "
          f"{cycles / dt:,.0f} cycles/s; {against(cycles / dt, TARGET_DEFAULT_CPS)}")
    mm = measure_matmul(v, p, 64, 96, 64)
    if mm:
        print(f"verilator default: matmul 64x96x64 {mm['cycles']} cycles "
              f"(predicted {mm['predicted']}, correct={mm['correct']}), run {mm['run_s'] * 1e3:.2f} ms"
              f" = {mm['cycles'] / mm['run_s']:,.0f} cycles/s (short run, no target); load "
              f"{mm['load_s'] * 1e3:.1f} ms, read {mm['read_s'] * 1e3:.1f} ms")
    v.close()

    if not args.skip_amaranth:
        pt = preset("tiny")
        t0 = time.perf_counter()
        a = open_backend("amaranth", pt)
        print(f"amaranth tiny: backend ready in {time.perf_counter() - t0:.1f} s")
        dt, cycles = measure_nop(a, pt, args.amaranth_cycles)
        print(f"amaranth tiny: NOP chain {cycles} cycles in {dt:.2f} s = "
              f"{cycles / dt:,.0f} cycles/s (no target; for comparison)")
        a.close()


if __name__ == "__main__":
    main()
