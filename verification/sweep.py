"""Design-space sweeps: chip parameters x kernels, on a process pool or a Dask cluster.

A sweep is a list of :class:`Point` (a preset, parameter overrides, a kernel and its shape).
Each point is compiled for its chip, run on the reference model with seeded int8 data
(edge values -128, 127, 0, 1 included) and checked element by element against numpy or the
integer reference; the result row holds the predicted and measured cycles, the MXM utilization
(useful MACs / (cycles x VL x VL)) for matmuls, the instruction words, the MEM bytes of the
chip and, with ``verilog=True``, the size of its generated Verilog. A point whose shape does
not fit the chip is a row with ``fits=False`` and the compiler's reason.

Points run on a local ``concurrent.futures`` process pool by default, or on Dask distributed
(``pip install -e .[fuzz]``) with ``scheduler="host:port"`` or a ``distributed.Client``;
the rows come back in the order of the points, and are the same whichever runs them. Usage::

    python -m openlpu.verification.sweep [--grid matmul-mem] [--workers N]
                                         [--scheduler HOST:PORT] [--verilog] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from openlpu.params import LpuParams, preset

__all__ = ["Point", "evaluate", "run_sweep", "GRIDS", "format_table"]


@dataclass(frozen=True)
class Point:
    """One design point: ``preset`` with ``overrides`` (LpuParams fields), ``kernel``
    (``matmul`` or ``softmax``) and its ``shape`` ((M, K, N) or (rows, cols))."""
    preset: str
    kernel: str
    shape: tuple
    overrides: tuple = field(default=())      # ((field, value), ...): hashable, picklable
    seed: int = 0

    def params(self) -> LpuParams:
        p = preset(self.preset)
        if not self.overrides:
            return p
        label = ",".join(f"{k}={v}" for k, v in self.overrides)
        return dataclasses.replace(p, name=f"{p.name}[{label}]", **dict(self.overrides))

    @property
    def label(self) -> str:
        o = "".join(f" {k}={v}" for k, v in self.overrides)
        return f"{self.preset}{o} {self.kernel} {'x'.join(map(str, self.shape))}"


def _int8(rng, shape):
    x = rng.integers(-128, 128, shape)
    x.flat[:4] = [-128, 127, 0, 1][:x.size]
    return x


def _matmul(p, shape, rng):
    from openlpu.firmware.compiler import compile_matmul
    M, K, N = shape
    pkg = compile_matmul(p, M, K, N)
    A, B = _int8(rng, (M, K)), _int8(rng, (K, N))
    return pkg, {"A": A, "B": B}, {"C": A.astype(np.int64) @ B}, M * K * N


def _softmax(p, shape, rng):
    from openlpu.firmware.norm import compile_softmax
    from openlpu.verification import reference as ref
    rows, cols = shape
    scale = 1 / 16
    pkg = compile_softmax(p, rows, cols, scale=scale)
    X = _int8(rng, (rows, cols))
    return pkg, {"X": X}, {"Y": ref.softmax_int(X, ref.softmax_consts(scale))["Y"]}, 0


KERNELS = {"matmul": _matmul, "softmax": _softmax}


def evaluate(point: Point, verilog: bool = False) -> dict:
    """Compile, run on the reference model and check one point; returns its result row."""
    from openlpu.firmware.schedule import CompileError
    from openlpu.host.device import Device
    t0 = time.monotonic()
    p = point.params()
    row = {"point": point.label, "preset": point.preset, "overrides": dict(point.overrides),
           "kernel": point.kernel, "shape": list(point.shape), "vl": p.vl,
           "mem_bytes": 2 * p.mem_slices * p.mem_addr_words * p.vl}
    if point.kernel not in KERNELS:
        raise ValueError(f"unknown kernel {point.kernel!r}; kernels: {', '.join(KERNELS)}")
    rng = np.random.default_rng(point.seed)
    try:
        pkg, inputs, want, macs = KERNELS[point.kernel](p, point.shape, rng)
    except CompileError as e:
        row.update(fits=False, reason=str(e), seconds=time.monotonic() - t0)
        return row
    with Device.open("model", p) as dev:
        cycles, out = dev.run_package(pkg, inputs)
    mismatches = sum(int(np.count_nonzero(np.asarray(out[k]) != np.asarray(v)))
                     for k, v in want.items())
    row.update(fits=True, predicted_cycles=pkg.predicted_cycles, cycles=int(cycles),
               mismatches=mismatches, words=sum(len(w) for w in pkg.queues.values()),
               mxm_utilization=(macs / (cycles * p.vl * p.vl)) if macs else None)
    if verilog:
        from openlpu.host.backends.verilator_sim import chip_verilog   # cached on disk
        row["verilog_bytes"] = len(chip_verilog(p))
    row["seconds"] = time.monotonic() - t0
    return row


def run_sweep(points, *, workers: int | None = None, scheduler: str | None = None,
              client=None, verilog: bool = False, progress=print) -> list[dict]:
    """Evaluate every point; rows in the order of ``points``.

    ``client`` (a ``distributed.Client``) or ``scheduler`` (its address) runs them on Dask;
    otherwise a local pool of ``workers`` processes (default: the CPU count; 1 runs them in
    this process)."""
    points = list(points)
    rows: list = [None] * len(points)
    t0 = time.monotonic()

    def done(i, row):
        rows[i] = row
        n = sum(r is not None for r in rows)
        if progress:
            progress(f"[sweep] {n}/{len(points)} {row['point']}: "
                     f"{_summary(row)} ({time.monotonic() - t0:.0f} s elapsed)")

    from .executors import map_tasks
    for i, row in map_tasks(evaluate, [(pt, verilog) for pt in points], workers=workers,
                            scheduler=scheduler, client=client):
        done(i, row)
    return rows


def _summary(row: dict) -> str:
    if not row["fits"]:
        return "does not fit"
    s = f"{row['cycles']} cycles"
    if row["cycles"] != row["predicted_cycles"]:
        s += f" (predicted {row['predicted_cycles']}!)"
    if row["mxm_utilization"] is not None:
        s += f", MXM {100 * row['mxm_utilization']:.1f}%"
    return s + ("" if row["mismatches"] == 0 else f", {row['mismatches']} MISMATCHES")


def format_table(rows) -> str:
    """Markdown table of sweep rows."""
    out = ["| point | MEM bytes | fits | cycles (predicted) | MXM util. | words | check | Verilog |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["fits"]:
            out.append(f"| {r['point']} | {r['mem_bytes']:,} | no | | | | | |")
            continue
        util = "" if r["mxm_utilization"] is None else f"{100 * r['mxm_utilization']:.1f}%"
        vb = f"{r['verilog_bytes']:,}" if "verilog_bytes" in r else ""
        out.append(f"| {r['point']} | {r['mem_bytes']:,} | yes | {r['cycles']} "
                   f"({r['predicted_cycles']}) | {util} | {r['words']} | "
                   f"{'exact' if r['mismatches'] == 0 else 'MISMATCH'} | {vb} |")
    return "\n".join(out)


#: Named grids for the command line.
GRIDS = {
    # MEM depth x matmul size on the default chip: where the one-bank layout stops fitting.
    "matmul-mem": [Point("default", "matmul", (n, n, n), (("mem_words", w),))
                   for w in (256, 1024) for n in (32, 64, 96, 128)],
    # Superlane count at a fixed VL budget, matmul and softmax.
    "geometry": [Point(pr, k, s) for pr in ("tiny", "quad", "mini", "mini4")
                 for k, s in (("matmul", (16, 16, 16)), ("softmax", (8, 16)))
                 if not (k == "softmax" and preset(pr).vxm_alus == 0)],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openlpu.verification.sweep",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="matmul-mem")
    ap.add_argument("--workers", type=int, default=None, help="local processes (default: CPUs)")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address host:port")
    ap.add_argument("--verilog", action="store_true", help="also measure the Verilog size")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    rows = run_sweep(GRIDS[args.grid], workers=args.workers, scheduler=args.scheduler,
                     verilog=args.verilog,
                     progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(rows))
    busy = sum(r["seconds"] for r in rows)
    print(f"\n{len(rows)} points in {time.monotonic() - t0:.1f} s "
          f"({busy:.1f} s of worker time, {len(rows) / busy:.2f} points/s per worker)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if r["fits"] and (r["mismatches"] or r["cycles"] != r["predicted_cycles"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
