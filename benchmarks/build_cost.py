"""Build cost of a chip beside its targets: Verilog generation and Verilator build time.

For each configuration (a preset name, ``preset:field=value,...`` or a JSON object, as in
``benchmarks/vxm_cost.py``; default ``base``) the script generates the chip's Verilog with
``openlpu.rtl.chip.generate_verilog`` (one module per distinct sub-design,
``openlpu.rtl.shared``), timed in wall-clock and CPU seconds (this process and its Yosys
children), and prints where the time and the text go, module by module (seconds spent
converting it without the modules it places, its Verilog size, how many instances use it).
With ``--build`` it also compiles the Verilog for the Verilator backend
(``host.backends.verilator_sim.build_library`` in a fresh folder, so nothing comes from the
cache). ``--plain`` adds, for comparison in the same run, the plain Amaranth hierarchy (every
instance its own module: what ``generate_verilog`` wrote before the module library).

The targets are those of the ``base`` preset: Verilog in at most 3 minutes, the Verilator
build in at most 6, on this project's 2-core machine. The machine is often shared: run it
under ``nice`` and read the CPU seconds beside the wall-clock ones. Usage::

    nice -n 5 python benchmarks/build_cost.py base --build
    nice -n 5 python benchmarks/build_cost.py base --build --cache   # and keep it for the backend
    nice -n 5 python benchmarks/build_cost.py base --smoke --nop-cycles 20000 --matmul 16x384x1152
    python benchmarks/build_cost.py mini mini4 --plain --json cost.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vxm_cost import parse  # noqa: E402  (the same configuration syntax)

#: Targets for the ``base`` preset, in seconds.
TARGETS = {"verilog_seconds": 180, "verilator_seconds": 360}


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (Yosys, Verilator, cc)."""
    own = time.process_time()
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + ch.ru_utime + ch.ru_stime


def _load() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def generate(p, plain: bool = False, cache: bool = False):
    """``(verilog text, row, library or None)``: the chip's Verilog, timed."""
    from amaranth.back import verilog

    from openlpu.host.backends.verilator_sim import chip_verilog
    from openlpu.rtl.chip import LpuChip, convert_chip
    t0, c0 = time.monotonic(), _cpu()
    lib = None
    if plain:
        text = verilog.convert(LpuChip(p), name="lpu_chip", emit_src=False)
    elif cache:
        text, lib = _cached_verilog(p, chip_verilog, convert_chip)
    else:
        text, lib = convert_chip(p)
    row = {"config": p.name, "vl": p.vl, "path": "plain" if plain else "library",
           "verilog_bytes": len(text.encode()), "verilog_lines": text.count("\n"),
           "verilog_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
           "verilog_seconds": round(time.monotonic() - t0, 1),
           "verilog_cpu_seconds": round(_cpu() - c0, 1), "load": _load()}
    if cache and lib is None:
        row["verilog_cached"] = True    # read from the cache: its time is not a generation time
    return text, row, lib


def _cached_verilog(p, chip_verilog, convert_chip):
    """``(text, library)`` through the backend's Verilog cache: generated with ``convert_chip``
    (so the per-module table can be printed) and written to the cache when new; the library is
    ``None`` when the text came from the cache."""
    from openlpu.rtl import chip
    made = {}

    def generate_verilog(params):
        text, made["lib"] = convert_chip(params)
        return text

    saved, chip.generate_verilog = chip.generate_verilog, generate_verilog
    try:
        text = chip_verilog(p)
    finally:
        chip.generate_verilog = saved
    return text, made.get("lib")


def build(text, p, row, cache: bool = False):
    from openlpu.host.backends.verilator_sim import build_library
    with tempfile.TemporaryDirectory(prefix="build_cost-") as root:
        t0, c0 = time.monotonic(), _cpu()
        build_library(text, p.name, params=p, root=None if cache else Path(root), timeout=3600)
        row["verilator_seconds"] = round(time.monotonic() - t0, 1)
        row["verilator_cpu_seconds"] = round(_cpu() - c0, 1)


