"""Bulk MEM load through the Verilator backend, in MiB/s, beside the target: 16 MiB in <= 10 s.

The load is measured on the ``default`` preset unless ``--preset`` names another, optionally
with a larger MEM (``--mem-words N``: ``N`` words per bank, e.g. 32768 makes ``default`` an
8 MiB chip): its whole MEM image is written again and again until ``--mib`` MiB have been
moved, and the seconds for 16 MiB follow from the rate. The back door's cost per word does not
depend on the chip's size (one byte store per lane, no clock cycle).

Three paths:

* ``write_words``: the backend's bulk entry point with numpy arrays (the harness's back door);
* ``write_inputs``: the driver (``Device.write_inputs`` of a matmul's input tensors, repeated
  until ``--mib`` MiB have been moved), which checks the tensors, builds the ``(address, word)``
  arrays with numpy (``host.image.input_words``) and hands them to the same bulk path;
* the bus (``mem_backdoor=False``): one simulated bus cycle per word, for comparison (a short
  load, extrapolated).

Every load is read back (through the bus for a sample) and compared with what was written; the
benchmark stops with an error if the back door is off.
Usage: ``python benchmarks/mem_load.py [--preset NAME] [--mem-words N] [--mib N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_speed import machine_note                         # noqa: E402

from openlpu.host import progress                           # noqa: E402
from openlpu.host.backends.verilator_sim import VerilatorBackend  # noqa: E402
from openlpu.hostmap import mem_addr                        # noqa: E402
from openlpu.params import preset                           # noqa: E402

TARGET_S = 10.0
TARGET_MIB = 16


def image(p, seed=0):
    """Every MEM host word of ``p`` (slice, bank, word, superlane, group order) and random
    contents."""
    addrs = np.array([mem_addr(p, s, bank, w, c, g)
                      for s in range(2 * p.mem_slices) for bank in range(p.mem_banks)
                      for w in range(p.mem_words) for c in range(p.superlanes)
                      for g in range(p.host_lane_groups)], dtype=np.uint32)
    words = np.random.default_rng(seed).integers(0, 1 << 32, addrs.size, dtype=np.uint64)
    return addrs, (words & ((1 << (8 * p.host_word_lanes)) - 1)).astype(np.uint32)


def mem_bytes(p) -> int:
    return 2 * p.mem_slices * p.mem_banks * p.mem_words * p.vl


def verdict(seconds: float) -> str:
    ok = seconds <= TARGET_S
    return (f"target {TARGET_MIB} MiB in <= {TARGET_S:g} s: "
            f"{'met' if ok else 'NOT met'} ({seconds:.2f} s)")


def bench_write_words(b, p, mib):
    addrs, words = image(p)
    bytes_per_image = addrs.size * p.host_word_lanes
    reps = max(1, int(mib * 2**20 // bytes_per_image))
    t0 = time.perf_counter()
    with progress.step(f"write_words: {reps} x {bytes_per_image // 1024} KiB image"):
        for r in range(reps):
            b.write_words(addrs, words ^ np.uint32(r))
    dt = time.perf_counter() - t0
    last = words ^ np.uint32(reps - 1)
    if b.read_many(addrs) != last.tolist():
        raise AssertionError("write_words: read-back differs from the image written")
    for i in np.random.default_rng(1).choice(addrs.size, 32, replace=False):
        if b.read(int(addrs[i])) != int(last[i]):
            raise AssertionError(f"write_words: bus read of 0x{int(addrs[i]):x} differs")
    return reps * bytes_per_image, dt


def bench_write_inputs(b, p, mib):
    from openlpu.firmware.compiler import compile_matmul
    from openlpu.host.device import Device
    # A (M x K int8) filling a MEM bank (M rows times K / VL tiles = mem_words words), at most
    # 16 tiles wide (the instruction memory of the default preset)
    M, N = 2 * p.vl, p.vl
    K = p.vl * max(1, min(16, p.mem_words // M))
    pkg = compile_matmul(p, M, K, N)
    rng = np.random.default_rng(2)
    A = rng.integers(-128, 128, (M, K)).astype(np.int8)
    B = rng.integers(-128, 128, (K, N)).astype(np.int8)
    dev = Device(b)
    dev.load(pkg)
    before = b.backdoor_words
    dev.write_inputs({"A": A, "B": B})
    per_call = b.backdoor_words - before
    reps = max(1, int(mib * 2**20 // max(1, per_call * p.host_word_lanes)))
    before = b.backdoor_words
    t0 = time.perf_counter()
    with progress.step(f"write_inputs: {reps} calls"):
        for _ in range(reps):
            dev.write_inputs({"A": A, "B": B})
    dt = time.perf_counter() - t0
    words = b.backdoor_words - before
    _, out = dev.run_package(pkg, {"A": A, "B": B})
    if not np.array_equal(out["C"], A.astype(np.int32) @ B.astype(np.int32)):
        raise AssertionError("write_inputs: the matmul's result differs from numpy's")
    return words * p.host_word_lanes, dt, (M, K, N)


def bench_bus(p):
    b = VerilatorBackend(p, mem_backdoor=False)
    addrs, words = image(p)
    n = min(addrs.size, 4096)
    t0 = time.perf_counter()
    b.write_words(addrs[:n], words[:n])
    dt = time.perf_counter() - t0
    if b.read_many(addrs[:n]) != words[:n].tolist():
        raise AssertionError("bus: read-back differs")
    b.close()
    return n * p.host_word_lanes, dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--mem-words", type=int, default=None,
                    help="MEM words per bank instead of the preset's (a larger MEM)")
    ap.add_argument("--mib", type=float, default=TARGET_MIB,
                    help="MiB to move through write_words (default 16)")
    args = ap.parse_args(argv)
    p = preset(args.preset)
    if args.mem_words is not None:
        p = dataclasses.replace(p, name=f"{p.name}_mem{args.mem_words}",
                                mem_words=args.mem_words)
    print(f"mem_load: preset {p.name} (MEM {mem_bytes(p) // 1024} KiB, VL {p.vl}); "
          f"{machine_note()}")
    t0 = time.perf_counter()
    b = VerilatorBackend(p)
    print(f"mem_load: backend ready in {time.perf_counter() - t0:.1f} s, back door "
          f"{'on' if b.mem_backdoor else 'OFF: ' + str(b.mem_backdoor_reason)}")
    if not b.mem_backdoor:
        raise SystemExit("mem_load: the MEM back door is off, nothing to measure")
    moved, dt = bench_write_words(b, p, args.mib)
    rate = moved / dt / 2**20
    print(f"mem_load: write_words   {moved / 2**20:8.1f} MiB in {dt:6.2f} s = {rate:8.1f} MiB/s;"
          f" 16 MiB in {TARGET_MIB / rate:.2f} s; {verdict(TARGET_MIB / rate)}")
    moved, dt, mkn = bench_write_inputs(b, p, args.mib)
    rate = moved / dt / 2**20
    print(f"mem_load: write_inputs  {moved / 2**20:8.1f} MiB in {dt:6.2f} s = {rate:8.1f} MiB/s"
          f" (repeated matmul {mkn[0]}x{mkn[1]}x{mkn[2]} inputs, input checks and Python image"
          f" building included);"
          f" 16 MiB in {TARGET_MIB / rate:.1f} s; {verdict(TARGET_MIB / rate)}")
    b.close()
    moved, dt = bench_bus(p)
    rate = moved / dt / 2**20
    print(f"mem_load: bus (no back door) {moved / 2**10:6.1f} KiB in {dt:6.3f} s = "
          f"{rate:8.3f} MiB/s; 16 MiB in {TARGET_MIB / rate:,.0f} s (for comparison)")


if __name__ == "__main__":
    main()
