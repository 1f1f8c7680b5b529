"""Cost of a chip's RTL: Verilog size, Verilog generation time, Verilator build time.

For each configuration (a preset name, or ``name:field=value,field=value`` over a preset, or a
JSON object of ``LpuParams`` fields) the script generates the chip's Verilog
(``openlpu.rtl.chip.generate_verilog``, timed), reports its size in bytes and lines, and with
``--build`` compiles it with the Verilator build of the host backend
(``host.backends.verilator_sim.build_library``, in a fresh folder so nothing comes from the
cache; timed). One JSON line per configuration goes to stdout (and to ``--json FILE``,
appended). The CPU is shared: run it under ``nice``, one configuration at a time. Usage::

    nice -n 10 python benchmarks/vxm_cost.py mini mini:vxm_fx_alus=1,vxm_mul_alus=1 --build
    python benchmarks/vxm_cost.py '{"name": "vl64", "lanes": 16, "superlanes": 4, ...}'

Figures of the *Cost* table in ``docs/architecture.md`` come from this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from openlpu.params import LpuParams, preset

#: Measurement-only parameter sets (not presets: too large for the regression).
MEASURE = {
    "vl32": dict(name="vl32", lanes=16, superlanes=2, streams=8, mem_slices=2, mem_words=64,
                 mxm_acc_words=16, imem_words=256, vxm_alus=4, sxm=True),
    "vl64": dict(name="vl64", lanes=16, superlanes=4, streams=8, mem_slices=2, mem_words=64,
                 mxm_acc_words=16, imem_words=256, vxm_alus=4, sxm=True),
}


def parse(spec: str) -> LpuParams:
    """``preset``, ``preset:field=value,...`` or a JSON object of fields."""
    if spec.lstrip().startswith("{"):
        return LpuParams.from_dict(json.loads(spec))
    name, _, over = spec.partition(":")
    base = dict(MEASURE[name]) if name in MEASURE else dataclasses.asdict(preset(name))
    for item in filter(None, over.split(",")):
        k, _, v = item.partition("=")
        base[k] = json.loads(v)
    if over:
        base["name"] = f"{base['name']}-{over.replace('=', '').replace(',', '-')}"
    return LpuParams(**base)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(p: LpuParams, build: bool) -> dict:
    """Wall-clock and CPU seconds (the CPU figure does not depend on the machine's load)."""
    from openlpu.rtl.chip import generate_verilog
    t0, c0 = time.monotonic(), time.process_time()
    text = generate_verilog(p)
    row = {"config": p.name, "json": p.to_dict(), "vl": p.vl,
           "verilog_bytes": len(text.encode()), "verilog_lines": text.count("\n"),
           "verilog_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
           "verilog_seconds": round(time.monotonic() - t0, 1),
           "verilog_cpu_seconds": round(time.process_time() - c0, 1)}
    if build:
        from openlpu.host.backends.verilator_sim import build_library
        with tempfile.TemporaryDirectory(prefix="vxm_cost-") as root:
            t0, c0 = time.monotonic(), _children_cpu()
            build_library(text, p.name, params=p, root=Path(root), timeout=3600)
            row["verilator_seconds"] = round(time.monotonic() - t0, 1)
            row["verilator_cpu_seconds"] = round(_children_cpu() - c0, 1)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--build", action="store_true", help="also time the Verilator build")
    ap.add_argument("--json", help="append the rows to this file (JSON lines)")
    args = ap.parse_args(argv)
    for spec in args.configs:
        row = measure(parse(spec), args.build)
        line = json.dumps(row, sort_keys=True)
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