def smoke(p, row, out=sys.stdout, shapes=(), nop_cycles: int = 0):
    """Programs through the driver on the Verilator backend (the cached build): every queue
    runs ``NOP`` then ``HALT``, then an int8 matmul (VL x VL x VL, and each ``(M, K, N)`` of
    ``shapes``); results against numpy, measured cycles against predicted, and the simulation
    speed of each run (cycles / wall seconds of ``run``; inputs go over the bus unless the MEM
    back door is in use). ``nop_cycles`` > 0 also times a NOP chain of that many cycles on
    every queue (``benchmarks/sim_speed.py``'s program). Raises ``AssertionError`` on a
    mismatch."""
    import numpy as np

    from openlpu.firmware.asm import assemble
    from openlpu.firmware.compiler import compile_matmul
    from openlpu.firmware.package import Package
    from openlpu import isa
    from openlpu.host.device import Device
    from openlpu.hostmap import reg_addr
    from sim_speed import nop_program
    lengths = {q.name: 3 + (q.index % 7) for q in p.queues}
    text = "".join(f".queue {name}\n    NOP {n}\n    HALT\n" for name, n in lengths.items())
    expected = max(lengths.values()) + 1          # CYCLES: the last HALT's cycle + 1
    nop = Package(name="nop_halt", params=p, queues=assemble(text, p), inputs=[], outputs=[],
                  predicted_cycles=expected)
    nop.validate()
    rng = np.random.default_rng(64)
    t0 = time.monotonic()
    with Device.open("verilator", p) as dev:
        row["backend_open_seconds"] = round(time.monotonic() - t0, 1)
        row["mem_backdoor"] = bool(getattr(dev.backend, "mem_backdoor", False))
        dev.load(nop)
        cycles = dev.run()
        assert cycles == expected, f"NOP/HALT: {cycles} cycles, predicted {expected}"
        row["nop_halt_cycles"] = cycles
        print(f"  smoke on the Verilator backend: NOP/HALT on {len(p.queues)} queues "
              f"{expected} cycles (= predicted)", file=out)
        if nop_cycles:
            be = dev.backend
            be.reset()
            writes, want = nop_program(p, nop_cycles)
            be.write_many(writes)
            t0 = time.perf_counter()
            be.run(max_cycles=2 * want + 100)
            dt = time.perf_counter() - t0
            got = be.read(reg_addr(isa.HostReg.CYCLES))
            assert got == want, f"NOP chain: CYCLES {got}, expected {want}"
            row["nop_chain_cycles_per_s"] = round(got / dt)
            print(f"  NOP chain on every queue: {got:,} cycles in {dt:.2f} s = "
                  f"{got / dt:,.0f} cycles/s ({_load()})", file=out)
            dev.reset()
        for M, K, N in ((p.vl, p.vl, p.vl), *shapes):
            A = rng.integers(-128, 128, (M, K)).astype(np.int8)
            B = rng.integers(-128, 128, (K, N)).astype(np.int8)
            mm = compile_matmul(p, M, K, N)
            t0 = time.monotonic()
            dev.load(mm)
            dev.write_inputs({"A": A, "B": B})
            t1 = time.monotonic()
            cycles = dev.run()
            t2 = time.monotonic()
            C = dev.read_outputs()["C"]
            t3 = time.monotonic()
            want = A.astype(np.int32) @ B.astype(np.int32)
            bad = int(np.count_nonzero(C != want))
            assert bad == 0, f"matmul {M}x{K}x{N}: {bad} elements differ from numpy"
            assert cycles == mm.predicted_cycles, (f"matmul {M}x{K}x{N}: {cycles} cycles, "
                                                   f"predicted {mm.predicted_cycles}")
            shape = f"{M}x{K}x{N}"
            row.setdefault("matmuls", {})[shape] = {
                "cycles": cycles, "load_seconds": round(t1 - t0, 1),
                "run_seconds": round(t2 - t1, 3), "read_seconds": round(t3 - t2, 1)}
            print(f"  matmul {shape} equal to numpy (every element), {cycles} cycles "
                  f"(= predicted); load + inputs {t1 - t0:.1f} s, run {t2 - t1:.2f} s "
                  f"({cycles / max(t2 - t1, 1e-9):,.0f} cycles/s, with the drain and the "
                  f"register reads), outputs {t3 - t2:.1f} s", file=out)


def report(row, lib, out=sys.stdout):
    print(f"{row['config']} ({row['path']}): {row['verilog_bytes'] / 1e6:.2f} MB of Verilog, "
          f"{row['verilog_lines']:,} lines; {row['load']} at the end", file=out)
    for key, label in (("verilog_seconds", "Verilog generation"),
                       ("verilator_seconds", "Verilator build")):
        if key == "verilog_seconds" and row.get("verilog_cached"):
            print(f"  {label:20s} taken from the cache (no generation time)", file=out)
        elif key in row:
            t, target = row[key], TARGETS[key]
            cpu = row[key.replace("_seconds", "_cpu_seconds")]
            verdict = "within" if t <= target else "OVER"
            print(f"  {label:20s} {t:7.1f} s wall ({cpu:.1f} s CPU)   target {target} s: "
                  f"{verdict}", file=out)
    if lib is not None:
        total = row["verilog_seconds"]
        own = total - sum(lib.seconds.values())
        print(f"  {'module':34s} {'seconds':>8s} {'MB':>7s} {'instances':>9s}", file=out)
        print(f"  {'lpu_chip (top, with fabric, regs)':34s} {own:8.1f}", file=out)
        for name, text, _ in sorted(lib.modules.values(), key=lambda e: -lib.seconds[e[0]]):
            print(f"  {name:34s} {lib.seconds[name]:8.1f} {len(text) / 1e6:7.3f} "
                  f"{lib.placed[name]:9d}", file=out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=["base"])
    ap.add_argument("--build", action="store_true", help="also time the Verilator build")
    ap.add_argument("--plain", action="store_true",
                    help="also time the plain hierarchy (one module per instance)")
    ap.add_argument("--cache", action="store_true",
                    help="generate and build through the backend's caches ($OPENLPU_BUILD_DIR), "
                         "so the backend reuses them; an entry found there is reported cached "
                         "(progress lines) and its time is not a build time")
    ap.add_argument("--smoke", action="store_true",
                    help="then run NOP/HALT and a VL x VL x VL matmul through the driver on the "
                         "Verilator backend (builds through the caches, like --cache)")
    ap.add_argument("--matmul", action="append", default=[], metavar="MxKxN",
                    help="with --smoke, also run this int8 matmul shape (repeatable)")
    ap.add_argument("--nop-cycles", type=int, default=0, metavar="N",
                    help="with --smoke, also time an N-cycle NOP chain (cycles/s)")
    ap.add_argument("--json", help="append the rows to this file (JSON lines)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.cache = True
    try:
        shapes = [tuple(int(x) for x in m.lower().split("x")) for m in args.matmul]
    except ValueError:
        ap.error(f"--matmul takes MxKxN (e.g. 16x384x1152), not {args.matmul}")
    if any(len(s) != 3 or min(s) < 1 for s in shapes):
        ap.error(f"--matmul takes three positive sizes MxKxN, not {args.matmul}")
    for spec in args.configs:
        p = parse(spec)
        for plain in ((False, True) if args.plain else (False,)):
            text, row, lib = generate(p, plain, args.cache and not plain)
            if args.build:
                build(text, p, row, args.cache and not plain)
            report(row, lib)
            if args.smoke and not plain:
                smoke(p, row, shapes=shapes, nop_cycles=args.nop_cycles)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
